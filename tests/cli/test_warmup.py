"""`mmats warmup`: run in fresh processes on empty caches, it leaves numba's cache holding
what a later process's first backtest, sweep and live tick need (they compile nothing);
two at once and a second run are safe; a cache folder it cannot write is one plain line.

Nothing here is timed: what is checked is which kernels numba compiles (its
``numba:compile`` events) and loads from the cache (its dispatchers' cache hits)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

MMATS = str(Path(sys.executable).parent / "mmats")  # the installed console script

# A fresh process's first backtest of the whole sample (warmup ran on its first bars), then
# (unless its argument is "backtest") a sweep of another grid and replays through the live
# runner, recording what numba compiles.
FIRST_RUNS = """
import json
import sys
from numba.core import event

import mmats
from mmats.cli.warmup import _dispatchers, _replay

with event.install_recorder("numba:compile") as recorder:
    candles = mmats.load("bittrex:ETH/BTC:5m")
    result = mmats.backtest("ema_cross", candles, {"fast": 12, "slow": 40}, fee_bps=10)
    if sys.argv[1:] != ["backtest"]:
        mmats.sweep("ema_cross", candles, {"fast": [5, 15, 20], "slow": [60, 90]})
    for mode in ("paper", "operator") if sys.argv[1:] != ["backtest"] else ():
        _replay("ema_cross", candles.iloc[:300].reset_index(drop=True), mode)
compiled = sorted({e.data["dispatcher"].py_func.__qualname__ for _, e in recorder.buffer})
hits = sum(sum(d.stats.cache_hits.values()) for d in set(_dispatchers()))
print(json.dumps({"compiled": compiled, "cache_hits": hits, "bars": len(result.equity)}))
"""


def caches(tmp_path):
    return {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba-cache"),
            "MMATS_CACHE_DIR": str(tmp_path / "mmats-cache")}


def warmup(*args, env, cwd):
    return subprocess.Popen([MMATS, "warmup", "--strategy", "ema_cross", *args], env=env,
                            cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def finished(process):
    stdout, stderr = process.communicate(timeout=900)
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr, stderr
    return stdout


def test_warmup_fills_the_cache_a_fresh_process_then_uses(tmp_path):
    env = caches(tmp_path)
    # two at once on empty caches: one compiles, the other waits and loads
    first, second = (warmup("--json", env=env, cwd=tmp_path) for _ in range(2))
    reports = [json.loads(finished(first)), json.loads(finished(second))]
    assert sorted(report["compiled"] > 0 for report in reports) == [False, True]
    compiler = max(reports, key=lambda report: report["compiled"])
    assert compiler["numba_cache"] == str(tmp_path / "numba-cache")
    assert [step["step"] for step in compiler["steps"]] == [
        "backtest ema_cross", "sweep ema_cross", "live tick ema_cross (paper)",
        "live tick ema_cross (operator)"]
    assert all(step["compiled"] for step in compiler["steps"][:3])
    indexes = list((tmp_path / "numba-cache").rglob("*.nbi"))
    assert any(path.name.startswith("sim.") for path in indexes), indexes
    assert list((tmp_path / "numba-cache").rglob("*.nbc"))
    assert list((tmp_path / "mmats-cache" / "kernels").rglob("sweep_*.py"))

    done = subprocess.run([sys.executable, "-c", FIRST_RUNS], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    fresh = json.loads(done.stdout.strip().splitlines()[-1])
    assert fresh["bars"] == 5760
    assert fresh["compiled"] == []  # all of it came from the cache warmup wrote
    assert fresh["cache_hits"] > 0

    again = subprocess.run([MMATS, "warmup", "--strategy", "ema_cross"], env=env,
                           cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert "0 kernels compiled" in again.stdout and "sweep ema_cross" in again.stdout


def test_an_empty_cache_compiles_in_the_first_backtest(tmp_path):
    """The check above can fail: without warmup, the same first backtest compiles."""
    done = subprocess.run([sys.executable, "-c", FIRST_RUNS, "backtest"], env=caches(tmp_path),
                          cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    fresh = json.loads(done.stdout.strip().splitlines()[-1])
    assert "simulate" in fresh["compiled"] and "signal" in fresh["compiled"]


@pytest.mark.parametrize("setting", ["NUMBA_CACHE_DIR", "MMATS_CACHE_DIR"])
def test_a_cache_folder_that_cannot_be_written_is_one_plain_line(setting, tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder\n")
    env = {**caches(tmp_path), setting: str(a_file / "cache")}
    done = subprocess.run([MMATS, "warmup"], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert str(a_file / "cache") in done.stderr and setting in done.stderr
    assert not list(tmp_path.rglob("*.nbi"))  # nothing was compiled
