"""The import's fast paths against the paths they replaced (issue 14, item 7).

read_raw_candles parses a column of ISO-8601 texts up front (the old path left it to
validate_candles, which first tried every text as an epoch number; tests/data/
test_import_csv.py checks that read against the plain pandas one on odd files); ``mmats import
--resample-to`` reads the stored series into arrays with pyarrow and resamples them (the
old path read a frame through DuckDB). Both must store the very same bytes for good input,
and refuse bad rows with the very same messages.
"""

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mmats.cli import import_data
from mmats.data import CandleStore, read_candle_file, resample, validate_candles
from mmats.data.io import _map_columns, read_parquet_arrays, read_raw_candles
from mmats.data.resample import resample_arrays
from mmats.errors import CandleValidationError, DataError

SAMPLE = Path(__file__).resolve().parents[2] / "mmats" / "data" / "sample"
HEADER = "ts,open,high,low,close,volume"


@pytest.fixture(scope="module")
def eth():
    return pd.read_parquet(SAMPLE / "bittrex" / "ETH_BTC_5m.parquet").iloc[:300]


def _old_read(path: Path, timeframe, strict=True):
    """read_candle_file as it was: pandas read_csv, the ts texts left to validate_candles."""
    frame, dropped = _map_columns(pd.read_csv(path, skipinitialspace=True), str(path))
    frame.attrs = {"source": str(path), "dropped_columns": dropped}
    return validate_candles(frame, source=str(path), timeframe=timeframe, strict=strict)


def _stored_bytes(root: Path, frame: pd.DataFrame, timeframe: str) -> bytes:
    report = CandleStore(root).write("v", "ETH/BTC", timeframe, frame, source="same.csv")
    return report.path.read_bytes()


def _csv(eth, ts_format: str | None, tz: str = "UTC") -> str:
    table = eth.copy()
    if ts_format == "epoch_ms":
        table["ts"] = table["ts"].to_numpy("M8[ns]").view(np.int64) // 10**6
    elif ts_format is not None:
        table["ts"] = table["ts"].dt.tz_convert(tz).dt.strftime(ts_format)
    return table.to_csv(index=False)  # ts_format None: pandas' own "...+00:00" form


@pytest.mark.parametrize("ts_format, tz, timeframe", [
    ("%Y-%m-%d %H:%M:%S", "UTC", "5m"),
    ("%Y-%m-%dT%H:%M:%S", "UTC", "5m"),
    ("%Y-%m-%dT%H:%M:%SZ", "UTC", "5m"),
    ("%Y-%m-%d %H:%M", "UTC", "5m"),
    (None, "UTC", "5m"),
    ("%Y-%m-%dT%H:%M:%S%z", "Etc/GMT-2", "5m"),
    ("epoch_ms", "UTC", "5m"),
    ("%Y-%m-%d %H:%M:%S", "UTC", None),
])
def test_good_files_store_the_same_bytes(tmp_path, eth, ts_format, tz, timeframe):
    path = tmp_path / "same.csv"
    path.write_text(_csv(eth, ts_format, tz))
    old, _ = _old_read(path, timeframe)
    new, _ = read_candle_file(path, timeframe)
    pd.testing.assert_frame_equal(new, old)
    assert new.attrs == old.attrs
    tf = timeframe or "5m"
    assert _stored_bytes(tmp_path / "new", new, tf) == _stored_bytes(tmp_path / "old", old, tf)
    assert len(new) == 300


def test_iso_texts_are_parsed_before_validation(tmp_path, eth):
    path = tmp_path / "iso.csv"
    path.write_text(_csv(eth, "%Y-%m-%d %H:%M:%S"))
    raw = read_raw_candles(path)
    assert str(raw["ts"].dtype) == "datetime64[ns, UTC]"
    assert raw["ts"].iloc[0] == eth["ts"].iloc[0]


def _rows(*lines: str) -> str:
    return "\n".join([HEADER, *lines]) + "\n"


GOOD = "2018-01-10 00:00:00,1.0,1.2,0.9,1.1,10"
BAD_FILES = {
    # ts texts that send the column back to the old parser, row by row
    "unparseable": _rows(GOOD, "not a date,1.0,1.2,0.9,1.1,10"),
    "leap_second": _rows(GOOD, "2018-01-10 00:04:60,1.0,1.2,0.9,1.1,10"),
    "hour_24": _rows(GOOD, "2018-01-10 24:00:00,1.0,1.2,0.9,1.1,10"),
    "february_30": _rows(GOOD, "2018-02-30 00:00:00,1.0,1.2,0.9,1.1,10"),
    "year_3024": _rows(GOOD, "3024-01-10 00:05:00,1.0,1.2,0.9,1.1,10"),
    "year_1024_first": _rows("1024-01-10 00:05:00,1.0,1.2,0.9,1.1,10", GOOD),
    "empty_ts": _rows(GOOD, ",1.0,1.2,0.9,1.1,10"),
    "epoch_among_iso": _rows(GOOD, "1515543000,1.0,1.2,0.9,1.1,10"),
    "iso_among_epochs": _rows("1515542700,1.0,1.2,0.9,1.1,10", GOOD.replace("00:00:00", "00:10:00")),
    "blank_line": _rows(GOOD, "", "2018-01-10 00:05:00,1.0,1.2,0.9,,10"),
    # ts texts all fine: the fast path runs, the values are refused by the same code
    "values": _rows(GOOD, "2018-01-10 00:05:00,abc,1.2,0.9,1.1,10",
                    "2018-01-10 00:10:00,1.0,1.2,0,1.1,10",
                    "2018-01-10 00:15:00,0.85,0.8,0.9,0.85,-5",
                    "2018-01-10 00:20:00,1.0,1.2,0.9,inf,10",
                    "2018-01-10 00:25:00,1.0,1.2,0.9,NaN,10"),
    "grid_and_duplicates": _rows(GOOD, "2018-01-10 00:07:00,1.0,1.2,0.9,1.1,10",
                                 "2018-01-10 00:10:00,1.0,1.2,0.9,1.1,10",
                                 "2018-01-10 00:10:00,1.0,1.2,0.9,1.15,10",
                                 "2018-01-10 00:05:00,1.0,1.2,0.9,1.1,10"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_rows_are_refused_with_the_same_messages(tmp_path, name):
    path = tmp_path / f"{name}.csv"
    path.write_text(BAD_FILES[name])
    with pytest.raises(CandleValidationError) as old:
        _old_read(path, "5m")
    with pytest.raises(CandleValidationError) as new:
        read_candle_file(path, "5m")
    assert str(new.value) == str(old.value)
    assert new.value.rejects == old.value.rejects
    assert str(path) in str(new.value) and "row " in str(new.value)
    old_clean, old_rejects = _old_read(path, "5m", strict=False)
    new_clean, new_rejects = read_candle_file(path, "5m", strict=False)
    assert new_rejects == old_rejects
    pd.testing.assert_frame_equal(new_clean, old_clean)


def test_values_name_row_and_column(tmp_path):
    path = tmp_path / "values.csv"
    path.write_text(BAD_FILES["values"])
    with pytest.raises(CandleValidationError) as info:
        read_candle_file(path, "5m")
    message = str(info.value)
    assert message.startswith(f"{path}: 5 of 6 row(s) rejected")
    assert "row 2 (line 3): open is not a number: 'abc'" in message
    assert "row 5 (line 6): infinite value (close=inf)" in message


# -- resampling on import: pyarrow read + arrays, against DuckDB read + frame ---------------


def test_import_resample_stores_the_same_bytes_as_before(tmp_path, eth):
    csv = tmp_path / "eth.csv"
    eth.to_csv(csv, index=False)
    root = tmp_path / "store"
    code = import_data.main([str(csv), "--data", "bittrex:ETH/BTC:5m", "--resample-to",
                             "1h,1d", "--root", str(root), "--json"])
    assert code == 0
    store = CandleStore(root)
    full = store.read("bittrex", "ETH/BTC", "5m")
    before = CandleStore(tmp_path / "before")
    for target in ("1h", "1d"):
        report = before.write("bittrex", "ETH/BTC", target, resample(full, target),
                              source="resampled from 5m")
        now = store.path("bittrex", "ETH/BTC", target)
        assert now.read_bytes() == report.path.read_bytes(), target
    assert len(store.read("bittrex", "ETH/BTC", "1h")) == 25  # 300 five-minute bars


def test_resample_arrays_is_resample(eth):
    ts = eth["ts"].to_numpy("M8[ns]").view(np.int64)
    values = {c: eth[c].to_numpy() for c in ("open", "high", "low", "close", "volume")}
    out_ts, out = resample_arrays(ts, values, "1h", "5m", offset="30m")
    framed = resample(eth.assign(), "1h", offset="30m")
    assert np.array_equal(out_ts, framed["ts"].to_numpy("M8[ns]").view(np.int64))
    for column, array in out.items():
        assert np.array_equal(array, framed[column].to_numpy()), column
    with pytest.raises(DataError, match="x.parquet: timestamps are not strictly increasing"):
        resample_arrays(ts[::-1], values, "1h", "5m", source="x.parquet")


def test_read_parquet_arrays_matches_the_store(tmp_path, eth):
    store = CandleStore(tmp_path)
    store.write("bittrex", "ETH/BTC", "5m", eth, source="eth")
    path = store.path("bittrex", "ETH/BTC", "5m")
    arrow_read = read_parquet_arrays(path)
    duckdb_read = store.read_arrays("bittrex", "ETH/BTC", "5m")
    assert arrow_read.keys() == duckdb_read.keys()
    for column in arrow_read:
        assert arrow_read[column].dtype == duckdb_read[column].dtype
        assert np.array_equal(arrow_read[column], duckdb_read[column]), column


def test_read_parquet_arrays_reads_other_units_and_types(tmp_path, eth):
    """A file written behind the store's back: microsecond times without a zone, float32
    prices and integer volumes, in several row groups."""
    ns = eth["ts"].to_numpy("M8[ns]").view(np.int64)
    table = pa.table({"ts": pa.array(ns // 1000, pa.timestamp("us")),
                      **{c: pa.array(eth[c].to_numpy(np.float32)) for c in
                         ("open", "high", "low", "close")},
                      "volume": pa.array(eth["volume"].to_numpy().round().astype(np.int64))})
    path = tmp_path / "other.parquet"
    pq.write_table(table, path, row_group_size=70)
    arrays = read_parquet_arrays(path)
    assert arrays["ts"].dtype == np.int64 and np.array_equal(arrays["ts"], ns)
    assert arrays["open"].dtype == np.float64
    assert np.array_equal(arrays["open"], eth["open"].to_numpy(np.float32).astype(np.float64))
    assert np.array_equal(arrays["volume"], eth["volume"].to_numpy().round())
    with pytest.raises(DataError, match="no_close.parquet: cannot read it"):
        pq.write_table(table.drop_columns(["close"]), tmp_path / "no_close.parquet")
        read_parquet_arrays(tmp_path / "no_close.parquet")


def test_read_parquet_arrays_sorts_and_names_a_damaged_file(tmp_path, eth):
    shuffled = tmp_path / "shuffled.parquet"
    pq.write_table(pa.Table.from_pandas(eth.iloc[::-1], preserve_index=False), shuffled)
    arrays = read_parquet_arrays(shuffled)
    assert np.array_equal(arrays["ts"], eth["ts"].to_numpy("M8[ns]").view(np.int64))
    assert np.array_equal(arrays["close"], eth["close"].to_numpy())
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(shuffled.read_bytes()[:200])
    with pytest.raises(DataError, match="cut.parquet: cannot read it"):
        read_parquet_arrays(cut)
