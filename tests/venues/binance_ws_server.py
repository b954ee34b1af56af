"""A local WebSocket server speaking Binance's market-stream dialect, as ccxt.pro uses it.

ccxt.pro connects to ``<urls['api']['ws']['spot']>/<n>`` (``/ws/0`` for the first stream
of an exchange instance, ``/ws/1`` for the next...) and sends
``{"method": "SUBSCRIBE", "params": ["btcusdt@kline_1m"], "id": 1}``; Binance answers
``{"result": null, "id": 1}`` and then pushes the subscribed events, unwrapped:
kline events (``{"e": "kline", ..., "k": {..., "x": false}}``), trade events and the
spot book ticker (which carries no event type at all). This server does the same on
127.0.0.1, in a thread with its own event loop, and lets a test play the venue's faults.

    venue = BinanceWsServer().start()
    stream = CcxtStream("binance", ws_url=venue.url, base_url=rest.url)
    venue.push_kline("BTCUSDT", "1m", open_ms, 100, 101, 99, 100.5, 3.2, closed=True)
    venue.drop()             # every connection reset, no close frame
    venue.silence()          # sockets stay open; nothing is sent, nothing is read
    venue.refuse(2.0)        # the port is closed for 2 s: connections are refused
    venue.stop()

Every ``push_*`` call returns once the event is written to every subscriber's socket.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time

from aiohttp import WSMsgType, web


class BinanceWsServer:
    """Binance's spot stream endpoint on 127.0.0.1 (port chosen by the OS)."""

    def __init__(self) -> None:
        self.port: int | None = None
        self.connections = 0            # WebSocket handshakes accepted, ever
        self.subscribe_requests: list[list[str]] = []  # params of every SUBSCRIBE
        self.listening = False           # False while refusing connections
        self._sockets: dict[web.WebSocketResponse, set[str]] = {}  # open: their streams
        self._transports: dict[web.WebSocketResponse, asyncio.Transport] = {}
        self._silent = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._site: web.SockSite | None = None
        self._reopen: asyncio.TimerHandle | None = None

    # -- life -------------------------------------------------------------------------
    def start(self) -> BinanceWsServer:
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, args=(ready,), daemon=True,
                                        name="binance-ws-server")
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the WebSocket test server did not start")
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
        self._loop = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    # -- what a test reads ---------------------------------------------------------------
    @property
    def open_connections(self) -> int:
        return len(self._sockets)

    @property
    def subscriptions(self) -> list[str]:
        """The streams subscribed on the open connections, sorted."""
        return sorted(stream for streams in list(self._sockets.values()) for stream in streams)

    def wait_for_subscriptions(self, count: int, timeout_s: float = 5.0) -> list[str]:
        """Wait until the open connections hold ``count`` subscriptions; return them."""
        deadline = time.monotonic() + timeout_s
        while len(self.subscriptions) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{count} subscriptions expected, have "
                                   f"{self.subscriptions}")
            time.sleep(0.01)
        return self.subscriptions

    # -- what a test does ------------------------------------------------------------------
    def push_kline(self, symbol: str, interval: str, open_ms: int, open_: float, high: float,
                   low: float, close: float, volume: float, *, closed: bool) -> int:
        """Send a kline event (the bar forming, or closed: ``k.x``) to its subscribers;
        returns how many sockets it was written to."""
        return self.push(f"{symbol.lower()}@kline_{interval}",
                         kline_event(symbol, interval, open_ms, open_, high, low, close,
                                     volume, closed=closed))

    def push_trade(self, symbol: str, price: float, qty: float, trade_ms: int,
                   trade_id: int = 1) -> int:
        event = {"e": "trade", "E": _now_ms(), "s": symbol, "t": trade_id, "p": _s(price),
                 "q": _s(qty), "T": trade_ms, "m": False, "M": True}
        return self.push(f"{symbol.lower()}@trade", event)

    def push_book_ticker(self, symbol: str, bid: float, bid_qty: float, ask: float,
                         ask_qty: float, update_id: int = 1) -> int:
        """The spot book ticker: no event type and no time, as Binance sends it."""
        event = {"u": update_id, "s": symbol, "b": _s(bid), "B": _s(bid_qty), "a": _s(ask),
                 "A": _s(ask_qty)}
        return self.push(f"{symbol.lower()}@bookTicker", event)

    def push(self, stream: str, payload) -> int:
        """Send ``payload`` (a dict, or raw text) to the subscribers of ``stream``."""
        return self.push_many([(stream, payload)])

    def push_many(self, messages: list[tuple[str, object]]) -> int:
        """Send several ``(stream, payload)`` messages back to back, with no pause between
        them (they arrive in one burst); returns the number of frames written."""
        return self._call(self._broadcast(messages))

    def ping(self) -> None:
        """A WebSocket ping frame to every connection (Binance sends one every 20 s)."""
        self._call(self._each(lambda ws: ws.ping()))

    def drop(self) -> None:
        """Reset every connection: the TCP socket goes away, no close frame."""
        self._call(self._drop())

    def close_all(self, code: int = 1001) -> None:
        """Close every connection politely, with a close frame."""
        self._call(self._each(lambda ws: ws.close(code=code)))

    def silence(self) -> None:
        """From now on send nothing and read nothing (pings, subscriptions and close
        frames go unanswered) on every connection, old and new: a black hole whose TCP
        connections stay open."""
        self._call(self._silence(True))

    def speak(self) -> None:
        """Undo :meth:`silence`."""
        self._call(self._silence(False))

    def refuse(self, seconds: float) -> None:
        """Close the listening port for ``seconds`` (new connections are refused by the
        OS; open ones are kept), then listen on the same port again."""
        self._call(self._refuse(seconds))

    # -- the loop's side ------------------------------------------------------------------
    def _call(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(10)

    def _serve(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._open())
        ready.set()
        self._loop.run_forever()

    async def _open(self) -> None:
        app = web.Application()
        app.router.add_get("/ws", self._handle)
        app.router.add_get("/ws/{stream}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        await self._listen()

    async def _listen(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port or 0))
        self.port = listener.getsockname()[1]
        self._site = web.SockSite(self._runner, listener)
        await self._site.start()
        self.listening = True

    async def _refuse(self, seconds: float) -> None:
        if self._site is not None:
            await self._site.stop()
            self._site = None
        self.listening = False
        if self._reopen is not None:
            self._reopen.cancel()
        self._reopen = self._loop.call_later(
            seconds, lambda: asyncio.ensure_future(self._listen()))

    async def _shutdown(self) -> None:
        if self._reopen is not None:
            self._reopen.cancel()
        await self._drop()
        await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True, compress=False)
        await ws.prepare(request)
        self.connections += 1
        self._sockets[ws] = set()
        self._transports[ws] = request.transport
        if self._silent:
            request.transport.pause_reading()
        try:
            async for message in ws:
                if message.type == WSMsgType.TEXT:
                    await self._request(ws, message.data)
        finally:
            self._sockets.pop(ws, None)
            self._transports.pop(ws, None)
        return ws

    async def _request(self, ws: web.WebSocketResponse, text: str) -> None:
        """Answer a SUBSCRIBE / UNSUBSCRIBE / LIST_SUBSCRIPTIONS the way Binance does."""
        try:
            request = json.loads(text)
            method, request_id = request["method"], request["id"]
            params = list(request.get("params") or [])
        except (ValueError, KeyError, TypeError):
            await ws.send_str(json.dumps({"error": {"code": 3, "msg": "Invalid JSON"},
                                          "id": None}))
            return
        streams = self._sockets.setdefault(ws, set())
        if method == "SUBSCRIBE":
            self.subscribe_requests.append(params)
            streams.update(params)
            answer = {"result": None, "id": request_id}
        elif method == "UNSUBSCRIBE":
            streams.difference_update(params)
            answer = {"result": None, "id": request_id}
        elif method == "LIST_SUBSCRIPTIONS":
            answer = {"result": sorted(streams), "id": request_id}
        else:
            answer = {"error": {"code": 2, "msg": f"Invalid request: unknown method "
                                                  f"{method!r}"}, "id": request_id}
        if not self._silent:
            await ws.send_str(json.dumps(answer))

    async def _broadcast(self, messages) -> int:
        if self._silent:
            return 0
        sent = 0
        for stream, payload in messages:
            text = payload if isinstance(payload, str) else json.dumps(payload)
            for ws, streams in list(self._sockets.items()):
                if stream in streams and not ws.closed:
                    await ws.send_str(text)
                    sent += 1
        return sent

    async def _each(self, action) -> None:
        for ws in list(self._sockets):
            if not ws.closed:
                await action(ws)

    async def _drop(self) -> None:
        for ws, transport in list(self._transports.items()):
            transport.abort()
            self._sockets.pop(ws, None)
            self._transports.pop(ws, None)

    async def _silence(self, silent: bool) -> None:
        self._silent = silent
        for transport in self._transports.values():
            if silent:
                transport.pause_reading()
            else:
                transport.resume_reading()


def kline_event(symbol: str, interval: str, open_ms: int, open_: float, high: float,
                low: float, close: float, volume: float, *, closed: bool) -> dict:
    """A Binance kline event, every field of it, as the venue sends it."""
    step_ms = _interval_ms(interval)
    return {"e": "kline", "E": _now_ms(), "s": symbol,
            "k": {"t": open_ms, "T": open_ms + step_ms - 1, "s": symbol, "i": interval,
                  "f": 100, "L": 200, "o": _s(open_), "c": _s(close), "h": _s(high),
                  "l": _s(low), "v": _s(volume), "n": 101, "x": bool(closed),
                  "q": _s(volume * close), "V": _s(volume / 2), "Q": _s(volume * close / 2),
                  "B": "0"}}


def _interval_ms(interval: str) -> int:
    units = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
    return int(interval[:-1]) * units[interval[-1]]


def _s(value: float) -> str:
    return f"{value:.8f}"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
