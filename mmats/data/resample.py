"""Resampling candles to a longer timeframe (numpy ``reduceat``; ~20 ms per million bars)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from mmats.data.calendar import infer_timeframe, timeframe_ns
from mmats.data.schema import VALUE_COLUMNS, candles_from_arrays, empty_candles
from mmats.errors import ConfigError, DataError
from mmats.units import EPOCH_MONDAY_NS, WEEK_NS


def resample(df: pd.DataFrame, timeframe: str, offset=None,
             drop_incomplete: bool = True) -> pd.DataFrame:
    """Aggregate candles into ``timeframe`` bars: open first, high max, low min, close last,
    volume sum.

    A source bar at ``ts`` goes to the bucket ``floor((ts - offset) / tf) * tf + offset``;
    buckets with no source bars produce no row. ``offset`` (a timeframe string such as
    ``"30m"``, a Timedelta or int nanoseconds) defaults to 0, i.e. buckets aligned to the
    epoch (midnight UTC for days), except for weeks, which start on Monday 00:00 UTC.
    With ``drop_incomplete`` the last bucket is dropped when the data does not reach its end
    (the bar is still forming). The source timeframe comes from ``df.attrs["timeframe"]``
    or is inferred; the target must be a whole multiple of it.

    Matches pandas ``df.resample(tf, on="ts", origin="epoch").agg(...)`` with empty buckets
    dropped.

    >>> hourly = resample(load("bittrex:ETH/BTC:5m"), "1h")   # doctest: +SKIP
    """
    ts = df["ts"].to_numpy(dtype="M8[ns]").view(np.int64)
    attrs = dict(df.attrs)
    attrs.pop("validation", None)
    attrs["timeframe"] = timeframe
    values = {c: df[c].to_numpy(dtype=np.float64) for c in VALUE_COLUMNS}
    out_ts, out = resample_arrays(ts, values, timeframe, df.attrs.get("timeframe"), offset,
                                  drop_incomplete, attrs.get("source", "candles"))
    frame = candles_from_arrays(out_ts, out) if ts.size else empty_candles()
    frame.attrs = attrs
    return frame


def resample_arrays(ts_ns: np.ndarray, values: dict[str, np.ndarray], timeframe: str,
                    source_timeframe: str | None = None, offset=None,
                    drop_incomplete: bool = True, source: str = "candles",
                    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """:func:`resample` on arrays: int64 ns bar open times and the five float64 value
    arrays in, the same for ``timeframe`` bars out. ``source_timeframe`` is inferred when
    not given; ``source`` names the data in errors.

    >>> ts, bars = resample_arrays(ts_ns, values, "1h", "1m")   # doctest: +SKIP
    """
    target_ns = timeframe_ns(timeframe)
    ts = np.asarray(ts_ns, dtype=np.int64)
    if ts.size == 0:
        return ts[:0], {c: np.empty(0) for c in VALUE_COLUMNS}
    if np.any(ts[1:] <= ts[:-1]):
        raise DataError(f"{source}: timestamps are not strictly "
                        "increasing; run validate_candles() first")
    source_tf = source_timeframe
    if not source_tf:
        if ts.size < 2:
            raise ConfigError("cannot tell the timeframe of a single bar; set "
                              "df.attrs['timeframe'] (e.g. '5m') before resampling")
        source_tf = infer_timeframe(ts)
    step_ns = timeframe_ns(source_tf)
    if target_ns % step_ns:
        raise ConfigError(f"cannot resample {source_tf} bars to {timeframe}: {timeframe} is not "
                          f"a whole multiple of {source_tf}")
    offset_ns = _offset_ns(offset, target_ns)
    misaligned = (ts - offset_ns) % step_ns != 0
    if misaligned.any():
        first = pd.Timestamp(int(ts[np.argmax(misaligned)]), tz="UTC")
        raise ConfigError(f"offset {offset!r} cuts {source_tf} bars in two (e.g. the bar at "
                          f"{first}); bucket edges must fall on the {source_tf} grid")

    bucket = (ts - offset_ns) // target_ns * target_ns + offset_ns
    starts = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])
    lasts = np.r_[starts[1:], ts.size] - 1
    values = {c: np.asarray(values[c], dtype=np.float64) for c in VALUE_COLUMNS}
    out = {
        "open": values["open"][starts],
        "high": np.maximum.reduceat(values["high"], starts),
        "low": np.minimum.reduceat(values["low"], starts),
        "close": values["close"][lasts],
        "volume": np.add.reduceat(values["volume"], starts),
    }
    out_ts = bucket[starts]
    if drop_incomplete and out_ts[-1] + target_ns > ts[-1] + step_ns:
        out_ts = out_ts[:-1]
        out = {c: v[:-1] for c, v in out.items()}
    return out_ts, out


def _offset_ns(offset, target_ns: int) -> int:
    if offset is None:
        return EPOCH_MONDAY_NS % target_ns if target_ns % WEEK_NS == 0 else 0
    if isinstance(offset, str):
        return timeframe_ns(offset) % target_ns if offset.strip() not in ("0", "") else 0
    if isinstance(offset, (int, np.integer)):
        return int(offset) % target_ns
    try:
        return int(pd.Timedelta(offset).value) % target_ns
    except (ValueError, TypeError):
        raise ConfigError(f"offset {offset!r} is not a duration; use e.g. '30m'") from None

