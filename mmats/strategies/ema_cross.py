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


#: Floats signal_block carries from one block of bars to the next: the two EMAs.
BLOCK_CARRY = 2


@njit(cache=True)
def signal_block(carry, open, high, low, close, volume, first, last, out, fast, slow):
    """``signal`` at bars ``first`` to ``last - 1``, into ``out[0]``: a sweep computes the
    signal block by block, so it stays in the cache (:func:`mmats.fused.block_form`).
    The same recurrences as :func:`mmats.nb.indicators.ema`, bit for bit."""
    alpha_fast = 2.0 / (fast + 1.0)
    alpha_slow = 2.0 / (slow + 1.0)
    fast_acc = carry[0]
    slow_acc = carry[1]
    for i in range(first, last):
        if i == 0:
            fast_acc = close[0]
            slow_acc = close[0]
        else:
            fast_acc = fast_acc + alpha_fast * (close[i] - fast_acc)
            slow_acc = slow_acc + alpha_slow * (close[i] - slow_acc)
        both = i >= fast - 1 and i >= slow - 1  # before, an EMA is NaN and the test False
        out[0, i - first] = 1.0 if both and fast_acc > slow_acc else 0.0
    carry[0] = fast_acc
    carry[1] = slow_acc
