"""Extra inputs (INPUTS) and named outputs with confidence (OUTPUTS) in the strategy
contract: declared, passed, checked, and held to the lookahead check like the prices."""

import textwrap

import numpy as np
import pytest

from mmats.backtest import backtest, market, with_inputs
from mmats.data import load
from mmats.errors import LookaheadError, StrategyError
from mmats.strategy import load_strategy

TREND = '''
import numpy as np
from numba import njit

INPUTS = {"hour_close": {"timeframe": "1h"}}
PARAMS = {"n": [3, 6]}
DEFAULTS = {"n": 3}
WARMUP = 12 * 8


@njit(cache=False)
def signal(open, high, low, close, volume, hour_close, n):
    out = np.full(close.shape[0], np.nan)
    for i in range(close.shape[0]):
        j = i + {peek}
        if j >= close.shape[0] or i < 12 * n:
            continue
        then = hour_close[max(j - 12 * n, 0)]
        if np.isnan(hour_close[j]) or np.isnan(then):
            continue
        out[i] = 1.0 if hour_close[j] > then else 0.0
    return out
'''

FILTER = '''
import numpy as np
from numba import njit

INPUTS = {"ltc": {"symbol": "LTC/BTC"}}
OUTPUTS = ("exposure", "confidence")
PARAMS = {"n": [10, 20]}
DEFAULTS = {"n": 10}
WARMUP = 20


@njit(cache=False)
def signal(open, high, low, close, volume, ltc, n):
    out = np.full(close.shape[0], np.nan)
    confidence = np.full(close.shape[0], np.nan)
    for i in range(n, close.shape[0]):
        k = i + {peek}
        if k >= close.shape[0]:
            continue
        up = close[i] > close[i - n]
        market_up = ltc[k] > ltc[i - n]
        out[i] = 1.0 if up else 0.0
        confidence[i] = 1.0 if market_up else {low}
    return out, confidence
'''


def _strategy(tmp_path, name, source, **fill):
    path = tmp_path / f"{name}.py"
    text = textwrap.dedent(source)
    for key, value in fill.items():
        text = text.replace("{" + key + "}", str(value))
    path.write_text(text)
    return load_strategy(path)


def test_a_higher_timeframe_input_reaches_the_signal_aligned(tmp_path):
    candles = load("bittrex:ETH/BTC:5m")
    strategy = _strategy(tmp_path, "trend", TREND, peek=0)
    assert strategy.inputs == ("hour_close",) and strategy.param_names == ("n",)
    prices = with_inputs(market(candles), strategy)
    assert set(prices.arrays) >= {"hour_close", "close"}
    result = backtest(strategy, candles, {"n": 3})
    hour = prices.extras["hour_close"]
    seen = ~np.isnan(hour)
    assert 0 < seen.sum() < len(hour) and result.metrics["trades"] > 0
    # a value changes only at a 5m bar whose close is an hour's close
    changed = np.flatnonzero(np.diff(hour[seen]) != 0)
    closes = (prices.ts_ns[seen][1:][changed] + 300_000_000_000) % 3_600_000_000_000
    assert (closes == 0).all()


def test_a_peek_into_the_higher_timeframe_is_caught(tmp_path):
    strategy = _strategy(tmp_path, "trend_peek", TREND, peek=12)
    with pytest.raises(LookaheadError):
        backtest(strategy, load("bittrex:ETH/BTC:5m"), {"n": 3})


def test_a_cross_symbol_input_and_its_confidence(tmp_path):
    strategy = _strategy(tmp_path, "filter", FILTER, peek=0, low=0.25)
    assert strategy.outputs == ("exposure", "confidence")
    candles = "bittrex:ETH/BTC:5m"
    prices = with_inputs(market(candles), strategy)
    np.testing.assert_array_equal(prices.extras["ltc"],
                                  load("bittrex:LTC/BTC:5m")["close"].to_numpy())
    output = strategy.run(prices.arrays, {"n": 10})
    assert set(np.unique(output.confidence[~np.isnan(output.confidence)])) == {0.25, 1.0}
    assert output.stop_distance is None and output.take_profit_distance is None
    given = backtest(strategy, load(candles), {"n": 10},
                     extra_data={"bittrex:LTC/BTC:5m": load("bittrex:LTC/BTC:5m")})
    stored = backtest(strategy, candles, {"n": 10})
    np.testing.assert_array_equal(given.equity.to_numpy(), stored.equity.to_numpy())


def test_a_peek_into_another_symbol_is_caught(tmp_path):
    strategy = _strategy(tmp_path, "filter_peek", FILTER, peek=1, low=0.25)
    with pytest.raises(LookaheadError, match="confidence"):
        backtest(strategy, "bittrex:ETH/BTC:5m", {"n": 10})


def test_contract_faults_are_named(tmp_path):
    strategy = _strategy(tmp_path, "filter_bad", FILTER, peek=0, low=1.5)
    with pytest.raises(StrategyError, match="confidence 1.5 at bar .* outside \\[0, 1\\]"):
        backtest(strategy, "bittrex:ETH/BTC:5m", {"n": 10}, check_lookahead_bias=False)
    plain = market("bittrex:ETH/BTC:5m")
    good = _strategy(tmp_path, "filter_ok", FILTER, peek=0, low=0.5)
    with pytest.raises(StrategyError, match="reads the extra input 'ltc'"):
        good.run(plain.arrays, {"n": 10})
    wrong_order = TREND.replace("hour_close, n)", "n, hour_close)")
    with pytest.raises(StrategyError, match="must take its INPUTS right after the prices"):
        _strategy(tmp_path, "order", wrong_order, peek=0)
    bad_outputs = FILTER.replace('("exposure", "confidence")', '("confidence", "exposure")')
    with pytest.raises(StrategyError, match="OUTPUTS must name exposure first"):
        _strategy(tmp_path, "outs", bad_outputs, peek=0, low=0.5)
    two = FILTER.replace('("exposure", "confidence")',
                         '("exposure", "confidence", "stop_distance")')
    with pytest.raises(StrategyError, match="returned 2 array\\(s\\); its OUTPUTS declare 3"):
        backtest(_strategy(tmp_path, "three", two, peek=0, low=0.5), "bittrex:ETH/BTC:5m",
                 {"n": 10}, check_lookahead_bias=False)


def test_sizing_by_confidence_scales_what_the_bar_step_acts_on(tmp_path):
    strategy = _strategy(tmp_path, "filter_sized", FILTER, peek=0, low=0.25)
    spec = "bittrex:ETH/BTC:5m"
    plain = backtest(strategy, spec, {"n": 10})
    sized = backtest(strategy, spec, {"n": 10}, size_by_confidence=True)
    stepped = backtest(strategy, spec, {"n": 10}, size_by_confidence=True,
                       confidence_step=0.5)
    signal, confidence = sized.signal.to_numpy(), sized.confidence.to_numpy()
    np.testing.assert_array_equal(plain.acted.to_numpy(), signal)  # off: as the strategy said
    expected = np.where(np.isnan(signal), np.nan,
                        signal * np.where(np.isnan(confidence), 1.0, confidence))
    np.testing.assert_array_equal(sized.acted.to_numpy(), expected + 0.0)
    # 0.25 rounds down to 0 in steps of 0.5: a low-confidence signal asks for flat
    low = (confidence == 0.25) & (signal == 1.0)
    assert low.any() and (stepped.acted.to_numpy()[low] == 0.0).all()
    assert len(sized.fills) > len(plain.fills)  # 0.25 <-> 1 rebalances
    exposure = np.abs(sized.position * sized.market.close[-len(sized.position):]
                      / sized.equity).to_numpy()
    assert exposure.max() <= 1.0 + 1e-9 and 0.2 < np.median(exposure[exposure > 0.01]) <= 1.0


def test_a_sweep_of_a_strategy_with_inputs_equals_its_backtests(tmp_path):
    from mmats.backtest import sweep

    strategy = _strategy(tmp_path, "filter_swept", FILTER, peek=0, low=0.25)
    spec = "bittrex:ETH/BTC:5m"
    table = sweep(strategy, spec, size_by_confidence=True).table
    for _, row in table.iterrows():
        one = backtest(strategy, spec, {"n": int(row["n"])}, size_by_confidence=True)
        assert row["total_return"] == pytest.approx(one.metrics["total_return"], rel=1e-12)
        assert row["trades"] == one.metrics["trades"]
