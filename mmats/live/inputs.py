"""A live sleeve's extra inputs and confidence, as the backtest computes them.

At each close the tick runs a sleeve's strategy on its trailing window. A strategy with
extra inputs (``INPUTS``) gets them built from that window the way :func:`mmats.backtest.
with_inputs` builds them from a whole history (:mod:`mmats.data.extras`): its own symbol
at a longer timeframe from the window's bars, another symbol from the same feed's bars up
to the same close. A strategy that declares a confidence has the exposure the bar step
acts on made by the same rule as the backtest's (:func:`mmats.nb.exposure.effective_signal`),
and both the strategy's exposure and its confidence are journaled with the decision.

Other symbols of the market's venue at its timeframe come from the market's feed (the
tick fetches them with its own symbols); series of another venue or timeframe from the
candle store (fetched first when their venue is a live feed under ``venues:``; else the
store folder is filled by imports), or, in a replay, from the candles given by
``VENUE:SYMBOL:TIMEFRAME``. A series missing at a tick is alerted, and the model has no
opinion at that bar. An input with bars shorter than the market's is refused when the
configuration is loaded, naming the model.
"""

from __future__ import annotations

import math

import numpy as np

from mmats.data.calendar import timeframe_ns
from mmats.data.extras import extra_arrays, parse_inputs, series_needed
from mmats.errors import ConfigError
from mmats.nb.exposure import effective_signal

# bars of another symbol read per bar of the window: its gaps must not starve the window
OTHER_BARS_FACTOR = 2


def other_symbols(strategy, *, venue: str, symbol: str, timeframe: str,
                  model_id: str = "") -> list[str]:
    """The other symbols ``strategy``'s inputs read on ``venue`` at ``timeframe``: what
    the market's own feed serves beside its symbols (and the tick fetches with them)."""
    return [key[1] for key in _keys(strategy, venue, symbol, timeframe, model_id)
            if key[0] == venue and key[2] == timeframe]


def other_series(strategy, *, venue: str, symbol: str, timeframe: str,
                 model_id: str = "") -> list[tuple]:
    """The series ``(venue, symbol, timeframe)`` ``strategy``'s inputs read from another
    venue or at another timeframe: the tick reads them from the candle store (fetching
    those of live feeds first), a replay from the candles it is given."""
    return [key for key in _keys(strategy, venue, symbol, timeframe, model_id)
            if key[0] != venue or key[2] != timeframe]


def _keys(strategy, venue, symbol, timeframe, model_id) -> list[tuple]:
    """Every other series the inputs read; ConfigError for one shorter than the bars."""
    if not strategy.inputs:
        return []
    inputs = parse_inputs(strategy.input_specs, f"strategy {strategy.name!r}")
    keys = series_needed(inputs, venue=venue, symbol=symbol, timeframe=timeframe)
    for key in keys:
        if timeframe_ns(key[2]) < timeframe_ns(timeframe):
            raise ConfigError(f"model {model_id!r}: strategy {strategy.name!r} reads "
                              f"{':'.join(key)}, whose bars are shorter than the market's "
                              f"{timeframe}")
    return keys


def window_extras(strategy, window: dict[str, np.ndarray], *, feed, venue: str,
                  symbol: str, timeframe: str, end_ns: int,
                  series_feed=None) -> dict[str, np.ndarray]:
    """``window`` (the sleeve's trailing bars up to the one opened at ``end_ns``, with
    ``ts``) with the strategy's extra inputs added, aligned to it. ``feed`` serves the
    market's venue at its timeframe; ``series_feed(venue, timeframe)`` any other."""
    if not strategy.inputs:
        return window
    inputs = parse_inputs(strategy.input_specs, f"strategy {strategy.name!r}")
    others = {}
    own_ns = timeframe_ns(timeframe)
    span = own_ns * len(window["ts"])
    for key in series_needed(inputs, venue=venue, symbol=symbol, timeframe=timeframe):
        source = feed if key[0] == venue and key[2] == timeframe else series_feed(key[0],
                                                                                key[2])
        step = timeframe_ns(key[2])
        # the other series' bars closed by this bar's close, reaching back over the window
        last_open = end_ns + own_ns - step
        bars = OTHER_BARS_FACTOR * (span // step + 1)
        others[key] = _history(source, key[1], key[2], last_open, bars)
    return {**window, **extra_arrays(inputs, window, timeframe, venue=venue, symbol=symbol,
                                     others=others)}


def _history(feed, symbol, timeframe, end_ns, bars) -> dict[str, np.ndarray]:
    if hasattr(feed, "history_arrays"):
        arrays = feed.history_arrays(symbol, timeframe, end_ns=end_ns, bars=bars)
        if "ts" in arrays:
            return arrays
    frame = feed.history(symbol, timeframe, end_ns=end_ns, bars=bars)
    import pandas as pd

    ts = pd.to_datetime(frame["ts"], utc=True).dt.as_unit("ns").astype("int64").to_numpy()
    return {"ts": ts, **{c: frame[c].to_numpy(np.float64)
                         for c in ("open", "high", "low", "close", "volume")}}


def acted_value(output, t: int, scale_by_confidence: bool, step: float,
                multiplier: float = 1.0, size_cap: float = math.inf,
                ) -> tuple[tuple[float, float, float], dict]:
    """``((value, stop distance, take-profit distance), said)`` at bar ``t``: the value
    the bar step acts on, and what the strategy said (its ``exposure`` and its
    ``confidence``, None when it gives none) for the journal."""
    exposure = float(output.exposure[t])
    confidence = math.nan if output.confidence is None else float(output.confidence[t])
    value = effective_signal(exposure, confidence, scale_by_confidence, step, multiplier,
                             size_cap)
    stop = output.stop_distance[t] if output.stop_distance is not None else math.nan
    take = (output.take_profit_distance[t] if output.take_profit_distance is not None
            else math.nan)
    said = {"exposure": None if math.isnan(exposure) else exposure,
            "confidence": None if math.isnan(confidence) else confidence}
    return (value, float(stop), float(take)), said


def sentiment_now(records, rule, symbol: str, open_ns: int, bar_ns: int,
                  exposure: float) -> tuple[float, float, dict]:
    """The sentiment rule at the bar opened at ``open_ns``, as the backtest computes it
    at that bar (:func:`mmats.data.sentiment.sentiment_factors`): ``(multiplier, size
    cap, what to journal)``."""
    from mmats.data.sentiment import align_sentiment

    opens = np.array([open_ns], dtype=np.int64)
    sentiment, count = align_sentiment(records, symbol, opens, bar_ns, how=rule.how)
    multiplier, cap = rule.apply(sentiment, np.array([exposure]))
    level = float(sentiment[0])
    return float(multiplier[0]), float(cap[0]), {
        "sentiment": None if math.isnan(level) else level, "sentiment_records": int(count[0]),
        "sentiment_multiplier": float(multiplier[0]),
        "sentiment_cap": None if math.isinf(cap[0]) else float(cap[0])}


_READ: dict[str, tuple] = {}  # source -> (signature, records): files read again when changed


def sentiment_records(source: str):
    """The records of a sentiment source; a file or folder is read again only when one of
    its files changed (a catch-up tick asks at every close), a URL every time."""
    from pathlib import Path

    from mmats.data.sentiment import read_sentiment

    path = Path(source)
    if source.startswith(("http://", "https://")) or not path.exists():
        return read_sentiment(source)
    files = sorted(path.glob("*.jsonl")) if path.is_dir() else [path]
    signature = tuple((str(f), f.stat().st_mtime_ns, f.stat().st_size) for f in files)
    kept = _READ.get(source)
    if kept is None or kept[0] != signature:
        kept = _READ[source] = (signature, read_sentiment(source))
    return kept[1]


def sentiment_setting(value) -> dict:
    """A model's ``sentiment:``: where its records come from (``source``: a JSON-lines
    file, a folder of them or an http(s) URL) and the rule's ``weight``, ``cap_above``,
    ``cap`` and ``how`` (:class:`~mmats.data.sentiment.SentimentRule`)."""
    from mmats.data.sentiment import SentimentRule
    from mmats.sleeve import refuse

    if not isinstance(value, dict):
        refuse("sentiment", "must be a mapping with source: and the rule's keys")
    rule = {k: v for k, v in value.items() if k != "source"}
    source = value.get("source")
    if not isinstance(source, str) or not source.strip():
        refuse("source", "must name a JSON-lines file, a folder of them or an http(s) "
                         "URL", ("source",))
    try:
        SentimentRule.from_dict(rule, where="sentiment")
    except ConfigError as error:
        refuse("sentiment", str(error))
    return {"source": source.strip(), **rule}
