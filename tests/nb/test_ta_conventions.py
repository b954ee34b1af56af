"""mmats.ta's shared rules: NaN handling (leading NaNs skipped as TA-Lib does; a later
NaN blanks a window indicator while inside its window and a recursive one from there
on), the flat-market conventions that differ from TA-Lib, inputs left unchanged, periods
checked, and the indicators called from inside an ``@njit`` strategy."""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import talib
from numba import njit
from numpy.lib.stride_tricks import sliding_window_view
from ta_data import assert_close, first_finite, load_bars
from test_ta_talib import CASES

from mmats import ta

LEAD = 7


@pytest.fixture(scope="module")
def eth():
    return load_bars("eth_btc_5m")


def _with_leading_nan(d):
    fields = {k: np.r_[np.full(LEAD, np.nan), getattr(d, k)]
              for k in ("open", "high", "low", "close", "volume")}
    return SimpleNamespace(**fields, name=f"{d.name} after {LEAD} NaN")


def _as_tuple(value):
    return value if isinstance(value, tuple) else (value,)


@pytest.mark.parametrize("name", sorted(CASES))
def test_leading_nan_is_skipped_as_talib_does(eth, name):
    """Every TA-Lib case again, on inputs that start with NaN: TA-Lib's Python wrapper
    starts at the first number; so does mmats.ta, its warm-up shifted by as many bars."""
    mine_call, talib_call, warmups, scale = CASES[name][:4]
    d = _with_leading_nan(eth)
    mine = _as_tuple(mine_call(d))
    expected = _as_tuple(talib_call(d))
    for k, (line, reference, warmup) in enumerate(zip(mine, expected, warmups, strict=True)):
        assert first_finite(line) == LEAD + warmup, f"{name}[{k}]"
        assert_close(line, reference, scale(d), f"{name}[{k}] after leading NaN")


def _hole(values, at=100):
    holed = values.copy()
    holed[at] = np.nan
    return holed


def test_a_later_nan_blanks_a_window_indicator_only_while_inside_its_window(eth):
    close = _hole(eth.close)
    reference = pd.Series(close).rolling(20)
    windows = np.full((len(close), 20), np.nan)
    windows[19:] = sliding_window_view(close, 20)  # a window holding the NaN gives NaN
    checks = {
        "sma": (ta.sma(close, 20), reference.mean().to_numpy()),
        "highest": (ta.highest(close, 20), reference.max().to_numpy()),
        "stddev": (ta.stddev(close, 20, 1.0), windows.std(axis=1)),
        "wma": (ta.wma(close, 20), talib.WMA(eth.close, 20)),
        "linearreg_slope": (ta.linearreg_slope(close, 20),
                            talib.LINEARREG_SLOPE(eth.close, 20)),
        "zscore": (ta.zscore(close, 20), (close - windows.mean(axis=1)) / windows.std(axis=1)),
    }
    clean = np.r_[np.arange(19, 100), np.arange(120, len(close))]
    for name, (line, expected) in checks.items():
        assert np.isnan(line[100:120]).all(), name
        assert np.isfinite(line[clean]).all(), name
        assert_close(line[clean], expected[clean], 1e3 if name == "zscore" else 0.1, name)
    change = ta.roc(close, 20)  # reads two bars: NaN where either is the hole
    assert np.isnan(change[[100, 120]]).all() and np.isfinite(change[101:120]).all()


def test_a_later_nan_stops_a_recursive_indicator_from_there_on(eth):
    close = _hole(eth.close)
    high = _hole(eth.high)
    for name, line in {
        "ema": ta.ema(close, 20),
        "rsi": ta.rsi(close, 14),
        "kama": ta.kama(close, 30),
        "macd": ta.macd(close, 12, 26, 9)[2],
        "atr": ta.atr(high, eth.low, eth.close, 14),
        "adx": ta.adx(high, eth.low, eth.close, 14),
        "sar": ta.sar(high, eth.low, 0.02, 0.2),
        "supertrend": ta.supertrend(high, eth.low, eth.close, 10, 3.0)[0],
        "obv": ta.obv(close, eth.volume),
    }.items():
        assert np.isfinite(line[40:100]).all(), name
        assert np.isnan(line[100:]).all(), name


def test_a_nan_bar_blanks_session_vwap_until_the_next_utc_day(eth):
    high = _hole(eth.high, at=500)
    line = ta.vwap_session(high, eth.low, eth.close, eth.volume, eth.ts_ns)
    day = eth.ts_ns // 86_400_000_000_000
    same_day = day == day[500]
    assert np.isnan(line[500:][same_day[500:]]).all()
    assert np.isfinite(line[~same_day]).all()


def _brute_bars_since_extreme(values, window, pick):
    out = np.full(len(values), np.nan)
    for i in range(window - 1, len(values)):
        part = values[i - window + 1:i + 1]
        if not np.isnan(part).any():
            out[i] = window - 1 - np.flatnonzero(part == pick(part))[-1]  # newest on ties
    return out


@pytest.mark.parametrize("period", [1, 2, 3, 5, 8])
def test_rolling_extremes_on_ties_and_holes_equal_brute_force(period):
    """Highest/lowest and Aroon's bars-since on small integers (ties everywhere) with NaN
    holes, against a window-by-window search."""
    rng = np.random.default_rng(period)
    values = rng.integers(0, 4, 400).astype(float)
    values[rng.choice(400, 12, replace=False)] = np.nan
    windows = pd.Series(values).rolling(period, min_periods=period)
    np.testing.assert_array_equal(ta.highest(values, period), windows.max().to_numpy())
    np.testing.assert_array_equal(ta.lowest(values, period), windows.min().to_numpy())
    down, up = ta.aroon(values, values, period)
    np.testing.assert_array_equal(
        up, 100.0 / period * (period - _brute_bars_since_extreme(values, period + 1, np.max)))
    np.testing.assert_array_equal(
        down, 100.0 / period * (period - _brute_bars_since_extreme(values, period + 1, np.min)))


def test_flat_markets_read_neutral_where_talib_reads_0():
    """The conventions' premise, on a market that does not move: TA-Lib answers 0 for
    %K, Williams %R, RSI and MFI; mmats.ta the midpoint (50, -50, 50, 50), and CMO 0."""
    flat = np.full(40, 100.0)
    volume = np.full(40, 5.0)
    assert (talib.STOCHF(flat, flat, flat, 5, 3, 0)[0][6:] == 0.0).all()
    assert (talib.WILLR(flat, flat, flat, 14)[13:] == 0.0).all()
    assert (talib.RSI(flat, 14)[14:] == 0.0).all()
    assert (talib.MFI(flat, flat, flat, volume, 14)[14:] == 0.0).all()
    assert (ta.stochf(flat, flat, flat, 5, 3)[0][4:] == 50.0).all()
    assert (ta.stoch(flat, flat, flat, 5, 3, 3)[1][8:] == 50.0).all()
    assert (ta.stochrsi(flat, 14, 5, 3)[0][18:] == 50.0).all()
    assert (ta.willr(flat, flat, flat, 14)[13:] == -50.0).all()
    assert (ta.rsi(flat, 14)[14:] == 50.0).all()
    assert (ta.cmo(flat, 14)[14:] == 0.0).all()
    assert (ta.mfi(flat, flat, flat, volume, 14)[14:] == 50.0).all()


def test_a_zero_base_gives_nan_where_talib_gives_0():
    values = np.array([0.0, 1.0, 2.0, 3.0])
    assert talib.ROC(values, 1)[1] == 0.0
    assert np.isnan(ta.roc(values, 1)[1]) and ta.roc(values, 1)[2] == 100.0
    high, low, close = np.array([1.0, 2.0, 3.0]), np.zeros(3), np.array([1.0, 0.0, 1.0])
    assert np.isnan(ta.natr(high, low, close, 1)[1]) and ta.natr(high, low, close, 1)[2] == 300.0


OTHERS = {  # the indicators TA-Lib lacks, as the cases above
    "hma": lambda d: ta.hma(d.close, 16),
    "keltner": lambda d: ta.keltner(d.high, d.low, d.close, 20, 2.0, 10),
    "ichimoku": lambda d: ta.ichimoku(d.high, d.low, 9, 26, 52, 26),
    "supertrend": lambda d: ta.supertrend(d.high, d.low, d.close, 10, 3.0),
    "zscore": lambda d: ta.zscore(d.close, 20),
    "vwap_session": lambda d: ta.vwap_session(d.high, d.low, d.close, d.volume, d.ts_ns),
    "vwap_rolling": lambda d: ta.vwap_rolling(d.high, d.low, d.close, d.volume, 20),
}


def test_no_indicator_looks_ahead(eth):
    """Bar i's value is the same whether the data ends at bar i or goes on: computed on
    the first 3001 bars, every output equals (bit for bit) the full run's first 3001."""
    cut = SimpleNamespace(**{k: getattr(eth, k)[:3001] for k in
                             ("open", "high", "low", "close", "volume", "ts_ns")})
    calls = {name: case[0] for name, case in CASES.items()} | OTHERS
    for name, call in calls.items():
        for whole, part in zip(_as_tuple(call(eth)), _as_tuple(call(cut)), strict=True):
            np.testing.assert_array_equal(whole[:3001], part, err_msg=name)


def test_inputs_are_not_mutated(eth):
    copies = {k: getattr(eth, k).copy() for k in ("open", "high", "low", "close", "volume",
                                                   "ts_ns")}
    for call in [case[0] for case in CASES.values()] + list(OTHERS.values()):
        call(eth)
    for name, values in copies.items():
        np.testing.assert_array_equal(getattr(eth, name), values, err_msg=name)


def test_periods_below_their_least_value_are_refused():
    x = np.arange(10.0)
    with pytest.raises(ValueError, match="period"):
        ta.sma(x, 0)
    with pytest.raises(ValueError, match="period"):
        ta.hma(x, 1)
    with pytest.raises(ValueError, match="fast period"):
        ta.macd(x, 26, 12, 9)
    with pytest.raises(ValueError, match="looks ahead"):
        ta.ichimoku(x, x, 9, 26, 52, -26)


@njit
def _trend_strategy(open, high, low, close, volume, fast, slow):
    """A strategy-shaped kernel: long while a Hull average is above an EMA, the trend is
    strong (ADX), MACD is above its signal and SuperTrend points up."""
    quick = ta.hma(close, fast)
    trend = ta.ema(close, slow)
    strength = ta.adx(high, low, close, 14)
    line, trigger, _ = ta.macd(close, 12, 26, 9)
    _, direction = ta.supertrend(high, low, close, 10, 3.0)
    upper, middle, lower = ta.bbands(close, 20, 2.0, 2.0)
    out = np.zeros(close.shape[0])
    for i in range(close.shape[0]):
        if (quick[i] > trend[i] and strength[i] > 20.0 and line[i] > trigger[i]
                and direction[i] > 0.0 and close[i] < upper[i]):
            out[i] = 1.0
    return out


def test_indicators_are_callable_inside_njit_strategies(eth):
    exposure = _trend_strategy(eth.open, eth.high, eth.low, eth.close, eth.volume, 16, 50)
    assert _trend_strategy.nopython_signatures  # compiled in nopython mode
    interpreted = _trend_strategy.py_func(eth.open, eth.high, eth.low, eth.close, eth.volume,
                                          16, 50)
    np.testing.assert_array_equal(exposure, interpreted)
    assert 0 < exposure.sum() < len(exposure)
    assert (exposure[:33] == 0.0).all()  # nothing before MACD's signal exists
