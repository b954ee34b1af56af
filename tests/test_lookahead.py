import json
import subprocess

import pytest

from mmats.backtest import backtest, market, sweep
from mmats.errors import LookaheadError
from mmats.lookahead import check_lookahead
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


@pytest.mark.parametrize("name", available_strategies())
def test_every_shipped_strategy_passes(name, sample_candles):
    strategy = load_strategy(name)
    arrays = market(sample_candles).arrays
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
