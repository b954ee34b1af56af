"""What the tick's speed-ups keep: a SENDING row committed before its order goes out, the
anchor's fsyncs held until the orders are out (a power cut before then leaves the anchor
behind the journal, which the next tick runs from and a verification accepts, while a
forged row is still refused and a cut journal still shows), the unsettled orders read in
full once a tick, and a journal whose tables were made by other CREATE text still judged
by its columns."""

import shutil
import sqlite3

import numpy as np
import pytest

from mmats.brokers.paper import PaperBroker
from mmats.brokers.replay import ReplayFeed
from mmats.data import load
from mmats.live.config import parse_config
from mmats.live.journal import Journal, JournalError
from mmats.live.journal_layout import GENESIS_HASH, row_hash, schema_statements
from mmats.live.tick import run_tick
from mmats.types import STATE_DTYPE

BARS = 160


class PowerCut(BaseException):
    """The machine stops: nothing after it runs (not an error the runner could catch)."""


class Venue:
    """The paper venue, which can be made to lose power as an order reaches it; it notes
    what the journal held at each order's arrival."""

    def __init__(self, inner, journal_path):
        self.inner, self.journal_path = inner, journal_path
        self.cut_at_send = None  # the number of the send that cuts the power
        self.sends = 0
        self.seen_sending = []  # was the order's SENDING row committed when it arrived?
        self.anchor_unsynced = []  # were anchor lines waiting for their fsync?
        self.journal = None
        self.forwarded = []  # client ids of the orders that reached the venue
        self.marks = None  # a list the arrival of each order is noted in, if given
        self.cancels = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def cancel(self, client_order_id, symbol):
        self.cancels += 1
        return self.inner.cancel(client_order_id, symbol)

    def send(self, order):
        self.sends += 1
        if self.marks is not None:
            self.marks.append("<send>")
        with sqlite3.connect(self.journal_path) as other:  # another connection: committed rows
            statuses = [row[0] for row in other.execute(
                "SELECT broker_status FROM orders WHERE client_order_id = ?",
                (order["client_order_id"],))]
        other.close()
        self.seen_sending.append("SENDING" in statuses or "UNSENT" in statuses)
        self.anchor_unsynced.append(self.journal._anchor._unsynced)
        if self.sends == self.cut_at_send:
            raise PowerCut
        self.forwarded.append(order["client_order_id"])
        return self.inner.send(order)


def _rig(tmp_path, models=2):
    strategies = [("ema_cross", {"fast": 5, "slow": 20}),
                  ("donchian_breakout", {"channel": 10}),  # with stops: legs rest at the venue
                  ("rsi_reversion", {"period": 14})]
    specs = [{"id": f"m{i}", "strategy": strategies[i % 3][0], "market": "crypto",
              "allocation": 1.0 / models, "params": strategies[i % 3][1],
              "costs": {"fee_bps": 10}} for i in range(models)]
    config = parse_config({
        "mode": "operator",
        "markets": {"crypto": {"type": "crypto", "feed": "bittrex", "execution": "paper",
                               "symbols": ["ETH/BTC"], "timeframe": "5m"}},
        "models": specs, "journal": str(tmp_path / "journal.sqlite"),
        "data_root": str(tmp_path / "data"),
    })
    feed = ReplayFeed({"ETH/BTC": load("bittrex:ETH/BTC:5m").iloc[:BARS]}, "5m")
    clock = [0]
    venue = Venue(PaperBroker(tmp_path / "venue.sqlite", feed, "5m", symbols=["ETH/BTC"],
                              clock=lambda: clock[0]), config.journal)
    return config, feed, clock, venue


def _tick(config, feed, clock, venue, now, trace=None):
    clock[0] = int(now)
    with Journal(config.journal, sign=True) as journal:
        venue.journal = journal
        if trace is not None:
            journal._db.set_trace_callback(trace)
        return run_tick(config, {"crypto": feed}, journal, int(now), mode="operator",
                        brokers={"crypto": venue})


def test_orders_go_out_after_their_sending_row_and_before_the_anchor_sync(tmp_path):
    config, feed, clock, venue = _rig(tmp_path)
    for now in feed.close_times("ETH/BTC"):
        _tick(config, feed, clock, venue, now)
    assert venue.sends >= 5
    assert all(venue.seen_sending)  # write-ahead: committed before the venue saw it
    assert all(venue.anchor_unsynced)  # the anchor's fsync waits until the orders are out
    with Journal(config.journal) as journal:
        report = journal.verify()
        assert report.ok and report.anchor_head_seq == report.head_seq, report.problems


def test_the_newest_close_and_the_orders_it_decided_share_one_commit(tmp_path):
    config, feed, clock, venue = _rig(tmp_path, models=1)  # ema_cross: no leg to release
    merged = 0
    for now in feed.close_times("ETH/BTC"):
        statements = venue.marks = []
        _tick(config, feed, clock, venue, now, trace=statements.append)
        if "<send>" not in statements:
            continue
        before = statements[:statements.index("<send>")]
        close = max(i for i, sql in enumerate(before) if sql.startswith("INSERT INTO ticks"))
        after_close = before[close:]
        assert after_close.count("COMMIT") == 1, after_close  # the close and its orders
        commit = after_close.index("COMMIT")
        assert any(sql.startswith("INSERT INTO orders") for sql in after_close[:commit])
        merged += 1
    assert merged >= 5 and venue.sends == merged
    assert all(venue.seen_sending)
    with Journal(config.journal) as journal:
        assert journal.verify().ok


def test_a_power_cut_as_an_order_goes_out_leaves_a_journal_the_next_tick_runs_from(tmp_path):
    config, feed, clock, venue = _rig(tmp_path)
    times = list(feed.close_times("ETH/BTC"))
    anchor = config.journal.with_name(config.journal.name + ".anchor")
    cut = None
    for index, now in enumerate(times):
        before, sends = anchor.stat().st_size if anchor.exists() else 0, venue.sends
        venue.cut_at_send = sends + 1 if index > 40 and cut is None else None
        try:
            _tick(config, feed, clock, venue, now)
        except PowerCut:
            cut = index
            # the anchor lines since the tick's start were never fsync'ed: a power cut may
            # lose them all (the journal's commits were fsync'ed: they stay)
            with open(anchor, "r+b") as handle:
                handle.truncate(before)
            break
    assert cut is not None
    with Journal(config.journal, readonly=True) as journal:
        report = journal.verify()
        assert report.ok, report.problems  # behind the journal is not tampering
        assert "anchor_behind" in {warning.kind for warning in report.warnings}
        cid = journal.orders_in_states(("SENDING",))[-1]["client_order_id"]
    venue.cut_at_send = None
    for now in times[cut:]:  # the same close again: the order recovered, sent once
        _tick(config, feed, clock, venue, now)
    assert venue.forwarded.count(cid) == 1
    with Journal(config.journal) as journal:
        report = journal.verify()
        assert report.ok and report.anchor_head_seq == report.head_seq, report.problems


def test_a_cut_between_releasing_the_legs_and_the_order_places_no_legs_again(
        tmp_path, monkeypatch):
    """A sleeve whose legs were released for its closing order, and the power cut before
    that order was planned: the restart sends the order without placing legs first (they
    would be released again: a leg placed and cancelled for nothing)."""
    from mmats.live.protect import Protection

    config, feed, clock, venue = _rig(tmp_path)  # m1: donchian_breakout, legs at the venue
    release = Protection.release_before_send
    cut = []

    def release_then_cut(self):
        before = venue.cancels
        release(self)
        if venue.cancels > before and not cut:
            cut.append(True)
            raise PowerCut  # the legs' cancellation journaled, the order not yet planned

    monkeypatch.setattr(Protection, "release_before_send", release_then_cut)
    times = list(feed.close_times("ETH/BTC"))
    for index, now in enumerate(times):
        try:
            _tick(config, feed, clock, venue, now)
        except PowerCut:
            break
    assert cut, "no leg was ever released"
    with Journal(config.journal) as journal:
        head = journal.head()[0]
    sends = venue.sends
    for now in times[index:index + 3]:  # the same tick again, as a restart runs it
        _tick(config, feed, clock, venue, now)
    with Journal(config.journal) as journal:
        rows = [row for row in journal.rows("orders", "seq > ?", (head,))
                if row["model_id"] == "m1"]
        assert journal.verify().ok
    statuses = [row["broker_status"] for row in rows]
    assert statuses[0] == "SENDING", statuses  # the order first, no leg placed before it
    assert venue.sends > sends


def test_after_a_power_cut_a_forged_state_is_refused_and_a_cut_journal_shows(tmp_path):
    config, feed, clock, venue = _rig(tmp_path)
    times = list(feed.close_times("ETH/BTC"))
    for now in times[:60]:
        _tick(config, feed, clock, venue, now)
    older = tmp_path / "older.sqlite"
    shutil.copy(config.journal, older)  # closed: its WAL checkpointed into the file
    for now in times[60:80]:
        _tick(config, feed, clock, venue, now)
    _forge_state(config.journal, "m0:ETH/BTC")
    with Journal(config.journal) as journal:
        with pytest.raises(JournalError, match="fails its signature check"):
            journal.load_state("m0:ETH/BTC")
        assert "forged" in {problem.kind for problem in journal.verify().problems}
    shutil.copy(older, config.journal)  # an older copy put back: the newest rows cut off
    with Journal(config.journal) as journal:
        assert "truncated" in {problem.kind for problem in journal.verify().problems}


def _forge_state(path, sleeve_id):
    """Append a state with a valid hash chain and no signature (written without the key)."""
    with sqlite3.connect(path) as db:
        seq, prev_hash = db.execute("SELECT seq, hash FROM chain ORDER BY seq DESC LIMIT 1"
                                    ).fetchone() or (0, GENESIS_HASH)
        dtype, _ = db.execute("SELECT dtype, state FROM sleeve_states ORDER BY seq DESC "
                              "LIMIT 1").fetchone()
        state = np.zeros(1, dtype=STATE_DTYPE)
        state[0]["cash"] = 1e9
        payload = {"sleeve_id": sleeve_id, "dtype": dtype, "state": state.tobytes()}
        ts_ns = 1
        digest = row_hash("sleeve_states", seq + 1, ts_ns, payload, prev_hash)
        db.execute("INSERT INTO sleeve_states VALUES (?, ?, ?, ?, ?, ?, ?)",
                   (seq + 1, ts_ns, sleeve_id, dtype, payload["state"], prev_hash, digest))
        db.execute("INSERT INTO chain VALUES (?, 'sleeve_states', ?, NULL)", (seq + 1, digest))
    db.close()


def test_a_tick_reads_the_unsettled_orders_in_full_once(tmp_path):
    config, feed, clock, venue = _rig(tmp_path, models=4)
    full_reads, ticks = [], 0
    for now in feed.close_times("ETH/BTC"):
        statements = []
        _tick(config, feed, clock, venue, now, trace=statements.append)
        full_reads.append(sum("GROUP BY client_order_id" in sql for sql in statements))
        ticks += 1
    assert venue.sends >= 5
    assert max(full_reads) == 1 and sum(full_reads) == ticks


def test_the_unsettled_orders_known_follow_appends_and_a_rollback(tmp_path):
    """The desk's incremental view equals a fresh full read after appends, a rolled-back
    transaction and appends after it (reaching the rolled-back head's seq again)."""
    from mmats.live.operator import UNSETTLED, Desk
    from mmats.live.tick import TickReport
    from mmats.types import ORDER_DTYPE

    config, feed, clock, venue = _rig(tmp_path)
    order = np.zeros(1, dtype=ORDER_DTYPE)[0]
    with Journal(config.journal) as journal:
        desk = Desk(config, [], {}, {}, journal, 0, TickReport())

        def fresh():
            return {row["client_order_id"]: row["seq"]
                    for row in journal.orders_in_states(UNSETTLED)}

        def known():
            return {cid: row["seq"] for cid, row in desk._unsettled_orders().items()}

        assert known() == fresh() == {}
        journal.append_order("m", "ETH/BTC", "a", order, broker_status="SENDING")
        journal.append_order("m", "ETH/BTC", "b", order, broker_status="SENDING")
        assert list(known()) == ["a", "b"] and known() == fresh()
        journal.append_order("m", "ETH/BTC", "a", order, broker_status="filled")
        journal.append_order("m", "ETH/BTC", "c", order, broker_status="open")
        assert known() == fresh() and list(known()) == ["b", "c"]
        with pytest.raises(RuntimeError), journal.transaction():
            journal.append_order("m", "ETH/BTC", "d", order, broker_status="SENDING")
            journal.append_order("m", "ETH/BTC", "b", order, broker_status="filled")
            assert known() == fresh() and list(known()) == ["c", "d"]
            raise RuntimeError("rolled back")
        journal.append_order("m", "ETH/BTC", "e", order, broker_status="UNKNOWN")
        journal.append_order("m", "ETH/BTC", "c", order, broker_status="canceled")
        assert known() == fresh() and list(known()) == ["b", "e"]


def test_tables_made_by_other_create_text_are_judged_by_their_columns(tmp_path):
    path = tmp_path / "other_text.sqlite"
    db = sqlite3.connect(path, isolation_level=None)
    for statement in schema_statements():  # the same columns, spelled otherwise
        db.execute(statement.replace("seq INTEGER PRIMARY KEY", "seq  INTEGER  PRIMARY KEY"))
    db.executemany("INSERT INTO meta VALUES (?, ?)", [
        ("layout", "2"), ("journal_id", "00112233aabbccdd"), ("signing", "none"),
        ("key_id", "")])
    db.close()
    with Journal(path) as journal:
        journal.save_state("s", np.zeros(1, dtype=STATE_DTYPE))
        assert journal.verify().ok
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("ALTER TABLE ticks ADD COLUMN venue TEXT")
    db.close()
    with pytest.raises(JournalError, match=r"table ticks lacks the columns \[\] and has "
                                           r"unexpected columns \['venue'\]"):
        Journal(path)


def test_an_order_the_venue_reports_unchanged_is_not_journaled_again(tmp_path):
    """Each tick looks up the orders not settled yet; one the venue reports as the journal
    already has it (no new fill, the same status) writes nothing: no row, no commit."""
    config, feed, clock, venue = _rig(tmp_path)
    for now in feed.close_times("ETH/BTC"):
        _tick(config, feed, clock, venue, now)
    with Journal(config.journal) as journal:
        rows = journal.rows("orders")
    history: dict[str, list[str]] = {}
    for row in rows:
        history.setdefault(row["client_order_id"], []).append(row["broker_status"])
    assert sum("open" in statuses for statuses in history.values()) >= 3  # legs resting
    for cid, statuses in history.items():
        assert all(a != b for a, b in zip(statuses, statuses[1:], strict=False)), (cid, statuses)
