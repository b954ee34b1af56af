"""Indicators as numba kernels. Each docstring names the pandas expression it equals;
tests/nb/test_indicators.py asserts the two agree."""

import numpy as np
from numba import njit


@njit(cache=True)
def ema(values, span):
    """Exponential moving average.

    Equals pandas ``Series(values).ewm(span=span, adjust=False, min_periods=span).mean()``
    for input without NaN: seeded with the first value, NaN for the first ``span - 1`` bars.
    """
    n = values.shape[0]
    out = np.empty(n)
    alpha = 2.0 / (span + 1.0)
    acc = 0.0
    for i in range(n):
        if i == 0:
            acc = values[0]
        else:
            acc = acc + alpha * (values[i] - acc)
        out[i] = acc if i >= span - 1 else np.nan
    return out


@njit(cache=True)
def wilder_mean(values, period, first):
    """Wilder's smoothing of ``values[first:]``.

    Equals pandas ``Series(values[first:]).ewm(alpha=1/period, adjust=False,
    min_periods=period).mean()``, placed at the same positions; NaN before.
    """
    n = values.shape[0]
    out = np.full(n, np.nan)
    alpha = 1.0 / period
    acc = 0.0
    for i in range(first, n):
        if i == first:
            acc = values[i]
        else:
            acc = acc + alpha * (values[i] - acc)
        if i - first >= period - 1:
            out[i] = acc
    return out


@njit(cache=True)
def rsi(close, period):
    """Relative strength index with Wilder's smoothing, 0..100.

    Equals, with ``d = close.diff()``::

        up = d.clip(lower=0).ewm(alpha=1/period, adjust=False, min_periods=period).mean()
        down = (-d).clip(lower=0).ewm(alpha=1/period, adjust=False, min_periods=period).mean()
        100 - 100 / (1 + up / down)

    and 100 where ``down`` is 0 (only gains).
    """
    n = close.shape[0]
    up = np.zeros(n)
    down = np.zeros(n)
    for i in range(1, n):
        change = close[i] - close[i - 1]
        if change > 0:
            up[i] = change
        else:
            down[i] = -change
    avg_up = wilder_mean(up, period, 1)
    avg_down = wilder_mean(down, period, 1)
    out = np.full(n, np.nan)
    for i in range(n):
        if np.isnan(avg_up[i]):
            continue
        if avg_down[i] == 0.0:
            out[i] = 100.0 if avg_up[i] > 0.0 else 50.0
        else:
            out[i] = 100.0 - 100.0 / (1.0 + avg_up[i] / avg_down[i])
    return out


@njit(cache=True)
def true_range(high, low, close):
    """True range: ``max(high - low, |high - prev close|, |low - prev close|)``; bar 0 is high - low."""
    n = high.shape[0]
    out = np.empty(n)
    for i in range(n):
        span = high[i] - low[i]
        if i > 0:
            span = max(span, abs(high[i] - close[i - 1]), abs(low[i] - close[i - 1]))
        out[i] = span
    return out


@njit(cache=True)
def atr(high, low, close, period):
    """Average true range, Wilder-smoothed.

    Equals ``true_range.ewm(alpha=1/period, adjust=False, min_periods=period).mean()``.
    """
    return wilder_mean(true_range(high, low, close), period, 0)


@njit(cache=True)
def rolling_max(values, window):
    """Maximum of the last ``window`` values including the current one.

    Equals pandas ``Series(values).rolling(window).max()`` (NaN for the first bars);
    O(n) with a monotonic queue.
    """
    n = values.shape[0]
    out = np.full(n, np.nan)
    queue = np.empty(n, dtype=np.int64)
    head = 0
    tail = 0
    for i in range(n):
        while tail > head and values[queue[tail - 1]] <= values[i]:
            tail -= 1
        queue[tail] = i
        tail += 1
        if queue[head] <= i - window:
            head += 1
        if i >= window - 1:
            out[i] = values[queue[head]]
    return out


@njit(cache=True)
def rolling_min(values, window):
    """Minimum of the last ``window`` values; equals pandas ``rolling(window).min()``."""
    return -rolling_max(-values, window)


@njit(cache=True)
def sma(values, window):
    """Simple moving average; equals pandas ``rolling(window).mean()``."""
    n = values.shape[0]
    out = np.full(n, np.nan)
    total = 0.0
    for i in range(n):
        total += values[i]
        if i >= window:
            total -= values[i - window]
        if i >= window - 1:
            out[i] = total / window
    return out
