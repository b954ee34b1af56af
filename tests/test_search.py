"""Search beyond the grid: TPE and successive halving score candidates with the same fused
kernel as the sweep (equal rows), count every candidate tried, and repeat with a seed;
``sweep(..., search=...)`` runs them and returns the sweep's kind of table."""

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
    result = search("ema_cross", DATA, GRID, method="tpe", trials=72, batch=24, seed=3)
    assert result.n_trials == len(result.table) == len(result.candidates) == 72
    _same_rows(result.table, exhaustive)
    assert result.best().iloc[0]["sharpe"] == result.table["sharpe"].max()
    assert result.best().iloc[0]["sharpe"] <= exhaustive["sharpe"].max()
    # the history is the best score so far after each batch: it never goes down
    assert list(result.history["trials"]) == sorted(result.history["trials"])
    assert np.all(np.diff(result.history["best"].to_numpy()) >= 0)
    again = search("ema_cross", DATA, GRID, method="tpe", trials=72, batch=24, seed=3,
                   check_lookahead_bias=False)
    pd.testing.assert_frame_equal(again.table, result.table)


def test_tpe_learns_more_than_chance(exhaustive):
    """Over the same number of candidates, TPE's best is at least as good as the median
    best of random draws from the grid (a search that learns nothing would not be)."""
    result = search("ema_cross", DATA, GRID, trials=100, batch=20, seed=1,
                    check_lookahead_bias=False)
    valid = exhaustive["sharpe"].to_numpy()
    rng = np.random.default_rng(0)
    random_best = [np.nanmax(rng.choice(valid, 100, replace=False)) for _ in range(200)]
    assert result.best().iloc[0]["sharpe"] >= np.median(random_best)


def test_halving_counts_every_candidate_it_tried(exhaustive):
    result = search("ema_cross", DATA, GRID, method="halving", trials=243, eta=3, seed=5,
                    min_bars=300, check_lookahead_bias=False)
    assert result.n_trials == len(result.candidates) == 243
    # only the survivors ran on the whole history, at least eta of them
    assert 3 <= len(result.table) < 243
    _same_rows(result.table, exhaustive)
    assert set(result.table.set_index(["fast", "slow"]).index) <= \
        set(result.candidates.set_index(["fast", "slow"]).index)
    assert len(result.history) >= 2


def test_halving_keeps_the_best_scores_and_drops_nan_ones_first():
    from mmats.search import _keep_best

    candidates = [{"k": k} for k in range(6)]
    scores = np.array([np.nan, 0.5, np.nan, 2.0, -1.0, 0.5])
    assert _keep_best(candidates, scores, 3) == [{"k": 3}, {"k": 1}]
    assert _keep_best(candidates, scores, 2) == [{"k": 3}, {"k": 1}, {"k": 5}]
    assert _keep_best(candidates[:2], np.array([np.nan, np.nan]), 3) == [{"k": 0}]


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
    ({"seed": -1}, "seed must be a whole number >= 0"),
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
    assert result.best().iloc[0]["fast"] == 10
    assert list(result.best(n=3)["fast"]) == [10, 15, 5]  # NaN last, as the sweep ranks
    result.table["sharpe"] = np.nan
    with pytest.raises(ConfigError, match="none of the 3 candidates scored has a finite"):
        result.best()


# --------------------------------------------------------------- sweep(..., search=...)


def test_sweep_with_a_search_returns_the_sweeps_table_and_the_trials_tried(exhaustive):
    found = sweep("ema_cross", DATA, GRID, search="tpe", trials=40, seed=2,
                  check_lookahead_bias=False, period_returns="1d")
    direct = search("ema_cross", DATA, GRID, method="tpe", trials=40, seed=2,
                    check_lookahead_bias=False, period_returns="1d")
    whole = sweep("ema_cross", DATA, GRID, check_lookahead_bias=False, period_returns="1d")
    assert list(found.table.columns) == list(whole.table.columns)
    assert found.n_trials == 40 and whole.n_trials == len(whole.table) == len(exhaustive)
    pd.testing.assert_frame_equal(found.table, direct.table)
    _same_rows(found.table, exhaustive)
    # each row's per-period returns are the exhaustive sweep's for that combination
    rows = whole.table.reset_index().set_index(["fast", "slow"])["index"]
    for k, (fast, slow) in enumerate(found.table[["fast", "slow"]].itertuples(index=False)):
        pd.testing.assert_series_equal(found.returns[k], whole.returns[rows[(fast, slow)]],
                                       check_names=False)


def test_a_search_over_several_symbols_labels_rows_and_adds_their_trials():
    found = sweep("ema_cross", {"ETH": DATA, "LTC": "bittrex:LTC/BTC:5m"}, GRID,
                  search="halving", trials=30, seed=4, check_lookahead_bias=False)
    assert found.n_trials == 60 and set(found.table["symbol"]) == {"ETH", "LTC"}
    alone = sweep("ema_cross", "bittrex:LTC/BTC:5m", GRID, search="halving", trials=30,
                  seed=4, check_lookahead_bias=False)
    ltc = found.table[found.table["symbol"] == "LTC"].drop(columns="symbol")
    pd.testing.assert_frame_equal(ltc.reset_index(drop=True), alone.table)


def test_without_search_the_sweep_is_unchanged_and_refuses_search_options():
    small = {"fast": [5, 10], "slow": [50, 60]}
    assert sweep("ema_cross", DATA, small, check_lookahead_bias=False).n_trials == 4
    for options, message in (({"trials": 10}, "trials= and seed= go with search="),
                             ({"search": "grid", "trials": 5}, "search method must be"),
                             ({"search": "tpe"}, "trials must be a whole number >= 1"),
                             ({"search": "tpe", "trials": 5, "cluster": "local:1"},
                              "drop cluster=")):
        with pytest.raises(ConfigError, match=message):
            sweep("ema_cross", DATA, small, **options)
