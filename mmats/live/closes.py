"""Bar closes through the kernel: the one sequence of events that the tick
(:mod:`mmats.live.tick`) and the portfolio backtest (:mod:`mmats.live.replay`) share.

At each close, every sleeve's bar goes through the kernel's step (``on_bar``: the order
decided at the previous close fills at this bar's open, stops, mark-to-market, the
sleeve's own limits; ``on_bar_venue`` when a venue executes), then the global and market
limits (:mod:`mmats.live.portfolio`), then each strategy value through the kernel's
``on_signal``, vetoed where a full book or a leverage cap forbids new exposure; how each
value went through the gates is told by :func:`mmats.live.gates.explain`, for the journal.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from mmats.data.calendar import timeframe_ns
from mmats.live.gates import explain
from mmats.live.portfolio import BOOK_DTYPE, apply_limits, blocking_limit, new_book, scopes
from mmats.live.sleeves import Sleeve
from mmats.nb.sim import on_bar, on_bar_venue, on_signal
from mmats.types import FILL_DTYPE, ORDER_DTYPE, TRADE_DTYPE, TradingState
from mmats.units import DAY_NS


@dataclass(frozen=True)
class SleeveBar:
    """One bar of one sleeve, waiting for its close to be processed."""

    close_ns: int
    order: int  # the sleeve's position in the configuration: ties are taken in this order
    sleeve: Sleeve
    open_ns: int
    prices: tuple  # open, high, low, close, volume
    index: int = -1  # the bar's index in a whole-history run


def sleeve_bar(order: int, sleeve: Sleeve, open_ns: int, prices: tuple,
               index: int = -1) -> SleeveBar:
    """The bar of ``sleeve`` that opened at ``open_ns``; it closes one timeframe later."""
    return SleeveBar(open_ns + timeframe_ns(sleeve.timeframe), order, sleeve, open_ns,
                     prices, index)


def by_close(bars: Iterable[SleeveBar]) -> Iterator[list[SleeveBar]]:
    """Bars grouped by close time, in time order: each group is one portfolio step."""
    bars = sorted(bars, key=lambda bar: (bar.close_ns, bar.order))
    for _, group in itertools.groupby(bars, key=lambda bar: bar.close_ns):
        yield list(group)


def value_at(output, t: int) -> tuple[float, float, float]:
    """A strategy's ``(exposure, stop distance, take-profit distance)`` at bar ``t``
    (NaN where the strategy gives no stop or take-profit)."""
    stop = output.stop_distance[t] if output.stop_distance is not None else math.nan
    take = (output.take_profit_distance[t] if output.take_profit_distance is not None
            else math.nan)
    return output.exposure[t], stop, take


class Book:
    """The sleeves' states and the scopes' books, stepped one close at a time.

    ``journal`` (optional) holds the scopes' books of earlier ticks; ``venue`` says a
    venue executes the orders (no simulated fills)."""

    def __init__(self, config, all_sleeves, states, journal=None, *, venue=False):
        self.states = states
        self.venue = venue
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

    def close(self, group: list[SleeveBar], values: list[tuple[float, float, float]]):
        """Every bar of the close through the kernel (orders fill at the open, stops,
        mark-to-market, the sleeve's own limits), then the global and market limits,
        then each bar's strategy value (``values``, in the order of ``group``) as the
        sleeve's decision. Returns ``([(bar, fills, order, (stop, take, why))], events)``,
        ``why`` the decision gate by gate (:func:`~mmats.live.gates.explain`), each event
        ``(scope, close time in ns, kind, message, data)``."""
        done = []
        for bar in group:
            record, cfg = self.states[bar.sleeve.id][0], bar.sleeve.cfg[0]
            if self.venue:
                on_bar_venue(record, cfg, bar.open_ns, bar.open_ns // DAY_NS, *bar.prices)
                done.append([bar, [], None, None])
                continue
            n_fills, n_orders, _ = on_bar(record, cfg, record["bars"], bar.open_ns,
                                          bar.open_ns // DAY_NS, *bar.prices, *self.records)
            fills = [self.records[i].copy() for i in range(n_fills)]
            done.append([bar, fills, self.records[2].copy() if n_orders else None, None])
        close_ns = group[0].open_ns
        events = [(scope.name, close_ns, *event) for scope in self.scopes
                  for event in apply_limits(scope, self.states, close_ns)]
        for entry, (value, stop, take) in zip(done, values, strict=True):
            sleeve = entry[0].sleeve
            state, cfg = self.states[sleeve.id], sleeve.cfg[0]
            blocking = blocking_limit(self.scopes_of[sleeve.id], sleeve.id, self.states)
            why = explain(state, cfg, value, blocking)  # before on_signal changes the state
            apply_signal(state[0], cfg, entry[0].open_ns, value, stop, take,
                         blocking is not None)
            entry[3] = (stop, take, why)
        return [tuple(entry) for entry in done], events


def book_id(scope) -> str:
    """The journal's state id of a scope's book (global, or one market)."""
    return f"__book__:{scope.name}"


def apply_signal(record, cfg, ts_ns, value, stop, take, blocked: bool) -> None:
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
