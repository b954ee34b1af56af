"""A journal that cannot be forged or cut short unnoticed: signed rows, the anchor file,
and what verify (and scripts/journal.py verify) reports for each kind of tampering.

Each attack is done as an attacker without the key would: straight through sqlite3,
triggers dropped where UPDATE or DELETE is needed, sha256 hashes recomputed with the
journal's own ``row_hash``.
"""

import json
import logging
import os
import sqlite3
import subprocess
import sys

import numpy as np
import pytest

from mmats import secrets
from mmats.live import journal_signing
from mmats.live.journal import TABLES, Journal, JournalError, row_hash
from mmats.sleeve import new_state
from mmats.types import FILL_DTYPE

T0 = 1_700_000_000_000_000_000
PASSPHRASE = "journal signing test passphrase"
SLEEVE = "ema_cross:ETH/BTC"


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A secrets store of this test's own, readable without a prompt (as with cron and
    MMATS_SECRETS_PASSPHRASE set); the process's key cache starts empty."""
    monkeypatch.setenv(secrets.FILE_ENV, str(tmp_path / "secrets.enc"))
    monkeypatch.setenv(secrets.PASSPHRASE_ENV, PASSPHRASE)
    monkeypatch.setattr(journal_signing, "_KEYS", {})
    return tmp_path / "secrets.enc"


def _lose_the_store(monkeypatch):
    """As a process started without the passphrase (a cron job set up wrong) would be."""
    monkeypatch.delenv(secrets.PASSPHRASE_ENV)
    monkeypatch.setattr(journal_signing, "_KEYS", {})


def _fill(journal, *, commits=6):
    """A small signed history: a config, ticks, fills and sleeve states, partly in
    transactions (one anchor line per commit)."""
    journal.append_config_snapshot({"mode": "paper"}, ts_ns=T0)
    state = new_state(10_000.0)
    fill = np.zeros(1, FILL_DTYPE)
    fill["side"], fill["qty"], fill["price"] = 1, 2.0, 0.05
    for step in range(commits):
        with journal.transaction():
            journal.append_tick("ETH/BTC", T0 + step, 0.05, 0.051, 0.049, 0.0505, 12.5,
                                ts_ns=T0 + step)
            fill["order_id"] = step
            journal.append_fill("ema_cross", "ETH/BTC", f"c{step}", fill, ts_ns=T0 + step)
            state["bars"] = step
            journal.save_state(SLEEVE, state, ts_ns=T0 + step)


@pytest.fixture
def signed(store, tmp_path):
    """A signed journal with a few commits: its path."""
    path = tmp_path / "journal.sqlite"
    with Journal(path) as journal:
        assert journal.signed
        _fill(journal)
    return path


def _anchor(path):
    return path.with_name(path.name + ".anchor")


def _verify(path, **kwargs):
    with Journal(path, readonly=True, **kwargs) as journal:
        return journal.verify()


def _script(*arguments):
    return subprocess.run([sys.executable, "scripts/journal.py", "verify", *map(str, arguments)],
                          capture_output=True, text=True, timeout=120, env=dict(os.environ),
                          cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))


def _drop_triggers(path):
    db = sqlite3.connect(path)
    for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='trigger'").fetchall():
        db.execute(f"DROP TRIGGER {name}")
    return db


def _all_rows(db):
    """Every row of every table as (seq, table, ts_ns, payload), in seq order."""
    rows = []
    for table, columns in TABLES.items():
        quoted = ", ".join(f'"{name}"' for name in columns)
        for row in db.execute(f"SELECT seq, ts_ns, {quoted} FROM {table}"):
            rows.append((row[0], table, row[1], dict(zip(columns, row[2:], strict=True))))
    return sorted(rows, key=lambda row: row[0])


# -- the signed journal works as before ------------------------------------------------------


def test_signed_journal_round_trip_and_anchor_lines(signed):
    report = _verify(signed)
    assert report.ok and report.signed and not report.warnings, report.warnings
    assert report.anchor_head_seq == report.head_seq == 1 + 6 * 3
    lines = _anchor(signed).read_text().splitlines()
    assert len(lines) == 1 + 6  # one line per commit, not per row
    fields = dict(part.split("=", 1) for part in lines[-1].split())
    assert (int(fields["seq"]), fields["table"]) == (report.head_seq, "sleeve_states")
    assert fields["hash"] == report.head_hash and len(fields["sig"]) == 64
    assert fields["time"].endswith("Z")
    with Journal(signed) as journal:  # reopened: goes on signed
        journal.append_signal("ema_cross", "ETH/BTC", "HOLD", 0.0)
        assert all(row["sig"] for row in journal.rows("chain"))
    assert _verify(signed).ok


def test_rollback_writes_no_anchor_line(signed):
    before = _anchor(signed).read_text()
    with Journal(signed) as journal, pytest.raises(RuntimeError):
        with journal.transaction():
            journal.append_signal("ema_cross", "ETH/BTC", "BUY", 1.0)
            raise RuntimeError("crash in the middle of a bar")
    assert _anchor(signed).read_text() == before and _verify(signed).ok


# -- (a) a forged append with a correct sha256 chain -------------------------------------


@pytest.mark.parametrize("signature", ["none", "copied"])
def test_forged_append_with_valid_hashes_is_caught(signed, signature):
    db = sqlite3.connect(signed)
    seq, prev_hash, old_sig = db.execute(
        "SELECT seq, hash, sig FROM chain ORDER BY seq DESC LIMIT 1").fetchone()
    sleeve, dtype_text, blob = db.execute(
        "SELECT sleeve_id, dtype, state FROM sleeve_states ORDER BY seq DESC LIMIT 1").fetchone()
    rich = np.frombuffer(blob, dtype=new_state(1.0).dtype).copy()
    rich["cash"] = 1e9
    payload = {"sleeve_id": sleeve, "dtype": dtype_text, "state": rich.tobytes()}
    digest = row_hash("sleeve_states", seq + 1, T0 + 99, payload, prev_hash)
    db.execute("INSERT INTO sleeve_states (seq, ts_ns, sleeve_id, dtype, state, prev_hash, hash) "
               "VALUES (?, ?, ?, ?, ?, ?, ?)", (seq + 1, T0 + 99, *payload.values(), prev_hash,
                                                digest))
    sig = old_sig if signature == "copied" else None
    db.execute("INSERT INTO chain (seq, table_name, hash, sig) VALUES (?, ?, ?, ?)",
               (seq + 1, "sleeve_states", digest, sig))
    db.commit()
    db.close()
    with Journal(signed, readonly=True) as journal:  # the forged state is the newest
        assert journal.load_state(SLEEVE)["cash"][0] == 1e9
    with Journal(signed) as journal, pytest.raises(JournalError, match=(
            f"sleeve_states seq {seq + 1} .* fails its signature check")):
        journal.load_state(SLEEVE)  # but a restart refuses to resume from it
    report = _verify(signed)
    assert not report.ok
    first = report.problems[0]
    assert (first.table, first.seq, first.kind) == ("sleeve_states", seq + 1, "forged")
    assert str(seq + 1) in str(first) and "sleeve_states" in str(first)

    done = _script("--journal", signed)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "table sleeve_states seq" in done.stdout and "forged" in done.stdout
    done = _script("--journal", signed, "--json")
    assert done.returncode == 1
    problem = json.loads(done.stdout)["problems"][0]
    assert (problem["table"], problem["seq"], problem["kind"]) == (
        "sleeve_states", seq + 1, "forged")


def test_forged_anchor_line_is_caught(signed):
    lines = _anchor(signed).read_text().splitlines()
    fields = dict(part.split("=", 1) for part in lines[-1].split())
    fields["seq"] = str(int(fields["seq"]) + 5)
    with open(_anchor(signed), "a") as handle:
        handle.write(" ".join(f"{name}={value}" for name, value in fields.items()) + "\n")
    report = _verify(signed)
    assert not report.ok
    assert [(p.table, p.seq, p.kind) for p in report.problems] == [
        ("anchor", int(fields["seq"]), "anchor_forged")]
    assert f"line {len(lines) + 1}" in report.problems[0].detail


# -- (b) the chain rewritten from row k ---------------------------------------------------


def _rewrite_from(path, first_seq, change, *, keep_signatures=True):
    """Change row ``first_seq``'s payload and recompute every sha256 hash and link from it
    on, in its table and in the chain index, as one without the key can."""
    db = _drop_triggers(path)
    prev_hash = db.execute("SELECT hash FROM chain WHERE seq = ?",
                           (first_seq - 1,)).fetchone()[0]
    for seq, table, ts_ns, payload in _all_rows(db):
        if seq < first_seq:
            continue
        if seq == first_seq:
            payload = change(payload)
        digest = row_hash(table, seq, ts_ns, payload, prev_hash)
        columns = ", ".join(f'"{name}" = ?' for name in payload)
        db.execute(f"UPDATE {table} SET {columns}, prev_hash = ?, hash = ? WHERE seq = ?",
                   (*payload.values(), prev_hash, digest, seq))
        sig = "sig" if keep_signatures else "NULL"
        db.execute(f"UPDATE chain SET hash = ?, sig = {sig} WHERE seq = ?", (digest, seq))
        prev_hash = digest
    db.commit()
    db.close()


@pytest.mark.parametrize("keep_signatures", [True, False])
def test_chain_rewritten_from_row_k_is_caught_at_k(signed, keep_signatures):
    with Journal(signed, readonly=True) as journal:
        k = journal.rows("fills")[2]["seq"]
    _rewrite_from(signed, k, lambda payload: payload | {"qty": 200.0},
                  keep_signatures=keep_signatures)
    with Journal(signed, readonly=True) as journal:  # the sha256 chain alone is intact
        assert journal.fills()["qty"][2] == 200.0
    with Journal(signed) as journal, pytest.raises(JournalError, match="signature check"):
        journal.load_state(SLEEVE)  # the newest state is after row k: rewritten too
    report = _verify(signed)
    assert not report.ok
    assert {p.kind for p in report.problems} == {"rewritten"}  # no chain problem at all
    first = report.problems[0]
    assert (first.table, first.seq, first.kind) == ("fills", k, "rewritten")
    # without the anchor to tell rewritten from appended, still caught at row k
    _anchor(signed).unlink()
    first = _verify(signed).problems[0]
    assert (first.table, first.seq, first.kind) == ("fills", k, "forged")


# -- (c) the newest rows deleted from the tables and the chain index ---------------------


@pytest.mark.parametrize("count", [1, 4])
def test_truncated_journal_is_caught_by_the_anchor(signed, count):
    with Journal(signed, readonly=True) as journal:
        head_seq = journal.head()[0]
        chain = {row["seq"]: row["table_name"] for row in journal.rows("chain")}
    db = _drop_triggers(signed)
    for seq in range(head_seq - count + 1, head_seq + 1):
        db.execute(f"DELETE FROM {chain[seq]} WHERE seq = ?", (seq,))
        db.execute("DELETE FROM chain WHERE seq = ?", (seq,))
    db.commit()
    db.close()
    report = _verify(signed)
    assert not report.ok and report.head_seq == head_seq - count
    first = report.problems[0]
    assert (first.table, first.seq, first.kind) == ("chain", head_seq - count + 1, "truncated")
    assert f"head seq {head_seq}" in first.detail and str(_anchor(signed)) in first.detail
    done = _script("--journal", signed)
    assert done.returncode == 1 and "truncated" in done.stdout, done.stdout + done.stderr


def test_an_older_copy_put_back_is_caught(signed, tmp_path):
    old = tmp_path / "old.sqlite"
    old.write_bytes(signed.read_bytes())  # closed, so the WAL is checkpointed into the file
    with Journal(signed) as journal:
        journal.append_signal("ema_cross", "ETH/BTC", "SELL", 1.0)
    signed.write_bytes(old.read_bytes())
    report = _verify(signed)
    assert [problem.kind for problem in report.problems] == ["truncated"]


# -- (d) the anchor's tail cut, the journal untouched ------------------------------------


def test_anchor_cut_alone_is_a_warning_not_tampering(signed):
    """Decided: a journal whose rows all verify is ok even if the anchor lags; the lag is a
    warning (a crash between a commit and its anchor line does the same), and --strict
    turns it into a failure. The next commit anchors the head again."""
    lines = _anchor(signed).read_text().splitlines(keepends=True)
    _anchor(signed).write_text("".join(lines[:-3]))
    anchored = int(lines[-4].split()[0].split("=")[1])
    report = _verify(signed)
    assert report.ok and report.anchor_head_seq == anchored
    assert [(w.seq, w.kind) for w in report.warnings] == [(anchored + 1, "anchor_behind")]
    assert f"seq {anchored}" in report.warnings[0].detail
    assert _script("--journal", signed).returncode == 0
    done = _script("--journal", signed, "--strict")
    assert done.returncode == 1 and "anchor_behind" in done.stdout
    with Journal(signed) as journal:
        journal.append_signal("ema_cross", "ETH/BTC", "HOLD", 0.0)
    report = _verify(signed)
    assert report.ok and not report.warnings


def test_torn_anchor_line_is_a_warning(signed):
    with open(_anchor(signed), "a") as handle:
        handle.write("seq=99 table=fi")  # a crash in the middle of a write
    report = _verify(signed)
    assert report.ok and [w.kind for w in report.warnings] == ["anchor_damaged"]


def test_anchor_elsewhere(store, tmp_path):
    (tmp_path / "remote").mkdir()
    anchor = tmp_path / "remote" / "journal.anchor"
    path = tmp_path / "journal.sqlite"
    with Journal(path, anchor=anchor) as journal:
        _fill(journal, commits=2)
    assert anchor.is_file() and not _anchor(path).exists()
    assert _verify(path, anchor=anchor).ok
    assert [w.kind for w in _verify(path).warnings] == ["anchor_missing"]
    assert _script("--journal", path, "--anchor", anchor, "--strict").returncode == 0
    with pytest.raises(JournalError, match="folder of its anchor"):
        Journal(path, anchor=tmp_path / "nowhere" / "journal.anchor")


# -- (e) the key stays secret ------------------------------------------------------------


def test_signing_key_never_leaves_the_store(store, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    path = tmp_path / "journal.sqlite"
    with Journal(path) as journal:
        _fill(journal)
        signer_text = repr(journal._signer)
        report = journal.verify()
    key_hex = secrets.get_secret(journal_signing.KEY_ENTRY)[journal_signing.KEY_FIELD]
    key = bytes.fromhex(key_hex)
    assert report.ok and report.signed
    written = b"".join(file.read_bytes() for file in tmp_path.iterdir()
                       if file.name.startswith("journal.sqlite"))
    assert written and _anchor(path).read_bytes()
    for secret in (key, key_hex.encode(), key_hex.upper().encode()):
        assert secret not in written
    assert key_hex not in caplog.text and key_hex not in signer_text
    assert key_hex not in json.dumps(report.to_dict())
    done = _script("--journal", path, "--json")
    assert done.returncode == 0 and key_hex not in done.stdout + done.stderr
    # nor in the message when the store holds another key
    secrets.set_secret(journal_signing.KEY_ENTRY, {journal_signing.KEY_FIELD: "ab" * 32})
    journal_signing._KEYS.clear()
    with pytest.raises(JournalError, match="key id") as caught:
        Journal(path)
    assert key_hex not in str(caught.value) and "ab" * 32 not in str(caught.value)


# -- without a store readable without a prompt -------------------------------------------


def test_signed_journal_never_goes_on_unsigned(signed, monkeypatch):
    _lose_the_store(monkeypatch)
    for kwargs in ({}, {"durable": False}, {"sign": False}):
        with pytest.raises(JournalError, match=secrets.PASSPHRASE_ENV):
            Journal(signed, **kwargs)
    with Journal(signed, readonly=True) as journal:  # reading needs no key...
        assert journal.load_state(SLEEVE) is not None
        with pytest.raises(JournalError, match=secrets.PASSPHRASE_ENV):
            journal.verify()  # ...vouching for it does
    done = _script("--journal", signed)
    assert done.returncode == 2 and secrets.PASSPHRASE_ENV in done.stderr


def test_without_a_store_a_new_journal_is_unsigned_and_says_so(store, tmp_path, monkeypatch,
                                                                 caplog):
    _lose_the_store(monkeypatch)
    path = tmp_path / "journal.sqlite"
    with pytest.raises(JournalError, match=secrets.PASSPHRASE_ENV):
        Journal(path, sign=True)
    with Journal(path) as journal:
        assert not journal.signed
        _fill(journal, commits=2)
    assert "created unsigned" in caplog.text
    report = _verify(path)
    assert report.ok and not report.signed
    assert [w.kind for w in report.warnings] == ["unsigned"]
    done = _script("--journal", path)
    assert done.returncode == 0 and "UNSIGNED" in done.stdout
    assert _script("--journal", path, "--strict").returncode == 1
    monkeypatch.setenv(secrets.PASSPHRASE_ENV, PASSPHRASE)
    with pytest.raises(JournalError, match="created unsigned"):
        Journal(path, sign=True)  # no signing from the middle


def test_scratch_journal_is_unsigned_and_not_fsynced(store, tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
    with Journal(tmp_path / "scratch.sqlite", durable=False) as journal:
        _fill(journal, commits=3)
        assert not journal.signed
    assert not synced and _anchor(tmp_path / "scratch.sqlite").is_file()
    with Journal(tmp_path / "durable.sqlite") as journal:
        _fill(journal, commits=3)
        assert journal.signed
    assert len(synced) >= 4  # each commit's anchor line


# -- schema: who, and files that are not journals of this layout -------------------------


def test_config_snapshots_and_operator_actions_record_the_os_user(store, tmp_path):
    import pwd

    me = pwd.getpwuid(os.getuid()).pw_name
    with Journal(tmp_path / "journal.sqlite") as journal:
        journal.append_config_snapshot("mode: paper\n")
        journal.append_config_snapshot({"mode": "live"}, user="alice")
        journal.append_operator_action("kill", "all")
        journal.append_operator_action("resume", "all", "bob", "checked")
        assert [row["user"] for row in journal.rows("config_snapshots")] == [me, "alice"]
        assert [row["user"] for row in journal.rows("operator_actions")] == [me, "bob"]
        assert journal.verify().ok


def _old_layout_journal(path):
    """A journal as MMATS wrote it before signing: no meta, no chain.sig, no
    config_snapshots.user; a few rows with a valid sha256 chain."""
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE chain (seq INTEGER PRIMARY KEY, table_name TEXT NOT NULL, "
               "hash TEXT NOT NULL)")
    columns = {table: [name for name in names if (table, name) != ("config_snapshots", "user")]
               for table, names in TABLES.items()}
    for table, names in columns.items():
        body = ", ".join(f'"{name}" {TABLES[table][name]}' for name in names)
        db.execute(f"CREATE TABLE {table} (seq INTEGER PRIMARY KEY, ts_ns INTEGER NOT NULL, "
                   f"{body}, prev_hash TEXT NOT NULL, hash TEXT NOT NULL)")
    fill = {name: 0 if FILL_DTYPE[name].kind in "iu" else 0.0 for name in FILL_DTYPE.names}
    fill |= {"side": 1, "qty": 2.0, "price": 0.05}
    rows = [("config_snapshots", {"format": "text", "text": "mode: paper"}),
            ("fills", {"model_id": "m", "symbol": "ETH/BTC", "client_order_id": "c1",
                       **{("fill_ts_ns" if name == "ts_ns" else name): value
                          for name, value in fill.items()}})]
    prev_hash = "0" * 64
    for seq, (table, payload) in enumerate(rows, 1):
        digest = row_hash(table, seq, T0, payload, prev_hash)
        quoted = ", ".join(f'"{name}"' for name in payload)
        marks = ", ".join("?" * (len(payload) + 4))
        db.execute(f"INSERT INTO {table} (seq, ts_ns, {quoted}, prev_hash, hash) "
                   f"VALUES ({marks})", (seq, T0, *payload.values(), prev_hash, digest))
        db.execute("INSERT INTO chain VALUES (?, ?, ?)", (seq, table, digest))
        prev_hash = digest
    db.commit()
    db.close()


def _schema(path):
    db = sqlite3.connect(path)
    schema = db.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall()
    db.close()
    return schema


def test_older_layout_is_named_and_still_readable(store, tmp_path):
    path = tmp_path / "old.sqlite"
    _old_layout_journal(path)
    before = _schema(path)
    for kwargs in ({}, {"create": False}):
        with pytest.raises(JournalError, match="older layout") as caught:
            Journal(path, **kwargs)
        assert str(path) in str(caught.value) and "new journal" in str(caught.value)
    assert _schema(path) == before  # nothing migrated
    with Journal(path, readonly=True) as journal:
        assert journal.fills()["qty"].tolist() == [2.0]
        report = journal.verify()
        with pytest.raises(JournalError, match="read-only"):
            journal.append_signal("m", "ETH/BTC", "HOLD", 0.0)
    assert report.ok and report.rows_checked == 2 and not report.signed
    assert [w.kind for w in report.warnings] == ["unsigned"]
    assert "older layout" in report.warnings[0].detail
    done = _script("--journal", path)
    assert done.returncode == 0 and "UNSIGNED" in done.stdout


def test_wrong_columns_are_named(tmp_path):
    path = tmp_path / "other.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE chain (seq INTEGER PRIMARY KEY, what TEXT)")
    for table in TABLES:
        db.execute(f"CREATE TABLE {table} (seq INTEGER PRIMARY KEY, what TEXT)")
    db.commit()
    db.close()
    for kwargs in ({}, {"create": False}, {"readonly": True}):
        with pytest.raises(JournalError, match="table chain lacks the columns") as caught:
            Journal(path, **kwargs)
        message = str(caught.value)
        assert str(path) in message and "'hash'" in message and "'what'" in message
    # one table altered in a journal of this layout
    good = tmp_path / "good.sqlite"
    Journal(good, sign=False).close()
    db = sqlite3.connect(good)
    db.execute("ALTER TABLE fills ADD COLUMN venue TEXT")
    db.commit()
    db.close()
    with pytest.raises(JournalError, match=r"table fills lacks the columns \[\] and has "
                                           r"unexpected columns \['venue'\]"):
        Journal(good, create=False)
