"""A strategy's block form equals its signal, and the block kernel equals run_metrics.

The sweep computes the signal of a strategy that defines ``signal_block`` a block of bars
at a time (:func:`mmats.fused.block_form`), so it never writes whole-history arrays. That
is only allowed because the block form is the same numbers: these tests hold each shipped
block form to its ``signal`` bit for bit whatever the block boundaries, and the block
kernel's rows to ``run_metrics`` over the whole-history signal (the general bar step).
"""

import numpy as np
import pytest
from kernel_runs import DAY_NS, config, random_bars

from mmats.fused import BLOCK_BARS, block_form, sweep_kernel
from mmats.nb.sim import run_metrics
from mmats.strategy import load_strategy
from mmats.types import METRIC_NAMES

N_BARS = 5_000
CASH = 10_000.0
BLOCKED = ("ema_cross", "rsi_reversion")
PARAMS = {
    "ema_cross": [{"fast": 5, "slow": 20}, {"fast": 12, "slow": 40}, {"fast": 1, "slow": 3}],
    "rsi_reversion": [{"period": 14, "lower": 30, "upper": 70, "short": 0},
                      {"period": 3, "lower": 40, "upper": 60, "short": 1},
                      {"period": 7, "lower": 25, "upper": 80, "short": 1}],
}


@pytest.fixture(scope="module")
def prices():
    rng = np.random.default_rng(1414)
    history = random_bars(rng, N_BARS, step_ns=DAY_NS // 24, volatility=0.01)
    history.close[100:110] = history.close[99]  # flat closes: zero changes in the RSI
    return history


def _arrays(prices):
    return (prices.open, prices.high, prices.low, prices.close, prices.volume)


def _in_blocks(strategy, prices, params, sizes, n_outputs):
    block, carry_size = block_form(strategy)
    n = len(prices)
    values = np.full((n_outputs, n), -7.0)
    carry = np.zeros(carry_size)
    first = 0
    for size in sizes:
        last = min(first + size, n)
        out = np.full((n_outputs, size), -9.0)
        block(carry, *_arrays(prices), first, last, out, *params.values())
        values[:, first:last] = out[:, : last - first]
        first = last
        if first == n:
            break
    assert first == n
    return values


@pytest.mark.parametrize("name", BLOCKED)
def test_block_form_equals_signal_whatever_the_blocks(prices, name):
    strategy = load_strategy(name)
    rng = np.random.default_rng(7)
    for params in PARAMS[name]:
        whole = strategy.run({"open": prices.open, "high": prices.high, "low": prices.low,
                              "close": prices.close, "volume": prices.volume}, params)
        expected = np.vstack([part for part in (whole.exposure, whole.stop_distance,
                                                whole.take_profit_distance)
                              if part is not None])
        assert len(np.unique(expected[0][~np.isnan(expected[0])])) > 1  # it trades
        for sizes in ([N_BARS], [1] * N_BARS, [BLOCK_BARS] * 3,
                      list(rng.integers(1, 400, size=N_BARS))):
            got = _in_blocks(strategy, prices, params, sizes, expected.shape[0])
            np.testing.assert_array_equal(got, expected, err_msg=f"{params} {sizes[:3]}")


def test_shipped_strategies_without_block_form_keep_the_whole_history_path():
    assert block_form(load_strategy("donchian_breakout")) is None
    for name in BLOCKED:
        assert block_form(load_strategy(name)) is not None


@pytest.mark.parametrize("name", BLOCKED)
def test_block_kernel_rows_equal_run_metrics(prices, name):
    """Over more than one block, with fees and a leverage cap on, the sweep's block kernel
    (a specialised step) gives run_metrics' (the general step's) metrics and samples."""
    strategy = load_strategy(name)
    n = 3 * BLOCK_BARS + 123
    prices = random_bars(np.random.default_rng(99), n, step_ns=DAY_NS // 24,
                         volatility=0.01)
    arrays = {"open": prices.open, "high": prices.high, "low": prices.low,
              "close": prices.close, "volume": prices.volume}
    cfg = config(8760.0, fee_bps=10.0, max_leverage=1.0)
    combos = PARAMS[name]
    kernel = sweep_kernel(strategy, 1, cfg)
    columns = [np.array([c[p] for c in combos],
                        dtype=np.int64 if strategy.param_types[p] is int else np.float64)
               for p in strategy.param_names]
    samples = np.array([0, BLOCK_BARS - 1, BLOCK_BARS, n - 1], dtype=np.int64)
    out = np.full((len(combos), len(METRIC_NAMES)), np.nan)
    equity = np.full((len(combos), samples.shape[0]), np.nan)
    inputs = (prices.ts_ns, prices.day, prices.open, prices.high, prices.low, prices.close,
              prices.volume)
    kernel(*inputs, *columns, cfg, CASH, DAY_NS // 24, out, samples, equity)
    for k, params in enumerate(combos):
        expected = np.full(len(METRIC_NAMES), np.nan)
        expected_equity = np.full(samples.shape[0], np.nan)
        signal = strategy.run(arrays, params).exposure
        run_metrics(*inputs, signal, np.empty(0), np.empty(0), cfg, CASH, DAY_NS // 24,
                    expected, samples, expected_equity)
        assert expected[METRIC_NAMES.index("trades")] > 3
        np.testing.assert_allclose(out[k], expected, rtol=1e-12, atol=0.0, equal_nan=True)
        np.testing.assert_allclose(equity[k], expected_equity, rtol=1e-12, atol=0.0)
