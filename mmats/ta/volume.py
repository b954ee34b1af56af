"""Volume: OBV, Chaikin's A/D line and oscillator, money flow index (TA-Lib's), and VWAP
per UTC session and over a rolling window (not in TA-Lib; checked against pandas).
"""

import numpy as np
from numba import njit

from mmats.ta._core import check_period, rolling_sum, typical_price

__all__ = ["obv", "ad", "adosc", "mfi", "vwap_session", "vwap_rolling"]

DAY_NS = 86_400_000_000_000
RELATIVE_UNCHANGED = 1e-12  # a typical-price change this small is rounding, not a move


@njit(cache=True)
def obv(close, volume):
    """On-balance volume, TA-Lib's OBV: starts at the first bar's volume, then adds the
    volume on an up close, subtracts it on a down close. No warm-up; NaN from a later NaN
    on (a cumulative sum cannot skip a hole)."""
    n = close.shape[0]
    out = np.full(n, np.nan)
    start = 0
    while start < n and (np.isnan(close[start]) or np.isnan(volume[start])):
        start += 1
    if start >= n:
        return out
    total = volume[start]
    out[start] = total
    for i in range(start + 1, n):
        if np.isnan(close[i]) or np.isnan(volume[i]):
            break
        if close[i] > close[i - 1]:
            total += volume[i]
        elif close[i] < close[i - 1]:
            total -= volume[i]
        out[i] = total
    return out


@njit(cache=True)
def _money_flow_volume(high, low, close, volume):
    """``((close - low) - (high - close)) / (high - low) * volume``, 0 where high equals
    low; the per-bar step of Chaikin's A/D line."""
    n = close.shape[0]
    out = np.empty(n)
    for i in range(n):
        span = high[i] - low[i]
        if span > 0.0:
            out[i] = (((close[i] - low[i]) - (high[i] - close[i])) / span) * volume[i]
        elif span == 0.0:
            out[i] = 0.0 if not np.isnan(close[i] + volume[i]) else np.nan
        else:
            out[i] = np.nan
    return out


@njit(cache=True)
def ad(high, low, close, volume):
    """Chaikin accumulation/distribution line, TA-Lib's AD: the running sum of
    ``_money_flow_volume``. No warm-up (leading NaN bars skipped); NaN from a later NaN on."""
    steps = _money_flow_volume(high, low, close, volume)
    n = close.shape[0]
    out = np.full(n, np.nan)
    total = 0.0
    started = False
    for i in range(n):
        if np.isnan(steps[i]):
            if started:
                break
            continue
        started = True
        total += steps[i]
        out[i] = total
    return out


@njit(cache=True)
def adosc(high, low, close, volume, fast=3, slow=10):
    """Chaikin oscillator, TA-Lib's ADOSC: ``ema(ad, fast) - ema(ad, slow)``, where (unlike
    TA-Lib's EMA function) both EMAs are seeded with the first A/D value and updated as
    ``k * ad + (1 - k) * ema``. Warm-up ``max(fast, slow) - 1``."""
    check_period(fast, 1)
    check_period(slow, 1)
    line = ad(high, low, close, volume)
    n = close.shape[0]
    out = np.full(n, np.nan)
    fast_k = 2.0 / (fast + 1.0)
    slow_k = 2.0 / (slow + 1.0)
    fast_ema = np.nan
    slow_ema = np.nan
    count = 0
    for i in range(n):
        if np.isnan(line[i]):
            if count > 0:
                break
            continue
        if count == 0:
            fast_ema = line[i]
            slow_ema = line[i]
        else:
            fast_ema = fast_k * line[i] + (1.0 - fast_k) * fast_ema
            slow_ema = slow_k * line[i] + (1.0 - slow_k) * slow_ema
        if count >= max(fast, slow) - 1:
            out[i] = fast_ema - slow_ema
        count += 1
    return out


@njit(cache=True)
def mfi(high, low, close, volume, period=14):
    """Money flow index, TA-Lib's MFI: with ``tp = (high + low + close) / 3``, the flow
    ``tp * volume`` counts as positive when ``tp`` rose from the previous bar, negative
    when it fell (neither when equal); ``100 * positive / (positive + negative)`` over
    ``period`` bars. Warm-up ``period``.

    A typical price within ``RELATIVE_UNCHANGED`` (1e-12) of the previous one counts as
    unchanged: ``(h + l + c) / 3`` of two bars with equal sums can differ in the last bit,
    and TA-Lib ignores such differences too.

    Convention: 50 where both sums are 0 (TA-Lib answers 0 whenever the total flow is
    below 1.0, an absolute threshold that bites on small volumes or prices).
    """
    check_period(period, 1)
    n = close.shape[0]
    typical = typical_price(high, low, close)
    rising = np.full(n, np.nan)
    falling = np.full(n, np.nan)
    for i in range(1, n):
        flow = typical[i] * volume[i]
        if np.isnan(flow) or np.isnan(typical[i - 1]):
            continue
        change = typical[i] - typical[i - 1]
        noise = RELATIVE_UNCHANGED * abs(typical[i - 1])
        rising[i] = flow if change > noise else 0.0
        falling[i] = flow if change < -noise else 0.0
    positive = rolling_sum(rising, period)
    negative = rolling_sum(falling, period)
    out = np.full(n, np.nan)
    for i in range(n):
        total = positive[i] + negative[i]
        if total > 0.0:
            out[i] = 100.0 * (positive[i] / total)
        elif total == 0.0:
            out[i] = 50.0
    return out


@njit(cache=True)
def vwap_session(high, low, close, volume, ts_ns):
    """Volume-weighted average price since the start of each UTC day:
    ``sum(tp * volume) / sum(volume)`` with ``tp = (high + low + close) / 3``, both sums
    reset at the first bar of each UTC date of ``ts_ns`` (int64 bar **open** times in
    ns, as in the candle store).

    No warm-up; NaN while the session's volume is still 0, and from a NaN bar to the end
    of its session (the next session starts clean). Not in TA-Lib.
    """
    n = close.shape[0]
    out = np.full(n, np.nan)
    typical = typical_price(high, low, close)
    priced = 0.0
    traded = 0.0
    day = -(2**62)
    broken = False
    for i in range(n):
        today = ts_ns[i] // DAY_NS
        if today != day:
            day = today
            priced = 0.0
            traded = 0.0
            broken = False
        flow = typical[i] * volume[i]
        if broken or np.isnan(flow):
            broken = True
            continue
        priced += flow
        traded += volume[i]
        if traded != 0.0:
            out[i] = priced / traded
    return out


@njit(cache=True)
def vwap_rolling(high, low, close, volume, period=20):
    """Volume-weighted average of ``tp = (high + low + close) / 3`` over the last ``period``
    bars. Warm-up ``period - 1``; NaN where the window's volume is 0 or a NaN is in it.
    Not in TA-Lib."""
    check_period(period, 1)
    typical = typical_price(high, low, close)
    priced = rolling_sum(typical * volume, period)
    traded = rolling_sum(volume + 0.0 * typical, period)  # NaN where the price is NaN too
    out = np.full(close.shape[0], np.nan)
    for i in range(close.shape[0]):
        if traded[i] != 0.0:
            out[i] = priced[i] / traded[i]
    return out
