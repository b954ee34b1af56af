"""A venue's market-data stream through ccxt's own WebSocket side (``ccxt.pro``).

Built for Binance (and Binance US), whose kline messages carry ``k.x``: the venue's word
that the bar is finished. ccxt's unified ``watch_ohlcv`` keeps only the six OHLCV
numbers, so the adapter listens one level lower, in a small subclass of ccxt's exchange
that hands each raw kline to the adapter as ccxt parses it. A closed bar is emitted the
moment its ``x: true`` message arrives, not when the next bar's first message comes a
few seconds later. Trades (``ticks: trades``) are taken the same way from ccxt's trade
handler, and the book ticker (``ticks: book_ticker``) from ``watch_bids_asks``.

ccxt loads the venue's markets over REST before it subscribes; they are kept across
reconnects, so a reconnect costs no REST call. ``ws_url`` (a proxy, the tests' local
server) replaces the stream URL and ``base_url`` the REST one, as the REST adapter's
``base_url`` does. Keys are never needed: klines, trades and book tickers are public.

:meth:`CcxtStream.run` owns an asyncio loop in the calling thread; it returns within
about a second of ``stop`` being set, and :meth:`CcxtStream.close` (from any thread)
makes it raise :class:`~mmats.brokers.streams.StreamClosed`, as does a dropped or refused
connection. Messages out of order or repeated are passed on as they come: the feed watch
de-duplicates.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import threading
from collections.abc import Callable

import ccxt
import ccxt.pro

from mmats.brokers.base import BrokerError
from mmats.brokers.ccxt_broker import DEFAULT_FACTS, VENUE_FACTS, _merge, _rebase
from mmats.brokers.streams import StreamBar, StreamClosed, StreamTick
from mmats.errors import ConfigError

MS = 1_000_000
TICK_KINDS = (None, "trades", "book_ticker")
_POLL_S = 0.1


class CcxtStream:
    """Closed and forming bars (and, if asked, ticks) of some symbols from ccxt's
    WebSocket side."""

    bars_from_ticks = False

    def __init__(self, exchange_id: str = "binance", *, ws_url: str | None = None,
                 base_url: str | None = None, sandbox: bool = False,
                 ticks: str | None = None, timeout_s: float = 10.0) -> None:
        exchange_id = str(exchange_id).strip().lower()
        if exchange_id not in ccxt.pro.exchanges:
            raise ConfigError(f"{exchange_id}: ccxt has no WebSocket support for it; set "
                              "stream: false for this venue (REST polling)")
        if ticks not in TICK_KINDS:
            raise ConfigError(f"ticks: {ticks!r} is not one of trades, book_ticker")
        self.venue = self.exchange_id = exchange_id
        self.ws_url, self.base_url, self.sandbox = ws_url, base_url, sandbox
        self.ticks, self.timeout_s = ticks, float(timeout_s)
        self._markets = None  # kept across reconnects
        self._closing = threading.Event()
        self.messages = 0

    def __repr__(self) -> str:
        return f"CcxtStream({self.exchange_id!r}, {self.ws_url or 'venue URL'})"

    # -- the thread's side --------------------------------------------------------------
    def run(self, symbols, timeframe: str, emit: Callable[[object], None],
            stop: threading.Event) -> None:
        self._closing.clear()
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._run(tuple(symbols), timeframe, emit, stop))
        finally:
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def close(self) -> None:
        self._closing.set()

    # -- the loop's side --------------------------------------------------------------------
    async def _run(self, symbols, timeframe, emit, stop) -> None:
        exchange = self._exchange(emit, timeframe)
        tasks = []
        try:
            await self._load_markets(exchange, symbols)
            tasks = [asyncio.ensure_future(self._watch_bars(exchange, symbols, timeframe))]
            if self.ticks == "trades":
                tasks += [asyncio.ensure_future(self._watch_trades(exchange, s))
                          for s in symbols]
            elif self.ticks == "book_ticker":
                tasks.append(asyncio.ensure_future(self._watch_book(exchange, symbols, emit)))
            while True:
                done = [task for task in tasks if task.done()]
                for task in done:
                    task.result()  # raises what ended it
                if stop.is_set():
                    return
                if self._closing.is_set():
                    raise StreamClosed(f"{self.exchange_id} stream closed by the runner "
                                       "(silent, or stopping)")
                await asyncio.sleep(_POLL_S)
        except (StreamClosed, BrokerError, ConfigError):
            raise
        except ccxt.BadSymbol as error:
            raise ConfigError(f"{self.exchange_id}: {_short(error)}") from None
        except ccxt.NetworkError as error:  # dropped, refused, timed out
            raise StreamClosed(f"{self.exchange_id} stream {self._where()}: "
                               f"{_short(error)}") from None
        except ccxt.BaseError as error:
            raise StreamClosed(f"{self.exchange_id} stream {self._where()}: "
                               f"{type(error).__name__}: {_short(error)}") from None
        except OSError as error:
            raise StreamClosed(f"{self.exchange_id} stream {self._where()}: {error}") from None
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(BaseException):
                    await task
            with contextlib.suppress(Exception):
                await exchange.close()

    def _exchange(self, emit, timeframe):
        stream = self

        class Exchange(getattr(ccxt.pro, self.exchange_id)):
            """ccxt's exchange, telling the adapter each raw kline and trade."""

            def handle_ohlcv(self, client, message):
                super().handle_ohlcv(client, message)
                stream._kline(self, message, timeframe, emit)

            def is_spot_url(self, client):  # only the spot stream is subscribed here;
                return True  # ccxt tells spot by "/stream" in the host name otherwise

            def handle_trade(self, client, message):
                super().handle_trade(client, message)
                if stream.ticks == "trades":
                    stream._trade(self, message, emit)

        exchange = Exchange({"timeout": int(self.timeout_s * 1000), "enableRateLimit": False})
        facts = VENUE_FACTS.get(self.exchange_id, DEFAULT_FACTS)
        _merge(exchange.options, copy.deepcopy(facts["options"]))  # spot markets only
        if self.sandbox:
            if not exchange.urls.get("test"):
                raise ConfigError(f"{self.exchange_id} has no sandbox in ccxt")
            exchange.set_sandbox_mode(True)
        if self.base_url:
            exchange.urls["api"] = _rebase(exchange.urls["api"], self.base_url)
        if self.ws_url:
            ws = exchange.urls["api"].get("ws")
            if isinstance(ws, dict):
                for kind in ("spot", "margin"):
                    ws[kind] = self.ws_url.rstrip("/")
        return exchange

    async def _load_markets(self, exchange, symbols) -> None:
        if self._markets is None:
            try:
                await exchange.load_markets()
            except ccxt.NetworkError as error:
                raise StreamClosed(f"{self.exchange_id}: cannot load markets: "
                                   f"{_short(error)}") from None
            self._markets = (exchange.markets, exchange.currencies)
        else:
            exchange.set_markets(*self._markets)
        for symbol in symbols:
            if symbol not in exchange.markets:
                raise ConfigError(f"{self.exchange_id} has no market {symbol!r}")

    async def _watch_bars(self, exchange, symbols, timeframe) -> None:
        pairs = [[symbol, timeframe] for symbol in symbols]
        while True:  # each call returns on the next kline; the handler has emitted it
            await exchange.watch_ohlcv_for_symbols(pairs)

    async def _watch_trades(self, exchange, symbol) -> None:
        while True:
            await exchange.watch_trades(symbol)

    async def _watch_book(self, exchange, symbols, emit) -> None:
        while True:
            tickers = await exchange.watch_bids_asks(list(symbols))
            for symbol, ticker in tickers.items():
                bid, ask = ticker.get("bid"), ticker.get("ask")
                if bid is None or ask is None or ticker.get("timestamp") is None:
                    continue
                emit(StreamTick(symbol, int(ticker["timestamp"]) * MS, (bid + ask) / 2,
                                bid=float(bid), ask=float(ask)))

    # -- the raw messages -------------------------------------------------------------
    def _kline(self, exchange, message, timeframe, emit) -> None:
        self.messages += 1
        kline = message.get("k") or {}
        try:
            symbol = exchange.safe_symbol(kline.get("s"), None, None, "spot")
            emit(StreamBar(symbol, timeframe, int(kline["t"]) * MS, float(kline["o"]),
                           float(kline["h"]), float(kline["l"]), float(kline["c"]),
                           float(kline["v"]), closed=bool(kline.get("x"))))
        except (KeyError, TypeError, ValueError):
            return  # a malformed kline: the bar comes from REST instead

    def _trade(self, exchange, message, emit) -> None:
        self.messages += 1
        try:
            symbol = exchange.safe_symbol(message.get("s"), None, None, "spot")
            emit(StreamTick(symbol, int(message["T"]) * MS, float(message["p"]),
                            size=float(message["q"])))
        except (KeyError, TypeError, ValueError):
            return

    def _where(self) -> str:
        return f"at {self.ws_url}" if self.ws_url else "(venue URL)"


def _short(error: BaseException, limit: int = 300) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[:limit] + "..."
