"""The walk-forward with a search: each fold searches its own training window with the
sweep's kernel, the trials tried are counted over all folds, and the deflated Sharpe
ratio of a research run is deflated by every one of them, as its formula says."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from mmats.backtest import market, sweep
from mmats.errors import ConfigError
from mmats.validate.overfitting import EULER_GAMMA, deflated_sharpe_ratio
from mmats.validate.research import run_research, trials_tried
from mmats.validate.walkforward import walk_forward

GRID = {"fast": list(range(3, 40)), "slow": list(range(20, 200, 5))}  # 1282 valid


@pytest.fixture(scope="module")
def prices(eth_btc):
    return market(eth_btc.iloc[:3000])


def test_each_fold_searches_its_training_window(prices):
    wf = walk_forward("ema_cross", prices, GRID, folds=2, search="tpe", trials=30, seed=1,
                      check_lookahead_bias=False)
    assert wf.settings["search"] == "tpe" and wf.settings["trials"] == 30
    for fold, table in zip(wf.folds.itertuples(), wf.in_sample, strict=True):
        assert len(table) == 30
        start = prices.ts_ns.searchsorted(fold.train_start.value)
        stop = prices.ts_ns.searchsorted(fold.train_end.value) + 1
        whole = sweep("ema_cross", _bars(prices, start, stop), GRID,
                      check_lookahead_bias=False).table.set_index(["fast", "slow"])
        rows = table.set_index(["fast", "slow"])
        pd.testing.assert_frame_equal(rows, whole.loc[rows.index], check_exact=True)
        best = rows["sharpe"].idxmax()
        assert (fold.fast, fold.slow) == best  # the fold trades its search's best
    assert not wf.candidates.duplicated().any()
    assert wf.n_trials == len(wf.candidates) and 30 <= wf.n_trials <= 60
    for table in wf.in_sample:  # every row of every fold is among the candidates counted
        tried = set(map(tuple, wf.candidates[["fast", "slow"]].to_numpy()))
        assert set(map(tuple, table[["fast", "slow"]].to_numpy())) <= tried
    grid = walk_forward("ema_cross", prices, {"fast": [5, 10, 60], "slow": [50, 100]},
                        folds=2, check_lookahead_bias=False)
    assert grid.n_trials == 5 and grid.candidates is None  # fast 60 >= slow 50 is invalid


def test_walk_forward_refuses_bad_search_options_before_any_fold(prices):
    with pytest.raises(ConfigError, match="search method must be one of tpe, halving"):
        walk_forward("ema_cross", prices, GRID, search="grid", trials=10)
    with pytest.raises(ConfigError, match="trials must be a whole number >= 1, not None"):
        walk_forward("ema_cross", prices, GRID, search="tpe")


def _expected_dsr(returns: np.ndarray, n_trials: int, trial_sharpes: np.ndarray) -> float:
    """Bailey & López de Prado (2014), written out: PSR against E[max SR] of n trials."""
    sharpe = returns.mean() / returns.std(ddof=1)
    centred = returns - returns.mean()
    m2 = np.mean(centred ** 2)
    skew, kurt = np.mean(centred ** 3) / m2 ** 1.5, np.mean(centred ** 4) / m2 ** 2
    sr0 = math.sqrt(trial_sharpes.var(ddof=1)) * (
        (1 - EULER_GAMMA) * norm.ppf(1 - 1 / n_trials)
        + EULER_GAMMA * norm.ppf(1 - 1 / (n_trials * math.e)))
    z = (sharpe - sr0) * math.sqrt(returns.size - 1) / math.sqrt(
        1 - skew * sharpe + (kurt - 1) / 4 * sharpe ** 2)
    return float(norm.cdf(z))


def test_research_deflates_by_every_trial_halving_tried(prices):
    research = run_research("ema_cross", prices, GRID, folds=2, search="halving",
                            trials=60, mc_runs=20, seed=3)
    dsr = research.deflated_sharpe
    folds_tried = research.walk_forward.candidates
    whole_tried = research.sweep.candidates
    union = pd.concat([folds_tried, whole_tried]).drop_duplicates()
    assert dsr.n_trials == len(union) == trials_tried(research.walk_forward, research.sweep)
    # halving's early rounds count: far more trials than rows scored on the whole history
    assert len(research.sweep.table) < 60 <= dsr.n_trials
    tested = research.tested_returns.to_numpy()
    trials = research.trial_returns.to_numpy()
    sharpes = trials.mean(0) / trials.std(0, ddof=1)
    sharpes = sharpes[np.isfinite(sharpes)]
    assert dsr.dsr == pytest.approx(_expected_dsr(tested, dsr.n_trials, sharpes), abs=1e-12)
    # counting only the survivors would deflate less: the DSR moves as the formula says
    survivors = deflated_sharpe_ratio(tested, n_trials=len(sharpes), trial_sharpes=sharpes)
    assert survivors.dsr == pytest.approx(_expected_dsr(tested, len(sharpes), sharpes),
                                          abs=1e-12)
    assert survivors.sr0 < dsr.sr0 and survivors.dsr > dsr.dsr
    assert research.summary()["deflated_sharpe"]["trials"] == dsr.n_trials


def test_the_dsr_refuses_fewer_trials_than_the_sharpe_ratios_given():
    rng = np.random.default_rng(0)
    trials = rng.normal(0.0, 0.01, (200, 20))
    sharpes = trials.mean(0) / trials.std(0, ddof=1)
    with pytest.raises(ConfigError, match="n_trials=10 is fewer than the 20 trial Sharpe"):
        deflated_sharpe_ratio(trials[:, 0], n_trials=10, trial_sharpes=sharpes)
    more = deflated_sharpe_ratio(trials[:, 0], n_trials=500, trial_sharpes=sharpes)
    fewer = deflated_sharpe_ratio(trials[:, 0], trial_sharpes=sharpes)  # n_trials = 20
    assert fewer.n_trials == 20 and more.sr0 > fewer.sr0 and more.dsr < fewer.dsr


def _bars(prices, start: int, stop: int):
    from mmats.validate.walkforward import _window

    return _window(prices, start, stop)
