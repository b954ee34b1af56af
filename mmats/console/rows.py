"""Journal rows as the dashboard shows them: plain dicts of JSON-ready values (no NaN:
None), times as integer milliseconds since the epoch (``ts_ms``). Shared by
:class:`~mmats.console.readmodel.ReadModel`'s views and its live feed of changes, so a row
reads the same in a table and in the stream.
"""

from __future__ import annotations

import json
import math

import numpy as np

from mmats.types import STATE_DTYPE, FillReason, TradingState

NS_PER_MS = 1_000_000
LEVELS = ("INFO", "WARNING", "CRITICAL")
#: How the journal stores a sleeve's state dtype beside it (as Journal.save_state does).
STATE_TEXT = json.dumps(np.lib.format.dtype_to_descr(STATE_DTYPE))
PROTECTIVE = {int(FillReason.STOP_LOSS): "stop_loss", int(FillReason.TAKE_PROFIT): "take_profit"}

#: The columns the read model keeps of each table (its rows are tuples of these).
SIGNAL_FIELDS = ("seq", "ts_ns", "model_id", "symbol", "action", "qty", "limit_price",
                 "stop_loss", "take_profit", "time_in_force", "confidence", "meta")
ORDER_FIELDS = ("seq", "ts_ns", "model_id", "symbol", "client_order_id", "broker_status",
                "order_id", "decision_ts_ns", "order_ts_ns", "target_exposure", "requested_qty",
                "filled_qty", "price", "reason")
FILL_FIELDS = ("seq", "ts_ns", "model_id", "symbol", "client_order_id", "order_id",
               "fill_ts_ns", "side", "qty", "price", "fee", "slippage", "reason",
               "position_after", "realized_pnl")
RISK_FIELDS = ("seq", "ts_ns", "level", "scope", "kind", "message")
OPERATOR_FIELDS = ("seq", "ts_ns", "action", "target", "user", "reason")
#: of a configuration snapshot, its text's length only (layout 1 had no ``user`` column)
CONFIG_FIELDS = ("seq", "ts_ns", "format", "length(text) AS text_length", "user")


def order_of(row: tuple) -> dict:
    """A kept ``orders`` row (a tuple of ``ORDER_FIELDS``) as :func:`order_view`."""
    return order_view(dict(zip(ORDER_FIELDS, row, strict=True)))


def fill_of(row: tuple) -> dict:
    """A kept ``fills`` row (a tuple of ``FILL_FIELDS``) as :func:`fill_view`."""
    return fill_view(dict(zip(FILL_FIELDS, row, strict=True)))


def number(value) -> float | None:
    """A float for JSON: None for a missing or non-finite value."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def ms(ts_ns) -> int | None:
    """Nanoseconds as integer milliseconds; None for a missing or negative time (-1:
    none yet)."""
    if ts_ns is None or int(ts_ns) < 0:
        return None
    return int(ts_ns) // NS_PER_MS


def plain(value):
    """A JSON-ready copy (numpy scalars as Python numbers, NaN as None)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _reason_name(code) -> str | None:
    try:
        return FillReason(int(code)).name.lower()
    except (TypeError, ValueError):
        return None


def _event_time(row: dict, column: str) -> int:
    """A record's own time (when it filled, its bar) where it has one, else the row's:
    a paper replay journals its rows at the wall clock but its fills at their bars."""
    value = row.get(column)
    return value if value is not None and value > 0 else row["ts_ns"]


def fill_view(row: dict) -> dict:
    """A ``fills`` row as the dashboard shows it: ``{"seq", "ts_ms" (the fill's time),
    "model_id", "symbol", "client_order_id", "order_id", "side" ("buy"/"sell"), "qty",
    "price", "fee", "slippage", "reason" (signal, stop_loss, take_profit, risk),
    "position_after", "realized_pnl"}``."""
    return {"seq": row["seq"], "ts_ms": _event_time(row, "fill_ts_ns") // NS_PER_MS,
            "model_id": row["model_id"], "symbol": row["symbol"],
            "client_order_id": row["client_order_id"], "order_id": row["order_id"],
            "side": "buy" if (row["side"] or 0) > 0 else "sell", "qty": number(row["qty"]),
            "price": number(row["price"]), "fee": number(row["fee"]),
            "slippage": number(row["slippage"]), "reason": _reason_name(row["reason"]),
            "position_after": number(row["position_after"]),
            "realized_pnl": number(row["realized_pnl"])}


def order_view(row: dict) -> dict:
    """An ``orders`` row: ``{"seq", "ts_ms" (the record's time, else the row's),
    "decision_ts_ms", "model_id", "symbol", "client_order_id", "status" (the journal's
    broker status), "kind" ("market", or "stop_loss"/"take_profit" for a protective leg),
    "side", "qty", "filled_qty", "price", "target_exposure", "order_id", "reason"}``."""
    requested = row["requested_qty"] or 0.0
    order_id = row["order_id"]
    kind = PROTECTIVE.get(row["reason"], "market") if order_id is not None and order_id < 0 \
        else "market"
    return {"seq": row["seq"], "ts_ms": _event_time(row, "order_ts_ns") // NS_PER_MS,
            "decision_ts_ms": ms(row["decision_ts_ns"]) if row["decision_ts_ns"] else None,
            "model_id": row["model_id"], "symbol": row["symbol"],
            "client_order_id": row["client_order_id"], "status": row["broker_status"],
            "kind": kind, "side": "buy" if requested > 0 else "sell" if requested < 0 else None,
            "qty": abs(float(requested)), "filled_qty": abs(number(row["filled_qty"]) or 0.0),
            "price": number(row["price"]), "target_exposure": number(row["target_exposure"]),
            "order_id": order_id, "reason": _reason_name(row["reason"])}


def signal_view(row) -> dict:
    """A ``signals`` row with its ``meta`` parsed (the gate-by-gate reasons, when the
    runner journals them, are there: ``meta.gates``, ``meta.decision``, ``meta.reason``)."""
    try:
        meta = json.loads(row["meta"]) if row["meta"] else None
    except ValueError:
        meta = {"unreadable": row["meta"]}
    return {"seq": row["seq"], "ts_ms": row["ts_ns"] // NS_PER_MS, "model_id": row["model_id"],
            "symbol": row["symbol"], "action": row["action"], "qty": number(row["qty"]),
            "limit_price": number(row["limit_price"]), "stop_loss": number(row["stop_loss"]),
            "take_profit": number(row["take_profit"]), "time_in_force": row["time_in_force"],
            "confidence": number(row["confidence"]), "meta": plain(meta)}


def log_entry(seq, ts_ns, source, level, kind, scope, message, user) -> dict:
    return {"seq": seq, "ts_ms": ms(ts_ns), "source": source,
            "level": level if level in LEVELS else "INFO", "kind": kind or "", "scope": scope,
            "message": message or "", "user": user}


def risk_log(row: dict) -> dict:
    return log_entry(row["seq"], row["ts_ns"], "risk", row["level"], row["kind"], row["scope"],
                row["message"], None)


def operator_log(row: dict) -> dict:
    action = row["action"]
    level = "CRITICAL" if action == "kill" else "WARNING" if action in (
        "pause", "close", "login_failed", "order", "order_refused",
        "telegram_refused") else "INFO"
    reason = f": {row['reason']}" if row["reason"] else ""
    return log_entry(row["seq"], row["ts_ns"], "operator", level, action, row["target"],
                f"{action} {row['target']} by {row['user']}{reason}", row["user"])


def config_log(row: dict) -> dict:
    """A configuration snapshot: its whole text (``text``) or only its ``text_length``."""
    user = row.get("user")
    length = row["text_length"] if "text_length" in row else len(row.get("text") or "")
    return log_entry(row["seq"], row["ts_ns"], "config", "INFO", "config_snapshot", "config",
                     f"configuration in force ({row['format']}, {length} characters)"
                     + (f", by {user}" if user else ""), user)


def event_of(table: str, row: dict, configured: dict) -> dict:
    """One journal row as an event of the live feed: ``{"seq", "table", "ts_ms",
    "summary": one line}`` and the row's key fields — fills: those of :func:`fill_view`;
    orders: of :func:`order_view`; signals: model_id, symbol, action, qty, stop_loss,
    take_profit, confidence; risk events and operator actions: those of the log entry
    (level, kind, scope, user; ``action`` for an operator action); ticks: symbol,
    timeframe, close; sleeve states: sleeve, model_id, symbol, position, equity,
    trading_state (a scope's book: sleeve only)."""
    base = {"seq": row["seq"], "table": table, "ts_ms": row["ts_ns"] // NS_PER_MS}
    if table == "fills":
        fill = fill_view(row)
        return {**base, **fill, "summary": f"fill {fill['model_id']} {fill['symbol']}: "
                f"{fill['side']} {fill['qty']:.6g} @ {fill['price']:.8g} ({fill['reason']})"}
    if table == "orders":
        order = order_view(row)
        return {**base, **order, "summary": f"order {order['model_id']} {order['symbol']}: "
                f"{order['side'] or '-'} {order['qty']:.6g} {order['kind']} {order['status']}"}
    if table == "signals":
        signal = signal_view(row)
        levels = "".join(f" {name} {signal[name]:.8g}" for name in ("stop_loss", "take_profit")
                         if signal[name] is not None)
        return {**base, **{k: signal[k] for k in ("model_id", "symbol", "action", "qty",
                                                  "stop_loss", "take_profit", "confidence")},
                "summary": f"signal {signal['model_id']} {signal['symbol']}: "
                           f"{signal['action']} {signal['qty']:.6g}{levels}"}
    if table in ("risk_events", "operator_actions", "config_snapshots"):
        entry = {"risk_events": risk_log, "operator_actions": operator_log,
                 "config_snapshots": config_log}[table](row)
        extra = {"action": entry["kind"]} if table == "operator_actions" else {}
        return {**base, **{k: entry[k] for k in ("level", "kind", "scope", "user")}, **extra,
                "summary": f"{entry['source']} {entry['level']} {entry['kind']}: "
                           f"{entry['message']}"}
    if table == "ticks":
        return {**base, "ts_ms": row["bar_ts_ns"] // NS_PER_MS, "symbol": row["symbol"],
                "timeframe": row["timeframe"], "close": number(row["close"]),
                "summary": f"bar {row['symbol']} {row['timeframe']} close {row['close']:.8g}"}
    if table == "sleeve_states":
        return {**base, **_state_event(row, configured)}
    return {**base, "summary": table}


def _state_event(row: dict, configured: dict) -> dict:
    sleeve_id = row["sleeve_id"]
    sleeve = configured.get(sleeve_id)
    if sleeve is None or row["dtype"] != STATE_TEXT or len(row["state"]) != STATE_DTYPE.itemsize:
        return {"sleeve": sleeve_id, "summary": f"state {sleeve_id}"}
    record = np.frombuffer(row["state"], dtype=STATE_DTYPE)[0]
    state = TradingState(int(record["trading_state"])).name
    return {"sleeve": sleeve_id, "model_id": sleeve.model_id, "symbol": sleeve.symbol,
            "position": float(record["position"]), "equity": number(record["equity"]),
            "trading_state": state,
            "summary": f"state {sleeve_id}: equity {float(record['equity']):.2f}, position "
                       f"{float(record['position']):.6g}, {state}"}
