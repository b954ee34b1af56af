"""CandleStore's pyarrow read against the DuckDB read it replaced (so that a tick need not
load DuckDB): the very same arrays, bit for bit, on the bundled samples, on a store grown
by appends with gaps, on tail windows and odd bounds, on files of many row groups (the
read skips groups by their ``ts`` statistics) and on files written behind the store's back
(unsorted, other time units, no time zone, nulls, integer columns). Errors name the file.
"""

from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mmats.data import CandleStore
from mmats.data.schema import VALUE_COLUMNS
from mmats.errors import DataError

SAMPLE = Path(__file__).resolve().parents[2] / "mmats" / "data" / "sample"
HOUR = 3_600_000_000_000
T0 = 1_700_000_000_000_000_000 // HOUR * HOUR


def duckdb_read(path, start_ns=None, end_ns=None) -> dict[str, np.ndarray]:
    """The store's read before this change (DuckDB, ORDER BY ts), kept as the oracle."""
    connection = duckdb.connect(":memory:")
    connection.execute("SET TimeZone = 'UTC'")
    where, params = [], [str(path)]
    for op, value in ((">=", start_ns), ("<", end_ns)):
        if value is not None:
            where.append(f"ts {op} make_timestamp_ns(?)::TIMESTAMPTZ_NS")
            params.append(value)
    sql = ("SELECT ts, open, high, low, close, volume FROM read_parquet(?)"
           + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY ts")
    result = connection.execute(sql, params).fetchnumpy()
    connection.close()
    ts = np.asarray(result["ts"])
    arrays = {"ts": np.ascontiguousarray(ts.astype("M8[ns]").view(np.int64))}
    for column in VALUE_COLUMNS:
        values = np.ma.filled(np.ma.asarray(result[column], dtype=np.float64), np.nan)
        arrays[column] = np.ascontiguousarray(values)
    return arrays


def assert_same(new: dict, old: dict, label: str) -> None:
    assert list(new) == list(old) == ["ts", *VALUE_COLUMNS], label
    for column in old:
        assert new[column].dtype == old[column].dtype, (label, column)
        assert new[column].flags.c_contiguous, (label, column)
        np.testing.assert_array_equal(new[column], old[column], err_msg=f"{label} {column}")


def bounds_for(ts: np.ndarray) -> list[tuple]:
    """Unbounded, open on either side, a bar's own time and a time between two bars, a
    tail window, an empty window, and windows wholly before and after the data."""
    first, last = int(ts.min()), int(ts.max())
    middle = int(ts[ts.size // 2])
    step = int(np.median(np.diff(np.sort(ts)))) if ts.size > 1 else HOUR
    return [(None, None), (middle, None), (None, middle), (middle + 1, None),
            (None, middle + 1), (first, last), (last - 50 * step, None),
            (last - 50 * step + 1, last + step), (middle, middle), (middle + 1, middle),
            (first - 10 * step, first), (last + step, None), (None, first)]


def check_every_window(store: CandleStore, key: tuple, path: Path) -> int:
    """Compare both reads over every window of ``bounds_for``; how many were compared."""
    ts = duckdb_read(path)["ts"]
    windows = bounds_for(ts)
    for start, end in windows:
        assert_same(store.read_arrays(*key, start=start, end=end),
                    duckdb_read(path, start, end), f"{path.name} [{start}, {end})")
    return len(windows)


@pytest.mark.parametrize("venue, name", [
    ("bittrex", "ETH_BTC_5m"), ("bittrex", "LTC_BTC_5m"), ("bittrex", "ADA_BTC_5m"),
    ("binance", "XRP_ETH_5m"), ("fx", "EUR_USD_1h"), ("nasdaq", "GOOG_1d")])
def test_the_bundled_samples_read_the_same(venue, name):
    symbol, _, timeframe = name.rpartition("_")
    path = SAMPLE / venue / f"{name}.parquet"
    assert check_every_window(CandleStore(SAMPLE), (venue, symbol, timeframe), path) == 13
    frame = CandleStore(SAMPLE).read(venue, symbol, timeframe)
    assert frame.attrs["source"] == str(path) and len(frame) == pq.read_metadata(path).num_rows


def bars(start_ns: int, count: int, seed: int, step: int = HOUR) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 100 + np.cumsum(rng.normal(0, 1, count))
    return pd.DataFrame({
        "ts": pd.to_datetime(start_ns + step * np.arange(count), utc=True),
        "open": close + rng.normal(0, 0.1, count), "high": close + 2, "low": close - 2,
        "close": close, "volume": rng.uniform(1, 5, count)})


def test_a_store_grown_by_appends_with_gaps_reads_the_same(tmp_path):
    store = CandleStore(tmp_path)
    key = ("binance", "BTC/USDT", "1h")
    store.write(*key, bars(T0, 300, seed=1))
    store.write(*key, bars(T0 + 340 * HOUR, 200, seed=2))  # a 40-bar gap
    store.write(*key, bars(T0 + 250 * HOUR, 60, seed=3))  # overlaps (conflicts) and fills
    store.write(*key, bars(T0 + 900 * HOUR, 5, seed=4))  # a long gap, then a short tail
    path = store.path(*key)
    assert pq.read_metadata(path).num_rows == 300 + 10 + 200 + 5
    check_every_window(store, key, path)
    gap_start, gap_end = T0 + 310 * HOUR, T0 + 340 * HOUR
    assert store.read_arrays(*key, start=gap_start, end=gap_end)["ts"].size == 0


def write_behind_the_store(path: Path, table: pa.Table, **options) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, **options)


def table_of(frame: pd.DataFrame) -> pa.Table:
    return pa.Table.from_pandas(frame, preserve_index=False)


def test_many_row_groups_are_skipped_by_their_statistics_and_read_the_same(tmp_path):
    store = CandleStore(tmp_path)
    key = ("binance", "ETH/USDT", "1h")
    path = store.path(*key)
    frame = pd.concat([bars(T0, 1000, seed=5), bars(T0 + 1500 * HOUR, 1000, seed=6)])
    write_behind_the_store(path, table_of(frame), row_group_size=128)
    assert pq.read_metadata(path).num_row_groups == 16
    assert check_every_window(store, key, path) == 13
    # the tail a tick asks for: only the last group is read
    from mmats.data.store import _row_groups_between
    with pq.ParquetFile(path) as parquet:
        assert _row_groups_between(parquet, T0 + 2480 * HOUR, None) == [15]
        assert _row_groups_between(parquet, T0 + 200 * HOUR, T0 + 300 * HOUR) == [1, 2]
        assert _row_groups_between(parquet, T0 + 5000 * HOUR, None) == []
        assert _row_groups_between(parquet, None, None) == list(range(16))


def test_files_written_behind_the_stores_back_read_the_same(tmp_path):
    """Unsorted rows, microsecond times without a zone, float32 and int64 columns, nulls
    in values and in ts (last, as ORDER BY puts NULLs), in several row groups."""
    store = CandleStore(tmp_path)
    key = ("v", "A/B", "1h")
    path = store.path(*key)
    order = np.random.default_rng(7).permutation(40)
    times = [None if i == 17 else pd.Timestamp(T0 + int(i) * HOUR).to_pydatetime()
             for i in order]
    table = pa.table({
        "ts": pa.array(times, pa.timestamp("us")),
        "open": pa.array([None if i % 9 == 0 else float(i) for i in order], pa.float32()),
        "high": pa.array([int(i) + 2 for i in order], pa.int64()),
        "low": pa.array([float(i) for i in order]),
        "close": pa.array([float(i) + 0.5 for i in order]),
        "volume": pa.array([None if i % 7 == 0 else int(i) for i in order], pa.int64()),
        "extra": pa.array(["x"] * 40)})
    write_behind_the_store(path, table, row_group_size=8)
    assert check_every_window(store, key, path) == 13
    everything = store.read_arrays(*key)
    assert everything["ts"][-1] == 0 and np.all(np.diff(everything["ts"][:-1]) > 0)
    assert np.isnan(everything["open"]).sum() == 5 and np.isnan(everything["volume"]).sum() == 6


def test_a_broken_or_foreign_file_is_an_error_naming_it(tmp_path):
    store = CandleStore(tmp_path)
    key = ("v", "A/B", "1h")
    path = store.path(*key)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not parquet")
    with pytest.raises(DataError, match="could not read") as info:
        store.read(*key)
    assert str(path) in str(info.value)
    write_behind_the_store(path, table_of(bars(T0, 5, seed=8).drop(columns=["volume"])))
    with pytest.raises(DataError, match="no column volume") as info:
        store.read_arrays(*key)
    assert str(path) in str(info.value)
    write_behind_the_store(path, table_of(bars(T0, 5, seed=8).assign(ts=np.arange(5))))
    with pytest.raises(DataError, match="column ts is int64, not a timestamp") as info:
        store.read(*key, start=T0)
    assert str(path) in str(info.value)


def test_the_store_writes_row_groups_so_that_a_tail_read_skips_the_history(tmp_path):
    from mmats.data.store import ROW_GROUP_BARS, _row_groups_between

    store = CandleStore(tmp_path)
    key = ("binance", "BTC/USDT", "5m")
    five = 300_000_000_000
    count = 2 * ROW_GROUP_BARS + 5_000
    store.write(*key, bars(T0, count, seed=9, step=five))
    path = store.path(*key)
    assert pq.read_metadata(path).num_row_groups == 3
    tail_start = T0 + (count - 2_000) * five  # what a tick's feed asks for
    with pq.ParquetFile(path) as parquet:
        assert _row_groups_between(parquet, tail_start, None) == [2]
    assert_same(store.read_arrays(*key, start=tail_start), duckdb_read(path, tail_start),
                "tail")
    assert check_every_window(store, key, path) == 13
