import json
import subprocess

import numpy as np
import pytest

from mmats.backtest import backtest, lookahead_samples, market, require_no_lookahead, sweep
from mmats.errors import LookaheadError
from mmats.lookahead import CONTINUATIONS, _continuation, check_lookahead, grid_corners
from mmats.strategy import available_strategies, load_strategy

PEEKS_NEXT_BAR = """
import numpy as np
from numba import njit
PARAMS = {"n": [1]}
DEFAULTS = {"n": 1}

@njit(cache=True)
def signal(open, high, low, close, volume, n):
    out = np.zeros(close.shape[0])
    for i in range(close.shape[0] - 1):
        if close[i + 1] > close[i]:  # tomorrow's close: lookahead
            out[i] = 1.0
    return out
"""

WHOLE_HISTORY_MAX = """
import numpy as np
PARAMS = {"n": [1]}
DEFAULTS = {"n": 1}

def signal(open, high, low, close, volume, n):
    return close / close.max()  # the maximum of all bars, later ones included
"""

PATH_DEPENDENT = """
import numpy as np
from numba import njit
PARAMS = {"n": [1]}
DEFAULTS = {"n": 1}
WARMUP = 5

@njit(cache=True)
def signal(open, high, low, close, volume, n):
    # causal, but the value depends on where the history starts (the first close)
    out = np.zeros(close.shape[0])
    for i in range(close.shape[0]):
        out[i] = 1.0 if close[i] > close[0] else 0.0
    return out
"""


@pytest.fixture(scope="module")
def prices(eth_btc):
    return market(eth_btc)


def test_next_bar_reader_is_caught_at_the_cut_bars(write_strategy, prices):
    strategy = load_strategy(write_strategy("peek", PEEKS_NEXT_BAR))
    report = check_lookahead(strategy, prices.arrays, n_cuts=20)
    assert not report.passed
    truncation = [v for v in report.violations if v.check == "truncation"]
    assert truncation, report.summary()
    for violation in truncation:
        # the only value that changes when the history is cut after bar t is bar t itself
        assert violation.bar == violation.cut
        assert violation.difference == 1.0
    assert "FAILED" in report.summary() and "bar" in report.summary()


def test_whole_history_normaliser_is_caught(write_strategy, prices):
    strategy = load_strategy(write_strategy("norm", WHOLE_HISTORY_MAX))
    report = check_lookahead(strategy, prices.arrays, n_cuts=10)
    assert not report.passed
    assert any(v.check == "truncation" and v.difference > 1e-6 for v in report.violations)


def test_history_length_dependence_is_caught_by_recursive_check(write_strategy, prices):
    strategy = load_strategy(write_strategy("pathdep", PATH_DEPENDENT))
    report = check_lookahead(strategy, prices.arrays, n_cuts=20)
    assert not report.passed
    assert {v.check for v in report.violations} == {"recursive"}


def with_strategy_inputs(strategy, arrays, timeframe):
    """``arrays`` with ``strategy``'s extra inputs: its own symbol's longer timeframes
    built from them, another symbol's bars made from the LTC/BTC sample's closes (tiled to
    the length); skipped where the inputs cannot be built (an hourly input on daily bars)."""
    if not strategy.inputs:
        return arrays
    from mmats.data import load
    from mmats.data.calendar import timeframe_ns
    from mmats.data.extras import extra_arrays, parse_inputs, series_needed
    from mmats.errors import MMATSError

    n = len(arrays["close"])
    ts = arrays.get("ts")
    ts = np.arange(n, dtype=np.int64) * timeframe_ns(timeframe) if ts is None else ts
    own = {"ts": ts, **{k: arrays[k] for k in ("open", "high", "low", "close", "volume")}}
    partner = np.resize(load("bittrex:LTC/BTC:5m")["close"].to_numpy(), n)
    inputs = parse_inputs(strategy.input_specs, strategy.name)
    keys = series_needed(inputs, venue="v", symbol="S", timeframe=timeframe)
    others = {key: {"ts": ts, **dict.fromkeys(("open", "high", "low", "close"), partner),
                    "volume": np.ones(n)} for key in keys}
    try:
        extras = extra_arrays(inputs, own, timeframe, venue="v", symbol="S", others=others)
    except MMATSError as error:
        pytest.skip(f"{strategy.name} cannot read its inputs on {timeframe} bars: {error}")
    return {**arrays, **extras}


@pytest.mark.parametrize("name", available_strategies())
def test_every_shipped_strategy_passes(name, sample_candles):
    strategy = load_strategy(name)
    prices = market(sample_candles)
    arrays = with_strategy_inputs(strategy, prices.arrays, prices.timeframe)
    for params in [strategy.resolve_params()] + strategy.combinations()[0][:: 37]:
        report = check_lookahead(strategy, arrays, params, n_cuts=8)
        assert report.passed, report.summary()


def test_backtest_and_sweep_refuse_a_cheat_unless_overridden(write_strategy, eth_btc):
    path = write_strategy("peek2", PEEKS_NEXT_BAR)
    with pytest.raises(LookaheadError, match="FAILED"):
        backtest(path, eth_btc)
    with pytest.raises(LookaheadError):
        sweep(path, eth_btc)
    result = backtest(path, eth_btc, check_lookahead_bias=False)
    # seeing tomorrow's close is very profitable: the reason the check exists
    assert result.metrics["final_equity"] > 10_000


def test_check_strategy_script(write_strategy, repo, python):
    cheat = write_strategy("peek3", PEEKS_NEXT_BAR)
    run = subprocess.run([python, repo / "scripts/check_strategy.py", str(cheat), "--cuts", "5"],
                         capture_output=True, text=True, cwd=repo)
    assert run.returncode == 1
    assert "FAILED" in run.stdout and "at bar" in run.stdout and "difference" in run.stdout
    run = subprocess.run([python, repo / "scripts/check_strategy.py", str(cheat), "--json"],
                         capture_output=True, text=True, cwd=repo)
    report = json.loads(run.stdout)
    assert report["passed"] is False and report["violations"][0]["bar"] >= 0
    run = subprocess.run([python, repo / "scripts/check_strategy.py", "ema_cross"],
                         capture_output=True, text=True, cwd=repo)
    assert run.returncode == 0, run.stderr
    assert "passed" in run.stdout
    run = subprocess.run([python, repo / "scripts/check_strategy.py", "nope"],
                         capture_output=True, text=True, cwd=repo)
    assert run.returncode == 2 and "no strategy named 'nope'" in run.stderr


# --- leaks that today's data may not show: perturbation, consecutive cuts, corners ---

INERT_WHOLE_HISTORY_MAX = """
import numpy as np
PARAMS = {"level": [0.5]}
DEFAULTS = {"level": 0.5}

def signal(open, high, low, close, volume, level):
    # scaled by the maximum of all bars, later ones included; on the sample the close never
    # falls below 78 % of its maximum, so the threshold is never crossed there
    return (close / close.max() > level).astype(np.float64)
"""

INERT_WHOLE_HISTORY_MEAN = """
import numpy as np
PARAMS = {"level": [0.5]}
DEFAULTS = {"level": 0.5}

def signal(open, high, low, close, volume, level):
    return (close > level * close.mean()).astype(np.float64)  # always true on the sample
"""

SPARSE_PEEK = """
import numpy as np
from numba import njit
PARAMS = {"every": [50], "phase": [0]}
DEFAULTS = {"every": 50, "phase": 0}

@njit(cache=True)
def signal(open, high, low, close, volume, every, phase):
    out = np.zeros(close.shape[0])
    for i in range(close.shape[0] - 1):
        if i % every == phase and close[i + 1] > close[i]:  # tomorrow, now and then
            out[i] = 1.0
    return out
"""

CORNER_LEAK = """
import numpy as np
PARAMS = {"fast": [1, 2, 3], "slow": [1, 2, 3]}
DEFAULTS = {"fast": 2, "slow": 2}

def signal(open, high, low, close, volume, fast, slow):
    if fast == 3 and slow == 1:  # one corner of the grid reads the whole history's mean
        return (close > close.mean()).astype(np.float64)
    return np.zeros(close.shape[0])
"""

EXPANDING_MEAN = """
import numpy as np
PARAMS = {"n": [1]}
DEFAULTS = {"n": 1}
WARMUP = 200

def signal(open, high, low, close, volume, n):
    # causal, but compares with the mean of all the history it was given
    mean = np.cumsum(close) / np.arange(1, close.shape[0] + 1)
    return (close > mean).astype(np.float64)
"""


@pytest.mark.parametrize("source", [INERT_WHOLE_HISTORY_MAX, INERT_WHOLE_HISTORY_MEAN],
                         ids=["max", "mean"])
def test_a_leak_inert_on_the_real_future_is_caught_by_perturbation(write_strategy, prices,
                                                                   source):
    strategy = load_strategy(write_strategy("inert", source))
    for seed in range(5):
        report = check_lookahead(strategy, prices.arrays, seed=seed)
        assert not report.passed, report.summary()
        # the real future cannot show it: only a made-up one can
        assert "truncation" not in report.checks
        assert "perturbation:spike" in report.checks
        spike = next(v for v in report.violations if v.check == "perturbation:spike")
        assert spike.continuation == "spike" and spike.bar <= spike.cut
        assert "replaced by a spike" in report.summary()
        assert "every later bar ×10" in spike.describe()


@pytest.mark.parametrize("every", [50, 200])
def test_a_sparse_one_bar_peek_is_caught_for_every_seed(write_strategy, prices, every):
    strategy = load_strategy(write_strategy("sparse", SPARSE_PEEK))
    for seed in range(10):
        params = {"every": every, "phase": seed * every // 10}
        report = check_lookahead(strategy, prices.arrays, params, seed=seed)
        assert not report.passed, (seed, report.summary())
        # (the recursive check also sees that ``i % every`` counts from the window's start)
        assert all(v.bar == v.cut and v.bar % every == params["phase"]
                   for v in report.violations if v.check != "recursive")


def test_the_gate_is_the_full_check(write_strategy, eth_btc):
    path = write_strategy("sparse2", SPARSE_PEEK)
    for phase in (0, 77, 150):
        with pytest.raises(LookaheadError, match="perturbation"):
            backtest(path, eth_btc, {"every": 200, "phase": phase})


def test_sweep_checks_the_corners_of_the_grid(write_strategy, eth_btc):
    path = write_strategy("corner", CORNER_LEAK)
    with pytest.raises(LookaheadError, match="'fast': 3, 'slow': 1"):
        sweep(path, eth_btc)
    table = sweep(path, eth_btc, {"fast": [1, 2], "slow": [1, 2, 3]}).table
    assert len(table) == 6  # that corner left out: nothing to refuse


def test_grid_corners_skip_invalid_combinations_and_are_capped():
    strategy = load_strategy("ema_cross")
    combos, _ = strategy.combinations()
    assert grid_corners(strategy, combos) == [
        {"fast": 5, "slow": 20}, {"fast": 5, "slow": 200}, {"fast": 50, "slow": 200}]
    rsi = load_strategy("rsi_reversion")
    grid = {"period": [7, 21], "lower": [20, 35], "upper": [65, 80], "short": [0, 1]}
    corners = grid_corners(rsi, rsi.combinations(grid)[0])
    # four parameters vary: all-min, all-max and each alone at the other end, capped
    assert len(corners) == 8
    assert corners[:2] == [{"period": 7, "lower": 20, "upper": 65, "short": 0},
                           {"period": 21, "lower": 35, "upper": 80, "short": 1}]


@pytest.mark.parametrize("cuts", [12, 40])
def test_history_length_verdict_does_not_depend_on_the_seed(write_strategy, prices, cuts):
    # the check used to compare a few random bars: this strategy passed 7 seeds in 20
    strategy = load_strategy(write_strategy("expanding", EXPANDING_MEAN))
    verdicts = set()
    for seed in range(20):
        report = check_lookahead(strategy, prices.arrays, n_cuts=cuts, seed=seed)
        assert set(report.checks) == {"recursive"}, (seed, report.summary())
        verdicts.add(tuple(v for v in report.violations))
    assert len(verdicts) == 1


@pytest.mark.parametrize("name", available_strategies())
def test_every_shipped_strategy_passes_the_sweep_gate(name, sample_candles):
    from dataclasses import replace

    strategy = load_strategy(name)
    prices = market(sample_candles)
    extras = with_strategy_inputs(strategy, prices.arrays, prices.timeframe)
    prices = replace(prices, extras={k: extras[k] for k in strategy.inputs})
    for params in lookahead_samples(strategy, strategy.combinations()[0]):
        require_no_lookahead(strategy, prices, params)


@pytest.mark.parametrize("kind", CONTINUATIONS)
def test_continuations_are_valid_candles_after_an_unchanged_history(prices, kind):
    arrays = prices.arrays
    before = {key: value.copy() for key, value in arrays.items()}
    for cut in (0, 1000, len(arrays["close"]) - 2):
        made = _continuation(kind, arrays, cut, seed=3)
        for key, value in arrays.items():
            assert made[key].shape == value.shape
            np.testing.assert_array_equal(made[key][: cut + 1], value[: cut + 1])
        future = {key: made[key][cut + 1:] for key in ("open", "high", "low", "close",
                                                         "volume")}
        assert (future["low"] > 0).all() and (future["volume"] >= 0).all()
        assert (future["high"] >= np.maximum(future["open"], future["close"])).all()
        assert (future["low"] <= np.minimum(future["open"], future["close"])).all()
        assert not np.array_equal(future["close"], arrays["close"][cut + 1:])
    for key, value in arrays.items():  # the input is not altered
        np.testing.assert_array_equal(value, before[key])


def test_check_strategy_script_reports_the_new_checks(write_strategy, repo, python):
    inert = write_strategy("inert2", INERT_WHOLE_HISTORY_MAX)
    run = subprocess.run([python, repo / "scripts/check_strategy.py", str(inert), "--json"],
                         capture_output=True, text=True, cwd=repo)
    assert run.returncode == 1, run.stderr
    report = json.loads(run.stdout)
    assert report["passed"] is False and "perturbation:spike" in report["checks"]
    assert report["continuations"] == list(CONTINUATIONS)
    assert report["block"][1] - report["block"][0] == 199 and report["cuts"] == 240
    assert {v["check"] for v in report["violations"]} >= {"perturbation:spike"}


# ------------------------------------------------------------ long histories: windows

RECORDS_LENGTHS = """
import numpy as np
PARAMS = {"n": [1]}
DEFAULTS = {"n": 1}
LENGTHS = []

def signal(open, high, low, close, volume, n):
    LENGTHS.append(close.shape[0])
    return np.zeros(close.shape[0])
"""


@pytest.fixture(scope="module")
def long_arrays(prices):
    """The sample's bars repeated to 40,000: longer than a perturbation window."""
    reps = 40_000 // len(prices.close) + 1
    return {key: np.tile(value, reps)[:40_000] for key, value in prices.arrays.items()
            if key != "ts"}


def test_perturbed_runs_are_windows_of_a_long_history(write_strategy, long_arrays):
    """The check's cost must not grow with the history: apart from the full run, no run
    sees more than the window around its cuts (HISTORY_BARS before, FUTURE_BARS after)."""
    from mmats.lookahead import FUTURE_BARS, HISTORY_BARS

    strategy = load_strategy(write_strategy("lengths", RECORDS_LENGTHS))
    report = check_lookahead(strategy, long_arrays)
    lengths = strategy.module.LENGTHS
    assert report.passed and len(lengths) == report.runs
    assert lengths[0] == 40_000 and max(lengths[1:]) <= HISTORY_BARS + 200 + FUTURE_BARS


@pytest.mark.parametrize("source", [INERT_WHOLE_HISTORY_MAX, INERT_WHOLE_HISTORY_MEAN,
                                    SPARSE_PEEK, EXPANDING_MEAN],
                         ids=["max", "mean", "sparse", "expanding"])
def test_leaks_are_caught_on_a_long_history(write_strategy, long_arrays, source):
    strategy = load_strategy(write_strategy("leak", source))
    params = {"every": 200, "phase": 7} if source is SPARSE_PEEK else None
    for seed in range(3):
        report = check_lookahead(strategy, long_arrays, params, seed=seed)
        assert not report.passed, (seed, report.summary())


@pytest.mark.parametrize("name", available_strategies())
def test_shipped_strategies_pass_on_a_long_history(name, long_arrays):
    strategy = load_strategy(name)
    report = check_lookahead(strategy, with_strategy_inputs(strategy, long_arrays, "5m"))
    assert report.passed, report.summary()
