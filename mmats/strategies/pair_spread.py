"""Mean reversion of the spread between this symbol and a partner (ETH/BTC against
LTC/BTC as shipped: edit ``INPUTS`` for your pair).

The spread is the log price ratio; its z-score over the last ``window`` bars says how far
it has strayed. Below ``-entry`` this symbol is cheap against its partner: long. Above
``entry`` it is rich: flat, or short with ``short=1``. Back within ``exit`` of the mean:
flat. In between: keep the position (NaN). Only this symbol is traded; the partner's
closes come as an extra input, the bar of the partner that had closed with each own bar.
"""

import math

import numpy as np
from numba import njit

INPUTS = {"partner": {"symbol": "LTC/BTC"}}
PARAMS = {"window": [48, 96, 288], "entry": [1.5, 2.0, 2.5], "exit": [0.0, 0.5],
          "short": [0, 1]}
DEFAULTS = {"window": 96, "entry": 2.0, "exit": 0.5, "short": 0}


def warmup(window, entry, exit, short):
    return window


def valid(window, entry, exit, short):
    return 0.0 <= exit < entry and short in (0, 1)


@njit(cache=True)
def signal(open, high, low, close, volume, partner, window, entry, exit, short):
    n = close.shape[0]
    out = np.full(n, np.nan)
    spread = np.full(n, np.nan)
    for i in range(n):
        if partner[i] > 0.0:
            spread[i] = math.log(close[i] / partner[i])
    for i in range(window - 1, n):
        total = 0.0
        squares = 0.0
        count = 0
        for k in range(i - window + 1, i + 1):
            if not np.isnan(spread[k]):
                total += spread[k]
                squares += spread[k] * spread[k]
                count += 1
        if count < window:
            out[i] = 0.0
            continue
        mean = total / count
        sd = math.sqrt(max(squares / count - mean * mean, 0.0))
        if sd == 0.0:
            continue
        z = (spread[i] - mean) / sd
        if z < -entry:
            out[i] = 1.0
        elif z > entry:
            out[i] = -1.0 if short == 1 else 0.0
        elif abs(z) <= exit:
            out[i] = 0.0
    return out
