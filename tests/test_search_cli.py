"""``--search`` on the command line, run as a user runs it (subprocesses): ``scripts/sweep.py``
and ``mmats sweep`` give the library's table and the trials tried, ``scripts/walkforward.py``
searches each fold, and a bad value is one plain error line with exit 2.

The commands are started together and awaited once (module fixture): each is a Python
start-up, and together they take the time of the slowest rather than of all."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
MMATS = str(Path(sys.executable).parent / "mmats")
ETH = "mmats/data/sample/bittrex/ETH_BTC_5m.parquet"
GRID = "fast=3:40:1,slow=20:200:5"

BAD = {  # run as a user runs them: arguments -> the one error line expected on stderr
    "sweep-method": (["scripts/sweep.py", "--search", "random"],
                     "error: --search 'random' is not a search method: give tpe or halving"),
    "sweep-trials-word": ([MMATS, "sweep", "--search", "tpe", "--trials", "ten"],
                          "error: --trials 'ten' is not a whole number >= 1"),
    "walkforward-method": (["scripts/walkforward.py", "--search", "grid", "--reports",
                            "{tmp}/wf-bad"],
                           "error: --search 'grid' is not a search method"),
}
MORE_BAD = [  # the same checks, called in this process (cheaper than a process each)
    ("sweep", ["--search", "tpe", "--trials", "0"], "--trials '0' is not a whole number >= 1"),
    ("sweep", ["--trials", "50"], "--trials go with --search tpe|halving"),
    ("sweep", ["--seed", "4"], "--seed go with --search tpe|halving"),
    ("sweep", ["--search", "halving", "--seed", "-3"], "--seed '-3' is not a whole number"),
    ("sweep", ["--search", "tpe", "--cluster", "local:1"], "drop cluster= (--cluster)"),
    ("walkforward", ["--trials", "5"], "--trials go with --search tpe|halving"),
    ("walkforward", ["--search", "tpe", "--trials", "-1"], "--trials '-1' is not a whole"),
]

GOOD = {
    "sweep-json": ["scripts/sweep.py", "--data", ETH, "--grid", GRID, "--search", "tpe",
                   "--trials", "30", "--seed", "2", "--json"],
    "mmats-text": [MMATS, "sweep", "--data", ETH, "--grid", GRID, "--search", "halving",
                   "--trials", "27", "--top", "3"],
    "walkforward": ["scripts/walkforward.py", "--data", ETH, "--grid", GRID, "--search",
                    "halving", "--trials", "30", "--folds", "2", "--mc-runs", "20",
                    "--no-tearsheet", "--no-pdf", "--no-cache", "--json", "--reports",
                    "{tmp}/wf"],
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("search_cli")
    commands = {name: args for name, (args, _) in BAD.items()} | GOOD
    started = {}
    for name, args in commands.items():
        argv = [a.format(tmp=tmp) for a in args]
        if argv[0].startswith("scripts/"):
            argv = [PYTHON, *argv]
        started[name] = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, text=True,
                                         env={**os.environ, "NUMBA_NUM_THREADS": "1"})
    done = {}
    for name, process in started.items():
        out, err = process.communicate(timeout=600)
        done[name] = subprocess.CompletedProcess(process.args, process.returncode, out, err)
    return done


@pytest.mark.parametrize("name", sorted(BAD))
def test_a_bad_search_option_is_one_plain_line(runs, name):
    done, expected = runs[name], BAD[name][1]
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert expected in done.stderr


@pytest.mark.parametrize(("command", "args", "expected"), MORE_BAD)
def test_more_bad_search_options(command, args, expected, capsys, tmp_path):
    from importlib import import_module

    main = import_module(f"mmats.cli.{command}").main
    if command == "walkforward":
        args = [*args, "--reports", str(tmp_path / "reports")]
    assert main(args) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert captured.err.startswith("error: ") and expected in captured.err


def test_sweep_script_searches_as_the_library_does(runs, eth_btc):
    from mmats.backtest import sweep

    done = runs["sweep-json"]
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["search"]["method"] == "tpe" and out["search"]["seed"] == 2
    assert out["search"]["n_trials"] == 30 == len(out["rows"])
    library = sweep("ema_cross", eth_btc, {"fast": list(range(3, 41)),
                                           "slow": list(range(20, 201, 5))},
                    search="tpe", trials=30, seed=2, check_lookahead_bias=False)
    assert [(r["fast"], r["slow"]) for r in out["rows"]] == \
        list(map(tuple, library.table[["fast", "slow"]].to_numpy()))
    assert [r["sharpe"] for r in out["rows"]] == pytest.approx(
        list(library.table["sharpe"]), rel=1e-12, nan_ok=True)


def test_mmats_sweep_says_how_many_it_tried(runs):
    done = runs["mmats-text"]
    assert done.returncode == 0, done.stderr
    assert "halving search (seed 0): 27 combinations tried, " in done.stdout
    assert "scored on the whole history" in done.stdout


def test_walkforward_script_searches_each_fold_and_counts_the_trials(runs):
    done = runs["walkforward"]
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert len(out["folds"]) == 2
    # 30 halving candidates per fold and on the whole history, early rounds included
    assert out["deflated_sharpe"]["trials"] >= 30 > out["combinations"]
