"""Trade history exports, CSV and FIXML 5.0, from a backtest result or the live journal.

Both sources hold the same record dtypes (:mod:`mmats.types`), so one code path serves
them. Files are written atomically (a temporary file renamed over the target).

Example::

    trades_to_csv(backtest("ema_cross", candles), "reports/fills.csv")
    with Journal("journal.sqlite") as journal:
        trades_to_fixml(journal, "reports/fills.fixml", account="paper-1")
"""

from __future__ import annotations

import csv
import io
import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mmats.errors import ConfigError
from mmats.reports.files import atomic_path, write_text_atomic
from mmats.types import FILL_DTYPE, TRADE_DTYPE, FillReason

FIXML_NAMESPACE = "http://www.fixprotocol.org/FIXML-5-0-SP2"
FIXML_VERSION = "5.0 SP2"


def _fills_table(source: Any, symbol: str | None) -> tuple[str, pd.DataFrame]:
    """("fills" | "trades", one row per record) with symbol and ids, from any source."""
    from mmats.backtest import BacktestResult
    from mmats.live.journal import Journal

    if isinstance(source, Journal):
        frame = source.fills_frame()
        if symbol is not None:
            frame["symbol"] = symbol
        return "fills", frame
    if isinstance(source, BacktestResult):
        symbol = symbol or source.market.symbol or ""
        source = source.fills
    if not isinstance(source, np.ndarray) or source.dtype not in (FILL_DTYPE, TRADE_DTYPE):
        raise ConfigError("source must be a BacktestResult, a Journal or a FILL_DTYPE / "
                          f"TRADE_DTYPE record array, got {type(source).__name__} "
                          f"{getattr(source, 'dtype', '')}")
    kind = "fills" if source.dtype == FILL_DTYPE else "trades"
    frame = pd.DataFrame.from_records(source) if len(source) else pd.DataFrame(
        {name: pd.Series(dtype=source.dtype[name]) for name in source.dtype.names})
    frame.insert(0, "symbol", symbol or "")
    return kind, frame


def _iso(ts_ns: pd.Series) -> pd.Series:
    """ISO 8601 UTC times with microseconds, e.g. ``2018-01-10T11:55:00.000000Z``."""
    times = pd.to_datetime(ts_ns.astype("int64"), utc=True)
    return times.dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _reason(values: pd.Series) -> pd.Series:
    return values.map(lambda value: FillReason(int(value)).name if int(value) in
                      FillReason._value2member_map_ else str(value))


def trades_to_csv(source: Any, path: str | os.PathLike, *, symbol: str | None = None) -> Path:
    """Write fills (or round-trip trades) as CSV with ISO times; return the path.

    ``source`` is a BacktestResult, a Journal, or a FILL_DTYPE / TRADE_DTYPE array.
    Floats are written with full precision (``repr``), so they read back exactly.
    """
    kind, frame = _fills_table(source, symbol)
    out = pd.DataFrame()
    if kind == "fills":
        out["time"] = _iso(frame["ts_ns"])
        for name in ("seq", "model_id", "symbol", "client_order_id"):
            if name in frame:
                out[name] = frame[name]
        out["order_id"] = frame["order_id"]
        out["side"] = np.where(frame["side"].to_numpy() > 0, "BUY", "SELL")
        for name in ("qty", "price", "fee", "slippage"):
            out[name] = frame[name]
        out["reason"] = _reason(frame["reason"])
        for name in ("position_after", "cash_after", "realized_pnl", "bar", "ts_ns"):
            out[name] = frame[name]
    else:
        out["entry_time"] = _iso(frame["entry_ts_ns"])
        out["exit_time"] = _iso(frame["exit_ts_ns"])
        out["symbol"] = frame["symbol"]
        out["direction"] = np.where(frame["direction"].to_numpy() > 0, "LONG", "SHORT")
        for name in ("size", "entry_price", "exit_price", "pnl", "return_pct", "fees"):
            out[name] = frame[name]
        out["exit_reason"] = _reason(frame["exit_reason"])
        for name in ("entry_bar", "exit_bar", "entry_ts_ns", "exit_ts_ns"):
            out[name] = frame[name]
    buffer = io.StringIO()
    out.to_csv(buffer, index=False, quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
    return write_text_atomic(path, buffer.getvalue())


def _number(value: float) -> str:
    return repr(float(value))


def trades_to_fixml(source: Any, path: str | os.PathLike, *, account: str = "",
                    symbol: str | None = None) -> Path:
    """Write a FIXML 5.0 SP2 document: one ``TrdCaptRpt`` per fill, in a ``Batch``.

    Each report carries TrdID, LastQty, LastPx, TrdDt, TxnTm, ``Instrmt Sym`` and a
    ``RptSide`` with Side (1 buy, 2 sell), the account and the commission (absolute,
    CommTyp 3). A TRADE_DTYPE source becomes two reports per round trip (entry and exit,
    quantity = the trade's largest size, all fees on the exit report).
    """
    kind, frame = _fills_table(source, symbol)
    reports = []
    if kind == "fills":
        ids = frame["seq"] if "seq" in frame else pd.Series(range(1, len(frame) + 1))
        for trade_id, row in zip(ids, frame.itertuples(index=False), strict=True):
            reports.append((f"F{trade_id}", row.ts_ns, row.side, row.qty, row.price, row.fee,
                            row.symbol, getattr(row, "client_order_id", "") or ""))
    else:
        for number, row in enumerate(frame.itertuples(index=False), start=1):
            reports.append((f"T{number}-entry", row.entry_ts_ns, row.direction, row.size,
                            row.entry_price, 0.0, row.symbol, ""))
            reports.append((f"T{number}-exit", row.exit_ts_ns, -row.direction, row.size,
                            row.exit_price, row.fees, row.symbol, ""))
    ET.register_namespace("", FIXML_NAMESPACE)
    root = ET.Element(f"{{{FIXML_NAMESPACE}}}FIXML", {"v": FIXML_VERSION})
    batch = ET.SubElement(root, f"{{{FIXML_NAMESPACE}}}Batch")
    for trade_id, ts_ns, side, qty, price, fee, sym, client_order_id in reports:
        time = pd.Timestamp(int(ts_ns), unit="ns", tz="UTC")
        report = ET.SubElement(batch, f"{{{FIXML_NAMESPACE}}}TrdCaptRpt", {
            "RptID": trade_id, "TrdID": trade_id, "TransTyp": "0", "RptTyp": "0",
            "LastQty": _number(qty), "LastPx": _number(price),
            "TrdDt": time.strftime("%Y-%m-%d"),
            "TxnTm": time.strftime("%Y-%m-%dT%H:%M:%S.%f") + "Z"})
        ET.SubElement(report, f"{{{FIXML_NAMESPACE}}}Instrmt", {"Sym": str(sym)})
        side_attributes = {"Side": "1" if side > 0 else "2"}
        if account:
            side_attributes["Acct"] = account
        if client_order_id:
            side_attributes["ClOrdID"] = str(client_order_id)
        report_side = ET.SubElement(report, f"{{{FIXML_NAMESPACE}}}RptSide", side_attributes)
        ET.SubElement(report_side, f"{{{FIXML_NAMESPACE}}}Comm",
                      {"Comm": _number(fee), "CommTyp": "3"})
    ET.indent(root)
    with atomic_path(path) as temporary:
        ET.ElementTree(root).write(temporary, encoding="UTF-8", xml_declaration=True)
    return Path(path)
