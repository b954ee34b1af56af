"""EMA crossover on the strategy's own bars, traded only while the hourly trend agrees.

Long while the fast EMA is above the slow one **and** the last closed hourly bar closed
above the hourly close ``hours`` hours before it; flat otherwise. The hourly closes come
as an extra input (``INPUTS``): each 5-minute bar sees the last hour that had closed by
its own close, never the hour still forming. Written for 5-minute bars (12 to an hour).
"""

import numpy as np
from numba import njit

from mmats import ta

INPUTS = {"hour_close": {"timeframe": "1h"}}
PARAMS = {"fast": [5, 10, 20], "slow": [30, 50, 100], "hours": [2, 4, 8, 12]}
DEFAULTS = {"fast": 10, "slow": 50, "hours": 4}
BARS_PER_HOUR = 12


def warmup(fast, slow, hours):
    # the EMAs forget their seed within ~3 spans; the filter needs `hours` + 1 closed hours
    return max(3 * slow, BARS_PER_HOUR * (hours + 2))


def valid(fast, slow, hours):
    return fast < slow


@njit(cache=True)
def signal(open, high, low, close, volume, hour_close, fast, slow, hours):
    fast_line = ta.ema(close, fast)
    slow_line = ta.ema(close, slow)
    back = BARS_PER_HOUR * hours
    out = np.zeros(close.shape[0])
    for i in range(back, close.shape[0]):
        rising = hour_close[i] > hour_close[i - back]  # False while either is NaN
        if rising and fast_line[i] > slow_line[i]:
            out[i] = 1.0
    return out
