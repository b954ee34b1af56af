"""validate_candles: every reject reason, with the exact rows named in the error."""

import re

import numpy as np
import pandas as pd
import pytest

from mmats.data import Reject, read_candle_file, validate_candles
from mmats.errors import CandleValidationError

BAD_CSV = """\
ts,open,high,low,close,volume
2018-01-10 00:00,1.0,1.2,0.9,1.1,10
not a date,1.0,1.2,0.9,1.1,10
2018-01-10 00:10,1.0,1.2,0.9,,10
2018-01-10 00:15,abc,1.2,0.9,1.1,10
2018-01-10 00:20,1.0,1.2,0,1.1,10
2018-01-10 00:25,1.0,1.2,0.9,1.1,-5
2018-01-10 00:30,0.85,0.8,0.9,0.85,10
2018-01-10 00:35,1.0,1.05,0.9,1.1,10
2018-01-10 00:40,1.0,1.2,1.05,1.1,10
2018-01-10 00:47,1.0,1.2,0.9,1.1,10
2018-01-10 00:50,1.0,1.2,0.9,1.1,10
2018-01-10 00:50,1.0,1.2,0.9,1.15,10
2018-01-10 00:55,1.0,1.2,0.9,1.1,10
2018-01-10 00:55,1.0,1.2,0.9,1.1,10
2018-01-10 00:05,1.0,1.2,0.9,1.1,10
"""

EXPECTED = [
    (2, "unparseable ts 'not a date'"),
    (3, "NaN in close"),
    (4, "open is not a number: 'abc'"),
    (5, "non-positive price (low=0)"),
    (6, "negative volume (-5)"),
    (7, "high < low (high=0.8, low=0.9)"),
    (8, "high < max(open, close)"),
    (9, "low > min(open, close)"),
    (10, "ts 2018-01-10 00:47:00+00:00 is off the 5m grid"),
    (11, "duplicate ts 2018-01-10 00:50:00+00:00 with conflicting values (rows 11, 12)"),
    (12, "duplicate ts 2018-01-10 00:50:00+00:00 with conflicting values (rows 11, 12)"),
]


@pytest.fixture
def bad_csv(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text(BAD_CSV)
    return path


def test_each_reason_names_its_row(bad_csv):
    with pytest.raises(CandleValidationError) as info:
        read_candle_file(bad_csv, timeframe="5m")
    error = info.value
    rows = [(r.row, r.reason) for r in error.rejects]
    assert [row for row, _ in rows] == [row for row, _ in EXPECTED]
    for (row, reason), (expected_row, expected) in zip(rows, EXPECTED, strict=True):
        assert row == expected_row and expected in reason, (row, reason)
    assert all(r.source == str(bad_csv) for r in error.rejects)
    message = str(error)
    assert message.startswith(f"{bad_csv}: 11 of 15 row(s) rejected")
    # Rows are data rows (header excluded); the CSV line is given too.
    assert "row 2 (line 3): unparseable ts 'not a date'" in message
    assert "row 9 (line 10): low > min(open, close)" in message
    assert "row 11 (line 12)" in message and "row 12" not in message.split("\n")[-3]
    assert "... and 1 more" in message


def test_lenient_mode_returns_good_rows_and_counts(bad_csv):
    clean, rejects = read_candle_file(bad_csv, timeframe="5m", strict=False)
    assert len(rejects) == 11 and isinstance(rejects[0], Reject)
    assert clean["ts"].dt.strftime("%H:%M").tolist() == ["00:00", "00:05", "00:55"]
    stats = clean.attrs["validation"]
    assert stats["duplicates_collapsed"] == 1 and stats["unsorted"] == 1
    assert stats["rows_in"] == 15 and stats["rows_out"] == 3 and stats["rejected"] == 11


def test_without_a_timeframe_the_grid_is_not_checked(bad_csv):
    _, rejects = read_candle_file(bad_csv, strict=False)
    assert 10 not in [r.row for r in rejects]


def test_schema_of_the_clean_frame():
    frame = pd.DataFrame({"ts": ["2018-01-10 00:05", "2018-01-10 00:00"], "open": [1, 1],
                          "high": [2, 2], "low": [1, 1], "close": [1, 2], "volume": [0, 3]})
    original = frame.copy()
    clean, rejects = validate_candles(frame, timeframe="5m")
    pd.testing.assert_frame_equal(frame, original)  # input untouched
    assert rejects == []
    assert list(clean.columns) == ["ts", "open", "high", "low", "close", "volume"]
    assert str(clean["ts"].dtype) == "datetime64[ns, UTC]"
    assert all(clean[c].dtype == np.float64 for c in clean.columns[1:])
    assert isinstance(clean.index, pd.RangeIndex)
    assert clean["close"].tolist() == [2.0, 1.0]


def test_timezones_naive_is_utc_aware_is_converted():
    base = {"open": [1.0], "high": [1.0], "low": [1.0], "close": [1.0], "volume": [1.0]}
    naive = pd.DataFrame({"ts": pd.to_datetime(["2018-01-10 12:00"]), **base})
    tokyo = pd.DataFrame({"ts": pd.to_datetime(["2018-01-10 21:00"]).tz_localize("Asia/Tokyo"),
                          **base})
    text = pd.DataFrame({"ts": ["2018-01-10T13:00:00+01:00"], **base})
    expected = pd.Timestamp("2018-01-10 12:00", tz="UTC")
    for frame in (naive, tokyo, text):
        assert validate_candles(frame)[0]["ts"].iloc[0] == expected


def test_ts_as_index_is_accepted():
    frame = pd.DataFrame({"open": [1.0], "high": [1.0], "low": [1.0], "close": [1.0],
                          "volume": [1.0]},
                         index=pd.DatetimeIndex(["2018-01-10"], name="ts", tz="UTC"))
    assert len(validate_candles(frame)[0]) == 1


@pytest.mark.parametrize("columns, reason", [
    (["ts", "open", "high", "low", "close"], "missing column(s) volume"),
    (["ts", "open", "high", "low", "close", "volume", "trades"], "unexpected column(s) trades"),
])
def test_column_errors_fail_the_whole_frame(columns, reason):
    frame = pd.DataFrame({c: [1.0] for c in columns})
    for strict in (True, False):
        with pytest.raises(CandleValidationError, match=re.escape(reason)) as info:
            validate_candles(frame, source="x.parquet", strict=strict)
        assert info.value.rejects == [Reject("x.parquet", 0, reason)]


def test_empty_frame_is_valid():
    frame = pd.DataFrame({c: [] for c in ["ts", "open", "high", "low", "close", "volume"]})
    clean, rejects = validate_candles(frame, timeframe="1h")
    assert len(clean) == 0 and rejects == [] and str(clean["ts"].dtype) == "datetime64[ns, UTC]"


def test_epoch_milliseconds_are_exact():
    stamps = [1515560100123, 1515560100456, 1515560100789]
    frame = pd.DataFrame({"ts": stamps, "open": 1.0, "high": 1.0, "low": 1.0, "close": 1.0,
                          "volume": 1.0})
    clean, _ = validate_candles(frame)
    assert clean["ts"].to_numpy("M8[ns]").view(np.int64).tolist() == [s * 10**6 for s in stamps]
