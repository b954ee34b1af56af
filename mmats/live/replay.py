"""History through the live path: the replay and the portfolio backtest.

:func:`replay` runs the tick (:func:`mmats.live.tick.run_tick`) once per bar close of
stored history, each tick opening the journal and loading its state as a cron run
would: the parity tests prove it equal to the backtest. :func:`portfolio_backtest` steps
the same closes (:class:`mmats.live.closes.Book`) in memory, in one pass.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from mmats.brokers.replay import ReplayFeed
from mmats.data.calendar import timeframe_ns
from mmats.errors import ConfigError
from mmats.live.closes import Book, by_close, sleeve_bar
from mmats.live.config import RunnerConfig
from mmats.live.journal import Journal
from mmats.live.portfolio import event_text, pack_states, unpack_states
from mmats.live.sleeves import extra_series, extra_symbols, sleeves
from mmats.live.tick import run_tick
from mmats.live.wiring import brokers_for
from mmats.nb.portfolio import run_portfolio, schedule
from mmats.sleeve import acted_signal, new_state
from mmats.types import FILL_DTYPE, STATE_DTYPE


@dataclass
class ReplayResult:
    """What a replay leaves: its journal, each sleeve's equity at every bar, the fills,
    the final equity and closed trades of all sleeves, and their final states."""

    journal: Path
    equity: pd.DataFrame  # one column per sleeve, indexed by bar time
    fills: np.ndarray
    final_equity: float
    trades: int
    states: dict[str, np.ndarray]


def replay(config: RunnerConfig, candles: Mapping[str, pd.DataFrame], journal_path,
           *, cash: float = 10_000.0, mode: str = "paper") -> ReplayResult:
    """Run the configured runner over stored history, one tick per bar close, each tick
    loading its state from the journal as a cron run would.

    ``candles`` maps each configured symbol to its history (candle schema), and each
    series a model's extra inputs read from another venue or timeframe, by its
    ``"VENUE:SYMBOL:TIMEFRAME"``; the journal is written without fsyncs (a replay is
    scratch; its transactions are the runner's).
    ``mode`` ``paper`` fills through the kernel's fill model (equal to the backtest);
    ``operator`` runs the operator path against the paper venue (one account per market
    beside the journal), as a rehearsal of real orders.

    >>> result = replay(config, {"ETH/BTC": candles}, "replay.sqlite")  # doctest: +SKIP
    >>> result.final_equity  # doctest: +SKIP
    """
    feeds, closes = {}, []
    for market in config.markets:
        frames = {}
        for symbol in market.symbols:
            if symbol not in candles:
                raise ConfigError(f"replay has no candles for {market.name} symbol {symbol!r}")
            frames[symbol] = candles[symbol]
        for symbol in extra_symbols(config, market.name):  # read by extra inputs, not ticked
            if symbol not in candles:
                raise ConfigError(f"replay has no candles for {symbol!r}, which a model of "
                                  f"market {market.name} reads as an extra input")
        feeds[market.name] = ReplayFeed({**frames, **{s: candles[s] for s in extra_symbols(
            config, market.name)}}, market.timeframe)
        closes += [feeds[market.name].close_times(s) for s in frames]
    series_feeds = _series_feeds(config, candles)
    clock = [0]
    brokers = None
    if mode == "operator":
        config = replace(config, journal=Path(journal_path))
        brokers = brokers_for(config, feeds, cash=cash, clock=lambda: clock[0])
    times = np.unique(np.concatenate(closes))
    # a restarted replay goes on from its last tick; a new journal records the environment
    with Journal(journal_path, environment=config.environment) as journal:
        times = times[times >= _last_tick(config, journal, cash)]
    # One connection for every tick. A cron run's fresh open reads nothing a tick could
    # change (layout, id, key, environment), each tick's closes are its own transactions,
    # and a connection reads what was committed before it (the journal's only writer is
    # this loop), so each tick sees what a fresh process would.
    with Journal(journal_path, durable=False) as journal:  # a replay's is scratch
        for now_ns in times:
            clock[0] = int(now_ns)
            run_tick(config, feeds, journal, int(now_ns), cash=cash, mode=mode,
                     brokers=brokers, series_feeds=series_feeds)
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
        history = journal.state_history(sleeve.id)
        series = pd.Series(_equities([blob for _, blob in history]),
                           index=pd.to_datetime([ts_ns for ts_ns, _ in history], utc=True))
        # operator mode also saves the state when an order is sent or filled
        columns[sleeve.id] = series[~series.index.duplicated(keep="last")]
        states[sleeve.id] = journal.load_state(sleeve.id)
    equity = pd.DataFrame(columns)
    final = float(sum(state[0]["equity"] for state in states.values()))
    trades = int(sum(state[0]["n_trades"] for state in states.values()))
    return ReplayResult(path, equity, journal.fills(), final, trades, states)


def _equities(blobs: list[bytes]) -> np.ndarray | list:
    """The ``equity`` of each saved state (``STATE_DTYPE`` bytes), read from their bytes
    joined: one array for a sleeve's history, not one per bar."""
    size = STATE_DTYPE.itemsize
    if blobs and all(len(blob) == size for blob in blobs):
        return np.frombuffer(b"".join(blobs), dtype=STATE_DTYPE)["equity"].copy()
    # none, or one of another size (which raises, as it always did)
    return [np.frombuffer(blob, dtype=STATE_DTYPE)[0]["equity"] for blob in blobs]


@dataclass
class PortfolioResult:
    """What the portfolio backtest leaves: the sleeves' equity curves and fills, their
    final states and the global and market limits' risk events."""

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
    over the whole history instead of on a trailing window per tick.

    The closes run in one numba loop (:func:`mmats.nb.portfolio.run_portfolio`) over the
    function the runner calls at each close (:func:`mmats.nb.portfolio.step_close`).

    >>> result = portfolio_backtest(config, {"ETH/BTC": candles})  # doctest: +SKIP
    >>> result.final_equity, result.risk_events  # doctest: +SKIP
    """
    all_sleeves, states, book, history = _portfolio_history(config, candles, cash)
    packed = pack_states(book.sleeve_ids, states)
    books = book.books()
    equity = np.empty(len(history.close_ns))
    fills, fill_sleeve, events = run_portfolio(
        packed, book.cfgs, books, book.limits, book.member, history.sleeve_of, history.rows,
        history.signal_rows, history.close_ns, history.open_ns, history.prices,
        history.signals, equity)
    unpack_states(book.sleeve_ids, packed, states)
    for j, scope in enumerate(book.scopes):
        scope.book[0] = books[j]
    curves = {}
    for s, sleeve in enumerate(all_sleeves):
        first, size, row = history.spans[s]
        times = history.open_ns[row:row + size].view("M8[ns]")
        curves[sleeve.id] = pd.Series(equity[first:first + size],
                                      index=pd.DatetimeIndex(times).tz_localize("UTC"))
    return PortfolioResult(
        equity=pd.DataFrame(curves),
        fills={sleeve.id: fills[fill_sleeve == s] for s, sleeve in enumerate(all_sleeves)},
        states=states,
        risk_events=[(book.scopes[int(e["scope"])].name, int(e["ts_ns"]),
                      *event_text(book.scopes[int(e["scope"])], e)) for e in events])


@dataclass
class _History:
    """Every sleeve's bars in one schedule, sorted by close time then by sleeve (the
    runner's order of events): the arrays :func:`~mmats.nb.portfolio.run_portfolio` takes.
    Prices are stored once per symbol and timeframe; signals once per sleeve, each
    sleeve's bars in turn (``spans[s]``: its first signal row, its bars, its first price
    row)."""

    sleeve_of: np.ndarray  # int64, the sleeve of each scheduled bar
    rows: np.ndarray  # int64, its row in open_ns and prices
    signal_rows: np.ndarray  # int64, its row in signals
    close_ns: np.ndarray  # int64
    open_ns: np.ndarray  # int64, one row per bar of each symbol and timeframe
    prices: np.ndarray  # (rows, 5) open, high, low, close, volume
    signals: np.ndarray  # (rows of all sleeves, 3) value, stop, take-profit distance
    spans: list[tuple[int, int, int]]


def _portfolio_history(config, candles, cash):
    """The sleeves, their new states, a :class:`Book` of their scopes and the
    :class:`_History` of their bars and signals."""
    from mmats.backtest import market as to_market
    from mmats.backtest import with_inputs

    all_sleeves = sleeves(config, cash)
    states = {s.id: new_state(s.cash) for s in all_sleeves}
    book = Book(config, all_sleeves, states)
    markets, first_row, outputs, spans, acted = {}, {}, [], [], []
    for sleeve in all_sleeves:
        if sleeve.symbol not in candles:
            raise ConfigError(f"no candles for {sleeve.market} symbol {sleeve.symbol!r}")
        key = (sleeve.symbol, sleeve.timeframe)
        if key not in markets:
            first_row[key] = sum(len(m) for m in markets.values())
            markets[key] = to_market(candles[sleeve.symbol], timeframe=sleeve.timeframe)
        size = len(markets[key])
        prices = markets[key]
        if sleeve.strategy.inputs:  # built as the backtest builds them, from the candles
            venue = config.market(sleeve.market).feed
            given = {(k if ":" in k else f"{venue}:{k}:{sleeve.timeframe}"): c
                     for k, c in candles.items()}
            prices = with_inputs(replace(prices, venue=venue, symbol=sleeve.symbol),
                                 sleeve.strategy, given)
        outputs.append(sleeve.strategy.run(prices.arrays, sleeve.params))
        acted.append(acted_signal(outputs[-1], sleeve, *_news(sleeve, prices, outputs[-1])))
        spans.append((sum(span[1] for span in spans), size, first_row[key]))
    open_ns = np.concatenate([m.ts_ns for m in markets.values()]).astype(np.int64)
    prices = np.empty((len(open_ns), 5))
    for key, m in markets.items():
        for c, column in enumerate((m.open, m.high, m.low, m.close, m.volume)):
            prices[first_row[key]:first_row[key] + len(m), c] = column
    total = sum(span[1] for span in spans)
    signals = np.full((total, 3), np.nan)
    for output, exposure, (first, size, _) in zip(outputs, acted, spans, strict=True):
        for c, column in enumerate((exposure, output.stop_distance,
                                    output.take_profit_distance)):
            if column is not None:
                signals[first:first + size, c] = column
    order = schedule(open_ns, np.array([span[2] for span in spans], dtype=np.int64),
                     np.array([span[1] for span in spans], dtype=np.int64),
                     np.array([timeframe_ns(s.timeframe) for s in all_sleeves], dtype=np.int64))
    history = _History(*order, open_ns, prices, signals, spans)
    return all_sleeves, states, book, history


def _series_feeds(config: RunnerConfig, candles: Mapping) -> dict:
    """A replay feed per ``(venue, timeframe)`` of the series extra inputs read from
    another venue or timeframe, from the candles given by ``VENUE:SYMBOL:TIMEFRAME``."""
    grouped: dict[tuple, dict] = {}
    for venue, symbol, timeframe in extra_series(config):
        spec = f"{venue}:{symbol}:{timeframe}"
        if spec not in candles:
            raise ConfigError(f"replay has no candles for {spec}, which a model reads as an "
                              "extra input (give them as candles[\"VENUE:SYMBOL:TIMEFRAME\"])")
        grouped.setdefault((venue, timeframe), {})[symbol] = candles[spec]
    return {key: ReplayFeed(frames, key[1]) for key, frames in grouped.items()}


def _news(sleeve, prices, output) -> tuple:
    """The sleeve's sentiment rule over the whole history (as the backtest's), if any."""
    if sleeve.sentiment is None:
        return ()
    from mmats.data.sentiment import sentiment_factors
    from mmats.live.inputs import sentiment_records

    source, rule = sleeve.sentiment
    return sentiment_factors(sentiment_records(source), rule, sleeve.symbol, prices.ts_ns,
                             timeframe_ns(sleeve.timeframe), output.exposure)


def _portfolio_by_closes(config: RunnerConfig, candles: Mapping[str, pd.DataFrame], *,
                         cash: float = 10_000.0) -> PortfolioResult:
    """:func:`portfolio_backtest` stepped one close at a time through
    :meth:`Book.close`, as the tick steps it (the journal's account of each decision
    included): the runner's own per-close path, for tests and benchmarks."""
    all_sleeves, states, book, history = _portfolio_history(config, candles, cash)
    fills = {s.id: [] for s in all_sleeves}
    curves = {s.id: ([], []) for s in all_sleeves}
    bars, value_of, events = [], {}, []
    for i in range(len(history.rows)):
        sleeve, row = all_sleeves[history.sleeve_of[i]], history.rows[i]
        bar = sleeve_bar(int(history.sleeve_of[i]), sleeve, int(history.open_ns[row]),
                         tuple(history.prices[row]), int(row))
        bars.append(bar)
        value_of[bar.order, bar.open_ns] = tuple(history.signals[history.signal_rows[i]])
    for group in by_close(bars):
        done, new_events = book.close(group, [value_of[bar.order, bar.open_ns]
                                              for bar in group])
        events += new_events
        for bar, bar_fills, _, _ in done:
            fills[bar.sleeve.id] += bar_fills
            curves[bar.sleeve.id][0].append(bar.open_ns)
            curves[bar.sleeve.id][1].append(float(states[bar.sleeve.id][0]["equity"]))
    equity = pd.DataFrame({sid: pd.Series(v, index=pd.to_datetime(i, utc=True))
                           for sid, (i, v) in curves.items()})
    return PortfolioResult(
        equity=equity,
        fills={sid: np.array(rows, dtype=FILL_DTYPE) for sid, rows in fills.items()},
        states=states, risk_events=events)
