"""RSI mean reversion: buy when RSI is oversold, sell when it is overbought.

Long when RSI(period) < ``lower``; flat when RSI > ``upper`` (or short there, with
``short=1``, covering when RSI < ``lower`` again). Between the extremes the output is NaN:
keep whatever is held. That makes the value at a bar depend on that bar's RSI only, not
on the path before it, so a trailing window gives the same answer as the whole history.
"""

import numpy as np
from numba import njit

from mmats.nb.indicators import rsi

PARAMS = {"period": [7, 10, 14, 21], "lower": [20, 25, 30, 35], "upper": [65, 70, 75, 80],
          "short": [0]}
DEFAULTS = {"period": 14, "lower": 30, "upper": 70, "short": 0}


def warmup(period, lower, upper, short):
    # Wilder smoothing forgets its seed slowly: after 3 periods the seed still weighs ~5 %.
    return 3 * period + 1


def valid(period, lower, upper, short):
    return 0 < lower < upper < 100 and short in (0, 1)


@njit(cache=True)
def signal(open, high, low, close, volume, period, lower, upper, short):
    strength = rsi(close, period)
    out = np.full(close.shape[0], np.nan)
    for i in range(close.shape[0]):
        value = strength[i]
        if np.isnan(value):
            out[i] = 0.0
        elif value < lower:
            out[i] = 1.0
        elif value > upper:
            out[i] = -1.0 if short == 1 else 0.0
    return out


#: Floats signal_block carries from one block of bars to the next: Wilder's average gain
#: and average loss.
BLOCK_CARRY = 2


@njit(cache=True)
def signal_block(carry, open, high, low, close, volume, first, last, out, period, lower, upper,
                 short):
    """``signal`` at bars ``first`` to ``last - 1``, into ``out[0]``: a sweep computes the
    signal block by block, so it stays in the cache (:func:`mmats.fused.block_form`).
    The same recurrences as :func:`mmats.nb.indicators.rsi`, bit for bit."""
    alpha = 1.0 / period
    avg_up = carry[0]
    avg_down = carry[1]
    for i in range(first, last):
        value = np.nan
        if i > 0:
            change = close[i] - close[i - 1]
            up = change if change > 0 else 0.0
            down = 0.0 if change > 0 else -change
            if i == 1:
                avg_up = up
                avg_down = down
            else:
                avg_up = avg_up + alpha * (up - avg_up)
                avg_down = avg_down + alpha * (down - avg_down)
            if i - 1 >= period - 1 and not np.isnan(avg_up):
                if avg_down == 0.0:
                    value = 100.0 if avg_up > 0.0 else 50.0
                else:
                    value = 100.0 - 100.0 / (1.0 + avg_up / avg_down)
        if np.isnan(value):
            out[0, i - first] = 0.0
        elif value < lower:
            out[0, i - first] = 1.0
        elif value > upper:
            out[0, i - first] = -1.0 if short == 1 else 0.0
        else:
            out[0, i - first] = np.nan
    carry[0] = avg_up
    carry[1] = avg_down
