"""Live market-data streams: what a venue's streaming adapter hands the runner.

A stream adapter (:mod:`mmats.brokers.ccxt_stream` for Binance through ccxt's WebSocket
side, :mod:`mmats.brokers.oanda_stream` for OANDA's v20 pricing stream) connects,
subscribes and calls ``emit`` with every message it reads, normalised to three shapes:

- :class:`StreamBar`: a candle of the subscribed timeframe, in the store's units (open
  time in ns UTC, OHLCV floats); ``closed`` says the venue has finished it. Only a closed
  bar is ever stored or acted on: a live run must not see a bar the backtest never saw.
- :class:`StreamTick`: a trade or a quote (OANDA prices, Binance trades / book tickers).
  A venue that streams no candles (OANDA) gets its bars from ticks by :class:`BarBuilder`.
- :data:`HEARTBEAT`: the venue's keep-alive. It carries no data but proves the socket is
  alive: the feed watch (:mod:`mmats.live.feed_watch`) treats *no message of any kind*
  for its heartbeat window as a fault, since a silent socket is the usual failure.

The adapter's :meth:`BarStream.run` blocks in its own thread until ``stop`` is set
(return) or the connection fails (raise :class:`StreamClosed`); reconnecting, back-off,
REST back-fill and failover are the feed watch's, not the adapter's.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from mmats.brokers.base import BrokerError

HEARTBEAT = "heartbeat"


@dataclass(frozen=True)
class StreamBar:
    """One candle from a stream: ``open_ns`` is its open time (ns UTC, the store's
    ``ts``); ``closed`` is True once the venue has finished it."""

    symbol: str
    timeframe: str
    open_ns: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    closed: bool


@dataclass(frozen=True)
class StreamTick:
    """One trade or quote: ``price`` is the trade price or the quote's mid; ``size`` the
    traded amount (None for a quote); ``bid``/``ask`` the quote's sides, when known."""

    symbol: str
    ts_ns: int
    price: float
    size: float | None = None
    bid: float | None = None
    ask: float | None = None


class StreamClosed(BrokerError):
    """The stream's connection dropped, or could not be made: the feed watch reconnects."""


@runtime_checkable
class BarStream(Protocol):
    """A venue's stream of bars and ticks for some symbols at one timeframe."""

    venue: str

    def run(self, symbols: tuple[str, ...], timeframe: str,
            emit: Callable[[object], None], stop: threading.Event) -> None:
        """Connect, subscribe and ``emit`` every message (a :class:`StreamBar`, a
        :class:`StreamTick` or :data:`HEARTBEAT`) until ``stop`` is set, then return.
        Raises :class:`StreamClosed` when the connection drops or cannot be made, and
        other :class:`~mmats.brokers.base.BrokerError` for what reconnecting cannot fix
        (bad keys, an unknown symbol). Returns within about a second of ``stop`` being set,
        even on a silent socket."""

    def close(self) -> None:
        """Drop the connection now (from another thread): a :meth:`run` in progress
        raises :class:`StreamClosed` or returns. The feed watch calls it on a silent
        socket."""


class BarBuilder:
    """Candles of one timeframe from ticks, for venues that stream no candles.

    A tick belongs to the bar whose ``[open, open + step)`` holds its time. The bar is
    closed by the first tick of a later bar, or by :meth:`close_due` once the clock has
    passed its end (ticks never arrive on a quiet market). A tick older than the newest
    closed bar (out of order, late) is dropped and counted. Volume is the count of ticks
    when the ticks carry no size (OANDA's convention for its own candles)."""

    def __init__(self, symbol: str, timeframe: str, step_ns: int) -> None:
        self.symbol, self.timeframe, self.step_ns = symbol, timeframe, step_ns
        self._bar: list | None = None  # [open_ns, open, high, low, close, volume]
        self.closed_until_ns = -1  # ticks before this are late
        self.late_ticks = 0

    def add(self, tick: StreamTick) -> list[StreamBar]:
        """Take a tick; return the bars it closed (none, or the one before it)."""
        if tick.ts_ns < self.closed_until_ns:
            self.late_ticks += 1
            return []
        open_ns = tick.ts_ns - tick.ts_ns % self.step_ns
        amount = 1.0 if tick.size is None else float(tick.size)
        done = []
        if self._bar is not None and open_ns > self._bar[0]:
            done = self._close()
        if self._bar is None:
            self._bar = [open_ns, tick.price, tick.price, tick.price, tick.price, amount]
        elif open_ns < self._bar[0]:  # older than the bar forming, newer than closed ones
            self.late_ticks += 1
        else:
            bar = self._bar
            bar[2], bar[3] = max(bar[2], tick.price), min(bar[3], tick.price)
            bar[4] = tick.price
            bar[5] += amount
        return done

    def close_due(self, now_ns: int) -> list[StreamBar]:
        """Close the forming bar once ``now_ns`` is at or past its end."""
        if self._bar is not None and now_ns >= self._bar[0] + self.step_ns:
            return self._close()
        return []

    def forming(self) -> StreamBar | None:
        """The bar still forming, if any (never stored)."""
        if self._bar is None:
            return None
        return StreamBar(self.symbol, self.timeframe, *self._bar, closed=False)

    def _close(self) -> list[StreamBar]:
        bar, self._bar = self._bar, None
        self.closed_until_ns = bar[0] + self.step_ns
        return [StreamBar(self.symbol, self.timeframe, *bar, closed=True)]


def open_stream(venue, *, keys: dict | None = None) -> BarStream:
    """The stream adapter of a :class:`~mmats.live.config.VenueConfig`: OANDA's pricing
    stream (its account id and token in ``keys``) or ccxt's WebSocket side for a ccxt
    exchange; ``venue.stream_url`` points it elsewhere (a proxy, the tests' servers)."""
    keys = keys or {}
    if venue.exchange == "oanda":
        from mmats.brokers.oanda_stream import OandaPricingStream

        return OandaPricingStream(keys.get("account_id"), keys.get("token"),
                                  practice=venue.sandbox, stream_url=venue.stream_url,
                                  timeout_s=venue.timeout_s)
    from mmats.brokers.ccxt_stream import CcxtStream

    return CcxtStream(venue.exchange, ws_url=venue.stream_url, base_url=venue.base_url,
                      sandbox=venue.sandbox,
                      ticks=venue.ticks, timeout_s=venue.timeout_s)
