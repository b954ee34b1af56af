"""The live tick, stage by stage: one function each, called in order from :func:`_run`.

1. **sync** — a store tick journals a changed configuration, fetches the bars closed
   since the last tick into the store (:mod:`mmats.live.sync`) and wires a feed per
   market, and in operator mode a broker per market (:mod:`mmats.live.wiring`);
2. **recover** — every sleeve's state from the journal; in operator mode every order
   whose outcome the journal does not know is settled with its venue before anything
   else is sent (:mod:`mmats.live.operator`);
3. **reconcile** — in operator mode, the venues' positions and open orders against the
   journal's (a kill's fills are booked first);
4. then for each bar close since the last tick, each close in one journal transaction:
   **decide** (each strategy's value on its trailing window), **gate** (the kernel's step
   of the bar, the global and market limits, the value through the kernel's sizing and
   gates: :mod:`mmats.live.closes`) and **journal** (the bars, paper orders and fills,
   signals, states, risk events); in operator mode the newest close's transaction also
   holds the **plan**: each sleeve's pending decision as an order, journaled
   ``SENDING`` (one commit, one fsync, for the close and its orders);
5. **act** — in operator mode, the planned orders go to their venues (planned now, in a
   transaction of their own, when a protective leg had to be cancelled first; paper
   mode acts inside the kernel: the order decided at a close fills at the next bar's
   open, in the next close's gate);
6. **stale check** — a store tick halts the sleeves whose feed went silent;
7. **notify** — a store tick tells people, once the runner's lock is released.

``act`` follows the journal of the closes: an order is sent only once the close it was
decided at is in the journal, and is itself journaled (``SENDING``) before it goes out.
The kill switch is obeyed before the reconciliation, between closes and after the orders.
A bare tick (:func:`run_tick`: the replay's, a test's) is given its feeds and journal,
and syncs, checks staleness and notifies nothing.

Nothing here re-implements a sizing, gate or fill rule: the kernel (:mod:`mmats.nb.sim`)
does, the same as in the backtest.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from mmats.data.calendar import timeframe_ns, trading_ns_between
from mmats.data.schema import VALUE_COLUMNS, candle_rows
from mmats.errors import BadBarError, ConfigError, DataError
from mmats.live import kill as killswitch
from mmats.live import notify as notifier
from mmats.live.closes import Book, SleeveBar, book_id, by_close, sleeve_bar, value_at
from mmats.live.config import MODES, RunnerConfig
from mmats.live.inputs import acted_value, sentiment_now, sentiment_records, window_extras
from mmats.live.journal import Journal
from mmats.live.operator import Desk, with_venue_rules
from mmats.live.orders import client_order_id
from mmats.live.sleeves import CALENDAR_OF_MARKET, Sleeve, sleeves
from mmats.live.sync import sync_candles
from mmats.live.wiring import (
    HeldJournal,
    brokers_for,
    feeds_for,
    open_journal,
    runner_lock,
)
from mmats.nb.risk import halt
from mmats.nb.sizing import target_quantity
from mmats.sleeve import new_state
from mmats.types import STATE_DTYPE, FillReason, TradingState

MAX_BAD_BARS_PER_TICK = 100
_REASONS = {int(reason): reason.name.lower() for reason in FillReason}


@dataclass
class TickReport:
    """What a tick did: bars processed, signals, orders, fills and refusals, and the
    alerts it raised."""

    bars: int = 0
    signals: list[dict] = field(default_factory=list)
    fills: int = 0
    orders: int = 0  # sent to a venue (operator mode)
    rejects: int = 0
    alerts: list[tuple[str, str]] = field(default_factory=list)  # (title, message)
    balances: dict = field(default_factory=dict)  # per market, from the venue
    newest_bar: dict = field(default_factory=dict)  # sleeve id -> newest bar processed

    def fresh_signals(self) -> list[dict]:
        """The signals decided at each sleeve's newest bar: what is news to a person. A
        first tick warming up on history, or one catching up after downtime, journals
        every decision but only these are notified."""
        return [s for s in self.signals
                if self.newest_bar.get(f"{s['model_id']}:{s['symbol']}") == s["ts_ns"]]


@dataclass
class Tick:
    """What one tick works on, filled in stage by stage. A tick given its ``feeds`` and
    ``journal`` is bare (the replay's, a test's): it takes no lock and syncs, checks and
    notifies nothing."""

    config: RunnerConfig
    mode: str
    now_ns: int | None
    cash: float = 10_000.0
    bare: bool = False
    feeds: Mapping[str, object] | None = None
    journal: Journal | None = None
    brokers: Mapping[str, object] | None = None
    sources: dict | None = None
    live_trading_allowed: bool = False
    trace: Callable[[str], None] | None = None  # hears each stage's name as it starts
    report: TickReport = field(default_factory=TickReport)
    sleeves: list[Sleeve] = field(default_factory=list)
    states: dict[str, np.ndarray] = field(default_factory=dict)
    desk: Desk | None = None  # operator mode: the tick's dealings with the brokers
    book: Book | None = None
    faults: _DataFaults | None = None
    volumes: dict[str, float] = field(default_factory=dict)  # of each sleeve's newest bar
    stale: list[tuple[str, str]] = field(default_factory=list)  # (sleeve id, message)
    kill_seen: bool = False
    killed: Callable[[], bool] | None = None  # the kill switch's check (kill.kill_check)
    feed_events: tuple = ()  # the streams' losses and recoveries since the last tick
    said: dict = field(default_factory=dict)  # (sleeve id, bar): its exposure, confidence
    news: dict = field(default_factory=dict)  # sentiment source -> records (False: unread)
    series_feeds: dict = field(default_factory=dict)  # (venue, timeframe) -> feed
    planned: list | None = None  # orders journaled in the newest close (plan), to send
    held: HeldJournal | None = None  # a store tick's journal kept open across ticks


def run_tick(config: RunnerConfig, feeds: Mapping[str, object], journal: Journal,
             now_ns: int, *, cash: float = 10_000.0, mode: str | None = None,
             brokers: Mapping[str, object] | None = None,
             trace: Callable[[str], None] | None = None,
             series_feeds: Mapping[tuple, object] | None = None) -> TickReport:
    """Process every bar that closed up to ``now_ns`` for every sleeve, then return.

    ``feeds`` maps market names to :class:`~mmats.brokers.base.DataFeed` adapters; the
    tick is bare (no lock, store sync, stale check or notification: :func:`store_tick`
    does those). Advisory mode journals signals only; paper mode also journals the orders
    and fills of the kernel's fill model; operator mode recovers and reconciles with
    ``brokers`` (market name -> Execution and AccountState adapter) first, and sends the
    decisions to them at the end (:mod:`mmats.live.operator`). ``series_feeds`` maps
    ``(venue, timeframe)`` to the feed of the series extra inputs read from another venue
    or timeframe than their market's.

    >>> report = run_tick(config, {"crypto": feed}, journal, now_ns)  # doctest: +SKIP
    """
    return _run(Tick(config, mode or config.mode, now_ns, cash=cash, bare=True,
                     feeds=feeds, journal=journal, brokers=brokers, trace=trace,
                     series_feeds=dict(series_feeds or {})))


def store_tick(config: RunnerConfig, *, cash: float = 10_000.0, now_ns: int | None = None,
               mode: str | None = None, brokers: Mapping[str, object] | None = None,
               sources: dict | None = None, live_trading_allowed: bool = False,
               trace: Callable[[str], None] | None = None,
               feed_events: tuple = (), held: HeldJournal | None = None) -> TickReport:
    """One tick as cron runs it: under the runner's lock, with the configuration's
    journal, on the store's candles (live feeds synced first; ``sources`` overrides
    their candle sources), then the stale check, then the notifications. ``now_ns`` is
    the tick's clock (default: the wall clock once the lock is held). ``feed_events``
    (:class:`~mmats.live.feed_watch.FeedEvent`: the always-on service's streams) are
    journaled as risk events and notified with the tick's alerts. ``held`` keeps the
    journal open from one tick to the next (the always-on service's); by default the
    tick opens and closes it.

    >>> report = store_tick(load_config("configs/advisory_crypto.yaml"))  # doctest: +SKIP
    """
    return _run(Tick(config, mode or config.mode, now_ns, cash=cash, brokers=brokers,
                     sources=sources, live_trading_allowed=live_trading_allowed,
                     trace=trace, feed_events=tuple(feed_events), held=held))


def _run(tick: Tick) -> TickReport:
    """The stages, in order: the one place the sequence of a tick is written."""
    with _held(tick):
        sync(tick)
        # every commit is fsync'ed (a SENDING row before its order goes out); the anchor's
        # lines of these stages are fsync'ed once, after the orders
        # (Journal.anchor_sync_deferred)
        with tick.journal.anchor_sync_deferred():
            recover(tick)
            _obey_kill(tick)  # a kill's fills are booked before the positions are reconciled
            reconcile(tick)
            closes = _new_closes(tick)
            for close in closes:
                _obey_kill(tick)  # between closes: a kill that came meanwhile halts them now
                with tick.journal.transaction():  # a crash leaves the whole close or none
                    values = decide(tick, close)
                    stepped = gate(tick, close, values)
                    journal(tick, close, stepped)
                    if close is closes[-1]:
                        plan(tick)  # the newest close's orders, in its transaction
            act(tick)
        _obey_kill(tick)
        stale_check(tick)
    notify(tick)
    return tick.report


@contextlib.contextmanager
def _held(tick: Tick):
    """A store tick holds the runner's lock and the configuration's journal."""
    if tick.bare:
        yield
        return
    with runner_lock(tick.config.lock):
        with (tick.held.open(tick.config, tick.mode) if tick.held is not None
              else open_journal(tick.config, tick.mode)) as opened:
            tick.journal = opened
            yield


def _stage(function):
    """A named stage of the tick: ``tick.trace``, when given, hears its name first."""
    @functools.wraps(function)
    def stage(tick: Tick, *args):
        if tick.trace is not None:
            tick.trace(function.__name__)
        return function(tick, *args)
    return stage


@_stage
def sync(tick: Tick) -> None:
    """A store tick's inputs brought up to date: the configuration (journaled if it
    changed), the store (the bars closed since, with feed failover: its alerts lead the
    tick's), a store feed per market and, in operator mode, a broker per market. A bare
    tick has its feeds already."""
    if tick.bare:
        return
    config = tick.config
    snapshot = config.snapshot()
    last = tick.journal.last_config_snapshot()
    if last is None or last["text"] != snapshot:
        tick.journal.append_config_snapshot(snapshot)
    tick.now_ns = now_ns = tick.now_ns or time.time_ns()
    for event in tick.feed_events:
        tick.journal.append_risk_event(event.level, f"market:{event.market}", event.kind,
                                       event.message, event.data, ts_ns=event.ts_ns)
        tick.report.alerts.append((f"MMATS {event.kind.replace('_', ' ')}", event.message))
    active, alerts = sync_candles(config, tick.journal, now_ns, sources=tick.sources)
    tick.report.alerts += alerts
    tick.feeds = feeds_for(config, active)
    if tick.mode == "operator" and tick.brokers is None:
        tick.brokers = brokers_for(config, tick.feeds, cash=tick.cash, clock=lambda: now_ns,
                                   live_trading_allowed=tick.live_trading_allowed)


@_stage
def recover(tick: Tick) -> None:
    """The tick's memory: every sleeve's state from the journal (a new sleeve starts flat
    with its cash). In operator mode the sleeves take each venue's lot size and minimum
    notional, and every order whose outcome the journal does not know is looked up by its
    client id and settled, or sent if the venue never saw it, before anything else is
    sent (:meth:`~mmats.live.operator.Desk.recover`)."""
    if tick.mode not in MODES:
        raise ConfigError(f"mode {tick.mode!r} is not one of {', '.join(MODES)}")
    if tick.mode == "operator" and not tick.brokers:
        raise ConfigError("operator mode needs a broker for each market")
    tick.sleeves = sleeves(tick.config, tick.cash)
    tick.killed = killswitch.kill_check(tick.journal.path)
    loaded = tick.journal.load_states([sleeve.id for sleeve in tick.sleeves], STATE_DTYPE)
    for sleeve in tick.sleeves:
        state = loaded[sleeve.id]
        tick.states[sleeve.id] = new_state(sleeve.cash) if state is None else state
    if tick.mode == "operator":
        tick.sleeves = with_venue_rules(tick.sleeves, tick.brokers)
        tick.desk = Desk(tick.config, tick.sleeves, tick.states, tick.brokers, tick.journal,
                         tick.now_ns, tick.report,
                         killed=tick.killed)
        tick.desk.recover()


@_stage
def reconcile(tick: Tick) -> None:
    """Operator mode: each venue's positions, balances and open orders against the
    journal's; a difference within tolerance is adopted, a larger one pauses the symbol's
    sleeves, strays are cancelled and the protective legs follow the states
    (:meth:`~mmats.live.operator.Desk.reconcile`). Nothing to do when no venue executes."""
    if tick.desk is not None:
        tick.desk.reconcile()


@_stage
def decide(tick: Tick, close: list[SleeveBar]) -> list[tuple[float, float, float]]:
    """What each strategy says at this close: its value ``(exposure, stop distance,
    take-profit distance)`` on the trailing window of its bar. A bad bar in the window is
    a data fault and no opinion (NaN: keep what is held)."""
    return [_trailing_window_value(tick, bar) for bar in close]


@_stage
def gate(tick: Tick, close: list[SleeveBar], values: list) -> tuple[list, list]:
    """The values through the risk functions (:meth:`~mmats.live.closes.Book.close`):
    the kernel's step of each bar (paper mode: the order decided at the previous close
    fills at this bar's open; stops, mark-to-market, the sleeve's own limits), the global
    and market limits, then each value through the kernel's sizing and gates, vetoed
    where a full book or a leverage cap forbids new exposure. Returns
    ``(done, events)``."""
    stepped = tick.book.close(close, values)
    tick.volumes.update({bar.sleeve.id: bar.prices[4] for bar in close})
    return stepped


@_stage
def journal(tick: Tick, close: list[SleeveBar], stepped: tuple[list, list]) -> None:
    """The close in the journal, in the transaction of its gate: each bar, its paper
    order and fills, the decision as a signal and the sleeve's new state; the limits'
    risk events; the scopes' books the close moved."""
    done, events = stepped
    for bar, fills, order, (stop, take, why) in done:
        _journal_bar(tick, bar, fills, order, stop, take, why)
    for scope, ts_ns, kind, message, data in events:
        tick.journal.append_risk_event("CRITICAL", scope, kind, message, data, ts_ns=ts_ns)
    for scope in tick.book.unjournaled():  # a book the close moved
        tick.journal.save_state(book_id(scope), scope.book, ts_ns=close[0].open_ns)


@_stage
def plan(tick: Tick) -> None:
    """Operator mode, in the newest close's transaction: each sleeve's pending decision
    planned as an order and journaled (``SENDING``), so the close and its orders reach the
    journal in one commit (:meth:`~mmats.live.operator.Desk.plan_in_close`). Left to
    :func:`act` when a protective leg must be cancelled at the venue first."""
    if tick.desk is not None:
        tick.planned = tick.desk.plan_in_close(tick.volumes)


@_stage
def act(tick: Tick) -> None:
    """Operator mode: each sleeve's newest pending decision goes to its venue as an order,
    journaled before it is sent (:meth:`~mmats.live.operator.Desk.send_pending`): sent as
    :func:`plan` journaled it, or planned and journaled now. Paper mode acted in the
    closes' gates (the kernel's fill model); advisory mode records and notifies only."""
    if tick.desk is not None:
        tick.desk.send_pending(tick.volumes, tick.planned)


@_stage
def stale_check(tick: Tick) -> None:
    """Fail safe of a store tick: a sleeve whose newest bar is more than
    ``stale_after_bars`` bars of its market's trading time old (its feed stopped; a forex
    weekend or a stock market's night is not silence) is halted and flattened, with a
    risk event."""
    if tick.bare:
        return
    config = tick.config
    for sleeve in sleeves(config, 1.0):
        state = tick.journal.load_state(sleeve.id)
        if state is None or state[0]["trading_state"] == int(TradingState.HALTED):
            continue
        step = timeframe_ns(sleeve.timeframe)
        calendar = CALENDAR_OF_MARKET[config.market(sleeve.market).type]
        age_bars = trading_ns_between(calendar, int(state[0]["last_bar_ts_ns"]) + step,
                                      tick.now_ns, step) / step
        if age_bars > config.stale_after_bars:
            message = (f"no new bar for {age_bars:.1f} bars (limit {config.stale_after_bars}); "
                       "halted, positions flatten at the next bar's open")
            with tick.journal.transaction():
                halt(state[0], tick.now_ns)
                tick.journal.save_state(sleeve.id, state, ts_ns=tick.now_ns)
                tick.journal.append_risk_event("CRITICAL", f"sleeve:{sleeve.id}",
                                               "stale_data", message, {"age_bars": age_bars})
            tick.stale.append((sleeve.id, message))


@_stage
def notify(tick: Tick) -> None:
    """A store tick tells people, once the lock is released: every alert, every stale
    halt, and the signals decided at each sleeve's newest bar."""
    if tick.bare:
        return
    targets = tick.config.notifications
    for title, message in tick.report.alerts:
        notifier.notify(targets, title, message)
    for sleeve_id, message in tick.stale:
        notifier.notify(targets, "MMATS halted: stale data", f"{sleeve_id}: {message}")
    for signal in tick.report.fresh_signals():
        notifier.notify(targets, f"MMATS {tick.mode} signal",
                        f"{signal['model_id']} {signal['symbol']}: {signal['action']} "
                        f"{signal['qty']:.8g} (target exposure "
                        f"{signal['meta']['target_exposure']}"
                        + ("" if signal.get("confidence") is None else
                           f", confidence {signal['confidence']:.3g}") + ")")


# -- the kill switch, between the stages ------------------------------------------------
def _obey_kill(tick: Tick) -> None:
    """Obey the kill switch once it is on: book the kill (halt every sleeve, book its
    flattening fills) once per request, in this tick's own states (:mod:`mmats.live.kill`)."""
    if tick.kill_seen or not tick.killed():
        return
    tick.kill_seen = True
    request = killswitch.read_request(tick.journal.path)
    if request is None or killswitch.booked(tick.journal, request):
        return
    killswitch.book(tick.journal, tick.desk, tick.sleeves, tick.states, request, tick.now_ns)
    tick.report.alerts.append(("MMATS kill booked", f"kill by {request.get('user')}: "
                               f"{len(tick.sleeves)} sleeve(s) halted"))


# -- the bars of a tick -------------------------------------------------------------------
def _new_closes(tick: Tick) -> list[list[SleeveBar]]:
    """Every bar that closed since each sleeve's last one, grouped by close (bad bars are
    journaled as data faults and skipped); and the scopes' books, from the reconciled
    states, that the closes step."""
    tick.book = Book(tick.config, tick.sleeves, tick.states, tick.journal,
                     venue=tick.desk is not None)
    tick.faults = _DataFaults(tick.journal, tick.now_ns, tick.report)
    bars, read = [], {}  # read: the rows of each series and span, for its other sleeves
    for order, sleeve in enumerate(tick.sleeves):
        last = int(tick.states[sleeve.id][0]["last_bar_ts_ns"])
        for open_ns, prices in _good_bars(tick.feeds[sleeve.market], sleeve,
                                          None if last < 0 else last, tick.now_ns,
                                          tick.faults, read):
            bars.append(sleeve_bar(order, sleeve, open_ns, prices))
    return list(by_close(bars))


def _good_bars(feed, sleeve, since_ns, until_ns, faults, read):
    """The sleeve's closed bars, less the bad ones (journaled as data faults and skipped:
    a bad bar never reaches the kernel, the bars after it go on)."""
    for _ in range(MAX_BAD_BARS_PER_TICK):
        try:
            yield from _read_rows(read, feed, sleeve, since_ns, until_ns)
            return
        except BadBarError as error:
            faults.add(sleeve, error)
            if error.ts_ns is None or (since_ns is not None and error.ts_ns <= since_ns):
                return  # cannot step past it: the stale-data halt decides
            yield from _read_rows(read, feed, sleeve, since_ns, error.ts_ns)
            since_ns = error.ts_ns


def _read_rows(read: dict, feed, sleeve, since_ns, until_ns) -> list[tuple[int, tuple]]:
    """:func:`_rows`, read once a tick for all the sleeves of one series that processed
    the same last bar (a bad bar is raised to each of them)."""
    key = (id(feed), sleeve.symbol, sleeve.timeframe, since_ns, until_ns)
    if key not in read:
        read[key] = _rows(feed, sleeve, since_ns, until_ns)
    return read[key]


def _rows(feed, sleeve, since_ns, until_ns) -> list[tuple[int, tuple]]:
    """``(open time in ns, (open, high, low, close, volume))`` of each closed bar: from
    the feed's arrays where it serves them (the stored-history feeds,
    :mod:`mmats.brokers.replay`), else through one conversion of its DataFrame."""
    if hasattr(feed, "closed_rows"):
        return feed.closed_rows(sleeve.symbol, sleeve.timeframe, since_ns=since_ns,
                                until_ns=until_ns)
    bars = feed.closed_bars(sleeve.symbol, sleeve.timeframe, since_ns=since_ns,
                            until_ns=until_ns)
    return [(row[0], row[1:]) for row in candle_rows(bars)]


def _trailing_window_value(tick: Tick, bar: SleeveBar) -> tuple[float, float, float]:
    """The value the bar step acts on (the strategy's exposure, sized by its confidence
    when the model says so); what the strategy said is kept for the journal."""
    sleeve = bar.sleeve
    feed = tick.feeds[sleeve.market]
    try:
        window = _window(feed, sleeve, bar.open_ns)
        if sleeve.strategy.inputs:  # built from the window as the backtest builds them
            window = window_extras(sleeve.strategy, window, feed=feed,
                                   venue=tick.config.market(sleeve.market).feed,
                                   symbol=sleeve.symbol, timeframe=sleeve.timeframe,
                                   end_ns=bar.open_ns,
                                   series_feed=lambda v, tf: _series_feed(tick, v, tf))
    except BadBarError as error:  # a bad bar in the window: no opinion, keep holding
        tick.faults.add(sleeve, error)
        return math.nan, math.nan, math.nan
    except DataError as error:  # an input series missing: no opinion, said once a tick
        alert = ("MMATS input series missing", f"{sleeve.id}: {error}")
        if alert not in tick.report.alerts:
            tick.report.alerts.append(alert)
        return math.nan, math.nan, math.nan
    output = sleeve.signal_on(window)
    if not (sleeve.strategy.outputs or sleeve.sentiment):
        return value_at(output, -1)
    multiplier, cap, news = _sentiment(tick, sleeve, bar, float(output.exposure[-1]))
    value, said = acted_value(output, -1, sleeve.size_by_confidence, sleeve.confidence_step,
                              multiplier, cap)
    tick.said[sleeve.id, bar.open_ns] = {**said, **news}
    return value


def _series_feed(tick: Tick, venue: str, timeframe: str):
    """The feed of another venue's (or timeframe's) series: the one given to a bare tick,
    else the candle store's folder of that venue."""
    feed = tick.series_feeds.get((venue, timeframe))
    if feed is None:
        if tick.bare:
            raise DataError(f"no feed serves {venue} {timeframe} bars to this tick")
        from mmats.brokers.store_feed import StoreFeed

        feed = tick.series_feeds[venue, timeframe] = StoreFeed(tick.config.data_root, venue)
    return feed


def _sentiment(tick: Tick, sleeve: Sleeve, bar: SleeveBar, exposure: float):
    """The model's sentiment rule at this bar: ``(multiplier, size cap, what to journal)``.
    A source that cannot be read lowers nothing this tick (and says so once): news must
    never jam a tick."""
    if sleeve.sentiment is None:
        return 1.0, math.inf, {}
    source, rule = sleeve.sentiment
    records = tick.news.get(source)
    if records is None:
        try:
            records = tick.news[source] = sentiment_records(source)
        except DataError as error:
            records = tick.news[source] = False
            tick.report.alerts.append(("MMATS sentiment unavailable", f"{sleeve.id}: {error}"))
    if records is False:
        return 1.0, math.inf, {"sentiment": None, "sentiment_error": True}
    return sentiment_now(records, rule, sleeve.symbol, bar.open_ns,
                         timeframe_ns(sleeve.timeframe), exposure)


def _window(feed, sleeve: Sleeve, end_ns: int) -> dict[str, np.ndarray]:
    """The sleeve's trailing window up to the bar opened at ``end_ns``, as float64 OHLCV
    arrays: cut from the feed's arrays where it serves them, else one conversion of its
    DataFrame (pandas' per-column access costs more than the strategy on a short window)."""
    if hasattr(feed, "history_arrays"):
        return feed.history_arrays(sleeve.symbol, sleeve.timeframe, end_ns=end_ns,
                                   bars=sleeve.lookback)
    window = feed.history(sleeve.symbol, sleeve.timeframe, end_ns=end_ns,
                          bars=sleeve.lookback)
    columns = list(window.columns)
    values = window.to_numpy()
    arrays = {name: np.ascontiguousarray(values[:, columns.index(name)], dtype=np.float64)
              for name in VALUE_COLUMNS}
    if sleeve.strategy.inputs:  # extra inputs are aligned by the bars' open times
        import pandas as pd

        arrays["ts"] = pd.to_datetime(window["ts"], utc=True).dt.as_unit("ns").astype(
            "int64").to_numpy()
    return arrays


class _DataFaults:
    """Bad bars met by a tick: each journaled once (a risk event per sleeve and bar) and
    alerted once; the same bar met again by a later tick is not news."""

    def __init__(self, journal, now_ns, report):
        self.journal, self.now_ns, self.report = journal, now_ns, report

    def add(self, sleeve, error) -> None:
        scope = f"sleeve:{sleeve.id}"
        seen = {json.loads(row["data"] or "{}").get("bar_ts_ns") for row in
                self.journal.risk_events("data_fault", scope)}
        if error.ts_ns in seen:
            return
        self.journal.append_risk_event("WARNING", scope, "data_fault", f"skipped: {error}",
                                       {"bar_ts_ns": error.ts_ns, "reason": error.reason},
                                       ts_ns=self.now_ns)
        self.report.alerts.append(("MMATS data fault", f"{sleeve.id}: {error}"))


# -- what the journal stage writes ---------------------------------------------------------
def _journal_bar(tick: Tick, bar: SleeveBar, fills, order, stop, take, why) -> None:
    """The bar, its paper orders and fills, the decision and the sleeve's new state."""
    sleeve, ts_ns, state = bar.sleeve, bar.open_ns, tick.states[bar.sleeve.id]
    tick.journal.append_tick(sleeve.symbol, ts_ns, *bar.prices, timeframe=sleeve.timeframe,
                             ts_ns=ts_ns)
    if tick.mode == "paper":
        if order is not None:
            tick.journal.append_order(sleeve.model_id, sleeve.symbol,
                                      _client_id(sleeve, order), order, broker_status="PAPER")
        for fill in fills:
            tick.journal.append_fill(sleeve.model_id, sleeve.symbol,
                                     _client_id(sleeve, order) if fill["order_id"] >= 0
                                     else f"{sleeve.id}:stop:{ts_ns}", fill)
        tick.report.fills += len(fills)
    signal = _signal_row(sleeve, state[0], sleeve.cfg[0], ts_ns, stop, take, why)
    said = tick.said.pop((sleeve.id, ts_ns), None)
    if said:  # confidence or sentiment: what the strategy said, beside what was acted on
        said = dict(said)
        signal["confidence"] = said.pop("confidence")
        signal["meta"]["strategy_exposure"] = said.pop("exposure")
        signal["meta"].update(said)
    tick.journal.append_signal(**signal)
    tick.journal.save_state(sleeve.id, state, ts_ns=ts_ns)
    tick.report.bars += 1
    tick.report.newest_bar[sleeve.id] = ts_ns
    if signal["action"] != "HOLD":
        tick.report.signals.append(signal)


def _signal_row(sleeve, record, cfg, ts_ns, stop, take, why) -> dict:
    """What the kernel decided at this close, as the journal's signal (F3); its ``meta``
    tells the pending target (``target_exposure``, and ``target_by``: the signal, or a
    risk limit or stop decided at the same close) and how the strategy's value went
    through the gates (``why``: :func:`mmats.live.gates.explain`)."""
    decided = record["target_ts_ns"] == ts_ns and not math.isnan(record["target"])
    action, qty = "HOLD", 0.0
    if decided:
        price = record["last_close"]
        goal = target_quantity(record["target"], record["equity"], record["position"], price,
                               cfg["fee_bps"] * 1e-4) if record["target"] != 0 else 0.0
        qty = goal - record["position"]
        action = "BUY" if qty > 0 else "SELL" if qty < 0 else "HOLD"
    return {"model_id": sleeve.model_id, "symbol": sleeve.symbol, "action": action,
            "qty": abs(float(qty)), "stop_loss": _level(record, stop, -1),
            "take_profit": _level(record, take, 1), "time_in_force": "GTC",
            "meta": {"target_exposure": float(record["target"]) if decided else None,
                     "target_by": _REASONS[int(record["target_reason"])] if decided else None,
                     "trading_state": int(record["trading_state"]), **why},
            "ts_ns": ts_ns}


def _level(record, distance, sign):
    if not (distance > 0) or record["target"] == 0 or math.isnan(record["target"]):
        return None
    direction = 1.0 if record["target"] > 0 else -1.0
    return float(record["last_close"] + sign * direction * distance)


def _client_id(sleeve: Sleeve, order) -> str:
    """Deterministic: model, symbol, decision time and the sleeve's order sequence, so a
    re-run after a crash produces the same id and never a second order."""
    return client_order_id(sleeve.id, int(order["decision_ts_ns"]), int(order["order_id"]))
