"""An append-only, hash-chained SQLite journal: the live runner's memory and audit trail.

Every row of every table carries a global sequence number ``seq`` (one sequence over all
tables), a timestamp ``ts_ns``, its payload, the hash of the previous row and its own
hash: sha256 of sorted-key JSON of (table, seq, ts_ns, payload, prev_hash). Triggers
forbid UPDATE and DELETE; an edited, deleted or reordered row breaks the chain and
:meth:`Journal.verify` names it. An append-only ``chain`` index (seq, table, hash) is
written in the same transaction as each row, so deleting the newest row of a table is
caught too; deleting the newest rows of *both* the table and the index cannot be told
apart from a shorter journal unless the head (:meth:`Journal.head`) is kept elsewhere.

Example::

    with Journal("journal.sqlite") as journal:
        journal.append_signal("ema_cross", "ETH/BTC", "BUY", 0.5)
        journal.save_state("ema_cross:ETH/BTC", state, ts_ns=bar_ts_ns)
        assert journal.verify().ok
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmats.errors import ConfigError, MMATSError
from mmats.types import FILL_DTYPE, ORDER_DTYPE, STATE_DTYPE

GENESIS_HASH = "0" * 64
ACTIONS = ("BUY", "SELL", "HOLD")
TIMES_IN_FORCE = ("GTC", "IOC", "FOK", "DAY", "GTD")
RISK_LEVELS = ("INFO", "WARNING", "CRITICAL")


class JournalError(MMATSError):
    """The journal file is unreadable, or a stored record does not fit what was asked."""


def _record_columns(dtype: np.dtype, kind: str) -> dict[str, str]:
    """Columns of a record dtype; its ``ts_ns`` is renamed ``<kind>_ts_ns``."""
    columns = {}
    for name in dtype.names:
        column = f"{kind}_ts_ns" if name == "ts_ns" else name
        columns[column] = "INTEGER" if dtype[name].kind in "iu" else "REAL"
    return columns


#: Payload columns of each table and their SQLite types, in order.
TABLES: dict[str, dict[str, str]] = {
    "ticks": {"symbol": "TEXT", "timeframe": "TEXT", "bar_ts_ns": "INTEGER", "open": "REAL",
              "high": "REAL", "low": "REAL", "close": "REAL", "volume": "REAL"},
    "signals": {"model_id": "TEXT", "symbol": "TEXT", "action": "TEXT", "qty": "REAL",
                "limit_price": "REAL", "stop_loss": "REAL", "take_profit": "REAL",
                "time_in_force": "TEXT", "confidence": "REAL", "meta": "TEXT"},
    "orders": {"model_id": "TEXT", "symbol": "TEXT", "client_order_id": "TEXT",
               "broker_status": "TEXT", **_record_columns(ORDER_DTYPE, "order")},
    "fills": {"model_id": "TEXT", "symbol": "TEXT", "client_order_id": "TEXT",
              **_record_columns(FILL_DTYPE, "fill")},
    "risk_events": {"level": "TEXT", "scope": "TEXT", "kind": "TEXT", "message": "TEXT",
                    "data": "TEXT"},
    "operator_actions": {"action": "TEXT", "target": "TEXT", "user": "TEXT", "reason": "TEXT"},
    "config_snapshots": {"format": "TEXT", "text": "TEXT"},
    "sleeve_states": {"sleeve_id": "TEXT", "dtype": "TEXT", "state": "BLOB"},
}


@dataclass(frozen=True)
class Problem:
    """One broken link of the chain: where, and what is wrong."""

    table: str
    seq: int
    kind: str  # "edited", "deleted", "reordered", "inserted"
    detail: str

    def __str__(self) -> str:
        return f"{self.table} seq {self.seq}: {self.kind} row — {self.detail}"


@dataclass
class VerifyReport:
    """Outcome of :meth:`Journal.verify`; ``problems`` is empty when the chain is intact."""

    ok: bool
    rows_checked: int
    head_seq: int
    head_hash: str
    problems: list[Problem] = field(default_factory=list)

    @property
    def table(self) -> str | None:
        return self.problems[0].table if self.problems else None

    @property
    def seq(self) -> int | None:
        return self.problems[0].seq if self.problems else None

    @property
    def reason(self) -> str | None:
        return str(self.problems[0]) if self.problems else None

    def to_dict(self) -> dict:
        return {"ok": self.ok, "rows_checked": self.rows_checked, "head_seq": self.head_seq,
                "head_hash": self.head_hash,
                "problems": [vars(problem) for problem in self.problems]}


def row_hash(table: str, seq: int, ts_ns: int, payload: dict, prev_hash: str) -> str:
    """sha256 (hex) of the canonical JSON of one row; blobs enter as hex text."""
    canonical = {name: value.hex() if isinstance(value, bytes) else value
                 for name, value in payload.items()}
    text = json.dumps({"table": table, "seq": seq, "ts_ns": ts_ns, "payload": canonical,
                       "prev_hash": prev_hash}, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def _canonical_json(value: Any, name: str) -> str | None:
    if value is None:
        return None
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False,
                          default=_json_default)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{name} must be JSON-serialisable without NaN: {error}") from None


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def _text(value: Any, name: str, *, required: bool = True) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value):
        raise ConfigError(f"{name} must be a non-empty string, got {value!r}")
    return value


def _number(value: Any, name: str, *, optional: bool = False, finite: bool = True):
    """A float for a REAL column; NaN is refused (SQLite would silently store NULL)."""
    if value is None and optional:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number, got {value!r}") from None
    if math.isnan(number) or (finite and math.isinf(number)):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    return number


def _integer(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    return int(value)


def _ts(ts_ns: int | None, name: str = "ts_ns") -> int:
    if ts_ns is None:
        return time.time_ns()
    value = _integer(ts_ns, name)
    if value < 0:
        raise ConfigError(f"{name} must be >= 0 nanoseconds since the epoch, got {value}")
    return value


def _record_payload(record: Any, dtype: np.dtype, kind: str) -> dict:
    """Columns of one ORDER/FILL record (a structured row, 1-element array or dict)."""
    if isinstance(record, np.ndarray) and record.shape == (1,):
        record = record[0]
    if isinstance(record, np.void):
        if record.dtype != dtype:
            raise ConfigError(f"{kind} record has dtype {record.dtype}, expected the "
                              f"{kind.upper()}_DTYPE of mmats.types")
        record = {name: record[name].item() for name in dtype.names}
    if not isinstance(record, dict):
        raise ConfigError(f"{kind} record must be a {kind.upper()}_DTYPE row or a dict, "
                          f"got {type(record).__name__}")
    missing = [name for name in dtype.names if name not in record]
    extra = [name for name in record if name not in dtype.names]
    if missing or extra:
        raise ConfigError(f"{kind} record fields do not match {kind.upper()}_DTYPE: "
                          f"missing {missing}, unknown {extra}")
    payload = {}
    for name in dtype.names:
        column = f"{kind}_ts_ns" if name == "ts_ns" else name
        if dtype[name].kind in "iu":
            payload[column] = _integer(record[name], f"{kind}.{name}")
        else:
            # a backtest record may hold NaN (e.g. no price for a rejected order); keep it
            # as NULL and read it back as NaN
            value = float(record[name])
            payload[column] = None if math.isnan(value) else value
    return payload


def _dtype_text(dtype: np.dtype) -> str:
    return json.dumps(np.lib.format.dtype_to_descr(dtype))


class Journal:
    """An append-only SQLite journal (WAL, ``synchronous=FULL``), one connection each.

    ``create=False`` refuses a missing file instead of creating an empty journal.
    ``durable=False`` (``synchronous=OFF``) is for scratch journals such as a replay's:
    a crash of the process still leaves whole transactions only, but a power cut may lose
    the newest ones.
    """

    def __init__(self, path: str | os.PathLike, *, create: bool = True,
                 timeout_s: float = 30.0, durable: bool = True):
        self.path = Path(path)
        self._in_transaction = False
        if not create and not self.path.is_file():
            raise JournalError(f"journal {self.path} does not exist")
        try:
            self._db = sqlite3.connect(self.path, timeout=timeout_s, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'OFF'}")
            self._db.execute(f"PRAGMA busy_timeout={int(timeout_s * 1000)}")
            if create:
                self._create_schema()
            else:
                self._check_schema()
        except sqlite3.DatabaseError as error:
            self.close()
            raise JournalError(f"journal {self.path} is unreadable: {error}") from None

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

    def _create_schema(self) -> None:
        statements = ["CREATE TABLE IF NOT EXISTS chain (seq INTEGER PRIMARY KEY, "
                      "table_name TEXT NOT NULL, hash TEXT NOT NULL)"]
        for table, columns in TABLES.items():
            body = ", ".join(f'"{name}" {kind}' for name, kind in columns.items())
            statements.append(
                f"CREATE TABLE IF NOT EXISTS {table} (seq INTEGER PRIMARY KEY, "
                f"ts_ns INTEGER NOT NULL, {body}, prev_hash TEXT NOT NULL, "
                "hash TEXT NOT NULL)")
        statements.append("CREATE INDEX IF NOT EXISTS fills_model ON fills (model_id)")
        statements.append("CREATE INDEX IF NOT EXISTS orders_client ON orders (client_order_id)")
        statements.append("CREATE INDEX IF NOT EXISTS states_sleeve ON sleeve_states (sleeve_id)")
        for table in ("chain", *TABLES):
            for verb in ("UPDATE", "DELETE"):
                statements.append(
                    f"CREATE TRIGGER IF NOT EXISTS {table}_no_{verb.lower()} BEFORE {verb} "
                    f"ON {table} BEGIN SELECT RAISE(ABORT, "
                    f"'journal table {table} is append-only: {verb} is forbidden'); END")
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for statement in statements:
                self._db.execute(statement)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def _check_schema(self) -> None:
        names = {row[0] for row in self._db.execute(
            "SELECT name FROM sqlite_master WHERE type='table'")}
        missing = sorted({"chain", *TABLES} - names)
        if missing:
            raise JournalError(f"journal {self.path} lacks the tables {missing}; "
                               "is it an MMATS journal?")

    # -- the one write path ------------------------------------------------------------
    @contextlib.contextmanager
    def transaction(self):
        """Make the appends inside one atomic unit: after a crash, all of them are in the
        journal or none is. The runner journals each bar (tick, orders, fills, signal and
        the sleeve's new state) this way, so a restart never sees half a bar."""
        db = self._db
        if db is None:
            raise JournalError(f"journal {self.path} is closed")
        if self._in_transaction:
            yield self
            return
        db.execute("BEGIN IMMEDIATE")
        self._in_transaction = True
        try:
            yield self
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        finally:
            self._in_transaction = False

    def _append(self, table: str, ts_ns: int, payload: dict) -> int:
        """Append one row (and its chain entry) in one IMMEDIATE transaction, or inside
        the open :meth:`transaction`; returns its seq."""
        columns = list(TABLES[table])
        assert list(payload) == columns, (table, list(payload))
        db = self._db
        if db is None:
            raise JournalError(f"journal {self.path} is closed")
        if self._in_transaction:
            return self._insert(db, table, ts_ns, payload, columns)
        db.execute("BEGIN IMMEDIATE")
        try:
            seq = self._insert(db, table, ts_ns, payload, columns)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return seq

    @staticmethod
    def _insert(db, table, ts_ns, payload, columns) -> int:
        last = db.execute("SELECT seq, hash FROM chain ORDER BY seq DESC LIMIT 1").fetchone()
        seq, prev_hash = (last[0] + 1, last[1]) if last else (1, GENESIS_HASH)
        digest = row_hash(table, seq, ts_ns, payload, prev_hash)
        quoted = ", ".join(f'"{name}"' for name in columns)
        marks = ", ".join("?" * (len(columns) + 4))
        db.execute(f"INSERT INTO {table} (seq, ts_ns, {quoted}, prev_hash, hash) "
                   f"VALUES ({marks})", (seq, ts_ns, *payload.values(), prev_hash, digest))
        db.execute("INSERT INTO chain (seq, table_name, hash) VALUES (?, ?, ?)",
                   (seq, table, digest))
        return seq

    # -- appends -----------------------------------------------------------------------
    def append_tick(self, symbol: str, bar_ts_ns: int, open: float, high: float, low: float,
                    close: float, volume: float, *, timeframe: str = "",
                    ts_ns: int | None = None) -> int:
        """Record the bar a tick of the runner acted on; returns its ``seq``."""
        payload = {"symbol": _text(symbol, "symbol"),
                   "timeframe": _text(timeframe, "timeframe", required=False),
                   "bar_ts_ns": _ts(bar_ts_ns, "bar_ts_ns")}
        for name, value in (("open", open), ("high", high), ("low", low), ("close", close),
                            ("volume", volume)):
            payload[name] = _number(value, name)
        return self._append("ticks", _ts(ts_ns), payload)

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
        qty = _number(qty, "qty")
        if qty < 0:
            raise ConfigError(f"qty must be >= 0 (the action carries the side), got {qty}")
        prices = {}
        for name, value in (("limit_price", limit_price), ("stop_loss", stop_loss),
                            ("take_profit", take_profit)):
            prices[name] = _number(value, name, optional=True)
            if prices[name] is not None and prices[name] <= 0:
                raise ConfigError(f"{name} must be a positive price, got {value!r}")
        confidence = _number(confidence, "confidence", optional=True)
        if confidence is not None and not 0.0 <= confidence <= 1.0:
            raise ConfigError(f"confidence must be within [0, 1], got {confidence}")
        if meta is not None and not isinstance(meta, dict):
            raise ConfigError(f"meta must be a dict, got {type(meta).__name__}")
        payload = {"model_id": _text(model_id, "model_id"), "symbol": _text(symbol, "symbol"),
                   "action": action, "qty": qty, **prices, "time_in_force": time_in_force,
                   "confidence": confidence, "meta": _canonical_json(meta, "meta")}
        return self._append("signals", _ts(ts_ns), payload)

    def append_order(self, model_id: str, symbol: str, client_order_id: str, record: Any,
                     broker_status: str = "NEW", *, ts_ns: int | None = None) -> int:
        """Record an order (an ``ORDER_DTYPE`` row or dict) and its broker status text."""
        payload = {"model_id": _text(model_id, "model_id"), "symbol": _text(symbol, "symbol"),
                   "client_order_id": _text(client_order_id, "client_order_id"),
                   "broker_status": _text(broker_status, "broker_status"),
                   **_record_payload(record, ORDER_DTYPE, "order")}
        return self._append("orders", _ts(ts_ns), payload)

    def append_fill(self, model_id: str, symbol: str, client_order_id: str, record: Any, *,
                    ts_ns: int | None = None) -> int:
        """Record a fill (a ``FILL_DTYPE`` row or dict) of an order."""
        payload = {"model_id": _text(model_id, "model_id"), "symbol": _text(symbol, "symbol"),
                   "client_order_id": _text(client_order_id, "client_order_id",
                                            required=False),
                   **_record_payload(record, FILL_DTYPE, "fill")}
        if payload["qty"] is None or payload["qty"] <= 0:
            raise ConfigError(f"fill.qty must be positive, got {payload['qty']}")
        if payload["side"] not in (1, -1):
            raise ConfigError(f"fill.side must be +1 (buy) or -1 (sell), got {payload['side']}")
        if payload["price"] is None or payload["price"] <= 0:
            raise ConfigError(f"fill.price must be positive, got {payload['price']}")
        return self._append("fills", _ts(ts_ns), payload)

    def append_risk_event(self, level: str, scope: str, kind: str, message: str,
                          data: dict | None = None, *, ts_ns: int | None = None) -> int:
        """Record a risk event, e.g. ``("CRITICAL", "sleeve:x", "max_drawdown", ...)``."""
        if level not in RISK_LEVELS:
            raise ConfigError(f"level must be one of {RISK_LEVELS}, got {level!r}")
        payload = {"level": level, "scope": _text(scope, "scope"), "kind": _text(kind, "kind"),
                   "message": _text(message, "message", required=False),
                   "data": _canonical_json(data, "data")}
        return self._append("risk_events", _ts(ts_ns), payload)

    def append_operator_action(self, action: str, target: str, user: str, reason: str = "",
                               *, ts_ns: int | None = None) -> int:
        """Record what an operator did (kill switch, resume, ...), to what, who and why."""
        payload = {"action": _text(action, "action"), "target": _text(target, "target"),
                   "user": _text(user, "user"), "reason": _text(reason, "reason",
                                                            required=False)}
        return self._append("operator_actions", _ts(ts_ns), payload)

    def append_config_snapshot(self, config: str | dict, *, ts_ns: int | None = None) -> int:
        """Record the configuration in force: text as given, a dict as sorted JSON."""
        if isinstance(config, dict):
            payload = {"format": "json", "text": _canonical_json(config, "config")}
        elif isinstance(config, str):
            payload = {"format": "text", "text": config}
        else:
            raise ConfigError(f"config must be text or a dict, got {type(config).__name__}")
        return self._append("config_snapshots", _ts(ts_ns), payload)

    def save_state(self, sleeve_id: str, state: np.ndarray, ts_ns: int | None = None) -> int:
        """Persist a sleeve's kernel state (a 1-element structured array) bit for bit."""
        if not isinstance(state, np.ndarray) or state.dtype.names is None or state.shape != (1,):
            raise ConfigError("state must be a 1-element structured array (STATE_DTYPE), got "
                              f"{getattr(state, 'dtype', type(state).__name__)!s} "
                              f"shape {getattr(state, 'shape', None)}")
        payload = {"sleeve_id": _text(sleeve_id, "sleeve_id"), "dtype": _dtype_text(state.dtype),
                   "state": np.ascontiguousarray(state).tobytes()}
        return self._append("sleeve_states", _ts(ts_ns), payload)

    # -- reads -------------------------------------------------------------------------
    def load_state(self, sleeve_id: str, dtype: np.dtype = STATE_DTYPE) -> np.ndarray | None:
        """The latest saved state of ``sleeve_id`` (a fresh 1-element array), or None."""
        row = self._db.execute("SELECT dtype, state, seq FROM sleeve_states WHERE sleeve_id = ? "
                               "ORDER BY seq DESC LIMIT 1", (sleeve_id,)).fetchone()
        if row is None:
            return None
        stored, blob, seq = row
        if stored != _dtype_text(np.dtype(dtype)):
            raise JournalError(
                f"state of sleeve {sleeve_id!r} (seq {seq}) in {self.path} was saved with dtype "
                f"{stored}, which differs from the requested {_dtype_text(np.dtype(dtype))}; "
                "the state layout changed: migrate it or start the sleeve afresh")
        if len(blob) != np.dtype(dtype).itemsize:
            raise JournalError(f"state of sleeve {sleeve_id!r} (seq {seq}) has {len(blob)} "
                               f"bytes, expected {np.dtype(dtype).itemsize}")
        return np.frombuffer(blob, dtype=dtype).copy()

    def head(self) -> tuple[int, str]:
        """(seq, hash) of the newest row; keep it elsewhere to catch truncation."""
        row = self._db.execute("SELECT seq, hash FROM chain ORDER BY seq DESC LIMIT 1").fetchone()
        return (row[0], row[1]) if row else (0, GENESIS_HASH)

    def rows(self, table: str, where: str = "", params: tuple = ()) -> list[dict]:
        """Rows of one table as dicts, in ``seq`` order (``where`` is an SQL condition)."""
        if table not in TABLES and table != "chain":
            raise ConfigError(f"unknown journal table {table!r}; known: {sorted(TABLES)}")
        cursor = self._db.execute(
            f"SELECT * FROM {table} {'WHERE ' + where if where else ''} ORDER BY seq", params)
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor]

    def fills(self, model_id: str | None = None) -> np.ndarray:
        """Journaled fills (all, or of one model) as a ``FILL_DTYPE`` array in seq order."""
        rows = self.rows("fills", "model_id = ?" if model_id else "",
                         (model_id,) if model_id else ())
        return _records(rows, FILL_DTYPE, "fill")

    def orders(self, model_id: str | None = None) -> np.ndarray:
        """Journaled orders (all, or of one model) as an ``ORDER_DTYPE`` array."""
        rows = self.rows("orders", "model_id = ?" if model_id else "",
                         (model_id,) if model_id else ())
        return _records(rows, ORDER_DTYPE, "order")

    def fills_frame(self, model_id: str | None = None):
        """Fills with ``seq``, ``model_id``, ``symbol`` and ``client_order_id`` columns."""
        import pandas as pd

        from mmats.backtest import records_frame

        rows = self.rows("fills", "model_id = ?" if model_id else "",
                         (model_id,) if model_id else ())
        frame = records_frame(_records(rows, FILL_DTYPE, "fill"))
        for name in ("client_order_id", "symbol", "model_id", "seq"):
            frame.insert(0, name, pd.Series([row[name] for row in rows], dtype=object))
        return frame

    def orders_by_client_id(self, client_order_id: str) -> list[dict]:
        """Every journaled row of one client order id (its status history), oldest first."""
        return self.rows("orders", "client_order_id = ?", (client_order_id,))

    # -- verification ------------------------------------------------------------------
    def verify(self) -> VerifyReport:
        """Recompute every hash and link; report edited, deleted, inserted or reordered rows."""
        rows = []  # (seq, table, ts_ns, payload, prev_hash, hash)
        for table, columns in TABLES.items():
            quoted = ", ".join(f'"{name}"' for name in columns)
            for row in self._db.execute(
                    f"SELECT seq, ts_ns, {quoted}, prev_hash, hash FROM {table}"):
                payload = dict(zip(columns, row[2:-2], strict=True))
                rows.append((row[0], table, row[1], payload, row[-2], row[-1]))
        rows.sort(key=lambda row: row[0])
        chain = {seq: (table, digest) for seq, table, digest in
                 self._db.execute("SELECT seq, table_name, hash FROM chain")}
        problems: list[Problem] = []
        known_hashes = {row[5]: row[0] for row in rows}
        previous_seq, previous_hash = 0, GENESIS_HASH
        seen = set()
        for seq, table, ts_ns, payload, prev_hash, digest in rows:
            if seq in seen:
                problems.append(Problem(table, seq, "inserted", "a second row with this seq"))
                continue
            seen.add(seq)
            if row_hash(table, seq, ts_ns, payload, prev_hash) != digest:
                problems.append(Problem(table, seq, "edited",
                                        "stored hash does not match the row's content"))
            if seq != previous_seq + 1:
                gap = previous_seq + 1 if seq - previous_seq == 2 else \
                    f"{previous_seq + 1}..{seq - 1}"
                where = f" (index says table {chain[previous_seq + 1][0]})" \
                    if previous_seq + 1 in chain else ""
                problems.append(Problem(table, seq, "deleted",
                                        f"seq {gap} missing before this row{where}"))
            elif prev_hash != previous_hash:
                if known_hashes.get(prev_hash, seq) != seq:
                    problems.append(Problem(table, seq, "reordered",
                                            f"prev_hash points at seq {known_hashes[prev_hash]}, "
                                            f"not at seq {previous_seq}"))
                else:
                    problems.append(Problem(table, seq, "edited",
                                            f"prev_hash does not match seq {previous_seq}'s hash"))
            indexed = chain.get(seq)
            if indexed is None:
                problems.append(Problem(table, seq, "inserted", "row missing from the chain index"))
            elif indexed != (table, digest):
                problems.append(Problem(table, seq, "edited",
                                        f"index records table {indexed[0]} hash {indexed[1][:12]}…"))
            previous_seq, previous_hash = seq, digest
        for seq in sorted(chain):
            if seq > previous_seq:
                problems.append(Problem(chain[seq][0], seq, "deleted",
                                        "indexed in the chain but the row is gone"))
        return VerifyReport(ok=not problems, rows_checked=len(rows), head_seq=previous_seq,
                            head_hash=previous_hash, problems=problems)


def _records(rows: list[dict], dtype: np.dtype, kind: str) -> np.ndarray:
    records = np.zeros(len(rows), dtype=dtype)
    for name in dtype.names:
        column = f"{kind}_ts_ns" if name == "ts_ns" else name
        values = [row[column] for row in rows]
        if dtype[name].kind == "f":
            values = [np.nan if value is None else value for value in values]
        records[name] = values
    return records
