"""Donchian channel breakout with an ATR stop-loss.

Long when the close breaks above the highest high of the previous ``channel`` bars;
flat when it breaks below the lowest low of the previous ``channel // 2`` bars. Every
entry carries a stop-loss ``stop_atr`` × ATR(``atr_period``) below the entry price,
filled inside the bar when the low touches it. Between breakouts the output is NaN
(keep the position).
"""

import numpy as np
from numba import njit

from mmats.nb.indicators import atr, rolling_max, rolling_min

PARAMS = {"channel": [10, 20, 30, 40, 55], "atr_period": [14], "stop_atr": [1.5, 2.0, 3.0, 4.0]}
DEFAULTS = {"channel": 20, "atr_period": 14, "stop_atr": 2.0}


def warmup(channel, atr_period, stop_atr):
    # Wilder's ATR forgets its seed slowly: after 3 periods the seed still weighs ~5 %.
    return max(channel, 3 * atr_period) + 1


def valid(channel, atr_period, stop_atr):
    return channel >= 2 and atr_period >= 1 and stop_atr > 0


@njit(cache=True)
def signal(open, high, low, close, volume, channel, atr_period, stop_atr):
    n = close.shape[0]
    upper = rolling_max(high, channel)
    lower = rolling_min(low, max(channel // 2, 1))
    average_range = atr(high, low, close, atr_period)
    exposure = np.full(n, np.nan)
    stop_distance = np.full(n, np.nan)
    for i in range(n):
        if average_range[i] > 0.0:
            stop_distance[i] = stop_atr * average_range[i]
        if i == 0 or np.isnan(upper[i - 1]) or np.isnan(average_range[i]):
            exposure[i] = 0.0
        elif close[i] > upper[i - 1]:
            exposure[i] = 1.0
        elif close[i] < lower[i - 1]:
            exposure[i] = 0.0
    return exposure, stop_distance
