"""The runner's fast paths give what the slow ones gave: the feeds' arrays and rows equal
their DataFrames (bad bars refused alike), the journal's batched reads and writes equal
its one-by-one ones, and a replay on one connection writes the journal a fresh
connection per tick (a cron run's) writes."""

import numpy as np
import pandas as pd
import pytest

from mmats.brokers.replay import ReplayFeed
from mmats.brokers.store_feed import StoreFeed
from mmats.data import CandleStore, load
from mmats.data.schema import VALUE_COLUMNS, candle_rows
from mmats.errors import BadBarError
from mmats.live.config import parse_config
from mmats.live.journal import Journal
from mmats.live.journal_layout import TABLES
from mmats.live.replay import replay
from mmats.live.sleeves import sleeves
from mmats.live.tick import run_tick
from mmats.types import STATE_DTYPE

STEP = 300_000_000_000  # 5 minutes


def config_of(tmp_path, models=("ema_cross", "rsi_reversion")):
    return parse_config({
        "mode": "paper",
        "markets": {"crypto": {"type": "crypto", "feed": "bittrex", "execution": "paper",
                               "symbols": ["ETH/BTC"], "timeframe": "5m"}},
        "models": [{"id": f"m{i}", "strategy": name, "market": "crypto",
                    "allocation": 1 / len(models), "costs": {"fee_bps": 10}}
                   for i, name in enumerate(models)],
        "journal": str(tmp_path / "journal.sqlite"),
        "data_root": str(tmp_path / "data"),
    })


@pytest.fixture(scope="module")
def candles():
    return load("bittrex:ETH/BTC:5m").iloc[:300].reset_index(drop=True)


def with_bad_bar(candles, at):
    bad = candles.copy()
    bad.loc[at, "high"] = np.nan
    return bad


def ts_ns(frame, i):
    return int(pd.Timestamp(frame["ts"].iloc[i]).value)


def feeds_of(candles, tmp_path):
    store = CandleStore(tmp_path / "store")
    store.write("bittrex", "ETH/BTC", "5m", candles.iloc[:10])
    candles.to_parquet(store.path("bittrex", "ETH/BTC", "5m"), index=False)  # bad bars too
    return {"replay": ReplayFeed({"ETH/BTC": candles}, "5m"),
            "store": StoreFeed(tmp_path / "store", "bittrex")}


@pytest.mark.parametrize("kind", ["replay", "store"])
def test_rows_and_arrays_equal_the_dataframes(kind, candles, tmp_path):
    feed = feeds_of(candles, tmp_path)[kind]
    for since, until in ((None, ts_ns(candles, 50)), (ts_ns(candles, 100), ts_ns(candles, 103)),
                         (ts_ns(candles, 299), ts_ns(candles, 299) + STEP)):
        frame = feed.closed_bars("ETH/BTC", "5m", since_ns=since, until_ns=until)
        rows = feed.closed_rows("ETH/BTC", "5m", since_ns=since, until_ns=until)
        assert rows == [(row[0], row[1:]) for row in candle_rows(frame)]
        assert all(type(value) is float for _, prices in rows for value in prices)
    for end, bars in ((ts_ns(candles, 120), 40), (ts_ns(candles, 10), 200)):
        frame = feed.history("ETH/BTC", "5m", end_ns=end, bars=bars)
        arrays = feed.history_arrays("ETH/BTC", "5m", end_ns=end, bars=bars)
        for name in VALUE_COLUMNS:
            np.testing.assert_array_equal(arrays[name], frame[name].to_numpy(np.float64))
            assert arrays[name].dtype == np.float64 and arrays[name].flags.c_contiguous
    arrays["close"][:] = -1.0  # a strategy writing into its window changes nothing served
    again = feed.history_arrays("ETH/BTC", "5m", end_ns=end, bars=bars)
    assert (again["close"] > 0).all()


@pytest.mark.parametrize("kind", ["replay", "store"])
def test_a_bad_bar_is_refused_alike_on_every_path(kind, candles, tmp_path):
    bad = with_bad_bar(candles, 120)
    feed = feeds_of(bad, tmp_path)[kind]
    calls = {
        "frame": lambda: feed.closed_bars("ETH/BTC", "5m", since_ns=ts_ns(bad, 100),
                                          until_ns=ts_ns(bad, 130)),
        "rows": lambda: feed.closed_rows("ETH/BTC", "5m", since_ns=ts_ns(bad, 100),
                                         until_ns=ts_ns(bad, 130)),
        "window": lambda: feed.history("ETH/BTC", "5m", end_ns=ts_ns(bad, 150), bars=40),
        "arrays": lambda: feed.history_arrays("ETH/BTC", "5m", end_ns=ts_ns(bad, 150),
                                              bars=40),
    }
    errors = {}
    for name, call in calls.items():
        with pytest.raises(BadBarError) as caught:
            call()
        errors[name] = (str(caught.value), caught.value.ts_ns, caught.value.reason)
    assert len(set(errors.values())) == 1
    assert errors["rows"][1] == ts_ns(bad, 120)
    # the bars before it are served on both paths
    rows = feed.closed_rows("ETH/BTC", "5m", since_ns=ts_ns(bad, 100),
                            until_ns=ts_ns(bad, 120))
    assert [open_ns for open_ns, _ in rows] == [ts_ns(bad, i) for i in range(101, 120)]


def test_load_states_equals_load_state_and_reads_its_own_transaction(tmp_path):
    states = {}
    with Journal(tmp_path / "j.sqlite") as journal:
        for i, sleeve_id in enumerate(("a", "b", "c")):
            state = np.zeros(1, STATE_DTYPE)
            state["cash"], state["bars"] = 100.0 + i, i
            journal.save_state(sleeve_id, state, ts_ns=1)
            states[sleeve_id] = state
        with journal.transaction():
            newer = states["b"].copy()
            newer["cash"] = 7.0
            journal.save_state("b", newer, ts_ns=2)
            journal.append_signal("m", "ETH/BTC", "HOLD", 0.0, ts_ns=2)
            # a read inside the transaction sees the appends not yet written
            assert journal.load_state("b")["cash"][0] == 7.0
            assert len(journal.rows("signals")) == 1
            journal.save_state("a", newer, ts_ns=3)
        loaded = journal.load_states(["c", "a", "missing", "b", "a"], STATE_DTYPE)
        assert list(loaded) == ["c", "a", "missing", "b"]
        assert loaded["missing"] is None
        for sleeve_id in ("a", "b", "c"):
            np.testing.assert_array_equal(loaded[sleeve_id], journal.load_state(sleeve_id))
            assert loaded[sleeve_id].flags.writeable
        assert loaded["c"]["cash"][0] == 102.0 and loaded["a"]["cash"][0] == 7.0
        assert journal.verify().ok


def test_a_rolled_back_transaction_leaves_no_row_and_the_chain_goes_on(tmp_path):
    with Journal(tmp_path / "j.sqlite") as journal:
        journal.append_signal("m", "ETH/BTC", "HOLD", 0.0, ts_ns=1)
        with pytest.raises(RuntimeError), journal.transaction():
            journal.append_signal("m", "ETH/BTC", "BUY", 1.0, ts_ns=2)
            journal.append_tick("ETH/BTC", 2, 1.0, 1.0, 1.0, 1.0, 1.0, ts_ns=2)
            raise RuntimeError("crash inside the close")
        journal.append_signal("m", "ETH/BTC", "SELL", 1.0, ts_ns=3)
        assert [row["action"] for row in journal.rows("signals")] == ["HOLD", "SELL"]
        assert journal.rows("ticks") == []
        assert [row["seq"] for row in journal.rows("chain")] == [1, 2]
        assert journal.verify().ok


def test_sleeves_are_made_once_per_configuration(tmp_path):
    config = config_of(tmp_path)
    first, again = sleeves(config, 10_000.0), sleeves(config, 10_000.0)
    assert first == again and first is not again
    assert [s.cash for s in sleeves(config, 500.0)] == [250.0, 250.0]
    for sleeve in first:
        assert sleeve.lookback == sleeve.strategy.lookback(sleeve.params)
    other = config_of(tmp_path, ("ema_cross",))
    assert [s.id for s in sleeves(other, 10_000.0)] == ["m0:ETH/BTC"]


def _journal_rows(path):
    """Every row of every table, less what the wall clock writes: the hashes, and the
    time a paper order or fill was journaled (its bar's times are in its columns)."""
    clock = {"hash", "prev_hash"}
    with Journal(path) as journal:
        assert journal.verify().ok
        return {table: [{k: v for k, v in row.items() if k not in clock and not (
            k == "ts_ns" and table in ("orders", "fills"))} for row in journal.rows(table)]
                for table in TABLES}


def test_one_connection_writes_the_journal_a_fresh_one_per_tick_writes(candles, tmp_path):
    config = config_of(tmp_path)
    data = {"ETH/BTC": candles.iloc[:150]}
    replay(config, data, tmp_path / "one.sqlite")
    feed = ReplayFeed(data, "5m")
    path = tmp_path / "cron.sqlite"
    with Journal(path, environment=config.environment):
        pass
    for now_ns in feed.close_times("ETH/BTC"):  # as replay ticked before: a cron run each
        with Journal(path, durable=False) as journal:
            run_tick(config, {"crypto": feed}, journal, int(now_ns))
    one, cron = _journal_rows(tmp_path / "one.sqlite"), _journal_rows(path)
    assert one["sleeve_states"] and one["signals"] and one["fills"]
    assert one == cron  # every row: its seq, time and payload


def test_a_state_rows_hash_is_the_canonical_json_of_the_row():
    import hashlib
    import json

    from mmats.live.journal import _dtype_text, row_hash

    state = np.zeros(1, STATE_DTYPE)
    state["cash"] = 1.5
    for sleeve_id in ("m0:ETH/BTC", 'quote " and \\ back', "ünïcode:€/₿", "nul\x00id"):
        payload = {"sleeve_id": sleeve_id, "dtype": _dtype_text(STATE_DTYPE),
                   "state": state.tobytes()}
        text = json.dumps({"table": "sleeve_states", "seq": 12, "ts_ns": 3, "payload": {
            **payload, "state": payload["state"].hex()}, "prev_hash": "ab" * 32},
            sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        assert row_hash("sleeve_states", 12, 3, payload, "ab" * 32) == \
            hashlib.sha256(text.encode("ascii")).hexdigest()
