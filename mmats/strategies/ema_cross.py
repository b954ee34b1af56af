"""EMA crossover: long while the fast EMA is above the slow one, flat otherwise.

EMAs are pandas ``ewm(span=n, adjust=False, min_periods=n)``, so there is no position
before ``slow`` bars.
"""

import numpy as np
from numba import njit

from mmats.nb.indicators import ema

PARAMS = {"fast": list(range(5, 55, 5)), "slow": list(range(20, 210, 10))}
DEFAULTS = {"fast": 10, "slow": 50}


def warmup(fast, slow):
    return slow


def valid(fast, slow):
    """Combinations where the fast EMA is not faster are skipped by sweeps."""
    return fast < slow


@njit(cache=True)
def signal(open, high, low, close, volume, fast, slow):
    fast_line = ema(close, fast)
    slow_line = ema(close, slow)
    out = np.zeros(close.shape[0])
    for i in range(close.shape[0]):
        if fast_line[i] > slow_line[i]:  # False while either is NaN
            out[i] = 1.0
    return out
