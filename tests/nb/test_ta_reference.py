"""The mmats.ta indicators TA-Lib lacks (HMA, Keltner, Ichimoku, SuperTrend, rolling
z-score, VWAP per session and rolling) equal a straightforward pandas/numpy reference
written here, on the bundled samples; and each agrees with a tiny case worked by hand."""

import math

import numpy as np
import pandas as pd
import pytest
from numpy.lib.stride_tricks import sliding_window_view
from ta_data import SAMPLES, assert_close, load_bars

from mmats import ta


@pytest.fixture(scope="module", params=sorted(SAMPLES))
def bars(request):
    return load_bars(request.param)


def _price(d):
    return float(np.median(np.abs(d.close)))


def _series(values):
    return pd.Series(values)


def ref_wma(values, period):
    weights = np.arange(1.0, period + 1.0)
    return (_series(values).rolling(period)
            .apply(lambda w: np.dot(w, weights) / weights.sum(), raw=True).to_numpy())


def ref_ema_sma_seeded(values, period):
    """TA-Lib's EMA: the first value is the SMA of the first ``period`` (after leading NaN)."""
    s = _series(values)
    start = int(s.first_valid_index())
    seed = s.iloc[start:start + period].mean()
    tail = pd.concat([pd.Series([seed]), s.iloc[start + period:]], ignore_index=True)
    smooth = tail.ewm(alpha=2.0 / (period + 1.0), adjust=False).mean().to_numpy()
    out = np.full(len(values), np.nan)
    out[start + period - 1:] = smooth
    return out


def ref_atr(high, low, close, period):
    previous = _series(close).shift(1)
    ranges = pd.concat([_series(high) - _series(low), (_series(high) - previous).abs(),
                        (_series(low) - previous).abs()], axis=1).max(axis=1, skipna=False)
    tr = ranges.to_numpy()
    seed = tr[1:period + 1].mean()
    tail = pd.concat([pd.Series([seed]), pd.Series(tr[period + 1:])], ignore_index=True)
    smooth = tail.ewm(alpha=1.0 / period, adjust=False).mean().to_numpy()
    out = np.full(len(close), np.nan)
    out[period:] = smooth
    return out


def test_hma_equals_wma_of_wmas(bars):
    period = 16
    half = ref_wma(bars.close, period // 2)
    full = ref_wma(bars.close, period)
    expected = ref_wma(2.0 * half - full, int(math.isqrt(period)))
    line = ta.hma(bars.close, period)
    assert np.isnan(line[:period - 1 + 4 - 1]).all() and np.isfinite(line[18:]).all()
    assert_close(line, expected, _price(bars), "hma")


def test_keltner_equals_ema_plus_minus_atr(bars):
    upper, middle, lower = ta.keltner(bars.high, bars.low, bars.close, 20, 2.0, 10)
    centre = ref_ema_sma_seeded(bars.close, 20)
    reach = 2.0 * ref_atr(bars.high, bars.low, bars.close, 10)
    for line, expected, name in ((upper, centre + reach, "upper"), (middle, centre, "middle"),
                                 (lower, centre - reach, "lower")):
        assert np.isnan(line[:19]).all() and np.isfinite(line[19:]).all(), name
        assert_close(line, expected, _price(bars), f"keltner {name}")


def test_ichimoku_equals_rolling_midpoints_displaced(bars):
    high, low = _series(bars.high), _series(bars.low)

    def midpoint(period):
        return (high.rolling(period).max() + low.rolling(period).min()) / 2.0

    tenkan, kijun = midpoint(9), midpoint(26)
    expected = (tenkan, kijun, ((tenkan + kijun) / 2.0).shift(26), midpoint(52).shift(26))
    lines = ta.ichimoku(bars.high, bars.low, 9, 26, 52, 26)
    for line, reference, warmup, name in zip(lines, expected, (8, 25, 51, 77),
                                             ("tenkan", "kijun", "senkou_a", "senkou_b"),
                                             strict=True):
        assert np.isnan(line[:warmup]).all() and np.isfinite(line[warmup:]).all(), name
        assert_close(line, reference.to_numpy(), _price(bars), f"ichimoku {name}")


def ref_supertrend(high, low, close, period, multiplier):
    """The classic script, bar by bar in plain Python over a pandas ATR."""
    average = ref_atr(high, low, close, period)
    mid = (high + low) / 2.0
    line = np.full(len(close), np.nan)
    direction = np.full(len(close), np.nan)
    lower = upper = None
    trend = 1
    for i in range(period, len(close)):
        band_low = mid[i] - multiplier * average[i]
        band_high = mid[i] + multiplier * average[i]
        if lower is not None:
            band_low = max(band_low, lower) if close[i - 1] > lower else band_low
            band_high = min(band_high, upper) if close[i - 1] < upper else band_high
            if trend == -1 and close[i] > upper:
                trend = 1
            elif trend == 1 and close[i] < lower:
                trend = -1
        lower, upper = band_low, band_high
        line[i] = lower if trend == 1 else upper
        direction[i] = trend
    return line, direction


def test_supertrend_equals_the_classic_script(bars):
    line, direction = ta.supertrend(bars.high, bars.low, bars.close, 10, 3.0)
    expected_line, expected_direction = ref_supertrend(bars.high, bars.low, bars.close, 10,
                                                       3.0)
    assert np.isnan(line[:10]).all() and np.isfinite(line[10:]).all()
    np.testing.assert_array_equal(direction, expected_direction)
    assert_close(line, expected_line, _price(bars), "supertrend")
    assert (np.diff(direction[10:]) != 0).sum() > 3  # it does turn on every sample


def _exact_moments(values, period):
    window = sliding_window_view(values, period)
    mean = np.full(len(values), np.nan)
    std = np.full(len(values), np.nan)
    mean[period - 1:] = window.mean(axis=1)
    std[period - 1:] = np.sqrt(((window - window.mean(axis=1, keepdims=True)) ** 2)
                               .mean(axis=1))
    return mean, std


def test_zscore_equals_a_two_pass_numpy_reference(bars):
    mean, std = _exact_moments(bars.close, 20)
    line = ta.zscore(bars.close, 20)
    assert np.isnan(line[:19]).all() and np.isfinite(line[19:]).all()
    # z is dimensionless, about +-3; its rounding grows with price / std (~1e4 on EUR/USD)
    assert_close(line, (bars.close - mean) / std, 1e3, "zscore")


def test_vwap_session_equals_a_pandas_groupby_per_utc_day(bars):
    frame = pd.DataFrame({"tp": (bars.high + bars.low + bars.close) / 3.0, "v": bars.volume})
    day = pd.to_datetime(bars.ts_ns, utc=True).floor("D")
    flow = (frame.tp * frame.v).groupby(day).cumsum()
    traded = frame.v.groupby(day).cumsum()
    expected = (flow / traded).to_numpy()
    line = ta.vwap_session(bars.high, bars.low, bars.close, bars.volume, bars.ts_ns)
    assert np.isfinite(line).all()
    assert_close(line, expected, _price(bars), "vwap_session")
    first_of_day = np.r_[True, np.diff(bars.ts_ns // 86_400_000_000_000) != 0]
    np.testing.assert_allclose(line[first_of_day], frame.tp.to_numpy()[first_of_day],
                               rtol=1e-15)  # a new session starts from its first bar alone


def test_vwap_rolling_equals_rolling_sums(bars):
    tp = (bars.high + bars.low + bars.close) / 3.0
    expected = (_series(tp * bars.volume).rolling(20).sum()
                / _series(bars.volume).rolling(20).sum()).to_numpy()
    line = ta.vwap_rolling(bars.high, bars.low, bars.close, bars.volume, 20)
    assert np.isnan(line[:19]).all() and np.isfinite(line[19:]).all()
    assert_close(line, expected, _price(bars), "vwap_rolling")


# Tiny cases worked by hand --------------------------------------------------------------

def test_hma_follows_a_straight_line_exactly():
    """On x = i, wma(n) lags by (n - 1) / 3; for n = 4 and 9 the Hull combination cancels
    the lag exactly: hma == x from its warm-up on."""
    x = np.arange(30.0)
    np.testing.assert_allclose(ta.hma(x, 4)[4:], x[4:], rtol=0, atol=1e-12)
    np.testing.assert_allclose(ta.hma(x, 9)[10:], x[10:], rtol=0, atol=1e-12)
    assert np.isnan(ta.hma(x, 4)[:4]).all() and np.isnan(ta.hma(x, 9)[:10]).all()


def test_supertrend_by_hand():
    close = np.array([10.0, 11.0, 12.0, 9.0, 8.0])
    high, low = close + 0.5, close - 0.5
    # true ranges 1.5, 1.5, 3.5, 1.5 = ATR(1); bands from mid -/+ ATR, ratcheted
    line, direction = ta.supertrend(high, low, close, 1, 1.0)
    np.testing.assert_array_equal(line, [np.nan, 9.5, 10.5, 12.5, 9.5])
    np.testing.assert_array_equal(direction, [np.nan, 1.0, 1.0, -1.0, -1.0])


def test_ichimoku_by_hand():
    high = np.arange(1.0, 11.0)  # high_i = i + 1, low_i = i
    tenkan, kijun, span_a, span_b = ta.ichimoku(high, high - 1.0, 2, 3, 4, 2)
    i = np.arange(10.0)
    np.testing.assert_array_equal(tenkan[1:], i[1:])  # ((i + 1) + (i - 1)) / 2
    np.testing.assert_array_equal(kijun[2:], i[2:] - 0.5)
    np.testing.assert_array_equal(span_a[4:], i[4:] - 2.25)  # (i-2 + i-2.5) / 2
    np.testing.assert_array_equal(span_b[5:], i[5:] - 3.0)  # ((i-2) + 1 + (i-2) - 3) / 2
    assert np.isnan(span_a[:4]).all() and np.isnan(span_b[:5]).all()


def test_zscore_keltner_donchian_vwap_by_hand():
    np.testing.assert_allclose(ta.zscore(np.array([1.0, 2.0, 3.0]), 3)[2],
                               1.0 / math.sqrt(2.0 / 3.0), rtol=1e-15)
    assert np.isnan(ta.zscore(np.array([2.0, 2.0, 2.0]), 3)[2])  # flat: no z-score
    upper, middle, lower = ta.donchian(np.array([3.0, 5.0, 4.0]), np.array([1.0, 2.0, 0.5]), 2)
    np.testing.assert_array_equal(upper, [np.nan, 5.0, 5.0])
    np.testing.assert_array_equal(lower, [np.nan, 1.0, 0.5])
    np.testing.assert_array_equal(middle, [np.nan, 3.0, 2.75])
    day = 86_400_000_000_000
    ts = np.array([day - 600_000_000_000, day - 300_000_000_000, day, day + 300_000_000_000])
    price = np.array([10.0, 20.0, 30.0, 40.0])
    volume = np.array([1.0, 3.0, 2.0, 0.0])
    # one session of two bars (10*1 + 20*3) / 4, then a new UTC day: 30, 30 (no volume)
    np.testing.assert_array_equal(ta.vwap_session(price, price, price, volume, ts),
                                  [10.0, 17.5, 30.0, 30.0])
    np.testing.assert_array_equal(ta.vwap_rolling(price, price, price, volume, 2),
                                  [np.nan, 17.5, 24.0, 30.0])
    close = np.array([10.0, 10.0, 10.0])
    upper, middle, lower = ta.keltner(close + 1.0, close - 1.0, close, 2, 2.0, 1)
    np.testing.assert_array_equal(middle, [np.nan, 10.0, 10.0])  # SMA seed, then EMA
    np.testing.assert_array_equal(upper - middle, [np.nan, 4.0, 4.0])  # 2 * ATR(1) = 2 * 2
