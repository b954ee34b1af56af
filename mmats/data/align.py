"""Other series aligned to a strategy's own bars, as-of and without lookahead.

A strategy on 5-minute bars may also read its symbol's hourly bars, or another
symbol's bars as a market filter. At its bar *i* (which closes at ``close_i``) it may
know only the other bars that have **closed** by then: a bar opening at ``o`` with
length ``L`` is visible from the first own bar whose close is at or after ``o + L``.
So the 10:00 hourly bar (closing at 11:00) is first seen by the 5-minute bar that
closes at 11:00 (the one opening at 10:55), never by the one closing at 10:55.

Between closes the last visible bar's values carry forward (also over the other
series' gaps: a missing BTC bar leaves the previous one in force); before the first
visible bar the values are NaN. The same function aligns in the backtest, the sweep,
the walk-forward, the lookahead check and the live tick, so they all see the same
numbers at the same bar.

A higher timeframe of the strategy's own symbol comes from :func:`higher_timeframe`:
the own bars resampled, keeping only buckets whose close has passed (a bucket still
forming is never visible, and no bar from after a decision ever enters a bucket that
is visible at it). A first bucket that began before the data does is dropped too: a
live window starting mid-hour would otherwise build that hour from part of its bars,
and disagree with the backtest, which saw all of them.
"""

from __future__ import annotations

import numpy as np

from mmats.data.calendar import timeframe_name, timeframe_ns
from mmats.errors import ConfigError, DataError

FIELDS = ("open", "high", "low", "close", "volume")


def visible_index(own_open_ns: np.ndarray, own_bar_ns: int, other_open_ns: np.ndarray,
                  other_bar_ns: int) -> np.ndarray:
    """For each own bar, the index of the last other bar closed by the own bar's close
    (-1 when none has closed yet)."""
    own_close = np.asarray(own_open_ns, dtype=np.int64) + np.int64(own_bar_ns)
    other_close = np.asarray(other_open_ns, dtype=np.int64) + np.int64(other_bar_ns)
    if other_close.size > 1 and np.any(other_close[1:] <= other_close[:-1]):
        raise DataError("the other series' timestamps are not strictly increasing")
    return np.searchsorted(other_close, own_close, side="right").astype(np.int64) - 1


def align_asof(own_open_ns: np.ndarray, own_bar_ns: int, other_open_ns: np.ndarray,
               other_bar_ns: int, values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``values`` (arrays over the other series' bars) as seen at each own bar's close:
    the last closed other bar's values carried forward, NaN before the first."""
    index = visible_index(own_open_ns, own_bar_ns, other_open_ns, other_bar_ns)
    seen = index >= 0
    out = {}
    for name, array in values.items():
        array = np.asarray(array, dtype=np.float64)
        if array.shape[0] != np.asarray(other_open_ns).shape[0]:
            raise DataError(f"the other series' {name!r} has {array.shape[0]} values for "
                            f"{np.asarray(other_open_ns).shape[0]} bars")
        aligned = np.full(index.shape[0], np.nan)
        aligned[seen] = array[index[seen]]
        out[name] = aligned
    return out


def higher_timeframe(own_open_ns: np.ndarray, own_bar_ns: int, values: dict[str, np.ndarray],
                     timeframe: str) -> dict[str, np.ndarray]:
    """The own bars resampled to ``timeframe`` (open first, high max, low min, close
    last, volume sum; buckets from the epoch, weeks from Monday) and aligned back as-of:
    at each own bar, the last bucket that had closed."""
    from mmats.data.resample import resample_arrays

    target_ns = timeframe_ns(timeframe)
    if target_ns <= own_bar_ns or target_ns % own_bar_ns:
        raise ConfigError(f"an extra input's timeframe {timeframe!r} must be a whole "
                          f"multiple of the strategy's own bars, and longer")
    missing = [name for name in FIELDS if name not in values]
    if missing:
        raise DataError(f"higher_timeframe needs {', '.join(missing)}")
    own = np.asarray(own_open_ns, dtype=np.int64)
    bucket_ts, buckets = resample_arrays(own, {k: values[k] for k in FIELDS}, timeframe,
                                         source_timeframe=timeframe_name(own_bar_ns),
                                         drop_incomplete=True)
    if bucket_ts.size and bucket_ts[0] != own[0]:  # the first bucket began before the data
        bucket_ts = bucket_ts[1:]
        buckets = {k: v[1:] for k, v in buckets.items()}
    return align_asof(own, own_bar_ns, bucket_ts, target_ns, buckets)

