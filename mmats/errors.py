"""Exception classes. Each message names the file, row, key or symbol at fault."""


class MMATSError(Exception):
    """Base class of every error MMATS raises on purpose."""


class DataError(MMATSError):
    """Candle data is missing, unreadable or malformed."""


class CandleValidationError(DataError):
    """Rows of a candle file broke the schema; ``rejects`` lists (file, row, reason)."""

    def __init__(self, message, rejects=()):
        super().__init__(message)
        self.rejects = list(rejects)


class BadBarError(DataError):
    """A stored or served bar has values no trade may be based on (NaN, infinite, a price
    <= 0, a negative volume, high < low...): ``symbol``, ``ts_ns`` (its open time) and
    ``reason`` say which and why, so a runner can record it as a data fault and skip it."""

    def __init__(self, message, symbol=None, ts_ns=None, reason=None):
        super().__init__(message)
        self.symbol = symbol
        self.ts_ns = ts_ns
        self.reason = reason


class StrategyError(MMATSError):
    """A strategy could not be loaded, or its output broke the contract."""


class LookaheadError(StrategyError):
    """A strategy's value at bar t depends on bars after t."""

    def __init__(self, message, report=None):
        super().__init__(message)
        self.report = report


class ConfigError(MMATSError):
    """A parameter, grid or configuration value is invalid; the message names the key."""
