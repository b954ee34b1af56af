"""quality_report: the bundled samples against their manifest, and crafted bad frames."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mmats.data import QualityReport, load, quality_report
from mmats.data.io import read_raw_candles
from mmats.data.schema import candles_from_arrays

SAMPLE = Path(__file__).resolve().parents[2] / "mmats" / "data" / "sample"

# Figures from the data set's manifest (see data/sample/README.md).
MANIFEST = {
    "bittrex:ADA/BTC:5m": dict(rows=5720, first="2018-01-10 04:55", last="2018-01-30 04:50",
                               expected=5760, missing=40, gaps=5, largest="0 days 02:50:00"),
    "bittrex:ETH/BTC:5m": dict(rows=5760, first="2018-01-10 04:55", last="2018-01-30 04:50",
                               expected=5760, missing=0, gaps=0),
    "bittrex:LTC/BTC:5m": dict(rows=5760, first="2018-01-10 04:55", last="2018-01-30 04:50",
                               expected=5760, missing=0, gaps=0),
    "binance:XRP/ETH:5m": dict(rows=706, first="2019-10-11 00:00", last="2019-10-13 11:15",
                               expected=712, missing=6, gaps=6, largest="0 days 00:10:00"),
    "fx:EUR/USD:1h": dict(rows=5000, first="2017-04-19 09:00", last="2018-02-07 15:00",
                          gaps=42, weekend=42, other=0, largest="3 days 01:00:00"),
    "nasdaq:GOOG:1d": dict(rows=2148, first="2004-08-19", last="2013-03-01",
                           gaps=463, weekend=445, other=18, largest="5 days 00:00:00"),
}


@pytest.mark.parametrize("spec", list(MANIFEST))
def test_bundled_samples_match_manifest(spec):
    expected = MANIFEST[spec]
    report = quality_report(load(spec))
    assert report.ok, report.problems
    assert report.rows == expected["rows"]
    assert report.first_ts == pd.Timestamp(expected["first"], tz="UTC")
    assert report.last_ts == pd.Timestamp(expected["last"], tz="UTC")
    assert report.gap_events == expected["gaps"]
    if "missing" in expected:  # 24/7: every step counts
        assert report.calendar == "24/7"
        assert report.missing_bars == expected["missing"]
        assert report.expected_bars == expected["expected"]
        assert report.other_gap_events == expected["gaps"]
    else:
        assert report.weekend_gap_events == expected["weekend"]
        assert report.other_gap_events == expected["other"]
    if "largest" in expected:
        widest = max(g.end - g.start for g in report.largest_gaps)
        assert str(widest) == expected["largest"]
    for name in ("duplicate_ts", "unsorted_ts", "nan_cells", "non_positive_prices",
                 "high_below_low", "ohlc_inconsistent", "off_grid_ts", "zero_volume_rows",
                 "unparseable_ts", "negative_volume"):
        assert getattr(report, name) == 0, name


def test_ada_largest_gap_details():
    report = quality_report(load("bittrex:ADA/BTC:5m"))
    top = report.largest_gaps[0]
    assert (top.start, top.end, top.missing_bars, top.kind) == (
        pd.Timestamp("2018-01-15 11:55", tz="UTC"), pd.Timestamp("2018-01-15 14:45", tz="UTC"),
        33, "other")


def test_forex_weekends_are_not_missing_but_holidays_are():
    report = quality_report(load("fx:EUR/USD:1h"))
    # Only the two holiday Mondays (Christmas and New Year 2017/18) are missing: 2 x 24 bars.
    assert report.missing_bars == 48
    assert [g.start.strftime("%Y-%m-%d") for g in report.largest_gaps[:2]] == [
        "2017-12-22", "2017-12-29"]


def test_stock_daily_holidays_are_other_gaps():
    report = quality_report(load("nasdaq:GOOG:1d"))
    others = report.other_gap_events
    assert others == 18 and report.missing_bars >= others
    assert "holidays?" in report.to_text()


def test_stock_intraday_overnight_is_not_missing():
    days = pd.bdate_range("2021-03-01", "2021-03-12", tz="UTC")
    days = days[days != pd.Timestamp("2021-03-10", tz="UTC")]  # one closed weekday
    ts = np.concatenate([d.value + (14 * 60 + 30 + 30 * np.arange(13)) * 60 * 10**9 for d in days])
    ts = np.delete(ts, 20)  # and one missing bar inside a session
    price = np.full(ts.size, 10.0)
    df = candles_from_arrays(ts, {"open": price, "high": price, "low": price, "close": price,
                                  "volume": price})
    report = quality_report(df, timeframe="30m", calendar="stocks")
    assert report.weekend_gap_events == 1
    assert report.session_gap_events == 6
    assert report.other_gap_events == 2
    assert report.missing_bars == 13 + 1


def test_raw_bad_frame_is_described_not_rejected(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text(
        "Date,Open,High,Low,Close,Volume\n"
        "2018-01-10 00:00,1.0,1.2,0.9,1.1,10\n"   # 1
        "2018-01-10 00:05,1.0,1.2,0.9,1.1,0\n"    # 2 zero volume
        "2018-01-10 00:05,1.0,1.2,0.9,1.1,10\n"   # 3 duplicate ts
        "2018-01-10 00:20,1.0,0.8,0.9,1.1,10\n"   # 4 high < low, inconsistent
        "2018-01-10 00:17,1.0,1.2,0.9,1.1,10\n"   # 5 off grid, unsorted
        "junk,1.0,1.2,0.9,1.1,10\n"               # 6 unparseable
        "2018-01-10 00:30,-1.0,1.2,0.9,,-3\n"     # 7 non-positive, NaN, negative volume
    )
    report = quality_report(read_raw_candles(path), timeframe="5m")
    assert not report.ok
    counts = {name: getattr(report, name) for name in (
        "unparseable_ts", "duplicate_ts", "unsorted_ts", "off_grid_ts", "nan_cells",
        "non_positive_prices", "negative_volume", "high_below_low", "ohlc_inconsistent",
        "zero_volume_rows")}
    assert counts == {"unparseable_ts": 1, "duplicate_ts": 1, "unsorted_ts": 1,
                      "off_grid_ts": 1, "nan_cells": 1, "non_positive_prices": 1,
                      "negative_volume": 1, "high_below_low": 1, "ohlc_inconsistent": 2,
                      "zero_volume_rows": 1}
    assert report.examples["duplicate_ts"] == [3]
    assert report.examples["off_grid_ts"] == [5]
    assert report.examples["ohlc_inconsistent"] == [4, 7]
    text = report.to_text()
    assert "1 rows with high < low (rows 4)" in text and "PROBLEMS FOUND" in text
    data = report.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["ok"] is False and data["source"] == str(path)


def test_missing_columns_and_empty_frames():
    report = quality_report(pd.DataFrame({"ts": ["2020-01-01"], "close": [1.0]}))
    assert report.missing_columns == ["open", "high", "low", "volume"] and not report.ok
    empty = quality_report(pd.DataFrame(columns=["ts", "open", "high", "low", "close", "volume"]))
    assert isinstance(empty, QualityReport) and empty.rows == 0 and empty.ok
    assert "no rows" in empty.warnings


def test_outlier_spike_is_flagged():
    df = load("bittrex:ETH/BTC:5m")
    assert quality_report(df).outliers == []
    spiked = df.copy()
    spiked.loc[3000, ["high", "close"]] = spiked.loc[3000, "close"] * 1.5
    report = quality_report(spiked)
    assert [o.row for o in report.outliers] == [3001, 3002]  # the jump up and back down
    assert report.outliers[0].log_return == pytest.approx(np.log(1.5), abs=0.01)
    assert report.ok and "outlier" in report.warnings[0]
