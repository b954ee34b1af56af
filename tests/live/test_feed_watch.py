"""The feed watch: a stream kept alive by its heartbeat, its bars de-duplicated, and the
candle source that serves them to the tick's sync with REST filling every gap.

The stream here is scripted (a real :class:`~mmats.brokers.streams.BarStream` whose
connections follow a script: messages, silence, a drop), so each fault happens exactly
when the test says; the venues' own adapters are tested against local servers in
tests/venues. REST is the real candle store under the sample data."""

import queue
import threading
import time

import numpy as np
import pandas as pd
import pytest

from mmats.brokers.base import AuthenticationFailed
from mmats.brokers.streams import HEARTBEAT, StreamBar, StreamClosed, StreamTick
from mmats.data.fetch import fetch_into_store
from mmats.data.store import CandleStore
from mmats.live.feed_watch import REST_GRACE_NS, FeedWatch, StreamedSource

MIN = 60_000_000_000
T0 = pd.Timestamp("2026-01-05T10:00", tz="UTC").value


def bar(i: int, closed: bool = True, symbol: str = "BTC/USDT") -> StreamBar:
    price = 100.0 + i
    return StreamBar(symbol, "1m", T0 + i * MIN, price, price + 1, price - 1, price + 0.5,
                     10.0 + i, closed)


class ScriptedStream:
    """Each connection plays the next script: a list of messages to emit, then one of
    "silent" (nothing until closed), "drop" (the connection fails), "fatal" (bad keys) or
    "hold" (stay connected, quiet but for heartbeats, until stopped)."""

    venue = "scripted"

    def __init__(self, *scripts, bars_from_ticks: bool = False):
        self.scripts = queue.Queue()
        for script in scripts:
            self.scripts.put(script)
        self.bars_from_ticks = bars_from_ticks
        self._closed = threading.Event()
        self.connections = 0

    def run(self, symbols, timeframe, emit, stop):
        self.connections += 1
        self._closed.clear()
        try:
            script = self.scripts.get(timeout=0.5)
        except queue.Empty:
            raise StreamClosed("scripted venue refuses: no script left") from None
        *messages, end = script
        for message in messages:
            if callable(message):
                message = message()
            emit(message)
        if end == "drop":
            raise StreamClosed("connection reset by the scripted venue")
        if end == "fatal":
            raise AuthenticationFailed("scripted venue: invalid API key")
        while not stop.is_set():
            if self._closed.wait(0.05):
                raise StreamClosed("closed by the feed watch")
            if end == "hold":
                emit(HEARTBEAT)
                time.sleep(0.05)

    def close(self):
        self._closed.set()


def watch_of(stream, heartbeat_s=5.0, clock=time.time_ns, symbols=("BTC/USDT",)):
    events, closes = [], []
    watch = FeedWatch("crypto", "binance", stream, symbols, "1m", heartbeat_s=heartbeat_s,
                      backoff_s=(0.05, 0.4), on_close=lambda *a: closes.append(a),
                      on_event=events.append, clock=clock)
    return watch, events, closes


def wait_for(predicate, timeout_s=5.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    raise AssertionError("timed out")


def test_closed_bars_kept_once_forming_ones_never_served():
    stream = ScriptedStream([bar(0), bar(1, closed=False), bar(1), bar(1), bar(0), bar(2),
                             "hold"])
    watch, events, closes = watch_of(stream)
    watch.start()
    try:
        wait_for(lambda: len(closes) == 3)
        assert watch.live
        assert [b.open_ns for b in watch.closed_run("BTC/USDT", T0, 10)] == [
            T0, T0 + MIN, T0 + 2 * MIN]
        assert watch.duplicates == 2  # the repeated bar 1 and the late bar 0
        assert closes == [("crypto", "BTC/USDT", T0 + (i + 1) * MIN) for i in range(3)]
        assert watch.closed_run("BTC/USDT", T0 + 3 * MIN, 10) == []
        assert events == []
    finally:
        watch.stop()
    assert watch.state == "stopped"


def test_a_silent_stream_is_dropped_and_reconnected_with_events():
    stream = ScriptedStream([bar(0), "silent"], [bar(1), "hold"])
    watch, events, closes = watch_of(stream, heartbeat_s=0.3)
    watch.start()
    try:
        wait_for(lambda: len(closes) == 2)
    finally:
        watch.stop()
    kinds = [event.kind for event in events]
    assert kinds[:2] == ["stream_silent", "stream_lost"] and "stream_restored" in kinds
    assert stream.connections == 2 and watch.silences == 1
    assert events[0].market == "crypto" and events[0].data["feed"] == "binance"
    assert "silent for 0.3 s" in events[0].message


def test_repeated_failures_are_one_outage_with_back_off():
    stream = ScriptedStream([bar(0), "drop"], ["drop"], ["drop"], ["drop"], [bar(1), "hold"])
    watch, events, closes = watch_of(stream)
    started = time.monotonic()
    watch.start()
    try:
        wait_for(lambda: len(closes) == 2)
        took = time.monotonic() - started
    finally:
        watch.stop()
    assert [event.kind for event in events] == ["stream_lost", "stream_restored"]
    assert stream.connections == 5
    assert took >= 0.05 * 0.8 * (1 + 2 + 4)  # waits doubled while nothing came through


def test_a_refused_stream_is_critical_and_retried_at_the_longest_wait():
    stream = ScriptedStream(["fatal"])
    watch, events, _ = watch_of(stream)
    watch.start()
    try:
        wait_for(lambda: events)
        assert watch.state == "failed" and not watch.live
    finally:
        watch.stop()
    assert events[0].level == "CRITICAL" and events[0].kind == "stream_failed"
    assert "invalid API key" in events[0].message


def test_bars_built_from_ticks_close_on_the_clock():
    now = [T0 - 1_000_000_000]  # connected a second before the bar opens
    ticks = [StreamTick("EUR/USD", T0 + s * 1_000_000_000, 1.1 + s / 1e4) for s in (1, 5, 9)]
    stream = ScriptedStream([*ticks, "hold"], bars_from_ticks=True)
    watch, events, closes = watch_of(stream, clock=lambda: now[0], symbols=("EUR/USD",))
    watch.start()
    try:
        wait_for(lambda: watch.live)
        now[0] = T0 + 30_000_000_000
        time.sleep(0.2)
        assert closes == []  # the bar is still forming
        now[0] = T0 + MIN + 300_000_000  # past the bar's end and the grace
        wait_for(lambda: closes)
    finally:
        watch.stop()
    [built] = watch.closed_run("EUR/USD", T0, 5)
    assert (built.open, built.high, built.low, built.close, built.volume) == pytest.approx(
        (1.1001, 1.1009, 1.1001, 1.1009, 3.0))


def test_a_bar_from_ticks_begun_before_the_connection_is_left_to_rest():
    """Connected mid-bar: that bar's ticks are a part of it, never stored as the bar."""
    now = [T0 + 30_000_000_000]
    ticks = [StreamTick("EUR/USD", T0 + s * 1_000_000_000, 1.1) for s in (31, 40)]
    later = [StreamTick("EUR/USD", T0 + MIN + s * 1_000_000_000, 1.2) for s in (1, 2)]
    stream = ScriptedStream([*ticks, *later, "hold"], bars_from_ticks=True)
    watch, _, closes = watch_of(stream, clock=lambda: now[0], symbols=("EUR/USD",))
    watch.start()
    try:
        wait_for(lambda: watch.partial_bars == 1)
        now[0] = T0 + 2 * MIN + 300_000_000
        wait_for(lambda: closes)
    finally:
        watch.stop()
    assert watch.closed_run("EUR/USD", T0, 5) == []
    [whole] = watch.closed_run("EUR/USD", T0 + MIN, 5)
    assert whole.volume == 2.0 and closes == [("crypto", "EUR/USD", T0 + 2 * MIN)]


class Rest:
    """The REST side: the real candle store's bars, counted."""

    def __init__(self, frame):
        self.frame, self.calls = frame, []

    def fetch_candles(self, symbol, timeframe, since_ms, limit=1000):
        self.calls.append(since_ms)
        ts = self.frame["ts"].to_numpy(dtype="M8[ns]").view(np.int64) // 1_000_000
        return self.frame[ts >= since_ms].iloc[:limit].reset_index(drop=True)


def rest_frame(n):
    from mmats.data.schema import candles_from_arrays

    bars = [bar(i) for i in range(n)]
    return candles_from_arrays(np.array([b.open_ns for b in bars]),
                               {c: np.array([getattr(b, c) for b in bars])
                                for c in ("open", "high", "low", "close", "volume")})


def test_the_sync_stores_streamed_bars_and_back_fills_the_gap_from_rest(tmp_path):
    """Bars 0-2 streamed, the stream lost while 3-5 closed, back with 6-7: the store gets
    0-7 exactly once, 3-5 from REST; a live stream current to the clock costs no REST."""
    now = [T0 + 3 * MIN]
    stream = ScriptedStream([bar(0), bar(1), bar(2), "silent"], [bar(6), bar(7), "hold"])
    watch, _, closes = watch_of(stream, clock=lambda: now[0])
    rest = Rest(rest_frame(8))
    source = StreamedSource(rest, [watch], clock=lambda: now[0])
    store = CandleStore(tmp_path)

    def sync():
        fetch_into_store(source, store, "binance", "BTC/USDT", "1m", since=T0,
                         now_ms=now[0] // 1_000_000, backfill=False, summarise=False)

    watch.start()
    try:
        wait_for(lambda: len(closes) == 3)
        sync()
        assert rest.calls == [] and source.stream_pages == 1
        now[0] = T0 + 8 * MIN
        stream.close()  # the connection drops; the next one starts at bar 6
        wait_for(lambda: len(closes) == 5)
        sync()
    finally:
        watch.stop()
    stored = store.read("binance", "BTC/USDT", "1m")
    assert len(stored) == 8 and stored["ts"].is_unique and stored["ts"].is_monotonic_increasing
    assert rest.calls == [(T0 + 3 * MIN) // 1_000_000]  # one page back-filled 3-7
    pd.testing.assert_frame_equal(stored.reset_index(drop=True), rest.frame,
                                  check_dtype=False, check_index_type=False)


def test_a_live_stream_is_given_a_moment_before_rest_is_asked():
    now = [T0 + MIN + 100_000_000]
    stream = ScriptedStream([bar(-1), "hold"])
    watch, _, _ = watch_of(stream, clock=lambda: now[0])
    rest = Rest(rest_frame(3))
    source = StreamedSource(rest, [watch], clock=lambda: now[0])
    watch.start()
    try:
        wait_for(lambda: watch.live)
        assert source.fetch_candles("BTC/USDT", "1m", T0 // 1_000_000).empty
        assert rest.calls == []
        now[0] = T0 + MIN + REST_GRACE_NS + 1  # the stream never sent bar 0: REST
        assert len(source.fetch_candles("BTC/USDT", "1m", T0 // 1_000_000)) == 3
        assert rest.calls == [T0 // 1_000_000]
    finally:
        watch.stop()
