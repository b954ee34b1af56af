"""The always-on runner's market data: venue streams kept alive, with a heartbeat.

A :class:`FeedWatch` runs one venue stream (:mod:`mmats.brokers.streams`) for one
market's symbols in its own thread, in a reconnect loop with exponential back-off. Every
message, heartbeats included, resets its silence timer; a stream silent for
``heartbeat_s`` (the usual failure: the socket stays open and nothing comes) is dropped
and reconnected. Closed bars are kept in memory, de-duplicated (a bar at or before the
newest closed one of its symbol is dropped and counted: out-of-order and repeated
messages); a venue that streams no candles (OANDA) gets its bars from ticks
(:class:`~mmats.brokers.streams.BarBuilder`), closed by the clock at the bar's end.

The bars reach the store through the tick's own sync, unchanged: a
:class:`StreamedSource` is the feed's candle source (``fetch_candles``). It answers from
the stream when the stream holds the bars asked for, one after the other, and otherwise
asks the venue's REST API: after a reconnect the bars missed meanwhile are back-filled
from REST, and while the stream is down the market is polled over REST (REST polling is
the stream's failover feed). The store's idempotent append means nothing is stored
twice. When REST fails too, the tick's sync fails over to the market's backup feeds as
it always has, and beyond ``stale_after_bars`` the stale-data halt acts as today.

Every loss, silence and recovery is an event (:class:`FeedEvent`) that the service hands
to its next tick, which journals it as a risk event and notifies it.
"""

from __future__ import annotations

import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd

from mmats.brokers.base import BrokerError
from mmats.brokers.streams import HEARTBEAT, BarBuilder, StreamBar, StreamClosed, StreamTick
from mmats.data.calendar import timeframe_ns
from mmats.data.schema import candles_from_arrays

KEEP_BARS = 2_000  # closed bars kept per symbol (the REST back-fill covers older ones)
TICK_CLOSE_GRACE_NS = 250_000_000  # a bar built from ticks closes this long after its end
REST_GRACE_NS = 2_000_000_000  # a bar the stream has not sent this long after it closed: REST


@dataclass(frozen=True)
class FeedEvent:
    """Something the journal and the operator must hear about a stream."""

    level: str  # INFO | WARNING | CRITICAL
    market: str
    kind: str  # stream_silent | stream_lost | stream_restored | stream_failed
    message: str
    ts_ns: int
    data: dict = field(default_factory=dict)


class FeedWatch:
    """One stream (``stream``: a :class:`~mmats.brokers.streams.BarStream`) for one
    market's ``symbols`` at ``timeframe``, kept alive in a thread.

    ``on_close(market, symbol, close_ns)`` hears every new closed bar; ``on_event``
    every :class:`FeedEvent`. ``clock`` is the wall clock in ns (the soak test passes an
    accelerated one); ``monotonic`` times the silences and back-offs.
    """

    def __init__(self, market: str, feed: str, stream, symbols: tuple[str, ...],
                 timeframe: str, *, heartbeat_s: float = 10.0,
                 backoff_s: tuple[float, float] = (0.5, 30.0),
                 on_close: Callable[[str, str, int], None] | None = None,
                 on_event: Callable[[FeedEvent], None] | None = None,
                 clock: Callable[[], int] = time.time_ns,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.market, self.feed, self.stream = market, feed, stream
        self.symbols, self.timeframe = tuple(symbols), timeframe
        self.step_ns = timeframe_ns(timeframe)
        self.heartbeat_s, self.backoff_s = heartbeat_s, backoff_s
        self.on_close, self.on_event = on_close, on_event
        self.clock, self.monotonic = clock, monotonic
        self.state = "stopped"  # connecting | live | reconnecting | failed | stopped
        self.connects = self.losses = self.silences = 0
        self.duplicates = 0  # closed bars dropped as repeated or out of order
        self.partial_bars = 0  # bars from ticks begun before the connection: left to REST
        self._heard_from_ns = None  # the clock at the current connection's first message
        self._last_heard_ns = 0  # the clock at its latest message
        self._unconfirmed: list[StreamBar] = []  # bars from ticks awaiting a later message
        self.last_message_s: float | None = None
        self.last_error: str | None = None
        self._lock = threading.Lock()
        self._closed: dict[str, OrderedDict[int, StreamBar]] = {s: OrderedDict()
                                                                  for s in self.symbols}
        self._newest: dict[str, int] = {}
        self._forming: dict[str, StreamBar] = {}
        self._builders = ({s: BarBuilder(s, timeframe, self.step_ns) for s in self.symbols}
                          if getattr(stream, "bars_from_ticks", False) else {})
        self._stop = threading.Event()
        self._connection_ok = False  # a message arrived on the current connection
        self._was_lost = False
        self._threads: list[threading.Thread] = []
        self.on_tick: Callable[[StreamTick], None] | None = None  # the tick recorder

    # -- life -----------------------------------------------------------------------
    def start(self) -> FeedWatch:
        self._stop.clear()
        self._threads = [
            threading.Thread(target=self._run, name=f"stream-{self.market}", daemon=True),
            threading.Thread(target=self._watch, name=f"heartbeat-{self.market}",
                             daemon=True)]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the stream and its timer; returns once both threads have ended (or
        ``timeout_s`` has passed)."""
        self._stop.set()
        self._close_stream()
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self.state = "stopped"

    @property
    def live(self) -> bool:
        """Whether the stream is connected and has spoken within the heartbeat window."""
        return self.state == "live"

    # -- the bars ---------------------------------------------------------------------
    def closed_run(self, symbol: str, since_ns: int, limit: int) -> list[StreamBar]:
        """The closed bars of ``symbol`` opening at ``since_ns``, ``since_ns + step``, ...
        one after the other, up to ``limit``: empty when the stream lacks the first."""
        with self._lock:
            bars = self._closed.get(symbol)
            run = []
            at = since_ns
            while bars is not None and at in bars and len(run) < limit:
                run.append(bars[at])
                at += self.step_ns
            return run

    def newest_closed_ns(self, symbol: str) -> int | None:
        """Open time of the newest closed bar of ``symbol`` the stream has sent."""
        with self._lock:
            return self._newest.get(symbol)

    def health(self) -> dict:
        """State, silence and counters, for ``/health``."""
        now = self.monotonic()
        with self._lock:
            newest = dict(self._newest)
            forming = {s: bar.close for s, bar in self._forming.items()}
        return {
            "feed": self.feed, "state": self.state,
            "silent_s": None if self.last_message_s is None
            else round(now - self.last_message_s, 3),
            "connects": self.connects, "losses": self.losses, "silences": self.silences,
            "duplicates": self.duplicates, "last_error": self.last_error,
            "newest_closed_ns": newest, "last_price": forming,
        }

    # -- the threads --------------------------------------------------------------------
    def _run(self) -> None:
        """Connect, read until the stream fails, wait, reconnect: until stopped."""
        attempt = 0
        while not self._stop.is_set():
            self.state = "connecting" if not self._was_lost else "reconnecting"
            self._connection_ok = False
            self.connects += 1
            self.last_message_s = self.monotonic()  # the heartbeat window starts now
            self._heard_from_ns = None
            reason, fatal = None, False
            try:
                self.stream.run(self.symbols, self.timeframe, self._emit, self._stop)
                if not self._stop.is_set():
                    reason = "the stream ended"
            except StreamClosed as error:
                reason = str(error)
            except BrokerError as error:  # keys, symbols: reconnecting will not fix it soon
                reason, fatal = str(error), True
            except Exception as error:  # noqa: BLE001 - a stream bug must not end the watch
                reason = f"unexpected {type(error).__name__}: {error}"
            if self._stop.is_set():
                break
            attempt = 0 if self._connection_ok else attempt + 1
            self._lost(reason, fatal)
            self._stop.wait(self._delay(attempt, fatal))

    def _delay(self, attempt: int, fatal: bool) -> float:
        """Exponential back-off with jitter; the longest wait after a fatal error."""
        first, most = self.backoff_s
        if fatal:
            return most
        return min(most, first * 2 ** attempt) * (0.8 + 0.4 * random.random())

    def _watch(self) -> None:
        """The heartbeat timer (and the clock that closes bars built from ticks)."""
        while not self._stop.wait(0.05):
            if self._builders:
                now = self.clock() - TICK_CLOSE_GRACE_NS
                for builder in self._builders.values():
                    with self._lock:
                        done = builder.close_due(now)
                    for bar in done:
                        self._built_bar(bar)
            if self.state not in ("connecting", "reconnecting", "live"):
                continue
            last = self.last_message_s
            if last is not None and self.monotonic() - last > self.heartbeat_s:
                self.silences += 1
                self.last_message_s = self.monotonic()  # one event per silent window
                if not self._was_lost:  # a reconnect that stays silent: the same outage
                    self._event("WARNING", "stream_silent",
                                f"{self.market}: {self.feed} stream silent for "
                                f"{self.heartbeat_s:g} s; reconnecting, candles from REST "
                                "meanwhile", {"heartbeat_s": self.heartbeat_s})
                self._close_stream()

    def _close_stream(self) -> None:
        try:
            self.stream.close()
        except Exception:  # noqa: BLE001, S110 - closing a broken stream may fail; it is gone
            pass

    def _emit(self, message) -> None:
        """Every message the stream reads: the heartbeat window restarts."""
        self.last_message_s = self.monotonic()
        self._last_heard_ns = self.clock()
        if not self._connection_ok:
            self._heard_from_ns = self._last_heard_ns
            self._connection_ok = True
            self.state = "live"
            self.last_error = None
            if self._was_lost:
                self._was_lost = False
                self._event("INFO", "stream_restored",
                            f"{self.market}: {self.feed} stream back; missed bars are "
                            "back-filled from REST", {})
        if message == HEARTBEAT:
            self._confirm()
            return
        if isinstance(message, StreamBar):
            if message.symbol not in self._closed:
                return
            if message.closed:
                self._closed_bar(message)
            else:
                with self._lock:
                    self._forming[message.symbol] = message
        elif isinstance(message, StreamTick):
            if self.on_tick is not None:
                self.on_tick(message)
            builder = self._builders.get(message.symbol)
            if builder is not None:
                with self._lock:
                    done = builder.add(message)
                    forming = builder.forming()
                    if forming is not None:
                        self._forming[message.symbol] = forming
                for bar in done:
                    self._built_bar(bar)
            self._confirm()

    def _built_bar(self, bar: StreamBar) -> None:
        """A bar built from ticks is whole only if the stream was heard from before it
        opened until after it ended. One begun before the connection's first message (the
        first after a connect, the one a reconnect cut) is left to the REST back-fill,
        which has the venue's own; one closed by the clock waits for the next message
        (a tick, or a heartbeat: OANDA's come every 5 s), and is dropped too if the
        connection is lost first: ticks of its last moments may be missing."""
        if self._heard_from_ns is None or bar.open_ns < self._heard_from_ns:
            self.partial_bars += 1
            return
        with self._lock:
            self._unconfirmed.append(bar)
        self._confirm()

    def _confirm(self) -> None:
        with self._lock:
            ready = [b for b in self._unconfirmed if b.open_ns + self.step_ns <= self._last_heard_ns]
            self._unconfirmed = [b for b in self._unconfirmed if b not in ready]
        for bar in ready:
            self._closed_bar(bar)

    def _closed_bar(self, bar: StreamBar) -> None:
        with self._lock:
            newest = self._newest.get(bar.symbol)
            if newest is not None and bar.open_ns <= newest:
                self.duplicates += 1
                return
            bars = self._closed[bar.symbol]
            bars[bar.open_ns] = bar
            while len(bars) > KEEP_BARS:
                bars.popitem(last=False)
            self._newest[bar.symbol] = bar.open_ns
            self._forming.pop(bar.symbol, None)
        if self.on_close is not None:
            self.on_close(self.market, bar.symbol, bar.open_ns + self.step_ns)

    def _lost(self, reason: str | None, fatal: bool) -> None:
        with self._lock:
            self.partial_bars += len(self._unconfirmed)
            self._unconfirmed = []
        self.losses += 1
        self.last_error = reason
        first_loss = not self._was_lost
        self._was_lost = True
        self.state = "failed" if fatal else "reconnecting"
        if fatal:
            self._event("CRITICAL", "stream_failed",
                        f"{self.market}: {self.feed} stream refused: {reason}; candles from "
                        f"REST, retrying every {self.backoff_s[1]:g} s", {"error": reason})
        elif first_loss:  # once per outage, not at every failed reconnect
            self._event("WARNING", "stream_lost",
                        f"{self.market}: {self.feed} stream lost ({reason}); reconnecting "
                        "with back-off, candles from REST meanwhile", {"error": reason})

    def _event(self, level: str, kind: str, message: str, data: dict) -> None:
        if self.on_event is not None:
            self.on_event(FeedEvent(level, self.market, kind, message, self.clock(),
                                    {"feed": self.feed, **data}))


class StreamedSource:
    """A live feed's candle source for the tick's sync: the stream's bars when it has
    them, else the venue's REST adapter (``rest``: anything with ``fetch_candles``).

    Asked for the bars from ``since_ms``: if the stream is live and holds the bar opening
    then, the run of bars it holds from there; if the stream is live and that bar closed
    less than :data:`REST_GRACE_NS` ago, nothing yet (the stream's close event will come);
    otherwise REST, which back-fills whatever the stream missed."""

    def __init__(self, rest, watches: list[FeedWatch], clock: Callable[[], int] = time.time_ns):
        self.rest, self.clock = rest, clock
        self.watches = {(symbol, watch.timeframe): watch for watch in watches
                        for symbol in watch.symbols}
        self.rest_calls = 0
        self.stream_pages = 0

    def fetch_candles(self, symbol: str, timeframe: str, since_ms: int | None,
                      limit: int = 1000) -> pd.DataFrame:
        watch = self.watches.get((symbol, timeframe))
        if watch is not None and watch.live and since_ms is not None:
            since_ns = int(since_ms) * 1_000_000
            run = watch.closed_run(symbol, since_ns, int(limit))
            if run:
                self.stream_pages += 1
                return _frame(run)
            if self.clock() < since_ns + watch.step_ns + REST_GRACE_NS:
                return _frame([])
        self.rest_calls += 1
        return self.rest.fetch_candles(symbol, timeframe, since_ms, limit)

    def __getattr__(self, name):  # the REST adapter's other methods (order_book, ...)
        return getattr(self.rest, name)


def _frame(bars: list[StreamBar]) -> pd.DataFrame:
    import numpy as np

    return candles_from_arrays(
        np.array([bar.open_ns for bar in bars], dtype=np.int64),
        {name: np.array([getattr(bar, name) for bar in bars], dtype=np.float64)
         for name in ("open", "high", "low", "close", "volume")})
