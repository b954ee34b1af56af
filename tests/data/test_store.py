"""CandleStore: round trips, idempotent appends, conflicts, ranges, crashes and races."""

import datetime as dt
import json
import multiprocessing
import random
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from mmats.data import AppendReport, CandleStore, symbol_key
from mmats.errors import CandleValidationError, ConfigError, DataError

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # child processes import the workers by module name
    sys.path.insert(0, str(HERE))
import _store_workers  # noqa: E402
from _store_workers import KEY, STEP_NS, T0_NS, frame  # noqa: E402

SAMPLE = Path(__file__).resolve().parents[2] / "mmats" / "data" / "sample"


@pytest.fixture(scope="module")
def eth():
    return pd.read_parquet(SAMPLE / "bittrex" / "ETH_BTC_5m.parquet")


def test_path_layout_and_symbol_key(tmp_path):
    store = CandleStore(tmp_path)
    assert store.path("bittrex", "ETH/BTC", "5m") == tmp_path / "bittrex" / "ETH_BTC_5m.parquet"
    assert store.path("bittrex", "ETH_BTC", "5m") == store.path("bittrex", "ETH/BTC", "5m")
    assert symbol_key("XRP/USDT:USDT") == "XRP_USDT_USDT"
    for bad in ("", "../etc", ".hidden"):
        with pytest.raises(ConfigError):
            store.path("bittrex", bad, "5m")
    with pytest.raises(ConfigError):
        store.path("bit/trex", "ETH/BTC", "5m")
    with pytest.raises(ConfigError, match="timeframe"):
        store.path("bittrex", "ETH/BTC", "5 minutes")


def test_round_trip(tmp_path, eth):
    store = CandleStore(tmp_path)
    report = store.write("bittrex", "ETH/BTC", "5m", eth, source="sample")
    assert isinstance(report, AppendReport)
    assert (report.rows_before, report.rows_added, report.rows_after) == (0, 5760, 5760)
    assert report.conflicts == [] and report.written
    back = store.read("bittrex", "ETH/BTC", "5m")
    pd.testing.assert_frame_equal(back, eth)
    assert isinstance(back.index, pd.RangeIndex)
    assert back.attrs["symbol"] == "ETH/BTC" and back.attrs["calendar"] == "24/7"
    assert back.attrs["source"] == str(store.path("bittrex", "ETH/BTC", "5m"))
    meta = json.loads(pq.read_schema(report.path).metadata[b"mmats"])
    assert meta["symbol"] == "ETH/BTC" and meta["source"] == "sample"
    assert store.keys() == [("bittrex", "ETH/BTC", "5m")]
    assert "5760 after" in str(report)
    # Appending under the file-name form of the symbol keeps the original name.
    store.write("bittrex", "ETH_BTC", "5m", eth.iloc[:5])
    assert store.keys() == [("bittrex", "ETH/BTC", "5m")]


def test_append_overlapping_ranges_is_idempotent(tmp_path, eth):
    store = CandleStore(tmp_path)
    first = store.write("bittrex", "ETH/BTC", "5m", eth.iloc[:3000])
    second = store.write("bittrex", "ETH/BTC", "5m", eth.iloc[2000:4500])
    third = store.write("bittrex", "ETH/BTC", "5m", eth.iloc[4000:])
    again = store.write("bittrex", "ETH/BTC", "5m", eth)
    assert (first.rows_added, second.rows_added, third.rows_added) == (3000, 1500, 1260)
    assert (second.rows_before, second.rows_after) == (3000, 4500)
    assert again.rows_added == 0 and not again.conflicts and not again.written
    assert "unchanged" in str(again)
    back = store.read("bittrex", "ETH/BTC", "5m")
    assert len(back) == 5760 and back["ts"].is_unique and back["ts"].is_monotonic_increasing
    pd.testing.assert_frame_equal(back, eth)


def test_older_data_written_later_is_merged_in_order(tmp_path, eth):
    store = CandleStore(tmp_path)
    store.write("bittrex", "ETH/BTC", "5m", eth.iloc[3000:])
    store.write("bittrex", "ETH/BTC", "5m", eth.iloc[:3000].sample(frac=1, random_state=1))
    pd.testing.assert_frame_equal(store.read("bittrex", "ETH/BTC", "5m"), eth)


def test_conflict_keeps_newest_and_is_reported(tmp_path, eth):
    store = CandleStore(tmp_path)
    store.write("bittrex", "ETH/BTC", "5m", eth.iloc[:100])
    revised = eth.iloc[90:110].copy()
    revised.loc[95, "close"] = revised.loc[95, "close"] * 1.001
    revised.loc[97, "volume"] = 12345.0
    report = store.write("bittrex", "ETH/BTC", "5m", revised, source="revised.csv")
    assert report.rows_added == 10 and report.rows_after == 110
    assert [(c.ts, c.column) for c in report.conflicts] == [
        (eth.loc[95, "ts"], "close"), (eth.loc[97, "ts"], "volume")]
    conflict = report.conflicts[0]
    assert conflict.old == eth.loc[95, "close"] and conflict.new == revised.loc[95, "close"]
    text = str(report)
    assert "2 existing value(s) differed" in text and "close" in text and "12345.0" in text
    back = store.read("bittrex", "ETH/BTC", "5m")
    assert back.loc[95, "close"] == revised.loc[95, "close"]
    assert back.loc[97, "volume"] == 12345.0
    assert json.loads(json.dumps(report.to_dict()))["conflicts"][1]["column"] == "volume"


def test_bad_rows_write_nothing(tmp_path, eth):
    store = CandleStore(tmp_path)
    store.write("bittrex", "ETH/BTC", "5m", eth.iloc[:100])
    before = store.path("bittrex", "ETH/BTC", "5m").read_bytes()
    bad = eth.iloc[100:200].copy()
    bad.loc[150, "low"] = -1.0
    with pytest.raises(CandleValidationError, match=r"row 51: non-positive price \(low=-1\)"):
        store.write("bittrex", "ETH/BTC", "5m", bad)
    assert store.path("bittrex", "ETH/BTC", "5m").read_bytes() == before
    with pytest.raises(CandleValidationError):
        store.write("bittrex", "LTC/BTC", "5m", bad)
    assert not store.path("bittrex", "LTC/BTC", "5m").exists()


def test_empty_write_creates_no_file(tmp_path, eth):
    store = CandleStore(tmp_path)
    report = store.write("bittrex", "ETH/BTC", "5m", eth.iloc[:0])
    assert not report.written and report.rows_after == 0
    assert not report.path.exists() and store.keys() == []


def test_rows_off_the_existing_grid_are_rejected(tmp_path, eth):
    store = CandleStore(tmp_path)
    store.write("bittrex", "ETH/BTC", "5m", eth.iloc[:100])
    shifted = eth.iloc[200:210].copy()
    shifted["ts"] = shifted["ts"] + pd.Timedelta(minutes=2)
    with pytest.raises(CandleValidationError, match="off the 5m grid"):
        store.write("bittrex", "ETH/BTC", "5m", shifted)


def test_date_range_reads(tmp_path, eth):
    store = CandleStore(tmp_path)
    store.write("bittrex", "ETH/BTC", "5m", eth)
    day = store.read("bittrex", "ETH/BTC", "5m", start="2018-01-11", end="2018-01-12")
    assert len(day) == 288
    assert day["ts"].iloc[0] == pd.Timestamp("2018-01-11", tz="UTC")
    assert day["ts"].iloc[-1] == pd.Timestamp("2018-01-11 23:55", tz="UTC")
    same = store.read("bittrex", "ETH/BTC", "5m", start=pd.Timestamp("2018-01-11", tz="UTC"),
                      end=dt.datetime(2018, 1, 12, tzinfo=dt.UTC))
    pd.testing.assert_frame_equal(day, same)
    # A tz-aware bound in another zone is converted; a naive one is UTC.
    later = store.read("bittrex", "ETH/BTC", "5m", start="2018-01-29 01:00+01:00")
    assert later["ts"].iloc[0] == pd.Timestamp("2018-01-29 00:00", tz="UTC")
    assert len(store.read("bittrex", "ETH/BTC", "5m", end="2018-01-10 05:00")) == 1
    assert len(store.read("bittrex", "ETH/BTC", "5m", start="2030-01-01")) == 0


def test_read_arrays(tmp_path, eth):
    store = CandleStore(tmp_path)
    store.write("bittrex", "ETH/BTC", "5m", eth)
    arrays = store.read_arrays("bittrex", "ETH/BTC", "5m", start="2018-01-11")
    assert list(arrays) == ["ts", "open", "high", "low", "close", "volume"]
    assert arrays["ts"].dtype == np.int64
    assert all(arrays[c].dtype == np.float64 and arrays[c].flags.c_contiguous
               for c in list(arrays)[1:])
    tail = eth[eth["ts"] >= pd.Timestamp("2018-01-11", tz="UTC")]
    np.testing.assert_array_equal(arrays["ts"], tail["ts"].to_numpy("M8[ns]").view(np.int64))
    np.testing.assert_array_equal(arrays["close"], tail["close"].to_numpy())


def test_missing_key_names_path_and_lists_contents(tmp_path, eth):
    store = CandleStore(tmp_path)
    store.write("bittrex", "ETH/BTC", "5m", eth.iloc[:10])
    with pytest.raises(DataError) as info:
        store.read("bittrex", "LTC/BTC", "5m")
    message = str(info.value)
    assert str(tmp_path / "bittrex" / "LTC_BTC_5m.parquet") in message
    assert "ETH/BTC:5m" in message
    with pytest.raises(DataError, match="no venue 'kraken'.*bittrex"):
        store.read("kraken", "ETH/BTC", "5m")


def test_keys_ignore_temp_and_lock_files(tmp_path, eth):
    store = CandleStore(tmp_path)
    store.write("bittrex", "ETH/BTC", "5m", eth.iloc[:10])
    path = store.path("bittrex", "ETH/BTC", "5m")
    stale = path.parent / f".{path.name}.999.deadbeef.tmp"
    stale.write_bytes(b"PAR1 half a file")
    (path.parent / "notes.txt").write_text("not candles")
    assert store.keys() == [("bittrex", "ETH/BTC", "5m")]
    assert len(store.read("bittrex", "ETH/BTC", "5m")) == 10
    store.write("bittrex", "ETH/BTC", "5m", eth.iloc[10:20])
    assert not stale.exists()


def test_unreadable_existing_file_is_not_overwritten(tmp_path, eth):
    store = CandleStore(tmp_path)
    path = store.path("bittrex", "ETH/BTC", "5m")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"garbage")
    with pytest.raises(DataError, match="unreadable"):
        store.write("bittrex", "ETH/BTC", "5m", eth.iloc[:10])
    assert path.read_bytes() == b"garbage"


def _forkserver():
    # Children fork from a server that has already imported pandas, pyarrow and the store
    # (mmats is installed, or importable from the cwd), so a child starts in tens of
    # milliseconds and many real SIGKILL trials fit in a couple of seconds.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["mmats.data.store"])
    return context


def test_sigkill_mid_write_leaves_a_complete_file(tmp_path):
    base_rows, chunk, trials, parallel = 30_000, 1_000, 20, 4
    seed_root = tmp_path / "seed"
    CandleStore(seed_root).write(*KEY, frame(0, base_rows))
    context = _forkserver()
    rng = random.Random(7)
    killed_mid_write = 0
    for batch in range(trials // parallel):
        runs = []
        for trial in range(parallel):
            root = tmp_path / f"trial{batch}_{trial}"
            shutil.copytree(seed_root, root)
            started = context.Event()
            child = context.Process(target=_store_workers.append_forever,
                                    args=(str(root), base_rows, chunk, started), daemon=True)
            child.start()
            runs.append((root, child, started))
        for _, _, started in runs:
            assert started.wait(30), "child did not start"
        for _, child, _ in runs:
            time.sleep(rng.uniform(0.0, 0.1))
            child.kill()
            child.join(10)
            assert child.exitcode == -9
        for root, _, _ in runs:
            store = CandleStore(root)
            path = store.path(*KEY)
            temps = list(path.parent.glob("*.tmp"))
            killed_mid_write += bool(temps)
            assert store.keys() == [KEY]
            arrays = store.read_arrays(*KEY)
            rows = arrays["ts"].size
            assert rows >= base_rows and (rows - base_rows) % chunk == 0
            np.testing.assert_array_equal(arrays["ts"], T0_NS + np.arange(rows) * STEP_NS)
            np.testing.assert_array_equal(arrays["close"], frame(0, rows)["close"].to_numpy())
            if temps:  # the next writer clears what the dead one left behind
                store.write(*KEY, frame(rows, 10))
                assert not list(path.parent.glob("*.tmp"))
                assert pq.read_metadata(path).num_rows == rows + 10
    assert killed_mid_write > 0, "no trial was killed during a write; the test proved nothing"


def test_concurrent_writers_lose_no_rows(tmp_path):
    chunk, chunks = 500, 40
    context = _forkserver()
    writers = [context.Process(target=_store_workers.write_chunks,
                               args=(str(tmp_path), list(range(parity, chunks, 2)), chunk))
               for parity in (0, 1)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(60)
        assert writer.exitcode == 0
    arrays = CandleStore(tmp_path).read_arrays(*KEY)
    np.testing.assert_array_equal(arrays["ts"], T0_NS + np.arange(chunk * chunks) * STEP_NS)


def test_restored_on_error_makes_several_writes_all_or_nothing(tmp_path):
    from mmats.files import restored_on_error, write_durably

    old, new = tmp_path / "old.bin", tmp_path / "new.bin"
    old.write_bytes(b"before")
    with pytest.raises(OSError, match="disk full"):
        with restored_on_error([old, new]):
            write_durably(old, lambda handle: handle.write(b"after"), prefix=".old.")
            write_durably(new, lambda handle: handle.write(b"created"), prefix=".new.")
            raise OSError("disk full")
    assert old.read_bytes() == b"before" and not new.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.bin"]
    with restored_on_error([old, new]):
        write_durably(old, lambda handle: handle.write(b"after"), prefix=".old.")
    assert old.read_bytes() == b"after"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.bin"]
