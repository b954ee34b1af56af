"""A local WebSocket server speaking Binance's market-stream dialect as ccxt's WebSocket
side uses it: ``SUBSCRIBE`` requests answered ``{"result": null, "id": N}``, then kline,
trade and book-ticker events for the subscribed streams. Built on aiohttp (a ccxt
dependency), in its own thread and event loop, on 127.0.0.1.

The test pushes events and faults from its own thread: ``push_kline``, ``push_trade``,
``push_book_ticker``; ``drop_connections`` (abrupt close), ``go_silent`` (connections
stay open, nothing is sent), ``refuse`` (new connections answered 503)."""

from __future__ import annotations

import asyncio
import json
import threading
import time

from aiohttp import WSMsgType, web


class BinanceWsServer:
    def __init__(self) -> None:
        self.connections = 0  # accepted, ever
        self.subscriptions: list[str] = []
        self.sent = 0
        self._sockets: dict[web.WebSocketResponse, set[str]] = {}
        self._silent_until = 0.0
        self._refuse_until = 0.0
        self._loop = asyncio.new_event_loop()
        self._runner = None
        self.port = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    # -- life ---------------------------------------------------------------------------
    def start(self) -> BinanceWsServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    async def _start(self):
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def stop(self) -> None:
        async def shutdown():
            for ws in list(self._sockets):
                await ws.close()
            await self._runner.cleanup()
        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    # -- controls (any thread) ---------------------------------------------------------------
    def push_kline(self, symbol_id: str, interval: str, open_ms: int, values, *,
                   closed: bool) -> None:
        o, h, low, c, v = values
        step = {"1m": 60_000, "5m": 300_000, "1h": 3_600_000}[interval]
        event = {"e": "kline", "E": int(time.time() * 1000), "s": symbol_id,
                 "k": {"t": open_ms, "T": open_ms + step - 1, "s": symbol_id, "i": interval,
                       "f": 1, "L": 2, "o": f"{o:.8f}", "c": f"{c:.8f}", "h": f"{h:.8f}",
                       "l": f"{low:.8f}", "v": f"{v:.8f}", "n": 2, "x": bool(closed),
                       "q": "0", "V": "0", "Q": "0", "B": "0"}}
        self._send(f"{symbol_id.lower()}@kline_{interval}", event)

    def push_trade(self, symbol_id: str, ts_ms: int, price: float, qty: float) -> None:
        event = {"e": "trade", "E": ts_ms, "s": symbol_id, "t": ts_ms, "p": f"{price:.8f}",
                 "q": f"{qty:.8f}", "T": ts_ms, "m": False, "M": True}
        self._send(f"{symbol_id.lower()}@trade", event)

    def push_raw(self, stream: str, event: dict) -> None:
        self._send(stream, event)

    def drop_connections(self) -> None:
        async def drop():
            for ws in list(self._sockets):
                transport = ws._req.transport if ws._req is not None else None
                if transport is not None:
                    transport.abort()  # no close frame: a dropped connection
        asyncio.run_coroutine_threadsafe(drop(), self._loop).result(5)

    def go_silent(self, seconds: float) -> None:
        self._silent_until = time.time() + seconds

    def refuse(self, seconds: float) -> None:
        self._refuse_until = time.time() + seconds

    def open_connections(self) -> int:
        return sum(1 for ws in self._sockets if not ws.closed)

    # -- the server's side ---------------------------------------------------------------
    def _send(self, stream: str, event: dict) -> None:
        if time.time() < self._silent_until:
            return
        text = json.dumps(event)

        async def send():
            for ws, streams in list(self._sockets.items()):
                if stream in streams and not ws.closed:
                    try:
                        await ws.send_str(text)
                        self.sent += 1
                    except (ConnectionError, RuntimeError):
                        pass
        asyncio.run_coroutine_threadsafe(send(), self._loop).result(5)

    async def _handle(self, request):
        if time.time() < self._refuse_until:
            return web.Response(status=503, text="unavailable")
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self.connections += 1
        self._sockets[ws] = set()
        try:
            async for message in ws:
                if message.type != WSMsgType.TEXT:
                    continue
                request_json = json.loads(message.data)
                if request_json.get("method") == "SUBSCRIBE":
                    self._sockets[ws].update(request_json.get("params", []))
                    self.subscriptions += request_json.get("params", [])
                    await ws.send_str(json.dumps({"result": None,
                                                  "id": request_json.get("id")}))
        finally:
            self._sockets.pop(ws, None)
        return ws
