"""Trend: the directional movement family (+DI, -DI, DX, ADX, ADXR), Aroon, Parabolic
SAR, linear-regression slope (TA-Lib's), and Ichimoku and SuperTrend (not in TA-Lib).
Warm-ups are counted from the first bar where every input is a number.
"""

import numpy as np
from numba import njit

from mmats.ta._core import (
    check_period,
    first_valid,
    rolling_argmax,
    rolling_extreme,
    true_range,
    wilder,
)

__all__ = ["plus_di", "minus_di", "dx", "adx", "adxr", "aroon", "aroonosc", "sar",
           "linearreg_slope", "ichimoku", "supertrend"]


PLUS_DI = 0
MINUS_DI = 1
DX = 2


@njit(cache=True)
def _directional(high, low, close, period, kind):
    """+DI, -DI or DX (``kind``) in one pass, from TA-Lib's running sums of +DM, -DM and
    the true range: the plain sum of the first ``period - 1`` values, then
    ``s = s - s / period + x``. +DM is the rise of the high when it beats the fall of the
    low, -DM the reverse, 0 otherwise. NaN from a later NaN on."""
    check_period(period, 2)
    n = close.shape[0]
    out = np.full(n, np.nan)
    start = max(first_valid(high), first_valid(low), first_valid(close))
    plus = 0.0
    minus = 0.0
    ranges = 0.0
    for i in range(start + 1, n):
        rise = high[i] - high[i - 1]
        fall = low[i - 1] - low[i]
        span = high[i] - low[i]
        up = abs(close[i - 1] - high[i])
        down = abs(close[i - 1] - low[i])
        if up > span:
            span = up
        if down > span:
            span = down
        if np.isnan(rise) or np.isnan(fall) or np.isnan(up) or np.isnan(down):
            plus = np.nan  # the sums cannot skip a hole
            ranges = np.nan
        plus_move = rise if (rise > 0.0 and rise > fall) else 0.0
        minus_move = fall if (fall > 0.0 and fall > rise) else 0.0
        if i - start < period:
            plus += plus_move
            minus += minus_move
            ranges += span
            continue
        plus = plus - plus / period + plus_move
        minus = minus - minus / period + minus_move
        ranges = ranges - ranges / period + span
        if np.isnan(plus) or np.isnan(ranges):
            break
        plus_line = 100.0 * (plus / ranges) if ranges != 0.0 else 0.0
        minus_line = 100.0 * (minus / ranges) if ranges != 0.0 else 0.0
        if kind == PLUS_DI:
            out[i] = plus_line
        elif kind == MINUS_DI:
            out[i] = minus_line
        else:
            total = plus_line + minus_line
            out[i] = 100.0 * (abs(minus_line - plus_line) / total) if total != 0.0 else 0.0
    return out


@njit(cache=True)
def plus_di(high, low, close, period=14):
    """+DI, TA-Lib's PLUS_DI: ``100 * sum(+DM) / sum(TR)`` with TA-Lib's Wilder running
    sums (the first ``period - 1`` summed, then ``s - s / period + x``). Warm-up ``period``;
    0 with no range. ``period`` >= 2."""
    return _directional(high, low, close, period, PLUS_DI)


@njit(cache=True)
def minus_di(high, low, close, period=14):
    """-DI, TA-Lib's MINUS_DI; as ``plus_di`` with -DM. Warm-up ``period``."""
    return _directional(high, low, close, period, MINUS_DI)


@njit(cache=True)
def dx(high, low, close, period=14):
    """Directional index, TA-Lib's DX: ``100 * |+DI - -DI| / (+DI + -DI)``, 0 where both are
    0. Warm-up ``period``."""
    return _directional(high, low, close, period, DX)


@njit(cache=True)
def adx(high, low, close, period=14):
    """Average directional index, TA-Lib's ADX: Wilder's average of ``dx`` seeded with the
    mean of its first ``period`` values. Warm-up ``2 * period - 1``."""
    return wilder(dx(high, low, close, period), period)


@njit(cache=True)
def adxr(high, low, close, period=14):
    """ADX rating, TA-Lib's ADXR: ``(adx[i] + adx[i - (period - 1)]) / 2``.
    Warm-up ``3 * period - 2``."""
    average = adx(high, low, close, period)
    out = np.full(close.shape[0], np.nan)
    for i in range(period - 1, close.shape[0]):
        out[i] = (average[i] + average[i - period + 1]) / 2.0
    return out


@njit(cache=True)
def aroon(high, low, period=14):
    """Aroon, TA-Lib's AROON: over the last ``period + 1`` bars,
    ``up = 100 * (period - bars since the highest high) / period`` and ``down`` likewise
    with the lowest low (the most recent extreme on ties). Returns ``(down, up)`` in
    TA-Lib's order; warm-up ``period``."""
    check_period(period, 1)
    n = high.shape[0]
    down = np.full(n, np.nan)
    up = np.full(n, np.nan)
    highest = rolling_argmax(high, period + 1, 1.0)
    lowest = rolling_argmax(low, period + 1, -1.0)
    factor = 100.0 / period
    for i in range(n):
        if not (np.isnan(highest[i]) or np.isnan(lowest[i])):
            up[i] = factor * (period - (i - int(highest[i])))
            down[i] = factor * (period - (i - int(lowest[i])))
    return down, up


@njit(cache=True)
def aroonosc(high, low, period=14):
    """Aroon oscillator, TA-Lib's AROONOSC: ``up - down``. Warm-up ``period``."""
    down, up = aroon(high, low, period)
    return up - down


@njit(cache=True)
def sar(high, low, acceleration=0.02, maximum=0.2):
    """Parabolic SAR (Wilder), TA-Lib's SAR, with its start: the first trend is short when
    bar 1 has a -DM (its low fell more than its high rose), long otherwise; the first SAR
    is bar 0's low (long) or high (short) and the extreme point bar 1's high (low).

    Each bar: on a touch (low <= SAR long, high >= SAR short) the trend flips, the SAR
    becomes the old extreme point, the step resets to ``acceleration``; otherwise the SAR
    moves ``step * (extreme - SAR)``, the step growing by ``acceleration`` to ``maximum``
    with each new extreme, and never enters the last two bars' range. Warm-up 1; NaN
    from a later NaN on.
    """
    n = high.shape[0]
    out = np.full(n, np.nan)
    start = max(first_valid(high), first_valid(low))
    if start + 1 >= n:
        return out
    step_max = maximum
    step_size = min(acceleration, maximum)
    rise = high[start + 1] - high[start]
    fall = low[start] - low[start + 1]
    is_long = not (fall > 0.0 and fall > rise)
    if is_long:
        extreme = high[start + 1]
        stop = low[start]
    else:
        extreme = low[start + 1]
        stop = high[start]
    step = step_size
    new_low = low[start + 1]
    new_high = high[start + 1]
    for i in range(start + 1, n):
        previous_low = new_low
        previous_high = new_high
        new_low = low[i]
        new_high = high[i]
        if np.isnan(new_low) or np.isnan(new_high):
            break
        if is_long:
            if new_low <= stop:
                is_long = False
                stop = max(extreme, previous_high, new_high)
                out[i] = stop
                step = step_size
                extreme = new_low
                stop = max(stop + step * (extreme - stop), previous_high, new_high)
            else:
                out[i] = stop
                if new_high > extreme:
                    extreme = new_high
                    step = min(step + step_size, step_max)
                stop = min(stop + step * (extreme - stop), previous_low, new_low)
        else:
            if new_high >= stop:
                is_long = True
                stop = min(extreme, previous_low, new_low)
                out[i] = stop
                step = step_size
                extreme = new_high
                stop = min(stop + step * (extreme - stop), previous_low, new_low)
            else:
                out[i] = stop
                if new_low < extreme:
                    extreme = new_low
                    step = min(step + step_size, step_max)
                stop = max(stop + step * (extreme - stop), previous_high, new_high)
    return out


@njit(cache=True)
def linearreg_slope(values, period=14):
    """Slope per bar of the least-squares line through the last ``period`` values,
    TA-Lib's LINEARREG_SLOPE. Warm-up ``period - 1``; NaN while a NaN is in the window.

    O(n): running sums of ``values - anchor`` (the slope ignores a shift) re-anchored every
    ``period`` bars, which keeps more digits than TA-Lib's direct sums.
    """
    check_period(period, 2)
    n = values.shape[0]
    out = np.full(n, np.nan)
    sum_x = period * (period - 1) * 0.5  # x = bars ago, 0..period-1
    sum_xx = period * (period - 1) * (2.0 * period - 1.0) / 6.0
    divisor = sum_x * sum_x - period * sum_xx
    anchor = 0.0
    sum_y = 0.0
    sum_xy = 0.0
    last_nan = -1
    until_exact = 0  # a countdown: cheaper than i % period in the loop
    for i in range(n):
        if np.isnan(values[i]):
            last_nan = i
            continue
        if i - last_nan < period:
            continue
        until_exact -= 1
        if i - last_nan == period or until_exact <= 0:
            until_exact = period
            anchor = values[i]
            sum_y = 0.0
            sum_xy = 0.0
            for ago in range(period):
                shifted = values[i - ago] - anchor
                sum_y += shifted
                sum_xy += ago * shifted
        else:
            leaving = values[i - period] - anchor
            sum_xy += sum_y - period * leaving  # every value one bar older
            sum_y += values[i] - anchor - leaving
        out[i] = (period * sum_xy - sum_x * sum_y) / divisor
    return out


@njit(cache=True)
def ichimoku(high, low, tenkan_period=9, kijun_period=26, senkou_b_period=52,
             displacement=26):
    """Ichimoku Kinko Hyo: ``(tenkan, kijun, senkou_a, senkou_b)``.

    ``tenkan``/``kijun`` are the mid-points of the highest high and lowest low of the last
    9/26 bars. The senkou spans are returned **already displaced**, at the bar where a
    chart draws them: ``senkou_a[i] = (tenkan + kijun)[i - displacement] / 2``,
    ``senkou_b[i]`` = the 52-bar mid-point at ``i - displacement``; so every output at bar
    i uses only bars <= i and is safe in a strategy. (TradingView draws the spans
    ``displacement - 1`` bars ahead: pass 25 to match it.) The chikou span (the close
    drawn 26 bars back) is not returned: aligned to its drawing bar it looks ahead;
    compare ``close[i]`` with ``close[i - 26]`` instead.

    Warm-up: tenkan ``tenkan_period - 1``, kijun ``kijun_period - 1``, senkou A
    ``max(tenkan_period, kijun_period) - 1 + displacement``, senkou B
    ``senkou_b_period - 1 + displacement``. Not in TA-Lib.
    """
    if displacement < 0:
        raise ValueError("ichimoku's displacement must be >= 0: a negative one looks ahead")
    tenkan = _midpoint(high, low, tenkan_period)
    kijun = _midpoint(high, low, kijun_period)
    span_b = _midpoint(high, low, senkou_b_period)
    n = high.shape[0]
    senkou_a = np.full(n, np.nan)
    senkou_b = np.full(n, np.nan)
    for i in range(displacement, n):
        senkou_a[i] = (tenkan[i - displacement] + kijun[i - displacement]) / 2.0
        senkou_b[i] = span_b[i - displacement]
    return tenkan, kijun, senkou_a, senkou_b


@njit(cache=True)
def _midpoint(high, low, period):
    check_period(period, 1)
    return (rolling_extreme(high, period, 1.0) + rolling_extreme(low, period, -1.0)) / 2.0


@njit(cache=True)
def supertrend(high, low, close, period=10, multiplier=3.0):
    """SuperTrend (TradingView's classic script): returns ``(line, direction)``.

    With ``mid = (high + low) / 2`` and TA-Lib's ``atr(period)``, the lower band is
    ``mid - multiplier * atr`` but never below its previous value while the previous close
    stayed above that; the upper band ``mid + multiplier * atr``, never above its previous
    value while the previous close stayed below that. The direction starts at +1 on the
    first bar with an ATR, turns -1 when the close falls below the previous lower band and
    +1 when it rises above the previous upper band; ``line`` is the lower band in an
    uptrend, the upper one in a downtrend. Warm-up ``period``; NaN from a later NaN
    on. Not in TA-Lib.
    """
    n = close.shape[0]
    line = np.full(n, np.nan)
    direction = np.full(n, np.nan)
    ranges = true_range(high, low, close)
    average = wilder(ranges, period)
    started = False
    lower = 0.0
    upper = 0.0
    trend = 1.0
    for i in range(n):
        if np.isnan(average[i]):
            if started:
                break
            continue
        mid = (high[i] + low[i]) / 2.0
        band_low = mid - multiplier * average[i]
        band_high = mid + multiplier * average[i]
        if started:
            if close[i - 1] > lower:
                band_low = max(band_low, lower)
            if close[i - 1] < upper:
                band_high = min(band_high, upper)
            if trend < 0.0 and close[i] > upper:
                trend = 1.0
            elif trend > 0.0 and close[i] < lower:
                trend = -1.0
        lower = band_low
        upper = band_high
        started = True
        line[i] = lower if trend > 0.0 else upper
        direction[i] = trend
    return line, direction
