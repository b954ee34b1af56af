"""News and sentiment records: read, checked, and aligned to bars as-of (F10).

A record says that at ``timestamp`` a ``source`` judged ``symbol``'s outlook at
``sentiment`` in [-1, 1] (bearish to bullish) for the next ``impact_horizon`` (``1m``,
``5m`` or ``1h``), optionally with the ``headline`` it came from::

    {"timestamp": "2018-01-12T10:03:00Z", "symbol": "ETH/BTC", "sentiment": -0.6,
     "impact_horizon": "1h", "source": "wire", "headline": "Exchange halts withdrawals"}

Records come as JSON lines from a file, a folder of ``*.jsonl`` files or an HTTP(S)
endpoint (:func:`read_sentiment`). A record that breaks the contract is refused with the
reason and where it was (source and line); the others are kept, so one bad line from a
feed does not blind a runner (``strict=True`` refuses the whole read instead).

**As-of alignment** (:func:`align_sentiment`): a record affects a bar only when the bar
*closes after* the record's timestamp and no later than the timestamp plus its horizon:
``ts < close <= ts + horizon``. A record stamped exactly at a close is not known at that
close. So a backtest sees each bar's sentiment exactly as the live runner, reading the
same records at that close, would: no record from after a decision reaches it.

**The rule** (:class:`SentimentRule`) turns a bar's sentiment and the direction the
strategy wants into a confidence multiplier in [0, 1] and a size cap (the largest
absolute exposure allowed; infinite when none): sentiment against the position lowers
confidence in proportion, and strong opposition caps the size. Sentiment never opens or
flips a position by itself (:func:`mmats.nb.exposure.effective_signal` applies both).
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from numba import njit

from mmats.errors import ConfigError, DataError
from mmats.units import HOUR_NS, MINUTE_NS

HORIZONS = {"1m": MINUTE_NS, "5m": 5 * MINUTE_NS, "1h": HOUR_NS}
REQUIRED = ("timestamp", "symbol", "sentiment", "impact_horizon", "source")
COLUMNS = ("ts_ns", "symbol", "sentiment", "horizon_ns", "source", "headline")
HOW = ("mean", "last")


@dataclass(frozen=True)
class Refusal:
    """A record refused: where it was (file or URL), its line (1-based) and why."""

    where: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.where}, line {self.line}: {self.reason}"


@dataclass
class SentimentRecords:
    """Checked records sorted by time (``frame``: :data:`COLUMNS`) and the refusals."""

    frame: pd.DataFrame
    refused: list[Refusal] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.frame)

    def for_symbol(self, symbol: str) -> pd.DataFrame:
        return self.frame[self.frame["symbol"] == symbol]


def read_sentiment(source: str | Path, *, strict: bool = False,
                   timeout_s: float = 10.0) -> SentimentRecords:
    """Read sentiment records from a JSON-lines file, a folder of ``*.jsonl`` files (in
    name order) or an ``http(s)://`` endpoint answering JSON lines.

    Invalid records are refused (``result.refused`` says where and why) and the rest
    kept; with ``strict=True`` any refusal raises :class:`DataError` listing them.
    A record repeated (same time, symbol, source, sentiment and headline, as an endpoint
    polled twice returns it) is kept once. A source that cannot be read at all raises
    :class:`DataError` naming it.
    """
    rows: list[dict] = []
    refused: list[Refusal] = []
    for where, text in _documents(source, timeout_s):
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rows.append(parse_record(line))
            except ValueError as error:
                refused.append(Refusal(where, number, str(error)))
    if strict and refused:
        listed = "; ".join(str(r) for r in refused[:5])
        more = f" (and {len(refused) - 5} more)" if len(refused) > 5 else ""
        raise DataError(f"{len(refused)} sentiment record(s) refused: {listed}{more}")
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    frame = frame.astype({"ts_ns": "int64", "sentiment": "float64", "horizon_ns": "int64"})
    frame = frame.drop_duplicates(subset=["ts_ns", "symbol", "source", "sentiment",
                                          "headline"])
    frame = frame.sort_values("ts_ns", kind="stable").reset_index(drop=True)
    return SentimentRecords(frame, refused)


def parse_record(line: str) -> dict:
    """One JSON line as a checked record (a dict of :data:`COLUMNS`); ValueError says why
    it is refused."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise ValueError(f"not JSON ({error.msg} at column {error.colno})") from None
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    missing = [key for key in REQUIRED if key not in record]
    if missing:
        raise ValueError(f"missing {', '.join(repr(k) for k in missing)}")
    sentiment = record["sentiment"]
    if isinstance(sentiment, bool) or not isinstance(sentiment, int | float) \
            or not math.isfinite(sentiment) or not -1.0 <= sentiment <= 1.0:
        raise ValueError(f"'sentiment' must be a number in [-1, 1], not {sentiment!r}")
    horizon = record["impact_horizon"]
    if horizon not in HORIZONS:
        raise ValueError(f"'impact_horizon' must be one of {', '.join(HORIZONS)}, "
                         f"not {horizon!r}")
    for key in ("symbol", "source"):
        if not isinstance(record[key], str) or not record[key].strip():
            raise ValueError(f"{key!r} must be a non-empty string, not {record[key]!r}")
    headline = record.get("headline")
    if headline is not None and not isinstance(headline, str):
        raise ValueError(f"'headline' must be a string, not {headline!r}")
    return {"ts_ns": _timestamp_ns(record["timestamp"]), "symbol": record["symbol"].strip(),
            "sentiment": float(sentiment), "horizon_ns": HORIZONS[horizon],
            "source": record["source"].strip(), "headline": headline or ""}


def _timestamp_ns(value) -> int:
    if not isinstance(value, str):
        raise ValueError(f"'timestamp' must be an ISO 8601 string with a time zone, "
                         f"not {value!r}")
    try:
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError):
        raise ValueError(f"'timestamp' {value!r} is not an ISO 8601 time") from None
    if stamp is pd.NaT:
        raise ValueError(f"'timestamp' {value!r} is not an ISO 8601 time")
    if stamp.tzinfo is None:
        raise ValueError(f"'timestamp' {value!r} has no time zone (add Z for UTC)")
    return int(stamp.tz_convert("UTC").value)


def _documents(source, timeout_s: float):
    """``(where, text)`` of each document the source holds."""
    text = str(source)
    if text.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(text, timeout=timeout_s) as answer:
                yield text, answer.read().decode("utf-8")
        except urllib.error.HTTPError as error:
            raise DataError(f"sentiment endpoint {text} answered HTTP {error.code}") from None
        except (urllib.error.URLError, OSError, UnicodeDecodeError) as error:
            reason = getattr(error, "reason", error)
            raise DataError(f"sentiment endpoint {text} could not be read: {reason}") \
                from None
        return
    path = Path(source)
    if path.is_dir():
        files = sorted(path.glob("*.jsonl"))
        if not files:
            raise DataError(f"sentiment folder {path} holds no *.jsonl file")
    elif path.is_file():
        files = [path]
    else:
        raise DataError(f"sentiment source {path} does not exist")
    for file in files:
        try:
            yield str(file), file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise DataError(f"sentiment file {file} could not be read: {error}") from None


def align_sentiment(records: SentimentRecords | pd.DataFrame, symbol: str,
                    bar_open_ns: np.ndarray, bar_ns: int, *,
                    how: str = "mean") -> tuple[np.ndarray, np.ndarray]:
    """``symbol``'s sentiment at each bar's close, as-of: ``(sentiment, count)``.

    A record counts at the bars whose close (open + ``bar_ns``) is in
    ``(ts, ts + horizon]``. ``how`` is ``"mean"`` (of the records in force) or
    ``"last"`` (the latest record in force). Bars with no record in force are NaN with a
    count of 0.
    """
    if how not in HOW:
        raise ConfigError(f"sentiment 'how' must be one of {', '.join(HOW)}, not {how!r}")
    frame = records.frame if isinstance(records, SentimentRecords) else records
    mine = frame[frame["symbol"] == symbol].sort_values("ts_ns", kind="stable")
    closes = np.asarray(bar_open_ns, dtype=np.int64) + np.int64(bar_ns)
    if closes.size > 1 and np.any(closes[1:] < closes[:-1]):
        raise DataError("align_sentiment needs bars in time order")
    ts = mine["ts_ns"].to_numpy(np.int64)
    ends = ts + mine["horizon_ns"].to_numpy(np.int64)
    longest = int(mine["horizon_ns"].max()) if len(mine) else 0
    return _align(closes, ts, ends, mine["sentiment"].to_numpy(np.float64), longest,
                  how == "last")


@njit(cache=True)
def _align(closes, ts, ends, values, longest, latest):
    """Per close, the records in force (``ts < close <= end``), summed in their time
    order: the same additions whatever other bars are aligned with it, so a backtest's
    value at a bar equals, bit for bit, the one a live tick computes for that bar alone."""
    n = closes.shape[0]
    out = np.full(n, np.nan)
    counts = np.zeros(n, dtype=np.int64)
    lo = 0
    hi = 0
    for i in range(n):
        close = closes[i]
        while hi < ts.shape[0] and ts[hi] < close:  # records known at this close
            hi += 1
        while lo < hi and ts[lo] < close - longest:  # too old to be in force
            lo += 1
        total = 0.0
        count = 0
        for k in range(lo, hi):
            if close <= ends[k]:
                total += values[k]
                count += 1
                if latest:
                    out[i] = values[k]
        counts[i] = count
        if count > 0 and not latest:
            out[i] = total / count
    return out, counts


@njit(cache=True)
def sentiment_factor(sentiment, direction, weight, cap_above, cap):
    """``(confidence multiplier, size cap)`` for one bar (callable inside numba).

    ``direction`` is the sign of the exposure the strategy wants. The opposition is how
    far the sentiment points against it (0 when it agrees, is NaN, or there is no
    position wanted): the multiplier is ``1 - weight * opposition``, and the absolute
    exposure is capped at ``cap`` once the opposition reaches ``cap_above`` (the cap is
    infinite otherwise: no sentiment never limits a leveraged model).
    """
    if math.isnan(sentiment) or direction == 0.0:
        return 1.0, math.inf
    opposition = -sentiment if direction > 0.0 else sentiment
    if opposition <= 0.0:
        return 1.0, math.inf
    size_cap = cap if opposition >= cap_above else math.inf
    return 1.0 - weight * opposition, size_cap


@dataclass(frozen=True)
class SentimentRule:
    """How a model reads sentiment (configured per model): ``weight`` in [0, 1], how
    much full opposition lowers confidence; ``cap`` in [0, 1], the largest absolute
    exposure once the opposition reaches ``cap_above`` in (0, 1]; ``how``: ``mean`` or
    ``last``."""

    weight: float = 0.5
    cap_above: float = 0.6
    cap: float = 0.25
    how: str = "mean"

    @classmethod
    def from_dict(cls, values: dict | None, where: str = "sentiment") -> SentimentRule:
        """A rule from a configuration mapping; ConfigError names the key at fault."""
        values = dict(values or {})
        unknown = sorted(set(values) - {"weight", "cap_above", "cap", "how"})
        if unknown:
            raise ConfigError(f"{where}: unknown key {unknown[0]!r} (known: weight, "
                              f"cap_above, cap, how)")
        rule = cls(**values)
        for key, low, low_open in (("weight", 0.0, False), ("cap", 0.0, False),
                                   ("cap_above", 0.0, True)):
            value = getattr(rule, key)
            if isinstance(value, bool) or not isinstance(value, int | float) or \
                    not (low < value <= 1.0 if low_open else low <= value <= 1.0):
                span = "(0, 1]" if low_open else "[0, 1]"
                raise ConfigError(f"{where}.{key} must be a number in {span}, not {value!r}")
        if rule.how not in HOW:
            raise ConfigError(f"{where}.how must be one of {', '.join(HOW)}, "
                              f"not {rule.how!r}")
        return rule

    def apply(self, sentiment: np.ndarray, exposure: np.ndarray) -> tuple[np.ndarray,
                                                                         np.ndarray]:
        """Per bar: the confidence multiplier and the size cap for ``exposure``."""
        return _apply(np.asarray(sentiment, dtype=np.float64),
                      np.asarray(exposure, dtype=np.float64),
                      float(self.weight), float(self.cap_above), float(self.cap))


@njit(cache=True)
def _apply(sentiment, exposure, weight, cap_above, cap):
    n = sentiment.shape[0]
    multiplier = np.ones(n)
    size_cap = np.full(n, np.inf)
    for i in range(n):
        wanted = exposure[i]
        direction = 0.0 if math.isnan(wanted) else (1.0 if wanted > 0.0 else
                                                    (-1.0 if wanted < 0.0 else 0.0))
        multiplier[i], size_cap[i] = sentiment_factor(sentiment[i], direction, weight,
                                                      cap_above, cap)
    return multiplier, size_cap


def sentiment_factors(records, rule: SentimentRule, symbol: str, bar_open_ns: np.ndarray,
                      bar_ns: int, exposure: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per bar, the rule's ``(confidence multiplier, size cap)`` for ``exposure`` from
    ``symbol``'s records in force at the bar's close (what the backtest and the live tick
    hand to :func:`mmats.nb.exposure.effective_signal`)."""
    sentiment, _ = align_sentiment(records, symbol, bar_open_ns, bar_ns, how=rule.how)
    return rule.apply(sentiment, exposure)


def check_asof(records, rule: SentimentRule, symbol: str, bar_open_ns: np.ndarray,
               bar_ns: int, exposure: np.ndarray, *, n_cuts: int = 40,
               seed: int = 0) -> list[int]:
    """The lookahead check for sentiment: at ``n_cuts`` random bars (seeded), drop every
    record not yet known at the bar's close, then instead turn those records' sentiment
    around, and compare the factors up to that bar with the full run's. Returns the bars
    that differ (none, unless a record from after a close reached it)."""
    frame = records.frame if isinstance(records, SentimentRecords) else records
    full = sentiment_factors(frame, rule, symbol, bar_open_ns, bar_ns, exposure)
    n = len(bar_open_ns)
    if n == 0:
        return []
    cuts = np.random.default_rng(seed).choice(n, size=min(n_cuts, n), replace=False)
    bad: list[int] = []
    for cut in sorted(int(c) for c in cuts):
        close = int(bar_open_ns[cut]) + int(bar_ns)
        later = frame["ts_ns"].to_numpy() >= close
        turned = frame.assign(sentiment=np.where(later, -frame["sentiment"].to_numpy(),
                                                 frame["sentiment"].to_numpy()))
        for altered in (frame[~later], turned):
            part = sentiment_factors(altered, rule, symbol, bar_open_ns, bar_ns, exposure)
            for whole, piece in zip(full, part, strict=True):
                differs = ~np.isclose(whole[:cut + 1], piece[:cut + 1], rtol=0, atol=0,
                                      equal_nan=True)
                bad.extend(int(i) for i in np.flatnonzero(differs))
    return sorted(set(bad))
