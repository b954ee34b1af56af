import numpy as np
import pandas as pd
import pytest

from mmats.backtest import sweep
from mmats.errors import ConfigError
from mmats.validate.walkforward import select, walk_forward, walk_forward_splits

HOUR = 3_600_000_000_000


def hours(n):
    return np.arange(n, dtype=np.int64) * HOUR


@pytest.mark.parametrize("anchored", [False, True])
@pytest.mark.parametrize("embargo", [0, 7])
def test_fraction_splits_tile_without_leakage(anchored, embargo):
    folds = walk_forward_splits(hours(1000), folds=4, train_fraction=0.7, anchored=anchored,
                                embargo=embargo)
    assert len(folds) == 4
    assert folds[-1].test_stop == 1000
    for fold in folds:
        assert fold.train_start < fold.train_stop
        assert fold.train_stop + embargo == fold.test_start  # the embargo gap, exactly
        if anchored:
            assert fold.train_start == 0
    for earlier, later in zip(folds, folds[1:], strict=False):
        assert earlier.test_stop == later.test_start  # contiguous, no overlap
    test_bars = folds[0].test_stop - folds[0].test_start
    train_bars = folds[0].train_stop - folds[0].train_start
    assert train_bars / (train_bars + test_bars) == pytest.approx(0.7, abs=0.01)
    if not anchored:
        assert {f.train_stop - f.train_start for f in folds} == {train_bars}


def test_explicit_lengths_in_bars_and_time():
    folds = walk_forward_splits(hours(24 * 100), train="30d", test="10d")
    assert [f.test_start for f in folds] == [720 + 240 * i for i in range(7)]
    assert all(f.test_stop - f.test_start == 240 for f in folds)
    assert all(f.train_stop - f.train_start == 720 for f in folds)
    folds = walk_forward_splits(hours(100), train=40, test=20, embargo=5)
    assert [(f.train_start, f.train_stop, f.test_start, f.test_stop) for f in folds] == [
        (0, 40, 45, 65), (20, 60, 65, 85)]


def test_split_errors():
    with pytest.raises(ConfigError, match="train_fraction"):
        walk_forward_splits(hours(100), train_fraction=1.2)
    with pytest.raises(ConfigError, match="both train= and test="):
        walk_forward_splits(hours(100), train=10)
    with pytest.raises(ConfigError, match="too few"):
        walk_forward_splits(hours(10), folds=20)


@pytest.fixture(scope="module")
def result(eth_btc):
    grid = {"fast": [5, 10, 20], "slow": [30, 60, 100]}
    return walk_forward("ema_cross", eth_btc, grid, folds=4, fee_bps=10, embargo=12)


def test_each_fold_picks_the_in_sample_best_of_its_training_window(result, eth_btc):
    grid = {"fast": [5, 10, 20], "slow": [30, 60, 100]}
    folds = walk_forward_splits(
        pd.to_datetime(eth_btc.ts).astype("int64").to_numpy(), folds=4, embargo=12)
    for fold, row in zip(folds, result.folds.itertuples(), strict=True):
        train = eth_btc.iloc[fold.train_start:fold.train_stop]
        table = sweep("ema_cross", train, grid, fee_bps=10).table
        best = table.loc[table["sharpe"].idxmax()]
        assert (row.fast, row.slow) == (best["fast"], best["slow"])
        assert row.is_sharpe == pytest.approx(best["sharpe"])
        assert row.test_start == eth_btc.ts.iloc[fold.test_start]


def test_stitched_run_equals_the_folds_with_carried_state(result):
    carried = np.concatenate([f.equity.to_numpy() for f in result.fold_results])
    np.testing.assert_allclose(carried, result.equity.to_numpy(), rtol=1e-12)
    positions = np.concatenate([f.position.to_numpy() for f in result.fold_results])
    np.testing.assert_allclose(positions, result.oos.position.to_numpy(), rtol=1e-12)
    fills = np.concatenate([f.fills for f in result.fold_results])
    np.testing.assert_array_equal(fills["bar"], result.oos.fills["bar"])
    # equity and the position carry over each boundary: a fold starts where the last ended
    for earlier, later in zip(result.fold_results, result.fold_results[1:], strict=False):
        assert later.cash == pytest.approx(earlier.equity.iloc[-1])
    assert result.metrics["final_equity"] == pytest.approx(
        result.fold_results[-1].metrics["final_equity"])
    assert len(result.equity) == result.folds["test_bars"].sum()


def test_result_summary(result):
    folds = result.folds
    assert list(folds["fold"]) == [0, 1, 2, 3]
    assert {"is_sharpe", "oos_sharpe", "oos_max_drawdown", "train_end"} <= set(folds.columns)
    assert np.isfinite(result.efficiency) or np.isnan(result.efficiency)
    benchmark = result.benchmark
    assert benchmark.index.equals(result.equity.index)
    assert benchmark.iloc[-1] == pytest.approx(
        10_000 * result.market.close[-1] / result.market.open[len(result.market)
                                                             - len(benchmark)])


def test_selection_best_robust_and_callable():
    table = pd.DataFrame({
        "a": [1, 2, 3, 4, 5, 6, 7],
        "sharpe": [0.1, 0.9, 0.8, 0.85, 0.1, 3.0, 0.1],  # a plateau at 2..4, a spike at 6
    })
    assert select(table, ["a"], "sharpe", "best") == 5
    assert select(table, ["a"], "sharpe", "robust") == 2  # median(0.9, 0.8, 0.85)
    assert select(table, ["a"], lambda t: -t["a"], "best") == 0
    nan_table = table.assign(sharpe=np.nan)
    assert select(nan_table, ["a"], "sharpe") == 0
    with pytest.raises(ConfigError, match="one score per combination"):
        select(table, ["a"], lambda t: [1.0], "best")


def test_bad_arguments(eth_btc):
    with pytest.raises(ConfigError, match="objective 'alpha'"):
        walk_forward("ema_cross", eth_btc, objective="alpha")
    with pytest.raises(ConfigError, match="selection"):
        walk_forward("ema_cross", eth_btc, selection="median")


def test_fold_trade_figures_are_the_folds_own():
    # the state carried fold to fold accumulates the trade counters (sizing reads them);
    # the table must show each fold's own trades, not the running total since fold 0
    from mmats.data import load

    result = walk_forward("ema_cross", load("nasdaq:GOOG:1d"), folds=5, fee_bps=10)
    folds = result.folds
    assert folds["oos_trades"].sum() == result.metrics["trades"]  # add up to the stitched
    for row, fold in zip(folds.itertuples(), result.fold_results, strict=True):
        pnl = fold.trades["pnl"]  # the trades closed within this fold's test window
        assert row.oos_trades == len(pnl) == fold.metrics["trades"]
        wins, losses = pnl[pnl > 0].sum(), -pnl[pnl <= 0].sum()
        if len(pnl) == 0:
            assert np.isnan(row.oos_win_rate) and np.isnan(row.oos_profit_factor)
            continue
        assert row.oos_win_rate == pytest.approx((pnl > 0).mean())
        expected = wins / losses if losses > 0 else np.inf
        assert row.oos_profit_factor == pytest.approx(expected, rel=1e-9)
        assert fold.metrics["fees_paid"] == pytest.approx(fold.fills["fee"].sum(), rel=1e-9)
    assert sum(f.metrics["fees_paid"] for f in result.fold_results) == pytest.approx(
        result.metrics["fees_paid"], rel=1e-9)


def test_step_moves_each_fold_forward():
    folds = walk_forward_splits(hours(100), train=40, test=20, step=25)
    assert [(f.train_start, f.train_stop, f.test_start, f.test_stop) for f in folds] == [
        (0, 40, 40, 60), (25, 65, 65, 85)]  # gaps of 5 bars between the test windows
    # "70 % train / 30 % test, re-optimised monthly" on 160 days of hourly bars
    monthly = walk_forward_splits(hours(24 * 160), train="70d", test="30d", step="30d")
    assert monthly == walk_forward_splits(hours(24 * 160), train="70d", test="30d")
    assert [(f.train_start, f.test_start) for f in monthly] == [(0, 1680), (720, 2400),
                                                                (1440, 3120)]
    with pytest.raises(ConfigError, match="shorter than the test window"):
        walk_forward_splits(hours(100), train=40, test=20, step=10)
    with pytest.raises(ConfigError, match="step= needs train= and test="):
        walk_forward_splits(hours(100), folds=3, step=10)


def test_gaps_between_test_windows_are_left_out_of_the_stitched_run(eth_btc):
    grid = {"fast": [5, 10], "slow": [30, 60]}
    result = walk_forward("ema_cross", eth_btc, grid, train=600, test=300, step=400,
                          fee_bps=10)
    folds = result.folds
    assert len(folds) > 2
    assert all(later.test_start - earlier.test_start == pd.Timedelta(minutes=5 * 400)
               for earlier, later in zip(folds.itertuples(), folds.iloc[1:].itertuples(),
                                         strict=False))
    assert len(result.equity) == folds["test_bars"].sum()
    carried = np.concatenate([f.equity.to_numpy() for f in result.fold_results])
    np.testing.assert_allclose(carried, result.equity.to_numpy(), rtol=1e-12)
    assert folds["oos_trades"].sum() == result.metrics["trades"]
    assert result.benchmark.index.equals(result.equity.index)
    assert result.settings["step"] == 400


def test_folds_optimised_apart_in_any_order_choose_what_the_walk_forward_chose(result,
                                                                              eth_btc):
    # optimise_fold depends only on its own training window, so a pool or a cluster can
    # map it over the folds in any order; the walk-forward then trades them in order
    from mmats.backtest import market, sleeve_config
    from mmats.strategy import load_strategy
    from mmats.validate.walkforward import optimise_fold

    grid = {"fast": [5, 10, 20], "slow": [30, 60, 100]}
    strategy, prices = load_strategy("ema_cross"), market(eth_btc)
    config = sleeve_config(None, {"fee_bps": 10})
    splits = walk_forward_splits(prices.ts_ns, folds=4, embargo=12)
    choices = [optimise_fold(strategy, prices, fold, grid, config=config)
               for fold in reversed(splits)][::-1]
    assert [c.fold for c in choices] == splits
    for choice, row, table in zip(choices, result.folds.itertuples(), result.in_sample,
                                  strict=True):
        assert choice.params == {"fast": row.fast, "slow": row.slow}
        pd.testing.assert_frame_equal(choice.table, table)
        assert choice.table.at[choice.chosen, "sharpe"] == row.is_sharpe
