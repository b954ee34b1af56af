"""The scripts' command-line contract, run as a user runs them: in a subprocess."""

import json
import subprocess

import pytest

from mmats.cli import parse_grid, parse_params
from mmats.errors import ConfigError

ETH = "mmats/data/sample/bittrex/ETH_BTC_5m.parquet"
METRIC_KEYS = {"final_equity", "total_return", "cagr", "sharpe", "sortino", "max_drawdown",
               "win_rate", "profit_factor", "trades"}


def run(repo, python, *args):
    return subprocess.run([python, *map(str, args)], capture_output=True, text=True, cwd=repo,
                          timeout=300)


@pytest.mark.parametrize("script", ["backtest", "sweep", "check_strategy", "import_data",
                                    "check_data", "walkforward", "montecarlo", "live",
                                    "journal", "fetch_data", "keys"])
def test_help(repo, python, script):
    done = run(repo, python, f"scripts/{script}.py", "--help")
    assert done.returncode == 0 and "usage" in done.stdout


def test_backtest_json_matches_the_library(repo, python, eth_btc):
    from mmats.backtest import backtest

    done = run(repo, python, "scripts/backtest.py", "--strategy", "ema_cross", "--data", ETH,
               "--params", "fast=10,slow=50", "--fee-bps", "10", "--slippage-bps", "0",
               "--cash", "10000", "--json")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    out = json.loads(done.stdout)
    assert METRIC_KEYS <= set(out)
    expected = backtest("ema_cross", eth_btc, {"fast": 10, "slow": 50}, fee_bps=10).metrics
    for key in METRIC_KEYS:
        assert out[key] == pytest.approx(expected[key], rel=1e-12)


def test_backtest_from_store_spec_and_csv_outputs(repo, python, tmp_path):
    trades = tmp_path / "trades.csv"
    done = run(repo, python, "scripts/backtest.py", "--strategy", "donchian_breakout",
               "--data", "nasdaq:GOOG:1d", "--fee-bps", "5", "--trades-csv", trades, "--json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["timeframe"] == "1d" and out["calendar"] == "stocks"
    assert len(trades.read_text().splitlines()) == out["trades"] + 1


def test_sweep_json_rows_and_timing(repo, python):
    done = run(repo, python, "scripts/sweep.py", "--strategy", "ema_cross", "--data", ETH,
               "--grid", "fast=5:50:5,slow=20:200:10", "--json")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # no progress bar under --json
    out = json.loads(done.stdout)
    # 10 fast × 19 slow values, minus the 16 with fast >= slow
    assert len(out["rows"]) == 174 and out["skipped"] == 16
    assert METRIC_KEYS | {"fast", "slow"} <= set(out["rows"][0])
    assert out["timing"]["seconds"] > 0 and out["timing"]["bar_combinations_per_s"] > 0


def test_sweep_table_and_several_symbols(repo, python):
    done = run(repo, python, "scripts/sweep.py", "--strategy", "rsi_reversion",
               "--data", ETH, "--data", "bittrex:LTC/BTC:5m", "--grid", "period=7|14",
               "--objective", "final_equity")
    assert done.returncode == 0, done.stderr
    assert "symbol" in done.stdout and "4 combinations" in done.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--params", "fats=3"], "no parameter 'fats'"),
        (["--params", "fast=ten"], "'ten' is not a number"),
        (["--data", "missing.parquet"], "missing.parquet"),
        (["--data", "nowhere:BTC/USD:5m"], "nowhere"),
        (["--strategy", "nope"], "no strategy named 'nope'"),
        (["--fee-bps", "-3"], "fee_bps"),
    ],
)
def test_backtest_errors_are_named(repo, python, args, message):
    done = run(repo, python, "scripts/backtest.py", "--data", ETH, *args)
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_param_and_grid_parsing():
    assert parse_params("fast=10, slow=50") == {"fast": 10, "slow": 50}
    assert parse_params("k=1.5") == {"k": 1.5}
    assert parse_grid("fast=5:20:5") == {"fast": [5, 10, 15, 20]}
    assert parse_grid("x=0.1:0.3:0.1,y=1|2") == {"x": [0.1, 0.2, 0.3], "y": [1, 2]}
    with pytest.raises(ConfigError, match="start:stop:step"):
        parse_grid("fast=1:5")
    with pytest.raises(ConfigError, match="name=value"):
        parse_params("fast")


WALKFORWARD_QUICK = ["scripts/walkforward.py", "--json", "--data", "nasdaq:GOOG:1d",
                     "--grid", "fast=5|10|20,slow=30|60", "--mc-runs", "50"]


@pytest.mark.slow
def test_walkforward_mc_reshuffle_reorders_the_out_of_sample_trades(repo, python, tmp_path):
    done = run(repo, python, *WALKFORWARD_QUICK, "--mc-method", "reshuffle",
               "--reports", tmp_path)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    spread = out["monte_carlo"]
    assert spread["method"] == "reshuffle" and spread["runs"] == 50
    assert spread["steps"] == out["oos_metrics"]["trades"] > 0  # one step per trade
    # the trades' product does not depend on their order: every run ends alike
    finals = list(spread["percentiles"]["final_equity"].values())
    assert finals == pytest.approx([finals[0]] * 5, rel=1e-9)


@pytest.mark.slow
def test_walkforward_windows_from_the_command_line(repo, python, tmp_path):
    done = run(repo, python, *WALKFORWARD_QUICK, "--train", "750", "--test", "250",
               "--reports", tmp_path)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["windows"] == {"folds": 5, "train": 750, "test": 250, "step": None,
                              "anchored": False, "embargo": 0}
    assert [fold["test_bars"] for fold in out["folds"]] == [250] * 5
    assert [fold["train_bars"] for fold in out["folds"]] == [750] * 5
    # by time, re-optimised every 500 days: test windows of 250 days with gaps between
    done = run(repo, python, *WALKFORWARD_QUICK, "--train", "1000d", "--test", "250d",
               "--step", "500d", "--reports", tmp_path)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    from mmats.data import load
    from mmats.validate.walkforward import walk_forward_splits

    ts = load("nasdaq:GOOG:1d").ts
    splits = walk_forward_splits(ts.astype("int64").to_numpy(), train="1000d", test="250d",
                                 step="500d")
    assert len(splits) == len(out["folds"]) >= 3
    for fold, split in zip(out["folds"], splits, strict=True):
        assert fold["test_start"] == ts.iloc[split.test_start].isoformat()
        assert fold["test_bars"] == split.test_stop - split.test_start
    assert splits[1].test_start > splits[0].test_stop  # a gap between the test windows
    assert out["oos_metrics"]["trades"] == sum(f["oos_trades"] for f in out["folds"])


@pytest.mark.parametrize(
    "args, message",
    [
        (["--train", "180d"], "--train and --test go together"),
        (["--train", "half", "--test", "30d"], "--train 'half' is not a length"),
        (["--train", "500", "--test", "0"], "--test '0' is not a length"),
        (["--folds", "4", "--train", "500", "--test", "100"], "either --folds"),
        (["--train-fraction", "0.6", "--train", "500", "--test", "100"], "either --folds"),
        (["--step", "30d"], "--step needs --train and --test"),
        (["--train", "500", "--test", "100", "--step", "50"], "step 50 (50 bars) is shorter"),
        (["--train", "5000", "--test", "100"], "leave no test window"),
    ],
)
def test_walkforward_window_errors_are_named(repo, python, tmp_path, args, message):
    done = run(repo, python, *WALKFORWARD_QUICK, *args, "--reports", tmp_path)
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr
