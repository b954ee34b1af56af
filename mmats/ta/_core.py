"""The building blocks every indicator shares: window sums, extremes and moments, and the
two recursive smoothers (EMA seeded with an SMA, Wilder's). One implementation of each,
so the NaN rules of ``mmats.ta`` hold in one place:

- a window result is NaN while a NaN lies inside its window, and recovers after it;
- a recursive smoother starts at the first non-NaN value (leading NaNs are skipped, as
  TA-Lib's Python wrapper does) and stays NaN after a later NaN, because its state would
  depend on how the hole were filled.

Everything is a plain O(n) loop over float64 arrays.
"""

import numpy as np
from numba import njit


@njit(cache=True)
def check_period(period, least):
    if period < least:
        raise ValueError("an indicator period is below its least value: 1, or 2 for hma, "
                         "zscore, linearreg_slope and the DI/ADX family")


@njit(cache=True)
def first_valid(values):
    """Index of the first non-NaN value, or ``len(values)`` when there is none."""
    for i in range(values.shape[0]):
        if not np.isnan(values[i]):
            return i
    return values.shape[0]


@njit(cache=True)
def rolling_sum(values, period):
    """Sum of the last ``period`` values; NaN until ``period`` values and while a NaN is in
    the window. A running total, re-added exactly every ``period`` bars so rounding cannot
    drift over long series."""
    check_period(period, 1)
    n = values.shape[0]
    out = np.full(n, np.nan)
    total = 0.0
    last_nan = -1
    until_exact = period  # a countdown: cheaper than i % period in the loop
    for i in range(n):
        if np.isnan(values[i]):
            last_nan = i
        until_exact -= 1
        if until_exact == 0 and i >= period:
            until_exact = period
            total = 0.0
            for j in range(i - period + 1, i + 1):
                if not np.isnan(values[j]):
                    total += values[j]
        else:
            if not np.isnan(values[i]):
                total += values[i]
            if i >= period and not np.isnan(values[i - period]):
                total -= values[i - period]
        if i >= period - 1 and i - last_nan >= period:
            out[i] = total
    return out


@njit(cache=True)
def sma(values, period):
    """Simple moving average, TA-Lib's SMA: the mean of the last ``period`` values.
    Warm-up ``period - 1``; NaN while a NaN is in the window.

    >>> sma(np.array([1.0, 2.0, 3.0, 4.0]), 2)   # [nan, 1.5, 2.5, 3.5]
    """
    check_period(period, 1)
    out = rolling_sum(values, period)
    for i in range(out.shape[0]):
        out[i] /= period  # in place: a second fresh array costs more than the division
    return out


@njit(cache=True)
def _rolling_extreme(values, period, sign, as_index):
    """The largest (``sign`` = 1.0) or smallest (``sign`` = -1.0) of the last ``period``
    values, the most recent one on ties, as its value or (``as_index``) its index, in one
    float64 array; NaN during warm-up and while a NaN is in the window.

    O(n) in the worst case, about three comparisons a bar (van Herk / Gil-Werman): the
    bars are cut into blocks of ``period``; a window is the tail of the previous block
    (its suffix extremes, computed once per block) and the head of the current one (a
    running extreme).
    """
    n = values.shape[0]
    out = np.full(n, np.nan)
    suffix = np.empty(period, dtype=np.int64)  # previous block: extreme of [k, block end]
    best = 0  # current block: extreme of [block start, i]
    offset = period - 1  # position of bar i in its block
    last_nan = -1
    for i in range(n):
        offset += 1
        if offset == period:
            offset = 0
            if i >= period:
                suffix[period - 1] = i - 1
                for k in range(period - 2, -1, -1):
                    j = i - period + k
                    later = suffix[k + 1]
                    suffix[k] = j if sign * values[j] > sign * values[later] else later
        value = values[i]
        if np.isnan(value):
            last_nan = i
        if offset == 0 or sign * value >= sign * values[best]:
            best = i  # NaN never wins here, and a window holding it is blank anyway
        if i < period - 1 or i - last_nan < period:
            continue
        winner = best
        if offset != period - 1:  # the window also reaches into the previous block
            tail = suffix[offset + 1]
            if sign * values[tail] > sign * values[best]:
                winner = tail
        out[i] = winner if as_index else values[winner]
    return out


@njit(cache=True)
def rolling_argmax(values, period, sign):
    """Index (as float64, NaN when there is none) of the largest (``sign`` = 1.0) or
    smallest (-1.0) of the last ``period`` values; see ``_rolling_extreme``."""
    return _rolling_extreme(values, period, sign, True)


@njit(cache=True)
def rolling_extreme(values, period, sign):
    """Highest (``sign`` = 1.0) or lowest (-1.0) of the last ``period`` values."""
    return _rolling_extreme(values, period, sign, False)


@njit(cache=True)
def rolling_moments(values, period):
    """Mean and population variance (ddof 0) of the last ``period`` values.

    Sums of ``values - anchor`` with the anchor moved to a recent value and the sums
    re-added exactly every ``period`` bars: the variance keeps its digits even where it is
    tiny against the price (EUR/USD over a quiet day). NaN as ``rolling_sum``.
    """
    n = values.shape[0]
    mean = np.full(n, np.nan)
    variance = np.full(n, np.nan)
    anchor = 0.0
    sum1 = 0.0
    sum2 = 0.0
    last_nan = -1
    until_exact = 0
    for i in range(n):
        if np.isnan(values[i]):
            last_nan = i
            continue
        if i - last_nan < period:
            continue  # the window holds a NaN
        until_exact -= 1
        if i - last_nan == period or until_exact <= 0:
            until_exact = period
            anchor = values[i]
            sum1 = 0.0
            sum2 = 0.0
            for j in range(i - period + 1, i + 1):
                shifted = values[j] - anchor
                sum1 += shifted
                sum2 += shifted * shifted
        else:
            new = values[i] - anchor
            old = values[i - period] - anchor
            sum1 += new - old
            sum2 += new * new - old * old
        shifted_mean = sum1 / period
        mean[i] = anchor + shifted_mean
        variance[i] = max(sum2 / period - shifted_mean * shifted_mean, 0.0)
    return mean, variance


@njit(cache=True)
def ema_from(values, period, alpha, first_out):
    """EMA with smoothing ``alpha``, seeded at bar ``first_out`` with the mean of the
    ``period`` values ending there, then ``ema += alpha * (value - ema)``; NaN before.

    ``first_out`` is normally the first valid bar + ``period - 1``; TA-Lib's MACD seeds
    its fast EMA later, at the slow one's first bar.
    """
    n = values.shape[0]
    out = np.full(n, np.nan)
    if first_out >= n or first_out - period + 1 < 0:
        return out
    seed = 0.0
    for j in range(first_out - period + 1, first_out + 1):
        seed += values[j]
    average = seed / period
    out[first_out] = average
    for i in range(first_out + 1, n):
        average = (values[i] - average) * alpha + average
        out[i] = average
    return out


@njit(cache=True)
def ema(values, period):
    """Exponential moving average, TA-Lib's EMA: ``alpha = 2 / (period + 1)``, seeded with
    the SMA of the first ``period`` values (from the first non-NaN one); warm-up
    ``period - 1``; NaN from a later NaN on.

    ``mmats.nb.indicators.ema`` (pandas' ``ewm(adjust=False)``) seeds with the first value
    instead; the two converge as the seed's weight ``(1 - alpha) ** k`` fades.

    >>> ema(np.array([1.0, 2.0, 3.0, 4.0]), 2)   # [nan, 1.5, 2.5, 3.5]: alpha = 2/3
    """
    check_period(period, 1)
    start = first_valid(values)
    return ema_from(values, period, 2.0 / (period + 1.0), start + period - 1)


@njit(cache=True)
def wilder(values, period):
    """Wilder's average: the mean of the first ``period`` values (from the first non-NaN
    one), then ``average = (average * (period - 1) + value) / period``."""
    check_period(period, 1)
    n = values.shape[0]
    out = np.full(n, np.nan)
    start = first_valid(values)
    if start + period - 1 >= n:
        return out
    total = 0.0
    for j in range(start, start + period):
        total += values[j]
    average = total / period
    out[start + period - 1] = average
    for i in range(start + period, n):
        average = (average * (period - 1) + values[i]) / period
        out[i] = average
    return out


@njit(cache=True)
def true_range(high, low, close):
    """``max(high, previous close) - min(low, previous close)``; NaN at bar 0 (no previous
    close), as TA-Lib's TRANGE."""
    n = close.shape[0]
    out = np.full(n, np.nan)
    for i in range(1, n):
        span = high[i] - low[i]
        up = abs(close[i - 1] - high[i])
        down = abs(close[i - 1] - low[i])
        if up > span:
            span = up
        if down > span:
            span = down
        out[i] = span
        if np.isnan(high[i]) or np.isnan(low[i]) or np.isnan(close[i - 1]):
            out[i] = np.nan
    return out


@njit(cache=True)
def typical_price(high, low, close):
    """``(high + low + close) / 3``."""
    return (high + low + close) / 3.0
