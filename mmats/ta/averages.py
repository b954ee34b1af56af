"""Moving averages: SMA, EMA, WMA, DEMA, TEMA, TRIMA, KAMA (TA-Lib's) and HMA (not in
TA-Lib). Each takes a float64 array and an integer period and returns a float64 array of
the same length, NaN during its warm-up (counted from the first non-NaN input).

Note: ``mmats.nb.indicators.ema`` is pandas' ``ewm(adjust=False)``, seeded with the first
value; ``mmats.ta.ema`` is TA-Lib's, seeded with an SMA. They converge after a few
periods but are not equal.
"""

import math

import numpy as np
from numba import njit

from mmats.ta._core import check_period, ema, first_valid, sma

__all__ = ["sma", "ema", "wma", "dema", "tema", "trima", "kama", "hma"]


@njit(cache=True)
def wma(values, period):
    """Linearly weighted moving average, weights 1..``period`` (newest heaviest).

    ``sum(k * values[i - period + k]) / (period * (period + 1) / 2)``; TA-Lib's WMA.
    Warm-up ``period - 1``; NaN while a NaN is in the window.

    >>> wma(np.array([1.0, 2.0, 3.0]), 2)   # [nan, (1 + 4) / 3, (2 + 6) / 3]
    """
    check_period(period, 1)
    n = values.shape[0]
    out = np.full(n, np.nan)
    divider = period * (period + 1) / 2.0
    weighted = 0.0  # sum of k * value over the window ending at the previous bar, NaN as 0
    plain = 0.0  # plain sum over that window, NaN as 0
    last_nan = -1
    until_exact = period  # a countdown: cheaper than i % period in the loop
    for i in range(n):
        value = values[i]
        if np.isnan(value):
            last_nan = i
            value = 0.0
        until_exact -= 1
        if until_exact == 0 and i >= period:
            until_exact = period
            weighted = 0.0  # re-added exactly every period bars: no drift
            plain = 0.0
            for k in range(1, period + 1):
                old = values[i - period + k]
                if not np.isnan(old):
                    weighted += k * old
                    plain += old
        else:
            weighted = weighted - plain + period * value
            plain += value
            if i >= period and not np.isnan(values[i - period]):
                plain -= values[i - period]
        if i >= period - 1 and i - last_nan >= period:
            out[i] = weighted / divider
    return out


@njit(cache=True)
def dema(values, period):
    """Double EMA: ``2 * ema(x) - ema(ema(x))`` (TA-Lib's, each EMA SMA-seeded).

    Warm-up ``2 * (period - 1)``.
    """
    first = ema(values, period)
    second = ema(first, period)
    return 2.0 * first - second


@njit(cache=True)
def tema(values, period):
    """Triple EMA: ``3 * e1 - 3 * e2 + e3`` with ``e2 = ema(e1)``, ``e3 = ema(e2)``
    (TA-Lib's). Warm-up ``3 * (period - 1)``."""
    first = ema(values, period)
    second = ema(first, period)
    third = ema(second, period)
    return 3.0 * first - 3.0 * second + third


@njit(cache=True)
def trima(values, period):
    """Triangular moving average, TA-Lib's: an SMA of an SMA, of lengths
    ``(period + 1) // 2`` twice for an odd period, ``period // 2`` and ``period // 2 + 1``
    for an even one (weights 1, 2, .., 2, 1). Warm-up ``period - 1``."""
    check_period(period, 1)
    if period % 2 == 1:
        first = (period + 1) // 2
        second = first
    else:
        first = period // 2
        second = first + 1
    return sma(sma(values, first), second)


@njit(cache=True)
def kama(values, period=30):
    """Kaufman's adaptive moving average, TA-Lib's (fast 2, slow 30 fixed).

    Efficiency ``er = |x[i] - x[i - period]| / sum(|x[j] - x[j - 1]|, period)`` (1 where the
    sum is 0 or not above the change), smoothing ``sc = (er * (2/3 - 2/31) + 2/31) ** 2``,
    ``kama[i] = kama[i - 1] + sc * (x[i] - kama[i - 1])``, seeded with
    ``kama[period - 1] = x[period - 1]``. Warm-up ``period``; NaN after a later NaN.

    Convention: TA-Lib treats a sum of changes below 1e-8 as zero (an absolute threshold
    that bites on low-priced pairs); here only an exact zero is.
    """
    check_period(period, 1)
    n = values.shape[0]
    out = np.full(n, np.nan)
    start = first_valid(values)
    if start + period >= n:
        return out
    slowest = 2.0 / 31.0
    spread = 2.0 / 3.0 - slowest
    path = 0.0
    for j in range(start + 1, start + period + 1):
        path += abs(values[j] - values[j - 1])
    average = values[start + period - 1]
    until_exact = period  # a countdown: cheaper than a modulo in the loop
    for i in range(start + period, n):
        if i > start + period:
            path += abs(values[i] - values[i - 1]) - abs(values[i - period] - values[i - period - 1])
            until_exact -= 1
            if until_exact == 0:
                until_exact = period
                path = 0.0  # re-added exactly every period bars: no drift
                for j in range(i - period + 1, i + 1):
                    path += abs(values[j] - values[j - 1])
        change = values[i] - values[i - period]
        if path <= change or path == 0.0:
            efficiency = 1.0
        else:
            efficiency = abs(change / path)
        smoothing = efficiency * spread + slowest
        smoothing *= smoothing
        average = (values[i] - average) * smoothing + average
        out[i] = average
    return out


@njit(cache=True)
def hma(values, period):
    """Hull moving average: ``wma(2 * wma(x, period // 2) - wma(x, period), isqrt(period))``.

    Not in TA-Lib. Warm-up ``period - 1 + isqrt(period) - 1``; ``period`` >= 2.
    """
    check_period(period, 2)
    half = wma(values, period // 2)
    full = wma(values, period)
    root = int(math.floor(math.sqrt(period)))
    return wma(2.0 * half - full, root)
