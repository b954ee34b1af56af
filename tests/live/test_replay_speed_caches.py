"""What the replay's speed-ups must not change: a Book's borrowed scratch arrays never
leak one close into another, records copied as bytes are independent copies equal to the
field-by-field ones, the journal's signatures equal hmac's, an anchor line's cached
second follows the clock, the journal's transaction context commits, nests and rolls
back as before, the scopes' books a tick loads from a connection that knows them still
see another writer's row and refuse a forged one, and a replay's equity curves equal
the journal's state rows."""

import hmac
import sqlite3

import numpy as np
import pytest
from test_fast_paths import config_of  # the same two-model paper configuration

from mmats.data import load
from mmats.live import closes
from mmats.live.closes import Book, book_id, by_close, sleeve_bar
from mmats.live.journal import Journal, JournalError, row_hash
from mmats.live.journal_signing import Anchor, Signer
from mmats.live.portfolio import BOOK_DTYPE, copy_records, new_book, pack, pack_states
from mmats.live.replay import replay
from mmats.live.sleeves import sleeves
from mmats.sleeve import new_state
from mmats.types import CONFIG_DTYPE, STATE_DTYPE

T0 = 1_700_000_000_000_000_000
STEP = 300_000_000_000


@pytest.fixture(scope="module")
def candles():
    return load("bittrex:ETH/BTC:5m").iloc[:120].reset_index(drop=True)


def _closes(all_sleeves, candles, values):
    """Each bar of ``candles`` for every sleeve, grouped by close, with its values."""
    bars = [sleeve_bar(order, sleeve, int(row.ts.value), (row.open, row.high, row.low,
                                                           row.close, row.volume))
            for order, sleeve in enumerate(all_sleeves) for row in candles.itertuples()]
    return [(group, [values[bar.order][i % len(values[bar.order])]
                     for i, bar in enumerate(group)]) for group in by_close(bars)]


def _run(book, steps):
    """Every close through ``book``: the fills, orders and decisions, as plain values."""
    out = []
    for group, values in steps:
        done, events = book.close(group, values)
        out.append(([(bar.sleeve.id, [f.tobytes() for f in fills],
                      None if order is None else order.tobytes(), why)
                     for bar, fills, order, (_, _, why) in done], events))
    return out


def test_books_that_share_a_layout_close_as_each_alone(tmp_path, candles):
    config = config_of(tmp_path)
    all_sleeves = sleeves(config, 10_000.0)
    signals = {0: [(1.0, np.nan, np.nan), (-1.0, 0.001, np.nan), (np.nan,) * 3],
               1: [(0.5, np.nan, 0.002), (0.0, np.nan, np.nan)]}
    steps = _closes(all_sleeves, candles, signals)

    def fresh():
        return Book(config, all_sleeves, {s.id: new_state(s.cash) for s in all_sleeves})

    alone = _run(fresh(), steps)
    first, second = fresh(), fresh()  # one layout, one scratch pool, closes interleaved
    together_first, together_second = [], []
    for step in steps:
        together_first += _run(first, [step])
        together_second += _run(second, [step])
    assert together_first == alone and together_second == alone
    assert first.states[all_sleeves[0].id].tobytes() == second.states[all_sleeves[0].id].tobytes()


def test_what_a_close_returns_is_not_overwritten_by_the_next(tmp_path, candles):
    config = config_of(tmp_path, models=("ema_cross",))
    all_sleeves = sleeves(config, 10_000.0)
    book = Book(config, all_sleeves, {s.id: new_state(s.cash) for s in all_sleeves})
    steps = _closes(all_sleeves, candles, {0: [(1.0, np.nan, np.nan), (-1.0, np.nan, np.nan)]})
    kept = []
    for group, values in steps:
        done, _ = book.close(group, values)
        kept += [(fills, order, [f.tobytes() for f in fills],
                  None if order is None else order.tobytes()) for _, fills, order, _ in done]
    assert any(fills for fills, *_ in kept)  # the values traded: there were fills to keep
    for fills, order, fill_bytes, order_bytes in kept:
        assert [f.tobytes() for f in fills] == fill_bytes
        assert (None if order is None else order.tobytes()) == order_bytes


def test_a_close_larger_than_the_scratch_gets_its_own(tmp_path, candles):
    config = config_of(tmp_path, models=("ema_cross",))
    all_sleeves = sleeves(config, 10_000.0)
    layout = closes._layout(config, all_sleeves)
    small = layout.borrow_scratch(1)
    layout.give_back(small)
    big = layout.borrow_scratch(len(small.rows) + 3)
    assert len(big.rows) >= len(small.rows) + 3 and big is not small
    again = layout.borrow_scratch(1)
    assert again is not layout.borrow_scratch(1)  # two closes at once: two sets


def test_records_copied_as_bytes_equal_the_field_by_field_copies():
    rng = np.random.default_rng(3)
    states = {f"s{i}": np.frombuffer(rng.bytes(STATE_DTYPE.itemsize), dtype=STATE_DTYPE).copy()
              for i in range(4)}
    packed = pack_states(list(states), states)
    expected = np.empty(4, dtype=STATE_DTYPE)
    for i, state in enumerate(states.values()):
        expected[i] = state[0]
    assert packed.tobytes() == expected.tobytes() and packed.dtype == STATE_DTYPE
    assert packed.flags.writeable and packed.flags.aligned
    packed["cash"] = 123.0  # a copy: the sleeves' own states are untouched
    assert all(state["cash"][0] != 123.0 for state in states.values())
    assert pack([], {}, STATE_DTYPE).shape == (0,)

    books = [new_book(100.0), new_book(50.0)]
    assert pack(range(2), books, BOOK_DTYPE)["equity_peak"].tolist() == [100.0, 50.0]
    other = np.zeros(1, dtype=[("day", "<i4"), ("day_start_equity", "<f4"),
                               ("equity_peak", "<f8"), ("loss_tripped_day", "<i8"),
                               ("halted", "<i8")])
    other["equity_peak"] = 7.0  # another dtype is still cast record by record
    assert pack([0], [other], BOOK_DTYPE)["equity_peak"].tolist() == [7.0]

    cfgs = np.zeros(3, dtype=CONFIG_DTYPE)
    cfgs["fee_bps"] = [1.0, 2.0, 3.0]
    copied = copy_records(cfgs)
    assert copied.tobytes() == cfgs.tobytes() and copied.dtype == CONFIG_DTYPE
    copied["fee_bps"] = 9.0
    assert cfgs["fee_bps"].tolist() == [1.0, 2.0, 3.0]


@pytest.mark.parametrize("key_size", [1, 32, 64, 65, 100])
def test_signatures_equal_hmacs(key_size):
    key = bytes((7 * i + 1) % 256 for i in range(key_size))
    signer = Signer(key, "0123456789abcdef")
    for seq in (1, 12345):
        assert signer.row(seq, "fills", "ab" * 32) == hmac.digest(
            key, f"row|0123456789abcdef|{seq}|fills|{'ab' * 32}".encode(), "sha256").hex()
        assert signer.anchor(seq, "ticks", "cd" * 32, "2024-01-01T00:00:00.000001Z") == \
            hmac.digest(key, f"anchor|0123456789abcdef|{seq}|ticks|{'cd' * 32}|"
                        "2024-01-01T00:00:00.000001Z".encode(), "sha256").hex()
        assert signer.row_ok(seq, "fills", "ab" * 32, signer.row(seq, "fills", "ab" * 32))


def test_an_anchor_lines_time_follows_the_clock(tmp_path, monkeypatch):
    clock = iter([1_700_000_000_123_456_789, 1_700_000_000_999_999_000,
                  1_700_000_001_000_001_000, 1_800_000_000_000_000_000])
    monkeypatch.setattr("mmats.live.journal_signing.time.time_ns", lambda: next(clock))
    anchor = Anchor(tmp_path / "j.anchor", durable=False)
    for seq in range(1, 5):
        anchor.append(seq, "ticks", "0" * 64, "abc", None)
    anchor.close()
    lines, damaged = anchor.read()
    assert not damaged
    assert [line.time for line in lines] == [
        "2023-11-14T22:13:20.123456Z", "2023-11-14T22:13:20.999999Z",
        "2023-11-14T22:13:21.000001Z", "2027-01-15T08:00:00.000000Z"]


def test_a_transaction_commits_nests_and_rolls_back(tmp_path):
    path = tmp_path / "journal.sqlite"
    with Journal(path) as journal:
        with journal.transaction() as inside:
            assert inside is journal
            journal.append_tick("ETH/BTC", T0, 1.0, 1.0, 1.0, 1.0, 1.0, ts_ns=T0)
            with journal.transaction():  # nested: part of the outer one
                journal.append_tick("ETH/BTC", T0 + STEP, 1.0, 1.0, 1.0, 1.0, 1.0, ts_ns=T0)
            with sqlite3.connect(path) as other:  # nothing committed yet
                assert other.execute("SELECT count(*) FROM ticks").fetchone()[0] == 0
        head = journal.head()
        with pytest.raises(RuntimeError, match="inside"), journal.transaction():
            journal.append_tick("ETH/BTC", T0 + 2 * STEP, 1.0, 1.0, 1.0, 1.0, 1.0, ts_ns=T0)
            with journal.transaction():
                raise RuntimeError("inside the nested one")
        assert journal.head() == head and len(journal.rows("ticks")) == 2
        journal.append_tick("ETH/BTC", T0 + 3 * STEP, 1.0, 1.0, 1.0, 1.0, 1.0, ts_ns=T0)
        assert journal.verify().ok
    with Journal(path) as again:
        assert len(again.rows("ticks")) == 3 and again.verify().ok


def test_a_failed_commit_rolls_back_and_the_chain_goes_on(tmp_path):
    path = tmp_path / "journal.sqlite"
    with Journal(path) as journal:
        journal.append_tick("ETH/BTC", T0, 1.0, 1.0, 1.0, 1.0, 1.0, ts_ns=T0)
        head = journal.head()
        with pytest.raises(sqlite3.IntegrityError), journal.transaction():
            journal.append_tick("ETH/BTC", T0 + STEP, 1.0, 1.0, 1.0, 1.0, 1.0, ts_ns=T0)
            row = journal._pending["ticks"][0]
            journal._pending["ticks"].append((row[0] - 1, *row[1:]))  # seq taken: the flush fails
        assert journal.head() == head and not journal._pending
        journal.append_tick("ETH/BTC", T0 + 2 * STEP, 1.0, 1.0, 1.0, 1.0, 1.0, ts_ns=T0)
        assert journal.verify().ok and len(journal.rows("ticks")) == 2


def _forge_book(path, scope_id, seq_shift=1):
    """Append a book state without the key, its sha256 chain correct."""
    db = sqlite3.connect(path)
    seq, prev_hash = db.execute("SELECT seq, hash FROM chain ORDER BY seq DESC LIMIT 1").fetchone()
    dtype_text, blob = db.execute("SELECT dtype, state FROM sleeve_states WHERE sleeve_id = ? "
                                  "ORDER BY seq DESC LIMIT 1", (scope_id,)).fetchone()
    book = np.frombuffer(blob, dtype=BOOK_DTYPE).copy()
    book["equity_peak"] = 1e9  # no drawdown limit would ever trip
    payload = {"sleeve_id": scope_id, "dtype": dtype_text, "state": book.tobytes()}
    digest = row_hash("sleeve_states", seq + seq_shift, T0 + 9, payload, prev_hash)
    db.execute("INSERT INTO sleeve_states (seq, ts_ns, sleeve_id, dtype, state, prev_hash, hash)"
               " VALUES (?, ?, ?, ?, ?, ?, ?)",
               (seq + seq_shift, T0 + 9, *payload.values(), prev_hash, digest))
    db.execute("INSERT INTO chain (seq, table_name, hash, sig) VALUES (?, ?, ?, NULL)",
               (seq + seq_shift, "sleeve_states", digest))
    db.commit()
    db.close()
    return seq + seq_shift


def test_the_books_a_tick_loads_see_another_writer_and_refuse_a_forger(tmp_path):
    config = config_of(tmp_path, models=("ema_cross",))
    all_sleeves = sleeves(config, 10_000.0)
    states = {s.id: new_state(s.cash) for s in all_sleeves}
    path = tmp_path / "journal.sqlite"
    with Journal(path, sign=True) as journal, Journal(path) as other:
        book = Book(config, all_sleeves, states, journal)
        scope = book.scopes[0]
        with journal.transaction():  # as the journal stage saves them
            for each in book.scopes:
                journal.save_state(book_id(each), each.book, ts_ns=T0)
        again = Book(config, all_sleeves, states, journal)  # known to this connection
        assert again.scopes[0].book.tobytes() == scope.book.tobytes()
        moved = scope.book.copy()
        moved["equity_peak"] = 12_345.0
        other.save_state(book_id(scope), moved, ts_ns=T0 + 1)  # another writer, signed
        seen = Book(config, all_sleeves, states, journal)
        assert seen.scopes[0].book["equity_peak"][0] == 12_345.0
        forged = _forge_book(path, book_id(scope))
        with pytest.raises(JournalError, match=f"sleeve_states seq {forged} .* signature"):
            Book(config, all_sleeves, states, journal)


def test_a_replays_equity_curves_are_its_state_rows(tmp_path, candles):
    config = config_of(tmp_path)
    result = replay(config, {"ETH/BTC": candles}, tmp_path / "journal.sqlite")
    with Journal(tmp_path / "journal.sqlite", readonly=True) as journal:
        for sleeve in sleeves(config, 10_000.0):
            rows = journal.sleeve_states(sleeve.id)
            assert journal.state_history(sleeve.id) == [(r["ts_ns"], r["state"]) for r in rows]
            equity = [float(np.frombuffer(r["state"], dtype=STATE_DTYPE)[0]["equity"])
                      for r in rows]
            assert result.equity[sleeve.id].tolist() == equity
