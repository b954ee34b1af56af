"""The sweep's bar step specialised to a configuration computes what the general one does.

``mmats.fused`` compiles a copy of ``mmats/nb`` with the :mod:`mmats.nb.features`
switches of unused features off. For configurations with each feature on and off, the
specialised ``run_metrics`` must give the general one's metrics and sampled equity; and a
copy with a used feature switched off must not (so the switches really remove code, and
these comparisons would notice if a specialised copy dropped a feature it needed).
"""

import importlib

import numpy as np
import pytest
from kernel_runs import DAY_NS, config, random_bars

from mmats.backtest import backtest, sweep
from mmats.fused import feature_switches, specialised_nb, specialised_run_metrics
from mmats.nb import features
from mmats.nb.sim import run_metrics
from mmats.types import METRIC_NAMES

N_BARS = 3_000
CASH = 10_000.0

#: name -> (settings, whether stops are passed, the switch the feature needs on)
CASES = {
    "stops": ({"fee_bps": 10.0}, True, "STOPS_ON"),
    "participation_cap": ({"fee_bps": 5.0, "max_participation": 0.5}, False, "CAPS_ON"),
    "order_notional_cap": ({"max_order_notional": 3_000.0}, False, "CAPS_ON"),
    "lots": ({"fee_bps": 10.0, "lot_size": 0.1, "min_notional": 20.0}, False, "LOTS_ON"),
    "volatility_sizing": ({"sizing": "volatility_target", "vol_target": 0.5,
                           "max_leverage": 3.0}, False, "VOLATILITY_ON"),
    "volatility_slippage": ({"slippage_model": "volatility_sqrt", "impact_coef": 0.5},
                            False, "VOLATILITY_ON"),
    "participation_slippage": ({"slippage_model": "participation", "impact_coef": 0.5},
                               False, "PARTICIPATION_SLIPPAGE_ON"),
    "kelly": ({"sizing": "kelly", "kelly_min_trades": 5, "fee_bps": 1.0}, False, "KELLY_ON"),
    "daily_loss": ({"max_daily_loss_pct": 1.0, "fee_bps": 10.0}, False, "DAILY_LOSS_ON"),
    "drawdown_limit": ({"max_drawdown_pct": 8.0, "fee_bps": 10.0}, False,
                       "DRAWDOWN_LIMIT_ON"),
}


@pytest.fixture(scope="module")
def history():
    """Random bars (small volumes, so caps bind) and a signal that trades often, both ways,
    with stop and take-profit distances."""
    rng = np.random.default_rng(14)
    prices = random_bars(rng, N_BARS, step_ns=DAY_NS // 24, volatility=0.01)
    prices.volume[:] = rng.uniform(5.0, 60.0, N_BARS)
    regime = np.repeat(rng.choice([-1.0, -0.5, 0.0, 0.5, 1.0], N_BARS // 20 + 1), 20)
    signal = regime[:N_BARS].copy()
    signal[rng.random(N_BARS) < 0.02] = np.nan  # "no opinion" keeps the position
    stops = prices.close * rng.uniform(0.005, 0.03, N_BARS)
    targets = prices.close * rng.uniform(0.01, 0.05, N_BARS)
    return prices, signal, stops, targets


def _run(step, prices, signal, stops, targets, cfg):
    out = np.full(len(METRIC_NAMES), np.nan)
    samples = np.arange(0, N_BARS, 97, dtype=np.int64)
    equity = np.full(samples.shape[0], np.nan)
    step(prices.ts_ns, prices.day, prices.open, prices.high, prices.low, prices.close,
         prices.volume, signal, stops, targets, cfg, CASH, DAY_NS // 24, out, samples, equity)
    return out, equity


def _both(history, settings, with_stops):
    prices, signal, stops, targets = history
    if not with_stops:
        stops = targets = np.empty(0)
    cfg = config(8760.0, **settings)
    n_outputs = 3 if with_stops else 1
    general = _run(run_metrics, prices, signal, stops, targets, cfg)
    special = _run(specialised_run_metrics(cfg, n_outputs), prices, signal, stops, targets,
                   cfg)
    return cfg, n_outputs, general, special


def _assert_same(general, special):
    for ours, theirs in zip(special, general, strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=0.0, equal_nan=True)


#: configurations with several features on at once (each copy compiles for seconds, so
#: the features are grouped; together the groups switch every feature on)
GROUPS = {
    "stops_and_daily_loss": (["stops", "daily_loss"], True),
    "caps_and_lots": (["participation_cap", "order_notional_cap", "lots"], False),
    "volatility_and_drawdown": (["volatility_sizing", "participation_slippage",
                                 "drawdown_limit"], False),
    "kelly_and_volatility_slippage": (["kelly", "volatility_slippage"], False),
}


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_specialised_step_equals_general_with_features_on(history, group):
    cases, with_stops = GROUPS[group]
    settings = {}
    for case in cases:
        settings.update(CASES[case][0])
    cfg, n_outputs, general, special = _both(history, settings, with_stops)
    switches = feature_switches(cfg, n_outputs)
    assert all(switches[CASES[case][2]] for case in cases)
    assert not all(switches.values())  # a specialised copy, not the general modules
    assert general[0][METRIC_NAMES.index("trades")] > 5  # the run trades: a real comparison
    _assert_same(general, special)


def test_the_groups_switch_every_feature_on():
    assert {CASES[case][2] for cases, _ in GROUPS.values() for case in cases} == set(
        features.NAMES)


def test_specialised_step_equals_general_with_every_feature_off(history):
    cfg, n_outputs, general, special = _both(history, {"fee_bps": 10.0}, False)
    assert not any(feature_switches(cfg, n_outputs).values())
    _assert_same(general, special)


def test_specialised_step_equals_general_with_every_feature_on(history):
    settings = {"fee_bps": 10.0, "max_participation": 0.2, "max_order_notional": 5_000.0,
                "lot_size": 0.01, "min_notional": 10.0, "sizing": "kelly",
                "kelly_min_trades": 5, "slippage_model": "volatility_sqrt",
                "max_daily_loss_pct": 3.0, "max_drawdown_pct": 30.0}
    cfg, n_outputs, general, special = _both(history, settings, True)
    switches = feature_switches(cfg, n_outputs)
    assert [name for name, on in switches.items() if not on] == [
        "PARTICIPATION_SLIPPAGE_ON"]
    _assert_same(general, special)


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_used_feature_switched_off_changes_the_result(history, case):
    """The switches really remove the features' code: the copy with every switch off, run
    with a configuration that uses the feature, gives other metrics than the general step
    (what the comparisons above would catch if a copy dropped a feature it needs)."""
    settings, with_stops, _ = CASES[case]
    prices, signal, stops, targets = history
    if not with_stops:
        stops = targets = np.empty(0)
    cfg = config(8760.0, **settings)
    general = _run(run_metrics, prices, signal, stops, targets, cfg)
    all_off = specialised_nb({name: False for name in features.NAMES})
    wrong = _run(importlib.import_module(all_off + ".sim").run_metrics, prices, signal,
                 stops, targets, cfg)
    assert not np.allclose(wrong[0], general[0], rtol=1e-9, equal_nan=True)


def test_specialised_copy_is_a_rewritten_copy_of_the_sources():
    assert specialised_nb({name: True for name in features.NAMES}) == "mmats.nb"
    one = specialised_nb({"KELLY_ON": False})
    two = specialised_nb({"KELLY_ON": False, "CAPS_ON": False})
    assert one != two and one.startswith("mmats_kernels.")
    copy = importlib.import_module(two + ".features")
    assert (copy.KELLY_ON, copy.CAPS_ON, copy.STOPS_ON) == (False, False, True)
    sim = importlib.import_module(two + ".sim")
    assert sim.run_metrics is not run_metrics
    assert "mmats.nb." not in open(sim.__file__).read()  # imports its own copy, not ours
    with pytest.raises(ValueError, match="unknown feature switches"):
        specialised_nb({"STOPS": False})


def test_sweep_rows_equal_backtests_with_features_on(history):
    """End to end: sweep() (the fused, specialised kernel) against backtest() (the general
    simulate) with caps, lots, Kelly sizing and both limits on."""
    prices = history[0]
    settings = {"fee_bps": 10.0, "max_participation": 0.5, "lot_size": 0.01,
                "sizing": "kelly", "kelly_min_trades": 3, "max_daily_loss_pct": 2.0,
                "max_drawdown_pct": 25.0}
    grid = {"fast": [5, 10], "slow": [20, 40]}
    result = sweep("ema_cross", prices.frame(), grid, cash=CASH,
                   check_lookahead_bias=False, **settings)
    assert len(result.table) == 4
    for row in result.table.to_dict("records"):
        single = backtest("ema_cross", prices.frame(), {"fast": row["fast"],
                          "slow": row["slow"]}, cash=CASH, check_lookahead_bias=False,
                          **settings)
        for name in ("final_equity", "sharpe", "max_drawdown", "trades", "fees_paid"):
            np.testing.assert_allclose(row[name], single.metrics[name], rtol=1e-12,
                                       equal_nan=True, err_msg=name)
