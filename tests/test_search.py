"""Search beyond the grid: TPE and successive halving score candidates with the same fused
kernel as the sweep (equal rows), count every candidate tried, and repeat with a seed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mmats import sweep
from mmats.errors import ConfigError
from mmats.search import search

DATA = "bittrex:ETH/BTC:5m"
GRID = {"fast": list(range(3, 40)), "slow": list(range(20, 200, 5))}  # 37 × 36 (valid: fast < slow)


@pytest.fixture(scope="module")
def exhaustive():
    table = sweep("ema_cross", DATA, GRID, check_lookahead_bias=False).table
    return table.set_index(["fast", "slow"])


def _same_rows(found: pd.DataFrame, exhaustive: pd.DataFrame) -> None:
    rows = found.set_index(["fast", "slow"])
    assert rows.index.is_unique
    expected = exhaustive.loc[rows.index]
    pd.testing.assert_frame_equal(rows, expected, check_exact=True)


def test_tpe_scores_each_candidate_with_the_sweeps_kernel(exhaustive):
    result = search("ema_cross", DATA, GRID, method="tpe", trials=120, batch=24, seed=3)
    assert result.n_trials == len(result.table) == 120
    _same_rows(result.table, exhaustive)
    assert result.best["sharpe"] == result.table["sharpe"].max()
    assert result.best["sharpe"] <= exhaustive["sharpe"].max()
    # the history is the best score so far after each batch: it never goes down
    assert list(result.history["trials"]) == sorted(result.history["trials"])
    assert np.all(np.diff(result.history["best"].to_numpy()) >= 0)
    again = search("ema_cross", DATA, GRID, method="tpe", trials=120, batch=24, seed=3,
                   check_lookahead_bias=False)
    pd.testing.assert_frame_equal(again.table, result.table)


def test_tpe_learns_more_than_chance(exhaustive):
    """Over the same number of candidates, TPE's best is at least as good as the median
    best of random draws from the grid (a search that learns nothing would not be)."""
    result = search("ema_cross", DATA, GRID, trials=150, batch=25, seed=1,
                    check_lookahead_bias=False)
    valid = exhaustive["sharpe"].to_numpy()
    rng = np.random.default_rng(0)
    random_best = [np.nanmax(rng.choice(valid, 150, replace=False)) for _ in range(200)]
    assert result.best["sharpe"] >= np.median(random_best)


def test_halving_counts_every_candidate_it_tried(exhaustive):
    result = search("ema_cross", DATA, GRID, method="halving", trials=243, eta=3, seed=5,
                    min_bars=300, check_lookahead_bias=False)
    assert result.n_trials == 243
    assert 1 <= len(result.table) < 243  # only the survivors ran on the whole history
    _same_rows(result.table, exhaustive)
    assert len(result.history) >= 2


def test_a_grid_no_larger_than_the_trials_is_swept_whole(exhaustive):
    small = {"fast": [5, 10, 15], "slow": [10, 20, 60]}
    result = search("ema_cross", DATA, small, trials=50, check_lookahead_bias=False)
    swept = sweep("ema_cross", DATA, small, check_lookahead_bias=False)
    assert result.n_trials == len(swept.table) == len(result.table)
    assert result.skipped == swept.skipped
    pd.testing.assert_frame_equal(result.table.set_index(["fast", "slow"]).sort_index(),
                                  swept.table.set_index(["fast", "slow"]).sort_index())


@pytest.mark.parametrize(("options", "message"), [
    ({"method": "random"}, "search method must be one of tpe, halving"),
    ({"metric": "profit"}, "metric 'profit' is not one of"),
    ({"trials": 0}, "trials must be a whole number >= 1"),
    ({"eta": 1}, "eta must be a whole number >= 2"),
    ({"grid": {"fast": [5], "speed": [1]}}, "grid names 'speed' are not parameters"),
])
def test_bad_search_options_are_named(options, message):
    with pytest.raises(ConfigError) as error:
        search("ema_cross", DATA, **options)
    assert message in str(error.value)


def test_best_passes_over_nan_scores_and_says_when_all_are_nan():
    from mmats.search import SearchResult

    table = pd.DataFrame({"fast": [5, 10, 15], "slow": [50, 60, 70],
                          "sharpe": [np.nan, 1.5, 0.5]})
    result = SearchResult("ema_cross", table, 0, 0.0, 0, None, metric="sharpe")
    assert result.best["fast"] == 10
    result.table["sharpe"] = np.nan
    with pytest.raises(ConfigError, match="none of the 3 candidates scored has a finite"):
        _ = result.best
