"""The ccxt adapter: candles, orders and account state of any exchange ccxt knows.

The only module that imports ccxt. What differs between venues is data
(:data:`VENUE_FACTS`), not subclasses. Every ccxt error is mapped onto the outcomes of
:mod:`mmats.brokers.base` by :func:`classify_error`, and retried (or not) by the venues'
one policy, :class:`mmats.brokers.retry.RetryPolicy`:

- 429/418 (``DDoSProtection``): wait the venue's ``Retry-After`` (read from the response
  headers; ccxt ignores it) and retry, then :class:`RateLimited`;
- timeouts, dropped connections, 5xx: reads are retried, then :class:`VenueUnavailable`;
  an order that may have left raises :class:`OutcomeUnknown` and is never re-sent blindly
  (only a connection that was never opened is retried);
- insufficient balance: :class:`InsufficientFunds`; filters, bad parameters:
  :class:`OrderRejected` (a duplicate client order id returns the existing order instead);
- bad key, signature or permissions: :class:`AuthenticationFailed`.

Messages name the exchange, the symbol and what was being done, and never carry the key,
the secret or a request signature; no ccxt exception is chained to them (its request
object holds the key in a header).

>>> broker = CcxtBroker("binance", api_key=key, secret=secret, symbols=["BTC/USDT"])  # doctest: +SKIP
>>> broker.send({"client_order_id": "mm-1", "symbol": "BTC/USDT", "side": "buy",
...              "qty": 0.01, "type": "market", "price": None})     # doctest: +SKIP
"""

from __future__ import annotations

import copy
import difflib
import math
import numbers
import re
import time
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal
from urllib.parse import urlsplit, urlunsplit

import ccxt
import numpy as np
import pandas as pd
import requests
import urllib3

from mmats.brokers.base import (
    AuthenticationFailed,
    BrokerError,
    InsufficientFunds,
    OrderBookUnavailable,
    OrderRejected,
    OutcomeUnknown,
    RateLimited,
    VenueUnavailable,
    book_levels,
)
from mmats.brokers.retry import (
    RetryPolicy,
    Verdict,
    give_up,
    rate_limited,
    retry,
    retry_after_s,
)
from mmats.data.schema import VALUE_COLUMNS, candles_from_arrays
from mmats.errors import ConfigError

# Facts about a venue the adapter acts on; a venue not listed takes DEFAULT_FACTS.
DEFAULT_FACTS = {
    "client_id_param": "clientOrderId",   # create_order param carrying our client order id
    "client_id_max_chars": 32,
    "candles_per_request": None,          # None: ccxt's features table, else 500
    "last_candle_forming": True,          # the newest candle may be the bar still forming
    "duplicate_client_id": (),            # fragments of the venue's duplicate-id message
    "order_lookup_has_fees": True,        # fetch_order reports fees (else read the trades)
    "oco_method": None,                   # ccxt's implicit method placing an OCO order list
    "stop_limit_bps": 50,                 # a stop-limit's limit, this far past its trigger
    "options": {},                        # ccxt options merged under the user's
}
_BINANCE = {
    "client_id_param": "newClientOrderId",
    "client_id_max_chars": 36,
    "candles_per_request": 1000,
    "last_candle_forming": True,
    "duplicate_client_id": ("Duplicate order sent",),
    "order_lookup_has_fees": False,       # GET /api/v3/order carries no fills
    # POST /api/v3/orderList/oco: a stop-loss and a take-profit holding the quantity once
    # (two separate sells of a spot position would need it twice)
    "oco_method": "privatePostOrderListOco",
    "stop_limit_bps": 50,
    # One exchangeInfo call instead of six when a key is set; no warning for open orders
    # of every symbol.
    "options": {"fetchMarkets": {"types": ["spot"]}, "fetchCurrencies": False,
                "fetchMargins": False, "fetchOpenOrders": {"warnWithoutSymbol": False}},
}
VENUE_FACTS = {"binance": _BINANCE, "binanceus": _BINANCE}

_STATUS = {"open": "open", "closed": "filled", "canceled": "canceled",
           "cancelled": "canceled", "expired": "expired", "rejected": "rejected"}
_PROTECTIVE_TYPES = {"stop_loss_limit": "stop_loss", "stop_loss": "stop_loss",
                     "take_profit_limit": "take_profit", "take_profit": "take_profit",
                     "limit_maker": "take_profit"}
_CLIENT_ID = re.compile(r"^[A-Za-z0-9_-]+$")
_SIGNATURE = re.compile(r"(signature=)[^&\s\"']*", re.IGNORECASE)
_NOT_SENT = (requests.exceptions.ConnectTimeout, urllib3.exceptions.NewConnectionError,
             urllib3.exceptions.ConnectTimeoutError, ConnectionRefusedError)
_MESSAGE_CHARS = 300


class CcxtBroker:
    """Candles, orders and balances of one ccxt exchange (``exchange_id`` such as
    ``"binance"``), implementing the Execution and AccountState ports and the candle
    source of :func:`mmats.data.fetch.fetch_into_store`.

    ``base_url`` replaces the scheme and host of every API URL and keeps each path (a
    proxy, or a local test server); ``sandbox`` selects the venue's test network.
    ``symbols`` are the markets whose base-asset balances :meth:`positions` reports.
    Requests follow ``retry`` (default: the venues' :class:`~mmats.brokers.retry.RetryPolicy`
    with ``backoff_s``, ``max_wait_s`` and ``sleep``; ``retries`` given: that many retries
    of a failure or a rate limit); a ``Retry-After`` longer than ``max_wait_s`` is not
    waited for but raised. ``rate_limit`` keeps ccxt's own request throttle on.
    """

    def __init__(self, exchange_id: str, *, api_key=None, secret=None, sandbox=False,
                 base_url=None, timeout_s=10.0, options=None, symbols=(), retries=None,
                 backoff_s=0.5, max_wait_s=60.0, rate_limit=True, sleep=time.sleep,
                 clock=time.time, retry: RetryPolicy | None = None):
        exchange_id = str(exchange_id).strip().lower()
        if exchange_id not in ccxt.exchanges:
            close = difflib.get_close_matches(exchange_id, ccxt.exchanges, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ConfigError(f"unknown exchange {exchange_id!r}: not one of ccxt's "
                              f"{len(ccxt.exchanges)} exchange ids{hint}")
        self.exchange_id = exchange_id
        self.facts = {**DEFAULT_FACTS, **VENUE_FACTS.get(exchange_id, {})}
        self.symbols = tuple(symbols)
        _check_bases(exchange_id, self.symbols)
        if retry is None:
            tries = {} if retries is None else {"attempts": int(retries) + 1,
                                                "rate_limit_attempts": int(retries) + 1}
            retry = RetryPolicy(backoff_s=backoff_s, max_wait_s=max_wait_s, sleep=sleep,
                                **tries)
        self.retry = retry
        self._clock = clock
        self._keyed = bool(api_key or secret)
        self._hide = _hider(api_key, secret)
        if not timeout_s or float(timeout_s) <= 0:
            raise ConfigError(f"{exchange_id}: timeout_s must be > 0 seconds, got {timeout_s!r}")
        config = {"timeout": int(float(timeout_s) * 1000), "enableRateLimit": bool(rate_limit)}
        if api_key:
            config["apiKey"] = api_key
        if secret:
            config["secret"] = secret
        self._exchange = getattr(ccxt, exchange_id)(config)
        _merge(self._exchange.options, copy.deepcopy(self.facts["options"]))
        _merge(self._exchange.options, copy.deepcopy(options or {}))
        if sandbox:
            try:
                if not self._exchange.urls.get("test"):
                    raise ccxt.NotSupported(exchange_id)
                self._exchange.set_sandbox_mode(True)
            except ccxt.NotSupported:
                raise ConfigError(f"{exchange_id} has no sandbox (test network) in ccxt; "
                                  "drop sandbox or use base_url") from None
        if base_url:
            self._exchange.urls["api"] = _rebase(self._exchange.urls["api"], base_url)
        self._markets_loaded = False

    def __repr__(self) -> str:
        keyed = "with key" if self._keyed else "public"
        return f"CcxtBroker({self.exchange_id!r}, {keyed})"

    # -- candles -------------------------------------------------------------------------

    def fetch_candles(self, symbol: str, timeframe: str, since_ms: int | None,
                      limit: int = 1000) -> pd.DataFrame:
        """Up to ``limit`` bars opening at or after ``since_ms`` (None: the latest ones),
        oldest first, in the candle schema; the last one may be the bar still forming.
        ``limit`` is capped at what the venue sends in one request."""
        self._market(symbol)
        if self._exchange.timeframes and timeframe not in self._exchange.timeframes:
            raise ConfigError(f"{self.exchange_id} has no {timeframe!r} candles; it offers "
                              f"{', '.join(self._exchange.timeframes)}")
        limit = max(1, min(int(limit), self._candles_per_request()))
        rows = self._call(f"fetch {timeframe} candles", symbol, self._exchange.fetch_ohlcv,
                          symbol, timeframe, since=None if since_ms is None else int(since_ms),
                          limit=limit)
        table = np.array([[np.nan if v is None else v for v in row[:6]] for row in rows],
                         dtype=np.float64).reshape(-1, 6)
        ts_ns = table[:, 0].astype(np.int64) * 1_000_000
        frame = candles_from_arrays(ts_ns, {c: table[:, i + 1]
                                            for i, c in enumerate(VALUE_COLUMNS)})
        frame = frame.sort_values("ts", kind="stable").reset_index(drop=True)
        frame.attrs = {"venue": self.exchange_id, "symbol": symbol, "timeframe": timeframe,
                       "last_bar_may_be_forming": bool(self.facts["last_candle_forming"])}
        return frame

    def order_book(self, symbol: str, depth: int = 10) -> dict:
        """The top ``depth`` levels of each side of ``symbol``'s book, from ccxt's
        ``fetch_order_book`` (public: no key needed), as a :class:`~mmats.brokers.base.OrderBook`."""
        self._market(symbol)
        if not self._exchange.has.get("fetchOrderBook"):
            raise OrderBookUnavailable(f"{self.exchange_id}: ccxt cannot fetch its order book")
        depth = max(1, int(depth))
        book = self._call("fetch the order book", symbol, self._exchange.fetch_order_book,
                          symbol, depth)
        stamp = book.get("timestamp")
        return {"symbol": symbol, "bids": book_levels(book.get("bids"), depth, descending=True),
                "asks": book_levels(book.get("asks"), depth, descending=False),
                "ts_ms": int(stamp) if stamp else int(self._clock() * 1000)}

    # -- execution -----------------------------------------------------------------------

    def instrument(self, symbol: str) -> dict:
        """``{"lot_size", "tick_size", "min_notional"}`` from the venue's market rules."""
        market = self._market(symbol)
        limits = market.get("limits") or {}
        return {"lot_size": self._step(market, "amount"),
                "tick_size": self._step(market, "price"),
                "min_notional": float(((limits.get("cost") or {}).get("min")) or 0.0)}

    def send(self, order: dict) -> dict:
        """Round the order to the lot and tick sizes, check it against the minimum
        notional, send it with its client order id; return the venue's report."""
        _guard_send(self, order)  # no order to a real endpoint without prod + the flag
        cid, symbol, side, kind = _check_order(order, self.facts["client_id_max_chars"],
                                               self.exchange_id)
        label = f"{self.exchange_id} {symbol}: order {cid}"
        try:
            market = self._market(symbol)
        except ConfigError as exc:
            raise OrderRejected(f"{label} rejected: {exc}", "unknown_symbol") from None
        rules = self.instrument(symbol)
        minimum = float(((market.get("limits") or {}).get("amount") or {}).get("min") or 0.0)
        qty = _to_step(order["qty"], rules["lot_size"], ROUND_FLOOR)
        if qty <= 0 or qty < minimum:
            raise OrderRejected(f"{label} rejected before sending: qty {order['qty']} rounds "
                                f"down to {qty:g} at lot size {rules['lot_size']:g}, below the "
                                f"minimum {max(minimum, rules['lot_size']):g}", "lot_size")
        price = None
        if kind == "limit":
            # Rounded away from the market: never pay more, or sell for less, than asked.
            rounding = ROUND_FLOOR if side == "buy" else ROUND_CEILING
            price = _to_step(order["price"], rules["tick_size"], rounding)
        if rules["min_notional"] > 0:
            reference = price or order.get("price") or self._last_price(symbol)
            if _decimal(qty) * _decimal(reference) < _decimal(rules["min_notional"]):
                raise OrderRejected(
                    f"{label} rejected before sending: notional {qty:g} x {reference:g} = "
                    f"{qty * reference:g} is below the minimum {rules['min_notional']:g}",
                    "min_notional")
        params = {self.facts["client_id_param"]: cid}
        if kind == "limit":
            params["timeInForce"] = order.get("time_in_force") or "GTC"
        try:
            placed = self._call(f"send {side} {kind} order {cid}", symbol,
                                self._exchange.create_order, symbol, kind, side, qty, price,
                                params, sends=True)
        except OrderRejected as exc:
            if exc.reason != "duplicate_client_id":
                raise
            existing = self.lookup(cid, symbol)
            if existing is None or existing["side"] != side or not math.isclose(
                    existing["qty"], qty, rel_tol=1e-9):
                raise
            return existing  # sent before (its answer was lost): the same order
        return self._report(placed, symbol, cid)

    def protect(self, order: dict) -> list[dict]:
        """Rest a position's stop-loss and/or take-profit (see :mod:`mmats.brokers.base`):
        both as one OCO order list where the venue has one (Binance: a LIMIT_MAKER
        take-profit and a STOP_LOSS_LIMIT stop), one leg as a STOP_LOSS_LIMIT or
        TAKE_PROFIT_LIMIT order. A stop-limit's limit lies ``stop_limit_bps`` past its
        trigger, so a fast market still fills it."""
        legs = {kind: order[kind] for kind in ("stop_loss", "take_profit") if order.get(kind)}
        symbol, side = str(order["symbol"]), str(order["side"]).lower()
        first = next(iter(legs.values()), {}).get("client_order_id")
        _guard_send(self, {**order, "client_order_id": first})
        label = f"{self.exchange_id} {symbol}: protective orders {first}"
        if not legs or side not in ("buy", "sell"):
            raise OrderRejected(f"{label} rejected before sending: needs a side and a "
                                "stop_loss or take_profit", "invalid_order")
        market = self._market(symbol)
        rules = self.instrument(symbol)
        qty = _to_step(order["qty"], rules["lot_size"], ROUND_FLOOR)
        if qty <= 0:
            raise OrderRejected(f"{label} rejected before sending: qty {order['qty']} rounds "
                                f"down to 0 at lot size {rules['lot_size']:g}", "lot_size")
        tick = rules["tick_size"]
        away = -1.0 if side == "sell" else 1.0  # a sell stop's limit lies below its trigger
        prices = {}
        if "stop_loss" in legs:
            stop = _to_step(legs["stop_loss"]["price"], tick, ROUND_HALF_EVEN)
            limit = _to_step(stop * (1 + away * self.facts["stop_limit_bps"] * 1e-4), tick,
                             ROUND_FLOOR if side == "sell" else ROUND_CEILING)
            prices["stop_loss"] = (stop, limit)
        if "take_profit" in legs:
            take = _to_step(legs["take_profit"]["price"], tick, ROUND_HALF_EVEN)
            prices["take_profit"] = (take, take)
        try:
            if len(legs) == 2 and self.facts["oco_method"]:
                placed = self._place_oco(symbol, market, side, qty, legs, prices)
            else:
                placed = []
                for kind, leg in legs.items():
                    trigger, limit = prices[kind]
                    params = {self.facts["client_id_param"]: leg["client_order_id"],
                              "stopPrice": trigger, "timeInForce": "GTC"}
                    venue_type = "STOP_LOSS_LIMIT" if kind == "stop_loss" else \
                        "TAKE_PROFIT_LIMIT"
                    placed.append(self._call(
                        f"send {side} {venue_type} order {leg['client_order_id']}", symbol,
                        self._exchange.create_order, symbol, venue_type, side, qty, limit,
                        params, sends=True))
        except OrderRejected as exc:
            if exc.reason != "duplicate_client_id":
                raise
            found = [self.lookup(leg["client_order_id"], symbol) for leg in legs.values()]
            if any(report is None for report in found):
                raise
            return found  # sent before (its answer was lost): the same orders
        return [self._report(item, symbol) for item in placed]

    def _place_oco(self, symbol, market, side, qty, legs, prices) -> list[dict]:
        """One OCO order list (Binance's ``POST /api/v3/orderList/oco``): for a sell the
        take-profit is the leg above the market, the stop-loss the one below."""
        above, below = ("take_profit", "stop_loss") if side == "sell" else \
            ("stop_loss", "take_profit")
        request = {"symbol": market["id"], "side": side.upper(),
                   "quantity": self._exchange.amount_to_precision(symbol, qty),
                   "listClientOrderId": "ml" + legs["stop_loss"]["client_order_id"][2:]}
        for where, kind in (("above", above), ("below", below)):
            trigger, limit = prices[kind]
            request[f"{where}ClientOrderId"] = legs[kind]["client_order_id"]
            request[f"{where}Price"] = self._exchange.price_to_precision(symbol, limit)
            if kind == "stop_loss":
                request[f"{where}Type"] = "STOP_LOSS_LIMIT"
                request[f"{where}StopPrice"] = self._exchange.price_to_precision(symbol,
                                                                                 trigger)
                request[f"{where}TimeInForce"] = "GTC"
            else:
                request[f"{where}Type"] = "LIMIT_MAKER"
        answer = self._call(f"send {side} OCO order list {request['listClientOrderId']}",
                            symbol, getattr(self._exchange, self.facts["oco_method"]),
                            request, sends=True)
        return [self._exchange.parse_order(item, market)
                for item in answer.get("orderReports") or []]

    def cancel(self, client_order_id: str, symbol: str) -> dict | None:
        """Cancel an open order; its final report, or None if the venue never had it."""
        self._market(symbol)
        try:
            done = self._call(f"cancel order {client_order_id}", symbol,
                              self._exchange.cancel_order, None, symbol,
                              {"clientOrderId": client_order_id}, not_found=True)
        except _NotFound:
            return self.lookup(client_order_id, symbol)  # already final, or never arrived
        report = self._report(done, symbol, client_order_id)
        if report["status"] == "canceled":
            report["reason"] = report["reason"] or "canceled"
        return report

    def lookup(self, client_order_id: str, symbol: str) -> dict | None:
        """The venue's report of the order with this client id, or None."""
        self._market(symbol)
        try:
            found = self._call(f"look up order {client_order_id}", symbol,
                               self._exchange.fetch_order, None, symbol,
                               {"clientOrderId": client_order_id}, not_found=True)
        except _NotFound:
            return None
        return self._report(found, symbol, client_order_id)

    def open_orders(self, symbol: str | None = None) -> list[dict]:
        """Reports of the open orders of ``symbol`` (every symbol when None)."""
        if symbol is not None:
            self._market(symbol)
        found = self._call("list open orders", symbol, self._exchange.fetch_open_orders,
                           symbol)
        return [self._report(item, item.get("symbol") or symbol) for item in found]

    # -- account -------------------------------------------------------------------------

    def balances(self) -> dict[str, float]:
        """Total (free + in orders) of each asset held; zero balances omitted."""
        self._load_markets()
        balance = self._call("fetch balances", None, self._exchange.fetch_balance)
        return {asset: float(total) for asset, total in (balance.get("total") or {}).items()
                if total}

    def positions(self) -> dict[str, float]:
        """Spot positions: the base-asset balance of each configured symbol."""
        if not self.symbols:
            return {}
        held = self.balances()
        found = {}
        for symbol in self.symbols:
            qty = held.get(self._market(symbol)["base"], 0.0)
            if qty:
                found[symbol] = qty
        return found

    # -- internals -----------------------------------------------------------------------

    def _load_markets(self) -> None:
        if not self._markets_loaded:
            self._call("load markets", None, self._exchange.load_markets)
            self._markets_loaded = True

    def _market(self, symbol: str) -> dict:
        self._load_markets()
        market = self._exchange.markets.get(symbol)
        if market is None:
            close = difflib.get_close_matches(str(symbol), list(self._exchange.markets), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ConfigError(f"{self.exchange_id} has no market {symbol!r}{hint}")
        return market

    def _step(self, market: dict, what: str) -> float:
        precision = (market.get("precision") or {}).get(what)
        if precision is None:
            return 0.0
        if self._exchange.precisionMode == ccxt.TICK_SIZE:
            return float(precision)
        if self._exchange.precisionMode == ccxt.DECIMAL_PLACES:
            return float(Decimal(1).scaleb(-int(precision)))
        return 0.0  # significant digits: no fixed step

    def _candles_per_request(self) -> int:
        configured = self.facts["candles_per_request"]
        if configured:
            return int(configured)
        features = (getattr(self._exchange, "features", None) or {}).get("spot") or {}
        return int((features.get("fetchOHLCV") or {}).get("limit") or 500)

    def _last_price(self, symbol: str) -> float:
        ticker = self._call("fetch the last price", symbol, self._exchange.fetch_ticker, symbol)
        price = ticker.get("last") or ticker.get("close")
        if not price:
            raise VenueUnavailable(f"{self.exchange_id} {symbol}: no last price to check the "
                                   "minimum notional of a market order; pass the order's "
                                   "expected price as 'price'")
        return float(price)

    def _report(self, placed: dict, symbol: str, client_order_id: str | None = None) -> dict:
        filled = float(placed.get("filled") or 0.0)
        average = placed.get("average")
        if average is None and filled and placed.get("cost"):
            average = float(placed["cost"]) / filled
        status = _STATUS.get(str(placed.get("status")).lower(), "open")
        if status == "open" and filled > 0:
            status = "partially_filled"
        fees = placed.get("fees") or ([placed["fee"]] if placed.get("fee") else [])
        if filled > 0 and not fees and not self.facts["order_lookup_has_fees"]:
            trades = self._call(f"fetch the fills of order {placed.get('id')}", symbol,
                                self._exchange.fetch_order_trades, placed.get("id"), symbol)
            fees = [fee for trade in trades for fee in (trade.get("fees") or
                                                        [trade.get("fee")]) if fee]
        market = self._market(symbol)
        fee, fee_base, other = _quote_fee(fees, market, average)
        report = {
            "client_order_id": placed.get("clientOrderId") or client_order_id,
            "venue_order_id": str(placed.get("id")), "symbol": symbol,
            "side": placed.get("side"), "qty": float(placed.get("amount") or 0.0),
            "filled_qty": filled, "avg_price": None if average is None else float(average),
            "fee": fee, "fee_base": fee_base, "status": status,
            "reason": "canceled" if status == "canceled" else None,
        }
        if other:
            report["other_fees"] = other  # fees in a third currency (e.g. BNB), not converted
        # the venue's own order type: ccxt unifies STOP_LOSS_LIMIT, TAKE_PROFIT_LIMIT and
        # LIMIT_MAKER to "limit", which would hide a protective leg
        venue_type = (placed.get("info") or {}).get("type") or placed.get("type") or ""
        kind = _PROTECTIVE_TYPES.get(str(venue_type).lower())
        if kind is not None:  # a protective leg: which one, and its trigger
            report["type"] = kind
            report["stop_price"] = float(placed.get("triggerPrice") or placed.get("price")
                                         or 0.0)
        return report

    def _call(self, what: str, symbol: str | None, method, *args, sends: bool = False,
              not_found: bool = False, **kwargs):
        """Call ccxt under the retry policy; its errors mapped by :func:`classify_error`."""
        label = f"{self.exchange_id}{'' if symbol is None else ' ' + symbol}: {what}"

        def request():
            self._exchange.last_response_headers = None
            return method(*args, **kwargs)

        def classify(exc: Exception) -> Verdict:
            if not isinstance(exc, ccxt.BaseError):
                return give_up(exc)
            return classify_error(exc, label, self._text(exc), sends=sends,
                                  not_found=not_found, retry_after=self._retry_after(exc),
                                  duplicate_fragments=self.facts["duplicate_client_id"])

        return self.retry.call(request, classify)

    def _retry_after(self, exc) -> float | None:
        """The ``Retry-After`` of the failed response, in seconds (ccxt drops it)."""
        response = _http_response(exc)
        headers = response.headers if response is not None else (
            self._exchange.last_response_headers or {})
        value = headers.get("Retry-After") if hasattr(headers, "get") else None
        return retry_after_s(value, self._clock())

    def _text(self, exc) -> str:
        """The ccxt message without secrets or signatures, shortened."""
        text = self._hide(" ".join(str(exc).split()))
        return text if len(text) <= _MESSAGE_CHARS else text[:_MESSAGE_CHARS - 3] + "..."


class _NotFound(BrokerError):
    """The venue does not know the order (internal: lookup and cancel answer None)."""


def classify_error(exc: ccxt.BaseError, label: str, detail: str, *, sends: bool = False,
                   not_found: bool = False, retry_after: float | None = None,
                   duplicate_fragments=()) -> Verdict:
    """What the retry policy does about a ccxt error (see :mod:`mmats.brokers.retry`).

    ``label`` names the exchange, symbol and request; ``detail`` is the error's text with
    no secret in it; ``sends`` marks a request that places an order (never re-sent once it
    may have left); ``not_found`` makes an unknown order the adapter's internal answer
    instead of an error; ``retry_after`` is the response's ``Retry-After`` in seconds.

    >>> classify_error(ccxt.RequestTimeout("slow"), "binance: fetch balances", "slow").action
    'retry'
    >>> classify_error(ccxt.RequestTimeout("slow"), "binance: send", "slow", sends=True).action
    'give_up'
    """
    status = _http_status(exc)
    if isinstance(exc, ccxt.OrderNotFound):
        return give_up(_NotFound(label) if not_found else
                       BrokerError(f"{label}: unknown order: {detail}"))
    refused = AuthenticationFailed(f"{label}: credentials refused ({detail}); check the API "
                                   "key, its permissions and IP list")
    if isinstance(exc, ccxt.DDoSProtection) and status in (401, 403):
        # Binance answers a revoked key with -2015, which ccxt reports as a rate limit once
        # the key has worked before.
        return give_up(refused)
    if isinstance(exc, ccxt.DDoSProtection):  # 429, 418: the venue did not act
        asked = "no Retry-After" if retry_after is None else f"Retry-After {retry_after:g} s"
        return rate_limited(lambda tries, wait: RateLimited(
            f"{label}: rate limited after {tries} attempt(s) (HTTP {status or '?'}, "
            f"{asked}): {detail}", retry_after=wait), retry_after)
    if isinstance(exc, ccxt.OperationFailed):  # timeouts, network errors, 5xx
        if sends and not _never_sent(exc):
            return give_up(OutcomeUnknown(
                f"{label}: the order may have reached the venue but the answer was lost "
                f"({type(exc).__name__}: {detail}); look it up by client order id before "
                "sending anything else"))
        kind = type(exc).__name__
        return retry(lambda tries: VenueUnavailable(
            f"{label}: venue unavailable after {tries} attempt(s) ({kind}: {detail})"))
    if isinstance(exc, ccxt.AuthenticationError):  # includes PermissionDenied
        return give_up(refused)
    if isinstance(exc, ccxt.InsufficientFunds):
        return give_up(InsufficientFunds(f"{label}: insufficient funds: {detail}"))
    if isinstance(exc, (ccxt.InvalidOrder, ccxt.BadRequest)):
        reason = _reject_reason(exc, detail, duplicate_fragments)
        if sends:
            return give_up(OrderRejected(f"{label}: rejected by the venue ({reason}): "
                                         f"{detail}", reason))
        return give_up(BrokerError(f"{label}: the venue refused the request: {detail}"))
    if isinstance(exc, ccxt.ExchangeError) and sends:
        return give_up(OrderRejected(f"{label}: rejected by the venue: {detail}"))
    if isinstance(exc, ccxt.ExchangeError):
        return give_up(VenueUnavailable(f"{label}: venue error: {detail}"))
    return give_up(BrokerError(f"{label}: {type(exc).__name__}: {detail}"))


def _check_order(order: dict, max_chars: int, venue: str):
    missing = [k for k in ("client_order_id", "symbol", "side", "qty", "type") if k not in order]
    if missing:
        raise OrderRejected(f"{venue}: order {order.get('client_order_id')!r} lacks "
                            f"{', '.join(missing)}", "invalid_order")
    cid, symbol = str(order["client_order_id"]), str(order["symbol"])
    side, kind = str(order["side"]).lower(), str(order["type"]).lower()
    label = f"{venue} {symbol}: order {cid}"
    problems = []
    if not _CLIENT_ID.match(cid) or len(cid) > max_chars:
        problems.append(f"client order id must be 1-{max_chars} characters of "
                        "[A-Za-z0-9_-]")
    if side not in ("buy", "sell"):
        problems.append(f"side {order['side']!r} is not buy or sell")
    if kind not in ("market", "limit"):
        problems.append(f"type {order['type']!r} is not market or limit")
    qty = order["qty"]
    if not _is_number(qty) or not math.isfinite(qty) or qty <= 0:
        problems.append(f"qty {qty!r} is not a positive number")
    price = order.get("price")
    if kind == "limit" and (not _is_number(price) or not math.isfinite(price) or price <= 0):
        problems.append(f"a limit order needs a positive price, got {price!r}")
    if problems:
        raise OrderRejected(f"{label} rejected before sending: {'; '.join(problems)}",
                            "invalid_order")
    return cid, symbol, side, kind


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _hider(*secrets):
    """A function masking ``secrets`` and request signatures in a text (a closure, so the
    secrets show in no repr or ``vars()``)."""
    secrets = tuple(s for s in secrets if s)

    def hide(text: str) -> str:
        for secret in secrets:
            text = text.replace(secret, "***")
        return _SIGNATURE.sub(r"\1***", text)

    return hide


def _decimal(value: float) -> Decimal:
    return Decimal(repr(float(value)))


def _to_step(value: float, step: float, rounding) -> float:
    """``value`` rounded to a whole number of ``step`` (exact, in decimal). A value within
    a billionth of a step of a whole number is float noise (0.3 computed as
    0.29999999999999993) and is taken as that number, not rounded a step away."""
    if not step:
        return float(value)
    step_decimal = _decimal(step)
    ratio = _decimal(value) / step_decimal
    nearest = ratio.to_integral_value(ROUND_HALF_EVEN)
    if abs(ratio - nearest) <= Decimal("1e-9") * max(Decimal(1), abs(nearest)):
        return float(nearest * step_decimal)
    return float(ratio.to_integral_value(rounding) * step_decimal)


def _quote_fee(fees, market: dict, average) -> tuple[float, float, dict]:
    """Fees in the quote currency (base-currency fees converted at the average price), the
    part taken in the base currency (withheld from the quantity received, not paid in
    cash), and any fees in other currencies."""
    total, base, other = 0.0, 0.0, {}
    for fee in fees:
        cost = float(fee.get("cost") or 0.0)
        currency = fee.get("currency")
        if not cost:
            continue
        if currency in (None, market["quote"]):
            total += cost
        elif currency == market["base"] and average:
            total += cost * float(average)
            base += cost
        else:
            other[currency] = other.get(currency, 0.0) + cost
    return total, base, other


def _reject_reason(exc, detail: str, duplicate_fragments) -> str:
    if any(fragment in detail for fragment in duplicate_fragments) or isinstance(
            exc, ccxt.DuplicateOrderId):
        return "duplicate_client_id"
    if "LOT_SIZE" in detail:
        return "lot_size"
    if "NOTIONAL" in detail:
        return "min_notional"
    if "PRICE_FILTER" in detail:
        return "tick_size"
    if isinstance(exc, ccxt.BadSymbol):
        return "unknown_symbol"
    return "rejected"


def _chain(exc):
    """The exception, its causes and contexts, and what they wrap, each once."""
    seen, todo = set(), [exc]
    while todo:
        item = todo.pop()
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        yield item
        todo += [item.__cause__, item.__context__, getattr(item, "reason", None)]
        todo += [arg for arg in getattr(item, "args", ()) if isinstance(arg, BaseException)]


def _http_response(exc):
    for item in _chain(exc):
        response = getattr(item, "response", None)
        if getattr(response, "status_code", None) is not None:
            return response
    return None


def _http_status(exc) -> int | None:
    response = _http_response(exc)
    return None if response is None else int(response.status_code)


def _never_sent(exc) -> bool:
    """True when the connection was never opened, so the request cannot have arrived."""
    return _http_response(exc) is None and any(isinstance(item, _NOT_SENT)
                                               for item in _chain(exc))


def _rebase(urls, base_url: str):
    """Every URL in ``urls`` (a string or nested dicts) with the scheme and host of
    ``base_url``, its path appended to the base URL's own path."""
    if isinstance(urls, dict):
        return {name: _rebase(value, base_url) for name, value in urls.items()}
    if not isinstance(urls, str) or "://" not in urls:
        return urls
    base = urlsplit(base_url)
    if not base.scheme or not base.netloc:
        raise ConfigError(f"base_url {base_url!r} needs a scheme and host, "
                          "e.g. http://127.0.0.1:8080")
    original = urlsplit(urls)
    return urlunsplit((base.scheme, base.netloc, base.path.rstrip("/") + original.path,
                       original.query, ""))


def _merge(target: dict, extra: dict) -> None:
    """Merge ``extra`` into ``target``, nested dicts key by key."""
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = value


def _check_bases(exchange_id: str, symbols) -> None:
    bases: dict[str, str] = {}
    for symbol in symbols:
        base = str(symbol).split("/")[0]
        if base in bases:
            raise ConfigError(f"{exchange_id}: symbols {bases[base]} and {symbol} share the "
                              f"base asset {base}; a spot account cannot tell their positions "
                              "apart, so trade only one of them")
        bases[base] = symbol


# --- the real-money guard's facts (mmats.brokers.connect holds the rule) -----------------

_SANDBOX_HOSTS: dict[str, frozenset] = {}


def sandbox_hosts(exchange_id: str) -> frozenset:
    """Hosts of the test network ccxt itself names for ``exchange_id`` (the entries of its
    ``urls['test']``), less any host of its production ``urls['api']``. Builds no
    connection.

    >>> sorted(sandbox_hosts("binance"))
    ['testnet.binance.vision', 'testnet.binancefuture.com']
    """
    exchange_id = str(exchange_id).strip().lower()
    if exchange_id not in _SANDBOX_HOSTS:
        exchange = _bare_exchange(exchange_id)
        test = {urlsplit(url).hostname for url in _flat_urls(exchange.urls.get("test"))}
        real = {urlsplit(url).hostname for url in _flat_urls(exchange.urls.get("api"))}
        _SANDBOX_HOSTS[exchange_id] = frozenset(h.lower() for h in test - real if h)
    return _SANDBOX_HOSTS[exchange_id]


def api_urls(exchange_id: str, *, sandbox: bool = False) -> tuple[str, ...]:
    """The URLs ccxt calls for ``exchange_id``: ``urls['api']``, or ``urls['test']`` for
    its sandbox (:class:`ConfigError` if it has none)."""
    exchange = _bare_exchange(str(exchange_id).strip().lower())
    urls = _flat_urls(exchange.urls.get("test" if sandbox else "api"))
    if sandbox and not urls:
        raise ConfigError(f"{exchange_id} has no sandbox (test network) in ccxt; drop "
                          "sandbox or use base_url")
    return urls


def _bare_exchange(exchange_id: str):
    if exchange_id not in ccxt.exchanges:
        raise ConfigError(f"unknown exchange {exchange_id!r}: not one of ccxt's exchange ids")
    return getattr(ccxt, exchange_id)()


def _flat_urls(urls) -> tuple[str, ...]:
    if isinstance(urls, dict):
        return tuple(url for value in urls.values() for url in _flat_urls(value))
    return (urls,) if isinstance(urls, str) and "://" in urls else ()


def _guard_send(broker, order: dict) -> None:
    """Refuse an order for a real endpoint this adapter was not allowed (first line of
    ``send``; see :func:`mmats.brokers.connect.guard_order`)."""
    from mmats.brokers.connect import guard_order

    guard_order(broker, order, _flat_urls(broker._exchange.urls.get("api")),
                sandbox_hosts(broker.exchange_id), broker.exchange_id)
