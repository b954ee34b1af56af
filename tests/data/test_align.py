"""Other series aligned to a strategy's own bars as-of: a bar is seen only once closed."""

import numpy as np
import pandas as pd
import pytest

from mmats.data import load
from mmats.data.align import align_asof, higher_timeframe, visible_index
from mmats.errors import ConfigError, DataError

M5 = 5 * 60 * 10**9
H1 = 12 * M5


def test_an_hourly_bar_is_first_seen_by_the_5m_bar_closing_with_it():
    own = np.arange(24, dtype=np.int64) * M5  # 00:00 .. 01:55
    other = np.array([0, H1], dtype=np.int64)  # 00:00 and 01:00 hourly bars
    index = visible_index(own, M5, other, H1)
    assert (index[:11] == -1).all()  # closes 00:05 .. 00:55: the 00:00 hour is forming
    assert index[11] == 0  # the bar opening 00:55 closes at 01:00 with the hour
    assert (index[11:23] == 0).all() and index[23] == 1


def test_values_carry_forward_over_the_other_series_gaps_and_are_nan_before():
    own = np.arange(10, dtype=np.int64) * M5
    other = np.array([1, 2, 6], dtype=np.int64) * M5  # same timeframe, bars 3-5 missing
    aligned = align_asof(own, M5, other, M5, {"close": np.array([10.0, 20.0, 60.0])})
    expected = [np.nan, 10.0, 20.0, 20.0, 20.0, 20.0, 60.0, 60.0, 60.0, 60.0]
    np.testing.assert_array_equal(aligned["close"], expected)


def test_higher_timeframe_equals_pandas_resample_shifted_to_its_close():
    candles = load("bittrex:ETH/BTC:5m")
    own = candles["ts"].to_numpy("M8[ns]").view(np.int64)
    values = {c: candles[c].to_numpy() for c in ("open", "high", "low", "close", "volume")}
    hourly = higher_timeframe(own, M5, values, "1h")
    reference = candles.set_index("ts").resample("1h").agg(
        {"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"})
    reference = reference[reference.index >= candles["ts"].iloc[0].ceil("1h")]
    reference.index = reference.index + pd.Timedelta("1h")  # known at its close
    own_close = pd.DatetimeIndex(candles["ts"]) + pd.Timedelta("5min")
    expected = reference.reindex(own_close, method="ffill")
    for name in values:
        np.testing.assert_allclose(hourly[name], expected[name].to_numpy(), rtol=0,
                                   atol=0, equal_nan=True, err_msg=name)
    assert np.isnan(hourly["close"][:12]).all()  # the data starts at 04:55: mid-hour


def test_a_window_starting_mid_hour_agrees_with_the_full_history_once_warm():
    candles = load("bittrex:ETH/BTC:5m")
    own = candles["ts"].to_numpy("M8[ns]").view(np.int64)
    values = {c: candles[c].to_numpy() for c in ("open", "high", "low", "close", "volume")}
    full = higher_timeframe(own, M5, values, "1h")
    for start in (7, 100, 1001):  # windows that start anywhere inside an hour
        part = higher_timeframe(own[start:], M5, {k: v[start:] for k, v in values.items()},
                                "1h")
        seen = ~np.isnan(part["close"])
        assert seen.sum() > 0
        for name in values:
            np.testing.assert_array_equal(part[name][seen], full[name][start:][seen])
        assert seen[:24].sum() <= 24 - 12  # the first (partial) hour is never used


def test_no_value_depends_on_a_later_bar():
    candles = load("bittrex:ETH/BTC:5m")
    own = candles["ts"].to_numpy("M8[ns]").view(np.int64)
    values = {c: candles[c].to_numpy().copy() for c in ("open", "high", "low", "close",
                                                         "volume")}
    full = higher_timeframe(own, M5, values, "4h")
    for cut in (500, 2011, 4444):
        bent = {k: v.copy() for k, v in values.items()}
        for k in bent:
            bent[k][cut:] *= 1.5
        again = higher_timeframe(own, M5, bent, "4h")
        np.testing.assert_array_equal(again["close"][:cut], full["close"][:cut])
        truncated = higher_timeframe(own[:cut], M5, {k: v[:cut] for k, v in values.items()},
                                     "4h")
        np.testing.assert_array_equal(truncated["close"], full["close"][:cut])


def test_bad_requests_are_named():
    own = np.arange(10, dtype=np.int64) * M5
    values = {c: np.ones(10) for c in ("open", "high", "low", "close", "volume")}
    with pytest.raises(ConfigError, match="whole multiple"):
        higher_timeframe(own, M5, values, "7m")
    with pytest.raises(ConfigError, match="whole multiple"):
        higher_timeframe(own, M5, values, "5m")
    with pytest.raises(DataError, match="not strictly increasing"):
        visible_index(own, M5, np.array([M5, 0]), M5)
    with pytest.raises(DataError, match="'close' has 2 values for 3 bars"):
        align_asof(own, M5, np.arange(3) * M5, M5, {"close": np.ones(2)})
