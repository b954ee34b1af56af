"""The OANDA v20 adapter: candles, prices, orders and account state through oandapyV20.

This is the only module that imports oandapyV20. It implements the ports of
:mod:`mmats.brokers.base` (execution and account state) plus :meth:`OandaBroker.fetch_candles`
for the candle fetcher.

What is easy to get wrong with OANDA, and what this adapter does about it:

- **Daily alignment.** OANDA's daily (and 4-hour) candles open at 17:00 New York by default.
  Every candle request here asks for ``dailyAlignment=0`` and ``alignmentTimezone=UTC``, so
  ``1d`` bars open at UTC midnight and ``4h`` bars at 00, 04, ... UTC, like the rest of the
  project. Forex has weekend gaps: they are not missing data.
- **The bar still forming.** Only candles marked ``complete`` are returned.
- **Insufficient margin is not an HTTP error**: the venue answers 201 with an
  ``orderCancelTransaction`` whose reason is ``INSUFFICIENT_MARGIN``. It raises
  :class:`InsufficientFunds` (another cancel reason: :class:`OrderRejected`), never a fill.
- **Timeouts.** Every request carries ``timeout_s``; without one the client can wait forever.
- **Errors.** oandapyV20 raises ``V20Error`` for HTTP >= 400 (without the headers) and raw
  ``requests`` exceptions for timeouts and dropped connections. They map onto the outcomes
  of :mod:`mmats.brokers.base`:

  ========================================  =================================================
  401 / 403                                 :class:`AuthenticationFailed`
  429                                       wait ``Retry-After`` (else back off
                                            exponentially), then :class:`RateLimited`
  5xx, timeout, dropped connection (read)   retry a few times, then :class:`VenueUnavailable`
  connection refused / connect timeout      nothing was sent: retried, then
                                            :class:`VenueUnavailable`
  5xx, timeout, dropped reply (``send``)    :class:`OutcomeUnknown`: never re-sent blindly
  400 / 404 on an order                     :class:`OrderRejected` with the venue's reason
  200 instead of 201 on an order            :class:`VenueUnavailable` (protocol error); if
                                            the body shows the order was created,
                                            :class:`OutcomeUnknown`
  ========================================  =================================================

  Cancels are retried like reads: cancelling twice is harmless, and a cancel the venue
  refuses (the order is already filled or cancelled) is answered by looking the order up.
  The rules are the venues' one policy (:mod:`mmats.brokers.retry`), applied by
  :func:`~mmats.brokers.oanda_wire.classify_failure`; oandapyV20 drops the response
  headers, so the adapter reads ``Retry-After`` from its HTTP session.
- **Fees** are reported in the account currency (OANDA's ``commission`` +
  ``guaranteedExecutionFee`` - ``financing`` of the fill). That is the quote currency for
  pairs quoted in the account currency (EUR/USD in a USD account); otherwise it is not
  converted.
- **Protective orders** (:meth:`OandaBroker.protect`) are OANDA's dependent STOP_LOSS and
  TAKE_PROFIT orders, attached to trades, not to positions: a position built by several
  entries is several trades (FIFO), so a leg is one dependent order on each of the
  position's trades, all at the leg's level. The order on the oldest trade carries the
  leg's client id, those on the others ``<client id>.2``, ``.3``...; the leg's side,
  units and member count ride in ``clientExtensions.comment`` (a dependent order has no
  units: it closes its whole trade). :meth:`~OandaBroker.lookup`,
  :meth:`~OandaBroker.cancel` and :meth:`~OandaBroker.open_orders` report a leg as one
  order. OANDA fills a triggered stop by closing its trade (``tradesClosed``) and cancels a
  closed trade's other dependent orders itself (``LINKED_TRADE_CLOSED``): one cancels the
  other without an order list. A cancel takes only the order named, so cancelling a leg
  here also cancels the leg placed with it (named in each order's comment), as the port
  promises and Binance's order lists do. The trades must hold exactly the units to protect (one
  sleeve per instrument in the account), else the legs are refused (``position_mismatch``)
  and the runner's own stop exits apply.
- **Secrets.** The token never appears in a message or a repr, and errors are raised
  without the ``requests`` exception chain (whose request objects carry the header).

Credentials come from the arguments, else from the environment variables
``OANDA_ACCOUNT_ID`` and ``OANDA_TOKEN``.

>>> broker = OandaBroker("101-004-1234567-001", token, practice=True)   # doctest: +SKIP
>>> broker.fetch_candles("EUR/USD", "1h", since_ms=1_500_000_000_000)   # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import time
from decimal import Decimal

import numpy as np
import oandapyV20
import oandapyV20.endpoints.accounts as oanda_accounts
import oandapyV20.endpoints.instruments as oanda_instruments
import oandapyV20.endpoints.orders as oanda_orders
import oandapyV20.endpoints.positions as oanda_positions
import oandapyV20.endpoints.pricing as oanda_pricing
import oandapyV20.endpoints.trades as oanda_trades
import oandapyV20.endpoints.transactions as oanda_transactions
import pandas as pd
import requests
from oandapyV20.exceptions import V20Error

from mmats.brokers.base import (
    AuthenticationFailed,
    BrokerError,
    InsufficientFunds,
    OrderRejected,
    RateLimited,
    VenueUnavailable,
    book_levels,
)
from mmats.brokers.oanda_legs import ProtectiveLegs
from mmats.brokers.oanda_wire import (
    FUNDS_REASONS,
    GRANULARITIES,
    LEG_MEMBER,
    LIMIT_TIME_IN_FORCE,
    MARKET_TIME_IN_FORCE,
    MAX_CANDLES_PER_REQUEST,
    PROTECTIVE,
    STATUS,
    TAG,
    Failure,
    Refused,
    RequestFailed,
    classify_failure,
    decimal_text,
    rfc3339,
    round_price,
    round_units,
    to_instrument,
    to_symbol,
)
from mmats.brokers.retry import RetryPolicy, retry_after_s
from mmats.data.schema import VALUE_COLUMNS, candles_from_arrays, empty_candles
from mmats.errors import ConfigError


class OandaBroker(ProtectiveLegs):
    """Trade one OANDA v20 account through the real oandapyV20 client.

    Parameters
    ----------
    account_id, token
        The v20 account (``"101-004-1234567-001"``) and its personal access token; default
        to the ``OANDA_ACCOUNT_ID`` and ``OANDA_TOKEN`` environment variables.
    practice
        OANDA's practice (fxTrade Practice) environment, else the live one.
    base_url
        Talk to this server instead (a local test server): it is registered as an extra
        entry of ``oandapyV20.oandapyV20.TRADING_ENVIRONMENTS``.
    timeout_s
        Timeout of every request, in seconds.
    sleep
        Called with the back-off in seconds between retries (tests pass a recorder).
    retry
        The retry policy (default: the venues' ``RetryPolicy(sleep=sleep)``, see
        :mod:`mmats.brokers.retry`).

    >>> broker = OandaBroker(base_url="http://127.0.0.1:8080", account_id="101-1", token=t)  # doctest: +SKIP
    >>> broker.send({"client_order_id": "mm-1", "symbol": "EUR/USD", "side": "buy",
    ...              "qty": 1000, "type": "market", "price": None, "time_in_force": "GTC"})  # doctest: +SKIP
    """

    page_size = MAX_CANDLES_PER_REQUEST  # candles per request; lowered by tests

    def __init__(self, account_id=None, token=None, *, practice=True, base_url=None,
                 timeout_s=10.0, sleep=time.sleep, retry: RetryPolicy | None = None):
        account_id = account_id or os.environ.get("OANDA_ACCOUNT_ID")
        token = token or os.environ.get("OANDA_TOKEN")
        if not account_id:
            raise AuthenticationFailed("OANDA: no account id; pass account_id or set the "
                                       "OANDA_ACCOUNT_ID environment variable")
        if not token:
            raise AuthenticationFailed(f"OANDA account {account_id}: no API token; pass token "
                                       "or set the OANDA_TOKEN environment variable")
        if not timeout_s or float(timeout_s) <= 0:
            raise ConfigError(f"OANDA account {account_id}: timeout_s must be > 0, "
                              f"got {timeout_s!r}")
        self.account_id = str(account_id)
        self.timeout_s = float(timeout_s)
        self.retry = RetryPolicy(sleep=sleep) if retry is None else retry
        if base_url:
            url = str(base_url).rstrip("/")
            if not url.startswith(("http://", "https://")):
                raise ConfigError(f"OANDA base_url must start with http:// or https://, "
                                  f"got {base_url!r}")
            self.environment = f"mmats:{url}"
            oandapyV20.oandapyV20.TRADING_ENVIRONMENTS[self.environment] = {"api": url,
                                                                             "stream": url}
        else:
            self.environment = "practice" if practice else "live"
        self._api = oandapyV20.API(access_token=token, environment=self.environment,
                                   request_params={"timeout": self.timeout_s})
        # oandapyV20 raises V20Error without the headers: keep the last Retry-After
        self._retry_after: str | None = None
        self._api.client.hooks["response"].append(self._remember_retry_after)
        self._hide = _hider(token)
        self._rules_cache: dict[str, dict] = {}

    def __repr__(self):
        return f"OandaBroker(account={self.account_id!r}, environment={self.environment!r})"

    def close(self) -> None:
        """Close the HTTP session."""
        self._api.close()

    # -- market data ------------------------------------------------------------------

    def fetch_candles(self, symbol: str, timeframe: str, since_ms: int | None,
                      limit: int = 5000) -> pd.DataFrame:
        """Complete mid-price candles of ``symbol`` opened at or after ``since_ms``.

        Pages through ``/v3/instruments/{instrument}/candles`` with ``from``/``count`` until
        ``limit`` candles, the end of the data or the bar still forming (which is dropped).
        ``since_ms=None`` returns the latest ``limit`` complete candles (at most 5000).
        Daily and 4-hour bars are aligned to UTC midnight. Returns the candle schema
        (``ts`` = bar open time, UTC), oldest first.

        >>> broker.fetch_candles("EUR/USD", "1h", since_ms=1_500_000_000_000, limit=100)  # doctest: +SKIP
        """
        granularity = GRANULARITIES.get(str(timeframe))
        if granularity is None:
            raise ConfigError(f"OANDA {symbol}: timeframe {timeframe!r} is not supported; use "
                              f"one of {', '.join(GRANULARITIES)}")
        instrument = to_instrument(symbol)
        base = {"granularity": granularity, "price": "M", "dailyAlignment": 0,
                "alignmentTimezone": "UTC"}
        limit = int(limit)
        rows: list[dict] = []
        if since_ms is None:
            count = max(1, min(limit + 1, MAX_CANDLES_PER_REQUEST))
            request = oanda_instruments.InstrumentsCandles(instrument,
                                                           params={**base, "count": count})
            page = self._call(request, "fetch candles", symbol).get("candles", [])
            rows = [c for c in page if c.get("complete")][-limit:] if limit > 0 else []
        else:
            cursor, include_first = rfc3339(int(since_ms) * 1_000_000), True
            while len(rows) < limit:
                count = min(self.page_size, MAX_CANDLES_PER_REQUEST, limit - len(rows))
                params = {**base, "from": cursor, "count": count}
                if not include_first:
                    params["includeFirst"] = "false"
                request = oanda_instruments.InstrumentsCandles(instrument, params=params)
                page = self._call(request, "fetch candles", symbol).get("candles", [])
                complete = [c for c in page if c.get("complete")]
                rows.extend(complete)
                if len(page) < count or len(complete) < len(page):
                    break  # the end of the data, or the bar still forming
                cursor, include_first = page[-1]["time"], False
        return self._frame(rows, symbol)

    def _frame(self, rows: list[dict], symbol: str) -> pd.DataFrame:
        if not rows:
            return empty_candles()
        try:
            ts = pd.to_datetime([c["time"] for c in rows], utc=True, format="ISO8601")
            ts_ns = ts.as_unit("ns").asi8
            values = {key: np.array([float(c["mid"][key[0]]) for c in rows])
                      for key in VALUE_COLUMNS if key != "volume"}
            values["volume"] = np.array([float(c.get("volume", 0)) for c in rows])
        except (KeyError, TypeError, ValueError) as err:
            detail = f"{type(err).__name__}: {err}"
            raise BrokerError(f"OANDA account {self.account_id}: candles of {symbol} are "
                              f"malformed ({self._hide(detail)})") from None
        if np.any(np.diff(ts_ns) <= 0):
            raise BrokerError(f"OANDA account {self.account_id}: candles of {symbol} are not "
                              "in strictly increasing time order")
        return candles_from_arrays(ts_ns, values)

    def price(self, symbol: str) -> dict:
        """The current best ``{"bid", "ask", "ts"}`` of ``symbol`` (``ts``: UTC Timestamp)."""
        quote = self._quote(symbol, "price")
        return {"bid": float(quote["bids"][0]["price"]), "ask": float(quote["asks"][0]["price"]),
                "ts": pd.Timestamp(quote["time"]).tz_convert("UTC")}

    def order_book(self, symbol: str, depth: int = 10) -> dict:
        """The price levels OANDA quotes for ``symbol`` (its pricing endpoint: each bid and
        ask with the liquidity available there, in units; a few levels, not a full book),
        as a :class:`~mmats.brokers.base.OrderBook`."""
        quote = self._quote(symbol, "read the order book")
        sides = {side: [(level.get("price"), level.get("liquidity"))
                        for level in quote.get(side) or ()] for side in ("bids", "asks")}
        return {"symbol": symbol,
                "bids": book_levels(sides["bids"], depth, descending=True),
                "asks": book_levels(sides["asks"], depth, descending=False),
                "ts_ms": int(pd.Timestamp(quote["time"]).value // 1_000_000)}

    def _quote(self, symbol: str, what: str) -> dict:
        """The pricing endpoint's quote of ``symbol``, with bids and asks."""
        request = oanda_pricing.PricingInfo(self.account_id,
                                            params={"instruments": to_instrument(symbol)})
        prices = self._call(request, what, symbol).get("prices", [])
        quote = next((p for p in prices if p.get("instrument") == to_instrument(symbol)), None)
        if quote is None or not quote.get("bids") or not quote.get("asks"):
            raise BrokerError(f"OANDA account {self.account_id}: no price for {symbol}")
        return quote

    # -- execution --------------------------------------------------------------------

    def instrument(self, symbol: str) -> dict:
        """Trading rules of ``symbol``: lot size (``10**-tradeUnitsPrecision``), tick size
        (``10**-displayPrecision``) and minimum notional (0: OANDA has a minimum trade size
        in units instead, which :meth:`send` enforces)."""
        rules = self._rules(symbol)
        return {"lot_size": float(Decimal(1).scaleb(-rules["units_precision"])),
                "tick_size": float(Decimal(1).scaleb(-rules["price_precision"])),
                "min_notional": 0.0}

    def _rules(self, symbol: str) -> dict:
        instrument = to_instrument(symbol)
        if instrument not in self._rules_cache:
            request = oanda_accounts.AccountInstruments(self.account_id)
            for spec in self._call(request, "read instruments", symbol).get("instruments", []):
                self._rules_cache[spec["name"]] = {
                    "units_precision": int(spec.get("tradeUnitsPrecision", 0)),
                    "price_precision": int(spec.get("displayPrecision", 5)),
                    "min_units": Decimal(str(spec.get("minimumTradeSize", "1"))),
                }
        if instrument not in self._rules_cache:
            raise BrokerError(f"OANDA account {self.account_id}: {symbol} ({instrument}) is not "
                              "tradeable in this account")
        return self._rules_cache[instrument]

    def _order_rules(self, symbol: str) -> dict:
        """The instrument's rules for an order: a venue that cannot be reached is raised
        as such, an instrument it does not know refuses the order."""
        try:
            return self._rules(symbol)
        except BrokerError as err:
            if isinstance(err, (VenueUnavailable, RateLimited, AuthenticationFailed)):
                raise
            raise OrderRejected(str(err), "INSTRUMENT_UNKNOWN") from None

    def _guard(self, order: dict) -> None:
        """The real-money guard, for the protective legs' mixin too."""
        _guard_send(self, order)

    def send(self, order: dict) -> dict:
        """Send a market (FOK, or IOC when asked) or limit (GTC) order; return its report.

        Units are signed by side and rounded down to the instrument's
        ``tradeUnitsPrecision``; a limit price is rounded to its ``displayPrecision``. The
        client order id goes in ``clientExtensions.id`` (and the trade's), so
        :meth:`lookup` can find the order after :class:`OutcomeUnknown`.
        """
        _guard_send(self, order)  # no order to a real endpoint without prod + the flag
        cid, symbol, side, qty, kind, price, time_in_force = self._check_order(order)
        what = f"send {kind} {side} {symbol} (client id {cid})"
        rules = self._order_rules(symbol)
        units = round_units(qty, rules["units_precision"])
        if units < rules["min_units"] or units <= 0:
            raise OrderRejected(
                f"OANDA account {self.account_id}: {what}: {qty:g} units round to {units}, "
                f"below the minimum trade size {rules['min_units']}", "UNITS_MINIMUM_NOT_MET")
        body = {"type": kind.upper(), "instrument": to_instrument(symbol),
                "units": decimal_text(units if side == "buy" else -units),
                "positionFill": "DEFAULT",
                "clientExtensions": {"id": cid, "tag": TAG},
                "tradeClientExtensions": {"id": cid, "tag": TAG}}
        if kind == "market":
            body["timeInForce"] = time_in_force if time_in_force in MARKET_TIME_IN_FORCE else "FOK"
        else:
            body["timeInForce"] = time_in_force if time_in_force in LIMIT_TIME_IN_FORCE else "GTC"
            body["price"] = decimal_text(round_price(price, rules["price_precision"]))
        request = oanda_orders.OrderCreate(self.account_id, data={"order": body})
        refused = None
        try:
            response = self._call(request, what, idempotent=False, refusal=True)
        except Refused as err:
            refused = err.failure
        if refused is not None:
            raise self._rejection(what, refused.body or {}, refused.detail)
        info = {"client_order_id": cid, "symbol": symbol, "side": side, "qty": float(units)}
        return self._create_report(info, response, what)

    def _check_order(self, order: dict):
        try:
            cid = str(order["client_order_id"])
            symbol = str(order["symbol"])
            side = str(order["side"]).lower()
            qty = float(order["qty"])
            kind = str(order.get("type", "market")).lower()
            price = order.get("price")
            time_in_force = str(order.get("time_in_force") or "").upper()
        except (KeyError, TypeError, ValueError) as err:
            raise OrderRejected(f"OANDA account {self.account_id}: malformed order "
                                f"({type(err).__name__}: {err}); see mmats.brokers.base for "
                                "the order shape", "invalid_order") from None
        problems = []
        if not cid or len(cid) > 128:
            problems.append("client_order_id must be 1..128 characters")
        if side not in ("buy", "sell"):
            problems.append(f"side must be buy or sell, not {side!r}")
        if not qty > 0 or not np.isfinite(qty):
            problems.append(f"qty must be > 0, not {qty!r}")
        if kind not in ("market", "limit"):
            problems.append(f"type must be market or limit, not {kind!r}")
        if kind == "limit" and (price is None or not float(price) > 0):
            problems.append(f"a limit order needs a price > 0, not {price!r}")
        if problems:
            raise OrderRejected(f"OANDA account {self.account_id}: order {cid or '?'} on "
                                f"{symbol}: {'; '.join(problems)}", "invalid_order")
        return cid, symbol, side, qty, kind, price, time_in_force

    def _create_report(self, info: dict, response: dict, what: str) -> dict:
        create = response.get("orderCreateTransaction") or {}
        fill = response.get("orderFillTransaction")
        cancel = response.get("orderCancelTransaction")
        report = self._report(info, create.get("id"), fill, cancel,
                              "canceled" if cancel else "filled" if fill else "open")
        if cancel and report["filled_qty"] == 0:
            reason = cancel.get("reason", "CANCELLED")
            message = (f"OANDA account {self.account_id}: {what}: the venue cancelled the order "
                       f"at once ({reason}); nothing was filled")
            if reason in FUNDS_REASONS:
                raise InsufficientFunds(message)
            raise OrderRejected(message, reason)
        return report

    def _report(self, info: dict, venue_order_id, fill: dict | None, cancel: dict | None,
                status: str) -> dict:
        filled_qty, avg_price, fee = 0.0, None, 0.0
        if fill:
            filled_qty = abs(float(fill.get("units", 0)))
            if filled_qty > 0:
                avg_price = float(fill["price"])
            fee = (float(fill.get("commission", 0)) + float(fill.get("guaranteedExecutionFee", 0))
                   - float(fill.get("financing", 0)))
        return {"client_order_id": info["client_order_id"],
                "venue_order_id": None if venue_order_id is None else str(venue_order_id),
                "symbol": info["symbol"], "side": info["side"], "qty": info["qty"],
                "filled_qty": filled_qty, "avg_price": avg_price, "fee": fee, "status": status,
                "reason": cancel.get("reason") if cancel else None}

    def _rejection(self, what: str, body: dict, detail: str) -> OrderRejected:
        reject = next((v for k, v in body.items() if k.endswith("RejectTransaction")
                       and isinstance(v, dict)), {})
        reason = reject.get("rejectReason") or body.get("errorCode") or "rejected"
        message = f"OANDA account {self.account_id}: {what}: rejected: {detail}"
        if reason in FUNDS_REASONS:
            return InsufficientFunds(message)
        return OrderRejected(message, reason)

    def lookup(self, client_order_id: str, symbol: str | None = None) -> dict | None:
        """The venue's report of the order with this client id, or None if it never arrived
        (404 ``ORDER_DOESNT_EXIST``). A protective leg is reported as one order over its
        dependent orders (see :meth:`protect`)."""
        order = self._order_by_client_id(client_order_id, symbol)
        if order is None:
            return None
        if order.get("type") in PROTECTIVE:
            return self._leg_report(client_order_id, symbol, self._members(client_order_id,
                                                                           order, symbol))
        return self._order_report(order)

    def _order_by_client_id(self, client_order_id: str, symbol: str | None) -> dict | None:
        """The venue's raw order with this client id, or None (404 ``ORDER_DOESNT_EXIST``)."""
        request = oanda_orders.OrderDetails(self.account_id, f"@{client_order_id}")
        what = f"look up client id {client_order_id}"
        refused = None
        try:
            order = self._call(request, what, symbol, refusal=True).get("order")
        except Refused as err:
            refused = err.failure
        if refused is not None:
            # Only the venue's own "no such order" means it never arrived: any other 404
            # (a proxy's, say) must not make the runner send the order again.
            if refused.status == 404 and (refused.body or {}).get("errorCode") == (
                    "ORDER_DOESNT_EXIST"):
                return None
            raise BrokerError(f"OANDA account {self.account_id}: {what}"
                              f"{' on ' + symbol if symbol else ''}: {refused.detail}")
        if not order:
            raise BrokerError(f"OANDA account {self.account_id}: {what}: the answer has no order")
        return order

    def _order_report(self, order: dict) -> dict:
        state = order.get("state")
        if state not in STATUS:
            raise BrokerError(f"OANDA account {self.account_id}: order {order.get('id')} has an "
                              f"unknown state {state!r}")
        units = float(order.get("units", 0))
        info = {"client_order_id": (order.get("clientExtensions") or {}).get("id"),
                "symbol": to_symbol(order.get("instrument", "")),
                "side": "buy" if units > 0 else "sell", "qty": abs(units)}
        fill = cancel = None
        if order.get("fillingTransactionID"):
            fill = self._transaction(order["fillingTransactionID"], info["symbol"])
        if state == "CANCELLED" and order.get("cancellingTransactionID"):
            cancel = self._transaction(order["cancellingTransactionID"], info["symbol"])
        return self._report(info, order.get("id"), fill, cancel, STATUS[state])

    def _transaction(self, transaction_id, symbol: str) -> dict:
        request = oanda_transactions.TransactionDetails(self.account_id, str(transaction_id))
        return self._call(request, f"read transaction {transaction_id}", symbol)["transaction"]

    def cancel(self, client_order_id: str, symbol: str | None = None) -> dict | None:
        """Cancel an open order by client id; return its final report, or None if the venue
        never had it. An order already filled or cancelled returns its report as it is.

        A protective leg is cancelled on every trade of the position, and so is the other
        leg placed with it (OANDA has no order lists: the adapter keeps the port's "one
        cancels the other"); the report is the named leg's."""
        what = f"cancel client id {client_order_id}"
        refused = self._cancel_order(client_order_id, symbol)
        order = self._order_by_client_id(client_order_id, symbol)
        if order is not None and order.get("type") in PROTECTIVE:
            report = self._cancel_leg(client_order_id, order, symbol)
            if report["status"] not in ("open", "partially_filled"):
                self._cancel_sibling(order, symbol)
        elif order is not None:
            report = self._order_report(order)
        else:
            orphan = self._cancel_orphans(client_order_id, symbol)
            if orphan is not None and orphan.get("type") in PROTECTIVE:
                self._cancel_sibling(orphan, symbol)
            report = None
        if refused is not None and report is not None and report["status"] == "open":
            body = refused.body or {}
            reject = body.get("orderCancelRejectTransaction") or {}
            raise OrderRejected(f"OANDA account {self.account_id}: {what}"
                                f"{' on ' + symbol if symbol else ''}: {refused.detail}",
                                reject.get("rejectReason") or body.get("errorCode") or "rejected")
        return report

    def _cancel_order(self, client_order_id: str, symbol: str | None) -> Failure | None:
        """Ask the venue to cancel one order; its refusal (already final, unknown), or None."""
        request = oanda_orders.OrderCancel(self.account_id, f"@{client_order_id}")
        try:
            self._call(request, f"cancel client id {client_order_id}", symbol, refusal=True)
        except Refused as err:
            return err.failure
        return None

    def _cancel_orphans(self, client_order_id: str, symbol: str | None) -> dict | None:
        """Cancel the orders of a leg whose own order never arrived (a :meth:`protect` cut
        short places it last): ``<client id>.2``, ``.3``... while they exist. Returns the
        first of them (None: there were none)."""
        first = None
        for k in range(2, 10_000):
            member = self._order_by_client_id(f"{client_order_id}.{k}", symbol)
            if member is None:
                return first
            first = first or member
            if member["state"] == "PENDING":
                self._cancel_order(f"{client_order_id}.{k}", symbol)
        return first

    def open_orders(self, symbol: str | None = None) -> list[dict]:
        """Reports of the pending orders (of ``symbol``, or all): entry orders, and the
        stop-loss and take-profit orders on open trades, one report per protective leg
        (see :meth:`protect`)."""
        request = oanda_orders.OrdersPending(self.account_id)
        orders = self._call(request, "list open orders", symbol).get("orders", [])
        wanted = None if symbol is None else to_instrument(symbol)
        reports = [self._order_report(o) for o in orders
                   if o.get("instrument") and o.get("units") is not None
                   and (wanted is None or o["instrument"] == wanted)]
        dependent = [o for o in orders if o.get("type") in PROTECTIVE and o.get("tradeID")]
        if not dependent:
            return reports
        trades = {t["trade_id"]: t for t in self.trades()}
        legs: dict[str, list] = {}
        for order in dependent:
            trade = trades.get(order["tradeID"])
            if trade is None or (wanted is not None and to_instrument(trade["symbol"]) != wanted):
                continue  # its trade closed meanwhile (the order with it), or another symbol
            cid = (order.get("clientExtensions") or {}).get("id")
            member = LEG_MEMBER.match(cid or "")
            key = (member.group("leg") if member else cid) or f"order {order['id']}"
            legs.setdefault(key, []).append((order, trade))
        for key, members in legs.items():
            members.sort(key=lambda pair: LEG_MEMBER.match(
                (pair[0].get("clientExtensions") or {}).get("id") or "") is not None)
            order, trade = members[0]
            cid = (order.get("clientExtensions") or {}).get("id")
            reports.append({
                "client_order_id": None if cid is None else key,
                "venue_order_id": str(order["id"]), "symbol": trade["symbol"],
                "side": "sell" if trade["units"] > 0 else "buy",
                "qty": sum(abs(t["units"]) for _, t in members), "filled_qty": 0.0,
                "avg_price": None, "fee": 0.0, "status": "open", "reason": None,
                "type": PROTECTIVE[order["type"]], "stop_price": float(order["price"])})
        return reports

    def trades(self) -> list[dict]:
        """Open trades: ``{"trade_id", "symbol", "units" (signed), "price", "unrealized_pl",
        "client_id"}``."""
        request = oanda_trades.OpenTrades(self.account_id)
        return [{"trade_id": t["id"], "symbol": to_symbol(t["instrument"]),
                 "units": float(t["currentUnits"]), "price": float(t["price"]),
                 "unrealized_pl": float(t.get("unrealizedPL", 0)),
                 "client_id": (t.get("clientExtensions") or {}).get("id")}
                for t in self._call(request, "list open trades").get("trades", [])]

    # -- account state ----------------------------------------------------------------

    def account_summary(self) -> dict:
        """``{"currency", "balance", "nav", "margin_available", "margin_used",
        "unrealized_pl"}``, amounts in the account currency."""
        request = oanda_accounts.AccountSummary(self.account_id)
        account = self._call(request, "read account summary")["account"]
        return {"currency": account["currency"], "balance": float(account["balance"]),
                "nav": float(account["NAV"]),
                "margin_available": float(account["marginAvailable"]),
                "margin_used": float(account["marginUsed"]),
                "unrealized_pl": float(account.get("unrealizedPL", 0))}

    def balances(self) -> dict[str, float]:
        """``{account currency: balance}``; NAV and margin are in :meth:`account_summary`."""
        summary = self.account_summary()
        return {summary["currency"]: summary["balance"]}

    def positions(self) -> dict[str, float]:
        """Signed net units of each symbol with an open position."""
        request = oanda_positions.OpenPositions(self.account_id)
        net = {}
        for position in self._call(request, "read positions").get("positions", []):
            units = (float(position.get("long", {}).get("units", 0))
                     + float(position.get("short", {}).get("units", 0)))
            if units != 0:
                net[to_symbol(position["instrument"])] = units
        return net

    # -- requests and errors ----------------------------------------------------------

    def _call(self, endpoint, what: str, symbol: str | None = None, *,
              idempotent: bool = True, refusal: bool = False) -> dict:
        """Run one request under the retry policy and raise the outcome of base.py (see
        :func:`~mmats.brokers.oanda_wire.classify_failure`). A 4xx (other than
        401/403/429) raises :class:`Refused` when ``refusal`` (the caller interprets it),
        else :class:`BrokerError`. Errors carry no chained ``requests`` exception."""
        where = f"OANDA account {self.account_id}: {what}{' on ' + symbol if symbol else ''}"

        def request() -> dict:
            response, failure = self._attempt(endpoint)
            if failure is not None:
                raise RequestFailed(failure)
            return response

        return self.retry.call(request, lambda exc: classify_failure(
            exc, where, idempotent=idempotent, refusal=refusal))

    def _remember_retry_after(self, response, *args, **kwargs) -> None:
        """A response hook of the HTTP session: the answer's ``Retry-After``."""
        self._retry_after = response.headers.get("Retry-After")

    def _attempt(self, endpoint) -> tuple[dict | None, Failure | None]:
        endpoint.response = None
        self._retry_after = None
        try:
            return self._api.request(endpoint), None
        except V20Error as err:
            return None, self._status_failure(int(err.code), str(err.msg))
        except requests.exceptions.ConnectTimeout as err:
            return None, Failure("unsent", self._describe(err, "could not connect"))
        except requests.exceptions.Timeout as err:
            return None, Failure("lost", self._describe(
                err, f"no answer within {self.timeout_s:g} s"))
        except requests.exceptions.ConnectionError as err:
            if _refused_connection(err):
                return None, Failure("unsent", self._describe(err, "connection refused"))
            return None, Failure("lost", self._describe(err, "connection dropped"))
        except requests.exceptions.RequestException as err:
            return None, Failure("lost", self._describe(err, "request failed"))
        except json.JSONDecodeError as err:
            return None, Failure("garbled", self._describe(err, "unreadable answer"))
        except ValueError as err:
            body = endpoint.response if isinstance(endpoint.response, dict) else {}
            return None, Failure("protocol", self._describe(
                err, f"unexpected status (expected {endpoint.expected_status})"), body=body)

    def _status_failure(self, status: int, text: str) -> Failure:
        try:
            body = json.loads(text)
        except ValueError:
            body = None
        if isinstance(body, dict):
            reject = next((v for k, v in body.items() if k.endswith("RejectTransaction")
                           and isinstance(v, dict)), {})
            parts = [body.get("errorMessage"), reject.get("rejectReason") or body.get("errorCode")]
            detail = " / ".join(str(p) for p in parts if p) or text[:200]
        else:
            body, detail = {}, text.strip()[:200]
        detail = f"HTTP {status}: {self._hide(detail)}"
        if status in (401, 403):
            kind = "auth"
        elif status == 429:
            kind = "rate"
        elif status >= 500:
            kind = "server"
        else:
            kind = "refused"
        wait = retry_after_s(self._retry_after) if kind == "rate" else None
        return Failure(kind, detail, status=status, body=body, retry_after_s=wait)

    def _describe(self, err: Exception, what: str) -> str:
        return f"{what} ({type(err).__name__}: {self._hide(str(err))[:300]})"


def _hider(token: str):
    """A function that blanks the token out of a text (defence in depth)."""
    secret = str(token)

    def hide(text: str) -> str:
        return text.replace(secret, "***") if secret else text

    return hide


def _refused_connection(err: Exception) -> bool:
    """True when the connection was never established (refused, no route, DNS): nothing
    reached the venue. Walks the wrapped urllib3 errors."""
    seen, stack = set(), [err]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if type(current).__name__ in ("NewConnectionError", "NameResolutionError"):
            return True
        if isinstance(current, ConnectionRefusedError):
            return True
        stack.extend(a for a in getattr(current, "args", ()) if isinstance(a, BaseException))
        stack.extend([getattr(current, "reason", None), current.__cause__, current.__context__])
    return False


def sandbox_hosts(exchange_id: str = "oanda") -> frozenset:
    """Hosts of OANDA's practice environment as oandapyV20 names them
    (``api-fxpractice.oanda.com``, ``stream-fxpractice.oanda.com``)."""
    from urllib.parse import urlsplit

    practice = oandapyV20.oandapyV20.TRADING_ENVIRONMENTS["practice"]
    return frozenset(urlsplit(url).hostname.lower() for url in practice.values())


def api_urls(exchange_id: str = "oanda", *, sandbox: bool = False) -> tuple[str, ...]:
    """The REST URL oandapyV20 calls: practice with ``sandbox``, else live."""
    return (oandapyV20.oandapyV20.TRADING_ENVIRONMENTS["practice" if sandbox else "live"]["api"],)


def _guard_send(broker, order: dict) -> None:
    """Refuse an order for a real endpoint this adapter was not allowed (first line of
    ``send``; see :func:`mmats.brokers.connect.guard_order`)."""
    from mmats.brokers.connect import guard_order

    url = oandapyV20.oandapyV20.TRADING_ENVIRONMENTS[broker.environment]["api"]
    guard_order(broker, order, (url,), sandbox_hosts(), f"OANDA account {broker.account_id}")
