"""Each indicator kernel equals the pandas expression its docstring names."""

import numpy as np
import pandas as pd
import pytest
from kernel_runs import load_sample

from mmats.nb.indicators import (
    atr,
    ema,
    rolling_max,
    rolling_min,
    rsi,
    sma,
    true_range,
    wilder_mean,
)

TOLERANCE = dict(rtol=1e-10, atol=1e-12, equal_nan=True)


def _sample_prices(name):
    frame = load_sample(name)
    return {k: frame[k].to_numpy(dtype=np.float64) for k in ("high", "low", "close")}


def _random_prices(seed, n=3000):
    rng = np.random.default_rng(seed)
    close = 50.0 * np.exp(np.cumsum(rng.normal(0.0, 0.02, n)))
    spread = np.abs(rng.normal(0.0, 0.01, (2, n)))
    high = close * (1.0 + spread[0])
    low = close * (1.0 - spread[1])
    return {"high": high, "low": low, "close": close}


SOURCES = {
    "eth_btc_5m": lambda: _sample_prices("bittrex/ETH_BTC_5m.parquet"),
    "eur_usd_1h": lambda: _sample_prices("fx/EUR_USD_1h.parquet"),
    "goog_1d": lambda: _sample_prices("nasdaq/GOOG_1d.parquet"),
    "random_1": lambda: _random_prices(1),
    "random_2": lambda: _random_prices(2, n=500),
}


@pytest.fixture(scope="module", params=sorted(SOURCES))
def prices(request):
    return SOURCES[request.param]()


def _wilder(series, period):
    return series.ewm(alpha=1.0 / period, adjust=False, min_periods=period).mean()


def _true_range(high, low, close):
    previous = close.shift(1)
    ranges = pd.concat([high - low, (high - previous).abs(), (low - previous).abs()], axis=1)
    return ranges.max(axis=1)  # bar 0: the NaN differences are skipped, leaving high - low


def _check_unchanged(arrays, copies):
    for name, values in arrays.items():
        np.testing.assert_array_equal(values, copies[name], err_msg=f"{name} was mutated")


@pytest.mark.parametrize("span", [1, 2, 10, 50, 200])
def test_ema_equals_pandas_ewm(prices, span):
    copies = {k: v.copy() for k, v in prices.items()}
    expected = (pd.Series(prices["close"])
                .ewm(span=span, adjust=False, min_periods=span).mean().to_numpy())
    np.testing.assert_allclose(ema(prices["close"], span), expected, **TOLERANCE)
    _check_unchanged(prices, copies)


@pytest.mark.parametrize("period", [2, 7, 14, 30])
def test_rsi_equals_pandas_wilder_rsi(prices, period):
    copies = {k: v.copy() for k, v in prices.items()}
    change = pd.Series(prices["close"]).diff()
    up = _wilder(change.clip(lower=0), period)
    down = _wilder((-change).clip(lower=0), period)
    expected = (100 - 100 / (1 + up / down)).to_numpy(copy=True)
    no_losses = (down == 0).to_numpy()
    expected[no_losses & (up > 0).to_numpy()] = 100.0
    expected[no_losses & (up == 0).to_numpy()] = 50.0  # flat: neither gains nor losses
    np.testing.assert_allclose(rsi(prices["close"], period), expected, **TOLERANCE)
    _check_unchanged(prices, copies)


def test_rsi_edge_cases_only_gains_and_flat():
    rising = np.arange(1.0, 40.0)
    assert np.all(rsi(rising, 14)[14:] == 100.0)
    assert np.all(np.isnan(rsi(rising, 14)[:14]))
    flat = np.full(40, 7.0)
    assert np.all(rsi(flat, 14)[14:] == 50.0)


@pytest.mark.parametrize("period", [1, 5, 14, 50])
def test_atr_equals_pandas_wilder_true_range(prices, period):
    copies = {k: v.copy() for k, v in prices.items()}
    high, low, close = (pd.Series(prices[k]) for k in ("high", "low", "close"))
    ranges = _true_range(high, low, close)
    np.testing.assert_allclose(true_range(prices["high"], prices["low"], prices["close"]),
                               ranges.to_numpy(), **TOLERANCE)
    expected = _wilder(ranges, period).to_numpy()
    np.testing.assert_allclose(atr(prices["high"], prices["low"], prices["close"], period),
                               expected, **TOLERANCE)
    _check_unchanged(prices, copies)


@pytest.mark.parametrize(("period", "first"), [(1, 0), (14, 0), (14, 1), (5, 37)])
def test_wilder_mean_equals_pandas_ewm_from_first(prices, period, first):
    values = np.abs(np.diff(prices["close"], prepend=prices["close"][0]))
    copy = values.copy()
    expected = np.full(values.shape[0], np.nan)
    expected[first:] = _wilder(pd.Series(values[first:]), period).to_numpy()
    np.testing.assert_allclose(wilder_mean(values, period, first), expected, **TOLERANCE)
    np.testing.assert_array_equal(values, copy)


@pytest.mark.parametrize("window", [1, 2, 3, 20, 55, 300])
def test_rolling_max_min_sma_equal_pandas_rolling(prices, window):
    copies = {k: v.copy() for k, v in prices.items()}
    for name in ("high", "low", "close"):
        values = prices[name]
        rolling = pd.Series(values).rolling(window)
        # max / min pick an element: they must be exactly equal, not just close
        np.testing.assert_array_equal(rolling_max(values, window), rolling.max().to_numpy())
        np.testing.assert_array_equal(rolling_min(values, window), rolling.min().to_numpy())
        np.testing.assert_allclose(sma(values, window), rolling.mean().to_numpy(), **TOLERANCE)
    _check_unchanged(prices, copies)


def test_rolling_max_handles_ties_and_monotonic_runs():
    values = np.array([3.0, 3.0, 2.0, 2.0, 5.0, 5.0, 1.0, 0.0, 0.0, 4.0, 4.0, 4.0, 9.0, 8.0])
    for window in range(1, len(values) + 2):
        rolling = pd.Series(values).rolling(window)
        np.testing.assert_array_equal(rolling_max(values, window), rolling.max().to_numpy())
        np.testing.assert_array_equal(rolling_min(values, window), rolling.min().to_numpy())
    descending = np.arange(100.0, 0.0, -1.0)
    np.testing.assert_array_equal(rolling_max(descending, 7),
                                  pd.Series(descending).rolling(7).max().to_numpy())
