"""Ranges and bands: true range, ATR, NATR, standard deviation, Bollinger Bands, Keltner
and Donchian channels, highest/lowest/mid-price, rolling z-score. The TA-Lib ones equal
its function of the same name (upper case); Keltner, Donchian's tuple and the z-score are
not in TA-Lib and are checked against pandas.

Note: ``mmats.nb.indicators.atr`` counts bar 0's ``high - low`` as a true range and seeds
with it (pandas' ``ewm``); ``mmats.ta.atr`` is TA-Lib's (no range at bar 0, seeded with
the mean of the first ``period`` ranges). They converge, but are not equal.
"""

import numpy as np
from numba import njit

from mmats.ta._core import (
    check_period,
    ema,
    rolling_extreme,
    rolling_moments,
    true_range,
    wilder,
)

__all__ = ["trange", "atr", "natr", "stddev", "bbands", "keltner", "donchian", "highest",
           "lowest", "midprice", "zscore"]


@njit(cache=True)
def trange(high, low, close):
    """True range, TA-Lib's TRANGE: ``max(high, prev close) - min(low, prev close)``.
    Warm-up 1 (bar 0 has no previous close)."""
    return true_range(high, low, close)


@njit(cache=True)
def atr(high, low, close, period=14):
    """Average true range, TA-Lib's: Wilder's average of ``trange``, seeded with the mean of
    the first ``period`` ranges (bars 1..period). Warm-up ``period``."""
    return wilder(true_range(high, low, close), period)


@njit(cache=True)
def natr(high, low, close, period=14):
    """Normalised ATR in percent of the close, TA-Lib's NATR: ``atr / close * 100``.
    Warm-up ``period``; NaN where the close is 0 (TA-Lib: 0)."""
    average = atr(high, low, close, period)
    out = np.full(close.shape[0], np.nan)
    for i in range(close.shape[0]):
        if close[i] != 0.0:
            out[i] = (average[i] / close[i]) * 100.0
    return out


@njit(cache=True)
def stddev(values, period=5, deviations=1.0):
    """Rolling population standard deviation (ddof 0) times ``deviations``, TA-Lib's
    STDDEV. Warm-up ``period - 1``; NaN while a NaN is in the window.

    Computed from sums re-anchored every ``period`` bars (``_core.rolling_moments``), so
    it agrees with a two-pass computation to ~1e-12 where pandas' ``rolling().std()``
    drifts by ~1e-9 on EUR/USD.
    """
    check_period(period, 1)
    _, variance = rolling_moments(values, period)
    return np.sqrt(variance) * deviations


@njit(cache=True)
def bbands(close, period=20, deviations_up=2.0, deviations_down=2.0):
    """Bollinger Bands, TA-Lib's BBANDS with an SMA: ``middle = sma(close, period)``,
    ``upper/lower = middle +/- deviations * stddev(close, period)`` (population).
    Returns ``(upper, middle, lower)``; warm-up ``period - 1``."""
    check_period(period, 1)
    middle, variance = rolling_moments(close, period)
    spread = np.sqrt(variance)
    return middle + deviations_up * spread, middle, middle - deviations_down * spread


@njit(cache=True)
def keltner(high, low, close, period=20, multiplier=2.0, atr_period=10):
    """Keltner channels (Chester Keltner's modern form, as TradingView's defaults):
    ``middle = ema(close, period)``, ``upper/lower = middle +/- multiplier * atr(atr_period)``
    with TA-Lib's EMA and ATR. Returns ``(upper, middle, lower)``; warm-up
    ``max(period - 1, atr_period)``. Not in TA-Lib."""
    middle = ema(close, period)
    reach = multiplier * atr(high, low, close, atr_period)
    return middle + reach, middle, middle - reach


@njit(cache=True)
def highest(values, period=30):
    """Highest of the last ``period`` values including the current one, TA-Lib's MAX.
    Warm-up ``period - 1``; O(n)."""
    check_period(period, 1)
    return rolling_extreme(values, period, 1.0)


@njit(cache=True)
def lowest(values, period=30):
    """Lowest of the last ``period`` values including the current one, TA-Lib's MIN."""
    check_period(period, 1)
    return rolling_extreme(values, period, -1.0)


@njit(cache=True)
def midprice(high, low, period=14):
    """``(highest high + lowest low) / 2`` over ``period`` bars, TA-Lib's MIDPRICE."""
    return (highest(high, period) + lowest(low, period)) / 2.0


@njit(cache=True)
def donchian(high, low, period=20):
    """Donchian channel: ``(upper, middle, lower)`` = highest high, mid-point, lowest low
    of the last ``period`` bars **including the current one** (TA-Lib's MAX, MIDPRICE,
    MIN). A breakout rule compares the close with the previous bar's channel
    (``upper[i - 1]``). Warm-up ``period - 1``."""
    upper = highest(high, period)
    lower = lowest(low, period)
    return upper, (upper + lower) / 2.0, lower


@njit(cache=True)
def zscore(values, period=20):
    """Rolling z-score: ``(x - mean) / std`` over the last ``period`` values, population
    std (ddof 0, as TA-Lib's STDDEV; pandas' ``rolling().std()`` defaults to ddof 1).
    Warm-up ``period - 1``; NaN where the window is flat. Not in TA-Lib."""
    check_period(period, 2)
    mean, variance = rolling_moments(values, period)
    out = np.full(values.shape[0], np.nan)
    for i in range(values.shape[0]):
        if variance[i] > 0.0:
            out[i] = (values[i] - mean[i]) / np.sqrt(variance[i])
    return out
