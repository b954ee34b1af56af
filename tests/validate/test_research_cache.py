"""The research cache behind ``mmats walkforward``, and the default run's numbers against
those computed before it (and before MMATS computed Hansen's SPA itself)."""

import json
import math
import pickle
import subprocess
from pathlib import Path

import pytest

from mmats.data import load
from mmats.strategy import load_strategy
from mmats.validate.research import cached_research, research_key, run_research

BEFORE = json.loads((Path(__file__).parent / "data" / "walkforward_default_before.json")
                    .read_text())["summary"]
SMALL = {"grid": {"fast": [5, 10, 20], "slow": [30, 60]}, "folds": 3, "fee_bps": 10.0,
         "mc_runs": 200}


def assert_same_numbers(got, expected, where="summary"):
    """Equal structure and text; numbers equal to 1e-12 (the kernel's parity bound)."""
    if isinstance(expected, dict):
        assert sorted(got) == sorted(expected), where
        for key in expected:
            assert_same_numbers(got[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, list):
        assert len(got) == len(expected), where
        for i, (a, b) in enumerate(zip(got, expected, strict=True)):
            assert_same_numbers(a, b, f"{where}[{i}]")
    elif isinstance(expected, float) and not isinstance(got, bool):
        assert math.isclose(got, expected, rel_tol=1e-12, abs_tol=1e-15), \
            f"{where}: {got!r} != {expected!r}"
    else:
        assert got == expected, f"{where}: {got!r} != {expected!r}"


def comparable(summary: dict) -> dict:
    """The summary without what names this checkout's files."""
    summary = json.loads(json.dumps(summary))
    summary.pop("reports", None)
    quality = summary["data_quality"]
    source = quality["source"]
    quality["notes"] = [note.replace(source, "SOURCE") for note in quality["notes"]]
    quality["source"] = source[source.index("mmats/data/"):]
    return summary


def test_default_walkforward_numbers_equal_those_before(repo, python, tmp_path):
    """``scripts/walkforward.py --json`` computed afresh gives the numbers recorded before
    the research cache and the own SPA (arch 8's SPA, scipy.stats.norm): every fold,
    metric, DSR, PBO, SPA p-value, Monte Carlo percentile and the verdict."""
    done = subprocess.run([python, repo / "scripts/walkforward.py", "--json", "--no-cache",
                           "--no-tearsheet", "--no-pdf", "--reports", tmp_path],
                          capture_output=True, text=True, timeout=900, cwd=repo)
    assert done.returncode == 0, done.stderr
    got = comparable(json.loads(done.stdout))
    assert_same_numbers(got, comparable(BEFORE))
    assert got["spa_pvalue"] == 0.685


def test_a_second_run_is_read_from_the_cache(tmp_path):
    candles = load("bittrex:ETH/BTC:5m").iloc[:3000]
    first = cached_research("ema_cross", candles, **SMALL, folder=tmp_path)
    entries = list(tmp_path.glob("*/*.pickle"))
    assert len(entries) == 1
    assert_same_numbers(first.summary(), run_research("ema_cross", candles,
                                                      **SMALL).summary())
    again = cached_research("ema_cross", candles, **SMALL, folder=tmp_path)
    assert again is not first
    assert again.summary() == first.summary()
    # a hit is what is stored: another result written under this key comes back
    other = run_research("ema_cross", candles, **{**SMALL, "mc_runs": 100})
    entries[0].write_bytes(pickle.dumps(other))
    assert cached_research("ema_cross", candles, **SMALL,
                           folder=tmp_path).monte_carlo.runs == 100
    assert cached_research("ema_cross", candles, **SMALL, folder=tmp_path,
                           cache=False).monte_carlo.runs == 200


def test_an_unreadable_entry_is_computed_again_and_replaced(tmp_path):
    candles = load("bittrex:ETH/BTC:5m").iloc[:3000]
    first = cached_research("ema_cross", candles, **SMALL, folder=tmp_path)
    [entry] = tmp_path.glob("*/*.pickle")
    entry.write_bytes(b"not a pickle")
    again = cached_research("ema_cross", candles, **SMALL, folder=tmp_path)
    assert again.summary() == first.summary()
    assert pickle.loads(entry.read_bytes()).summary() == first.summary()


def test_the_key_follows_every_input():
    strategy = load_strategy("ema_cross")
    candles = load("bittrex:ETH/BTC:5m").iloc[:3000]
    options = {"folds": 3, "fee_bps": 10.0, "seed": 0}
    key = research_key(strategy, candles, None, options)
    assert key == research_key(strategy, candles.copy(), None, dict(options))
    # progress and the cluster do not change the result
    assert key == research_key(strategy, candles, None, {**options, "progress": True,
                                                         "cluster": None})
    changed = candles.copy()
    changed.loc[1500, "close"] *= 1.000001
    others = {
        research_key(strategy, changed, None, options),
        research_key(strategy, candles.iloc[:2999], None, options),
        research_key(strategy, candles, {"fast": [5, 10]}, options),
        research_key(strategy, candles, None, {**options, "seed": 1}),
        research_key(strategy, candles, None, {**options, "fee_bps": 5.0}),
        research_key(load_strategy("donchian_breakout"), candles, None, options),
    }
    renamed = candles.copy()
    renamed.attrs = {**candles.attrs, "source": "elsewhere.parquet"}  # data quality names it
    others.add(research_key(strategy, renamed, None, options))
    assert key not in others and len(others) == 7


@pytest.mark.parametrize("data, options", [
    ("bittrex:ETH/BTC:5m", {}),  # a spec: its file could change under the same name
    (None, {"objective": lambda table: table["sharpe"]}),  # code the key cannot see
])
def test_runs_that_cannot_be_keyed_are_not_cached(data, options):
    candles = load("bittrex:ETH/BTC:5m") if data is None else data
    assert research_key(load_strategy("ema_cross"), candles, None, options) is None
