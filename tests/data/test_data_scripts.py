"""scripts/import_data.py and scripts/check_data.py, run as a user would (subprocess)."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from mmats.data import CandleStore

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "mmats" / "data" / "sample"


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
        assert "exit codes" in result.stdout
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
    assert result.returncode == 2
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


def test_an_infinite_value_is_refused_by_import_and_reported_by_check(tmp_path, eth_btc):
    bars = eth_btc.iloc[:20].copy()
    bars.loc[6, "high"] = float("inf")
    bars.to_csv(tmp_path / "inf.csv", index=False)
    bars.to_parquet(tmp_path / "inf.parquet")
    imported, checked_csv, checked_parquet = run_all([
        ("import_data.py", tmp_path / "inf.csv", "--venue", "bittrex", "--symbol", "ETH/BTC",
         "--timeframe", "5m", "--root", tmp_path / "store"),
        ("check_data.py", tmp_path / "inf.csv"),
        ("check_data.py", tmp_path / "inf.parquet"),
    ], cwd=tmp_path)
    assert imported.returncode == 2
    assert f"{tmp_path / 'inf.csv'}: 1 of 20 row(s) rejected" in imported.stderr
    assert "row 7 (line 8): infinite value (high=inf)" in imported.stderr
    assert "Traceback" not in imported.stderr
    assert not (tmp_path / "store").exists() or not list((tmp_path / "store").rglob("*.parquet"))
    for checked in (checked_csv, checked_parquet):
        assert checked.returncode == 1, checked.stderr
        assert "1 rows with an infinite OHLCV value (rows 7)" in checked.stdout


def test_a_multi_file_import_is_one_transaction(tmp_path, eth_btc):
    """a.csv is good, b.csv is not: the store is left byte for byte as it was, whether b fails
    when read or only when written (its bars are off the stored bars' 5m grid)."""
    root = tmp_path / "store"
    store = CandleStore(root)
    store.write("bittrex", "ETH/BTC", "5m", eth_btc.iloc[:100])
    stored = store.path("bittrex", "ETH/BTC", "5m")
    before = stored.read_bytes()
    eth_btc.iloc[100:200].to_csv(tmp_path / "a.csv", index=False)
    bad_row = eth_btc.iloc[200:230].copy()
    bad_row.loc[203, "close"] = 0.0
    bad_row.to_csv(tmp_path / "b_bad_row.csv", index=False)
    off_grid = eth_btc.iloc[300:330].copy()
    off_grid["ts"] += pd.Timedelta(minutes=2)
    off_grid.to_csv(tmp_path / "b_off_grid.csv", index=False)
    common = ["--venue", "bittrex", "--symbol", "ETH/BTC", "--timeframe", "5m", "--root", root,
              "--resample-to", "1h"]
    read_fails, write_fails = run_all([
        ("import_data.py", tmp_path / "a.csv", tmp_path / "b_bad_row.csv", *common),
        ("import_data.py", tmp_path / "a.csv", tmp_path / "b_off_grid.csv", *common),
    ], cwd=tmp_path)
    assert read_fails.returncode == 2
    assert f"{tmp_path / 'b_bad_row.csv'}: 1 of 30 row(s) rejected" in read_fails.stderr
    assert "row 4 (line 5): non-positive price (close=0)" in read_fails.stderr
    assert write_fails.returncode == 2
    assert f"{tmp_path / 'b_off_grid.csv'}: 30 of 30 row(s) rejected" in write_fails.stderr
    assert "row 1 (line 2): ts 2018-01-11 05:57:00+00:00 is off the 5m grid" in write_fails.stderr
    assert "the store is as it was" in write_fails.stderr
    assert stored.read_bytes() == before
    assert sorted(p.name for p in root.rglob("*") if p.is_file()) == [
        ".ETH_BTC_5m.parquet.lock", "ETH_BTC_5m.parquet"]
