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
