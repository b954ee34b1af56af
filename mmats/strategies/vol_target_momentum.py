"""Momentum sized to a volatility target through its confidence.

Long while the close is above the close ``lookback`` bars before, flat otherwise. Its
**confidence** is how much of a full position the recent volatility allows: the target
per-bar volatility ``target_bps`` over the realised one (the standard deviation of the
last ``vol_window`` log returns), capped at 1. A model configured with
``size_by_confidence: true`` holds that fraction (in steps of ``confidence_step``, so it
does not rebalance at every bar); one without it trades the plain momentum signal.
"""

import math

import numpy as np
from numba import njit

OUTPUTS = ("exposure", "confidence")
PARAMS = {"lookback": [24, 48, 96, 288], "vol_window": [48, 96, 288],
          "target_bps": [10, 20, 40]}
DEFAULTS = {"lookback": 48, "vol_window": 96, "target_bps": 20}


def warmup(lookback, vol_window, target_bps):
    return max(lookback, vol_window) + 1


@njit(cache=True)
def signal(open, high, low, close, volume, lookback, vol_window, target_bps):
    n = close.shape[0]
    exposure = np.zeros(n)
    confidence = np.full(n, np.nan)
    target = target_bps / 10_000.0
    for i in range(n):
        if i >= lookback and close[i] > close[i - lookback]:
            exposure[i] = 1.0
        if i >= vol_window:
            total = 0.0
            squares = 0.0
            for k in range(i - vol_window + 1, i + 1):  # the window's own sums: no drift
                r = math.log(close[k] / close[k - 1])
                total += r
                squares += r * r
            mean = total / vol_window
            variance = max(squares / vol_window - mean * mean, 0.0)
            sigma = math.sqrt(variance * vol_window / (vol_window - 1))
            confidence[i] = 1.0 if sigma <= target else target / sigma
    return exposure, confidence
