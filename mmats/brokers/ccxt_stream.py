"""A ccxt exchange's market-data stream through ccxt's own WebSocket side (``ccxt.pro``).

Why not ccxt's unified ``watch_ohlcv``: it keeps only the six OHLCV numbers of a kline
and drops Binance's ``k.x``, the venue's word that the bar is finished, so a caller would
learn of a close only when the next bar's first message arrives, seconds later. For
Binance (and Binance US) the adapter uses ccxt's exchange class with its three event
handlers extended (:class:`_BinanceEvents`): each raw kline, trade and book-ticker event
is handed to the adapter as ccxt reads it, in the order the venue sent it, and a bar is
emitted closed the moment its ``"x": true`` message arrives. ccxt's ``watch_*`` calls are
still made: they open the sockets, send the ``SUBSCRIBE`` requests and report failures.

Any other ccxt.pro exchange falls back to the unified calls (``watch_ohlcv``,
``watch_trades``, ``watch_bids_asks`` or else ``watch_ticker``), and a bar is emitted
closed only when a later bar's message arrives (:func:`closed_by_next`): up to one
update interval late, the newest bar before a disconnect is never seen closed (the feed
watch's REST back-fill has it), and updates that arrive together are seen as one.

ccxt loads the venue's markets over REST before it subscribes (one ``exchangeInfo`` call
on Binance); they are kept across reconnects. ``ws_url`` (a proxy, the tests' local
server) replaces every WebSocket URL ccxt knows, as ``base_url`` replaces the REST ones
(the REST adapter's own rule). No key is needed: klines, trades and book tickers are
public. Every frame the venue sends that carries no data (the subscription's answer, a
ping) is passed on as :data:`~mmats.brokers.streams.HEARTBEAT`.

>>> stream = CcxtStream("binance", ticks="trades")                      # doctest: +SKIP
>>> stream.run(("BTC/USDT",), "1m", print, threading.Event())           # doctest: +SKIP
StreamBar(symbol='BTC/USDT', timeframe='1m', open_ns=..., ..., closed=False)
"""

from __future__ import annotations

import asyncio
import copy
import difflib
import threading
import time
from collections.abc import Callable

import aiohttp
import ccxt
import ccxt.pro

from mmats.brokers.base import AuthenticationFailed, BrokerError
from mmats.brokers.ccxt_broker import DEFAULT_FACTS, VENUE_FACTS, _merge, _rebase
from mmats.brokers.streams import HEARTBEAT, StreamBar, StreamClosed, StreamTick
from mmats.errors import ConfigError
from mmats.redact import redact, redact_url

TICK_STREAMS = ("trades", "book_ticker")
NS_PER_MS = 1_000_000
_POLL_S = 0.05        # how often run() looks at stop, close() and the sockets' last frame
_CLOSE_WAIT_S = 0.5   # the close handshake; a black-holed socket never answers it
_MESSAGE_CHARS = 300


class CcxtStream:
    """Bars (and, with ``ticks``, trades or book tickers) of some symbols from a ccxt
    exchange's WebSocket streams; implements :class:`~mmats.brokers.streams.BarStream`.

    ``exchange_id`` is a ccxt.pro id (``"binance"``); ``ws_url`` replaces the venue's
    WebSocket URLs (``ws://127.0.0.1:8765/ws``) and ``base_url`` its REST ones (where the
    markets are loaded from); ``sandbox`` selects its test network; ``ticks`` is None,
    ``"trades"`` or ``"book_ticker"``; ``timeout_s`` bounds the REST call and each
    connection attempt. One :meth:`run` at a time per instance.

    ``skipped`` counts the messages that could not be read (malformed: never emitted).
    """

    bars_from_ticks = False

    def __init__(self, exchange_id: str = "binance", *, ws_url: str | None = None,
                 base_url: str | None = None, sandbox: bool = False,
                 ticks: str | None = None, timeout_s: float = 10.0) -> None:
        exchange_id = str(exchange_id).strip().lower()
        _check_exchange(exchange_id, bool(sandbox))
        if ticks not in (None, *TICK_STREAMS):
            raise ConfigError(f"{exchange_id}: ticks must be one of {', '.join(TICK_STREAMS)} "
                              f"(or left out), got {ticks!r}")
        if ws_url is not None and not str(ws_url).startswith(("ws://", "wss://")):
            raise ConfigError(f"{exchange_id}: ws_url must be a ws:// or wss:// URL, got "
                              f"{redact_url(ws_url)!r}")
        if not timeout_s or float(timeout_s) <= 0:
            raise ConfigError(f"{exchange_id}: timeout_s must be > 0 seconds, got {timeout_s!r}")
        self.venue = self.exchange_id = exchange_id
        self.ws_url, self.base_url, self.sandbox = ws_url, base_url, bool(sandbox)
        self.ticks, self.timeout_s = ticks, float(timeout_s)
        self.skipped = 0
        self._markets: tuple[dict, dict] | None = None  # (markets, currencies), kept
        self._dropped = threading.Event()

    def __repr__(self) -> str:
        where = redact_url(self.ws_url) if self.ws_url else "the venue's URL"
        return f"CcxtStream({self.exchange_id!r}, {where})"

    # -- the caller's thread ------------------------------------------------------------
    def run(self, symbols: tuple[str, ...], timeframe: str, emit: Callable[[object], None],
            stop: threading.Event) -> None:
        """Connect, subscribe and ``emit`` every message until ``stop`` is set (return),
        the connection fails or :meth:`close` is called (:class:`StreamClosed`). An
        unknown symbol or timeframe raises :class:`BrokerError` (reconnecting will not
        fix it); an exception from ``emit`` ends the run and is raised unchanged.

        Blocks; runs its own asyncio loop in the calling thread. ``emit`` is called on
        that loop, between socket reads: it must be quick (hand the message over, do
        not store or compute)."""
        symbols = tuple(symbols)
        if not symbols:
            raise BrokerError(f"{self.exchange_id}: no symbols to stream")
        self._dropped.clear()
        if stop.is_set():
            return
        asyncio.run(self._session(symbols, str(timeframe), emit, stop))

    def close(self) -> None:
        """Drop the connection now (from any thread): a :meth:`run` in progress raises
        :class:`StreamClosed` within a fraction of a second."""
        self._dropped.set()

    # -- the loop -------------------------------------------------------------------------
    async def _session(self, symbols, timeframe, emit, stop) -> None:
        exchange = self._exchange()
        reader = _Reader(self, emit, timeframe)
        reader.exchange = exchange
        work = asyncio.ensure_future(self._subscribe(exchange, reader, symbols, timeframe))
        try:
            while True:
                await asyncio.wait({work}, timeout=_POLL_S)
                if work.done():
                    work.result()  # raises what ended it
                    raise StreamClosed(f"{self._where(exchange)}: the stream ended")
                if reader.failure is not None:
                    raise reader.failure  # the caller's emit raised: its error, unchanged
                if stop.is_set():
                    return
                if self._dropped.is_set():
                    raise StreamClosed(f"{self._where(exchange)}: closed by the caller "
                                       "(a silent socket, or stopping)")
                reader.heartbeat_if_heard()
        except (StreamClosed, BrokerError, ConfigError):
            raise
        except Exception as error:
            failure = None if error is reader.failure else self._failure(error, exchange)
            if failure is None:
                raise  # the caller's emit, or a bug: unchanged
            raise failure from None
        finally:
            work.cancel()
            await asyncio.gather(work, return_exceptions=True)
            await _close(exchange)

    async def _subscribe(self, exchange, reader, symbols, timeframe) -> None:
        """Load the markets, check the symbols, then watch until something fails."""
        await self._load_markets(exchange)
        reader.symbol_by_id = self._market_ids(exchange, symbols, timeframe)
        reader.interval = exchange.safe_string(exchange.timeframes, timeframe, timeframe)
        pairs = [[symbol, timeframe] for symbol in symbols]
        if isinstance(exchange, _BinanceEvents):
            exchange.reader = reader  # the handlers emit; the watch calls only subscribe
            watches = [lambda: exchange.watch_ohlcv_for_symbols(pairs)]
            if self.ticks == "trades":
                watches.append(lambda: exchange.watch_trades_for_symbols(list(symbols)))
            elif self.ticks == "book_ticker":
                watches.append(lambda: exchange.watch_bids_asks(list(symbols)))
            await asyncio.gather(*(_forever(watch) for watch in watches))
        else:
            await asyncio.gather(*(_unified(exchange, reader, symbol, timeframe, self.ticks)
                                   for symbol in symbols))

    async def _load_markets(self, exchange) -> None:
        if self._markets is not None:
            exchange.set_markets(*self._markets)  # copies what it keeps
            return
        try:
            await exchange.load_markets()
        except ccxt.NetworkError as error:
            rest = redact_url(self.base_url) if self.base_url else "its REST API"
            raise StreamClosed(f"{self.exchange_id}: could not load the markets from {rest}: "
                               f"{_detail(error)}") from None
        self._markets = (dict(exchange.markets), dict(exchange.currencies or {}))

    def _market_ids(self, exchange, symbols, timeframe) -> dict[str, str]:
        """Each symbol's venue id (``BTC/USDT`` -> ``BTCUSDT``); a :class:`BrokerError`
        names a symbol or timeframe the venue does not have."""
        if timeframe not in (exchange.timeframes or {}):
            raise BrokerError(f"{self.exchange_id}: timeframe {timeframe!r} is not streamed "
                              f"(the venue's: {', '.join(exchange.timeframes or {})})")
        ids = {}
        for symbol in symbols:
            market = exchange.markets.get(symbol)
            if market is None:
                close = difflib.get_close_matches(str(symbol), list(exchange.markets), n=3)
                hint = f"; did you mean {', '.join(close)}?" if close else ""
                raise BrokerError(f"{self.exchange_id}: unknown symbol {symbol!r}: not one "
                                  f"of its {len(exchange.markets)} markets{hint}")
            ids[market["id"]] = symbol
        return ids

    def _exchange(self):
        """ccxt's exchange (its event-handing subclass for Binance), pointed where asked."""
        timeout_ms = int(self.timeout_s * 1000)
        config = {"timeout": timeout_ms, "enableRateLimit": False,
                  # ccxt waits int(ms / 1000) seconds for a socket: 0 would never connect
                  "streaming": {"connectionTimeout": max(1000, timeout_ms)}}
        exchange = _EVENT_CLASSES.get(self.exchange_id, getattr(ccxt.pro, self.exchange_id))(
            config)
        facts = {**DEFAULT_FACTS, **VENUE_FACTS.get(self.exchange_id, {})}
        _merge(exchange.options, copy.deepcopy(facts["options"]))  # one exchangeInfo call
        if self.sandbox:
            exchange.set_sandbox_mode(True)
        urls = exchange.urls
        if self.base_url:
            urls["api"] = {name: value if name == "ws" else _rebase(value, self.base_url)
                           for name, value in urls["api"].items()}
        if self.ws_url:
            for group in ("api", "test", "demo"):
                if isinstance(urls.get(group), dict) and "ws" in urls[group]:
                    urls[group]["ws"] = _replaced(urls[group]["ws"], self.ws_url)
        return exchange

    def _where(self, exchange=None) -> str:
        url = self.ws_url
        if url is None and exchange is not None:
            ws = exchange.urls.get("api", {}).get("ws")
            url = ws.get("spot") if isinstance(ws, dict) else ws
        return f"{self.exchange_id} stream at {redact_url(url or 'its WebSocket URL')}"

    def _failure(self, error: BaseException, exchange) -> BrokerError | None:
        """A ccxt, aiohttp or socket error as the stream contract's outcome (None for
        any other error: a bug, raised as it is)."""
        where, detail = self._where(exchange), _detail(error)
        if isinstance(error, (ccxt.AuthenticationError, ccxt.PermissionDenied)):
            return AuthenticationFailed(f"{where}: refused the credentials: {detail}")
        if isinstance(error, (ccxt.NetworkError, aiohttp.ClientError, OSError)):
            return StreamClosed(f"{where}: {detail}")
        if isinstance(error, ccxt.BadSymbol):
            return BrokerError(f"{where}: unknown symbol: {detail}")
        if isinstance(error, ccxt.BaseError):
            return BrokerError(f"{where}: the venue refused the subscription: {detail}")
        return None


class _Reader:
    """One run's venue messages turned into StreamBars and StreamTicks for ``emit``."""

    def __init__(self, stream: CcxtStream, emit: Callable[[object], None],
                 timeframe: str) -> None:
        self.stream, self._emit, self.timeframe = stream, emit, timeframe
        self.symbol_by_id: dict[str, str] = {}
        self.interval = timeframe
        self.failure: BaseException | None = None  # what the caller's emit raised
        self.exchange = None  # set by the run: whose sockets' frames are watched
        # The arrival (ccxt's last_message_at, ms) of the newest frame already accounted
        # for: passed on as data, or as a heartbeat. Frames are compared with frames, not
        # with the time a message was passed on: a ping landing within the millisecond
        # of the last heartbeat's emission is still seen.
        self.accounted_ms = 0

    def emit(self, message) -> None:
        if self.failure is not None:
            return
        # Data is emitted from ccxt's handler of its very frame, after ccxt stamped it.
        self.accounted_ms = max(self.accounted_ms, self.newest_frame_ms())
        try:
            self._emit(message)
        except Exception as error:  # noqa: BLE001 - run() raises it; ccxt's reader must live
            self.failure = error

    def newest_frame_ms(self) -> int:
        """When the newest frame reached any of the run's sockets (0: none yet)."""
        clients = (getattr(self.exchange, "clients", None) or {}).values()
        return max((getattr(client, "last_message_at", None) or 0 for client in clients),
                   default=0)

    def heartbeat_if_heard(self) -> None:
        """HEARTBEAT when a socket received a frame that was not passed on as data (the
        subscription's answer, a ping): the socket is alive."""
        if self.newest_frame_ms() > self.accounted_ms:
            self.emit(HEARTBEAT)

    def skip(self) -> None:
        self.stream.skipped += 1

    # Binance's raw events
    def kline(self, event: dict) -> None:
        try:
            kline = event["k"]
            symbol = self.symbol_by_id.get(kline["s"])
            if symbol is None or kline["i"] != self.interval:
                return  # not a stream this run asked for
            if not isinstance(kline["x"], bool):
                raise TypeError("k.x is not a boolean")
            bar = StreamBar(symbol, self.timeframe, int(kline["t"]) * NS_PER_MS,
                            float(kline["o"]), float(kline["h"]), float(kline["l"]),
                            float(kline["c"]), float(kline["v"]), closed=kline["x"])
        except (KeyError, TypeError, ValueError):
            self.skip()
            return
        self.emit(bar)

    def trade(self, event: dict) -> None:
        try:
            symbol = self.symbol_by_id.get(event["s"])
            if symbol is None:
                return
            tick = StreamTick(symbol, int(event["T"]) * NS_PER_MS, float(event["p"]),
                              size=float(event["q"]))
        except (KeyError, TypeError, ValueError):
            self.skip()
            return
        self.emit(tick)

    def book_ticker(self, event: dict) -> None:
        """Binance's spot book ticker carries no time: it is stamped on arrival."""
        try:
            symbol = self.symbol_by_id.get(event["s"])
            if symbol is None:
                return
            bid, ask = float(event["b"]), float(event["a"])
            venue_ms = event.get("T") or event.get("E")
            ts_ns = int(venue_ms) * NS_PER_MS if venue_ms else time.time_ns()
        except (KeyError, TypeError, ValueError):
            self.skip()
            return
        self.emit(StreamTick(symbol, ts_ns, (bid + ask) / 2, bid=bid, ask=ask))

    # the unified structures, for the other exchanges
    def candle(self, symbol: str, row, closed: bool) -> None:
        try:
            bar = StreamBar(symbol, self.timeframe, int(row[0]) * NS_PER_MS,
                            *(float(value) for value in row[1:6]), closed=closed)
        except (IndexError, TypeError, ValueError):
            self.skip()
            return
        self.emit(bar)

    def unified_tick(self, symbol: str, item: dict) -> None:
        """A ccxt trade (price, amount) or ticker (bid, ask) structure."""
        try:
            ts_ns = (int(item["timestamp"]) * NS_PER_MS if item.get("timestamp")
                     else time.time_ns())
            if "amount" in item:
                tick = StreamTick(symbol, ts_ns, float(item["price"]),
                                  size=float(item["amount"]))
            else:
                bid, ask = float(item["bid"]), float(item["ask"])
                tick = StreamTick(symbol, ts_ns, (bid + ask) / 2, bid=bid, ask=ask)
        except (KeyError, TypeError, ValueError):
            self.skip()
            return
        self.emit(tick)


class _BinanceEvents:
    """Binance's kline, trade and book-ticker handlers, each first handing the raw event
    to the run's :class:`_Reader` (mixed into ccxt's own exchange classes below)."""

    reader: _Reader | None = None

    def handle_ohlcv(self, client, message):
        if self.reader is not None:
            self.reader.kline(message)
        super().handle_ohlcv(client, message)

    def handle_trade(self, client, message):
        if self.reader is not None and self.reader.stream.ticks == "trades":
            self.reader.trade(message)
        super().handle_trade(client, message)

    def handle_bids_asks(self, client, message):
        if self.reader is not None and self.reader.stream.ticks == "book_ticker":
            self.reader.book_ticker(message)
        super().handle_bids_asks(client, message)

    def handle_message(self, client, message):
        # ccxt reads a socket from a callback that stops reading if a handler raises:
        # a message ccxt cannot parse is skipped, the socket kept
        try:
            super().handle_message(client, message)
        except Exception:  # noqa: BLE001 - counted; the stream goes on
            if self.reader is not None:
                self.reader.skip()


class _Binance(_BinanceEvents, ccxt.pro.binance):
    pass


class _BinanceUs(_BinanceEvents, ccxt.pro.binanceus):
    pass


_EVENT_CLASSES = {"binance": _Binance, "binanceus": _BinanceUs}


# -- the other exchanges: ccxt's unified structures --------------------------------------

def closed_by_next(newest: list | None, candles) -> tuple[list[tuple[list, bool]], list | None]:
    """For a venue whose klines say nothing of closing: the rows to emit for ``candles``
    (ccxt's OHLCV rows since the last call) after ``newest`` (the newest row seen), as
    ``(row, closed)`` pairs, and the newest row now. A bar is closed, in its last state,
    once a later bar's row arrives; rows older than ``newest`` were closed already.

    >>> closed_by_next([60, 1, 1, 1, 1, 1], [[60, 1, 2, 1, 2, 3], [120, 2, 2, 2, 2, 1]])
    ([([60, 1, 2, 1, 2, 3], True), ([120, 2, 2, 2, 2, 1], False)], [120, 2, 2, 2, 2, 1])
    """
    out: list[tuple[list, bool]] = []
    updated = False
    for row in sorted((list(row) for row in candles), key=lambda row: row[0]):
        if newest is not None and row[0] < newest[0]:
            continue
        if newest is not None and row[0] > newest[0]:
            out.append((newest, True))
        newest, updated = row, True
    if updated:
        out.append((newest, False))
    return out, newest


async def _unified(exchange, reader: _Reader, symbol: str, timeframe: str, ticks) -> None:
    """One symbol's bars (and ticks) from ccxt's unified watch calls."""
    async def bars():
        newest = None
        while True:
            candles = await exchange.watch_ohlcv(symbol, timeframe)
            rows, newest = closed_by_next(newest, candles)
            for row, closed in rows:
                reader.candle(symbol, row, closed)

    async def trades():
        while True:
            for trade in await exchange.watch_trades(symbol):
                reader.unified_tick(symbol, trade)

    async def quotes():  # the best bid and ask where ccxt streams them, else its ticker
        while True:
            if exchange.has.get("watchBidsAsks"):
                quote = (await exchange.watch_bids_asks([symbol])).get(symbol)
            else:
                quote = await exchange.watch_ticker(symbol)
            if quote is not None:
                reader.unified_tick(symbol, quote)

    watches = [bars()]
    if ticks == "trades":
        watches.append(trades())
    elif ticks == "book_ticker":
        watches.append(quotes())
    await asyncio.gather(*watches)


# -- helpers -----------------------------------------------------------------------------

async def _forever(watch) -> None:
    while True:
        await watch()


async def _close(exchange) -> None:
    """Close the sockets (waiting at most ``_CLOSE_WAIT_S`` for each close handshake),
    then the exchange's HTTP session: nothing left open, no warning at exit."""
    closing = [asyncio.ensure_future(client.close())
               for client in list((exchange.clients or {}).values())]
    if closing:
        _, late = await asyncio.wait(closing, timeout=_CLOSE_WAIT_S)
        for task in late:
            task.cancel()  # aiohttp then drops the socket without the handshake
        await asyncio.gather(*closing, return_exceptions=True)
    try:
        await exchange.close()
    except Exception:  # noqa: BLE001, S110 - closing a broken session: it is gone either way
        pass


def _check_exchange(exchange_id: str, sandbox: bool) -> None:
    if exchange_id not in ccxt.pro.exchanges:
        close = difflib.get_close_matches(exchange_id, ccxt.pro.exchanges, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"{exchange_id}: ccxt streams no WebSocket data for it (not one "
                          f"of ccxt.pro's {len(ccxt.pro.exchanges)} exchanges){hint}; set "
                          "stream: false for this venue to poll its REST API")
    exchange = getattr(ccxt.pro, exchange_id)()
    if not exchange.has.get("watchOHLCV"):
        raise ConfigError(f"{exchange_id}: ccxt streams no candles for it; set stream: "
                          "false for this venue to poll its REST API")
    if sandbox and not exchange.urls.get("test"):
        raise ConfigError(f"{exchange_id} has no sandbox (test network) in ccxt; drop "
                          "sandbox or use stream_url")


def _replaced(urls, url: str):
    """``urls`` (a string or nested dicts) with every URL in it replaced by ``url``."""
    if isinstance(urls, dict):
        return {name: _replaced(value, url) for name, value in urls.items()}
    return url if isinstance(urls, str) and "://" in urls else urls


def _detail(error: BaseException) -> str:
    text = " ".join(redact(f"{error}" or type(error).__name__).split())
    return text if len(text) <= _MESSAGE_CHARS else text[:_MESSAGE_CHARS] + "..."
