"""The journal's layout: its tables and their columns, the indexes its named queries use,
the INSERTs that write them, the values some columns may take, how ORDER/FILL records map
to columns, the canonical text each row's hash is taken of, and the report of a
verification. :mod:`mmats.live.journal` writes and reads it."""

from __future__ import annotations

import contextlib
import functools
import getpass
import hashlib
import json
import math
import os
import sqlite3
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mmats.errors import ConfigError
from mmats.live.journal_signing import SCHEME, JournalError, Problem
from mmats.types import FILL_DTYPE, ORDER_DTYPE

GENESIS_HASH = "0" * 64
ACTIONS = ("BUY", "SELL", "HOLD")
TIMES_IN_FORCE = ("GTC", "IOC", "FOK", "DAY", "GTD")
RISK_LEVELS = ("INFO", "WARNING", "CRITICAL")
LAYOUT = "2"  # 1: before signing (no meta table, chain.sig, config_snapshots.user)


def record_columns(dtype: np.dtype, kind: str) -> dict[str, str]:
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
               "broker_status": "TEXT", **record_columns(ORDER_DTYPE, "order")},
    "fills": {"model_id": "TEXT", "symbol": "TEXT", "client_order_id": "TEXT",
              **record_columns(FILL_DTYPE, "fill")},
    "risk_events": {"level": "TEXT", "scope": "TEXT", "kind": "TEXT", "message": "TEXT",
                    "data": "TEXT"},
    "operator_actions": {"action": "TEXT", "target": "TEXT", "user": "TEXT", "reason": "TEXT"},
    "config_snapshots": {"format": "TEXT", "text": "TEXT", "user": "TEXT"},
    "sleeve_states": {"sleeve_id": "TEXT", "dtype": "TEXT", "state": "BLOB"},
}


#: The indexes the named queries use (created with a journal, and added to an older one
#: when it is opened for writing; an index is not part of the hash chain).
INDEXES = (
    "CREATE INDEX IF NOT EXISTS fills_model ON fills (model_id)",
    "CREATE INDEX IF NOT EXISTS fills_client ON fills (client_order_id)",
    "CREATE INDEX IF NOT EXISTS orders_client ON orders (client_order_id)",
    "CREATE INDEX IF NOT EXISTS orders_sleeve ON orders (model_id, symbol)",
    "CREATE INDEX IF NOT EXISTS states_sleeve ON sleeve_states (sleeve_id)",
    "CREATE INDEX IF NOT EXISTS events_kind ON risk_events (kind, scope)",
)


@functools.cache
def schema_statements() -> tuple[str, ...]:
    """What creates a journal: the chain index, ``meta``, the tables, the indexes and the
    triggers that make every table append-only."""
    statements = ["CREATE TABLE IF NOT EXISTS chain (seq INTEGER PRIMARY KEY, "
                  "table_name TEXT NOT NULL, hash TEXT NOT NULL, sig TEXT)",
                  "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, "
                  "value TEXT NOT NULL)"]
    for table, columns in TABLES.items():
        body = ", ".join(f'"{name}" {kind}' for name, kind in columns.items())
        statements.append(
            f"CREATE TABLE IF NOT EXISTS {table} (seq INTEGER PRIMARY KEY, "
            f"ts_ns INTEGER NOT NULL, {body}, prev_hash TEXT NOT NULL, "
            "hash TEXT NOT NULL)")
    statements += INDEXES
    for table in ("chain", "meta", *TABLES):
        for verb in ("UPDATE", "DELETE"):
            statements.append(
                f"CREATE TRIGGER IF NOT EXISTS {table}_no_{verb.lower()} BEFORE {verb} "
                f"ON {table} BEGIN SELECT RAISE(ABORT, "
                f"'journal table {table} is append-only: {verb} is forbidden'); END")
    return tuple(statements)


@functools.cache
def table_sql() -> dict[str, str]:
    """The ``sqlite_master.sql`` text of each table :func:`schema_statements` creates (as
    SQLite records it, made once in memory): a journal whose tables carry exactly these
    texts has exactly this layout's columns, with no need to list them (a tick opens the
    journal)."""
    with contextlib.closing(sqlite3.connect(":memory:")) as db:
        for statement in schema_statements():
            db.execute(statement)
        return dict(db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'"))


CHAIN_INSERT = "INSERT INTO chain (seq, table_name, hash, sig) VALUES (?, ?, ?, ?)"


@functools.cache
def insert_sql(table: str) -> str:
    """The INSERT of one table's row (the same text each time: sqlite3 keeps it prepared)."""
    quoted = ", ".join(f'"{name}"' for name in TABLES[table])
    marks = ", ".join("?" * (len(TABLES[table]) + 4))
    return f"INSERT INTO {table} (seq, ts_ns, {quoted}, prev_hash, hash) VALUES ({marks})"


@functools.lru_cache(maxsize=32)
def dtype_text(dtype: np.dtype) -> str:
    """The dtype as stored beside a state (every save and load: worth caching)."""
    return json.dumps(np.lib.format.dtype_to_descr(dtype))


@functools.lru_cache(maxsize=32)
def dtype_facts(dtype: np.dtype) -> tuple[str, int]:
    """A state dtype's stored text and size (every state loaded checks both)."""
    return dtype_text(dtype), dtype.itemsize


#: Columns of every table; layout 1 lacked the ones in ADDED_IN_LAYOUT_2 and ``meta``.
EXPECTED_COLUMNS = {"chain": {"seq", "table_name", "hash", "sig"}, "meta": {"name", "value"},
             **{table: {"seq", "ts_ns", *columns, "prev_hash", "hash"}
                for table, columns in TABLES.items()}}
ADDED_IN_LAYOUT_2 = {"chain": {"sig"}, "config_snapshots": {"user"}}


# -- the values a column takes: checked, or refused with the field's name ------------


def json_value(value: Any, name: str) -> str | None:
    if value is None:
        return None
    try:
        return _JSON.encode(value)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{name} must be JSON-serialisable without NaN: {error}") from None


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


# what json.dumps(value, sort_keys=True, ...) writes, without building an encoder per call
_JSON = json.JSONEncoder(sort_keys=True, separators=(",", ":"), allow_nan=False,
                         default=_json_default)


# The checks below take the common case (a plain str, finite float or int) first: a tick
# checks some thirty values.

def text_value(value: Any, name: str, *, required: bool = True) -> str:
    if type(value) is str and value:
        return value
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value):
        raise ConfigError(f"{name} must be a non-empty string, got {value!r}")
    return value


def number_value(value: Any, name: str, *, optional: bool = False, finite: bool = True):
    """A float for a REAL column; NaN is refused (SQLite would silently store NULL)."""
    if type(value) is float and value - value == 0.0:  # finite
        return value
    if value is None and optional:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number, got {value!r}") from None
    if math.isnan(number) or (finite and math.isinf(number)):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    return number


def integer_value(value: Any, name: str) -> int:
    if type(value) is int:
        return value
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    return int(value)


def ts_value(ts_ns: int | None, name: str = "ts_ns") -> int:
    if type(ts_ns) is int and ts_ns >= 0:
        return ts_ns
    if ts_ns is None:
        return time.time_ns()
    value = integer_value(ts_ns, name)
    if value < 0:
        raise ConfigError(f"{name} must be >= 0 nanoseconds since the epoch, got {value}")
    return value


# -- records (ORDER/FILL rows) <-> columns ------------------------------------------

def record_payload(record: Any, dtype: np.dtype, kind: str) -> dict:
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
            payload[column] = integer_value(record[name], f"{kind}.{name}")
        else:
            # a backtest record may hold NaN (e.g. no price for a rejected order); keep it
            # as NULL and read it back as NaN
            value = float(record[name])
            payload[column] = None if math.isnan(value) else value
    return payload


def journal_records(rows: list[dict], dtype: np.dtype, kind: str) -> np.ndarray:
    """Journal rows (dicts) as records of ``dtype`` (a NULL float column reads as NaN)."""
    records = np.zeros(len(rows), dtype=dtype)
    for name in dtype.names:
        column = f"{kind}_ts_ns" if name == "ts_ns" else name
        values = [row[column] for row in rows]
        if dtype[name].kind == "f":
            values = [np.nan if value is None else value for value in values]
        records[name] = values
    return records


def os_user() -> str:
    """The operating-system account running this process: its password-database name
    (which, unlike ``$USER``, the environment cannot change), else ``getpass.getuser()``."""
    try:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_name
    except (ImportError, KeyError):
        pass
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no password entry and no $USER/$LOGNAME (a bare container)
        return f"uid {os.getuid()}" if hasattr(os, "getuid") else "unknown"


# -- the hash chain's canonical text ------------------------------------------------

def row_hash(table: str, seq: int, ts_ns: int, payload: dict, prev_hash: str) -> str:
    """sha256 (hex) of the canonical JSON of one row; blobs enter as hex text."""
    if table == "sleeve_states" and type(payload.get("dtype")) is str:  # noqa: E721
        rest = _state_row_rest(seq, ts_ns, payload, prev_hash)
        if rest is not None:  # the text's head, with the dtype, is hashed once per dtype
            digest = _state_row_head_hash(payload["dtype"]).copy()
            digest.update(rest.encode("ascii"))
            return digest.hexdigest()
    text = _flat_row_text(table, seq, ts_ns, payload, prev_hash)
    if text is None:
        canonical = {name: value.hex() if isinstance(value, bytes) else value
                     for name, value in payload.items()}
        text = _CANONICAL.encode({"table": table, "seq": seq, "ts_ns": ts_ns,
                                  "payload": canonical, "prev_hash": prev_hash})
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def _flat_row_text(table, seq, ts_ns, payload: dict, prev_hash) -> str | None:
    """The canonical JSON of a row whose values are all plain ``str``, ``int``, ``float``,
    ``bytes`` or None (every row the runner appends), written as the encoder writes them
    (``sort_keys``; floats by ``float.__repr__``, NaN and infinities as ``NaN`` and
    ``Infinity``; strings by the encoder's own ASCII escaping) without its generic walk
    over the values; None for any other value, which goes through the encoder."""
    if type(seq) is not int or type(ts_ns) is not int or type(prev_hash) is not str:
        return None
    parts = []
    for name, label in _sorted_labels(tuple(payload)):
        value = payload[name]
        kind = type(value)
        if kind is str:
            text = _ascii(value)
        elif kind is float and value - value == 0.0:  # finite (NaN and infinities are not)
            text = float.__repr__(value)
        elif value is None:
            text = "null"
        else:
            text = _plain_text(value)
            if text is None:
                return None
        parts.append(label + text)
    return (f'{{"payload":{{{",".join(parts)}}},"prev_hash":{_ascii(prev_hash)},'
            f'"seq":{seq},"table":{_ascii(table)},"ts_ns":{ts_ns}}}')


@functools.lru_cache(maxsize=64)
def _sorted_labels(names: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """A payload's names in ``sort_keys`` order, each with its ``"name":`` text (the same
    few column sets at every append)."""
    return tuple((name, _ascii(name) + ":") for name in sorted(names))


def _plain_text(value) -> str | None:
    kind = type(value)
    if kind is str:
        return _ascii(value)
    if kind is float:
        if value != value:
            return "NaN"
        if value in (math.inf, -math.inf):
            return "Infinity" if value > 0 else "-Infinity"
        return float.__repr__(value)
    if kind is int:
        return int.__repr__(value)
    if value is None:
        return "null"
    if kind is bytes:
        return f'"{value.hex()}"'
    return None


def _state_row_rest(seq, ts_ns, payload: dict, prev_hash) -> str | None:
    """The canonical JSON of a saved state's row after its head (:func:`_state_row_head`,
    the dtype's JSON: most of the row's text, the same at every save); None for a row of
    other types."""
    if len(payload) != 3 or payload.keys() != _STATE_KEYS or not (
            type(payload["sleeve_id"]) is str and type(payload["state"]) is bytes  # noqa: E721
            and type(seq) is int and type(ts_ns) is int and type(prev_hash) is str):  # noqa: E721
        return None
    encode = _CANONICAL.encode
    return (f'{encode(payload["sleeve_id"])},"state":"{payload["state"].hex()}"}},'
            f'"prev_hash":{encode(prev_hash)},"seq":{seq},"table":"sleeve_states",'
            f'"ts_ns":{ts_ns}}}')


_STATE_KEYS = frozenset({"sleeve_id", "dtype", "state"})


@functools.lru_cache(maxsize=32)
def _state_row_head(dtype_text: str) -> str:
    """The start of a state row's canonical JSON, up to its sleeve id: the same for every
    state of one dtype (its JSON is most of the row's text)."""
    return f'{{"payload":{{"dtype":{_CANONICAL.encode(dtype_text)},"sleeve_id":'


@functools.lru_cache(maxsize=32)
def _state_row_head_hash(dtype_text: str):
    """sha256 fed :func:`_state_row_head`: each state row's hash goes on from a copy."""
    return hashlib.sha256(_state_row_head(dtype_text).encode("ascii"))


# json.dumps with these options builds an encoder per call: half the cost of a row's hash
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True)
_ascii = json.encoder.encode_basestring_ascii  # the encoder's own escaping of a string


def chain_problems(rows: list[tuple], chain: dict[int, tuple]
                   ) -> tuple[list[Problem], int, str]:
    """The hash chain's findings over ``rows`` (``(seq, table, ts_ns, payload, prev_hash,
    hash)`` in seq order) and the chain index (seq -> ``(table, hash, sig)``): edited,
    deleted, inserted and reordered rows; and the newest row's ``(seq, hash)``."""
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
        elif indexed[:2] != (table, digest):
            problems.append(Problem(table, seq, "edited",
                                    f"index records table {indexed[0]} hash {indexed[1][:12]}…"))
        previous_seq, previous_hash = seq, digest
    for seq in sorted(chain):
        if seq > previous_seq:
            problems.append(Problem(chain[seq][0], seq, "deleted",
                                    "indexed in the chain but the row is gone"))
    return problems, previous_seq, previous_hash


@dataclass
class VerifyReport:
    """Outcome of :meth:`Journal.verify`; ``problems`` is empty when nothing was tampered
    with. Problem kinds of the chain: ``edited``, ``deleted``, ``reordered``, ``inserted``;
    of signatures and the anchor: ``forged``, ``rewritten``, ``truncated``,
    ``anchor_forged``. ``warnings`` (``unsigned``, ``anchor_missing``, ``anchor_behind``,
    ``anchor_damaged``, ``anchor_foreign``) do not make it fail."""

    ok: bool
    rows_checked: int
    head_seq: int
    head_hash: str
    problems: list[Problem] = field(default_factory=list)
    signed: bool = False
    anchor: str = ""
    anchor_head_seq: int = 0
    warnings: list[Problem] = field(default_factory=list)

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
                "head_hash": self.head_hash, "signed": self.signed, "anchor": self.anchor,
                "anchor_head_seq": self.anchor_head_seq,
                "problems": [vars(problem) for problem in self.problems],
                "warnings": [vars(warning) for warning in self.warnings]}


def read_layout(db: sqlite3.Connection, path, readonly: bool
                ) -> tuple[int, dict[str, list[str]], dict[str, str]]:
    """The layout of the journal open on ``db`` (the file ``path``): ``(layout, each
    table's columns, the meta table)``. Refuses a file whose tables or columns are not this
    layout's, naming them; an older journal (layout 1) is readable with ``readonly=True``
    only."""
    created = dict(db.execute("SELECT name, sql FROM sqlite_master WHERE type='table'"))
    names = set(created)
    missing = sorted({"chain", *TABLES} - names)
    if missing:
        raise JournalError(f"journal {path} lacks the tables {missing}; "
                           "is it an MMATS journal?")
    if all(created.get(table) == sql for table, sql in table_sql().items()):
        actual = EXPECTED_COLUMNS  # created by this layout's own statements, word for word
    else:  # every table's columns, in one query
        actual = {}
        for table, column in db.execute(
                "SELECT m.name, p.name FROM sqlite_master AS m, "
                "pragma_table_info(m.name) AS p WHERE m.type = 'table'"):
            if table in EXPECTED_COLUMNS:
                actual.setdefault(table, set()).add(column)
    columns = {table: list(names_) for table, names_ in TABLES.items()}
    if "meta" not in names and all(
            actual[table] == EXPECTED_COLUMNS[table] - ADDED_IN_LAYOUT_2.get(table, set())
            for table in ("chain", *TABLES)):
        if not readonly:
            raise JournalError(
                f"journal {path} has the older layout written before journals were "
                "signed (no 'sig' column in chain, no 'user' column in config_snapshots): "
                "this version of MMATS neither appends to it nor migrates it. Start a new "
                "journal (move this file aside, or point the configuration's journal: at "
                "a new path); 'python scripts/journal.py verify' and 'export' still read it")
        columns["config_snapshots"] = ["format", "text"]
        return 1, columns, {}
    for table in ("chain", *TABLES, "meta"):
        have = actual.get(table)
        if have is None:
            raise JournalError(f"journal {path} lacks the table {table!r}; is it an "
                               "MMATS journal of this version?")
        if have != EXPECTED_COLUMNS[table]:
            raise JournalError(
                f"journal {path}: table {table} lacks the columns "
                f"{sorted(EXPECTED_COLUMNS[table] - have)} and has unexpected columns "
                f"{sorted(have - EXPECTED_COLUMNS[table])}; it was not written by this version "
                "of MMATS (or was altered); start a new journal")
    meta = dict(db.execute("SELECT name, value FROM meta"))
    if (meta.get("layout") != LAYOUT or not meta.get("journal_id")
            or meta.get("signing") not in ("none", SCHEME)):
        raise JournalError(
            f"journal {path}: its meta table records layout "
            f"{meta.get('layout')!r}, signing {meta.get('signing')!r}, which "
            f"this version of MMATS (layout {LAYOUT}) does not know; upgrade MMATS, or "
            "start a new journal")
    return 2, columns, meta
