"""result.plot() and sweep(...).plot(): what the figures hold, the PNGs they write, and the
scripts' --plot / --heatmap options (run in a subprocess, as a user runs them)."""

import subprocess

import matplotlib
import numpy as np
import pandas as pd
import pytest

from mmats.backtest import SweepResult, backtest, sweep
from mmats.errors import ConfigError
from mmats.types import METRIC_NAMES

matplotlib.use("Agg")

ETH = "mmats/data/sample/bittrex/ETH_BTC_5m.parquet"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def result(eth_btc):
    return backtest("ema_cross", eth_btc, {"fast": 10, "slow": 50}, fee_bps=10, start=100)


@pytest.fixture(scope="module")
def grid_sweep(eth_btc):
    return sweep("ema_cross", eth_btc, {"fast": [5, 10, 20], "slow": [10, 50, 100, 150]})


def assert_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > 5_000
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]  # no temp left


def offsets(ax):
    """Points of every scatter (marker collection) in ``ax``, by legend label."""
    return {c.get_label(): c.get_offsets() for c in ax.collections if len(c.get_offsets())}


def test_backtest_figure_has_price_trades_equity_and_drawdown(result):
    figure = result.plot()
    price, equity, drawdown = figure.axes[:3]
    markers = offsets(price)
    entries = sum(len(markers.get(k, [])) for k in ("long entry", "short entry"))
    assert entries == len(result.trades) > 0
    assert len(markers["exit"]) == np.count_nonzero(result.trades["exit_bar"] >= 0)
    # each entry marker sits at its trade's entry price
    longs = result.trades[result.trades["direction"] == 1]
    np.testing.assert_allclose(markers["long entry"][:, 1], longs["entry_price"])
    labels = [line.get_label() for line in equity.lines]
    assert labels == ["strategy", "buy and hold"]
    strategy, hold = (line.get_ydata() for line in equity.lines)
    assert strategy[0] == pytest.approx(result.equity.iloc[0])
    assert strategy[-1] == pytest.approx(result.equity.iloc[-1])
    assert hold[0] == pytest.approx(result.cash)  # buy and hold starts with the run's cash
    close = result.market.close[-len(result.equity):]
    assert hold[-1] == pytest.approx(result.cash * close[-1] / close[0])
    assert len(drawdown.collections) == 1  # the filled drawdown
    assert price.get_title().startswith("ema_cross (fast=10, slow=50)")


def test_backtest_plot_writes_a_png(result, tmp_path):
    path = tmp_path / "nested" / "ema.png"
    figure = result.plot(path=path)
    assert figure is not None
    assert_png(path)


def test_a_bad_extension_is_refused_and_nothing_is_written(result, tmp_path):
    with pytest.raises(ConfigError, match=r"\.png"):
        result.plot(path=tmp_path / "ema.jpg")
    assert list(tmp_path.iterdir()) == []


def test_heatmap_of_two_parameters_is_the_sweep_table(grid_sweep, tmp_path):
    figure = grid_sweep.plot(path=tmp_path / "grid.png")
    image = figure.axes[0].images[0]
    values = np.ma.filled(image.get_array().astype(float), np.nan)
    table = grid_sweep.table
    expected = table.pivot(index="fast", columns="slow", values="sharpe")
    assert values.shape == (table["fast"].nunique(), table["slow"].nunique()) == (3, 4)
    np.testing.assert_array_equal(values, expected.to_numpy())
    assert np.isnan(values[2, 0])  # fast 20, slow 10: not a valid combination
    assert [t.get_text() for t in figure.axes[0].get_xticklabels()] == ["10", "50", "100",
                                                                        "150"]
    assert_png(tmp_path / "grid.png")


def test_heatmap_of_another_metric(grid_sweep):
    figure = grid_sweep.plot(metric="max_drawdown")
    values = np.ma.filled(figure.axes[0].images[0].get_array().astype(float), np.nan)
    expected = grid_sweep.table.pivot(index="fast", columns="slow", values="max_drawdown")
    np.testing.assert_array_equal(values, expected.to_numpy())
    assert "max_drawdown" in figure.axes[0].get_title()


def test_one_parameter_draws_a_line(eth_btc):
    result = sweep("ema_cross", eth_btc, {"fast": [5, 10, 20], "slow": [100]})
    # two parameters but one value of slow: still a heatmap; a one-column table is a line
    one = SweepResult("ema_cross", result.table.drop(columns="slow"), 0, 1.0, 1)
    figure = one.plot()
    (line,) = figure.axes[0].lines
    np.testing.assert_array_equal(line.get_xdata(), [5, 10, 20])
    np.testing.assert_array_equal(line.get_ydata(), result.table["sharpe"].to_numpy())


def synthetic_sweep():
    """Three parameters and two symbols, with known metric values."""
    rng = np.random.default_rng(7)
    rows = [{"symbol": s, "a": a, "b": b, "c": c}
            for s in ("X", "Y") for a in (1, 2) for b in (10, 20, 30) for c in (0.1, 0.2)]
    table = pd.DataFrame(rows)
    for name in METRIC_NAMES:
        table[name] = rng.normal(size=len(table))
    return SweepResult("synthetic", table, 0, 1.0, 1)


@pytest.mark.parametrize("aggregate", ["max", "mean", "min", "median"])
def test_more_than_two_parameters_fold_the_rest(aggregate):
    result = synthetic_sweep()
    figure = result.plot("c", "b", aggregate=aggregate)
    values = figure.axes[0].images[0].get_array().astype(float)
    expected = result.table.groupby(["b", "c"])["sharpe"].agg(aggregate).unstack("c")
    assert values.shape == (3, 2)
    np.testing.assert_allclose(values, expected.to_numpy())
    assert f"{aggregate} over a, symbol" in figure.axes[0].get_title()


def test_best_folds_by_the_ranking_of_best():
    result = synthetic_sweep()
    # higher is better for sharpe, lower for volatility (as SweepResult.best ranks)
    sharpe = result.plot(metric="sharpe").axes[0].images[0].get_array()
    volatility = result.plot(metric="volatility").axes[0].images[0].get_array()
    table = result.table
    np.testing.assert_allclose(sharpe, table.groupby(["a", "b"])["sharpe"].max().unstack())
    np.testing.assert_allclose(volatility,
                               table.groupby(["a", "b"])["volatility"].min().unstack())


def test_bad_sweep_plot_arguments_are_named():
    result = synthetic_sweep()
    with pytest.raises(ConfigError, match="'d' is not a parameter"):
        result.plot("d")
    with pytest.raises(ConfigError, match="'nope' is not a metric"):
        result.plot(metric="nope")
    with pytest.raises(ConfigError, match="aggregate 'sum'"):
        result.plot(aggregate="sum")
    with pytest.raises(ConfigError, match="both 'a'"):
        result.plot("a", "a")


def run(repo, python, *args):
    return subprocess.run([python, *map(str, args)], capture_output=True, text=True, cwd=repo,
                          timeout=300)


def test_backtest_script_plot(repo, python, tmp_path):
    path = tmp_path / "bt.png"
    done = run(repo, python, "scripts/backtest.py", "--data", ETH, "--params",
               "fast=10,slow=50", "--plot", path, "--json")
    assert done.returncode == 0, done.stderr
    assert_png(path)


def test_sweep_script_heatmap(repo, python, tmp_path):
    path = tmp_path / "grid.png"
    done = run(repo, python, "scripts/sweep.py", "--data", ETH, "--grid",
               "fast=5|10,slow=50|100", "--objective", "sortino", "--heatmap", path, "--json")
    assert done.returncode == 0, done.stderr
    assert_png(path)


@pytest.mark.parametrize("script, option", [("backtest", "--plot"), ("sweep", "--heatmap")])
@pytest.mark.parametrize("name, message", [
    ("picture.jpg", "give a file name ending in .png"),
    ("missing/picture.png", "is not a folder"),
    ("a_file/picture.png", "is not a folder"),
])
def test_scripts_refuse_a_bad_picture_path(repo, python, tmp_path, script, option, name,
                                           message):
    (tmp_path / "a_file").write_text("not a folder")
    done = run(repo, python, f"scripts/{script}.py", "--data", ETH, option, tmp_path / name)
    assert done.returncode == 2
    assert done.stderr.startswith(f"error: {option} ") and message in done.stderr
    assert "Traceback" not in done.stderr
