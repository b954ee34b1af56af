"""A simulated venue: the Execution and AccountState ports over a paper account.

Market orders fill at once at the symbol's latest closed price moved by the kernel's
fill model (:func:`mmats.nb.fills.fill_price` with a fixed slippage), pay ``fee_bps``,
and are refused like a venue refuses them (insufficient funds beyond ``leverage``, lot
size, minimum notional, a duplicate client order id). Limit orders rest until a later
bar trades through their price. Protective orders (``protect``: a stop-loss and a
take-profit, one cancelling the other) rest until a later closed bar trades through a
level, and fill by the kernel's own stop rule (:func:`mmats.nb.fills.stop_exit` for which
level and at what reference, a gap filling at the open; then ``fill_price`` and
``fee_of``), so an operator-mode replay books the very stop fills the backtest does.
The account lives in a SQLite file, so cron ticks in
separate processes share it, and each order is one transaction: after a crash the
venue either has the order or never saw it, which is what the runner's lookup by
client id relies on.

Operator mode against ``execution: paper`` runs the whole operator path (send, lookup,
reconcile, kill through the broker) with no money at stake.

>>> broker = PaperBroker("paper.sqlite", feed, "5m", cash=10_000)   # doctest: +SKIP
>>> broker.send({"client_order_id": "mm-1", "symbol": "ETH/BTC", "side": "buy",
...              "qty": 1.0, "type": "market"})                      # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from mmats.brokers.base import (
    FINAL_STATES,
    InsufficientFunds,
    OrderBookUnavailable,
    OrderRejected,
)
from mmats.data.calendar import timeframe_ns
from mmats.data.schema import candle_rows
from mmats.errors import ConfigError, DataError
from mmats.nb.fills import STOP_LOSS, fee_of, fill_price, stop_exit

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS orders (seq INTEGER PRIMARY KEY, client_order_id TEXT "
    "UNIQUE NOT NULL, symbol TEXT, side TEXT, type TEXT, qty REAL, price REAL, "
    "filled_qty REAL, avg_price REAL, fee REAL, status TEXT, reason TEXT, ts_ns INTEGER)",
    # the venue's book of resting protective legs; a leg that triggers becomes an order
    "CREATE TABLE IF NOT EXISTS stops (seq INTEGER PRIMARY KEY, client_order_id TEXT "
    "UNIQUE NOT NULL, symbol TEXT, side TEXT, type TEXT, qty REAL, price REAL, "
    "filled_qty REAL, avg_price REAL, fee REAL, status TEXT, reason TEXT, ts_ns INTEGER, "
    "link TEXT)",
    "CREATE TABLE IF NOT EXISTS account (key TEXT PRIMARY KEY, value REAL)",
)


def quote_of(symbol: str, default: str = "USD") -> str:
    """The quote currency of ``BASE/QUOTE``; ``default`` for a symbol without one."""
    return symbol.split("/")[1] if "/" in symbol else default


class PaperBroker:
    """A paper account of ``cash`` in each symbol's quote currency.

    ``feed`` is a :class:`~mmats.brokers.base.DataFeed`; prices are its latest closed bar
    at ``clock()`` (nanoseconds). ``leverage`` caps gross exposure over equity per quote
    currency. ``lot_size``, ``tick_size`` and ``min_notional`` are the instrument rules.
    """

    def __init__(self, path, feed, timeframe: str, *, cash: float = 10_000.0,
                 fee_bps: float = 10.0, slippage_bps: float = 0.0, leverage: float = 1.0,
                 lot_size: float = 0.0, tick_size: float = 0.0, min_notional: float = 0.0,
                 symbols=(), clock: Callable[[], int] = time.time_ns):
        if leverage <= 0:
            raise ConfigError(f"paper broker leverage must be positive, got {leverage}")
        self.path = Path(path)
        self.feed = feed
        self.timeframe = timeframe
        self.step_ns = timeframe_ns(timeframe)
        self.fee_bps = fee_bps
        self.slippage_bps = slippage_bps
        self.leverage = leverage
        self.rules = {"lot_size": float(lot_size), "tick_size": float(tick_size),
                      "min_notional": float(min_notional)}
        self.clock = clock
        self.cash = cash
        os.makedirs(self.path.parent, exist_ok=True)
        self.db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        for statement in _SCHEMA:
            self.db.execute(statement)
        for quote in sorted({quote_of(s) for s in symbols}):
            self.db.execute("INSERT OR IGNORE INTO account VALUES (?, ?)", (f"cash:{quote}",
                                                                          cash))

    def __repr__(self) -> str:
        return f"PaperBroker({str(self.path)!r})"

    def close(self) -> None:
        self.db.close()

    # -- prices ---------------------------------------------------------------------
    def last_price(self, symbol: str) -> float:
        """The close of the latest bar of ``symbol`` closed at the clock."""
        now = self.clock()
        if hasattr(self.feed, "history_arrays"):  # a stored-history feed: no DataFrame
            closes = self.feed.history_arrays(symbol, self.timeframe,
                                              end_ns=now - self.step_ns, bars=1)["close"]
        else:
            closes = self.feed.history(symbol, self.timeframe, end_ns=now - self.step_ns,
                                       bars=1)["close"].to_numpy()
        if len(closes) == 0:
            raise DataError(f"paper broker: no closed {self.timeframe} bar of {symbol} yet")
        return float(closes[-1])

    def order_book(self, symbol: str, depth: int = 10) -> dict:
        """Never: the paper venue keeps no book (raises :class:`OrderBookUnavailable`)."""
        raise OrderBookUnavailable(
            f"the paper venue has no order book for {symbol}: its orders fill at the last "
            "stored close (moved by the fill model), and stored candles carry no book")

    def _bars_since(self, symbol: str, since_ns: int) -> list[tuple[int, tuple]]:
        """``(open time in ns, (open, high, low, close, volume))`` of the bars closed since
        ``since_ns``: the feed's rows where it serves them, else its DataFrame's."""
        if hasattr(self.feed, "closed_rows"):
            return self.feed.closed_rows(symbol, self.timeframe, since_ns=since_ns,
                                         until_ns=self.clock())
        bars = self.feed.closed_bars(symbol, self.timeframe, since_ns=since_ns,
                                     until_ns=self.clock())
        return [(row[0], row[1:]) for row in candle_rows(bars)]

    # -- Execution ------------------------------------------------------------------
    def instrument(self, symbol: str) -> dict:
        return dict(self.rules)

    def send(self, order: dict) -> dict:
        cid, symbol = order["client_order_id"], order["symbol"]
        side, kind = order["side"], order.get("type", "market")
        qty = float(order["qty"])
        limit = order.get("price")
        if side not in ("buy", "sell") or kind not in ("market", "limit"):
            raise OrderRejected(f"paper broker: {symbol} order {cid}: side {side!r} / type "
                                f"{kind!r} not supported", "bad_order")
        lot = self.rules["lot_size"]
        if not qty > 0 or (lot > 0 and abs(round(qty / lot) * lot - qty) > 1e-9 * qty):
            raise OrderRejected(f"paper broker: {symbol} order {cid}: quantity {qty} is not a "
                                f"positive multiple of the lot size {lot}", "lot_size")
        with self._transaction():
            existing = self._row(cid)
            if existing is not None:  # a re-send of the same order: the venue has it
                if (existing["symbol"], existing["side"], existing["qty"]) != (symbol, side,
                                                                               qty):
                    raise OrderRejected(f"paper broker: {symbol}: client order id {cid} was "
                                        "already used by another order",
                                        "duplicate_client_order_id")
                return _report(existing)
            price = self.last_price(symbol) if kind == "market" else float(limit)
            if qty * price < self.rules["min_notional"]:
                raise OrderRejected(f"paper broker: {symbol} order {cid}: notional "
                                    f"{qty * price:.8g} is below the minimum "
                                    f"{self.rules['min_notional']}", "min_notional")
            self.db.execute(
                "INSERT INTO orders (client_order_id, symbol, side, type, qty, price, "
                "filled_qty, avg_price, fee, status, reason, ts_ns) "
                "VALUES (?, ?, ?, ?, ?, ?, 0, NULL, 0, 'open', NULL, ?)",
                (cid, symbol, side, kind, qty, limit, self.clock()))
            if kind == "market":
                sign = 1 if side == "buy" else -1
                fill = fill_price(price, sign, self.slippage_bps * 1e-4, 0.0, math.inf)
                self._fill(cid, symbol, sign, qty, fill)
        return self.lookup(cid, symbol)

    def protect(self, order: dict) -> list[dict]:
        """Rest a position's stop-loss and/or take-profit (one cancels the other); see
        :mod:`mmats.brokers.base` for the request."""
        symbol, side, qty = order["symbol"], order["side"], float(order["qty"])
        legs = [(kind, order.get(kind)) for kind in _PROTECTIVE if order.get(kind)]
        if side not in ("buy", "sell") or not legs or not qty > 0:
            raise OrderRejected(f"paper broker: {symbol}: protective order {order!r} needs a "
                                "side, a positive qty and a stop_loss or take_profit",
                                "bad_order")
        cids = [leg["client_order_id"] for _, leg in legs]
        with self._transaction():
            existing = [self._row(cid) for cid in cids]
            if any(row is not None for row in existing):  # a re-send: the venue has it
                if any(row is None or row["qty"] != qty for row in existing):
                    raise OrderRejected(f"paper broker: {symbol}: client order ids {cids} "
                                        "were already used by other orders",
                                        "duplicate_client_order_id")
                return [_report(row) for row in existing]
            for (kind, leg), cid in zip(legs, cids, strict=True):
                link = cids[1 - cids.index(cid)] if len(cids) == 2 else None
                self.db.execute(
                    "INSERT INTO stops (client_order_id, symbol, side, type, qty, price, "
                    "filled_qty, avg_price, fee, status, reason, ts_ns, link) "
                    "VALUES (?, ?, ?, ?, ?, ?, 0, NULL, 0, 'open', NULL, ?, ?)",
                    (cid, symbol, side, kind, qty, float(leg["price"]), self.clock(), link))
        return [self.lookup(cid, symbol) for cid in cids]

    def cancel(self, client_order_id: str, symbol: str) -> dict | None:
        with self._transaction():
            row = self._row(client_order_id)
            if row is None:
                return None
            table = "stops" if row["type"] in _PROTECTIVE else "orders"
            for cid in (client_order_id, _link(row)):  # a protective leg takes its sibling
                self.db.execute(f"UPDATE {table} SET status = 'canceled', reason = 'canceled by "
                                "client' WHERE client_order_id = ? AND status NOT IN "
                                f"({', '.join('?' * len(FINAL_STATES))})",
                                (cid, *FINAL_STATES))
        return self.lookup(client_order_id, symbol)

    def lookup(self, client_order_id: str, symbol: str) -> dict | None:
        self.match()
        row = self._row(client_order_id)
        return None if row is None else _report(row)

    def open_orders(self, symbol: str | None = None) -> list[dict]:
        self.match()
        rows = [row for table in ("orders", "stops") for row in self.db.execute(
            f"SELECT * FROM {table} WHERE status IN ('open', 'partially_filled') ORDER BY seq")]
        return [_report(r) for r in rows if symbol in (None, r["symbol"])]

    def orders(self) -> list[dict]:
        """Every order the venue accepted, in arrival order (the venue's order log; a
        protective leg joins it when it triggers)."""
        return [_report(r) for r in self.db.execute("SELECT * FROM orders ORDER BY seq")]

    def match(self) -> None:
        """Fill resting limit orders that the latest closed bar traded through, and
        protective orders whose level a closed bar since they were placed reached."""
        self._match_protective()
        rows = self.db.execute("SELECT * FROM orders WHERE status = 'open' AND type = "
                               "'limit'").fetchall()
        for row in rows:
            now = self.clock()
            bars = self.feed.closed_bars(row["symbol"], self.timeframe, since_ns=row["ts_ns"]
                                         - self.step_ns, until_ns=now)
            bars = bars[bars["ts"].dt.as_unit("ns").astype("int64") >= row["ts_ns"]] if len(bars) else bars
            if len(bars) == 0:
                continue
            sign = 1 if row["side"] == "buy" else -1
            crossed = (bars["low"] <= row["price"]) if sign > 0 else (bars["high"]
                                                                      >= row["price"])
            if crossed.any():
                with self._transaction():
                    self._fill(row["client_order_id"], row["symbol"], sign, row["qty"],
                               row["price"], check_funds=False)

    def _match_protective(self) -> None:
        rows = self.db.execute("SELECT * FROM stops WHERE status = 'open' ORDER BY seq"
                               ).fetchall()
        done = set()
        for row in rows:
            if row["client_order_id"] in done:
                continue
            sibling = self._row(row["link"]) if row["link"] else None
            done.update({row["client_order_id"], row["link"]})
            legs = {row["type"]: row}
            if sibling is not None and sibling["status"] == "open":
                legs[sibling["type"]] = sibling
            stop = legs["stop_loss"]["price"] if "stop_loss" in legs else math.nan
            take = legs["take_profit"]["price"] if "take_profit" in legs else math.nan
            held = 1.0 if row["side"] == "sell" else -1.0  # the position the legs protect
            placed = row["ts_ns"]
            for open_ns, (bar_open, bar_high, bar_low, _, _) in self._bars_since(
                    row["symbol"], placed - self.step_ns):
                if open_ns < placed:
                    continue
                # a bar that opened as the legs were placed opens at the entry itself
                reference, reason = stop_exit(held, stop, take, bar_open, bar_high, bar_low,
                                              open_ns == placed)
                if reason < 0:
                    continue
                leg = legs["stop_loss" if reason == STOP_LOSS else "take_profit"]
                price = fill_price(reference, -held, self.slippage_bps * 1e-4, bar_low,
                                   bar_high)
                with self._transaction():
                    self.db.execute(
                        "INSERT INTO orders (client_order_id, symbol, side, type, qty, price, "
                        "filled_qty, avg_price, fee, status, reason, ts_ns) VALUES (?, ?, ?, "
                        "?, ?, ?, 0, NULL, 0, 'open', NULL, ?)",
                        (leg["client_order_id"], leg["symbol"], leg["side"], leg["type"],
                         leg["qty"], leg["price"], open_ns))
                    self._fill(leg["client_order_id"], leg["symbol"], int(-held), leg["qty"],
                               float(price), check_funds=False)
                    self.db.execute("UPDATE stops SET status = 'triggered' WHERE "
                                    "client_order_id = ?", (leg["client_order_id"],))
                    self.db.execute("UPDATE stops SET status = 'canceled', reason = "
                                    "'one-cancels-the-other' WHERE client_order_id = ? AND "
                                    "status = 'open'", (leg["link"],))
                break

    # -- AccountState ---------------------------------------------------------------
    def balances(self) -> dict[str, float]:
        rows = self.db.execute("SELECT key, value FROM account WHERE key LIKE 'cash:%'")
        return {row["key"][5:]: row["value"] for row in rows}

    def positions(self) -> dict[str, float]:
        rows = self.db.execute("SELECT key, value FROM account WHERE key LIKE 'position:%'")
        return {row["key"][9:]: row["value"] for row in rows if row["value"] != 0.0}

    # -- internals ------------------------------------------------------------------
    def _fill(self, cid, symbol, sign, qty, price, *, check_funds=True):
        quote = quote_of(symbol)
        cash = self._get(f"cash:{quote}", self.cash)
        position = self._get(f"position:{symbol}", 0.0)
        fee = float(fee_of(qty, price, self.fee_bps))  # the kernel's fee rule
        new_cash = cash - sign * qty * price - fee
        new_position = position + sign * qty
        if abs(new_position) <= 1e-12 * max(abs(position), qty):
            new_position = 0.0
        if check_funds and abs(new_position) > abs(position):
            equity = new_cash + new_position * price
            for other, held in self.positions().items():
                if other != symbol and quote_of(other) == quote:
                    equity += held * self.last_price(other)
            gross = abs(new_position) * price
            if equity <= 0 or gross > self.leverage * equity * (1 + 1e-9):
                raise InsufficientFunds(
                    f"paper broker: {symbol} order {cid}: {qty} at {price:.8g} needs more "
                    f"{quote} than the account holds (leverage {self.leverage})")
        self.db.execute("INSERT OR REPLACE INTO account VALUES (?, ?)", (f"cash:{quote}",
                                                                      new_cash))
        self.db.execute("INSERT OR REPLACE INTO account VALUES (?, ?)",
                        (f"position:{symbol}", new_position))
        self.db.execute("UPDATE orders SET filled_qty = ?, avg_price = ?, fee = ?, status = "
                        "'filled' WHERE client_order_id = ?", (qty, price, fee, cid))

    def _get(self, key, default):
        row = self.db.execute("SELECT value FROM account WHERE key = ?", (key,)).fetchone()
        return default if row is None else row["value"]

    def _row(self, cid):
        """The order with this client id: in the order log, else a resting leg."""
        for table in ("orders", "stops"):
            row = self.db.execute(f"SELECT * FROM {table} WHERE client_order_id = ?",
                                  (cid,)).fetchone()
            if row is not None:
                return row
        return None

    def _transaction(self):
        return _Transaction(self.db)


class _Transaction:
    def __init__(self, db):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind, *_):
        self.db.execute("ROLLBACK" if kind else "COMMIT")


_PROTECTIVE = ("stop_loss", "take_profit")


def _link(row) -> str | None:
    return row["link"] if "link" in row.keys() else None


def _report(row) -> dict:
    report = {"client_order_id": row["client_order_id"], "venue_order_id": str(row["seq"]),
              "symbol": row["symbol"], "side": row["side"], "qty": row["qty"],
              "filled_qty": row["filled_qty"], "avg_price": row["avg_price"],
              "fee": row["fee"], "status": row["status"], "reason": row["reason"]}
    if row["type"] in _PROTECTIVE:
        report.update(type=row["type"], stop_price=row["price"])
    return report
