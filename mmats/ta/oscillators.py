"""Oscillators and momentum: RSI, CMO, Stochastic (slow and fast), Stochastic RSI, CCI,
Williams %R, ROC, momentum, MACD, APO, PPO, TRIX, Ultimate Oscillator, Balance of Power.
All match TA-Lib's function of the same name (upper case) except where a docstring names
a convention; warm-ups are counted from the first non-NaN input.

One convention for "no range": where TA-Lib answers 0 for an undefined ratio (a flat
window in the stochastics and Williams %R, a flat market in RSI/CMO), these return the
neutral midpoint (50, -50 for %R, 0 for CMO), so a flat market never reads as a signal.
A range within ``RELATIVE_FLAT`` (1e-12) of its level counts as flat in the stochastics:
it is rounding, not a move.
"""

import numpy as np
from numba import njit

from mmats.ta._core import (
    check_period,
    ema,
    ema_from,
    first_valid,
    rolling_argmax,
    rolling_sum,
    sma,
    typical_price,
)

RELATIVE_FLAT = 1e-12  # a change this small against the level is rounding, not a move

__all__ = ["rsi", "cmo", "stoch", "stochf", "stochrsi", "cci", "willr", "roc", "mom",
           "macd", "apo", "ppo", "trix", "ultosc", "bop"]


@njit(cache=True)
def _strength(close, period, as_cmo):
    """RSI (or, ``as_cmo``, CMO) in one pass: Wilder averages of the gains and losses,
    seeded with their means over the first ``period`` changes, then
    ``average = (average * (period - 1) + change) / period``. NaN from a later NaN on."""
    check_period(period, 1)
    n = close.shape[0]
    out = np.full(n, np.nan)
    start = first_valid(close)
    gain = 0.0
    loss = 0.0
    for i in range(start + 1, n):
        change = close[i] - close[i - 1]
        up = change if change > 0.0 else 0.0
        down = -change if change < 0.0 else 0.0
        if np.isnan(change):
            gain = np.nan  # the averages cannot skip a hole
        if i - start < period:
            gain += up
            loss += down
            continue
        if i - start == period:
            gain = (gain + up) / period
            loss = (loss + down) / period
        else:
            gain = (gain * (period - 1) + up) / period
            loss = (loss * (period - 1) + down) / period
        if np.isnan(gain):
            break
        total = gain + loss
        if total > 0.0:
            out[i] = 100.0 * ((gain - loss) / total) if as_cmo else 100.0 * (gain / total)
        else:
            out[i] = 0.0 if as_cmo else 50.0
    return out


@njit(cache=True)
def rsi(close, period=14):
    """Relative strength index, TA-Lib's: Wilder averages of gains and losses seeded with
    their simple means over the first ``period`` changes; ``100 * gain / (gain + loss)``.
    Warm-up ``period``.

    Conventions: 50 where gain and loss are both 0 (TA-Lib: 0). ``mmats.nb.indicators.rsi``
    seeds its averages with the first change instead (pandas' ``ewm``); both converge.
    """
    return _strength(close, period, False)


@njit(cache=True)
def cmo(close, period=14):
    """Chande momentum oscillator, TA-Lib's: ``100 * (gain - loss) / (gain + loss)`` with
    RSI's Wilder averages (so ``cmo = 2 * rsi - 100``). Warm-up ``period``; 0 when flat."""
    return _strength(close, period, True)


@njit(cache=True)
def _fast_k(high, low, close, period):
    """``100 * (close - lowest low) / (highest high - lowest low)`` over ``period`` bars;
    50 for a flat window: one whose range is within ``RELATIVE_FLAT`` of its level (an RSI
    that repeats itself differs from bar to bar in its last bits only)."""
    n = close.shape[0]
    out = np.full(n, np.nan)
    highest = rolling_argmax(high, period, 1.0)
    lowest = rolling_argmax(low, period, -1.0)
    for i in range(n):
        if np.isnan(highest[i]) or np.isnan(lowest[i]) or np.isnan(close[i]):
            continue
        top = high[int(highest[i])]
        bottom = low[int(lowest[i])]
        if top - bottom > RELATIVE_FLAT * max(abs(top), abs(bottom)):
            out[i] = (close[i] - bottom) / ((top - bottom) / 100.0)
        else:
            out[i] = 50.0
    return out


@njit(cache=True)
def stoch(high, low, close, fastk_period=5, slowk_period=3, slowd_period=3):
    """Slow stochastic, TA-Lib's STOCH with SMAs: ``slow_k = sma(fast_k, slowk_period)``,
    ``slow_d = sma(slow_k, slowd_period)``. Returns ``(slow_k, slow_d)``.

    Warm-up: ``slow_k`` ``fastk_period + slowk_period - 2``, ``slow_d`` that
    ``+ slowd_period - 1`` (TA-Lib hides ``slow_k`` until ``slow_d`` exists). A flat
    window gives fast %K 50 (TA-Lib: 0).
    """
    check_period(fastk_period, 1)
    slow_k = sma(_fast_k(high, low, close, fastk_period), slowk_period)
    return slow_k, sma(slow_k, slowd_period)


@njit(cache=True)
def stochf(high, low, close, fastk_period=5, fastd_period=3):
    """Fast stochastic, TA-Lib's STOCHF: returns ``(fast_k, fast_d = sma(fast_k,
    fastd_period))``. Warm-up ``fastk_period - 1`` and ``+ fastd_period - 1``; a flat
    window gives 50 (TA-Lib: 0)."""
    check_period(fastk_period, 1)
    fast_k = _fast_k(high, low, close, fastk_period)
    return fast_k, sma(fast_k, fastd_period)


@njit(cache=True)
def stochrsi(close, period=14, fastk_period=5, fastd_period=3):
    """Stochastic RSI, TA-Lib's STOCHRSI: ``stochf`` of ``rsi(close, period)`` (the RSI as
    high, low and close). Returns ``(fast_k, fast_d)``; warm-up ``period + fastk_period - 1``
    and ``+ fastd_period - 1``. A flat RSI window gives 50 (TA-Lib: 0)."""
    strength = rsi(close, period)
    return stochf(strength, strength, strength, fastk_period, fastd_period)


@njit(cache=True)
def cci(high, low, close, period=14):
    """Commodity channel index, TA-Lib's: with ``tp = (high + low + close) / 3``,
    ``(tp - mean(tp)) / (0.015 * mean(|tp - mean(tp)|))`` over ``period`` bars; 0 where
    either is 0. Warm-up ``period - 1``.

    O(n * period): the mean deviation around each window's own mean has no running form.
    """
    check_period(period, 1)
    n = close.shape[0]
    out = np.full(n, np.nan)
    typical = typical_price(high, low, close)
    for i in range(period - 1, n):
        total = 0.0
        for j in range(i - period + 1, i + 1):
            total += typical[j]
        mean = total / period
        deviation = 0.0
        for j in range(i - period + 1, i + 1):
            deviation += abs(typical[j] - mean)
        distance = typical[i] - mean
        if np.isnan(distance) or np.isnan(deviation):
            continue
        if distance != 0.0 and deviation != 0.0:
            out[i] = distance / (0.015 * (deviation / period))
        else:
            out[i] = 0.0
    return out


@njit(cache=True)
def willr(high, low, close, period=14):
    """Williams %R, TA-Lib's: ``-100 * (highest high - close) / (highest high - lowest
    low)`` over ``period`` bars, in [-100, 0]. Warm-up ``period - 1``; a flat window gives
    -50 (TA-Lib: 0)."""
    check_period(period, 1)
    n = close.shape[0]
    out = np.full(n, np.nan)
    highest = rolling_argmax(high, period, 1.0)
    lowest = rolling_argmax(low, period, -1.0)
    for i in range(n):
        if np.isnan(highest[i]) or np.isnan(lowest[i]) or np.isnan(close[i]):
            continue
        top = high[int(highest[i])]
        bottom = low[int(lowest[i])]
        if top > bottom:
            out[i] = (top - close[i]) / ((top - bottom) / -100.0)
        else:
            out[i] = -50.0
    return out


@njit(cache=True)
def roc(values, period=10):
    """Rate of change in percent, TA-Lib's ROC: ``(x[i] / x[i - period] - 1) * 100``.
    Warm-up ``period``; NaN where ``x[i - period]`` is 0 (TA-Lib: 0)."""
    check_period(period, 1)
    n = values.shape[0]
    out = np.full(n, np.nan)
    for i in range(period, n):
        if values[i - period] != 0.0:
            out[i] = (values[i] / values[i - period] - 1.0) * 100.0
    return out


@njit(cache=True)
def mom(values, period=10):
    """Momentum, TA-Lib's MOM: ``x[i] - x[i - period]``. Warm-up ``period``."""
    check_period(period, 1)
    n = values.shape[0]
    out = np.full(n, np.nan)
    for i in range(period, n):
        out[i] = values[i] - values[i - period]
    return out


@njit(cache=True)
def _fast_slow(values, fast, slow):
    """TA-Lib's pair of EMAs for MACD: the slow EMA seeded as usual, the fast one seeded at
    the same bar (the mean of the ``fast`` values ending there)."""
    if not 1 <= fast < slow:
        raise ValueError("the fast period must be at least 1 and below the slow one")
    first_out = first_valid(values) + slow - 1
    fast_line = ema_from(values, fast, 2.0 / (fast + 1.0), first_out)
    slow_line = ema_from(values, slow, 2.0 / (slow + 1.0), first_out)
    return fast_line, slow_line


@njit(cache=True)
def macd(close, fast=12, slow=26, signal=9):
    """MACD, TA-Lib's: ``line = ema(fast) - ema(slow)``, ``signal = ema(line, signal)``,
    ``hist = line - signal``. Returns ``(line, signal, hist)``.

    TA-Lib's seeding: the fast EMA is seeded at the slow one's first bar (bar
    ``slow - 1``) with the mean of the last ``fast`` closes, so the line differs from
    ``ema(close, fast) - ema(close, slow)`` for a while. Warm-up: line ``slow - 1``, signal
    and hist ``slow + signal - 2`` (TA-Lib hides the line until the signal exists).
    """
    check_period(signal, 1)
    fast_line, slow_line = _fast_slow(close, fast, slow)
    line = fast_line - slow_line
    trigger = ema(line, signal)
    return line, trigger, line - trigger


@njit(cache=True)
def _fast_slow_plain(values, fast, slow):
    if not 1 <= fast < slow:
        raise ValueError("the fast period must be at least 1 and below the slow one")
    return ema(values, fast), ema(values, slow)


@njit(cache=True)
def apo(close, fast=12, slow=26):
    """Absolute price oscillator with EMAs, TA-Lib's ``APO(matype=1)`` (TA-Lib's default is
    SMAs): ``ema(close, fast) - ema(close, slow)``, each EMA seeded at its own start, so
    it differs from MACD's line for a while. Warm-up ``slow - 1``."""
    fast_line, slow_line = _fast_slow_plain(close, fast, slow)
    return fast_line - slow_line


@njit(cache=True)
def ppo(close, fast=12, slow=26):
    """Percentage price oscillator with EMAs, TA-Lib's ``PPO(matype=1)``:
    ``100 * (ema(fast) - ema(slow)) / ema(slow)``, as ``apo``. Warm-up ``slow - 1``; NaN
    where the slow EMA is 0 (TA-Lib: 0)."""
    fast_line, slow_line = _fast_slow_plain(close, fast, slow)
    out = np.full(close.shape[0], np.nan)
    for i in range(close.shape[0]):
        if slow_line[i] != 0.0:
            out[i] = ((fast_line[i] - slow_line[i]) / slow_line[i]) * 100.0
    return out


@njit(cache=True)
def trix(close, period=30):
    """TRIX, TA-Lib's: the 1-bar rate of change (percent) of a triple EMA.
    Warm-up ``3 * (period - 1) + 1``."""
    smooth = ema(ema(ema(close, period), period), period)
    return roc(smooth, 1)


@njit(cache=True)
def ultosc(high, low, close, period1=7, period2=14, period3=28):
    """Ultimate oscillator, TA-Lib's ULTOSC. With ``bp = close - min(low, previous close)``
    and the true range ``tr``, ``a_k = sum(bp) / sum(tr)`` over each period,
    ``100 * (4 a_1 + 2 a_2 + a_3) / 7`` with the periods sorted shortest first (a term
    with a zero range counts 0). Warm-up: the longest period."""
    periods = np.sort(np.array([period1, period2, period3]))
    check_period(periods[0], 1)
    n = close.shape[0]
    pressure = np.full(n, np.nan)
    ranges = np.full(n, np.nan)
    for i in range(1, n):
        floor = min(low[i], close[i - 1])
        pressure[i] = close[i] - floor
        ranges[i] = max(high[i], close[i - 1]) - floor
        if np.isnan(low[i]) or np.isnan(close[i - 1]) or np.isnan(high[i]):
            pressure[i] = np.nan
            ranges[i] = np.nan
    out = np.zeros(n)
    weights = (4.0, 2.0, 1.0)
    for k in range(3):
        from_pressure = rolling_sum(pressure, periods[k])
        from_ranges = rolling_sum(ranges, periods[k])
        for i in range(n):
            if from_ranges[i] != 0.0:
                out[i] += weights[k] * (from_pressure[i] / from_ranges[i])
            elif np.isnan(from_ranges[i]):
                out[i] = np.nan
    return 100.0 * (out / 7.0)


@njit(cache=True)
def bop(open, high, low, close):
    """Balance of power, TA-Lib's: ``(close - open) / (high - low)``, 0 where high equals
    low. No warm-up."""
    n = close.shape[0]
    out = np.full(n, np.nan)
    for i in range(n):
        span = high[i] - low[i]
        if span > 0.0:
            out[i] = (close[i] - open[i]) / span
        elif span == 0.0 and not np.isnan(close[i] - open[i]):
            out[i] = 0.0
    return out
