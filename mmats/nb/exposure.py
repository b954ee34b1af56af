"""From what a strategy says at a bar to the exposure the sizing acts on.

A strategy gives a target exposure per bar and may also give a confidence in [0, 1]
(F3). A model configured to size by confidence scales the exposure by it; the
confidence may first be rounded down to steps (``step`` 0.25 turns 0.6 into 0.5), so a
confidence that drifts a little does not rebalance the position at every bar: the bar
step acts only when the value it is given changes. News sentiment (F10) then lowers the
exposure by its multiplier and caps its size (:mod:`mmats.data.sentiment`).

Everything here is a function of the same bar's values, so the backtest, the sweep's
kernel and the live tick, which all call :func:`effective_signal` on the bar they
decide at, act on the same number. NaN exposure ("keep the position") stays NaN:
neither confidence nor sentiment opens, closes or flips a position by itself, except
that a confidence of 0 asks for no exposure.
"""

import math

import numpy as np
from numba import njit


@njit(cache=True, inline="always")
def stepped(confidence, step):
    """``confidence`` clipped to [0, 1] and rounded down to a multiple of ``step``
    (0 = no rounding). NaN (no confidence given) is full confidence."""
    if math.isnan(confidence):
        return 1.0
    value = min(max(confidence, 0.0), 1.0)
    if step > 0.0:
        value = math.floor(value / step + 1e-9) * step
    return min(value, 1.0)


@njit(cache=True, inline="always")
def effective_signal(signal, confidence, scale_by_confidence, step, multiplier, size_cap):
    """The exposure the bar step acts on.

    ``signal`` is the strategy's exposure (NaN keeps the position); ``confidence`` its
    confidence (NaN when it gives none); ``scale_by_confidence`` whether this model sizes
    by it, rounded down to ``step``; ``multiplier`` and ``size_cap`` the sentiment rule's
    (1.0 and infinity when there is no sentiment: the leverage cap is the sizing's).
    """
    if math.isnan(signal):
        return signal
    value = signal
    if scale_by_confidence:
        value = value * stepped(confidence, step)
    value = value * multiplier
    if abs(value) > size_cap:
        value = math.copysign(size_cap, value)
    if value == 0.0:
        return 0.0  # never -0.0: the bar step compares values to the last one acted on
    return value


@njit(cache=True)
def effective_signals(signal, confidence, scale_by_confidence, step, multiplier, size_cap):
    """:func:`effective_signal` over arrays (``confidence``, ``multiplier`` and
    ``size_cap`` may be empty: none given)."""
    n = signal.shape[0]
    out = np.empty(n)
    has_confidence = confidence.shape[0] > 0
    has_sentiment = multiplier.shape[0] > 0
    for i in range(n):
        c = confidence[i] if has_confidence else math.nan
        m = multiplier[i] if has_sentiment else 1.0
        cap = size_cap[i] if has_sentiment else math.inf
        out[i] = effective_signal(signal[i], c, scale_by_confidence, step, m, cap)
    return out
