"""The global and market limits, and one portfolio close, as numba functions.

The upper levels of the risk hierarchy (global → market; the strategy and order levels are
the kernel's own, :mod:`mmats.nb.risk`) act on a *scope*: the sleeves of the whole
configuration, or of one market. A scope's book (:data:`BOOK_DTYPE`) remembers its UTC
day, its equity at the day's start, its peak and whether it halted. At every close:

- drawdown ``100 (peak - equity) / peak >= max_drawdown_pct`` halts and flattens every
  sleeve of the scope (the kernel's ``halt``) until an operator resumes;
- daily loss ``100 (day start - equity) / day start >= max_daily_loss_pct`` puts its
  ACTIVE sleeves in REDUCING (the kernel's ``start_day`` lifts it at the next UTC day);
- a full book (``max_open_positions``: sleeves holding or waiting on a non-zero target)
  or the gross leverage cap (Σ |position × last close| >= ``max_leverage`` × equity)
  lets a sleeve's decision only reduce (:func:`decide`).

:func:`step_close` is one close of the runner (:class:`mmats.live.closes.Book`): every
bar through the kernel's ``on_bar``, the scopes' limits, then each decision through
``on_signal``. The live runner calls it once per close with the sleeves' states packed in
one array; :func:`run_portfolio` calls it for every close of a history (the in-memory
portfolio backtest). The Python side (:mod:`mmats.live.portfolio`) only packs states and
turns the codes returned here into risk events with messages.

Scopes are rows of ``member`` (uint8, scopes × sleeves); their limits are
:data:`LIMITS_DTYPE` records, 0 meaning no limit.
"""

import math

import numpy as np
from numba import njit

from mmats.nb.risk import ACTIVE, REDUCING, halt
from mmats.nb.sim import on_bar, on_bar_venue, on_signal
from mmats.types import FILL_DTYPE, ORDER_DTYPE, STATE_DTYPE, TRADE_DTYPE
from mmats.units import DAY_NS

#: What a scope (global, or one market) remembers between ticks.
BOOK_DTYPE = np.dtype([("day", np.int64), ("day_start_equity", np.float64),
                       ("equity_peak", np.float64), ("loss_tripped_day", np.int64),
                       ("halted", np.int64)], align=True)

#: A scope's limits (0: none).
LIMITS_DTYPE = np.dtype([("max_daily_loss_pct", np.float64), ("max_drawdown_pct", np.float64),
                         ("max_open_positions", np.int64), ("max_leverage", np.float64)],
                        align=True)

#: A limit that acted at a close: ``kind`` (:data:`MAX_DRAWDOWN`, :data:`MAX_DAILY_LOSS`),
#: ``figure`` (the drawdown or loss in percent), the scope's equity and ``reference`` (its
#: peak, or its equity at the day's start).
EVENT_DTYPE = np.dtype([("scope", np.int64), ("ts_ns", np.int64), ("kind", np.int64),
                        ("figure", np.float64), ("equity", np.float64),
                        ("reference", np.float64)], align=True)

#: Why a decision was blocked: the first scope and limit (:data:`MAX_OPEN_POSITIONS`,
#: :data:`MAX_LEVERAGE`; :data:`NOT_BLOCKED` and scope -1 when none) with the scope's
#: open positions, equity and gross exposure as the limit weighed them.
BLOCK_DTYPE = np.dtype([("scope", np.int64), ("limit", np.int64),
                        ("open_positions", np.int64), ("equity", np.float64),
                        ("gross", np.float64)], align=True)

#: A scope's sums at a decision (:func:`scope_totals`).
TOTALS_DTYPE = np.dtype([("equity", np.float64), ("open_positions", np.int64),
                         ("gross", np.float64)], align=True)

_LAST = np.iinfo(np.int64).max

NO_EVENT = 0
MAX_DRAWDOWN = 1
MAX_DAILY_LOSS = 2

NOT_BLOCKED = 0
MAX_OPEN_POSITIONS = 1
MAX_LEVERAGE = 2


# --- the arithmetic of one scope -----------------------------------------------------------

@njit(cache=True, error_model="numpy")
def drawdown_pct(peak, equity):
    """Percent below the peak (IEEE division, as numpy: NaN for a zero peak and equity)."""
    return 100.0 * (peak - equity) / peak


@njit(cache=True, error_model="numpy")
def daily_loss_pct(day_start_equity, equity):
    """Percent lost since the day's start."""
    return 100.0 * (day_start_equity - equity) / day_start_equity


@njit(cache=True, inline="always")
def counts_as_open(state):
    """A sleeve holding a position or waiting on a non-zero target takes a place in a
    scope's ``max_open_positions``."""
    return state.position != 0.0 or (not math.isnan(state.target) and state.target != 0.0)


@njit(cache=True)
def scope_totals(states, member_row):
    """``(equity, open positions, gross exposure)`` of the sleeves ``member_row`` marks, in
    the sleeves' order: Σ equity, the count of :func:`counts_as_open`, Σ |position × last
    close| (quote currency)."""
    equity = 0.0
    count = 0
    gross = 0.0
    for i in range(states.shape[0]):
        if member_row[i]:
            state = states[i]
            equity += state.equity
            if counts_as_open(state):
                count += 1
            if state.position != 0.0:
                gross += abs(state.position * state.last_close)
    return equity, count, gross


@njit(cache=True, inline="always")
def book_full(max_open_positions, count):
    """Whether ``count`` open positions fill a book of ``max_open_positions`` (0: no cap)."""
    return max_open_positions > 0 and count >= max_open_positions


@njit(cache=True, inline="always")
def leverage_full(max_leverage, equity, gross):
    """Whether a gross exposure reaches the cap × equity (0: no cap); always at equity <= 0."""
    return max_leverage > 0.0 and (equity <= 0.0 or gross >= max_leverage * equity)


@njit(cache=True)
def limit_scope(book, limits, states, member_row, ts_ns):
    """A scope's daily loss and drawdown at a close (``ts_ns``), acting on its sleeves'
    states: halt all at a drawdown breach, REDUCING for the ACTIVE ones past the daily
    loss. Returns ``(kind, figure, equity)``: the event to record (:data:`NO_EVENT`, or
    the limit and its figure in percent; a daily loss is recorded once a day)."""
    equity = scope_totals(states, member_row)[0]
    day = ts_ns // DAY_NS
    if day != book.day:
        book.day = day
        book.day_start_equity = equity
    if equity > book.equity_peak:
        book.equity_peak = equity
    kind = NO_EVENT
    figure = math.nan
    if limits.max_drawdown_pct > 0.0 and book.halted == 0:
        drawdown = drawdown_pct(book.equity_peak, equity)
        if drawdown >= limits.max_drawdown_pct:
            book.halted = 1
            for i in range(states.shape[0]):
                if member_row[i]:
                    halt(states[i], ts_ns)
            kind = MAX_DRAWDOWN
            figure = drawdown
    if book.halted != 0:  # its sleeves stay HALTED in their own states until a resume
        return kind, figure, equity
    if limits.max_daily_loss_pct > 0.0 and book.day_start_equity > 0.0:
        loss = daily_loss_pct(book.day_start_equity, equity)
        if loss >= limits.max_daily_loss_pct:
            for i in range(states.shape[0]):
                if member_row[i] and states[i].trading_state == ACTIVE:
                    states[i].trading_state = REDUCING
            if book.loss_tripped_day != day:
                book.loss_tripped_day = day
                kind = MAX_DAILY_LOSS
                figure = loss
    return kind, figure, equity


@njit(cache=True)
def limit_scopes(books, limits, states, member, ts_ns, events):
    """Every scope's :func:`limit_scope`, in scope order; the events into ``events`` (at
    least one slot per scope). Returns how many were written."""
    n_events = 0
    for j in range(member.shape[0]):
        book = books[j]
        kind, figure, equity = limit_scope(book, limits[j], states, member[j], ts_ns)
        if kind != NO_EVENT:
            event = events[n_events]
            event.scope = j
            event.ts_ns = ts_ns
            event.kind = kind
            event.figure = figure
            event.equity = equity
            event.reference = book.equity_peak if kind == MAX_DRAWDOWN else book.day_start_equity
            n_events += 1
    return n_events


@njit(cache=True)
def totals_of_scopes(states, member, totals):
    """Every scope's :func:`scope_totals` into ``totals`` (:data:`TOTALS_DTYPE`)."""
    for j in range(member.shape[0]):
        equity, count, gross = scope_totals(states, member[j])
        totals[j].equity = equity
        totals[j].open_positions = count
        totals[j].gross = gross


@njit(cache=True)
def first_blocking(limits, member, totals, sleeve, holding, block):
    """The first scope holding ``sleeve`` (in scope order) whose full book or leverage cap
    forbids it new exposure at this decision, judged on the scopes' ``totals``
    (:func:`totals_of_scopes`): a full book counts only for a sleeve not yet ``holding``,
    and is checked before the leverage cap. Writes ``block`` and returns its limit code
    (:data:`NOT_BLOCKED` for none)."""
    block.scope = -1
    block.limit = NOT_BLOCKED
    for j in range(member.shape[0]):
        if not member[j, sleeve]:
            continue
        cap, total = limits[j], totals[j]
        code = NOT_BLOCKED
        if not holding and book_full(cap.max_open_positions, total.open_positions):
            code = MAX_OPEN_POSITIONS
        elif leverage_full(cap.max_leverage, total.equity, total.gross):
            code = MAX_LEVERAGE
        if code != NOT_BLOCKED:
            block.scope = j
            block.limit = code
            block.open_positions = total.open_positions
            block.equity = total.equity
            block.gross = total.gross
            return code
    return NOT_BLOCKED


@njit(cache=True)
def decide(state, cfg, ts_ns, value, stop, take, blocked):
    """The kernel's ``on_signal`` with the upper levels' veto: while ``blocked``, an ACTIVE
    sleeve decides as if REDUCING (it may only shrink; a blocked entry is retried later)."""
    if not blocked or state.trading_state != ACTIVE:
        on_signal(state, cfg, ts_ns, value, stop, take)
        return
    state.trading_state = REDUCING
    on_signal(state, cfg, ts_ns, value, stop, take)
    state.trading_state = ACTIVE


# --- one close, and a history of them -----------------------------------------------------

@njit(cache=True)
def step_close(states, cfgs, books, limits, member, venue, sleeve_of, rows, signal_rows,
               start, end, open_ns, prices, signals, fills, n_fills, orders, n_orders, blocks,
               before, trades, events):
    """One close of the portfolio: the bars ``start:end`` of the schedule (``sleeve_of``
    gives each one's sleeve, ``rows`` its row in ``open_ns`` and ``prices`` (open, high,
    low, close, volume), ``signal_rows`` its row in ``signals`` (value, stop distance,
    take-profit distance)), in order, as the runner takes them:

    1. each bar through the kernel's ``on_bar`` (``on_bar_venue`` when ``venue``: a venue
       executes, no simulated fill); bar ``k``'s fills go to ``fills[2 k]``,
       ``fills[2 k + 1]`` (``n_fills[k]`` of them), its order to ``orders[k]``;
    2. every scope's limits (:func:`limit_scopes`) at the first bar's open time; events
       into ``events``;
    3. each bar's value through :func:`first_blocking` (into ``blocks[k]``; the scopes'
       totals taken once after the limits, their open positions counted on as each
       decision sets its target) and :func:`decide`; ``before[k]`` (when ``before`` is not empty) keeps the state just
       before the decision, for the journal's account of the gates.

    ``k`` counts from 0 at ``start``; ``trades`` is scratch (2 records). Returns the
    number of events.
    """
    for i in range(start, end):
        k = i - start
        sleeve = sleeve_of[i]
        row = rows[i]
        state = states[sleeve]
        ts_ns = open_ns[row]
        day = ts_ns // DAY_NS
        if venue:
            on_bar_venue(state, cfgs[sleeve], ts_ns, day, prices[row, 0], prices[row, 1],
                         prices[row, 2], prices[row, 3], prices[row, 4])
            n_fills[k] = 0
            n_orders[k] = 0
        else:
            made, ordered, _ = on_bar(state, cfgs[sleeve], state.bars, ts_ns, day,
                                      prices[row, 0], prices[row, 1], prices[row, 2],
                                      prices[row, 3], prices[row, 4], fills[2 * k],
                                      fills[2 * k + 1], orders[k], trades[0], trades[1])
            n_fills[k] = made
            n_orders[k] = ordered
    n_events = limit_scopes(books, limits, states, member, open_ns[rows[start]], events)
    # a decision changes no position, equity or close: only the open-position counts move
    totals = np.empty(member.shape[0], dtype=TOTALS_DTYPE)
    totals_of_scopes(states, member, totals)
    keep = before.shape[0] > 0
    for i in range(start, end):
        k = i - start
        sleeve = sleeve_of[i]
        state = states[sleeve]
        was_open = counts_as_open(state)
        blocked = first_blocking(limits, member, totals, sleeve, state.position != 0.0,
                                 blocks[k]) != NOT_BLOCKED
        if keep:
            before[k] = state
        at = signal_rows[i]
        decide(state, cfgs[sleeve], open_ns[rows[i]], signals[at, 0], signals[at, 1],
               signals[at, 2], blocked)
        now_open = counts_as_open(state)
        if now_open != was_open:
            for j in range(member.shape[0]):
                if member[j, sleeve]:
                    totals[j].open_positions += 1 if now_open else -1
    return n_events


@njit(cache=True)
def schedule(open_ns, first_rows, sizes, bar_ns):
    """The runner's order of events over whole histories: every sleeve's bars merged by
    close time, ties in sleeve order. Sleeve ``s`` has ``sizes[s]`` bars from row
    ``first_rows[s]`` of ``open_ns`` and closes each ``bar_ns[s]`` after its open; its
    signal rows follow the sleeves before it.

    Returns ``(sleeve_of, rows, signal_rows, close_ns)`` of every bar, in order."""
    n_sleeves = sizes.shape[0]
    total = 0
    for s in range(n_sleeves):
        total += sizes[s]
    sleeve_of = np.empty(total, dtype=np.int64)
    rows = np.empty(total, dtype=np.int64)
    signal_rows = np.empty(total, dtype=np.int64)
    close_ns = np.empty(total, dtype=np.int64)
    first_signal = np.zeros(n_sleeves, dtype=np.int64)
    for s in range(1, n_sleeves):
        first_signal[s] = first_signal[s - 1] + sizes[s - 1]
    head = np.empty(n_sleeves, dtype=np.int64)  # each sleeve's next close (LAST: none)
    done = np.zeros(n_sleeves, dtype=np.int64)  # its bars already scheduled
    for s in range(n_sleeves):
        head[s] = open_ns[first_rows[s]] + bar_ns[s] if sizes[s] > 0 else _LAST
    soonest = _LAST
    s = n_sleeves
    for i in range(total):
        while s < n_sleeves and head[s] != soonest:  # the next sleeve closing then
            s += 1
        if s == n_sleeves:  # none left at this close: the next close is the soonest head
            soonest = _LAST
            for t in range(n_sleeves):
                soonest = min(soonest, head[t])
            s = 0
            while head[s] != soonest:
                s += 1
        sleeve_of[i] = s
        rows[i] = first_rows[s] + done[s]
        signal_rows[i] = first_signal[s] + done[s]
        close_ns[i] = soonest
        done[s] += 1
        head[s] = (open_ns[rows[i] + 1] + bar_ns[s]) if done[s] < sizes[s] else _LAST
        s += 1
    return sleeve_of, rows, signal_rows, close_ns


@njit(cache=True, inline="always")
def _grown(records, count, need):
    """``records`` with room for ``need`` more after ``count`` (doubled when full)."""
    if count + need <= records.shape[0]:
        return records
    bigger = np.empty(max(count + need, 2 * records.shape[0]), dtype=records.dtype)
    for i in range(count):
        bigger[i] = records[i]
    return bigger


@njit(cache=True)
def run_portfolio(states, cfgs, books, limits, member, sleeve_of, rows, signal_rows,
                  close_ns, open_ns, prices, signals, equity):
    """Every close of a history through :func:`step_close` (simulated fills). The schedule
    (``sleeve_of``, ``rows``, ``signal_rows``, ``close_ns``) is sorted by close time, then
    by sleeve; ``equity[signal_rows[i]]`` gets bar ``i``'s sleeve equity after its close
    (so ``equity`` is in the order of ``signals``: each sleeve's bars in turn).

    Returns ``(fills, fill_sleeve, events)``: every fill in order with its sleeve, and the
    limits' events.
    """
    n_sleeves = states.shape[0]
    scratch_fills = np.empty(2 * n_sleeves, dtype=FILL_DTYPE)
    scratch_orders = np.empty(n_sleeves, dtype=ORDER_DTYPE)
    n_fills = np.zeros(n_sleeves, dtype=np.int64)
    n_orders = np.zeros(n_sleeves, dtype=np.int64)
    blocks = np.empty(n_sleeves, dtype=BLOCK_DTYPE)
    before = np.empty(0, dtype=STATE_DTYPE)
    trades = np.empty(2, dtype=TRADE_DTYPE)
    scratch_events = np.empty(member.shape[0], dtype=EVENT_DTYPE)
    fills = np.empty(1024, dtype=FILL_DTYPE)
    fill_sleeve = np.empty(1024, dtype=np.int64)
    events = np.empty(16, dtype=EVENT_DTYPE)
    count = 0
    n_events = 0
    start = 0
    total = close_ns.shape[0]
    while start < total:
        end = start + 1
        while end < total and close_ns[end] == close_ns[start]:
            end += 1
        new = step_close(states, cfgs, books, limits, member, False, sleeve_of, rows,
                         signal_rows, start, end, open_ns, prices, signals, scratch_fills,
                         n_fills, scratch_orders, n_orders, blocks, before, trades,
                         scratch_events)
        for i in range(start, end):
            k = i - start
            sleeve = sleeve_of[i]
            made = n_fills[k]
            if made > 0:
                fills = _grown(fills, count, made)
                fill_sleeve = _grown(fill_sleeve, count, made)
                for f in range(made):
                    fills[count] = scratch_fills[2 * k + f]
                    fill_sleeve[count] = sleeve
                    count += 1
            equity[signal_rows[i]] = states[sleeve].equity
        if new > 0:
            events = _grown(events, n_events, new)
            for e in range(new):
                events[n_events] = scratch_events[e]
                n_events += 1
        start = end
    return fills[:count], fill_sleeve[:count], events[:n_events]
