"""The live runner's configuration: a YAML file (the Athena DSL) read into frozen dataclasses.

Two shapes are accepted. The single-market shorthand of the requirements::

    market: {type: crypto, feed: binance, execution: binance, symbols: [BTCUSDT]}
    risk: {max_daily_loss: 5%, max_pos: 3, leverage: 2}
    models:
      - {id: EMA_CROSS_15_60, file: ./models/ema_cross.py, params: {fast: 15, slow: 60}}

and the multi-market form: ``markets:`` (a list of markets with ``name:``, or a mapping
from name to market), each with its own ``risk:``, a global ``risk:``, and models that
name their ``market:``. See ``configs/*.yaml`` for complete examples.

Rules worth knowing:

- Every error is a :class:`~mmats.errors.ConfigError` whose message starts with the file
  name and the key path (``configs/x.yaml: models[0].params.fast: ...``).
- Unknown keys are errors; keys that look like secrets (api_key, secret, password, token,
  private_key, ...) are rejected anywhere: keys live in the OS keyring or the environment.
- ``*_pct`` values are percentages: ``5%`` and ``5`` both mean five percent.
- Relative paths (journal, journal_anchor, data_root, strategy files) are relative to the
  config file's folder, so a cron job started from any directory reads the same files.
- The tick lock belongs to the journal, not to a configuration: it is always
  ``<journal>.lock`` (the journal's suffix replaced), so two configurations writing one
  journal can never tick at once. A ``lock:`` key is refused.
- ``allocation`` is a fraction of the equity of the account a model trades: the models of
  one market share that market's account (and markets executing on the same real venue
  share one account), so their allocations may sum to at most 1.

Example::

    config = load_config("configs/paper_multi_market.yaml")
    check_can_trade(config, i_understand_live_trading=False)
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from mmats.data.calendar import timeframe_ns
from mmats.errors import ConfigError, StrategyError
from mmats.live.yaml_text import read_yaml
from mmats.redact import redact_url
from mmats.sleeve import SleeveConfig
from mmats.strategy import load_strategy

MODES = ("advisory", "paper", "operator")
ENVIRONMENTS = ("dev", "test", "prod")
MARKET_TYPES = ("crypto", "forex", "stocks")
PAPER_EXECUTION = "paper"

_TOP_KEYS = ("mode", "environment", "risk", "market", "markets", "models", "notifications",
             "journal", "journal_anchor", "data_root", "stale_after_bars",
             "reconcile_tolerance_pct", "venues")
_VENUE_KEYS = ("exchange", "sandbox", "base_url", "timeout_s")
_MARKET_KEYS = ("name", "type", "feed", "execution", "symbols", "timeframe", "risk")
_MODEL_KEYS = ("id", "strategy", "file", "params", "market", "symbols", "allocation",
               "risk", "costs")
_RISK_ALIASES = {"max_daily_loss": "max_daily_loss_pct", "max_drawdown": "max_drawdown_pct",
                 "max_pos": "max_open_positions", "max_positions": "max_open_positions",
                 "leverage": "max_leverage"}
_SLEEVE_FIELDS = {item.name: item for item in fields(SleeveConfig)}
_COST_KEYS = ("fee_bps", "slippage_bps", "slippage_model", "impact_coef", "max_participation",
              "lot_size", "min_notional")
_SLEEVE_RISK_KEYS = tuple(name for name in _SLEEVE_FIELDS if name not in _COST_KEYS)
_SECRET_WORDS = {"secret", "secrets", "password", "passwd", "passphrase", "token", "tokens",
                 "apikey", "privatekey", "credential", "credentials"}
_SECRET_PAIRS = {("api", "key"), ("private", "key"), ("access", "key"), ("secret", "key")}
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_PERCENT_RE = re.compile(r"^\s*([-+]?\d+(?:\.\d*)?|[-+]?\.\d+)\s*%\s*$")
_EPSILON = 1e-9


@dataclass(frozen=True)
class RiskLimits:
    """Limits of one level of the risk hierarchy (global or market); None means no limit.

    Percentages are in percent (5.0 is 5 %); ``max_order_notional`` is in the quote
    currency of the account.
    """

    max_daily_loss_pct: float | None = None
    max_drawdown_pct: float | None = None
    max_open_positions: int | None = None
    max_leverage: float | None = None
    max_order_notional: float | None = None


@dataclass(frozen=True)
class VenueConfig:
    """How to reach a venue: its ccxt exchange id (or ``oanda``), the testnet/practice
    switch and an optional base URL (a proxy, or the tests' local servers). Keys are not
    here: they live in the OS keyring or the encrypted secrets file (``scripts/keys.py``)."""

    name: str
    exchange: str
    sandbox: bool = False
    base_url: str | None = None
    timeout_s: float = 10.0


@dataclass(frozen=True)
class MarketConfig:
    """One market: where its candles come from, where its orders go, what it trades.
    ``backup_feeds`` take over, in order, when the feed errors or goes stale."""

    name: str
    type: str
    feed: str
    execution: str
    symbols: tuple[str, ...]
    timeframe: str
    risk: RiskLimits = RiskLimits()
    backup_feeds: tuple[str, ...] = ()

    @property
    def feeds(self) -> tuple[str, ...]:
        return (self.feed, *self.backup_feeds)

    @property
    def is_paper(self) -> bool:
        return self.execution == PAPER_EXECUTION


@dataclass(frozen=True)
class ModelConfig:
    """One model: a strategy with resolved parameters, trading symbols of one market."""

    id: str
    strategy: str
    params: dict[str, Any]
    market: str
    symbols: tuple[str, ...]
    allocation: float
    sleeve: SleeveConfig
    strategy_hash: str = ""


@dataclass(frozen=True)
class RunnerConfig:
    """Everything the live runner needs, validated. Build with :func:`load_config`."""

    mode: str
    environment: str
    global_risk: RiskLimits
    markets: tuple[MarketConfig, ...]
    models: tuple[ModelConfig, ...]
    notifications: tuple[str, ...] = ("console",)
    journal: Path = Path("journal/mmats.sqlite")
    data_root: Path = Path("data")
    anchor_path: Path | None = None  # the journal_anchor: key; None: beside the journal
    stale_after_bars: int = 3
    reconcile_tolerance_pct: float = 0.5
    venues: tuple[VenueConfig, ...] = ()
    source: str = "<dict>"

    @property
    def lock(self) -> Path:
        """The tick lock: beside the journal (``<journal>.lock``), whatever the config."""
        return self.journal.with_suffix(".lock")

    @property
    def journal_anchor(self) -> Path:
        """Where the journal's anchor lives: ``journal_anchor:``, else
        ``<journal>.anchor`` (where :class:`~mmats.live.journal.Journal` puts it by default)."""
        return self.anchor_path or self.journal.with_name(self.journal.name + ".anchor")

    def venue(self, name: str) -> VenueConfig:
        """The venue called ``name``: as configured under ``venues:``, else the ccxt
        exchange (or OANDA) of that name with default settings."""
        for venue in self.venues:
            if venue.name == name:
                return venue
        return VenueConfig(name=name, exchange=name)

    def is_live_feed(self, name: str) -> bool:
        """Whether the runner fetches this feed's candles itself (it is listed under
        ``venues:``); other feeds are store folders filled by imports or fetch_data.py."""
        return any(venue.name == name for venue in self.venues)

    def market(self, name: str) -> MarketConfig:
        for market in self.markets:
            if market.name == name:
                return market
        raise ConfigError(f"{self.source}: no market named {name!r}; markets: "
                          f"{', '.join(m.name for m in self.markets)}")

    def snapshot(self) -> str:
        """Canonical JSON of the configuration for the journal: sorted keys, no spaces,
        credentials inside URLs (notifications, venues' ``base_url``) masked by
        :func:`mmats.redact.redact_url`."""
        data = {
            "mode": self.mode,
            "environment": self.environment,
            "global_risk": asdict(self.global_risk),
            "markets": [{**asdict(m), "symbols": list(m.symbols)} for m in self.markets],
            "models": [
                {"id": m.id, "strategy": m.strategy, "strategy_hash": m.strategy_hash,
                 "params": m.params, "market": m.market, "symbols": list(m.symbols),
                 "allocation": m.allocation, "sleeve": m.sleeve.to_dict()}
                for m in self.models
            ],
            "notifications": [redact_url(url) for url in self.notifications],
            "journal": str(self.journal),
            "data_root": str(self.data_root),
            "lock": str(self.lock),
            "journal_anchor": str(self.journal_anchor),
            "stale_after_bars": self.stale_after_bars,
            "reconcile_tolerance_pct": self.reconcile_tolerance_pct,
            "venues": [{**asdict(v), "base_url": None if v.base_url is None
                        else redact_url(v.base_url)} for v in self.venues],
        }
        return json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False)


def load_config(path: str | os.PathLike) -> RunnerConfig:
    """Read and validate a YAML configuration file.

    >>> load_config("configs/advisory_crypto.yaml").mode
    'advisory'
    """
    source = str(path)
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{source}: no such configuration file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{source}: cannot read the configuration: {error}") from None
    mapping = read_yaml(text, source)
    return parse_config(mapping, source=source, base_dir=file.resolve().parent)


def parse_config(mapping: Any, source: str = "<dict>",
                 base_dir: str | os.PathLike | None = None) -> RunnerConfig:
    """Validate an already-parsed mapping; relative paths resolve against ``base_dir``
    (default: the current directory)."""
    return _Parser(source, Path(base_dir) if base_dir is not None else Path.cwd()).config(mapping)


def check_can_trade(config: RunnerConfig, i_understand_live_trading: bool,
                    mode: str | None = None) -> None:
    """Refuse to start operator mode if any order could reach real money unmeant.

    Orders may go without further ado only to the paper venue (``execution: paper``), a
    loopback ``base_url`` (127.0.0.0/8, ::1, ``localhost``; no DNS) or the sandbox the
    venue's library names (``sandbox: true`` and no ``base_url``: ccxt's ``urls['test']``,
    OANDA practice). Any other endpoint is real, whatever the labels say, and needs
    ``environment: prod`` and the explicit ``i_understand_live_trading`` flag. Advisory and
    paper modes place no real orders and run in any environment. ``mode`` overrides the
    configuration's (the command line's ``--mode``). The same rule guards every adapter's
    ``send`` (:mod:`mmats.brokers.connect`).
    """
    if (mode or config.mode) != "operator":
        return
    from mmats.brokers.connect import refusal

    for market in config.markets:
        problem = refusal(config, market, i_understand_live_trading)
        if problem:
            raise ConfigError(f"{config.source}: {problem} Use mode: paper or execution: "
                              "paper to trade without money.")


def _join(path: str, key) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def _is_secret_key(key: str) -> bool:
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", key)
    words = [w for w in re.split(r"[^A-Za-z0-9]+", spaced.lower()) if w]
    if any(word in _SECRET_WORDS for word in words):
        return True
    return any(pair in _SECRET_PAIRS for pair in zip(words, words[1:], strict=False))


class _Parser:
    def __init__(self, source: str, base_dir: Path):
        self.source = source
        self.base_dir = base_dir

    def fail(self, path: str, message: str):
        raise ConfigError(f"{self.source}: {path or '(top level)'}: {message}")

    # --- generic values -------------------------------------------------------------

    def mapping(self, value, path: str, known: tuple[str, ...]) -> dict:
        if not isinstance(value, dict):
            self.fail(path, f"must be a mapping of {', '.join(known)}; "
                            f"got {type(value).__name__} {value!r}")
        for key in value:
            if not isinstance(key, str):
                self.fail(path, f"keys must be strings, got {key!r}")
        unknown = [key for key in value if key not in known]
        if unknown:
            self.fail(_join(path, unknown[0]),
                      f"unknown key; known keys here: {', '.join(known)}")
        return value

    def string(self, value, path: str, allowed: tuple[str, ...] | None = None) -> str:
        if not isinstance(value, str) or not value.strip():
            hint = f"one of {', '.join(allowed)}" if allowed else "a non-empty string"
            self.fail(path, f"must be {hint}, got {value!r} (quote values YAML reads as "
                            "booleans or numbers)")
        if allowed and value not in allowed:
            self.fail(path, f"{value!r} is not allowed; use one of {', '.join(allowed)}")
        return value.strip()

    def name(self, value, path: str) -> str:
        text = self.string(value, path)
        if not _NAME_RE.match(text):
            self.fail(path, f"{text!r} is not a valid name; use letters, digits, '_', '.' "
                            "and '-', starting with a letter or digit")
        return text

    def number(self, value, path: str, *, minimum=None, above=None, maximum=None) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(path, f"must be a number, got {value!r}")
        number = float(value)
        if not math.isfinite(number):
            self.fail(path, f"must be a finite number, got {value!r}")
        if above is not None and not number > above:
            self.fail(path, f"must be > {above:g}, got {value!r}")
        if minimum is not None and number < minimum:
            self.fail(path, f"must be >= {minimum:g}, got {value!r}")
        if maximum is not None and number > maximum:
            self.fail(path, f"must be <= {maximum:g}, got {value!r}")
        return number

    def integer(self, value, path: str, minimum: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
            self.fail(path, f"must be a whole number, got {value!r}")
        if value < minimum:
            self.fail(path, f"must be >= {minimum}, got {value!r}")
        return int(value)

    def percent(self, value, path: str, allow_zero: bool = False) -> float:
        """``"5%"`` or ``5`` -> 5.0, in (0, 100] (or [0, 100] with ``allow_zero``)."""
        if isinstance(value, str):
            match = _PERCENT_RE.match(value)
            if not match:
                self.fail(path, f"{value!r} is not a percentage; write e.g. 5% or 5 "
                                "(both mean five percent)")
            value = float(match.group(1))
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(path, f"must be a percentage such as 5% or 5, got {value!r}")
        number = float(value)
        low_ok = number >= 0 if allow_zero else number > 0
        if not math.isfinite(number) or not low_ok or number > 100:
            bounds = "[0%, 100%]" if allow_zero else "(0%, 100%]; omit the key for no limit"
            self.fail(path, f"{value!r} is outside {bounds}")
        return number

    def strings(self, value, path: str) -> tuple[str, ...]:
        if not isinstance(value, list) or not value:
            self.fail(path, f"must be a non-empty list, e.g. [ETH/BTC], got {value!r}")
        items = []
        for index, item in enumerate(value):
            text = self.string(item, _join(path, index))
            if text in items:
                self.fail(_join(path, index), f"{text!r} is listed twice")
            items.append(text)
        return tuple(items)

    def path(self, value, path: str) -> Path:
        text = self.string(value, path)
        candidate = Path(text).expanduser()
        return candidate if candidate.is_absolute() else (self.base_dir / candidate).resolve()

    def aliases(self, values: dict, path: str, aliases: dict) -> dict:
        """Rename alias keys (``leverage`` -> ``max_leverage``); naming a key twice fails."""
        renamed = {}
        for key, value in values.items():
            canonical = aliases.get(key, key)
            if canonical in renamed:
                self.fail(_join(path, key), f"sets {canonical} a second time; keep one of "
                                            f"{canonical} and its alias {key}")
            renamed[canonical] = (key, value)
        return renamed

    def find_secret(self, value, path: str) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                where = _join(path, key)
                if isinstance(key, str) and _is_secret_key(key):
                    self.fail(where, "looks like a secret; secrets never go in the "
                                     "configuration. Store API keys in the OS keyring (or "
                                     "environment variables) where the venue adapter reads "
                                     "them")
                self.find_secret(item, where)
        elif isinstance(value, list):
            for index, item in enumerate(value):
                self.find_secret(item, _join(path, index))

    # --- blocks ---------------------------------------------------------------------

    def risk(self, value, path: str) -> RiskLimits:
        known = tuple(item.name for item in fields(RiskLimits)) + tuple(_RISK_ALIASES)
        values = self.aliases(self.mapping({} if value is None else value, path, known), path, _RISK_ALIASES)
        parsed = {}
        for name, (key, item) in values.items():
            where = _join(path, key)
            if name.endswith("_pct"):
                parsed[name] = self.percent(item, where)
            elif name == "max_open_positions":
                parsed[name] = self.integer(item, where, minimum=1)
            else:
                parsed[name] = self.number(item, where, above=0)
        return RiskLimits(**parsed)

    def sleeve(self, model: dict, path: str) -> SleeveConfig:
        sleeve_aliases = {k: v for k, v in _RISK_ALIASES.items() if v in _SLEEVE_FIELDS}
        blocks = (("risk", _SLEEVE_RISK_KEYS + tuple(sleeve_aliases)), ("costs", _COST_KEYS))
        settings = {}
        for block, known in blocks:
            where_block = _join(path, block)
            raw = model.get(block)
            raw = self.mapping({} if raw is None else raw, where_block, known)
            for name, (key, value) in self.aliases(raw, where_block, sleeve_aliases).items():
                where = _join(where_block, key)
                value = self.sleeve_value(name, value, where)
                try:
                    SleeveConfig.from_mapping({name: value})
                except ConfigError as error:
                    self.fail(where, str(error))
                settings[name] = value
        try:
            return SleeveConfig.from_mapping(settings)
        except ConfigError as error:
            self.fail(path, str(error))

    def sleeve_value(self, name: str, value, where: str):
        default = _SLEEVE_FIELDS[name].default
        if name.endswith("_pct"):
            return self.percent(value, where)
        if isinstance(default, bool):
            if not isinstance(value, bool):
                self.fail(where, f"must be true or false, got {value!r}")
            return value
        if isinstance(default, str):
            return self.string(value, where)
        if isinstance(default, int):
            return self.integer(value, where, minimum=0)
        return self.number(value, where, minimum=0)

    def market(self, value, path: str, name: str | None) -> MarketConfig:
        known = _MARKET_KEYS if name is None else _MARKET_KEYS[1:]
        values = self.mapping(value, path, known)
        for required in ("type", "feed", "symbols"):
            if required not in values:
                self.fail(_join(path, required), "is required")
        market_type = self.string(values["type"], _join(path, "type"), MARKET_TYPES)
        if name is None:
            name = self.name(values.get("name", market_type), _join(path, "name"))
        timeframe = self.string(values.get("timeframe", "1h"), _join(path, "timeframe"))
        try:
            timeframe_ns(timeframe)
        except ConfigError as error:
            self.fail(_join(path, "timeframe"), str(error))
        feeds = values["feed"]
        if isinstance(feeds, list):
            if not 1 <= len(feeds) <= 3:
                self.fail(_join(path, "feed"), "must be a feed name or a list of one to three "
                                               f"(primary first), got {feeds!r}")
            feeds = [self.name(f, _join(_join(path, "feed"), i)) for i, f in enumerate(feeds)]
        else:
            feeds = [self.name(feeds, _join(path, "feed"))]
        return MarketConfig(
            name=name,
            type=market_type,
            feed=feeds[0],
            backup_feeds=tuple(feeds[1:]),
            execution=self.name(values.get("execution", PAPER_EXECUTION),
                                _join(path, "execution")),
            symbols=self.strings(values["symbols"], _join(path, "symbols")),
            timeframe=timeframe,
            risk=self.risk(values.get("risk"), _join(path, "risk")),
        )

    def markets(self, top: dict) -> tuple[MarketConfig, ...]:
        if "market" in top and "markets" in top:
            self.fail("markets", "give either market: (one market) or markets: (several), "
                                 "not both")
        if "market" in top:
            return (self.market(top["market"], "market", None),)
        value = top.get("markets")
        if value is None:
            self.fail("markets", "is required: add market: (one market) or markets:")
        if isinstance(value, dict):
            if not value:
                self.fail("markets", "is empty; add at least one market")
            markets = [self.market(item, _join("markets", self.name(key, "markets")), key)
                       for key, item in value.items()]
        elif isinstance(value, list) and value:
            markets = [self.market(item, _join("markets", index), None)
                       for index, item in enumerate(value)]
            seen = set()
            for index, market in enumerate(markets):
                if market.name in seen:
                    self.fail(_join(_join("markets", index), "name"),
                              f"market name {market.name!r} is used twice")
                seen.add(market.name)
        else:
            self.fail("markets", "must be a non-empty list of markets (each with name:) or a "
                                 f"mapping from market name to market, got {value!r}")
        return tuple(markets)

    def model(self, value, path: str, markets: tuple[MarketConfig, ...]) -> dict:
        values = self.mapping(value, path, _MODEL_KEYS)
        if "id" not in values:
            self.fail(_join(path, "id"), "is required")
        model_id = self.name(values["id"], _join(path, "id"))
        if "strategy" in values and "file" in values:
            self.fail(_join(path, "file"), "give strategy: (a name or path) or file:, not both")
        key = "file" if "file" in values else "strategy"
        if key not in values:
            self.fail(_join(path, "strategy"), "is required: a strategy name such as "
                                               "ema_cross, or a .py/.zip path")
        reference = self.string(values[key], _join(path, key))
        if reference.endswith((".py", ".zip")) or "/" in reference or os.sep in reference:
            reference = str(self.path(reference, _join(path, key)))
        try:
            strategy = load_strategy(reference)
        except StrategyError as error:
            self.fail(_join(path, key), str(error))

        params = values.get("params")
        params = {} if params is None else params
        params_path = _join(path, "params")
        self.mapping(params, params_path, strategy.param_names)
        for name, item in params.items():
            if isinstance(item, str):  # YAML numbers are numbers; a string is a typo
                self.fail(_join(params_path, name), f"must be a number, got {item!r}")
            try:
                strategy.param_value(name, item)
            except ConfigError as error:
                self.fail(_join(params_path, name), str(error))
        try:
            resolved = strategy.resolve_params(params)
        except ConfigError as error:
            self.fail(params_path, str(error))

        names = [m.name for m in markets]
        if "market" in values:
            market_name = self.string(values["market"], _join(path, "market"))
            if market_name not in names:
                self.fail(_join(path, "market"), f"no market named {market_name!r}; "
                                                 f"markets: {', '.join(names)}")
        elif len(markets) == 1:
            market_name = names[0]
        else:
            self.fail(_join(path, "market"), f"is required when there are several markets; "
                                             f"use one of {', '.join(names)}")
        market = markets[names.index(market_name)]
        symbols = market.symbols
        if "symbols" in values:
            symbols = self.strings(values["symbols"], _join(path, "symbols"))
            for index, symbol in enumerate(symbols):
                if symbol not in market.symbols:
                    self.fail(_join(_join(path, "symbols"), index),
                              f"{symbol!r} is not a symbol of market {market.name!r}; "
                              f"its symbols: {', '.join(market.symbols)}")
        allocation = None
        if "allocation" in values:
            allocation = self.allocation(values["allocation"], _join(path, "allocation"))
        return {"id": model_id, "strategy": reference, "params": resolved,
                "market": market.name, "symbols": symbols, "allocation": allocation,
                "sleeve": self.sleeve(values, path), "strategy_hash": strategy.source_hash}

    def allocation(self, value, path: str) -> float:
        if isinstance(value, str):
            number = self.percent(value, path) / 100.0
        else:
            number = self.number(value, path, above=0)
        if not 0 < number <= 1:
            self.fail(path, f"{value!r} is outside (0, 1]; it is a fraction of the account's "
                            "equity: write 0.5 or 50%")
        return number

    def models(self, value, markets: tuple[MarketConfig, ...]) -> tuple[ModelConfig, ...]:
        if not isinstance(value, list) or not value:
            self.fail("models", f"must be a non-empty list of models, got {value!r}")
        parsed, paths = [], []
        for index, item in enumerate(value):
            path = _join("models", index)
            model = self.model(item, path, markets)
            for earlier, other in zip(paths, parsed, strict=True):
                if other["id"] == model["id"]:
                    self.fail(_join(path, "id"), f"id {model['id']!r} is already used by "
                                                 f"{earlier}; model ids must be unique")
            parsed.append(model)
            paths.append(path)
        self.allocate(parsed, paths, markets)
        return tuple(ModelConfig(**model) for model in parsed)

    def allocate(self, parsed: list[dict], paths: list[str], markets) -> None:
        """Fill default allocations and check each account's sum is at most 1.

        An account is a market, except that markets executing on the same real venue share
        one. Within an account either every model gives an allocation or none does (then
        they split it equally).
        """
        by_name = {m.name: m for m in markets}

        def account(model):
            market = by_name[model["market"]]
            return f"paper:{market.name}" if market.is_paper else f"venue:{market.execution}"

        groups: dict[str, list[int]] = {}
        for index, model in enumerate(parsed):
            groups.setdefault(account(model), []).append(index)
        for key, members in groups.items():
            given = [i for i in members if parsed[i]["allocation"] is not None]
            where = (f"market {key[6:]!r}" if key.startswith("paper:")
                     else f"venue {key[6:]!r}")
            if not given:
                for i in members:
                    parsed[i]["allocation"] = 1.0 / len(members)
                continue
            if len(given) != len(members):
                missing = next(i for i in members if parsed[i]["allocation"] is None)
                self.fail(_join(paths[missing], "allocation"),
                          f"is missing while other models on {where} give one; give every "
                          "model of an account an allocation, or none (equal split)")
            total = sum(parsed[i]["allocation"] for i in members)
            if total > 1 + _EPSILON:
                self.fail(_join(paths[members[-1]], "allocation"),
                          f"allocations of the models on {where} "
                          f"({', '.join(parsed[i]['id'] for i in members)}) sum to "
                          f"{total:g}; the sum must be <= 1")

    def notifications(self, value) -> tuple[str, ...]:
        if not isinstance(value, list) or not value:
            self.fail("notifications", "must be a non-empty list such as [console] or "
                                       f"apprise URLs, got {value!r}")
        urls = []
        for index, item in enumerate(value):
            text = self.string(item, _join("notifications", index))
            if text != "console" and "://" not in text:
                self.fail(_join("notifications", index),
                          f"{text!r} is neither console nor an apprise-style URL "
                          "(scheme://...); put tokens in ${ENV_VARS}, not in the file")
            urls.append(text)
        return tuple(urls)

    def venues(self, value) -> tuple[VenueConfig, ...]:
        if not isinstance(value, dict):
            self.fail("venues", f"must be a mapping from venue name to settings, got {value!r}")
        result = []
        for key, item in value.items():
            name = self.name(key, "venues")
            path = _join("venues", name)
            values = self.mapping(item or {}, path, _VENUE_KEYS)
            sandbox = values.get("sandbox", False)
            if not isinstance(sandbox, bool):
                self.fail(_join(path, "sandbox"), f"must be true or false, got {sandbox!r}")
            base_url = values.get("base_url")
            if base_url is not None and (not isinstance(base_url, str)
                                         or not base_url.startswith(("http://", "https://"))):
                self.fail(_join(path, "base_url"), f"must be an http(s) URL, got {base_url!r}")
            result.append(VenueConfig(
                name=name,
                exchange=self.name(values.get("exchange", name), _join(path, "exchange")),
                sandbox=sandbox, base_url=base_url,
                timeout_s=self.number(values.get("timeout_s", 10.0), _join(path, "timeout_s"),
                                      minimum=0.1)))
        return tuple(result)

    def config(self, top) -> RunnerConfig:
        if top is None:
            self.fail("", "the configuration is empty; it needs market: (or markets:) and "
                          "models:")
        self.find_secret(top, "")
        if isinstance(top, dict) and "lock" in top:
            self.fail("lock", "is no longer a setting: the tick lock lives beside the journal "
                              "(<journal>.lock), so every configuration writing one journal "
                              "shares it; remove the key")
        top = self.mapping(top, "", _TOP_KEYS)
        markets = self.markets(top)
        journal = self.path(top.get("journal", "journal/mmats.sqlite"), "journal")
        anchor = (self.path(top["journal_anchor"], "journal_anchor")
                  if "journal_anchor" in top else None)
        return RunnerConfig(
            mode=self.string(top.get("mode", "advisory"), "mode", MODES),
            environment=self.string(top.get("environment", "dev"), "environment",
                                    ENVIRONMENTS),
            global_risk=self.risk(top.get("risk"), "risk"),
            markets=markets,
            models=self.models(top.get("models"), markets),
            notifications=self.notifications(top.get("notifications", ["console"])),
            journal=journal,
            data_root=self.path(top.get("data_root", "data"), "data_root"),
            anchor_path=anchor,
            stale_after_bars=self.integer(top.get("stale_after_bars", 3), "stale_after_bars",
                                          minimum=1),
            reconcile_tolerance_pct=self.percent(top.get("reconcile_tolerance_pct", 0.5),
                                                 "reconcile_tolerance_pct", allow_zero=True),
            venues=self.venues(top.get("venues", {})),
            source=self.source,
        )
