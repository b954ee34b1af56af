"""The journal's layout: its tables and their columns, the indexes its named queries use,
the values some columns may take, how ORDER/FILL records map to columns, and the
canonical text each row's hash is taken of. :mod:`mmats.live.journal` writes and reads it."""

from __future__ import annotations

import functools
import getpass
import hashlib
import json
import math
import os
import time
from typing import Any

import numpy as np

from mmats.errors import ConfigError
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


def text_value(value: Any, name: str, *, required: bool = True) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value):
        raise ConfigError(f"{name} must be a non-empty string, got {value!r}")
    return value


def number_value(value: Any, name: str, *, optional: bool = False, finite: bool = True):
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


def integer_value(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    return int(value)


def ts_value(ts_ns: int | None, name: str = "ts_ns") -> int:
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
        text = _state_row_text(seq, ts_ns, payload, prev_hash)
        if text is not None:
            return hashlib.sha256(text.encode("ascii")).hexdigest()
    canonical = {name: value.hex() if isinstance(value, bytes) else value
                 for name, value in payload.items()}
    text = _CANONICAL.encode({"table": table, "seq": seq, "ts_ns": ts_ns,
                              "payload": canonical, "prev_hash": prev_hash})
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def _state_row_text(seq, ts_ns, payload: dict, prev_hash) -> str | None:
    """The canonical JSON of a saved state's row, with its dtype's JSON made once (most of
    the row's text, the same at every save); None for a row of other types."""
    if payload.keys() != {"sleeve_id", "dtype", "state"} or not (
            type(payload["sleeve_id"]) is str and type(payload["state"]) is bytes  # noqa: E721
            and type(seq) is int and type(ts_ns) is int and type(prev_hash) is str):  # noqa: E721
        return None
    encode = _CANONICAL.encode
    return (f'{{"payload":{{"dtype":{_dtype_json(payload["dtype"])},"sleeve_id":'
            f'{encode(payload["sleeve_id"])},"state":"{payload["state"].hex()}"}},'
            f'"prev_hash":{encode(prev_hash)},"seq":{seq},"table":"sleeve_states",'
            f'"ts_ns":{ts_ns}}}')


@functools.lru_cache(maxsize=32)
def _dtype_json(text: str) -> str:
    return _CANONICAL.encode(text)


# json.dumps with these options builds an encoder per call: half the cost of a row's hash
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True)
