"""Data gaps are reported wherever results are: backtest.py and sweep.py (--json and text),
the research report's Data section, and rejected rows counted from import to backtest."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from mmats.data import CandleStore, data_quality, data_quality_warnings, load
from mmats.data.fetch import fetch_into_store
from mmats.errors import CandleValidationError, ConfigError

MINUTE = pd.Timedelta(minutes=1)
# The gappy minute series: 1,492 single missing minutes and one outage of 462 minutes,
# 1,954 missing minutes in 1,493 gaps, as in the issue.
SINGLES = range(2, 2 + 3 * 1492, 3)          # every third minute up to row 4475
OUTAGE = range(4600, 4600 + 462)
ZERO_VOLUME = (9, 19, 30, 40)     # none of them deleted


def run(repo, *args):
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True,
                          cwd=repo, timeout=300)


@pytest.fixture(scope="module")
def minutes():
    """The ETH/BTC 5m sample's 5,760 real bars relabelled one minute apart, with the minutes
    of SINGLES and OUTAGE deleted and four bars' volume set to 0."""
    frame = load("bittrex:ETH/BTC:5m")
    frame["ts"] = frame["ts"].iloc[0] + MINUTE * np.arange(len(frame))
    frame.loc[list(ZERO_VOLUME), "volume"] = 0.0
    dropped = np.zeros(len(frame), dtype=bool)
    dropped[list(SINGLES)] = dropped[list(OUTAGE)] = True
    frame = frame.loc[~dropped].reset_index(drop=True)
    frame.attrs = {"venue": "bittrex", "symbol": "ETH/BTC", "timeframe": "1m"}
    return frame


@pytest.fixture(scope="module")
def store_root(minutes, tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    CandleStore(root).write("bittrex", "ETH/BTC", "1m", minutes, source="test")
    return root


def check_gappy(quality: dict):
    assert quality["bars"] == 5760 - 1954 == 3806
    assert quality["expected_bars"] == 5760
    assert quality["missing_bars"] == 1954
    assert quality["gap_count"] == 1493
    assert quality["calendar"] == "24/7" and quality["timeframe"] == "1m"
    gap = quality["largest_gap"]
    assert gap["missing_bars"] == 462 and gap["duration"] == "0 days 07:43:00"
    start = pd.Timestamp("2018-01-10 04:55", tz="UTC") + 4599 * MINUTE
    assert gap["start"] == start.isoformat() and gap["end"] == (start + 463 * MINUTE).isoformat()
    assert quality["zero_volume_bars"] == len(ZERO_VOLUME)
    assert quality["repaired_rows"] == 0
    assert (quality["rejected_rows"], quality["rejected_rows_known"]) == (0, True)
    assert quality["first_ts"] == "2018-01-10T04:55:00+00:00"
    assert len(quality["warnings"]) == 2


def test_backtest_json_reports_the_gaps_and_warns(repo, store_root):
    done = run(repo, "scripts/backtest.py", "--data", "bittrex:ETH/BTC:1m", "--root", store_root,
               "--params", "fast=10,slow=50", "--json")
    assert done.returncode == 0, done.stderr
    check_gappy(json.loads(done.stdout)["data_quality"])
    warnings = [line for line in done.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2
    assert "a gap of 462 missing bar(s)" in warnings[0] and "--max-gap 1%" in warnings[0]
    assert "1954 of 5760 expected bars (33.92%) are missing" in warnings[1]


def test_backtest_text_states_the_data(repo, store_root):
    done = run(repo, "scripts/backtest.py", "--data", "bittrex:ETH/BTC:1m", "--root", store_root,
               "--params", "fast=10,slow=50", "--max-gap", "8h", "--max-missing", "50%")
    assert done.returncode == 0, done.stderr
    assert "data: 3806 bars of 5760 expected (24/7, 1m); 1954 missing (33.92%) in 1493 gap(s)" \
        in done.stdout
    assert "0 row(s) rejected at import; none repaired" in done.stdout
    assert "warning" not in done.stderr  # 462 minutes < 8h, 34% < 50%


def test_sweep_json_reports_the_gaps_and_warns(repo, store_root):
    done = run(repo, "scripts/sweep.py", "--data", "bittrex:ETH/BTC:1m", "--root", store_root,
               "--grid", "fast=5|10,slow=30", "--json")
    assert done.returncode == 0, done.stderr
    check_gappy(json.loads(done.stdout)["data_quality"])
    assert done.stderr.count("warning:") == 2


def test_sweep_of_several_sources_reports_each(repo, store_root):
    done = run(repo, "scripts/sweep.py", "--data", "bittrex:ETH/BTC:1m",
               "--data", "bittrex:ETH/BTC:5m", "--root", store_root,
               "--grid", "fast=5,slow=30", "--json")
    assert done.returncode == 0, done.stderr
    quality = json.loads(done.stdout)["data_quality"]
    assert sorted(quality) == ["bittrex:ETH/BTC:1m", "bittrex:ETH/BTC:5m"]
    check_gappy(quality["bittrex:ETH/BTC:1m"])
    assert quality["bittrex:ETH/BTC:5m"]["missing_bars"] == 0
    assert "warning: bittrex:ETH/BTC:1m:" in done.stderr
    assert "ETH/BTC:5m:" not in done.stderr


@pytest.mark.parametrize("spec, calendar, missing, gaps", [
    ("bittrex:ETH/BTC:5m", "24/7", 0, 0),
    ("nasdaq:GOOG:1d", "stocks", 79, 77),   # exchange holidays; 445 weekends not missing
    ("fx:EUR/USD:1h", "forex", 48, 2),      # Christmas and New Year; 40 weekends not
])
def test_complete_series_do_not_warn(repo, spec, calendar, missing, gaps):
    done = run(repo, "scripts/backtest.py", "--data", spec, "--json")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    quality = json.loads(done.stdout)["data_quality"]
    assert (quality["calendar"], quality["missing_bars"], quality["gap_count"]) == (
        calendar, missing, gaps)
    assert quality["warnings"] == []
    assert quality["rejected_rows_known"] is False  # the bundled files predate the count
    assert any("not recorded" in note for note in quality["notes"])


def test_bad_threshold_is_a_usage_error(repo):
    done = run(repo, "scripts/backtest.py", "--max-gap", "soon")
    assert done.returncode == 2 and "--max-gap 'soon'" in done.stderr
    done = run(repo, "scripts/sweep.py", "--max-missing", "150%")
    assert done.returncode == 2 and "--max-missing '150%'" in done.stderr


def test_thresholds_in_bars_duration_and_share(minutes):
    quality = data_quality(minutes)
    assert quality.missing_bars == 1954 and quality.gap_count == 1493
    assert quality.rejected_rows_known is False  # a frame, not a store file
    loose = {"max_missing": "40%"}
    assert data_quality_warnings(quality, max_gap="462", **loose) == []
    assert len(data_quality_warnings(quality, max_gap="461", **loose)) == 1
    assert len(data_quality_warnings(quality, max_gap="7h", **loose)) == 1   # 7h42m missing
    assert data_quality_warnings(quality, max_gap="8h", **loose) == []
    assert data_quality_warnings(quality, max_gap="9%", **loose) == []      # 518 of 5760
    assert len(data_quality_warnings(quality, max_gap="8%", **loose)) == 1  # 460.8
    assert len(data_quality_warnings(quality, max_gap="8h", max_missing="0.3")) == 1
    with pytest.raises(ConfigError):
        data_quality_warnings(quality, max_gap="-1")


def test_a_market_reads_as_its_frame(minutes):
    from mmats.backtest import market

    as_market = data_quality(market(minutes)).to_dict()
    as_frame = data_quality(minutes).to_dict()
    assert {k: v for k, v in as_market.items() if k != "source"} == {
        k: v for k, v in as_frame.items() if k != "source"}
    assert json.loads(json.dumps(as_frame)) == as_frame


def test_input_frame_is_not_changed(minutes):
    before = minutes.copy()
    data_quality(minutes)
    pd.testing.assert_frame_equal(minutes, before)


# ------------------------------------------------------------------ rows rejected at import


def bad_csv(path, rows, bad):
    frame = load("bittrex:ETH/BTC:5m").iloc[rows].copy()
    frame["ts"] = frame["ts"].dt.strftime("%Y-%m-%d %H:%M:%S")
    for row in bad:
        frame.iloc[row, frame.columns.get_loc("high")] = -1.0
    frame.to_csv(path, index=False)
    return path


def test_rejected_rows_counted_from_import_to_backtest(repo, tmp_path):
    root = tmp_path / "store"
    first = bad_csv(tmp_path / "a.csv", slice(0, 300), bad=(50, 100, 150))
    second = bad_csv(tmp_path / "b.csv", slice(300, 600), bad=(20, 40))
    for file in (first, second):
        done = run(repo, "scripts/import_data.py", file, "--venue", "bittrex",
                   "--symbol", "ETH/BTC", "--timeframe", "5m", "--root", root, "--reject-bad")
        assert done.returncode == 0, done.stderr
    done = run(repo, "scripts/backtest.py", "--data", "bittrex:ETH/BTC:5m", "--root", root,
               "--params", "fast=5,slow=20", "--json")
    assert done.returncode == 0, done.stderr
    quality = json.loads(done.stdout)["data_quality"]
    assert (quality["rejected_rows"], quality["rejected_rows_known"]) == (5, True)
    assert quality["repaired_rows"] == 0
    # the rejected rows are holes in the series, reported as such and never filled
    assert (quality["bars"], quality["missing_bars"], quality["gap_count"]) == (595, 5, 5)


def test_rows_rejected_with_nothing_new_still_count(tmp_path):
    store = CandleStore(tmp_path)
    frame = load("bittrex:ETH/BTC:5m").iloc[:10]
    store.write("bittrex", "ETH/BTC", "5m", frame)
    report = store.write("bittrex", "ETH/BTC", "5m", frame, rejected_rows=2)
    assert report.rows_added == 0
    assert data_quality(store.read("bittrex", "ETH/BTC", "5m")).rejected_rows == 2
    with pytest.raises(ConfigError):
        store.write("bittrex", "ETH/BTC", "5m", frame, rejected_rows=-1)


class BadPageSource:
    """A venue whose second page holds a bar with an infinite high."""

    def __init__(self, frame):
        self.frame = frame

    def fetch_candles(self, symbol, timeframe, since_ms, limit):
        ts_ms = self.frame["ts"].to_numpy(dtype="M8[ms]").view(np.int64)
        return self.frame.loc[ts_ms >= since_ms].head(limit).reset_index(drop=True)


def test_bars_a_fetch_refuses_are_counted(tmp_path):
    frame = load("bittrex:ETH/BTC:5m").iloc[:8].reset_index(drop=True)
    frame.loc[5, "high"] = np.inf
    store = CandleStore(tmp_path)
    now_ms = int((frame["ts"].iloc[-1] + pd.Timedelta(hours=1)).value // 1_000_000)
    with pytest.raises(CandleValidationError):
        fetch_into_store(BadPageSource(frame), store, "bittrex", "ETH/BTC", "5m",
                         since=frame["ts"].iloc[0], now_ms=now_ms, page_bars=4)
    quality = data_quality(store.read("bittrex", "ETH/BTC", "5m"))
    assert (quality.bars, quality.rejected_rows, quality.rejected_rows_known) == (4, 1, True)


# ------------------------------------------------------------------ the research report


def test_research_report_has_a_data_section(tmp_path):
    from mmats.reports.render import write_html, write_pdf
    from mmats.reports.research_report import research_document
    from mmats.validate.research import run_research

    candles = load("bittrex:ADA/BTC:5m").iloc[:3000]  # 40 bars missing in 5 gaps
    research = run_research("ema_cross", candles, {"fast": [5, 10], "slow": [30, 60]},
                            folds=3, mc_runs=50)
    research.data_quality = None
    assert all(section.title != "Data" for section in research_document(research).sections)

    research.data_quality = data_quality(candles)
    document = research_document(research)
    assert [s.title for s in document.sections][:2] == ["Summary and verdict", "Data"]
    page = write_html(document, tmp_path / "report.html").read_text(encoding="utf-8")
    data = page[page.index('<section id="data">'):page.index('<section id="parameters">')]
    for words in ("Bars the calendar expects", "3,040", "40 (1.32%)", "Gaps with missing bars",
                  "33 bar(s) missing between 2018-01-15T11:55:00+00:00 and "
                  "2018-01-15T14:45:00+00:00", "Rows rejected at import", "not recorded",
                  "Rows repaired", "Nothing was filled"):
        assert words in data, words

    import pypdf  # a dev dependency

    text = " ".join(page.extract_text() for page in
                    pypdf.PdfReader(write_pdf(document, tmp_path / "report.pdf")).pages)
    assert "Bars the calendar expects" in text


# ------------------------------------------------------------------ the walk-forward


def test_walkforward_json_reports_the_gaps_and_warns(repo, store_root, tmp_path):
    done = run(repo, "scripts/walkforward.py", "--data", "bittrex:ETH/BTC:1m",
               "--root", store_root, "--grid", "fast=5|10,slow=30", "--folds", "3",
               "--mc-runs", "20", "--reports", tmp_path, "--json")
    assert done.returncode == 0, done.stderr
    check_gappy(json.loads(done.stdout)["data_quality"])
    assert done.stderr.count("warning:") == 2
    assert "a gap of 462 missing bar(s)" in done.stderr
    page = open(json.loads(done.stdout)["reports"]["html"], encoding="utf-8").read()
    data = page[page.index('<section id="data">'):page.index('<section id="parameters">')]
    assert "1,954 (33.92%)" in data and "462 bar(s) missing" in data


def test_walkforward_text_states_the_data(repo, store_root, tmp_path):
    done = run(repo, "scripts/walkforward.py", "--data", "bittrex:ETH/BTC:1m",
               "--root", store_root, "--grid", "fast=5|10,slow=30", "--folds", "3",
               "--mc-runs", "20", "--reports", tmp_path, "--max-gap", "8h",
               "--max-missing", "50%")
    assert done.returncode == 0, done.stderr
    assert "data: 3806 bars of 5760 expected (24/7, 1m); 1954 missing (33.92%) in 1493 gap(s)" \
        in done.stdout
    assert "warning" not in done.stderr
    # the fold table shows each fold's own trades; the DSR line its trials and span
    assert "oos_trades" in done.stdout and " trials, " in done.stdout


def test_research_result_carries_the_data_quality(minutes):
    from mmats.validate.research import run_research

    research = run_research("ema_cross", minutes, {"fast": [5, 10], "slow": [30]},
                            folds=3, mc_runs=20)
    assert research.data_quality == data_quality(minutes)
    summary = research.summary()["data_quality"]
    assert (summary["missing_bars"], summary["gap_count"]) == (1954, 1493)
