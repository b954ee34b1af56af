"""An append-only, hash-chained, signed SQLite journal: the live runner's memory and audit trail.

Every row of every table carries a global sequence number ``seq`` (one sequence over all
tables), a timestamp ``ts_ns``, its payload, the hash of the previous row and its own
hash: sha256 of sorted-key JSON of (table, seq, ts_ns, payload, prev_hash). Triggers
forbid UPDATE and DELETE; an edited, deleted or reordered row breaks the chain and
:meth:`Journal.verify` names it. An append-only ``chain`` index (seq, table, hash, sig) is
written in the same transaction as each row, so deleting the newest row of a table is
caught too.

Whoever can write the file could still append rows with valid hashes, recompute the chain,
or delete the newest rows of both a table and the index. So each chain hash is signed with
a key from the secrets store, and after every commit the head goes to an anchor file
outside the SQLite file (``<journal>.anchor`` by default): see
:mod:`mmats.live.journal_signing`. A ``meta`` table records the layout, the journal's id,
whether (and with which key) it is signed, and its environment (dev, test or prod; see
:mod:`mmats.live.environments`).

Who signs: a new durable journal is signed when the secrets store can be read without a
prompt (a keyring, or ``MMATS_SECRETS_PASSPHRASE`` set), and otherwise created unsigned
with a warning; ``sign=True`` makes the key required, ``sign=False`` (and ``durable=False``,
a replay's scratch journal) leaves it unsigned. A journal created signed always stays
signed: opening it where the key cannot be read raises :class:`JournalError` saying how to
provide it. ``verify`` reports an unsigned journal as such (a warning).

Example::

    with Journal("journal.sqlite") as journal:
        journal.append_signal("ema_cross", "ETH/BTC", "BUY", 0.5)
        journal.save_state("ema_cross:ETH/BTC", state, ts_ns=bar_ts_ns)
        assert journal.verify().ok
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np

from mmats.errors import ConfigError
from mmats.live.environments import ADOPT_ACTION, check_anchor, check_environment, journal_mismatch
from mmats.live.journal_layout import (
    ACTIONS,
    CHAIN_INSERT,
    GENESIS_HASH,
    INDEXES,
    LAYOUT,
    RISK_LEVELS,
    TABLES,
    TIMES_IN_FORCE,
    VerifyReport,
    chain_problems,
    dtype_facts,
    insert_sql,
    journal_records,
    json_value,
    number_value,
    os_user,
    read_layout,
    record_payload,
    row_hash,
    schema_statements,
    text_value,
    ts_value,
)
from mmats.live.journal_layout import (
    dtype_text as _dtype_text,
)
from mmats.live.journal_signing import (
    SCHEME,
    Anchor,
    JournalError,
    Problem,
    Signer,
    check_seal,
    journal_signer,
    key_for_new_journal,
    key_id,
)
from mmats.types import FILL_DTYPE, ORDER_DTYPE, STATE_DTYPE

_COLUMNS = {table: tuple(columns) for table, columns in TABLES.items()}  # payloads' keys


class Journal:
    """An append-only SQLite journal (WAL, ``synchronous=FULL``), one connection each.

    ``create=False`` refuses a missing file instead of creating an empty journal.
    ``durable=False`` (``synchronous=OFF``, no fsync of the anchor) is for scratch journals
    such as a replay's: a crash of the process still leaves whole transactions only, but a
    power cut may lose the newest ones. ``anchor`` is the anchor file's path (default
    ``<journal>.anchor``). ``sign`` decides for a new journal only (see the module
    docstring); an existing one keeps what it was created with. ``readonly=True`` opens an
    existing journal to read and verify it, an older layout included, and refuses appends.
    ``environment`` (a configuration's) is recorded by a new journal and checked against an
    existing one's (see :mod:`mmats.live.environments`); None checks nothing.
    """

    def __init__(self, path: str | os.PathLike, *, create: bool = True,
                 timeout_s: float = 30.0, durable: bool = True,
                 anchor: str | os.PathLike | None = None, sign: bool | None = None,
                 readonly: bool = False, environment: str | None = None):
        self.path = Path(path)
        self.anchor_path = Path(anchor) if anchor is not None else \
            self.path.with_name(self.path.name + ".anchor")
        self._anchor = Anchor(self.anchor_path, durable=durable)
        self._readonly = readonly
        self._in_transaction = False
        self._signer: Signer | None = None
        self._unanchored: tuple[int, str, str] | None = None  # the head to anchor on commit
        self._pending: dict[str, list[tuple]] = {}  # the open transaction's unwritten rows
        # The newest state of each sleeve this connection saved or loaded, as of the chain
        # head _states_head (None: nothing known); see _known_states.
        self._states: dict[str, tuple | None] = {}
        self._states_head: int | None = None
        self._saved_states: dict[str, tuple] = {}  # the open transaction's saves
        self._began_at: int | None = None  # the head the open transaction appended after
        self._anchor_deferred = 0  # inside anchor_sync_deferred(): lines fsync'ed at its end
        if (readonly or not create) and not self.path.is_file():
            raise JournalError(f"journal {self.path} does not exist")
        if environment is not None and check_environment(environment) and \
                not self.path.is_file():  # a new journal is not made beside another's anchor
            check_anchor(self.anchor_path, self.path, None, environment)
        if not readonly and not self.anchor_path.parent.is_dir():
            raise JournalError(f"journal {self.path}: the folder of its anchor file "
                               f"{self.anchor_path} does not exist; create it or give "
                               "another anchor path")
        try:
            self._db = sqlite3.connect(self.path, timeout=timeout_s, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'OFF'}")
            self._db.execute(f"PRAGMA busy_timeout={int(timeout_s * 1000)}")
            if create and not readonly:
                self._create_schema(sign, durable, environment)
            self._check_schema(readonly)
            if environment is not None and self._layout >= 2:
                check_anchor(self.anchor_path, self.path, self._meta["journal_id"], environment)
            if not readonly:
                present = {row[0] for row in self._db.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'index'")}
                for statement in INDEXES:  # a journal made before an index was added
                    if statement.split()[5] not in present:  # CREATE INDEX IF NOT EXISTS <name>
                        self._db.execute(statement)
                self._signer = self._writer_signer(sign)
            if environment is not None:
                self._settle_environment(environment)
        except sqlite3.DatabaseError as error:
            self.close()
            raise JournalError(f"journal {self.path} is unreadable: {error}") from None
        except BaseException:
            self.close()
            raise

    # -- lifecycle ---------------------------------------------------------------------
    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        db = getattr(self, "_db", None)
        if db is not None:
            db.close()
            self._db = None
        self._anchor.close()

    @property
    def signed(self) -> bool:
        """Whether this journal's rows are signed (decided when it was created)."""
        return self._meta.get("signing") == SCHEME

    @property
    def environment(self) -> str | None:
        """The environment this journal belongs to; None if it records none (yet)."""
        return self._meta.get("environment")

    def _settle_environment(self, environment: str) -> None:
        """Refuse a journal of another environment; adopt one that records none (a writer
        only: meta row and operator action in one transaction, once whoever races)."""
        if self.environment is None and not self._readonly and self._layout >= 2:
            with self.transaction():
                row = self._db.execute("SELECT value FROM meta WHERE name = 'environment'"
                                       ).fetchone() or (None,)
                if row[0] is None:
                    self._db.execute("INSERT INTO meta VALUES ('environment', ?)", (environment,))
                    self.append_operator_action(ADOPT_ACTION, environment, reason=(
                        "made before journals recorded their environment; adopted"))
                self._meta["environment"] = row[0] or environment
        if self.environment not in (None, environment):
            raise journal_mismatch(self.path, self.environment, environment)

    def _create_schema(self, sign: bool | None, durable: bool, environment=None) -> None:
        """Create the tables and ``meta`` of a new journal; leave any other file alone."""
        names = {row[0] for row in self._db.execute(
            "SELECT name FROM sqlite_master WHERE type='table'")}
        if names & {"chain", "meta", *TABLES}:
            return  # an existing journal (or a foreign file): _check_schema judges it
        key = key_for_new_journal(self.path, sign, durable)
        meta = {"layout": LAYOUT, "journal_id": os.urandom(8).hex(),
                "signing": SCHEME if key else "none", "key_id": key_id(key) if key else "",
                **({"environment": environment} if environment is not None else {})}
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for statement in schema_statements():
                self._db.execute(statement)
            # OR IGNORE: a process that created the journal at the same moment wins
            self._db.executemany("INSERT OR IGNORE INTO meta (name, value) VALUES (?, ?)",
                                 meta.items())
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def _check_schema(self, readonly: bool) -> None:
        """Refuse a file whose tables or columns are not this layout's, naming them; an
        older journal (layout 1) is readable with ``readonly=True`` only."""
        self._layout, self._columns, self._meta = read_layout(self._db, self.path, readonly)

    def _writer_signer(self, sign: bool | None) -> Signer | None:
        """The signer appends use: the journal's own choice, never silently dropped."""
        if self.signed:
            return self._load_signer()
        if sign:
            raise JournalError(f"journal {self.path} was created unsigned and cannot start "
                               "signing halfway: start a new journal to have it signed")
        return None

    def _load_signer(self) -> Signer:
        """This journal's signer, with the key from the secrets store; refuses another key."""
        return journal_signer(self.path, self._meta["journal_id"], self._meta.get("key_id"))

    # -- the one write path ------------------------------------------------------------
    def transaction(self) -> _Transaction:
        """Make the appends inside one atomic unit: after a crash, all of them are in the
        journal or none is. The runner journals each bar (tick, orders, fills, signal and
        the sleeve's new state) this way, so a restart never sees half a bar. The head is
        anchored once, after the commit. Inside another transaction, its appends are the
        outer one's."""
        return _Transaction(self)

    def _begin(self) -> sqlite3.Connection | None:
        """Open a transaction (None: one is open already, the appends go into it)."""
        db = self._writable()
        if self._in_transaction:
            return None
        db.execute("BEGIN IMMEDIATE")
        self._in_transaction = True
        self._began_at = None
        return db

    def _end(self, db: sqlite3.Connection, failed: bool) -> None:
        """Commit what :meth:`_begin` opened, or roll it back (``failed``, or the commit
        failed); a commit's head is anchored."""
        try:
            if failed:
                self._roll_back(db)
                return
            try:
                self._flush()
                db.execute("COMMIT")
            except BaseException:
                self._roll_back(db)
                raise
        finally:
            self._in_transaction = False
        self._note_commit()
        self._write_anchor()

    def _roll_back(self, db: sqlite3.Connection) -> None:
        self._unanchored, self._pending, self._saved_states = None, {}, {}
        if db.in_transaction:
            db.execute("ROLLBACK")

    def _append(self, table: str, ts_ns: int, payload: dict) -> int:
        """Append one row (and its chain entry) in one IMMEDIATE transaction, or inside
        the open :meth:`transaction`; returns its seq."""
        assert tuple(payload) == _COLUMNS[table], (table, list(payload))
        db = self._writable()
        if self._in_transaction:
            return self._insert(db, table, ts_ns, payload)
        db.execute("BEGIN IMMEDIATE")
        self._began_at = None
        try:
            seq = self._insert(db, table, ts_ns, payload)
            db.execute("COMMIT")
        except BaseException:
            self._unanchored, self._saved_states = None, {}
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        self._note_commit()
        self._write_anchor()
        return seq

    def _writable(self) -> sqlite3.Connection:
        if self._db is None:
            raise JournalError(f"journal {self.path} is closed")
        if self._readonly:
            raise JournalError(f"journal {self.path} was opened read-only; open it without "
                               "readonly=True to append")
        return self._db

    def _insert(self, db, table, ts_ns, payload) -> int:
        head = self._unanchored if self._in_transaction else None
        if head is not None:  # our own last row: the write lock is held, nobody appended
            seq, prev_hash = head[0] + 1, head[2]
        else:
            last = db.execute("SELECT seq, hash FROM chain ORDER BY seq DESC LIMIT 1"
                              ).fetchone()
            seq, prev_hash = (last[0] + 1, last[1]) if last else (1, GENESIS_HASH)
            self._began_at = seq - 1
        digest = row_hash(table, seq, ts_ns, payload, prev_hash)
        sig = self._signer.row(seq, table, digest) if self._signer else None
        row, link = (seq, ts_ns, *payload.values(), prev_hash, digest), (seq, table, digest, sig)
        if self._in_transaction:  # written at the commit (or the next read), per table
            self._pending.setdefault(table, []).append(row)
            self._pending.setdefault("chain", []).append(link)
        else:
            db.execute(insert_sql(table), row)
            db.execute(CHAIN_INSERT, link)
        self._unanchored = (seq, table, digest)
        if table == "sleeve_states":
            self._saved_states[payload["sleeve_id"]] = (payload["dtype"], payload["state"], seq)
        return seq

    def _note_commit(self) -> None:
        """After a commit: the states it saved are their sleeves' newest, and what
        :meth:`load_states` knew stays known if nobody appended between (the commit's
        rows follow the head it was known at); else nothing is known any more."""
        saved, self._saved_states = self._saved_states, {}
        if self._unanchored is None:  # nothing appended
            return
        if self._states_head is not None and self._began_at == self._states_head:
            self._states.update(saved)
            self._states_head = self._unanchored[0]
        else:
            self._states, self._states_head = {}, None

    def _flush(self) -> None:
        """Write the open transaction's appended rows: one prepared INSERT per table,
        executed over its rows (a close appends some thirty)."""
        pending, self._pending = self._pending, {}
        for table, rows in pending.items():
            self._db.executemany(CHAIN_INSERT if table == "chain" else insert_sql(table),
                                 rows)

    def _read(self, sql: str, params: tuple = ()) -> sqlite3.Cursor:
        """Run a query on what this journal holds, the open transaction's rows included."""
        if self._pending:
            self._flush()
        return self._db.execute(sql, params)

    def anchor_sync_deferred(self) -> _AnchorSyncDeferred:
        """Inside: each commit's anchor line is written at once but fsync'ed at the end,
        once for all (each commit itself is fsync'ed as ever). A tick holds its anchor's
        fsyncs until its orders are out: a power cut before that leaves the anchor behind
        the journal (``anchor_behind``, as after a crash between a commit and its line),
        never ahead of it, and signatures catch a forged row as before."""
        return _AnchorSyncDeferred(self)

    def _write_anchor(self) -> None:
        """Append the committed head to the anchor file (see journal_signing)."""
        head, self._unanchored = self._unanchored, None
        if head is not None:
            try:
                self._anchor.append(*head, self._meta["journal_id"], self._signer,
                                    sync=not self._anchor_deferred)
            except OSError as error:
                raise self._anchor_error(error, head) from None

    def _anchor_io(self, write, head) -> None:
        try:
            write()
        except OSError as error:
            raise self._anchor_error(error, head) from None

    def _anchor_error(self, error: OSError, head) -> JournalError:
        if head is None:
            return JournalError(f"journal {self.path}: the anchor {self.anchor_path} "
                                f"cannot be synced ({error})")
        return JournalError(
            f"journal {self.path}: seq {head[0]} is committed, but the anchor "
            f"{self.anchor_path} cannot be written ({error}); fix the anchor path — "
            "until then the newest rows are not anchored")

    # -- appends -----------------------------------------------------------------------
    def append_tick(self, symbol: str, bar_ts_ns: int, open: float, high: float, low: float,
                    close: float, volume: float, *, timeframe: str = "",
                    ts_ns: int | None = None) -> int:
        """Record the bar a tick of the runner acted on; returns its ``seq``."""
        payload = {"symbol": text_value(symbol, "symbol"),
                   "timeframe": text_value(timeframe, "timeframe", required=False),
                   "bar_ts_ns": ts_value(bar_ts_ns, "bar_ts_ns")}
        for name, value in (("open", open), ("high", high), ("low", low), ("close", close),
                            ("volume", volume)):
            payload[name] = number_value(value, name)
        return self._append("ticks", ts_value(ts_ns), payload)

    def append_signal(self, model_id: str, symbol: str, action: str, qty: float,
                      limit_price: float | None = None, stop_loss: float | None = None,
                      take_profit: float | None = None, time_in_force: str = "GTC",
                      confidence: float | None = None, meta: dict | None = None, *,
                      ts_ns: int | None = None) -> int:
        """Record a model's signal (BUY/SELL/HOLD, quantity, optional prices); its ``seq``."""
        if action not in ACTIONS:
            raise ConfigError(f"action must be one of {ACTIONS}, got {action!r}")
        if time_in_force not in TIMES_IN_FORCE:
            raise ConfigError(f"time_in_force must be one of {TIMES_IN_FORCE}, "
                              f"got {time_in_force!r}")
        qty = number_value(qty, "qty")
        if qty < 0:
            raise ConfigError(f"qty must be >= 0 (the action carries the side), got {qty}")
        prices = {}
        for name, value in (("limit_price", limit_price), ("stop_loss", stop_loss),
                            ("take_profit", take_profit)):
            prices[name] = number_value(value, name, optional=True)
            if prices[name] is not None and prices[name] <= 0:
                raise ConfigError(f"{name} must be a positive price, got {value!r}")
        confidence = number_value(confidence, "confidence", optional=True)
        if confidence is not None and not 0.0 <= confidence <= 1.0:
            raise ConfigError(f"confidence must be within [0, 1], got {confidence}")
        if meta is not None and not isinstance(meta, dict):
            raise ConfigError(f"meta must be a dict, got {type(meta).__name__}")
        payload = {"model_id": text_value(model_id, "model_id"), "symbol": text_value(symbol, "symbol"),
                   "action": action, "qty": qty, **prices, "time_in_force": time_in_force,
                   "confidence": confidence, "meta": json_value(meta, "meta")}
        return self._append("signals", ts_value(ts_ns), payload)

    def append_order(self, model_id: str, symbol: str, client_order_id: str, record: Any,
                     broker_status: str = "NEW", *, ts_ns: int | None = None) -> int:
        """Record an order (an ``ORDER_DTYPE`` row or dict) and its broker status text."""
        payload = {"model_id": text_value(model_id, "model_id"), "symbol": text_value(symbol, "symbol"),
                   "client_order_id": text_value(client_order_id, "client_order_id"),
                   "broker_status": text_value(broker_status, "broker_status"),
                   **record_payload(record, ORDER_DTYPE, "order")}
        return self._append("orders", ts_value(ts_ns), payload)

    def append_fill(self, model_id: str, symbol: str, client_order_id: str, record: Any, *,
                    ts_ns: int | None = None) -> int:
        """Record a fill (a ``FILL_DTYPE`` row or dict) of an order."""
        payload = {"model_id": text_value(model_id, "model_id"), "symbol": text_value(symbol, "symbol"),
                   "client_order_id": text_value(client_order_id, "client_order_id",
                                            required=False),
                   **record_payload(record, FILL_DTYPE, "fill")}
        if payload["qty"] is None or payload["qty"] <= 0:
            raise ConfigError(f"fill.qty must be positive, got {payload['qty']}")
        if payload["side"] not in (1, -1):
            raise ConfigError(f"fill.side must be +1 (buy) or -1 (sell), got {payload['side']}")
        if payload["price"] is None or payload["price"] <= 0:
            raise ConfigError(f"fill.price must be positive, got {payload['price']}")
        return self._append("fills", ts_value(ts_ns), payload)

    def append_risk_event(self, level: str, scope: str, kind: str, message: str,
                          data: dict | None = None, *, ts_ns: int | None = None) -> int:
        """Record a risk event, e.g. ``("CRITICAL", "sleeve:x", "max_drawdown", ...)``."""
        if level not in RISK_LEVELS:
            raise ConfigError(f"level must be one of {RISK_LEVELS}, got {level!r}")
        payload = {"level": level, "scope": text_value(scope, "scope"), "kind": text_value(kind, "kind"),
                   "message": text_value(message, "message", required=False),
                   "data": json_value(data, "data")}
        return self._append("risk_events", ts_value(ts_ns), payload)

    def append_operator_action(self, action: str, target: str, user: str | None = None,
                               reason: str = "", *, ts_ns: int | None = None) -> int:
        """Record what an operator did (kill switch, resume, ...), to what, who and why;
        ``user`` None means the operating-system account running this process."""
        payload = {"action": text_value(action, "action"), "target": text_value(target, "target"),
                   "user": os_user() if user is None else text_value(user, "user"),
                   "reason": text_value(reason, "reason", required=False)}
        return self._append("operator_actions", ts_value(ts_ns), payload)

    def append_config_snapshot(self, config: str | dict, *, user: str | None = None,
                               ts_ns: int | None = None) -> int:
        """Record the configuration in force (text as given, a dict as sorted JSON) and who
        put it in force: ``user`` None means the operating-system account of this process."""
        if isinstance(config, dict):
            payload = {"format": "json", "text": json_value(config, "config")}
        elif isinstance(config, str):
            payload = {"format": "text", "text": config}
        else:
            raise ConfigError(f"config must be text or a dict, got {type(config).__name__}")
        payload["user"] = os_user() if user is None else text_value(user, "user")
        return self._append("config_snapshots", ts_value(ts_ns), payload)

    def save_state(self, sleeve_id: str, state: np.ndarray, ts_ns: int | None = None) -> int:
        """Persist a sleeve's kernel state (a 1-element structured array) bit for bit."""
        if not isinstance(state, np.ndarray) or state.dtype.names is None or state.shape != (1,):
            raise ConfigError("state must be a 1-element structured array (STATE_DTYPE), got "
                              f"{getattr(state, 'dtype', type(state).__name__)!s} "
                              f"shape {getattr(state, 'shape', None)}")
        payload = {"sleeve_id": text_value(sleeve_id, "sleeve_id"), "dtype": _dtype_text(state.dtype),
                   "state": state.tobytes()}  # C order, whatever the array's
        return self._append("sleeve_states", ts_value(ts_ns), payload)

    # -- reads -------------------------------------------------------------------------
    def load_state(self, sleeve_id: str, dtype: np.dtype = STATE_DTYPE) -> np.ndarray | None:
        """The latest saved state of ``sleeve_id`` (a fresh 1-element array), or None.
        In a signed journal, a state its key did not sign raises :class:`JournalError`."""
        return self.load_states([sleeve_id], dtype)[sleeve_id]

    def load_states(self, sleeve_ids, dtype: np.dtype = STATE_DTYPE) -> dict:
        """:meth:`load_state` of each of ``sleeve_ids`` (id -> state or None), in two
        queries whatever their number: a tick loads every sleeve's state at its start."""
        ids = list(dict.fromkeys(sleeve_ids))
        known = self._known_states(ids)
        if known is not None:
            return {sleeve_id: None if known[sleeve_id] is None else
                    self._state(sleeve_id, dtype, *known[sleeve_id]) for sleeve_id in ids}
        head = None if self._in_transaction or self._readonly else self.head()[0]
        found = {row[0]: row[1:] for row in self._read(
            "SELECT sleeve_id, dtype, state, seq, ts_ns, prev_hash, hash FROM sleeve_states "
            "WHERE seq IN (SELECT (SELECT seq FROM sleeve_states WHERE sleeve_id = "
            "wanted.value ORDER BY seq DESC LIMIT 1) FROM json_each(?) AS wanted)",
            (json.dumps(ids),))}
        if self._signer is not None and found:  # a restart must not resume from a forged state
            chain = self._chain_entries([row[2] for row in found.values()])
            for sleeve_id, (stored, blob, seq, ts_ns, prev_hash, digest) in found.items():
                payload = {"sleeve_id": sleeve_id, "dtype": stored, "state": blob}
                self._check_signed("sleeve_states", seq, digest,
                                   row_hash("sleeve_states", seq, ts_ns, payload, prev_hash),
                                   chain.get(seq))
        if head is not None:  # what was read is at least as new as that head
            if self._states_head != head:
                self._states, self._states_head = {}, head
            self._states.update({sleeve_id: found[sleeve_id][:3] if sleeve_id in found
                                 else None for sleeve_id in ids})
        return {sleeve_id: None if sleeve_id not in found else
                self._state(sleeve_id, dtype, *found[sleeve_id][:3]) for sleeve_id in ids}

    def _known_states(self, ids: list[str]) -> dict | None:
        """The newest ``(dtype text, blob, seq)`` (or None: never saved) of each of ``ids``
        as this connection saved or read it, if it knows them all and no row was appended
        since (the chain's head is where it was); else None, and the journal is read.

        A replay ticks on one connection, loading at each tick the states it saved at the
        last: the head (one indexed lookup) stands for two queries and, in a signed
        journal, the signature checks of rows this process wrote and already checked."""
        if self._states_head is None or self._in_transaction or \
                any(sleeve_id not in self._states for sleeve_id in ids):
            return None
        if self.head()[0] != self._states_head:
            self._states, self._states_head = {}, None
            return None
        return {sleeve_id: self._states[sleeve_id] for sleeve_id in ids}

    def _state(self, sleeve_id: str, dtype, stored: str, blob: bytes, seq: int) -> np.ndarray:
        """A stored state as a fresh 1-element array of ``dtype``, if it was saved so."""
        text, itemsize = dtype_facts(np.dtype(dtype))
        if stored != text:
            raise JournalError(
                f"state of sleeve {sleeve_id!r} (seq {seq}) in {self.path} was saved with dtype "
                f"{stored}, which differs from the requested {text}; "
                "the state layout changed: migrate it or start the sleeve afresh")
        if len(blob) != itemsize:
            raise JournalError(f"state of sleeve {sleeve_id!r} (seq {seq}) has {len(blob)} "
                               f"bytes, expected {itemsize}")
        state = np.frombuffer(bytearray(blob), dtype=dtype)  # writable, its own memory
        return state if state.flags.aligned else state.copy()  # (.copy() costs 8 times more)

    def _chain_entries(self, seqs: list[int]) -> dict[int, tuple]:
        """The chain index's ``(table, hash, sig)`` of each of ``seqs`` found there."""
        return {row[0]: row[1:] for row in self._read(
            "SELECT seq, table_name, hash, sig FROM chain WHERE seq IN "
            "(SELECT value FROM json_each(?))", (json.dumps(seqs),))}

    def _check_signed(self, table: str, seq: int, digest: str, content_hash: str,
                      entry: tuple | None) -> None:
        """Refuse a row whose content, hash or chain entry (``entry``: the chain index's
        ``(table, hash, sig)`` at its seq, None if absent) its key did not sign."""
        if content_hash != digest or entry is None or tuple(entry[:2]) != (table, digest) \
                or not self._signer.row_ok(seq, *entry):
            raise JournalError(
                f"{table} seq {seq} in {self.path} fails its signature check: the journal was "
                f"tampered with. Run 'python scripts/journal.py verify --journal {self.path}' "
                "and restore the journal from a backup")

    def head(self) -> tuple[int, str]:
        """(seq, hash) of the newest row; the anchor file keeps it after each commit."""
        row = self._read("SELECT seq, hash FROM chain ORDER BY seq DESC LIMIT 1").fetchone()
        return (row[0], row[1]) if row else (0, GENESIS_HASH)

    def rows(self, table: str, where: str = "", params: tuple = ()) -> list[dict]:
        """Rows of one table as dicts, in ``seq`` order (``where`` is an SQL condition)."""
        if table not in TABLES and table != "chain":
            raise ConfigError(f"unknown journal table {table!r}; known: {sorted(TABLES)}")
        cursor = self._read(
            f"SELECT * FROM {table} {'WHERE ' + where if where else ''} ORDER BY seq", params)
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor]

    def fills(self, model_id: str | None = None) -> np.ndarray:
        """Journaled fills (all, or of one model) as a ``FILL_DTYPE`` array in seq order."""
        rows = self.rows("fills", "model_id = ?" if model_id else "",
                         (model_id,) if model_id else ())
        return journal_records(rows, FILL_DTYPE, "fill")

    def orders(self, model_id: str | None = None) -> np.ndarray:
        """Journaled orders (all, or of one model) as an ``ORDER_DTYPE`` array."""
        rows = self.rows("orders", "model_id = ?" if model_id else "",
                         (model_id,) if model_id else ())
        return journal_records(rows, ORDER_DTYPE, "order")

    def fills_frame(self, model_id: str | None = None):
        """Fills with ``seq``, ``model_id``, ``symbol`` and ``client_order_id`` columns."""
        import pandas as pd

        from mmats.records import records_frame

        rows = self.rows("fills", "model_id = ?" if model_id else "",
                         (model_id,) if model_id else ())
        frame = records_frame(journal_records(rows, FILL_DTYPE, "fill"))
        for name in ("client_order_id", "symbol", "model_id", "seq"):
            frame.insert(0, name, pd.Series([row[name] for row in rows], dtype=object))
        return frame

    def orders_by_client_id(self, client_order_id: str) -> list[dict]:
        """Every journaled row of one client order id (its status history), oldest first."""
        return self.rows("orders", "client_order_id = ?", (client_order_id,))

    # -- named queries: what the runner asks (each served by an index) -------------------
    def fills_of_order(self, client_order_id: str) -> list[dict]:
        """The fills booked to one client order id, oldest first."""
        return self.rows("fills", "client_order_id = ?", (client_order_id,))

    def orders_of_sleeve(self, model_id: str, symbol: str, *,
                         protective: bool = False) -> list[dict]:
        """Order rows of one sleeve (model and symbol), oldest first; ``protective``:
        only its resting stop-loss / take-profit legs (journaled with order_id < 0)."""
        return self.rows("orders", "model_id = ? AND symbol = ?"
                         + (" AND order_id < 0" if protective else ""), (model_id, symbol))

    def latest_final_statuses(self, model_id: str, symbol: str, final_states,
                              limit: int) -> list[str]:
        """The ``limit`` newest final broker statuses of one sleeve's order rows, newest
        first (the rejects-in-a-row check reads a few rows, not the sleeve's history)."""
        marks = ", ".join("?" * len(final_states))
        cursor = self._read(
            f"SELECT broker_status FROM orders WHERE model_id = ? AND symbol = ? AND "
            f"broker_status IN ({marks}) ORDER BY seq DESC LIMIT ?",
            (model_id, symbol, *final_states, int(limit)))
        return [row[0] for row in cursor]

    def orders_in_states(self, states) -> list[dict]:
        """The newest row of each client order whose broker status is one of ``states``."""
        marks = ", ".join("?" * len(states))
        return self.rows("orders", "seq IN (SELECT MAX(seq) FROM orders GROUP BY "
                         f"client_order_id) AND broker_status IN ({marks})", tuple(states))

    def order_rows_after(self, seq: int) -> list[dict]:
        """The order rows appended after ``seq``, oldest first (a range of the key)."""
        return self.rows("orders", "seq > ?", (int(seq),))

    def holds_head(self, head: tuple[int, str]) -> bool:
        """Whether the chain still holds ``head`` ``(seq, hash)``: what was read at that
        head is still the journal's (a rolled-back transaction's head is not)."""
        if head[0] == 0:  # before the first row: every chain starts there
            return head[1] == GENESIS_HASH
        return self._read("SELECT 1 FROM chain WHERE seq = ? AND hash = ?",
                          (int(head[0]), head[1])).fetchone() is not None

    def risk_events(self, kinds: str | tuple[str, ...], scope: str | None = None) -> list[dict]:
        """Risk events of one kind (or any of several), of one scope if given, oldest
        first."""
        kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
        where = f"kind IN ({', '.join('?' * len(kinds))})"
        if scope is not None:
            where += " AND scope = ?"
            kinds += (scope,)
        return self.rows("risk_events", where, kinds)

    def last_risk_event(self, kinds: str | tuple[str, ...],
                        scope: str | None = None) -> dict | None:
        """The newest of :meth:`risk_events`, or None (one row read, not the history)."""
        kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
        where = f"kind IN ({', '.join('?' * len(kinds))})"
        if scope is not None:
            where, kinds = where + " AND scope = ?", kinds + (scope,)
        rows = self.rows("risk_events", f"seq = (SELECT MAX(seq) FROM risk_events WHERE {where})",
                         kinds)
        return rows[0] if rows else None

    def sleeve_states(self, sleeve_id: str) -> list[dict]:
        """Every saved state of one sleeve, oldest first."""
        return self.rows("sleeve_states", "sleeve_id = ?", (sleeve_id,))

    def state_history(self, sleeve_id: str) -> list[tuple[int, bytes]]:
        """``(ts_ns, state bytes)`` of every saved state of one sleeve, oldest first: what
        an equity curve reads, without the rest of each row (a state row's dtype text
        alone is three times its state)."""
        return self._read("SELECT ts_ns, state FROM sleeve_states WHERE sleeve_id = ? "
                          "ORDER BY seq", (sleeve_id,)).fetchall()

    def newest_strategy_signal(self, model_id: str, symbol: str) -> dict | None:
        """The newest signal of one sleeve that carries the strategy's own value
        (``meta.value``; an operator's manual order carries none), or None."""
        rows = self.rows(
            "signals", "seq = (SELECT MAX(seq) FROM signals WHERE model_id = ? AND symbol = ? "
            "AND json_extract(meta, '$.manual') IS NULL "
            "AND json_extract(meta, '$.value') IS NOT NULL)", (model_id, symbol))
        return rows[0] if rows else None

    def last_config_snapshot(self) -> dict | None:
        """The newest configuration snapshot, or None."""
        cursor = self._read("SELECT * FROM config_snapshots ORDER BY seq DESC LIMIT 1")
        row = cursor.fetchone()
        return None if row is None else dict(zip([c[0] for c in cursor.description], row,
                                                 strict=True))

    # -- verification ------------------------------------------------------------------
    def verify(self) -> VerifyReport:
        """Recompute every hash and link, check every signature and the anchor; report
        edited, deleted, inserted, reordered, forged, rewritten or truncated rows.

        A signed journal needs its key (the secrets store readable without a prompt);
        without it this raises :class:`JournalError` rather than report on half the checks.
        """
        signer = self._signer
        if signer is None and self.signed:
            signer = self._load_signer()
        rows = []  # (seq, table, ts_ns, payload, prev_hash, hash)
        for table, columns in self._columns.items():
            quoted = ", ".join(f'"{name}"' for name in columns)
            for row in self._read(
                    f"SELECT seq, ts_ns, {quoted}, prev_hash, hash FROM {table}"):
                payload = dict(zip(columns, row[2:-2], strict=True))
                rows.append((row[0], table, row[1], payload, row[-2], row[-1]))
        rows.sort(key=lambda row: row[0])
        sig = "sig" if self._layout >= 2 else "NULL"
        chain = {seq: (table, digest, signature) for seq, table, digest, signature in
                 self._read(f"SELECT seq, table_name, hash, {sig} FROM chain")}
        problems, previous_seq, previous_hash = chain_problems(rows, chain)
        if self._layout >= 2:
            sealed, warnings, anchored = check_seal(
                chain, max(previous_seq, max(chain, default=0)), self._meta["journal_id"],
                signer, self._anchor)
        else:
            sealed, anchored = [], 0
            warnings = [Problem("chain", 0, "unsigned", (
                "the older layout written before journals were signed: a row appended or "
                "a chain recomputed by whoever can write the file cannot be told from a real "
                "one, and there is no anchor to catch deleted newest rows"))]
        # the first bad row first; at one seq, the journal's rows before the anchor's lines
        problems = sorted(problems + sealed,
                          key=lambda problem: (problem.seq, problem.table == "anchor"))
        return VerifyReport(ok=not problems, rows_checked=len(rows), head_seq=previous_seq,
                            head_hash=previous_hash, problems=problems,
                            signed=signer is not None, anchor=str(self.anchor_path),
                            anchor_head_seq=anchored, warnings=warnings)


class _Transaction:
    """The context of :meth:`Journal.transaction` (a class: a generator's context costs
    three times as much, and a tick enters one per close)."""

    __slots__ = ("_journal", "_db")

    def __init__(self, journal: Journal):
        self._journal = journal
        self._db: sqlite3.Connection | None = None  # set if this context opened it

    def __enter__(self) -> Journal:
        self._db = self._journal._begin()
        return self._journal

    def __exit__(self, kind, error, trace) -> bool:
        db, self._db = self._db, None
        if db is not None:
            self._journal._end(db, failed=kind is not None)
        return False


class _AnchorSyncDeferred:
    """The context of :meth:`Journal.anchor_sync_deferred`."""

    __slots__ = ("_journal",)

    def __init__(self, journal: Journal):
        self._journal = journal

    def __enter__(self) -> Journal:
        self._journal._anchor_deferred += 1
        return self._journal

    def __exit__(self, kind, error, trace) -> bool:
        journal = self._journal
        journal._anchor_deferred -= 1
        if not journal._anchor_deferred:
            journal._anchor_io(journal._anchor.sync, None)
        return False

