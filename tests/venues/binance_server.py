"""A local HTTP server speaking enough of the Binance spot REST dialect for the real ccxt
client: markets, klines (with the bar still forming, as Binance sends it), account, orders,
trades, and the faults a venue produces (429/418 with Retry-After, 500 JSON, 503 HTML, a
slow answer, a dropped connection, an order accepted whose answer is lost).

    server = BinanceServer(api_key="k", secret="s").start()
    server.add_market("BTC", "USDT", step_size="0.001", tick_size="0.01", min_notional="10",
                      price="20000")
    server.set_balance("USDT", "1000")
    server.add_klines("BTCUSDT", "1m", first_open_ms=...)
    server.load_klines("ETHBTC", "5m", candles)   # or serve a candle-schema frame
    server.set_now(close_ms)   # the clock; also POST /_control?now_ms=..&symbol=..&price=..
    server.fail("429", times=2, retry_after=3)
    ...
    server.stop()

Quantities are Decimals throughout, so fills and balances are exact. One deliberate
difference from Binance: a client order id may never be reused (Binance only refuses one
that an OPEN order carries), which makes any blind re-send visible in the tests.
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import hmac
import json
import math
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

from .binance_depth import DepthBook

_INTERVAL_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_PRIVATE = {"/api/v3/order", "/api/v3/openOrders", "/api/v3/account", "/api/v3/myTrades",
            "/api/v3/orderList/oco"}
_CONDITIONAL = ("STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT", "LIMIT_MAKER")
FAULTS = ("429", "418", "500", "503", "delay", "drop", "lost_response", "echo_headers")


class ApiError(Exception):
    """An error answer: HTTP status, Binance code and message."""

    def __init__(self, status: int, code: int, msg: str):
        super().__init__(msg)
        self.status, self.code, self.msg = status, code, msg


@dataclass
class Market:
    symbol: str           # venue id, e.g. BTCUSDT
    base: str
    quote: str
    step_size: Decimal
    tick_size: Decimal
    min_notional: Decimal
    min_qty: Decimal
    max_qty: Decimal
    price: Decimal        # where market orders fill
    notional_filter: str  # "NOTIONAL" (current Binance) or "MIN_NOTIONAL" (older)


@dataclass
class Order:
    order_id: int
    client_order_id: str
    symbol: str
    side: str             # BUY / SELL
    type: str             # MARKET / LIMIT / STOP_LOSS_LIMIT / TAKE_PROFIT_LIMIT / LIMIT_MAKER
    qty: Decimal
    price: Decimal        # 0 for market orders
    time_in_force: str | None
    time_ms: int
    status: str = "NEW"
    executed_qty: Decimal = Decimal(0)
    quote_qty: Decimal = Decimal(0)
    fills: list = field(default_factory=list)
    stop_price: Decimal = Decimal(0)  # the trigger of a STOP_LOSS_LIMIT / TAKE_PROFIT_LIMIT
    list_id: int = -1                 # the OCO order list it belongs to
    triggered: bool = False           # a stop-limit whose trigger was reached: a limit now

    def to_json(self, with_fills: bool = False) -> dict:
        data = {
            "symbol": self.symbol, "orderId": self.order_id, "orderListId": self.list_id,
            "clientOrderId": self.client_order_id, "price": _s(self.price),
            "origQty": _s(self.qty), "executedQty": _s(self.executed_qty),
            "cummulativeQuoteQty": _s(self.quote_qty), "status": self.status,
            "timeInForce": self.time_in_force or "GTC", "type": self.type, "side": self.side,
            "stopPrice": _s(self.stop_price), "icebergQty": "0.00000000", "time": self.time_ms,
            "updateTime": self.time_ms, "isWorking": True, "workingTime": self.time_ms,
            "origQuoteOrderQty": "0.00000000", "selfTradePreventionMode": "NONE",
        }
        if with_fills:
            data["transactTime"] = self.time_ms
            data["fills"] = [{"price": _s(f["price"]), "qty": _s(f["qty"]),
                              "commission": _s(f["commission"]),
                              "commissionAsset": f["commission_asset"], "tradeId": f["id"]}
                             for f in self.fills]
        return data


@dataclass
class Klines:
    """Bars from ``first_open_ms`` up to the server's now, minus ``missing`` open times;
    with ``table`` (open ms, open, high, low, close, volume rows), exactly those bars."""

    step_ms: int
    first_open_ms: int
    missing: frozenset = frozenset()
    table: list | None = None


@dataclass
class Fault:
    kind: str
    times: int
    path: str | None
    retry_after: float | str | None
    delay_s: float
    after: int        # matching requests let through before the fault starts


def kline_values(open_ms: int, step_ms: int, fraction: float = 1.0) -> tuple[float, ...]:
    """The deterministic OHLCV of the bar opened at ``open_ms``; ``fraction`` < 1 gives the
    bar as it looks while still forming (different close, high, low and volume)."""
    i = open_ms // step_ms
    base = 100.0 + 10.0 * math.sin(i / 50.0) + (i % 7) * 0.1
    close = base + ((i * 7919) % 11 - 5) * 0.01 * fraction
    high = max(base, close) + 0.05 * fraction
    low = min(base, close) - 0.05 * fraction
    volume = (1.0 + (i % 13)) * fraction
    return (round(base, 8), round(high, 8), round(low, 8), round(close, 8), round(volume, 8))


class BinanceServer(DepthBook):
    """In-memory Binance spot look-alike on 127.0.0.1 (port chosen by the OS)."""

    def __init__(self, api_key: str = "test-key", secret: str = "test-secret", *,
                 now_ms=None, commission_rate: str = "0.001"):
        self.api_key, self.secret = api_key, secret
        self.now_ms = now_ms              # None: the wall clock; an int pins the server's now
        self.commission_rate = Decimal(commission_rate)
        self.markets: dict[str, Market] = {}
        self.klines: dict[tuple[str, str], Klines] = {}
        self.balances: dict[str, list[Decimal]] = {}   # asset -> [free, locked]
        self.orders: list[Order] = []     # every accepted order, in order: the order log
        self.trades: list[dict] = []
        self.requests: list[tuple[str, str]] = []      # (method, path) of every request
        self.handler_seconds = 0.0        # time spent answering (faults' delays excluded)
        self.lock = threading.RLock()
        self._faults: deque[Fault] = deque()
        self._stopping = threading.Event()
        self._connections: set = set()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> BinanceServer:
        handler = type("Handler", (_Handler,), {"venue": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,),
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and close every open connection (a client's kept-alive
        connection then fails like a venue that went away)."""
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join()
        with self.lock:
            for connection in list(self._connections):
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def now(self) -> int:
        return int(time.time() * 1000) if self.now_ms is None else int(self.now_ms)

    # -- set-up by the tests -------------------------------------------------------------

    def add_market(self, base: str, quote: str, *, step_size="0.001", tick_size="0.01",
                   min_notional="10", min_qty=None, max_qty="9000", price="20000",
                   notional_filter="NOTIONAL") -> Market:
        market = Market(base + quote, base, quote, Decimal(step_size), Decimal(tick_size),
                        Decimal(min_notional), Decimal(min_qty or step_size), Decimal(max_qty),
                        Decimal(price), notional_filter)
        with self.lock:
            self.markets[market.symbol] = market
            for asset in (base, quote):
                self.balances.setdefault(asset, [Decimal(0), Decimal(0)])
        return market

    def set_price(self, symbol: str, price) -> None:
        """Move the market; resting stop-loss / take-profit orders it reaches trigger."""
        with self.lock:
            self.markets[symbol].price = Decimal(str(price))
            self._trigger(symbol)

    def set_balance(self, asset: str, free) -> None:
        with self.lock:
            self.balances.setdefault(asset, [Decimal(0), Decimal(0)])[0] = Decimal(str(free))

    def balance(self, asset: str) -> tuple[Decimal, Decimal]:
        with self.lock:
            free, locked = self.balances.get(asset, (Decimal(0), Decimal(0)))
            return free, locked

    def add_klines(self, symbol: str, interval: str, *, first_open_ms: int, missing=()) -> None:
        step = _interval_ms(interval)
        if first_open_ms % step:
            raise ValueError(f"first_open_ms {first_open_ms} is not on the {interval} grid")
        with self.lock:
            self.klines[(symbol, interval)] = Klines(step, first_open_ms, frozenset(missing))

    def load_klines(self, symbol: str, interval: str, frame) -> None:
        """Serve a candle-schema frame (``ts`` = bar open, UTC) as ``symbol``'s klines: the
        bars opened by the server's now, the newest one still forming while now is before
        its close (shown as its open price, no volume: nothing of its future leaks)."""
        step = _interval_ms(interval)
        ts_ms = [int(stamp.value // 1_000_000) for stamp in frame["ts"]]
        table = [(t, *map(float, row)) for t, row in zip(
            ts_ms, frame[["open", "high", "low", "close", "volume"]].itertuples(index=False),
            strict=True)]
        if any(t % step for t in ts_ms):
            raise ValueError(f"{symbol} {interval}: bar open times are not on the grid")
        with self.lock:
            self.klines[(symbol, interval)] = Klines(step, ts_ms[0] if ts_ms else 0,
                                                     table=table)

    def set_now(self, now_ms) -> None:
        """Pin the server's clock (None: the wall clock again)."""
        with self.lock:
            self.now_ms = None if now_ms is None else int(now_ms)

    def fail(self, kind: str, times: int = 1, *, path: str | None = None,
             retry_after: float | str | None = None, delay_s: float = 0.0,
             after: int = 0) -> None:
        """Answer ``times`` requests (to ``path`` if given) with a fault, once ``after``
        of them have been answered normally.

        ``kind``: ``"429"``/``"418"`` (with ``Retry-After: retry_after`` when given),
        ``"500"`` (JSON -1001), ``"503"`` (HTML), ``"delay"`` (act, then answer after
        ``delay_s``), ``"drop"`` (close without acting), ``"lost_response"`` (act, then
        close without answering), ``"echo_headers"`` (a 502 page showing the request
        headers, as a misconfigured gateway does).
        """
        if kind not in FAULTS:
            raise ValueError(f"unknown fault {kind!r}; one of {FAULTS}")
        with self.lock:
            self._faults.append(Fault(kind, times, path, retry_after, delay_s, after))

    def clear_faults(self) -> None:
        with self.lock:
            self._faults.clear()

    def fill(self, client_order_id: str, qty=None) -> Order:
        """Fill a resting limit order (all of it, or ``qty``) at its price, as a maker."""
        with self.lock:
            order = self._find(None, client_order_id)
            if order is None or order.status not in ("NEW", "PARTIALLY_FILLED"):
                raise ValueError(f"no open order {client_order_id!r}")
            remaining = order.qty - order.executed_qty
            self._execute(order, remaining if qty is None else Decimal(str(qty)), order.price,
                          locked=True)
            return order

    def count(self, method: str, path: str) -> int:
        with self.lock:
            return sum(1 for item in self.requests if item == (method, path))

    # -- request handling ----------------------------------------------------------------

    def take_fault(self, path: str) -> Fault | None:
        with self.lock:
            for fault in self._faults:
                if fault.path is None or fault.path == path:
                    if fault.after > 0:
                        fault.after -= 1
                        return None
                    fault.times -= 1
                    if fault.times <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def dispatch(self, method: str, path: str, params: dict) -> object:
        with self.lock:
            route = _ROUTES.get((method, path))
            if route is None:
                raise ApiError(404, -1000, f"no route {method} {path}")
            return route(self, params)

    def check_signature(self, headers, query: str, body: str) -> None:
        if headers.get("X-MBX-APIKEY") != self.api_key:
            raise ApiError(401, -2015, "Invalid API-key, IP, or permissions for action.")
        payload, signature = _split_signature(query, body)
        expected = hmac.new(self.secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
        if signature is None or not hmac.compare_digest(signature, expected):
            raise ApiError(401, -1022, "Signature for this request is not valid.")
        params = dict(parse_qsl(payload))
        window = int(params.get("recvWindow", 5000))
        if abs(int(time.time() * 1000) - int(params.get("timestamp", 0))) > window:
            raise ApiError(400, -1021, "Timestamp for this request is outside of the recvWindow.")

    # -- endpoints -----------------------------------------------------------------------

    def _time(self, params):
        return {"serverTime": self.now()}

    def _ping(self, params):
        return {}

    def _exchange_info(self, params):
        return {"timezone": "UTC", "serverTime": self.now(), "rateLimits": [],
                "exchangeFilters": [], "symbols": [_market_json(m) for m in self.markets.values()]}

    def _ticker(self, params):
        market = self._market(params)
        price = _s(market.price)
        return {"symbol": market.symbol, "lastPrice": price, "bidPrice": price,
                "askPrice": price, "openPrice": price, "highPrice": price, "lowPrice": price,
                "volume": "0", "quoteVolume": "0", "openTime": self.now() - 86_400_000,
                "closeTime": self.now(), "count": 0}

    def _klines(self, params):
        market = self._market(params)
        interval = params.get("interval", "")
        series = self.klines.get((market.symbol, interval))
        if series is None:
            raise ApiError(400, -1120, "Invalid interval.")
        limit = min(int(params.get("limit", 500)), 1000)
        step, now = series.step_ms, self.now()
        last_open = min(now, int(params.get("endTime", now)))
        if series.table is not None:
            return self._table_klines(series, params, last_open, limit)
        if "startTime" in params:
            start = max(int(params["startTime"]), series.first_open_ms)
            open_ms = -(-start // step) * step
        else:  # the latest `limit` bars
            open_ms = max(series.first_open_ms, (last_open // step - limit + 1) * step)
        rows = []
        while open_ms <= last_open and len(rows) < limit:
            if open_ms not in series.missing:
                fraction = min(1.0, (now - open_ms) / step)  # < 1: the bar still forming
                o, h, lo, c, v = kline_values(open_ms, step, fraction)
                rows.append([open_ms, f"{o:.8f}", f"{h:.8f}", f"{lo:.8f}", f"{c:.8f}",
                             f"{v:.8f}", open_ms + step - 1, f"{v * c:.8f}", 10,
                             f"{v / 2:.8f}", f"{v * c / 2:.8f}", "0"])
            open_ms += step
        return rows

    def _table_klines(self, series: Klines, params, last_open: int, limit: int) -> list:
        opens = [row[0] for row in series.table]
        if "startTime" in params:
            first = bisect.bisect_left(opens, int(params["startTime"]))
            rows = series.table[first:bisect.bisect_right(opens, last_open)][:limit]
        else:
            rows = series.table[:bisect.bisect_right(opens, last_open)][-limit:]
        answer = []
        for open_ms, o, h, lo, c, v in rows:
            if open_ms + series.step_ms > self.now():  # still forming: its open only
                h = lo = c = o
                v = 0.0
            answer.append([open_ms, f"{o:.8f}", f"{h:.8f}", f"{lo:.8f}", f"{c:.8f}",
                           f"{v:.8f}", open_ms + series.step_ms - 1, f"{v * c:.8f}", 10,
                           f"{v / 2:.8f}", f"{v * c / 2:.8f}", "0"])
        return answer

    def _control(self, params):
        """Not Binance: the tests' clock and price, for a runner in another process."""
        if "now_ms" in params:
            self.now_ms = int(params["now_ms"])
        if "symbol" in params:
            self.markets[params["symbol"]].price = Decimal(params["price"])
            self._trigger(params["symbol"])
        return {"now_ms": self.now_ms}

    def _account(self, params):
        balances = [{"asset": asset, "free": _s(free), "locked": _s(locked)}
                    for asset, (free, locked) in sorted(self.balances.items())]
        return {"makerCommission": 10, "takerCommission": 10, "buyerCommission": 0,
                "sellerCommission": 0, "canTrade": True, "canWithdraw": True,
                "canDeposit": True, "brokered": False, "requireSelfTradePrevention": False,
                "updateTime": self.now(), "accountType": "SPOT", "balances": balances,
                "permissions": ["SPOT"], "uid": 1}

    def _new_order(self, params):
        market = self._market(params)
        side, kind = params.get("side", ""), params.get("type", "")
        if side not in ("BUY", "SELL"):
            raise ApiError(400, -1117, "Invalid side.")
        if kind in ("STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"):
            return self._new_list(params, market, [dict(
                type=kind, price=params.get("price"), stop=params.get("stopPrice"),
                client_id=params.get("newClientOrderId"), tif=params.get("timeInForce"))],
                list_id=-1)[0].to_json(with_fills=True)
        if kind not in ("MARKET", "LIMIT"):
            raise ApiError(400, -1116, "Invalid orderType.")
        if "quantity" not in params:
            raise ApiError(400, -1102, "Mandatory parameter 'quantity' was not sent, was "
                                       "empty/null, or malformed.")
        qty = Decimal(params["quantity"])
        price = Decimal(0)
        if kind == "LIMIT":
            if "price" not in params or "timeInForce" not in params:
                raise ApiError(400, -1102, "Mandatory parameter 'price' or 'timeInForce' "
                                           "was not sent, was empty/null, or malformed.")
            price = Decimal(params["price"])
            if price <= 0 or price % market.tick_size:
                raise ApiError(400, -1013, "Filter failure: PRICE_FILTER")
        client_id = params.get("newClientOrderId") or f"srv-{len(self.orders) + 1}"
        if any(o.client_order_id == client_id for o in self.orders):
            raise ApiError(400, -2010, "Duplicate order sent.")
        if qty < market.min_qty or qty > market.max_qty or (qty - market.min_qty) % market.step_size:
            raise ApiError(400, -1013, "Filter failure: LOT_SIZE")
        reference = price if kind == "LIMIT" else market.price
        if qty * reference < market.min_notional:
            raise ApiError(400, -1013, f"Filter failure: {market.notional_filter}")
        crosses = kind == "MARKET" or (price >= market.price if side == "BUY"
                                       else price <= market.price)
        needed_asset = market.quote if side == "BUY" else market.base
        needed = qty * reference if side == "BUY" else qty
        if self.balances[needed_asset][0] < needed:
            raise ApiError(400, -2010, "Account has insufficient balance for requested action.")
        order = Order(len(self.orders) + 1, client_id, market.symbol, side, kind, qty, price,
                      params.get("timeInForce"), self.now())
        self.orders.append(order)
        if crosses:
            self._execute(order, qty, market.price, locked=False)
        else:
            self.balances[needed_asset][0] -= needed
            self.balances[needed_asset][1] += needed
        return order.to_json(with_fills=True)

    def _new_oco(self, params):
        """POST /api/v3/orderList/oco: two legs, one cancels the other; the quantity is
        locked once for both."""
        market = self._market(params)
        legs = [dict(type=params.get(f"{where}Type", ""), price=params.get(f"{where}Price"),
                     stop=params.get(f"{where}StopPrice"),
                     client_id=params.get(f"{where}ClientOrderId"),
                     tif=params.get(f"{where}TimeInForce")) for where in ("above", "below")]
        list_id = 1 + max([o.list_id for o in self.orders] + [0])
        orders = self._new_list(params, market, legs, list_id)
        return {"orderListId": list_id, "contingencyType": "OCO",
                "listStatusType": "EXEC_STARTED", "listOrderStatus": "EXECUTING",
                "listClientOrderId": params.get("listClientOrderId") or f"list-{list_id}",
                "transactionTime": self.now(), "symbol": market.symbol,
                "orders": [{"symbol": o.symbol, "orderId": o.order_id,
                            "clientOrderId": o.client_order_id} for o in orders],
                "orderReports": [o.to_json() for o in orders]}

    def _new_list(self, params, market, legs, list_id) -> list:
        """Check and rest conditional legs (a stop-limit alone, or an OCO pair)."""
        side = params.get("side", "")
        if side not in ("BUY", "SELL"):
            raise ApiError(400, -1117, "Invalid side.")
        if "quantity" not in params:
            raise ApiError(400, -1102, "Mandatory parameter 'quantity' was not sent, was "
                                       "empty/null, or malformed.")
        qty = Decimal(params["quantity"])
        if qty < market.min_qty or qty > market.max_qty or (qty - market.min_qty) % market.step_size:
            raise ApiError(400, -1013, "Filter failure: LOT_SIZE")
        checked = []
        for leg in legs:
            if leg["type"] not in _CONDITIONAL:
                raise ApiError(400, -1116, "Invalid orderType.")
            if leg["price"] is None or (leg["type"] != "LIMIT_MAKER" and (
                    leg["stop"] is None or leg["tif"] is None)):
                raise ApiError(400, -1102, "Mandatory parameter 'price', 'stopPrice' or "
                                           "'timeInForce' was not sent, was empty/null, or "
                                           "malformed.")
            price = Decimal(leg["price"])
            stop = Decimal(leg["stop"] or 0)
            for value in (price, stop) if leg["type"] != "LIMIT_MAKER" else (price,):
                if value <= 0 or value % market.tick_size:
                    raise ApiError(400, -1013, "Filter failure: PRICE_FILTER")
            if qty * price < market.min_notional:
                raise ApiError(400, -1013, f"Filter failure: {market.notional_filter}")
            level = price if leg["type"] == "LIMIT_MAKER" else stop
            if self._reached(leg["type"], side, level, market.price):
                raise ApiError(400, -2010, "Order would immediately trigger.")
            client_id = leg["client_id"] or f"srv-{len(self.orders) + len(checked) + 1}"
            if any(o.client_order_id == client_id for o in self.orders):
                raise ApiError(400, -2010, "Duplicate order sent.")
            checked.append((leg, price, stop, client_id))
        asset = market.quote if side == "BUY" else market.base
        needed = qty * max(c[1] for c in checked) if side == "BUY" else qty
        if self.balances[asset][0] < needed:
            raise ApiError(400, -2010, "Account has insufficient balance for requested action.")
        self.balances[asset][0] -= needed
        self.balances[asset][1] += needed
        orders = []
        for leg, price, stop, client_id in checked:
            order = Order(len(self.orders) + 1, client_id, market.symbol, side, leg["type"],
                          qty, price, leg["tif"], self.now(), stop_price=stop, list_id=list_id)
            self.orders.append(order)
            orders.append(order)
        return orders

    @staticmethod
    def _reached(kind: str, side: str, level: Decimal, price: Decimal) -> bool:
        """Whether the market price sets off a conditional order at ``level``: a sell's
        stop-loss below the market, its take-profit above (a buy's the other way)."""
        falls_to = (kind == "STOP_LOSS_LIMIT") == (side == "SELL")
        return price <= level if falls_to else price >= level

    def _trigger(self, symbol: str) -> None:
        """Conditional orders the market price reached: a stop-limit becomes a limit that
        fills at the market if its limit allows; a LIMIT_MAKER fills at its price. A leg
        that fills expires its OCO sibling."""
        market = self.markets[symbol]
        for order in list(self.orders):
            if order.symbol != symbol or order.type not in _CONDITIONAL \
                    or order.status not in ("NEW", "PARTIALLY_FILLED"):
                continue
            level = order.price if order.type == "LIMIT_MAKER" else order.stop_price
            if not order.triggered and not self._reached(order.type, order.side, level,
                                                         market.price):
                continue
            order.triggered = True
            if order.type == "LIMIT_MAKER":
                fill_at = order.price
            elif (market.price >= order.price) == (order.side == "SELL"):
                fill_at = market.price  # the limit allows the market price: a taker
            else:
                continue  # gapped past its limit: rests as a limit
            self._execute(order, order.qty - order.executed_qty, fill_at, locked=True)
            for other in self.orders:
                if other.list_id == order.list_id and other is not order \
                        and order.list_id >= 0 and other.status == "NEW":
                    other.status = "EXPIRED"

    def _get_order(self, params):
        self._market(params)
        order = self._find(params.get("orderId"), params.get("origClientOrderId"))
        if order is None:
            raise ApiError(400, -2013, "Order does not exist.")
        return order.to_json()

    def _cancel_order(self, params):
        market = self._market(params)
        order = self._find(params.get("orderId"), params.get("origClientOrderId"))
        if order is None or order.status not in ("NEW", "PARTIALLY_FILLED"):
            raise ApiError(400, -2011, "Unknown order sent.")
        remaining = order.qty - order.executed_qty
        asset = market.quote if order.side == "BUY" else market.base
        listed = [o for o in self.orders if order.list_id >= 0 and o.list_id == order.list_id]
        price = max([o.price for o in listed] + [order.price])  # an OCO locked once, at most
        amount = remaining * price if order.side == "BUY" else remaining
        self.balances[asset][1] -= amount
        self.balances[asset][0] += amount
        for other in listed:  # cancelling a leg cancels its order list
            if other.status in ("NEW", "PARTIALLY_FILLED"):
                other.status = "CANCELED"
        order.status = "CANCELED"
        return order.to_json()

    def _open_orders(self, params):
        symbol = params.get("symbol")
        if symbol is not None:
            self._market(params)
        return [o.to_json() for o in self.orders
                if o.status in ("NEW", "PARTIALLY_FILLED") and symbol in (None, o.symbol)]

    def _my_trades(self, params):
        market = self._market(params)
        order_id = params.get("orderId")
        return [t for t in self.trades if t["symbol"] == market.symbol
                and (order_id is None or str(t["orderId"]) == str(order_id))]

    # -- matching ------------------------------------------------------------------------

    def _execute(self, order: Order, qty: Decimal, price: Decimal, *, locked: bool) -> None:
        market = self.markets[order.symbol]
        quote_amount = qty * price
        maker = locked
        if order.side == "BUY":
            paid, received, paid_amount, received_amount = (market.quote, market.base,
                                                            quote_amount, qty)
            reserved = qty * order.price if locked else quote_amount
        else:
            paid, received, paid_amount, received_amount = (market.base, market.quote, qty,
                                                            quote_amount)
            reserved = qty
        commission = received_amount * self.commission_rate
        if locked:
            self.balances[paid][1] -= reserved
            self.balances[paid][0] += reserved - paid_amount
        else:
            self.balances[paid][0] -= paid_amount
        self.balances.setdefault(received, [Decimal(0), Decimal(0)])
        self.balances[received][0] += received_amount - commission
        trade_id = len(self.trades) + 1
        fill = {"price": price, "qty": qty, "commission": commission,
                "commission_asset": received, "id": trade_id}
        order.fills.append(fill)
        order.executed_qty += qty
        order.quote_qty += quote_amount
        order.status = "FILLED" if order.executed_qty >= order.qty else "PARTIALLY_FILLED"
        self.trades.append({
            "symbol": order.symbol, "id": trade_id, "orderId": order.order_id,
            "orderListId": -1, "price": _s(price), "qty": _s(qty),
            "quoteQty": _s(quote_amount), "commission": _s(commission),
            "commissionAsset": received, "time": self.now(), "isBuyer": order.side == "BUY",
            "isMaker": maker, "isBestMatch": True})

    def _market(self, params) -> Market:
        market = self.markets.get(params.get("symbol", ""))
        if market is None:
            raise ApiError(400, -1121, "Invalid symbol.")
        return market

    def _find(self, order_id, client_order_id) -> Order | None:
        for order in self.orders:
            if (order_id is not None and str(order.order_id) == str(order_id)) or (
                    client_order_id is not None and order.client_order_id == client_order_id):
                return order
        return None


_ROUTES = {
    ("GET", "/api/v3/time"): BinanceServer._time,
    ("GET", "/api/v3/ping"): BinanceServer._ping,
    ("GET", "/api/v3/exchangeInfo"): BinanceServer._exchange_info,
    ("GET", "/api/v3/ticker/24hr"): BinanceServer._ticker,
    ("GET", "/api/v3/klines"): BinanceServer._klines,
    ("GET", "/api/v3/depth"): BinanceServer._depth,
    ("GET", "/api/v3/account"): BinanceServer._account,
    ("POST", "/api/v3/order"): BinanceServer._new_order,
    ("GET", "/api/v3/order"): BinanceServer._get_order,
    ("DELETE", "/api/v3/order"): BinanceServer._cancel_order,
    ("POST", "/api/v3/orderList/oco"): BinanceServer._new_oco,
    ("GET", "/api/v3/openOrders"): BinanceServer._open_orders,
    ("GET", "/api/v3/myTrades"): BinanceServer._my_trades,
    ("POST", "/_control"): BinanceServer._control,
}


class _Handler(BaseHTTPRequestHandler):
    venue: BinanceServer
    protocol_version = "HTTP/1.1"  # keep-alive, as a real client session uses

    def do_GET(self):
        self._handle("GET")

    def do_POST(self):
        self._handle("POST")

    def do_DELETE(self):
        self._handle("DELETE")

    def log_message(self, format, *args):  # quiet: the tests read the order log instead
        pass

    def setup(self):
        super().setup()
        # Headers and body go out in two writes: without this, Nagle's algorithm holds the
        # body back until the client's delayed ACK, 40 ms per request.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.venue.lock:
            self.venue._connections.add(self.connection)

    def finish(self):
        with self.venue.lock:
            self.venue._connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def _handle(self, method: str) -> None:
        started = time.perf_counter()
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        with self.venue.lock:
            self.venue.requests.append((method, parts.path))
        fault = self.venue.take_fault(parts.path)
        if fault is not None and fault.kind in ("drop", "429", "418", "500", "503",
                                                "echo_headers"):
            self._answer_fault(fault)
            return
        try:
            if parts.path in _PRIVATE:
                self.venue.check_signature(self.headers, parts.query, body)
            params = dict(parse_qsl(parts.query))
            params.update(parse_qsl(body))
            status, payload = 200, self.venue.dispatch(method, parts.path, params)
        except ApiError as exc:
            status, payload = exc.status, {"code": exc.code, "msg": exc.msg}
        with self.venue.lock:
            self.venue.handler_seconds += time.perf_counter() - started
        if fault is not None and fault.kind == "lost_response":
            self.close_connection = True  # acted on, but the answer never leaves
            return
        if fault is not None and fault.kind == "delay":
            self.venue._stopping.wait(fault.delay_s)
        self._send(status, json.dumps(payload).encode(), "application/json")

    def _answer_fault(self, fault: Fault) -> None:
        if fault.kind == "drop":
            self.close_connection = True
            return
        headers = {}
        if fault.kind in ("429", "418"):
            body = json.dumps({"code": -1003, "msg": "Too many requests; current limit is "
                                                     "6000 request weight per 1 MINUTE."})
            if fault.retry_after is not None:
                headers["Retry-After"] = str(fault.retry_after)
            self._send(int(fault.kind), body.encode(), "application/json", headers)
        elif fault.kind == "500":
            body = json.dumps({"code": -1001, "msg": "Internal error; unable to process "
                                                     "your request. Please try again."})
            self._send(500, body.encode(), "application/json")
        elif fault.kind == "503":
            self._send(503, b"<html><body><h1>503 Service Temporarily Unavailable</h1>"
                            b"</body></html>", "text/html")
        else:  # echo_headers: a misconfigured gateway that shows the request it got
            echoed = "".join(f"<li>{k}: {v}</li>" for k, v in reversed(self.headers.items()))
            self._send(502, f"<html><body><h1>Bad Gateway</h1><ul>{echoed}</ul></body>"
                            f"</html>".encode(), "text/html")

    def _send(self, status: int, body: bytes, content_type: str, headers=None) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
            self.close_connection = True


def _market_json(market: Market) -> dict:
    notional = {"filterType": market.notional_filter, "minNotional": _s(market.min_notional)}
    if market.notional_filter == "NOTIONAL":
        notional.update(applyMinToMarket=True, maxNotional="9000000.00000000",
                        applyMaxToMarket=False, avgPriceMins=5)
    else:
        notional.update(applyToMarket=True, avgPriceMins=5)
    return {
        "symbol": market.symbol, "status": "TRADING", "baseAsset": market.base,
        "baseAssetPrecision": 8, "quoteAsset": market.quote, "quotePrecision": 8,
        "quoteAssetPrecision": 8, "baseCommissionPrecision": 8,
        "quoteCommissionPrecision": 8,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT",
                       "TAKE_PROFIT_LIMIT"],
        "icebergAllowed": True, "ocoAllowed": True, "otoAllowed": True,
        "quoteOrderQtyMarketAllowed": True, "allowTrailingStop": True,
        "cancelReplaceAllowed": True, "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False,
        "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": _s(market.tick_size),
             "maxPrice": "1000000.00000000", "tickSize": _s(market.tick_size)},
            {"filterType": "LOT_SIZE", "minQty": _s(market.min_qty),
             "maxQty": _s(market.max_qty), "stepSize": _s(market.step_size)},
            notional,
        ],
        "permissions": [], "permissionSets": [["SPOT"]],
        "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
        "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
    }


def _split_signature(query: str, body: str) -> tuple[str, str | None]:
    """Binance signs the query string followed by the body; the signature is the last
    parameter (``...&signature=hex``)."""
    total = query + body
    payload, marker, signature = total.rpartition("&signature=")
    return (payload, signature) if marker else (total, None)


def _interval_ms(interval: str) -> int:
    return int(interval[:-1]) * _INTERVAL_MS[interval[-1]]


def _s(value: Decimal) -> str:
    return f"{value:.8f}"
