"""A local HTTP server speaking enough of the OANDA v20 REST dialect for the real
oandapyV20 client, with an in-memory trading engine and fault injection.

Shapes follow the example responses shipped in ``oandapyV20/endpoints/responses``.
Served (``{a}`` is the account id, ``{o}`` an order id or ``@clientid``):

- ``GET /v3/instruments/{instrument}/candles`` (``count``/``from``/``to``/``includeFirst``,
  ``price`` M/B/A, ``complete`` flags; candles loaded with :meth:`OandaServer.load_candles`,
  cut at the clock of :meth:`OandaServer.set_now` when one is set)
- ``GET /v3/accounts/{a}/summary|instruments|pricing|pendingOrders|openTrades|openPositions``
- ``POST /v3/accounts/{a}/orders`` (MARKET FOK/IOC, LIMIT GTC/GFD, and the dependent
  STOP_LOSS / TAKE_PROFIT orders of an open trade: ``tradeID`` or ``clientTradeID``, one of
  each per trade), ``GET .../orders/{o}``, ``PUT .../orders/{o}/cancel``,
  ``GET .../trades/{t}``, ``GET .../transactions/{id}``
- not OANDA: ``POST /_control?now_ns=..&instrument=..&mid=..`` (no token), the clock of
  :meth:`OandaServer.set_now` and the price of :meth:`OandaServer.set_price` for a runner
  in another process

The engine nets positions per instrument (FIFO trades, no hedging), fills market orders at
the current mid plus/minus a half spread, rests limit orders until :meth:`set_price` makes
them marketable, and cancels a fill that would use more margin than the NAV
(``orderCancelTransaction`` reason ``INSUFFICIENT_MARGIN``, as OANDA does, with a 201).
A trade's dependent orders are listed with the pending orders (with ``tradeID``, without
``instrument`` or ``units``) and on the trade (``stopLossOrder``, ``takeProfitOrder``); one
triggers when the price that would close the trade (the bid of a long, the ask of a short)
reaches its level, at creation or on :meth:`set_price`, and closes its whole trade at that
price (an ``ORDER_FILL`` with reason ``STOP_LOSS_ORDER`` / ``TAKE_PROFIT_ORDER`` and
``tradesClosed``). A trade that closes, by any fill, takes its dependent orders with it
(``ORDER_CANCEL`` reason ``LINKED_TRADE_CLOSED``).

Faults (:meth:`fail_next`) apply to the next matching requests: ``"429"`` (with a
``Retry-After`` header when ``retry_after`` is given), ``"500"``,
``"503"``, ``"timeout"`` (answer after ``delay_s``, past the client's timeout; an order is
processed first), ``"drop"`` (close the connection without acting), ``"lost_response"``
(act, then close without answering), ``"wrong_status"`` (answer 200 ``{}`` without acting)
and ``"accepted_200"`` (act, then answer 200 instead of 201).

>>> with OandaServer() as server:              # doctest: +SKIP
...     broker = OandaBroker(server.account_id, server.token, base_url=server.url)
"""

from __future__ import annotations

import json
import re
import threading
from decimal import Decimal, InvalidOperation
from http.server import ThreadingHTTPServer
from urllib.parse import unquote

import numpy as np
import pandas as pd

from .oanda_http import OandaHandler, now_text, parse_time

FAULTS = ("429", "500", "503", "timeout", "drop", "lost_response", "wrong_status",
          "accepted_200")
DEPENDENT = {"STOP_LOSS": "stopLossOrder", "TAKE_PROFIT": "takeProfitOrder"}
GRANULARITY_NS = {"M1": 60, "M5": 300, "M15": 900, "M30": 1800, "H1": 3600, "H4": 14400,
                  "D": 86400}
INSTRUMENTS = {
    # name: displayPrecision, tradeUnitsPrecision, minimumTradeSize, type, default mid
    "EUR_USD": (5, 0, "1", "CURRENCY", 1.10000),
    "USD_JPY": (3, 0, "1", "CURRENCY", 110.000),
    "DE30_EUR": (1, 1, "0.1", "CFD", 12000.0),
}


class _BadRequest(Exception):
    def __init__(self, status: int, payload: dict):
        super().__init__(payload.get("errorMessage"))
        self.status = status
        self.payload = payload


class OandaServer:
    """The server and its engine. Start with :meth:`start` (or ``with``); tests read
    :attr:`orders` (every order the venue accepted, in order), :attr:`rejections` and
    :attr:`requests` (method, path, params, body of every request)."""

    def __init__(self, *, token: str = "test-token-0123456789",
                 account_id: str = "101-004-0000001-001", currency: str = "USD",
                 balance: float = 100_000.0, leverage: float = 20.0,
                 half_spread: float = 0.00005, commission_rate: float = 0.0,
                 delay_s: float = 1.0):
        self.token = token
        self.account_id = account_id
        self.currency = currency
        self.delay_s = delay_s
        self._defaults = {"balance": balance, "leverage": leverage, "half_spread": half_spread,
                          "commission_rate": commission_rate}
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._httpd = None
        self._thread = None
        self.candles: dict[tuple[str, str], pd.DataFrame] = {}
        self.now_ns: int | None = None  # None: every loaded candle is served
        self.reset()

    # -- life cycle ---------------------------------------------------------------------

    def start(self) -> OandaServer:
        self._stopping.clear()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), OandaHandler)
        self._httpd.daemon_threads = True
        self._httpd.owner = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join()
            self._httpd = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def reset(self, **overrides) -> None:
        """Forget orders, trades, transactions, faults and logs; restore balance, leverage,
        prices, spread and commission (``overrides`` replace the constructor's values).
        Loaded candles are kept."""
        settings = {**self._defaults, **overrides}
        with self._lock:
            self.balance = float(settings["balance"])
            self.leverage = float(settings["leverage"])
            self.commission_rate = float(settings["commission_rate"])
            # half_spread is given for 5-decimal pairs; scale it to each instrument's pip
            self.half_spread = {name: float(settings["half_spread"]) * 10 ** max(0, 5 - spec[0])
                                for name, spec in INSTRUMENTS.items()}
            self.mid = {name: spec[4] for name, spec in INSTRUMENTS.items()}
            self.orders: list[dict] = []
            self.rejections: list[dict] = []
            self.requests: list[dict] = []
            self._orders: dict[str, dict] = {}
            self._client_ids: dict[str, str] = {}
            self._transactions: dict[str, dict] = {}
            self._trades: list[dict] = []
            self._faults: list[dict] = []
            self._last_id = 1000

    # -- test controls ------------------------------------------------------------------

    def load_candles(self, instrument: str, granularity: str, frame: pd.DataFrame, *,
                     incomplete_last: bool = True) -> None:
        """Serve a candle-schema frame as mid candles; the last one is still forming
        (``complete: false``) unless ``incomplete_last`` is False."""
        if granularity not in GRANULARITY_NS:
            raise ValueError(f"granularity {granularity!r} is not one of {list(GRANULARITY_NS)}")
        data = frame[["ts", "open", "high", "low", "close", "volume"]].reset_index(drop=True)
        data = data.assign(ts_ns=pd.to_datetime(data["ts"], utc=True).dt.as_unit("ns").astype("int64"),
                           complete=True)
        if incomplete_last and len(data):
            data.loc[len(data) - 1, "complete"] = False
        with self._lock:
            self.candles[(instrument, granularity)] = data

    def set_now(self, now_ns: int | None) -> None:
        """Pin the clock for candles: only candles opened by ``now_ns`` are served, and the
        one still forming is incomplete and shows its open only (None: serve them all)."""
        with self._lock:
            self.now_ns = None if now_ns is None else int(now_ns)

    def fills(self) -> list[dict]:
        """Every ``ORDER_FILL`` transaction, oldest first (copies)."""
        with self._lock:
            found = [tx for tx in self._transactions.values() if tx["type"] == "ORDER_FILL"]
            return json.loads(json.dumps(sorted(found, key=lambda tx: int(tx["id"]))))

    def set_price(self, instrument: str, mid: float, half_spread: float | None = None) -> None:
        """Move the market; resting limit orders that become marketable fill."""
        with self._lock:
            self.mid[instrument] = float(mid)
            if half_spread is not None:
                self.half_spread[instrument] = float(half_spread)
            for order in list(self._orders.values()):
                if order["state"] == "PENDING" and order.get("instrument") == instrument:
                    fill_price = self._marketable(order)
                    if fill_price is not None:
                        self._execute(order, fill_price, str(self._next_id()))
            for order in list(self._orders.values()):
                trade = self._trade(order.get("tradeID"))
                if order["state"] == "PENDING" and trade is not None \
                        and trade["instrument"] == instrument:
                    self._trigger(order, trade)

    def fail_next(self, kind: str, count: int = 1, *, method: str | None = None,
                  path: str | None = None, retry_after: float | str | None = None) -> None:
        """Answer the next ``count`` requests matching ``method`` and a ``path`` substring
        with the fault ``kind`` (one of :data:`FAULTS`); a 429 carries ``Retry-After:
        retry_after`` when given (seconds or an HTTP date)."""
        if kind not in FAULTS:
            raise ValueError(f"fault {kind!r} is not one of {FAULTS}")
        with self._lock:
            self._faults.append({"kind": kind, "left": int(count), "method": method,
                                 "path": path, "retry_after": retry_after})

    def faults_left(self) -> int:
        with self._lock:
            return sum(f["left"] for f in self._faults)

    def count(self, method: str, pattern: str) -> int:
        """Requests with this method whose path matches ``pattern`` (``re.search``)."""
        with self._lock:
            return sum(1 for r in self.requests
                       if r["method"] == method and re.search(pattern, r["path"]))

    def order(self, specifier: str) -> dict | None:
        """An order by id or ``@clientid`` (a copy)."""
        with self._lock:
            found = self._find(specifier)
            return None if found is None else json.loads(json.dumps(found))

    # -- engine -------------------------------------------------------------------------

    def _next_id(self) -> int:
        self._last_id += 1
        return self._last_id

    def _tx(self, kind: str, **fields) -> dict:
        tx = {"id": str(fields.pop("id", None) or self._next_id()), "time": now_text(),
              "type": kind, "accountID": self.account_id, "userID": 1435156, **fields}
        tx.setdefault("batchID", tx["id"])
        self._transactions[tx["id"]] = tx
        return tx

    def _bid_ask(self, instrument: str) -> tuple[float, float]:
        mid, half = self.mid[instrument], self.half_spread[instrument]
        return mid - half, mid + half

    def _home_factor(self, instrument: str) -> float:
        """Account currency per unit of the instrument's quote currency."""
        base, quote = instrument.split("_")
        if quote == self.currency:
            return 1.0
        if base == self.currency:
            return 1.0 / self.mid[instrument]
        if f"{quote}_{self.currency}" in self.mid:
            return self.mid[f"{quote}_{self.currency}"]
        if f"{self.currency}_{quote}" in self.mid:
            return 1.0 / self.mid[f"{self.currency}_{quote}"]
        return 1.0

    def _net_units(self) -> dict[str, float]:
        net: dict[str, float] = {}
        for trade in self._trades:
            if trade["state"] == "OPEN":
                net[trade["instrument"]] = net.get(trade["instrument"], 0.0) + float(
                    trade["currentUnits"])
        return net

    def _unrealized(self, trade: dict) -> float:
        units = float(trade["currentUnits"])
        bid, ask = self._bid_ask(trade["instrument"])
        exit_price = bid if units > 0 else ask
        return (exit_price - float(trade["price"])) * units * self._home_factor(
            trade["instrument"])

    def _margin_used(self, net: dict[str, float]) -> float:
        return sum(abs(units) * self.mid[name] * self._home_factor(name) / self.leverage
                   for name, units in net.items())

    def _nav(self) -> float:
        return self.balance + sum(self._unrealized(t) for t in self._trades
                                  if t["state"] == "OPEN")

    def _marketable(self, order: dict) -> float | None:
        bid, ask = self._bid_ask(order["instrument"])
        units = float(order["units"])
        if order["type"] == "MARKET":
            return ask if units > 0 else bid
        limit = float(order["price"])
        if units > 0 and ask <= limit:
            return ask
        if units < 0 and bid >= limit:
            return bid
        return None

    def _cancel(self, order: dict, reason: str, batch: str) -> dict:
        tx = self._tx("ORDER_CANCEL", orderID=order["id"], reason=reason, batchID=batch,
                      clientOrderID=(order.get("clientExtensions") or {}).get("id"))
        order.update(state="CANCELLED", cancellingTransactionID=tx["id"],
                     cancelledTime=tx["time"])
        self._detach(order)
        return tx

    # -- dependent orders (stop loss, take profit) ----------------------------------------

    def _trade(self, specifier) -> dict | None:
        """A trade by id or ``@clientTradeID``."""
        if specifier is None:
            return None
        specifier = unquote(str(specifier))
        for trade in self._trades:
            if trade["id"] == specifier or (specifier.startswith("@") and (
                    trade.get("clientExtensions") or {}).get("id") == specifier[1:]):
                return trade
        return None

    def _detach(self, order: dict) -> None:
        trade = self._trade(order.get("tradeID"))
        key = DEPENDENT.get(order.get("type"))
        if trade is not None and key and (trade.get(key) or {}).get("id") == order["id"]:
            del trade[key]

    def _close_dependents(self, trade: dict, batch: str) -> None:
        """OANDA cancels a closed trade's dependent orders itself."""
        for order in list(self._orders.values()):
            if order["state"] == "PENDING" and order.get("tradeID") == trade["id"]:
                self._cancel(order, "LINKED_TRADE_CLOSED", batch)

    def _trigger(self, order: dict, trade: dict) -> dict | None:
        """Fill a dependent order whose level the closing price has reached: it closes its
        whole trade at that price. Returns the fill, or None (not triggered)."""
        if trade["state"] != "OPEN":
            return None
        units = float(trade["currentUnits"])
        bid, ask = self._bid_ask(trade["instrument"])
        price, level = (bid if units > 0 else ask), float(order["price"])
        below = price <= level if units > 0 else price >= level  # the trade is losing
        if (order["type"] == "STOP_LOSS") != below:
            return None
        instrument = trade["instrument"]
        factor = self._home_factor(instrument)
        fill_id = str(self._next_id())
        realized = (price - float(trade["price"])) * units * factor
        commission = self.commission_rate * abs(units) * price * factor
        self.balance += realized - commission
        trade.update(currentUnits="0", state="CLOSED", closeTime=now_text(),
                     realizedPL=f"{float(trade['realizedPL']) + realized:.4f}")
        places = INSTRUMENTS[instrument][0]
        fill = self._tx("ORDER_FILL", id=fill_id, orderID=order["id"], instrument=instrument,
                        units=_units_text(-units), price=f"{price:.{places}f}",
                        fullVWAP=f"{price:.{places}f}", reason=f"{order['type']}_ORDER",
                        pl=f"{realized:.4f}", financing="0.0000",
                        commission=f"{commission:.4f}", guaranteedExecutionFee="0.0000",
                        accountBalance=f"{self.balance:.4f}",
                        clientOrderID=(order.get("clientExtensions") or {}).get("id"),
                        tradesClosed=[{"tradeID": trade["id"], "units": _units_text(-units),
                                       "realizedPL": f"{realized:.4f}",
                                       "financing": "0.0000"}])
        order.update(state="FILLED", fillingTransactionID=fill_id, filledTime=fill["time"],
                     tradeClosedIDs=[trade["id"]])
        self._detach(order)
        self._close_dependents(trade, fill_id)
        return fill

    def _create_dependent(self, spec: dict, kind: str) -> tuple[int, dict]:
        trade = self._trade(spec.get("tradeID") or (
            f"@{spec['clientTradeID']}" if spec.get("clientTradeID") else None))
        if trade is None or trade["state"] != "OPEN":
            self._reject(404, spec, "TRADE_DOESNT_EXIST", "The Trade specified does not exist")
        display = INSTRUMENTS[trade["instrument"]][0]
        try:
            price = Decimal(str(spec.get("price")))
        except InvalidOperation:
            self._reject(400, spec, "PRICE_INVALID", "The price specified is invalid")
        if -price.as_tuple().exponent > display or price <= 0:
            self._reject(400, spec, "PRICE_PRECISION_EXCEEDED",
                         "The price specified contains more precision than is allowed")
        time_in_force = spec.get("timeInForce", "GTC")
        if time_in_force not in ("GTC", "GFD", "GTD"):
            self._reject(400, spec, "TIME_IN_FORCE_INVALID",
                         f"The time in force {time_in_force} is not valid for a {kind} order")
        if trade.get(DEPENDENT[kind]):
            self._reject(400, spec, f"{kind}_ORDER_ALREADY_EXISTS",
                         f"The Trade already has a {kind} order")
        client_id = (spec.get("clientExtensions") or {}).get("id")
        if client_id is not None and client_id in self._client_ids:
            self._reject(400, spec, "CLIENT_ORDER_ID_ALREADY_EXISTS",
                         "The client Order ID specified is already assigned to another Order")
        fields = {"tradeID": trade["id"], "price": spec["price"], "timeInForce": time_in_force,
                  "triggerCondition": spec.get("triggerCondition", "DEFAULT")}
        if spec.get("clientExtensions"):
            fields["clientExtensions"] = dict(spec["clientExtensions"])
        create = self._tx(f"{kind}_ORDER", reason="CLIENT_ORDER", **fields)
        order = {"id": create["id"], "createTime": create["time"], "type": kind,
                 "state": "PENDING", **fields}
        self._orders[order["id"]] = order
        trade[DEPENDENT[kind]] = order
        if client_id is not None:
            self._client_ids[client_id] = order["id"]
        self.orders.append({"id": order["id"], "client_id": client_id, "type": kind,
                            "instrument": trade["instrument"], "units": None, "body": spec})
        answer = {"orderCreateTransaction": create}
        fill = self._trigger(order, trade)  # its level is already reached: it fills at once
        if fill:
            answer["orderFillTransaction"] = fill
        related = [t["id"] for t in (create, fill) if t]
        answer.update(relatedTransactionIDs=related, lastTransactionID=str(self._last_id))
        return 201, answer

    def _execute(self, order: dict, price: float, batch: str) -> tuple[dict | None, dict | None]:
        """Fill ``order`` at ``price`` unless the margin check fails; returns (fill, cancel)."""
        instrument, units = order["instrument"], float(order["units"])
        net = self._net_units()
        before = net.get(instrument, 0.0)
        after_net = {**net, instrument: before + units}
        if (abs(before + units) > abs(before)
                and self._margin_used(after_net) > self._nav()):
            return None, self._cancel(order, "INSUFFICIENT_MARGIN", batch)
        factor = self._home_factor(instrument)
        fill_id = str(self._next_id())
        remaining, pl, closed = units, 0.0, []
        for trade in self._trades:
            current = float(trade["currentUnits"])
            if trade["state"] != "OPEN" or trade["instrument"] != instrument or (
                    current * remaining >= 0):
                continue
            take = min(abs(current), abs(remaining))
            signed = -take if current > 0 else take  # units of this fill closing the trade
            realized = (price - float(trade["price"])) * -signed * factor
            pl += realized
            left = current + signed
            trade["currentUnits"] = _units_text(left)
            trade["realizedPL"] = f"{float(trade['realizedPL']) + realized:.4f}"
            if left == 0:
                trade.update(state="CLOSED", closeTime=now_text())
                self._close_dependents(trade, batch)
            closed.append({"tradeID": trade["id"], "units": _units_text(signed),
                           "realizedPL": f"{realized:.4f}", "financing": "0.0000"})
            remaining -= signed
            if remaining == 0:
                break
        commission = self.commission_rate * abs(units) * price * factor
        self.balance += pl - commission
        fields = {"orderID": order["id"], "instrument": instrument, "units": order["units"],
                  "price": f"{price:.{INSTRUMENTS[instrument][0]}f}",
                  "fullVWAP": f"{price:.{INSTRUMENTS[instrument][0]}f}",
                  "reason": f"{order['type']}_ORDER", "pl": f"{pl:.4f}", "financing": "0.0000",
                  "commission": f"{commission:.4f}", "guaranteedExecutionFee": "0.0000",
                  "accountBalance": f"{self.balance:.4f}", "batchID": batch,
                  "clientOrderID": (order.get("clientExtensions") or {}).get("id")}
        if closed:
            fields["tradesClosed"] = closed
        if remaining != 0:
            trade = {"id": fill_id, "instrument": instrument, "price": fields["price"],
                     "openTime": now_text(), "initialUnits": _units_text(remaining),
                     "currentUnits": _units_text(remaining), "state": "OPEN",
                     "realizedPL": "0.0000", "financing": "0.0000",
                     "clientExtensions": order.get("tradeClientExtensions") or {}}
            self._trades.append(trade)
            fields["tradeOpened"] = {"tradeID": fill_id, "units": trade["currentUnits"],
                                     "price": trade["price"],
                                     "clientExtensions": trade["clientExtensions"]}
            order["tradeOpenedID"] = fill_id
        fill = self._tx("ORDER_FILL", id=fill_id, **fields)
        order.update(state="FILLED", fillingTransactionID=fill_id, filledTime=fill["time"])
        return fill, None

    def _find(self, specifier: str) -> dict | None:
        specifier = unquote(specifier)
        if specifier.startswith("@"):
            specifier = self._client_ids.get(specifier[1:], "")
        return self._orders.get(specifier)

    def _reject(self, status: int, spec: dict, reason: str, message: str):
        kind = str(spec.get("type", "MARKET")).upper()
        tx = self._tx(f"{kind}_ORDER_REJECT", rejectReason=reason,
                      **{k: v for k, v in spec.items() if k in (
                          "instrument", "units", "price", "timeInForce", "tradeID",
                          "clientExtensions")})
        self.rejections.append({"reason": reason, "order": spec})
        raise _BadRequest(status, {"orderRejectTransaction": tx, "relatedTransactionIDs": [
            tx["id"]], "lastTransactionID": tx["id"], "errorCode": reason,
            "errorMessage": message})

    def _create(self, body: dict) -> tuple[int, dict]:
        spec = body.get("order") if isinstance(body, dict) else None
        if not isinstance(spec, dict):
            raise _BadRequest(400, {"errorMessage": "Invalid value specified for 'order'"})
        kind = str(spec.get("type", "MARKET")).upper()
        if kind in DEPENDENT:
            return self._create_dependent(spec, kind)
        if kind not in ("MARKET", "LIMIT"):
            self._reject(400, spec, "TYPE_INVALID", f"Order type {kind} is not supported here")
        instrument = spec.get("instrument")
        if instrument not in INSTRUMENTS:
            self._reject(400, spec, "INSTRUMENT_UNKNOWN", "The instrument specified is unknown")
        display, unit_places, minimum = INSTRUMENTS[instrument][:3]
        try:
            units = Decimal(str(spec.get("units")))
        except InvalidOperation:
            self._reject(400, spec, "UNITS_INVALID", "The units specified are invalid")
        if units == 0:
            self._reject(400, spec, "UNITS_INVALID", "The units specified are zero")
        if -units.as_tuple().exponent > unit_places:
            self._reject(400, spec, "UNITS_PRECISION_EXCEEDED",
                         "The Order units specified contain more precision than is allowed")
        if abs(units) < Decimal(minimum):
            self._reject(400, spec, "UNITS_MINIMUM_NOT_MET",
                         "The Order units specified do not meet the minimum trade size")
        time_in_force = spec.get("timeInForce", "FOK" if kind == "MARKET" else "GTC")
        if time_in_force not in (("FOK", "IOC") if kind == "MARKET" else ("GTC", "GFD")):
            self._reject(400, spec, "TIME_IN_FORCE_INVALID",
                         f"The time in force {time_in_force} is not valid for a {kind} order")
        if kind == "LIMIT":
            try:
                price = Decimal(str(spec.get("price")))
            except InvalidOperation:
                self._reject(400, spec, "PRICE_INVALID", "The price specified is invalid")
            if -price.as_tuple().exponent > display or price <= 0:
                self._reject(400, spec, "PRICE_PRECISION_EXCEEDED",
                             "The price specified contains more precision than is allowed")
        client_id = (spec.get("clientExtensions") or {}).get("id")
        if client_id is not None and client_id in self._client_ids:
            self._reject(400, spec, "CLIENT_ORDER_ID_ALREADY_EXISTS",
                         "The client Order ID specified is already assigned to another Order")

        create = self._tx(f"{kind}_ORDER", reason="CLIENT_ORDER", **{
            k: v for k, v in spec.items() if k in (
                "instrument", "units", "price", "timeInForce", "positionFill",
                "clientExtensions", "tradeClientExtensions")})
        order = {"id": create["id"], "createTime": create["time"], "type": kind,
                 "instrument": instrument, "units": spec["units"], "timeInForce": time_in_force,
                 "positionFill": spec.get("positionFill", "DEFAULT"), "state": "PENDING"}
        if kind == "LIMIT":
            order.update(price=spec["price"], triggerCondition="DEFAULT",
                         partialFill="DEFAULT_FILL")
        for key in ("clientExtensions", "tradeClientExtensions"):
            if spec.get(key):
                order[key] = dict(spec[key])
        self._orders[order["id"]] = order
        if client_id is not None:
            self._client_ids[client_id] = order["id"]
        self.orders.append({"id": order["id"], "client_id": client_id, "type": kind,
                            "instrument": instrument, "units": spec["units"], "body": spec})

        answer = {"orderCreateTransaction": create}
        fill = cancel = None
        price = self._marketable(order)
        if price is not None:
            fill, cancel = self._execute(order, price, create["id"])
        if fill:
            answer["orderFillTransaction"] = fill
        if cancel:
            answer["orderCancelTransaction"] = cancel
        related = [t["id"] for t in (create, fill, cancel) if t]
        answer.update(relatedTransactionIDs=related, lastTransactionID=str(self._last_id))
        return 201, answer

    # -- routes -------------------------------------------------------------------------

    def route(self, method: str, path: str, params: dict, body) -> tuple[int, dict]:
        with self._lock:
            try:
                return self._route(method, path, params, body)
            except _BadRequest as err:
                return err.status, err.payload

    def _route(self, method, path, params, body):
        if method == "POST" and path == "/_control":
            return 200, self._control(params)
        match = re.fullmatch(r"/v3/instruments/([^/]+)/candles", path)
        if match and method == "GET":
            return 200, self._candles(unquote(match.group(1)), params)
        match = re.fullmatch(r"/v3/accounts/([^/]+)(/.*)?", path)
        if not match:
            raise _BadRequest(404, {"errorMessage": f"The path {path} does not exist"})
        if unquote(match.group(1)) != self.account_id:
            raise _BadRequest(403, {"errorMessage": "The provided request was forbidden."})
        rest = match.group(2) or ""
        last = str(self._last_id)
        if method == "POST" and rest == "/orders":
            return self._create(body)
        if method == "GET":
            if rest == "/summary":
                return 200, {"account": self._summary(), "lastTransactionID": last}
            if rest == "/instruments":
                return 200, {"instruments": self._instruments(params), "lastTransactionID": last}
            if rest == "/pricing":
                return 200, self._pricing(params)
            if rest == "/pendingOrders":
                return 200, {"orders": [o for o in self._orders.values()
                                        if o["state"] == "PENDING"], "lastTransactionID": last}
            if rest == "/openTrades":
                trades = [{**t, "unrealizedPL": f"{self._unrealized(t):.4f}"}
                          for t in reversed(self._trades) if t["state"] == "OPEN"]
                return 200, {"trades": trades, "lastTransactionID": last}
            if rest == "/openPositions":
                return 200, {"positions": self._positions(), "lastTransactionID": last}
            found = re.fullmatch(r"/trades/([^/]+)", rest)
            if found:
                trade = self._trade(found.group(1))
                if trade is None:
                    raise _BadRequest(404, {"errorCode": "TRADE_DOESNT_EXIST",
                                            "errorMessage": "The Trade specified does not "
                                                            "exist"})
                return 200, {"trade": trade, "lastTransactionID": last}
            found = re.fullmatch(r"/transactions/(\d+)", rest)
            if found:
                tx = self._transactions.get(found.group(1))
                if tx is None:
                    raise _BadRequest(404, {"errorCode": "TRANSACTION_DOESNT_EXIST",
                                            "errorMessage": "The transaction does not exist"})
                return 200, {"transaction": tx, "lastTransactionID": last}
            found = re.fullmatch(r"/orders/([^/]+)", rest)
            if found:
                order = self._find(found.group(1))
                if order is None:
                    raise _BadRequest(404, {"errorCode": "ORDER_DOESNT_EXIST",
                                            "errorMessage": "The order ID specified does not "
                                                            "exist"})
                return 200, {"order": order, "lastTransactionID": last}
        found = re.fullmatch(r"/orders/([^/]+)/cancel", rest)
        if method == "PUT" and found:
            order = self._find(found.group(1))
            if order is None or order["state"] != "PENDING":
                tx = self._tx("ORDER_CANCEL_REJECT", orderID=(order or {}).get("id"),
                              rejectReason="ORDER_DOESNT_EXIST")
                raise _BadRequest(404, {"orderCancelRejectTransaction": tx,
                                        "relatedTransactionIDs": [tx["id"]],
                                        "lastTransactionID": tx["id"],
                                        "errorCode": "ORDER_DOESNT_EXIST",
                                        "errorMessage": "The Order specified does not exist"})
            tx = self._cancel(order, "CLIENT_REQUEST", str(self._last_id + 1))
            return 200, {"orderCancelTransaction": tx, "relatedTransactionIDs": [tx["id"]],
                         "lastTransactionID": tx["id"]}
        raise _BadRequest(404 if method == "GET" else 405,
                          {"errorMessage": f"{method} {path} is not served here"})

    def _control(self, params: dict) -> dict:
        """Not OANDA: the tests' clock and price, for a runner in another process."""
        if "now_ns" in params:
            self.set_now(int(params["now_ns"]))
        if "instrument" in params:
            self.set_price(params["instrument"], float(params["mid"]))
        return {"now_ns": self.now_ns}

    def _summary(self) -> dict:
        net = self._net_units()
        used = self._margin_used(net)
        nav = self._nav()
        return {"id": self.account_id, "alias": "lookalike", "currency": self.currency,
                "balance": f"{self.balance:.4f}", "NAV": f"{nav:.4f}",
                "unrealizedPL": f"{nav - self.balance:.4f}", "marginUsed": f"{used:.4f}",
                "marginAvailable": f"{max(nav - used, 0.0):.4f}",
                "marginRate": f"{1 / self.leverage:.4f}", "hedgingEnabled": False,
                "openTradeCount": sum(t["state"] == "OPEN" for t in self._trades),
                "openPositionCount": sum(1 for v in net.values() if v),
                "pendingOrderCount": sum(o["state"] == "PENDING" for o in self._orders.values()),
                "lastTransactionID": str(self._last_id)}

    def _instruments(self, params: dict) -> list[dict]:
        wanted = params.get("instruments")
        names = wanted.split(",") if wanted else list(INSTRUMENTS)
        return [{"name": name, "type": INSTRUMENTS[name][3], "displayName": name.replace("_", "/"),
                 "displayPrecision": INSTRUMENTS[name][0],
                 "tradeUnitsPrecision": INSTRUMENTS[name][1],
                 "minimumTradeSize": INSTRUMENTS[name][2], "pipLocation": -4,
                 "marginRate": f"{1 / self.leverage:.4f}", "maximumOrderUnits": "100000000",
                 "maximumPositionSize": "0"} for name in names if name in INSTRUMENTS]

    def _pricing(self, params: dict) -> dict:
        names = [n for n in (params.get("instruments") or "").split(",") if n]
        if not names or any(n not in INSTRUMENTS for n in names):
            raise _BadRequest(400, {"errorMessage": "Invalid value specified for 'instruments'"})
        now = now_text()
        prices = []
        for name in names:
            bid, ask = self._bid_ask(name)
            places = INSTRUMENTS[name][0]
            prices.append({"type": "PRICE", "instrument": name, "time": now,
                           "status": "tradeable", "tradeable": True,
                           "bids": [{"price": f"{bid:.{places}f}", "liquidity": 10_000_000}],
                           "asks": [{"price": f"{ask:.{places}f}", "liquidity": 10_000_000}],
                           "closeoutBid": f"{bid:.{places}f}", "closeoutAsk": f"{ask:.{places}f}"})
        return {"prices": prices, "time": now}

    def _positions(self) -> list[dict]:
        positions = []
        for name, units in self._net_units().items():
            if not units:
                continue
            open_trades = [t for t in self._trades if t["state"] == "OPEN"
                           and t["instrument"] == name]
            average = np.average([float(t["price"]) for t in open_trades],
                                 weights=[abs(float(t["currentUnits"])) for t in open_trades])
            side = {"units": _units_text(units),
                    "averagePrice": f"{average:.{INSTRUMENTS[name][0]}f}",
                    "tradeIDs": [t["id"] for t in open_trades],
                    "unrealizedPL": f"{sum(self._unrealized(t) for t in open_trades):.4f}"}
            flat = {"units": "0", "unrealizedPL": "0.0000"}
            positions.append({"instrument": name, "long": side if units > 0 else flat,
                              "short": side if units < 0 else flat,
                              "unrealizedPL": side["unrealizedPL"]})
        return positions

    def _candles(self, instrument: str, params: dict) -> dict:
        if instrument not in INSTRUMENTS:
            raise _BadRequest(400, {"errorMessage": "Invalid value specified for 'instrument'"})
        granularity = params.get("granularity", "S5")
        if granularity not in GRANULARITY_NS:
            raise _BadRequest(400, {"errorMessage": "Invalid value specified for 'granularity'"})
        components = params.get("price", "M")
        if not components or set(components) - set("MBA"):
            raise _BadRequest(400, {"errorMessage": "Invalid value specified for 'price'"})
        count = params.get("count")
        if count is not None and not (count.isdigit() and 0 < int(count) <= 5000):
            raise _BadRequest(400, {"errorMessage": "Invalid value specified for 'count' "
                                                    "(1 to 5000)"})
        start, end = params.get("from"), params.get("to")
        if start and end and count is not None:
            raise _BadRequest(400, {"errorMessage": "'count' cannot be used with both 'from' "
                                                    "and 'to'"})
        try:
            start_ns = None if start is None else parse_time(start)
            end_ns = None if end is None else parse_time(end)
        except ValueError:
            raise _BadRequest(400, {"errorMessage": "Invalid value specified for 'from' or "
                                                    "'to'"}) from None
        count = 500 if count is None else int(count)
        data = self.candles.get((instrument, granularity))
        if data is not None and self.now_ns is not None:
            data = _as_of(data, self.now_ns, GRANULARITY_NS[granularity] * 1_000_000_000)
        if data is None:
            rows = []
        else:
            ts = data["ts_ns"].to_numpy()
            first, stop = 0, len(ts)
            if start_ns is not None:
                side = "left" if params.get("includeFirst", "true") != "false" else "right"
                first = int(np.searchsorted(ts, start_ns, side=side))
            if end_ns is not None:
                stop = int(np.searchsorted(ts, end_ns, side="left"))
            if start_ns is not None and end_ns is None:
                stop = min(stop, first + count)
            elif start_ns is None:
                first = max(first, stop - count)
            rows = data.iloc[first:stop]
        places, half = INSTRUMENTS[instrument][0], self.half_spread[instrument]
        candles = []
        for row in ([] if data is None else rows.itertuples(index=False)):
            candle = {"complete": bool(row.complete), "volume": int(round(row.volume)),
                      "time": now_text(row.ts_ns)}
            for letter, key, shift in (("M", "mid", 0.0), ("B", "bid", -half),
                                       ("A", "ask", half)):
                if letter in components:
                    candle[key] = {k[0]: f"{getattr(row, k) + shift:.{places}f}"
                                   for k in ("open", "high", "low", "close")}
            candles.append(candle)
        return {"instrument": instrument, "granularity": granularity, "candles": candles}

    # -- faults -------------------------------------------------------------------------

    def take_fault(self, method: str, path: str) -> dict | None:
        """The next fault matching this request (its ``kind`` and ``retry_after``), used up."""
        with self._lock:
            for fault in self._faults:
                if fault["left"] > 0 and fault["method"] in (None, method) and (
                        fault["path"] is None or fault["path"] in path):
                    fault["left"] -= 1
                    return fault
        return None

    def log(self, entry: dict) -> None:
        with self._lock:
            self.requests.append(entry)


def _as_of(data: pd.DataFrame, now_ns: int, step_ns: int) -> pd.DataFrame:
    """The candles opened by ``now_ns``; the one still forming shows its open only."""
    data = data[data["ts_ns"] <= now_ns].copy()
    forming = (data["ts_ns"] + step_ns > now_ns).to_numpy()
    data["complete"] = ~forming
    for column in ("high", "low", "close"):
        data.loc[forming, column] = data.loc[forming, "open"]
    data.loc[forming, "volume"] = 0.0
    return data


def _units_text(units: float) -> str:
    text = f"{units:.6f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text
