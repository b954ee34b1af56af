"""scripts/import_data.py and scripts/check_data.py, run as a user would (subprocess)."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from mmats.data import CandleStore

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "data" / "sample"


def run(script, *args, cwd):
    return run_all([(script, *args)], cwd=cwd)[0]


def run_all(commands, cwd):
    """Run several script invocations at once (each pays the interpreter start-up)."""
    children = [subprocess.Popen([sys.executable, str(REPO / "scripts" / script), *map(str, args)],
                                 cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for script, *args in commands]
    results = []
    for child, command in zip(children, commands, strict=True):
        stdout, stderr = child.communicate(timeout=120)
        results.append(subprocess.CompletedProcess(command, child.returncode, stdout, stderr))
    return results


@pytest.fixture(scope="module")
def csvs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("csv")
    eth = pd.read_parquet(SAMPLE / "bittrex" / "ETH_BTC_5m.parquet")
    eth.iloc[:3000].to_csv(folder / "part1.csv", index=False)
    eth.iloc[2500:].rename(columns=str.title).to_csv(folder / "part2.csv", index=False)
    bad = eth.iloc[:20].copy()
    bad.loc[4, "high"] = bad.loc[4, "low"] / 2
    bad.loc[11, "volume"] = -1.0
    bad.to_csv(folder / "bad.csv", index=False)
    return folder


def test_help(tmp_path):
    for result in run_all([("import_data.py", "--help"), ("check_data.py", "--help")], tmp_path):
        assert result.returncode == 0 and "usage:" in result.stdout
        assert "Exit codes" in result.stdout
    bad = run("import_data.py", "x.csv", "--venue", "v", "--symbol", "S", "--timeframe", "5m",
              "--resample-to", "7m", cwd=tmp_path)
    assert bad.returncode == 2 and "7m is not a whole multiple of" in bad.stderr


def test_import_appends_and_resamples(tmp_path, csvs):
    result = run("import_data.py", csvs / "part1.csv", csvs / "part2.csv", "--venue", "bittrex",
                 "--symbol", "ETH/BTC", "--timeframe", "5m", "--root", tmp_path / "store",
                 "--resample-to", "1h,1d", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    reports = json.loads(result.stdout)["reports"]
    assert [(r["timeframe"], r["rows_added"]) for r in reports] == [
        ("5m", 3000), ("5m", 2760), ("1h", 480), ("1d", 20)]
    store = CandleStore(tmp_path / "store")
    assert sorted(store.keys()) == [("bittrex", "ETH/BTC", t) for t in ("1d", "1h", "5m")]
    # Re-importing is a no-op, reported in text form.
    again = run("import_data.py", csvs / "part2.csv", "--venue", "bittrex", "--symbol", "ETH/BTC",
                "--timeframe", "5m", "--root", tmp_path / "store", cwd=tmp_path)
    assert again.returncode == 0 and "+0 added" in again.stdout and "unchanged" in again.stdout


def test_strict_import_writes_nothing(tmp_path, csvs):
    result = run("import_data.py", csvs / "part1.csv", csvs / "bad.csv", "--venue", "bittrex",
                 "--symbol", "ETH/BTC", "--timeframe", "5m", "--root", tmp_path / "store",
                 cwd=tmp_path)
    assert result.returncode == 1
    assert f"{csvs / 'bad.csv'}: 2 of 20 row(s) rejected" in result.stderr
    assert "row 5 (line 6): high < low" in result.stderr
    assert "row 12 (line 13): negative volume (-1)" in result.stderr
    assert "nothing was written" in result.stderr
    assert not list(tmp_path.rglob("*.parquet"))


def test_reject_bad_writes_good_rows(tmp_path, csvs):
    result = run("import_data.py", csvs / "bad.csv", "--venue", "bittrex", "--symbol", "ETH/BTC",
                 "--timeframe", "5m", "--root", tmp_path / "store", "--reject-bad", "--json",
                 cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert [r["row"] for r in summary["rejected"]] == [5, 12]
    assert summary["reports"][0]["rows_added"] == 18
    assert "rejected: " in result.stderr and "row 5: high < low" in result.stderr
    assert len(CandleStore(tmp_path / "store").read("bittrex", "ETH/BTC", "5m")) == 18


def test_check_data_exit_codes_and_json(tmp_path, csvs):
    good, bad, missing = run_all([
        ("check_data.py", "bittrex:ADA/BTC:5m", "--json"),
        ("check_data.py", csvs / "bad.csv"),
        ("check_data.py", tmp_path / "nope.csv"),
    ], cwd=tmp_path)
    assert good.returncode == 0, good.stderr
    report = json.loads(good.stdout)
    assert report["ok"] and report["missing_bars"] == 40 and report["gap_events"] == 5
    assert bad.returncode == 1
    assert "PROBLEMS FOUND" in bad.stdout and "high < low (rows 5)" in bad.stdout
    assert missing.returncode == 2 and "nope.csv: no such file" in missing.stderr
