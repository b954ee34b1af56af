"""The always-on runner (``mmats live --serve``): the cron tick, run at every bar close.

The service does not trade by itself: every tick is :func:`mmats.live.control.tick_once`,
the one ``--once`` runs, under the same lock, with the same journal transactions (one
per bar close), client ids and fail-safes, so a ``kill -9`` at any moment leaves what a
killed cron tick leaves, and the restarted service recovers exactly as the next cron tick
would (crash-only). What the service adds is *when* a tick runs and where its candles
come from:

- **streams** (:mod:`mmats.live.feed_watch`): a market whose primary feed is a venue
  with a stream (Binance through ccxt's WebSocket side, OANDA's pricing stream) is
  watched continuously; when every symbol's bar of a close has arrived (or
  ``gather_s`` after the first), the tick runs at once and its sync stores the streamed
  bars (REST back-fills what a stream missed, and replaces a stream that is down);
- **its clock** for the other markets (stored feeds, REST-only venues, a stream that is
  down): a tick ``settle_s`` after each bar close;
- **the kill request**, checked between every step of the loop: a kill made by
  ``mmats live kill``, the dashboard or the bot is booked by a tick at once, not at the
  next bar;
- ``/health`` on loopback (:mod:`mmats.live.health`), and systemd's notify protocol
  (:mod:`mmats.live.systemd`): READY once serving, WATCHDOG from the main loop only (a
  hung loop stops the pings and systemd restarts it), STOPPING on the way out;
- a graceful stop on SIGTERM or SIGINT: the tick in progress finishes (its transactions
  commit, the lock is released), the streams close, the adapters holding API keys are
  dropped, and the process exits 0.

The clock may be a :class:`RehearsalClock` (``--clock 2021-03-01T00:00@60``): time
starts where it says and runs that many times faster, for rehearsals on stored data and
for the soak benchmark against the local venues.
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from mmats.data.calendar import timeframe_ns
from mmats.errors import ConfigError, MMATSError
from mmats.live import kill as killswitch
from mmats.live.config import RunnerConfig
from mmats.live.feed_watch import REST_GRACE_NS, FeedEvent, FeedWatch, StreamedSource
from mmats.live.health import HealthServer
from mmats.live.systemd import CompileWatch, Notifier
from mmats.live.wiring import HeldJournal, RunnerBusy
from mmats.types import TradingState

STREAMING_EXCHANGES = ("binance", "binanceus", "oanda")  # with a tested stream adapter
HANG_S = 120.0  # /health says "down" when the loop has not turned for this long


class RehearsalClock:
    """Wall time that was ``start_ns`` at the wall time ``origin_ns`` (default: now) and
    runs ``speed`` times faster. Anchored to the wall clock, not to the process: processes
    given the same three numbers (the soak's venues and a restarted service) agree."""

    def __init__(self, start_ns: int, speed: float = 1.0, origin_ns: int | None = None) -> None:
        if not speed > 0:
            raise ConfigError(f"--clock: speed must be above 0, got {speed}")
        self.start_ns, self.speed = int(start_ns), float(speed)
        self.origin_ns = time.time_ns() if origin_ns is None else int(origin_ns)

    def __call__(self) -> int:
        return self.start_ns + int((time.time_ns() - self.origin_ns) * self.speed)

    def wall_ns(self, at_ns: int) -> int:
        """The wall time at which this clock reads ``at_ns``."""
        return self.origin_ns + int((at_ns - self.start_ns) / self.speed)


@dataclass
class _Pending:
    """Bar closes the streams announced and no tick has processed yet."""

    symbols: dict[tuple[str, int], set] = field(default_factory=dict)  # (market, close)
    first_seen: dict[tuple[str, int], float] = field(default_factory=dict)
    events: list[FeedEvent] = field(default_factory=list)


class Service:
    """One long-running runner for ``config``. ``streams`` (market name ->
    :class:`~mmats.brokers.streams.BarStream`) and ``rest`` (feed name -> candle source)
    replace the adapters built from ``venues:`` (the tests' local venues); ``clock`` is the
    wall clock in ns (a :class:`RehearsalClock` for a rehearsal)."""

    def __init__(self, config: RunnerConfig, *, mode: str | None = None,
                 cash: float = 10_000.0, live_trading_allowed: bool = False,
                 health_host: str = "127.0.0.1", health_port: int | None = 8787,
                 clock: Callable[[], int] | None = None, streams: dict | None = None,
                 rest: dict | None = None, settle_s: float = 1.0, gather_s: float = 0.5,
                 notifier: Notifier | None = None, say: Callable[[str], None] = print,
                 backoff_s: tuple[float, float] = (0.5, 30.0)) -> None:
        self.config, self.mode = config, mode or config.mode
        self.cash, self.live_trading_allowed = cash, live_trading_allowed
        self.clock = clock or time.time_ns
        self.speed = getattr(self.clock, "speed", 1.0)
        self.settle_ns = int(settle_s * 1e9)
        self.gather_s = gather_s
        self.notifier = notifier or Notifier()
        self.say = say
        self._stop = threading.Event()
        self._wake = threading.Condition()
        self._pending = _Pending()
        self._steps = {m.name: timeframe_ns(m.timeframe) for m in config.markets}
        self._next_close: dict[str, int] = {}
        self._retry: dict[str, tuple[float, float]] = {}  # market -> (when, wait) real s
        self._kill_ticked: str | None = None
        self.watches: dict[str, FeedWatch] = {}
        self.recorders: dict = {}  # feed -> TickRecorder, for venues with ticks:
        self.sources: dict = {}
        self._streams_given, self._rest_given = streams, rest
        self._backoff_s = backoff_s
        self.health_server = None
        if health_port is not None:
            self.health_server = HealthServer(self.health, health_host, health_port)
        self.started_ns = self.clock()
        self._loop_turned = time.monotonic()
        self.ticks = self.failed_ticks = 0
        self.last_tick: dict | None = None
        self.tick_log: list[dict] = []  # per tick: closes acted on and when (the soak)
        self._trading: dict = {}
        self._journal_head: int | None = None
        self._journal = HeldJournal()  # open from tick to tick (a cron tick opens its own)

    # -- the loop ---------------------------------------------------------------------------
    def run(self) -> int:
        """Serve until SIGTERM/SIGINT (or :meth:`stop`); returns the exit code, 0."""
        restore = self._install_signals()
        compile_watch = CompileWatch(self.notifier).__enter__()  # a compile is no hang
        try:
            self._start()
            self.notifier.ready(f"serving {self.config.source} ({self.mode}, "
                                f"{self.config.environment})")
            self._tick("start")  # first: a restart recovers before it connects streams
            self._start_streams()
            while not self._stop.is_set():
                self._turn()
        finally:
            self.notifier.stopping("stopping: the tick in progress finished")
            self._shutdown()
            compile_watch.__exit__()
            restore()
        return 0

    def stop(self) -> None:
        """Ask the loop to stop after the tick in progress (thread- and signal-safe)."""
        self._stop.set()
        with contextlib.suppress(RuntimeError):  # from a signal handler inside a wait
            if self._wake.acquire(blocking=False):
                try:
                    self._wake.notify_all()
                finally:
                    self._wake.release()

    def _turn(self) -> None:
        """One turn of the loop: ping the watchdog, wait for what is due, tick if due."""
        self.notifier.watchdog()
        self._loop_turned = time.monotonic()
        for recorder in self.recorders.values():
            if recorder.due():
                self._flush(recorder)
        reason, wait_s = self._due()
        if reason is None:
            with self._wake:
                if not self._stop.is_set():
                    self._wake.wait(min(wait_s, self.notifier.ping_interval_s(), 1.0))
            reason, _ = self._due()
        if reason is not None and not self._stop.is_set():
            self._tick(reason)

    def _due(self) -> tuple[str | None, float]:
        """Why a tick is due now (None: not yet), and how long until the clock's next
        deadline, in real seconds."""
        if killswitch.is_killed(self.config.journal):
            request = killswitch.read_request(self.config.journal) or {}
            key = f"{request.get('id')}:{request.get('ts_ns')}"
            if key != self._kill_ticked:
                self._kill_ticked = key
                return "kill", 0.0
        now_real = time.monotonic()
        gather_left = None  # real seconds until a close still missing a symbol is ticked
        with self._wake:
            for (market, close_ns), seen in self._pending.symbols.items():
                wanted = set(self.config.market(market).symbols)
                first = self._pending.first_seen[(market, close_ns)]
                if seen >= wanted or now_real - first >= self.gather_s:
                    return f"stream {market}", 0.0
                left = first + self.gather_s - now_real
                gather_left = left if gather_left is None else min(gather_left, left)
        for market, (when, _) in self._retry.items():
            if now_real >= when:
                return f"retry {market}", 0.0
        now = self.clock()
        wait_ns = None
        for market, close_ns in self._next_close.items():
            watch = self.watches.get(market)
            delay = REST_GRACE_NS + self.settle_ns if watch and watch.live else self.settle_ns
            left = close_ns + delay - now
            if left <= 0:
                return f"clock {market}", 0.0
            wait_ns = left if wait_ns is None else min(wait_ns, left)
        wait_s = 1.0 if wait_ns is None else wait_ns / 1e9 / self.speed
        return None, wait_s if gather_left is None else min(wait_s, gather_left)

    def _tick(self, reason: str) -> None:
        from mmats.live.control import tick_once

        with self._wake:
            events, self._pending.events = self._pending.events, []
            closes = [key for key in self._pending.symbols]
        announced = max((close for _, close in closes), default=0)
        now_ns = max(self.clock(), announced)
        started = time.monotonic()
        record = {"reason": reason, "now_ns": now_ns, "started": time.time(),
                  "closes": sorted({close for _, close in closes}), "ok": False}
        try:
            self._refresh_models(reason)
            report = tick_once(self.config, cash=self.cash, now_ns=now_ns, mode=self.mode,
                               sources=self.sources,
                               live_trading_allowed=self.live_trading_allowed,
                               feed_events=tuple(events), trace=self._progress,
                               held=self._journal)
        except RunnerBusy:  # a control holds the lock: try again shortly
            with self._wake:
                self._pending.events[:0] = events
            record["error"] = "runner busy"
            self._stop.wait(0.2)
            return
        except MMATSError as error:
            self._failed(record, error)
        except Exception as error:  # noqa: BLE001 - counted by tick_once; serve on
            self._failed(record, error)
        else:
            record.update(ok=True, bars=report.bars, fills=report.fills,
                          orders=report.orders, signals=len(report.signals),
                          newest_bar=dict(report.newest_bar))
            newest = min(report.newest_bar.values(), default=None)
            self.say(f"tick ({reason}) at {_iso(now_ns)}: {report.bars} bar(s), "
                     f"{len(report.signals)} signal(s), {report.orders} order(s), "
                     f"{report.fills} fill(s)" + ("" if newest is None else
                                                  f"; bars to {newest}"))
        record["duration_s"] = round(time.monotonic() - started, 4)
        record["finished"] = time.time()
        # The sleeves' states are read before the tick is published: a reader that sees
        # the tick counted (``/health``, a test waiting on ``ticks``) sees its outcome.
        self._read_trading()
        self.ticks += 1
        self.last_tick = record
        self.tick_log.append(record)
        del self.tick_log[:-10_000]
        with self._wake:
            for key in closes:
                if key[1] <= now_ns:
                    self._pending.symbols.pop(key, None)
                    self._pending.first_seen.pop(key, None)
        for market, step in self._steps.items():
            self._next_close[market] = (now_ns // step + 1) * step
        self._plan_retries(now_ns)

    def _refresh_models(self, reason: str) -> None:
        """Take up the active version of each model package before the tick (a version
        added or rolled back meanwhile decides from this tick). A kill's tick never
        waits on it: a package that cannot be loaded must not block a kill."""
        from mmats.live.config import refresh_models

        try:
            self.config = refresh_models(self.config)
        except MMATSError:
            if reason != "kill":
                raise

    def _plan_retries(self, now_ns: int) -> None:
        """A market whose trading sleeves still miss a bar that has closed (its feeds
        failed this tick: a REST burst during a stream outage) is ticked again soon, 1 s
        then doubling up to half a bar, not only at the next close."""
        from mmats.data.calendar import trading_ns_between
        from mmats.live.sleeves import CALENDAR_OF_MARKET

        for market in self.config.markets:
            step = self._steps[market.name]
            calendar = CALENDAR_OF_MARKET[market.type]
            behind = any(
                trading_ns_between(calendar, state["last_bar_ns"] + step, now_ns, step) >= step
                for state in self._trading.values()
                if isinstance(state, dict) and state.get("market") == market.name
                and state["state"] != "HALTED")
            if not behind:
                self._retry.pop(market.name, None)
                continue
            _, wait = self._retry.get(market.name, (0.0, 0.5))
            wait = min(wait * 2, max(1.0, step / 2e9 / self.speed))
            self._retry[market.name] = (time.monotonic() + wait, wait)

    def _progress(self, stage: str) -> None:
        """Each stage of a tick (each close of a long catch-up too) proves the loop alive:
        the watchdog hears it at most once a second, so only a tick stuck inside one stage
        gets the process restarted."""
        now = time.monotonic()
        if now - self._loop_turned >= 1.0:
            self._loop_turned = now
            self.notifier.watchdog()

    def _failed(self, record: dict, error: BaseException) -> None:
        self.failed_ticks += 1
        record["error"] = f"{type(error).__name__}: {error}"
        self.say(f"tick failed: {record['error']}")

    # -- streams --------------------------------------------------------------------------
    def _start(self) -> None:
        """The live feeds' REST candle sources, and /health."""
        from mmats.brokers.connect import open_venue

        given_rest = self._rest_given or {}
        for market in self.config.markets:
            feed = market.feed
            if self.config.is_live_feed(feed) and feed not in self.sources:
                rest = given_rest.get(feed)
                if rest is None:
                    rest = open_venue(self.config.venue(feed), symbols=market.symbols,
                                      keys=_data_keys(self.config.venue(feed)))
                self.sources[feed] = rest
        if self.health_server is not None:
            self.health_server.start()

    def _start_streams(self) -> None:
        """Streams for the markets that have one; their bars reach the tick through a
        :class:`StreamedSource` in front of the feed's REST source."""
        from mmats.brokers.streams import open_stream

        given_streams = self._streams_given or {}
        for market in self.config.markets:
            feed = market.feed
            venue = self.config.venue(feed)
            stream = given_streams.get(market.name)
            if (stream is None and self.config.is_live_feed(feed) and venue.stream
                    and _streams(venue.exchange)):
                stream = open_stream(venue, keys=_data_keys(venue))
            if stream is None:
                continue
            watch = FeedWatch(market.name, feed, stream, market.symbols, market.timeframe,
                              heartbeat_s=self.config.heartbeat_s, on_close=self._closed,
                              on_event=self._event, clock=self.clock,
                              backoff_s=self._backoff_s)
            self.watches[market.name] = watch
            recorder = self._recorder(feed) if venue.ticks else None
            if recorder is not None:
                watch.on_tick = recorder.add
        for feed in {w.feed for w in self.watches.values()}:
            watches = [w for w in self.watches.values() if w.feed == feed]
            self.sources[feed] = StreamedSource(self.sources.get(feed), watches, self.clock)
        for watch in self.watches.values():
            watch.start()

    def _recorder(self, feed: str):
        """The tick recorder of ``feed`` (one per feed), or None when the candle store is
        another environment's: ticks are never written into it, even when the first
        tick, which would have refused the store, failed for another reason."""
        from mmats.data.ticks import TickRecorder
        from mmats.live.environments import check_data_root

        if feed not in self.recorders:
            try:
                check_data_root(self.config.data_root, self.config.environment)
            except MMATSError as error:
                self.say(f"ticks of {feed} not recorded: {error}")
                return None
            self.recorders[feed] = TickRecorder(self.config.data_root, feed)
        return self.recorders[feed]

    def _closed(self, market: str, symbol: str, close_ns: int) -> None:
        with self._wake:
            key = (market, close_ns)
            self._pending.symbols.setdefault(key, set()).add(symbol)
            self._pending.first_seen.setdefault(key, time.monotonic())
            self._wake.notify_all()

    def _event(self, event: FeedEvent) -> None:
        self.say(f"[{event.level}] {event.message}")
        with self._wake:
            self._pending.events.append(event)
            self._wake.notify_all()

    def _flush(self, recorder) -> None:
        try:
            recorder.flush()
        except (OSError, MMATSError) as error:  # the ticks are a record, not a trade input
            self.say(f"ticks of {recorder.venue} not written: {error}")

    def _shutdown(self) -> None:
        self._journal.close()
        for watch in self.watches.values():
            watch.stop()
        for recorder in self.recorders.values():
            self._flush(recorder)
        if self.health_server is not None:
            self.health_server.stop()
        for source in list(self.sources.values()):
            _forget_keys(getattr(source, "rest", source))
        for watch in self.watches.values():
            _forget_keys(watch.stream)
        self.sources.clear()
        self.watches.clear()
        gc.collect()

    def _install_signals(self) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
        for sig in previous:
            signal.signal(sig, lambda *_: self.stop())

        def restore():
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return restore

    # -- /health ----------------------------------------------------------------------------
    def _read_trading(self) -> None:
        """After each tick: every sleeve's trading state and newest bar, the journal head."""
        from mmats.live.sleeves import sleeves

        trading = {}
        try:
            with self._journal.open(self.config, self.mode) as journal:
                for sleeve in sleeves(self.config, 1.0):
                    state = journal.load_state(sleeve.id)
                    trading[sleeve.id] = None if state is None else {
                        "state": TradingState(int(state[0]["trading_state"])).name,
                        "last_bar_ns": int(state[0]["last_bar_ts_ns"]),
                        "market": sleeve.market}
                self._journal_head = journal.head()[0]
        except (MMATSError, OSError) as error:
            trading = {"error": str(error)}
        self._trading = trading

    def health(self) -> dict:
        """What ``/health`` answers (any thread)."""
        now = self.clock()
        hung = time.monotonic() - self._loop_turned > max(HANG_S, 3 * self.notifier
                                                           .ping_interval_s())
        last = self.last_tick or {}
        markets = {}
        for market in self.config.markets:
            bars = [s["last_bar_ns"] for s in self._trading.values()
                    if isinstance(s, dict) and s.get("market") == market.name]
            step = self._steps[market.name]
            newest = max(bars) if bars else None
            watch = self.watches.get(market.name)
            markets[market.name] = {
                "feed": market.feed, "timeframe": market.timeframe,
                "last_bar": None if newest is None else _iso(newest),
                "bars_behind": None if newest is None else round((now - newest - step)
                                                                  / step, 2),
                "stream": None if watch is None else watch.health()}
        states = {k: v["state"] for k, v in self._trading.items() if isinstance(v, dict)}
        killed = killswitch.is_killed(self.config.journal)
        failing = bool(last) and not last.get("ok") and last.get("error") != "runner busy"
        if hung or failing:
            status = "down"
        elif not last:
            status = "starting"  # the first tick (a catch-up) has not ended yet
        elif killed or any(w.state != "live" for w in self.watches.values()) or any(
                state != "ACTIVE" for state in states.values()):
            status = "degraded"
        else:
            status = "ok"
        return {
            "status": status, "environment": self.config.environment, "mode": self.mode,
            "config": self.config.source, "pid": os.getpid(), "clock": _iso(now),
            "uptime_s": round((now - self.started_ns) / 1e9 / self.speed, 1),
            "loop_hung": hung, "kill_switch": killed, "markets": markets,
            "trading": states, "journal": {"path": str(self.config.journal),
                                           "head_seq": self._journal_head},
            "ticks": self.ticks, "failed_ticks": self.failed_ticks,
            "last_tick": {k: v for k, v in last.items() if k != "newest_bar"},
            "systemd": {"notify": self.notifier.enabled,
                        "watchdog_s": self.notifier.watchdog_s},
        }


def serve(config: RunnerConfig, **options) -> int:
    """Run :class:`Service` until stopped; the exit code."""
    return Service(config, **options).run()


def _streams(exchange: str) -> bool:
    return exchange in STREAMING_EXCHANGES


def _data_keys(venue) -> dict:
    """Keys the market data need: none for a ccxt venue's public candles and streams (so
    the service holds no exchange keys between ticks), OANDA's token for its prices."""
    if venue.exchange != "oanda":
        return {}
    from mmats.brokers.connect import credentials

    return credentials(venue.name, venue.environment)


_KEY_ATTRIBUTES = ("apiKey", "secret", "password", "token", "_token", "access_token",
                   "account_id", "uid", "privateKey")


def _forget_keys(adapter) -> None:
    """Blank the credentials an adapter (and its client) holds, before it is dropped."""
    for holder in (adapter, getattr(adapter, "_exchange", None), getattr(adapter, "_api",
                                                                           None)):
        if holder is None:
            continue
        for name in _KEY_ATTRIBUTES:
            if isinstance(getattr(holder, name, None), str):
                with contextlib.suppress(AttributeError, TypeError):
                    setattr(holder, name, "")
        headers = getattr(getattr(holder, "client", None), "headers", None)
        if headers is not None and "Authorization" in headers:
            headers["Authorization"] = ""
        if callable(getattr(holder, "_hide", None)):  # a redactor closing over the key
            holder._hide = str


def _iso(ns: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ns / 1e9))


__all__ = ["RehearsalClock", "Service", "serve"]
