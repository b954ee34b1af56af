"""Bar closes through the kernel: the one sequence of events that the tick
(:mod:`mmats.live.tick`) and the portfolio backtest (:mod:`mmats.live.replay`) share.

At each close, every sleeve's bar goes through the kernel's step (``on_bar``: the order
decided at the previous close fills at this bar's open, stops, mark-to-market, the
sleeve's own limits; ``on_bar_venue`` when a venue executes), then the global and market
limits (:mod:`mmats.live.portfolio`), then each strategy value through the kernel's
``on_signal``, vetoed where a full book or a leverage cap forbids new exposure; how each
value went through the gates is told by :func:`mmats.live.gates.explain`, for the journal.

That sequence is one numba function, :func:`mmats.nb.portfolio.step_close`: :class:`Book`
calls it once per close on the sleeves' states packed in one array (and turns what it
returns into fills, orders, explanations and risk events), and the portfolio backtest
loops it over a whole history without leaving numba.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from mmats.data.calendar import timeframe_ns
from mmats.live.gates import explain
from mmats.live.portfolio import (
    BLOCK_DTYPE,
    BOOK_DTYPE,
    Scope,
    blocking_text,
    copy_records,
    event_text,
    limits_array,
    member_matrix,
    new_book,
    pack,
    pack_states,
    scopes,
    unpack_states,
)
from mmats.live.sleeves import Sleeve
from mmats.nb.portfolio import EVENT_DTYPE, decide, step_close
from mmats.types import CONFIG_DTYPE, FILL_DTYPE, ORDER_DTYPE, STATE_DTYPE, TRADE_DTYPE


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
    return SleeveBar(open_ns + _step_ns(sleeve.timeframe), order, sleeve, open_ns,
                     prices, index)


@functools.lru_cache(maxsize=64)
def _step_ns(timeframe: str) -> int:
    """:func:`~mmats.data.calendar.timeframe_ns`, parsed once per timeframe (every bar of
    every tick asks)."""
    return timeframe_ns(timeframe)


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
    venue executes the orders (no simulated fills). A close is one call of the kernel's
    :func:`mmats.nb.portfolio.step_close` on the states packed in one array, the function
    the portfolio backtest loops over a history."""

    def __init__(self, config, all_sleeves, states, journal=None, *, venue=False):
        self.states = states
        self.venue = venue
        layout = _layout(config, all_sleeves)
        self.scopes = [Scope(s.name, s.limits, s.sleeve_ids) for s in layout.scopes]
        saved = journal.load_states([book_id(scope) for scope in self.scopes],
                                    BOOK_DTYPE) if journal else {}
        # each scope's book as the journal's newest row of it holds it (None: no row yet)
        self._journaled = {}
        for scope in self.scopes:
            scope.book = saved.get(book_id(scope))
            self._journaled[scope.name] = None if scope.book is None else scope.book.tobytes()
            if scope.book is None:
                scope.book = new_book(scope.equity(states))
        self.scopes_of = layout.scopes_of(self.scopes)
        self.sleeve_ids = layout.sleeve_ids
        self.column = layout.column
        self.cfgs = layout.cfgs(all_sleeves)
        self.limits = layout.limits
        self.member = layout.member
        self._layout = layout  # lends each close its scratch arrays

    def unjournaled(self) -> list:
        """The scopes whose book differs from the journal's newest row of it, taken as
        journaled from now on (the caller journals them in the close's transaction). A
        book moves at a new equity peak, a new day or a limit's trip; most closes leave it
        as it was, and an unchanged book is not journaled again."""
        changed = []
        for scope in self.scopes:
            now = scope.book.tobytes()
            if now != self._journaled[scope.name]:
                self._journaled[scope.name] = now
                changed.append(scope)
        return changed

    def books(self) -> np.ndarray:
        """The scopes' books as one ``BOOK_DTYPE`` array (a copy)."""
        return pack(range(len(self.scopes)), [scope.book for scope in self.scopes],
                    BOOK_DTYPE)

    def close(self, group: list[SleeveBar], values: list[tuple[float, float, float]]):
        """Every bar of the close through the kernel (orders fill at the open, stops,
        mark-to-market, the sleeve's own limits), then the global and market limits,
        then each bar's strategy value (``values``, in the order of ``group``) as the
        sleeve's decision. Returns ``([(bar, fills, order, (stop, take, why))], events)``,
        ``why`` the decision gate by gate (:func:`~mmats.live.gates.explain`), each event
        ``(scope, close time in ns, kind, message, data)``."""
        if len(values) != len(group):
            raise ValueError(f"a close of {len(group)} bars got {len(values)} values")
        out = self._layout.borrow_scratch(len(group))
        try:
            return self._close(group, values, out)
        finally:
            self._layout.give_back(out)

    def _close(self, group, values, out: _Scratch):
        """:meth:`close` with ``out``, scratch arrays of at least ``len(group)`` bars
        that step_close writes anew (entries 0..size-1 and its events); what the close
        returns is copied out of them."""
        size = len(group)
        for k, bar in enumerate(group):  # the close's bars, into the first rows of out's
            out.sleeve_of[k] = self.column[bar.sleeve.id]
            out.open_ns[k] = bar.open_ns
            out.prices[k] = bar.prices
            out.values[k] = values[k]
        states = pack_states(self.sleeve_ids, self.states)
        books = self.books()
        n_events = step_close(
            states, self.cfgs, books, self.limits, self.member, self.venue, out.sleeve_of,
            out.rows, out.rows, 0, size, out.open_ns, out.prices, out.values,
            out.fills, out.n_fills, out.orders, out.n_orders, out.blocks, out.before,
            out.trades, out.events)
        fills, n_fills, orders, n_orders = out.fills, out.n_fills, out.orders, out.n_orders
        blocks, before, events = out.blocks, out.before, out.events
        unpack_states(self.sleeve_ids, states, self.states)
        for j, scope in enumerate(self.scopes):
            scope.book[0] = books[j]
        done = []
        for k, (bar, (value, stop, take)) in enumerate(zip(group, values, strict=True)):
            block = blocks[k]
            blocking = (blocking_text(self.scopes[int(block["scope"])], block)
                        if block["limit"] else None)
            why = explain(before[k:k + 1], bar.sleeve.cfg[0], value, blocking)
            done.append((bar, [fills[2 * k + f].copy() for f in range(int(n_fills[k]))],
                         orders[k].copy() if n_orders[k] else None, (stop, take, why)))
        return done, [(self.scopes[int(e["scope"])].name, int(e["ts_ns"]),
                       *event_text(self.scopes[int(e["scope"])], e))
                      for e in events[:n_events]]


class _Layout:
    """What a :class:`Book` of one configuration's sleeves holds whatever the tick: the
    scopes and their limits, which sleeve each holds and the sleeves' packed settings,
    made once per configuration (a replay ticks it many times; each tick's books, states
    and scratch arrays are its own). Nothing writes these arrays."""

    def __init__(self, config, all_sleeves):
        self.scopes = scopes(config, all_sleeves)
        self.sleeve_ids = [s.id for s in all_sleeves]
        self.column = {sleeve_id: i for i, sleeve_id in enumerate(self.sleeve_ids)}
        self.limits = limits_array(self.scopes)
        self.member = member_matrix(self.scopes, self.sleeve_ids)
        self._cfgs = (None, None)  # (the sleeves' cfg records, packed)
        self._scratches: list[_Scratch] = []  # lent to one close at a time

    def borrow_scratch(self, size: int) -> _Scratch:
        """Scratch arrays for a close of ``size`` bars, lent to it alone until
        :meth:`give_back`: allocated once per layout, not per tick's :class:`Book` (eight
        arrays, a fifth of a 1-model tick's Book). Two closes at once get two sets."""
        try:
            scratch = self._scratches.pop()  # atomic: a thread takes a set nobody holds
        except IndexError:
            return _Scratch(max(size, len(self.sleeve_ids)), len(self.scopes))
        if size > len(scratch.rows):
            return _Scratch(size, len(self.scopes))
        return scratch

    def give_back(self, scratch: _Scratch) -> None:
        if len(self._scratches) < _SCRATCHES_KEPT:
            self._scratches.append(scratch)

    def scopes_of(self, scopes_: list) -> dict[str, list]:
        return {sleeve_id: [b for b in scopes_ if sleeve_id in b.sleeve_ids]
                for sleeve_id in self.sleeve_ids}

    def cfgs(self, all_sleeves) -> np.ndarray:
        """The sleeves' ``CONFIG_DTYPE`` records packed in one array; packed again when a
        sleeve's record is another (operator mode takes each venue's lot size)."""
        records, packed = self._cfgs
        if records is None or len(records) != len(all_sleeves) or any(
                a is not s.cfg for a, s in zip(records, all_sleeves, strict=True)):
            packed = pack(self.sleeve_ids, {s.id: s.cfg for s in all_sleeves}, CONFIG_DTYPE)
            self._cfgs = ([s.cfg for s in all_sleeves], packed)
        return copy_records(packed)


def _layout(config, all_sleeves) -> _Layout:
    """The :class:`_Layout` of a configuration and its sleeves (a configuration is frozen;
    its sleeves are named by id and market)."""
    key = (id(config), tuple((s.id, s.market) for s in all_sleeves))
    made = _LAYOUTS.get(key)
    if made is None or made[0] is not config:
        made = _LAYOUTS[key] = (config, _Layout(config, all_sleeves))
        while len(_LAYOUTS) > _LAYOUTS_KEPT:
            del _LAYOUTS[next(iter(_LAYOUTS))]
    return made[1]


_LAYOUTS: dict[tuple, tuple] = {}
_LAYOUTS_KEPT = 16
_SCRATCHES_KEPT = 4  # sets of scratch arrays a layout keeps for its closes


class _Scratch:
    """What :func:`~mmats.nb.portfolio.step_close` reads and writes for a close of up to
    ``size`` bars, lent to one close at a time (:meth:`_Layout.borrow_scratch`; a close
    fills in its bars and copies out what it keeps)."""

    def __init__(self, size: int, n_scopes: int):
        size = max(size, 1)
        self.rows = np.arange(size, dtype=np.int64)
        self.sleeve_of = np.zeros(size, dtype=np.int64)  # the bars', filled in by a close
        self.open_ns = np.zeros(size, dtype=np.int64)
        self.prices = np.zeros((size, 5))  # open, high, low, close, volume
        self.values = np.zeros((size, 3))  # value, stop, take-profit distance
        self.fills = np.zeros(2 * size, dtype=FILL_DTYPE)
        self.n_fills = np.zeros(size, dtype=np.int64)
        self.orders = np.zeros(size, dtype=ORDER_DTYPE)
        self.n_orders = np.zeros(size, dtype=np.int64)
        self.blocks = np.zeros(size, dtype=BLOCK_DTYPE)
        self.before = np.zeros(size, dtype=STATE_DTYPE)
        self.trades = np.zeros(2, dtype=TRADE_DTYPE)
        self.events = np.zeros(max(n_scopes, 1), dtype=EVENT_DTYPE)


def book_id(scope) -> str:
    """The journal's state id of a scope's book (global, or one market)."""
    return f"__book__:{scope.name}"


#: The kernel's on_signal with the upper levels' veto (:func:`mmats.nb.portfolio.decide`).
apply_signal = decide
