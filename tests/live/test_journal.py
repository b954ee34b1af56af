"""The SQLite journal: typed appends, bit-exact state, hash chain, tamper and crash tests."""

import json
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from mmats.backtest import backtest
from mmats.errors import ConfigError
from mmats.live.journal import TABLES, Journal, JournalError
from mmats.sleeve import new_state
from mmats.types import FILL_DTYPE, ORDER_DTYPE, STATE_DTYPE

T0 = 1_700_000_000_000_000_000


@pytest.fixture(scope="module")
def result(eth_btc):
    return backtest("ema_cross", eth_btc, fee_bps=10)


def _fill_everything(journal, result):
    journal.append_config_snapshot({"risk": {"max_drawdown_pct": 20}, "mode": "paper"}, ts_ns=T0)
    journal.append_tick("ETH/BTC", T0, 0.05, 0.051, 0.049, 0.0505, 12.5, timeframe="5m",
                        ts_ns=T0 + 1)
    journal.append_signal("ema_cross", "ETH/BTC", "BUY", 1.5, limit_price=0.05,
                          stop_loss=0.045, take_profit=0.06, time_in_force="IOC",
                          confidence=0.7, meta={"fast": 10, "why": "cross"}, ts_ns=T0 + 2)
    for index, (order, fill) in enumerate(zip(result.orders[:4], result.fills[:4], strict=True)):
        journal.append_order("ema_cross", "ETH/BTC", f"cid-{index}", order, "NEW", ts_ns=T0 + 3)
        journal.append_fill("ema_cross", "ETH/BTC", f"cid-{index}", fill, ts_ns=T0 + 4)
    journal.append_risk_event("WARNING", "sleeve:ema_cross", "daily_loss", "near limit",
                              {"loss_pct": 4.2}, ts_ns=T0 + 5)
    journal.append_operator_action("kill", "all", "alice", "test", ts_ns=T0 + 6)
    journal.save_state("ema_cross:ETH/BTC", result.state, ts_ns=T0 + 7)


def _drop_triggers(path):
    db = sqlite3.connect(path)
    for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='trigger'").fetchall():
        db.execute(f"DROP TRIGGER {name}")
    db.commit()
    return db


def test_round_trips(tmp_path, result):
    path = tmp_path / "journal.sqlite"
    with Journal(path) as journal:
        _fill_everything(journal, result)
        mode = journal._db.execute("PRAGMA journal_mode").fetchone()[0]
        synchronous = journal._db.execute("PRAGMA synchronous").fetchone()[0]
    assert (mode, synchronous) == ("wal", 2)  # 2 = FULL
    with Journal(path) as journal:  # a fresh process sees the same rows
        fills = journal.fills()
        assert fills.dtype == FILL_DTYPE
        assert fills.tobytes() == result.fills[:4].tobytes()
        assert journal.fills("other").size == 0
        orders = journal.orders()
        assert orders.dtype == ORDER_DTYPE and orders.tobytes() == result.orders[:4].tobytes()
        frame = journal.fills_frame("ema_cross")
        assert list(frame["client_order_id"]) == [f"cid-{i}" for i in range(4)]
        assert (frame["symbol"] == "ETH/BTC").all() and (frame["qty"] == fills["qty"]).all()
        history = journal.orders_by_client_id("cid-2")
        assert len(history) == 1 and history[0]["order_id"] == result.orders[2]["order_id"]
        (signal_row,) = journal.rows("signals")
        assert signal_row["action"] == "BUY" and signal_row["time_in_force"] == "IOC"
        assert signal_row["limit_price"] == 0.05 and json.loads(signal_row["meta"])["fast"] == 10
        assert journal.rows("config_snapshots")[0]["format"] == "json"
        seqs = sorted(row["seq"] for table in TABLES for row in journal.rows(table))
        assert seqs == list(range(1, len(seqs) + 1))  # one sequence across all tables
        report = journal.verify()
        assert report.ok and report.rows_checked == len(seqs) == journal.head()[0]


def test_state_round_trip_is_bit_exact(tmp_path, result):
    fresh = new_state(10_000.0)
    with Journal(tmp_path / "j.sqlite") as journal:
        assert journal.load_state("s") is None
        journal.save_state("s", fresh, ts_ns=T0)
        journal.save_state("s", result.state, ts_ns=T0 + 1)  # the latest wins
        journal.save_state("other", fresh, ts_ns=T0 + 2)
    with Journal(tmp_path / "j.sqlite") as journal:
        loaded = journal.load_state("s")
        assert loaded.dtype == STATE_DTYPE and loaded.shape == (1,)
        assert loaded.tobytes() == result.state.tobytes()  # NaN fields included
        assert journal.load_state("other").tobytes() == fresh.tobytes()
        loaded["cash"] = 1.0  # a copy, not a view of SQLite's buffer
        with pytest.raises(JournalError, match="dtype"):
            journal.load_state("s", dtype=np.dtype([("cash", "f8")] * 1))


def test_continues_after_reopen(tmp_path, result):
    path = tmp_path / "j.sqlite"
    with Journal(path) as journal:
        journal.append_operator_action("resume", "all", "bob", ts_ns=T0)
        journal.save_state("s", result.state, ts_ns=T0)
    with Journal(path) as journal:
        state = journal.load_state("s")
        state["bars"] += 1
        assert journal.save_state("s", state, ts_ns=T0 + 1) == 3
        assert journal.verify().ok


def test_update_and_delete_are_refused(tmp_path, result):
    with Journal(tmp_path / "j.sqlite") as journal:
        _fill_everything(journal, result)
        for table in (*TABLES, "chain"):
            with pytest.raises(sqlite3.DatabaseError, match="append-only"):
                journal._db.execute(f"UPDATE {table} SET seq = seq + 1000")
            with pytest.raises(sqlite3.DatabaseError, match="append-only"):
                journal._db.execute(f"DELETE FROM {table}")
        assert journal.verify().ok


@pytest.mark.parametrize("bad, field", [
    (dict(action="SHORT"), "action"), (dict(qty=float("nan")), "qty"), (dict(qty=-1), "qty"),
    (dict(qty="x"), "qty"), (dict(limit_price=float("inf")), "limit_price"),
    (dict(stop_loss=-1.0), "stop_loss"), (dict(time_in_force="FOREVER"), "time_in_force"),
    (dict(confidence=1.5), "confidence"), (dict(meta={"x": float("nan")}), "meta"),
    (dict(model_id=""), "model_id"), (dict(ts_ns=1.5), "ts_ns"),
])
def test_signal_validation_names_the_field(tmp_path, bad, field):
    arguments = dict(model_id="m", symbol="ETH/BTC", action="BUY", qty=1.0) | bad
    with Journal(tmp_path / "j.sqlite") as journal:
        with pytest.raises(ConfigError, match=field):
            journal.append_signal(**arguments)
        assert journal.head()[0] == 0


def test_record_validation(tmp_path, result):
    with Journal(tmp_path / "j.sqlite") as journal:
        with pytest.raises(ConfigError, match="dtype"):
            journal.append_fill("m", "ETH/BTC", "c", result.orders[0])
        with pytest.raises(ConfigError, match="missing"):
            journal.append_order("m", "ETH/BTC", "c", {"order_id": 1})
        bad = result.fills[:1].copy()
        bad["qty"] = np.nan
        with pytest.raises(ConfigError, match="qty"):
            journal.append_fill("m", "ETH/BTC", "c", bad)
        with pytest.raises(ConfigError, match="level"):
            journal.append_risk_event("LOUD", "global", "x", "y")
        with pytest.raises(ConfigError, match="state"):
            journal.save_state("s", np.zeros(2, STATE_DTYPE))
        record = {name: result.fills[0][name].item() for name in FILL_DTYPE.names}
        journal.append_fill("m", "ETH/BTC", "c", record)  # a dict works too
        assert journal.fills().tobytes() == result.fills[:1].tobytes()


@pytest.fixture
def tampered(tmp_path, result):
    path = tmp_path / "j.sqlite"
    with Journal(path) as journal:
        _fill_everything(journal, result)
        rows = {row["seq"]: row for row in journal.rows("chain")}
    return path, rows


def test_edited_value_is_detected(tampered):
    path, chain = tampered
    fill_seq = next(seq for seq, row in chain.items() if row["table_name"] == "fills")
    db = _drop_triggers(path)
    db.execute("UPDATE fills SET qty = qty * 2 WHERE seq = ?", (fill_seq,))
    db.commit()
    db.close()
    with Journal(path) as journal:
        report = journal.verify()
    assert not report.ok
    assert (report.table, report.seq, report.problems[0].kind) == ("fills", fill_seq, "edited")


def test_edited_value_with_recomputed_hash_is_detected(tampered):
    from mmats.live.journal import row_hash

    path, chain = tampered
    db = _drop_triggers(path)
    columns = list(TABLES["signals"])
    row = db.execute(f"SELECT seq, ts_ns, {', '.join(columns)}, prev_hash FROM signals").fetchone()
    payload = dict(zip(columns, row[2:-1], strict=True)) | {"qty": 99.0}
    forged = row_hash("signals", row[0], row[1], payload, row[-1])
    db.execute("UPDATE signals SET qty = 99.0, hash = ? WHERE seq = ?", (forged, row[0]))
    db.commit()
    db.close()
    with Journal(path) as journal:
        report = journal.verify()
    assert not report.ok
    kinds = {(problem.seq, problem.kind) for problem in report.problems}
    assert (row[0], "edited") in kinds  # the chain index still holds the true hash
    assert (row[0] + 1, "edited") in kinds  # and the next row's prev_hash link breaks


def test_deleted_middle_row_is_detected(tampered):
    path, chain = tampered
    middle = len(chain) // 2
    table = chain[middle]["table_name"]
    db = _drop_triggers(path)
    db.execute(f"DELETE FROM {table} WHERE seq = ?", (middle,))
    db.execute("DELETE FROM chain WHERE seq = ?", (middle,))  # even with the index cleaned
    db.commit()
    db.close()
    with Journal(path) as journal:
        report = journal.verify()
    assert not report.ok and report.problems[0].kind == "deleted"
    assert report.seq == middle + 1 and str(middle) in report.problems[0].detail


def test_deleted_last_row_is_detected_by_the_chain_index(tampered):
    path, chain = tampered
    last = max(chain)
    db = _drop_triggers(path)
    db.execute(f"DELETE FROM {chain[last]['table_name']} WHERE seq = ?", (last,))
    db.commit()
    db.close()
    with Journal(path) as journal:
        report = journal.verify()
    assert not report.ok
    assert (report.table, report.seq, report.problems[0].kind) == (
        chain[last]["table_name"], last, "deleted")


def test_truncation_of_row_and_index_needs_an_outside_head(tampered):
    """Dropping the newest row *and* its index entry looks like a shorter journal; only a
    head (seq, hash) kept elsewhere reveals it: the anchor file does. Documented limit: with
    the anchor deleted too, it verifies (with a warning that truncation went unchecked)."""
    path, chain = tampered
    last = max(chain)
    with Journal(path) as journal:
        kept_head = journal.head()
        anchor = journal.anchor_path
    db = _drop_triggers(path)
    db.execute(f"DELETE FROM {chain[last]['table_name']} WHERE seq = ?", (last,))
    db.execute("DELETE FROM chain WHERE seq = ?", (last,))
    db.commit()
    db.close()
    with Journal(path) as journal:
        report = journal.verify()
    assert not report.ok and (report.head_seq, report.head_hash) != kept_head
    assert (report.problems[0].kind, report.seq) == ("truncated", last)
    anchor.unlink()
    with Journal(path) as journal:
        report = journal.verify()
    assert report.ok and (report.head_seq, report.head_hash) != kept_head
    assert "anchor_missing" in {warning.kind for warning in report.warnings}


def test_reordered_rows_are_detected(tampered):
    path, chain = tampered
    db = _drop_triggers(path)
    # swap the seq numbers of two signals-free neighbours within the fills table
    fills = [seq for seq, row in chain.items() if row["table_name"] == "fills"][:2]
    db.execute("UPDATE fills SET seq = -1 WHERE seq = ?", (fills[0],))
    db.execute("UPDATE fills SET seq = ? WHERE seq = ?", (fills[0], fills[1]))
    db.execute("UPDATE fills SET seq = ? WHERE seq = -1", (fills[1],))
    db.commit()
    db.close()
    with Journal(path) as journal:
        report = journal.verify()
    assert not report.ok
    assert {problem.kind for problem in report.problems} >= {"edited"}
    assert report.table == "fills" and report.seq == fills[0]


CHILD = textwrap.dedent("""
    import sys
    import numpy as np
    from mmats.live.journal import Journal
    from mmats.types import FILL_DTYPE, STATE_DTYPE
    fill = np.zeros(1, FILL_DTYPE)
    fill["side"], fill["qty"], fill["price"] = 1, 2.0, 0.05
    state = np.zeros(1, STATE_DTYPE)
    with Journal(sys.argv[1]) as journal:
        print("ready", flush=True)
        i = 0
        while True:
            i += 1
            journal.append_signal("m", "ETH/BTC", "BUY", float(i), meta={"i": i})
            fill["order_id"] = i
            journal.append_fill("m", "ETH/BTC", f"c{i}", fill)
            state["bars"] = i
            journal.save_state("s", state)
""")


def test_sigkill_leaves_a_consistent_journal(tmp_path):
    path = tmp_path / "crash.sqlite"
    rng = random.Random(7)
    for _ in range(20):
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(path)],
                                 stdout=subprocess.PIPE, text=True)
        assert child.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.0, 0.05))
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
        with Journal(path) as journal:
            report = journal.verify()
            assert report.ok, report.problems
            data_rows = sum(len(journal.rows(table)) for table in TABLES)
            assert data_rows == len(journal.rows("chain")) == report.head_seq
            state = journal.load_state("s")
            if state is not None:  # the newest state is a whole record, saved right after
                # the fill of the same step (each child counts from 1, so compare by seq)
                state_seq = journal.rows("sleeve_states")[-1]["seq"]
                fills = journal.fills_frame()
                before = fills[fills["seq"] < state_seq]
                assert state["bars"][0] == before["order_id"].iloc[-1]
    assert report.rows_checked > 20


def test_missing_or_foreign_file_is_unreadable(tmp_path):
    with pytest.raises(JournalError, match="does not exist"):
        Journal(tmp_path / "missing.sqlite", create=False)
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"not a database at all" * 100)
    with pytest.raises(JournalError, match="unreadable"):
        Journal(garbage, create=False)
    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).execute("CREATE TABLE x (a)").connection.close()
    with pytest.raises(JournalError, match="lacks the tables"):
        Journal(other, create=False)


def test_transaction_is_all_or_nothing(tmp_path):
    with Journal(tmp_path / "t.sqlite") as journal:
        journal.append_signal("m", "ETH/BTC", "HOLD", 0.0)
        with pytest.raises(RuntimeError):
            with journal.transaction():
                journal.append_signal("m", "ETH/BTC", "BUY", 1.0)
                journal.save_state("s", np.zeros(1, STATE_DTYPE))
                raise RuntimeError("crash in the middle of a bar")
        assert len(journal.rows("signals")) == 1 and journal.load_state("s") is None
        with journal.transaction():
            journal.append_signal("m", "ETH/BTC", "BUY", 1.0)
            journal.save_state("s", np.zeros(1, STATE_DTYPE))
        assert len(journal.rows("signals")) == 2 and journal.load_state("s") is not None
        assert journal.verify().ok


# ------------------------------------------------------------------ named queries


def test_named_queries_answer_from_indexes(tmp_path, result):
    """The runner asks the journal by name (no SQL outside journal.py), and the per-tick
    questions are served by an index, not a scan of the sleeve's history."""
    with Journal(tmp_path / "j.sqlite") as journal:
        _fill_everything(journal, result)
        for status in ("rejected", "filled", "rejected", "rejected"):
            journal.append_order("ema_cross", "ETH/BTC", f"cid-{status}", result.orders[0],
                                 status, ts_ns=T0 + 8)
        journal.append_risk_event("INFO", "market:crypto", "feeds_failing", "down", {},
                                  ts_ns=T0 + 9)
        journal.append_risk_event("INFO", "market:crypto", "feeds_recovered", "up", {},
                                  ts_ns=T0 + 10)
        assert journal.latest_final_statuses("ema_cross", "ETH/BTC",
                                             ("filled", "rejected"), 3) == ["rejected"] * 2 + [
                                                 "filled"]
        assert [f["client_order_id"] for f in journal.fills_of_order("cid-1")] == ["cid-1"]
        last = journal.last_risk_event(("feeds_failing", "feeds_recovered"), "market:crypto")
        assert last["kind"] == "feeds_recovered"
        assert journal.last_risk_event("feeds_failing", "market:other") is None
        assert len(journal.risk_events("daily_loss")) == 1
        assert len(journal.sleeve_states("ema_cross:ETH/BTC")) == 1
        assert json.loads(journal.last_config_snapshot()["text"])["mode"] == "paper"
        assert len(journal.orders_of_sleeve("ema_cross", "ETH/BTC")) == 8
        plan = " ".join(str(row) for row in journal._db.execute(
            "EXPLAIN QUERY PLAN SELECT broker_status FROM orders WHERE model_id = ? AND "
            "symbol = ? AND broker_status IN ('rejected') ORDER BY seq DESC LIMIT 3",
            ("ema_cross", "ETH/BTC")))
        assert "orders_sleeve" in plan
        plan = " ".join(str(row) for row in journal._db.execute(
            "EXPLAIN QUERY PLAN SELECT * FROM risk_events WHERE kind IN ('x') AND scope = ?",
            ("s",)))
        assert "events_kind" in plan


def test_an_older_journal_gets_the_indexes_when_opened_for_writing(tmp_path, result):
    path = tmp_path / "j.sqlite"
    with Journal(path) as journal:
        _fill_everything(journal, result)
    with sqlite3.connect(path) as db:
        db.execute("DROP INDEX orders_sleeve")
        db.execute("DROP INDEX events_kind")
    with Journal(path, create=False, readonly=True) as journal:
        assert journal.verify().ok  # an index is not part of the chain
    with Journal(path) as journal:
        names = {row[0] for row in journal._db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert {"orders_sleeve", "events_kind"} <= names
        assert journal.verify().ok


def test_no_sql_outside_the_journal():
    """Other modules ask the journal by name: no SQL condition passed to Journal.rows."""
    from pathlib import Path

    import mmats

    root = Path(mmats.__file__).parent
    offenders = [str(path.relative_to(root)) for path in root.rglob("*.py")
                 if path.name != "journal.py" and ".rows(" in path.read_text()]
    assert offenders == []
