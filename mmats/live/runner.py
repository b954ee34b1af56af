"""The runner: one tick per invocation, on the same kernel as the backtest.

A tick, for every sleeve (a model on one symbol): load the sleeve's state from the
journal; take the bars that closed since its last bar; for each, call the kernel's
``on_bar`` (in paper mode its fill model executes the order decided at the previous
close, at this bar's open: the paper broker), compute the strategy on its trailing
window and hand the value to the kernel's ``on_signal``; journal the bar, the signal,
orders, fills and the new state. Nothing here re-implements a sizing, gate or fill rule.

In operator mode the same tick first recovers and reconciles with the brokers, steps
the bars with ``on_bar_venue`` (no simulated fills: a venue executes) and ends by
sending the decisions (:mod:`mmats.live.operator`). This module also holds the replay
that proves the runner equal to the backtest, and the portfolio backtest; the lock, the
controls and the store-fed tick are in :mod:`mmats.live.control`.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from mmats.brokers.replay import ReplayFeed
from mmats.data.calendar import timeframe_ns
from mmats.data.schema import VALUE_COLUMNS, candle_rows
from mmats.errors import BadBarError, ConfigError
from mmats.live.config import MODES, RunnerConfig
from mmats.live.journal import Journal
from mmats.live.kill import book, booked, is_killed, read_request
from mmats.live.operator import client_order_id
from mmats.live.portfolio import BOOK_DTYPE, apply_limits, blocks_new_exposure, new_book, scopes
from mmats.live.sleeves import Sleeve, sleeves
from mmats.live.wiring import brokers_for
from mmats.nb.sim import on_bar, on_bar_venue, on_signal
from mmats.nb.sizing import target_quantity
from mmats.sleeve import new_state
from mmats.types import FILL_DTYPE, ORDER_DTYPE, STATE_DTYPE, TRADE_DTYPE, TradingState
from mmats.units import DAY_NS


@dataclass
class TickReport:
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


def run_tick(config: RunnerConfig, feeds: Mapping[str, object], journal: Journal,
             now_ns: int, *, cash: float = 10_000.0, mode: str | None = None,
             brokers: Mapping[str, object] | None = None) -> TickReport:
    """Process every bar that closed up to ``now_ns`` for every sleeve, then return.

    ``feeds`` maps market names to :class:`~mmats.brokers.base.DataFeed` adapters.
    Advisory mode journals signals only; paper mode also journals the orders and fills
    of the kernel's fill model; operator mode recovers and reconciles with ``brokers``
    (market name -> Execution and AccountState adapter) first, and sends the decisions
    to them at the end (:mod:`mmats.live.operator`).
    """
    mode = mode or config.mode
    if mode not in MODES:
        raise ConfigError(f"mode {mode!r} is not one of {', '.join(MODES)}")
    if mode == "operator" and not brokers:
        raise ConfigError("operator mode needs a broker for each market")
    report = TickReport()
    all_sleeves = sleeves(config, cash)
    states = {}
    for sleeve in all_sleeves:
        state = journal.load_state(sleeve.id, STATE_DTYPE)
        states[sleeve.id] = new_state(sleeve.cash) if state is None else state
    killed = functools.partial(is_killed, journal.path)
    desk = None
    if mode == "operator":
        from mmats.live.operator import Desk, with_venue_rules

        all_sleeves = with_venue_rules(all_sleeves, brokers)
        desk = Desk(config, all_sleeves, states, brokers, journal, now_ns, report,
                    killed=killed)
        desk.recover()  # before anything else is sent
    obey_kill = _KillCheck(killed, journal, desk, all_sleeves, states, now_ns, report)
    obey_kill()  # a kill's fills are booked before the positions are reconciled
    if desk is not None:
        desk.reconcile()
    book = _Book(config, all_sleeves, states, journal, venue=desk is not None)
    items = []  # every bar that closed since each sleeve's last one
    faults = _DataFaults(journal, now_ns, report)
    for order, sleeve in enumerate(all_sleeves):
        last = int(states[sleeve.id][0]["last_bar_ts_ns"])
        for open_ns, prices in _good_bars(feeds[sleeve.market], sleeve,
                                          None if last < 0 else last, now_ns, faults):
            items.append(_item(order, sleeve, open_ns, prices))

    def trailing_window_signal(item):
        try:
            window = feeds[item.sleeve.market].history(
                item.sleeve.symbol, item.sleeve.timeframe, end_ns=item.open_ns,
                bars=item.sleeve.strategy.lookback(item.sleeve.params))
        except BadBarError as error:  # a bad bar in the window: no opinion, keep holding
            faults.add(item.sleeve, error)
            return math.nan, math.nan, math.nan
        output = item.sleeve.strategy.run(_arrays(window), item.sleeve.params)
        return _last(output, -1)

    volumes = {}
    for group in _closes(items):
        obey_kill()  # between closes: a kill that came meanwhile halts the sleeves now
        with journal.transaction():  # a crash leaves the whole close or none of it
            done, events = book.close(group, trailing_window_signal)
            for item, fills, order, (stop, take) in done:
                _journal_bar(item, states[item.sleeve.id], fills, order, stop, take, journal,
                             mode, report)
            for scope, ts_ns, kind, message, data in events:
                journal.append_risk_event("CRITICAL", scope, kind, message, data, ts_ns=ts_ns)
            for scope in book.scopes:
                journal.save_state(book_id(scope), scope.book, ts_ns=group[0].open_ns)
        volumes.update({item.sleeve.id: item.prices[4] for item in group})
    if desk is not None:  # only the newest decision of each sleeve goes to the venue
        desk.send_pending(volumes)
    obey_kill()
    return report


class _KillCheck:
    """Obey the kill switch once it is on: book the kill (halt every sleeve, book its
    flattening fills) once per request, in this tick's own states (:mod:`mmats.live.kill`)."""

    def __init__(self, killed, journal, desk, all_sleeves, states, now_ns, report):
        self.killed, self.journal, self.desk = killed, journal, desk
        self.sleeves, self.states, self.now_ns, self.report = all_sleeves, states, now_ns, report
        self.done = False

    def __call__(self) -> None:
        if self.done or not self.killed():
            return
        self.done = True
        request = read_request(self.journal.path)
        if request is None or booked(self.journal, request):
            return
        book(self.journal, self.desk, self.sleeves, self.states, request, self.now_ns)
        self.report.alerts.append(("MMATS kill booked", f"kill by {request.get('user')}: "
                                   f"{len(self.sleeves)} sleeve(s) halted"))


MAX_BAD_BARS_PER_TICK = 100


def _good_bars(feed, sleeve, since_ns, until_ns, faults):
    """The sleeve's closed bars, less the bad ones (journaled as data faults and skipped:
    a bad bar never reaches the kernel, the bars after it go on)."""
    for _ in range(MAX_BAD_BARS_PER_TICK):
        try:
            yield from _rows(feed.closed_bars(sleeve.symbol, sleeve.timeframe,
                                              since_ns=since_ns, until_ns=until_ns))
            return
        except BadBarError as error:
            faults.add(sleeve, error)
            if error.ts_ns is None or (since_ns is not None and error.ts_ns <= since_ns):
                return  # cannot step past it: the stale-data halt decides
            yield from _rows(feed.closed_bars(sleeve.symbol, sleeve.timeframe,
                                              since_ns=since_ns, until_ns=error.ts_ns))
            since_ns = error.ts_ns


def _arrays(window) -> dict[str, np.ndarray]:
    """The OHLCV columns of a window as float64 arrays (one conversion of the frame:
    pandas' per-column access costs more than the strategy on a short window)."""
    columns = list(window.columns)
    values = window.to_numpy()
    return {name: np.ascontiguousarray(values[:, columns.index(name)], dtype=np.float64)
            for name in VALUE_COLUMNS}


def _rows(bars):
    """``(open time in ns, (open, high, low, close, volume))`` of each bar."""
    return [(row[0], row[1:]) for row in candle_rows(bars)]


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


@dataclass(frozen=True)
class _Item:
    """One bar of one sleeve, waiting for its close to be processed."""

    close_ns: int
    order: int  # the sleeve's position in the configuration: ties are taken in this order
    sleeve: Sleeve
    open_ns: int
    prices: tuple  # open, high, low, close, volume
    index: int = -1  # the bar's index in a whole-history run


def _item(order, sleeve, open_ns, prices, index=-1) -> _Item:
    return _Item(open_ns + timeframe_ns(sleeve.timeframe), order, sleeve, open_ns, prices,
                 index)


def _closes(items):
    """Bars grouped by close time, in time order: each group is one portfolio step."""
    items = sorted(items, key=lambda item: (item.close_ns, item.order))
    for _, group in itertools.groupby(items, key=lambda item: item.close_ns):
        yield list(group)


def _last(output, t):
    stop = output.stop_distance[t] if output.stop_distance is not None else math.nan
    take = (output.take_profit_distance[t] if output.take_profit_distance is not None
            else math.nan)
    return output.exposure[t], stop, take


class _Book:
    """The sleeves' states and the scopes' books, stepped one close at a time: the one
    sequence of events that the runner and the portfolio backtest share."""

    def __init__(self, config, all_sleeves, states, journal=None, *, venue=False):
        self.states = states
        self.venue = venue  # a venue executes the orders: no simulated fills
        self.scopes = scopes(config, all_sleeves)
        for scope in self.scopes:
            scope.book = journal.load_state(book_id(scope), BOOK_DTYPE) if journal else None
            if scope.book is None:
                scope.book = new_book(scope.equity(states))
        self.scopes_of = {s.id: [b for b in self.scopes if s.id in b.sleeve_ids]
                          for s in all_sleeves}
        fills = np.zeros(2, dtype=FILL_DTYPE)
        orders = np.zeros(1, dtype=ORDER_DTYPE)
        trades = np.zeros(2, dtype=TRADE_DTYPE)
        self.records = (fills[0], fills[1], orders[0], trades[0], trades[1])

    def close(self, group, signal_of):
        """Every bar of the close through the kernel (orders fill at the open, stops,
        mark-to-market, the sleeve's own limits), then the global and market limits,
        then every decision. Returns ``([(item, fills, order, (stop, take))], events)``."""
        done = []
        for item in group:
            record, cfg = self.states[item.sleeve.id][0], item.sleeve.cfg[0]
            if self.venue:
                on_bar_venue(record, cfg, item.open_ns, item.open_ns // DAY_NS, *item.prices)
                done.append([item, [], None, None])
                continue
            n_fills, n_orders, _ = on_bar(record, cfg, record["bars"], item.open_ns,
                                          item.open_ns // DAY_NS, *item.prices, *self.records)
            fills = [self.records[i].copy() for i in range(n_fills)]
            done.append([item, fills, self.records[2].copy() if n_orders else None, None])
        close_ns = group[0].open_ns
        events = [(scope.name, close_ns, *event) for scope in self.scopes
                  for event in apply_limits(scope, self.states, close_ns)]
        for entry in done:
            item = entry[0]
            value, stop, take = signal_of(item)
            decide(self.states[item.sleeve.id][0], item.sleeve.cfg[0], item.open_ns, value,
                   stop, take, blocks_new_exposure(self.scopes_of[item.sleeve.id],
                                                   item.sleeve.id, self.states))
            entry[3] = (stop, take)
        return [tuple(entry) for entry in done], events


def book_id(scope) -> str:
    return f"__book__:{scope.name}"


def _journal_bar(item, state, fills, order, stop, take, journal, mode, report):
    """The bar, its paper orders and fills, the decision and the sleeve's new state."""
    sleeve, ts_ns = item.sleeve, item.open_ns
    journal.append_tick(sleeve.symbol, ts_ns, *item.prices, timeframe=sleeve.timeframe,
                        ts_ns=ts_ns)
    if mode == "paper":
        if order is not None:
            journal.append_order(sleeve.model_id, sleeve.symbol, _client_id(sleeve, order),
                                 order, broker_status="PAPER")
        for fill in fills:
            journal.append_fill(sleeve.model_id, sleeve.symbol,
                                _client_id(sleeve, order) if fill["order_id"] >= 0
                                else f"{sleeve.id}:stop:{ts_ns}", fill)
        report.fills += len(fills)
    signal = _signal_row(sleeve, state[0], sleeve.cfg[0], ts_ns, stop, take)
    journal.append_signal(**signal)
    journal.save_state(sleeve.id, state, ts_ns=ts_ns)
    report.bars += 1
    report.newest_bar[sleeve.id] = ts_ns
    if signal["action"] != "HOLD":
        report.signals.append(signal)


def decide(record, cfg, ts_ns, value, stop, take, blocked: bool) -> None:
    """The kernel's on_signal, with the upper levels' veto: while ``blocked``, the sleeve
    decides as if REDUCING (it may only shrink; a blocked entry is retried later)."""
    if not blocked or record["trading_state"] != int(TradingState.ACTIVE):
        on_signal(record, cfg, ts_ns, value, stop, take)
        return
    record["trading_state"] = int(TradingState.REDUCING)
    try:
        on_signal(record, cfg, ts_ns, value, stop, take)
    finally:
        record["trading_state"] = int(TradingState.ACTIVE)


def _signal_row(sleeve, record, cfg, ts_ns, stop, take) -> dict:
    """What the kernel decided at this close, as the journal's signal (F3)."""
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
                     "trading_state": int(record["trading_state"])},
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


@dataclass
class ReplayResult:
    journal: Path
    equity: pd.DataFrame  # one column per sleeve, indexed by bar time
    fills: np.ndarray
    final_equity: float
    trades: int
    states: dict[str, np.ndarray]


def replay(config: RunnerConfig, candles: Mapping[str, pd.DataFrame], journal_path,
           *, cash: float = 10_000.0, mode: str = "paper") -> ReplayResult:
    """Run the configured runner over stored history, one tick per bar close, each tick
    opening the journal and loading its state as a cron run would.

    ``candles`` maps each configured symbol to its history (candle schema); the journal
    is written without fsyncs (a replay is scratch; its transactions are the runner's).
    ``mode``
    ``paper`` fills through the kernel's fill model (equal to the backtest); ``operator``
    runs the operator path against the paper venue (one account per market beside the
    journal), as a rehearsal of real orders.
    """
    feeds, closes = {}, []
    for market in config.markets:
        frames = {}
        for symbol in market.symbols:
            if symbol not in candles:
                raise ConfigError(f"replay has no candles for {market.name} symbol {symbol!r}")
            frames[symbol] = candles[symbol]
        feeds[market.name] = ReplayFeed(frames, market.timeframe)
        closes += [feeds[market.name].close_times(s) for s in frames]
    clock = [0]
    brokers = None
    if mode == "operator":
        from dataclasses import replace

        config = replace(config, journal=Path(journal_path))
        brokers = brokers_for(config, feeds, cash=cash, clock=lambda: clock[0])
    times = np.unique(np.concatenate(closes))
    with Journal(journal_path) as journal:  # a restarted replay goes on from its last tick
        times = times[times >= _last_tick(config, journal, cash)]
    for now_ns in times:
        clock[0] = int(now_ns)
        with Journal(journal_path, durable=False) as journal:  # a replay's is scratch
            run_tick(config, feeds, journal, int(now_ns), cash=cash, mode=mode,
                     brokers=brokers)
    with Journal(journal_path) as journal:
        return _collect(config, journal, Path(journal_path), cash)


def _last_tick(config, journal, cash) -> int:
    """When the journal's last tick ran: the close of the bar every sleeve processed last
    (0 for a new journal, or while a sleeve has not started)."""
    last = []
    for sleeve in sleeves(config, cash):
        state = journal.load_state(sleeve.id)
        if state is None:
            return 0
        last.append(int(state[0]["last_bar_ts_ns"]) + timeframe_ns(sleeve.timeframe))
    return min(last, default=0)


def _collect(config, journal, path, cash) -> ReplayResult:
    columns, states = {}, {}
    for sleeve in sleeves(config, cash):
        rows = journal.sleeve_states(sleeve.id)
        values = [np.frombuffer(row["state"], dtype=STATE_DTYPE)[0] for row in rows]
        series = pd.Series([v["equity"] for v in values],
                           index=pd.to_datetime([r["ts_ns"] for r in rows], utc=True))
        # operator mode also saves the state when an order is sent or filled
        columns[sleeve.id] = series[~series.index.duplicated(keep="last")]
        states[sleeve.id] = journal.load_state(sleeve.id)
    equity = pd.DataFrame(columns)
    final = float(sum(state[0]["equity"] for state in states.values()))
    trades = int(sum(state[0]["n_trades"] for state in states.values()))
    return ReplayResult(path, equity, journal.fills(), final, trades, states)


@dataclass
class PortfolioResult:
    equity: pd.DataFrame  # one column per sleeve at each of its bars, forward-filled
    fills: dict[str, np.ndarray]
    states: dict[str, np.ndarray]
    risk_events: list[tuple]  # (scope, bar open time in ns, kind, message, data)

    @property
    def final_equity(self) -> float:
        return float(sum(state[0]["equity"] for state in self.states.values()))


def portfolio_backtest(config: RunnerConfig, candles: Mapping[str, pd.DataFrame], *,
                       cash: float = 10_000.0) -> PortfolioResult:
    """Backtest a whole configuration (every model, market and symbol, with the global
    and market limits) in one pass, in memory: the same kernel step, the same limits and
    the same order of events as the runner, with each strategy's signal computed once
    over the whole history instead of on a trailing window per tick."""
    from mmats.backtest import market as to_market

    all_sleeves = sleeves(config, cash)
    states = {s.id: new_state(s.cash) for s in all_sleeves}
    book = _Book(config, all_sleeves, states)
    prices, outputs, items, events = {}, {}, [], []
    for order, sleeve in enumerate(all_sleeves):
        if sleeve.symbol not in candles:
            raise ConfigError(f"no candles for {sleeve.market} symbol {sleeve.symbol!r}")
        p = prices[sleeve.id] = to_market(candles[sleeve.symbol], timeframe=sleeve.timeframe)
        outputs[sleeve.id] = sleeve.strategy.run(p.arrays, sleeve.params)
        items += [_item(order, sleeve, int(p.ts_ns[t]), (p.open[t], p.high[t], p.low[t],
                                                          p.close[t], p.volume[t]), t)
                  for t in range(len(p))]
    fills = {s.id: [] for s in all_sleeves}
    curves = {s.id: ([], []) for s in all_sleeves}
    for group in _closes(items):
        done, new_events = book.close(group, lambda item: _last(outputs[item.sleeve.id],
                                                                  item.index))
        events += new_events
        for item, item_fills, _, _ in done:
            fills[item.sleeve.id] += item_fills
            curves[item.sleeve.id][0].append(item.open_ns)
            curves[item.sleeve.id][1].append(float(states[item.sleeve.id][0]["equity"]))
    equity = pd.DataFrame({sid: pd.Series(v, index=pd.to_datetime(i, utc=True))
                           for sid, (i, v) in curves.items()})
    return PortfolioResult(
        equity=equity,
        fills={sid: np.array(rows, dtype=FILL_DTYPE) for sid, rows in fills.items()},
        states=states, risk_events=events)
