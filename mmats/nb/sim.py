"""The bar step shared by the backtest and the live runner, and the loops over it.

One bar, in order (``on_bar`` then ``on_signal``):

1. a new UTC day rolls the daily-loss window;
2. the target decided at the previous close fills at this bar's open (slippage, fees,
   lot size, minimum notional, volume-participation and per-order notional caps; a
   capped order fills partly and the rest is tried at the next bar);
3. stop-loss / take-profit levels fill from this bar's high and low, pessimistically;
4. mark-to-market at the close, then the risk limits, which may queue a risk order;
5. the strategy's value at this close, through sizing and the gates, becomes the target
   that fills at the next bar's open.

The live runner calls ``on_bar`` and ``on_signal`` once per new bar with the persisted
state; ``simulate`` and ``run_metrics`` call them for every bar of a history.
"""

import math

import numpy as np
from numba import njit

from mmats.nb.features import CAPS_ON, LOTS_ON, STOPS_ON
from mmats.nb.fills import apply_fill, fill_price, open_trade, slippage_fraction, stop_exit
from mmats.nb.local import local_record
from mmats.nb.metrics import finalize_metrics, init_metrics, update_metrics
from mmats.nb.risk import (
    ACTIVE,
    check_limits,
    clip_exposure,
    gate_target,
    reduce_only,
    start_day,
)
from mmats.nb.sizing import (
    ewm_decay,
    exposure_scale,
    round_to_lot,
    target_quantity,
    uses_volatility,
)
from mmats.types import (
    FILL_DTYPE,
    METRICS_DTYPE,
    ORDER_DTYPE,
    STATE_DTYPE,
    TRADE_DTYPE,
    FillReason,
    OrderStatus,
)

SIGNAL = int(FillReason.SIGNAL)
FILLED = int(OrderStatus.FILLED)
PARTIAL = int(OrderStatus.PARTIAL)
REJECTED_MIN_NOTIONAL = int(OrderStatus.REJECTED_MIN_NOTIONAL)
REJECTED_LOT_SIZE = int(OrderStatus.REJECTED_LOT_SIZE)
NO_ORDER = np.int64(-1)  # order id of stop fills; typed int64 so apply_fill compiles once
SCRATCH = 2  # a bar has at most two fills (its order, a stop), each closing <= 1 trade


@njit(cache=True)
def init_state(state, cash):
    """Reset a state record to a flat sleeve holding ``cash``."""
    state.cash = cash
    state.position = 0.0
    state.avg_price = 0.0
    state.equity = cash
    state.equity_peak = cash
    state.day = -1
    state.day_start_equity = cash
    state.trading_state = ACTIVE
    state.last_signal = math.nan
    state.target = math.nan
    state.target_reason = SIGNAL
    state.target_ts_ns = 0
    state.pending_stop_distance = math.nan
    state.pending_take_profit_distance = math.nan
    state.stop_price = math.nan
    state.take_profit_price = math.nan
    state.last_close = math.nan
    state.var_ewm = 0.0
    state.volume_ewm = 0.0
    state.bars = 0
    state.last_bar_ts_ns = -1
    state.next_order_id = 0
    open_trade(state, 0.0, -1, 0)
    state.n_trades = 0
    state.n_wins = 0
    state.gross_profit = 0.0
    state.gross_loss = 0.0
    state.fees_paid = 0.0


@njit(cache=True)
def on_bar(state, cfg, bar, ts_ns, day, open_, high, low, close, volume,
           fill_a, fill_b, order, trade_a, trade_b):
    """Process one finished bar: pending order at the open, stops, mark-to-market, limits.

    Writes what happened into the records: fills into ``fill_a`` then ``fill_b``, the
    order into ``order``, closed trades into ``trade_a`` then ``trade_b``, and returns
    ``(n_fills, n_orders, n_trades)`` written.
    """
    start_day(state, day)
    n_fills = 0
    n_orders = 0
    n_trades = 0
    entered = False
    if not math.isnan(state.target):
        n_fills, n_orders, n_trades, entered = _execute_target(
            state, cfg, bar, ts_ns, open_, high, low, volume, fill_a, order, trade_a
        )
    if STOPS_ON and state.position != 0.0:
        reference, reason = stop_exit(state.position, state.stop_price,
                                      state.take_profit_price, open_, high, low, entered)
        if reason >= 0:
            side = -1 if state.position > 0.0 else 1
            quantity = abs(state.position)
            fraction = slippage_fraction(state, cfg, quantity, volume)
            price = fill_price(reference, side, fraction, low, high)
            fill = fill_a if n_fills == 0 else fill_b
            trade = trade_a if n_trades == 0 else trade_b
            if stop_fill(state, cfg, bar, ts_ns, quantity, price, reference, reason, fill,
                         trade):
                n_trades += 1
            n_fills += 1
    mark_to_market(state, cfg, close, volume)
    state.last_bar_ts_ns = ts_ns
    check_limits(state, cfg, ts_ns)
    return n_fills, n_orders, n_trades


@njit(cache=True, inline="always")
def on_signal(state, cfg, ts_ns, signal, stop_distance, take_profit_distance):
    """Turn the strategy's value at this bar's close into a target for the next open.

    NaN keeps the position. A value equal to the last one acted on places no order, so
    holding a signal does not rebalance every bar, and a stopped-out position is not
    re-entered until the signal changes. A target the trading state blocks, or that the
    sizing cannot size yet (volatility target before prices move), is retried at later
    bars while the signal persists.
    """
    if math.isnan(signal) or signal == state.last_signal:
        return
    _set_target(state, cfg, ts_ns, signal, stop_distance, take_profit_distance)


@njit(cache=True)
def _set_target(state, cfg, ts_ns, signal, stop_distance, take_profit_distance):
    scale = exposure_scale(state, cfg)
    if math.isnan(scale):  # sizing cannot tell yet (no volatility known)
        if signal != 0.0:
            return  # last_signal stays: the signal is acted on once it can be sized
        scale = 0.0
    desired = clip_exposure(signal * scale, cfg)
    allowed = gate_target(state, desired)
    if math.isnan(allowed):
        return
    state.target = allowed
    state.target_reason = SIGNAL
    state.target_ts_ns = ts_ns
    state.pending_stop_distance = stop_distance if stop_distance > 0.0 else math.nan
    state.pending_take_profit_distance = (
        take_profit_distance if take_profit_distance > 0.0 else math.nan
    )
    if allowed == desired:
        state.last_signal = signal


@njit(cache=True, inline="always")
def mark_to_market(state, cfg, close, volume):
    """Value the sleeve at the close; update the peak, and the volatility and volume EWMAs
    when a sizing or slippage rule of this sleeve reads them."""
    if uses_volatility(cfg):
        decay = ewm_decay(cfg)
        if state.bars > 0 and state.last_close > 0.0 and close > 0.0:
            log_return = math.log(close / state.last_close)
            state.var_ewm = decay * state.var_ewm + (1.0 - decay) * log_return * log_return
        state.volume_ewm = decay * state.volume_ewm + (1.0 - decay) * volume
    state.last_close = close
    state.bars += 1
    state.equity = state.cash + state.position * close
    if state.equity > state.equity_peak:
        state.equity_peak = state.equity


@njit(cache=True, inline="always")
def _execute_target(state, cfg, bar, ts_ns, open_, high, low, volume, fill, order, trade):
    position = state.position
    side, quantity, price, status = _plan_order(state, cfg, bar, ts_ns, open_, low, high,
                                                volume, order)
    if side == 0:
        return 0, 0, 0, False
    n_fills = 0
    n_trades = 0
    entered = False
    if (status == FILLED or status == PARTIAL) and quantity > 0.0:
        if apply_fill(state, cfg, bar, ts_ns, side, quantity, price, open_,
                      state.target_reason, order.order_id, fill, trade):
            n_trades = 1
        n_fills = 1
        order.filled_qty = side * quantity
        entered = _after_fill(state, position, price)
    if status != PARTIAL:
        state.target = math.nan
    return n_fills, 1, n_trades, entered


@njit(cache=True, inline="always")
def _plan_order(state, cfg, bar, ts_ns, reference, low, high, volume, order):
    """Size the order the pending target asks for, priced from ``reference`` (slippage
    kept inside [low, high]), and write it into ``order``.

    Returns ``(side, quantity, price, status)``; side 0 means the position already is the
    target (the target is cleared, no order).
    """
    exposure = state.target
    fee_rate = cfg.fee_bps * 1e-4
    position = state.position
    if exposure == 0.0:
        estimate = 0.0
    else:
        estimate = target_quantity(exposure, state.cash + position * reference, position,
                                   reference, fee_rate)
    allowed = reduce_only(state, estimate)
    if allowed != estimate:
        if allowed == 0.0:
            exposure = 0.0
        if state.target_reason == SIGNAL:
            state.last_signal = math.nan  # retried at later closes while the signal persists
        estimate = allowed
    if estimate == position:
        state.target = math.nan
        return 0, 0.0, math.nan, FILLED
    side = 1 if estimate > position else -1
    price = fill_price(reference, side, slippage_fraction(state, cfg, abs(estimate - position),
                                                          volume), low, high)
    if exposure == 0.0:
        wanted = -position
    else:
        # the position, not the trade, is rounded toward zero: a reduction never stops
        # short of its target, so a leverage cap stays a cap
        wanted = round_to_lot(target_quantity(exposure, state.cash + position * price,
                                              position, price, fee_rate),
                              cfg.lot_size) - position
    quantity = abs(wanted) if (wanted > 0.0) == (side > 0) else 0.0
    status = FILLED
    if CAPS_ON and cfg.max_participation > 0.0:
        cap = round_to_lot(cfg.max_participation * volume, cfg.lot_size)
        if quantity > cap:
            quantity = cap
            status = PARTIAL
    if CAPS_ON and cfg.max_order_notional > 0.0:  # the order level of the risk hierarchy
        cap = round_to_lot(cfg.max_order_notional / price, cfg.lot_size)
        if quantity > cap:
            quantity = cap
            status = PARTIAL
    closes_all = exposure == 0.0 and quantity == abs(position)
    if quantity <= 0.0:
        if status != PARTIAL:
            status = REJECTED_LOT_SIZE
    elif LOTS_ON and quantity * price < cfg.min_notional and not closes_all:
        status = REJECTED_MIN_NOTIONAL

    order.order_id = state.next_order_id
    order.decision_ts_ns = state.target_ts_ns
    order.bar = bar
    order.ts_ns = ts_ns
    order.target_exposure = exposure
    order.requested_qty = wanted
    order.filled_qty = 0.0
    order.price = price
    order.status = status
    order.reason = state.target_reason
    state.next_order_id += 1
    return side, quantity, price, status


@njit(cache=True, inline="always")
def _after_fill(state, position_before, price):
    """Stop-loss and take-profit levels after a fill at ``price``: set from the pending
    distances when the position grew or flipped, cleared when it is flat. Returns whether
    the position grew (an entry)."""
    now = state.position
    if not STOPS_ON:  # no levels are ever set; nothing reads "entered"
        return False
    grew = now != 0.0 and (position_before == 0.0 or (now > 0.0) != (position_before > 0.0)
                           or abs(now) > abs(position_before))
    if grew:
        if (now > 0.0) != (position_before > 0.0) or position_before == 0.0:
            state.stop_price = math.nan
            state.take_profit_price = math.nan
        direction = 1.0 if now > 0.0 else -1.0
        if not math.isnan(state.pending_stop_distance):
            state.stop_price = price - direction * state.pending_stop_distance
        if not math.isnan(state.pending_take_profit_distance):
            state.take_profit_price = price + direction * state.pending_take_profit_distance
    if now == 0.0:
        state.stop_price = math.nan
        state.take_profit_price = math.nan
    return grew


@njit(cache=True)
def on_bar_venue(state, cfg, ts_ns, day, open_, high, low, close, volume):
    """``on_bar`` for a sleeve whose orders a venue executes (operator mode).

    The same day roll, mark-to-market and limits, with no simulated fill: a stop-loss or
    take-profit the bar touched queues an exit (target 0 with that reason) that the runner
    sends as a market order, like the risk limits' orders. Where the levels rest at the
    venue (:mod:`mmats.live.protect`), the venue's stop fill is booked first
    (``venue_stop_fill``), so this queues an exit only when the venue did not fill it.
    Returns the exit's reason, or -1.
    """
    start_day(state, day)
    reason = -1
    if state.position != 0.0:
        _, reason = stop_exit(state.position, state.stop_price, state.take_profit_price,
                              open_, high, low, False)
        if reason >= 0:
            state.target = 0.0
            state.target_reason = reason
            state.target_ts_ns = ts_ns
            state.stop_price = math.nan
            state.take_profit_price = math.nan
    mark_to_market(state, cfg, close, volume)
    state.last_bar_ts_ns = ts_ns
    check_limits(state, cfg, ts_ns)
    return reason


@njit(cache=True)
def plan_venue_order(state, cfg, bar, ts_ns, reference, volume, order):
    """The order to send to a venue for the pending target, sized at ``reference`` (the
    last close) by the same sizing, reduce-only, lot, participation, notional and
    minimum-notional rules as a simulated fill. Writes ``order`` and clears the target
    (kept when a cap split it: the rest goes at the next bar).

    Returns ``(side, quantity)``: side 0 for no order, quantity 0 when the order was
    refused (its status says why).
    """
    side, quantity, _, status = _plan_order(state, cfg, bar, ts_ns, reference, 0.0, np.inf,
                                            volume, order)
    if side == 0:
        return 0, 0.0
    if status != PARTIAL:
        state.target = math.nan
    if status != FILLED and status != PARTIAL:
        return side, 0.0
    return side, quantity


@njit(cache=True)
def venue_fill(state, cfg, bar, ts_ns, side, quantity, price, reason, order_id, fill, trade):
    """Apply a fill a venue reported: the fill model's bookkeeping (``apply_fill``; pass a
    ``cfg`` whose ``fee_bps`` is the venue's actual fee rate) and the stop levels of an
    entry. Returns whether a trade was closed."""
    position = state.position
    closed = apply_fill(state, cfg, bar, ts_ns, side, quantity, price, price, reason,
                        order_id, fill, trade)
    _after_fill(state, position, price)
    state.equity = state.cash + state.position * price  # the peak moves at the bar's mark
    return closed


@njit(cache=True, inline="always")
def stop_fill(state, cfg, bar, ts_ns, quantity, price, reference, reason, fill, trade):
    """Book a stop-loss / take-profit exit of ``quantity`` (> 0) at ``price``: the fill
    (no order id) and, once the position is flat, the levels and any pending target
    cleared. The backtest's stops (``on_bar``) and a venue's resting stops
    (``venue_stop_fill``) both book through here. Returns whether a trade was closed."""
    side = -1 if state.position > 0.0 else 1
    closed = apply_fill(state, cfg, bar, ts_ns, side, quantity, price, reference, reason,
                        NO_ORDER, fill, trade)
    if state.position == 0.0 or (state.position > 0.0) == (side > 0):
        state.stop_price = math.nan
        state.take_profit_price = math.nan
        state.target = math.nan
    return closed


@njit(cache=True)
def venue_stop_fill(state, cfg, bar, ts_ns, quantity, price, reason, fill, trade):
    """Book the fill of a stop-loss / take-profit order resting at a venue (operator mode),
    at the price the venue reports: the same bookkeeping as the kernel's own stop fill
    (``stop_fill``; pass a ``cfg`` whose ``fee_bps`` is the venue's actual fee rate).
    A part fill leaves the levels in place (the rest still rests). Returns whether a
    trade was closed."""
    closed = stop_fill(state, cfg, bar, ts_ns, quantity, price, price, reason, fill, trade)
    state.equity = state.cash + state.position * price  # the peak moves at the bar's mark
    return closed


@njit(cache=True, inline="always")
def _append(records, count, scratch, new):
    """Append ``scratch[:new]`` at ``records[count:]``, doubling the array when full.

    Element-wise copies, not slice assignment: numba compiles a slice assignment with
    shape-mismatch error formatting that costs seconds on a cold start.
    """
    if count + new > records.shape[0]:
        bigger = np.empty(max(count + new, 2 * records.shape[0]), dtype=records.dtype)
        for i in range(count):
            bigger[i] = records[i]
        records = bigger
    for i in range(new):
        records[count + i] = scratch[i]
    return records


@njit(cache=True)
def simulate(ts_ns, day, open_, high, low, close, volume, signal, stop_distance,
             take_profit_distance, cfg_array, state_array, metrics_array):
    """Run the bar step over a whole history, keeping every record.

    ``stop_distance`` / ``take_profit_distance`` may be empty arrays (no stops).
    ``state_array`` and ``metrics_array`` are 1-element record arrays, updated in place.
    Returns ``(equity, position, fills, orders, trades)``.
    """
    cfg = cfg_array[0]
    state = state_array[0]
    metrics = metrics_array[0]
    n = ts_ns.shape[0]
    has_stops = stop_distance.shape[0] > 0
    has_targets = take_profit_distance.shape[0] > 0
    equity = np.empty(n)
    position = np.empty(n)
    fills = np.empty(64, dtype=FILL_DTYPE)
    orders = np.empty(64, dtype=ORDER_DTYPE)
    trades = np.empty(64, dtype=TRADE_DTYPE)
    scratch_fills = np.empty(SCRATCH, dtype=FILL_DTYPE)
    scratch_orders = np.empty(1, dtype=ORDER_DTYPE)
    scratch_trades = np.empty(SCRATCH, dtype=TRADE_DTYPE)
    fill_a, fill_b = scratch_fills[0], scratch_fills[1]
    order, trade_a, trade_b = scratch_orders[0], scratch_trades[0], scratch_trades[1]
    n_fills = 0
    n_orders = 0
    n_trades = 0
    for t in range(n):
        new_fills, new_orders, new_trades = on_bar(
            state, cfg, t, ts_ns[t], day[t], open_[t], high[t], low[t], close[t], volume[t],
            fill_a, fill_b, order, trade_a, trade_b,
        )
        if new_fills > 0:
            fills = _append(fills, n_fills, scratch_fills, new_fills)
            n_fills += new_fills
        if new_orders > 0:
            orders = _append(orders, n_orders, scratch_orders, new_orders)
            n_orders += new_orders
        if new_trades > 0:
            trades = _append(trades, n_trades, scratch_trades, new_trades)
            n_trades += new_trades
        update_metrics(metrics, state.equity, state.position, t, ts_ns[t])
        equity[t] = state.equity
        position[t] = state.position
        on_signal(state, cfg, ts_ns[t], signal[t],
                  stop_distance[t] if has_stops else math.nan,
                  take_profit_distance[t] if has_targets else math.nan)
    return equity, position, fills[:n_fills], orders[:n_orders], trades[:n_trades]


@njit(cache=True)
def run_metrics(ts_ns, day, open_, high, low, close, volume, signal, stop_distance,
                take_profit_distance, cfg_array, cash, bar_ns, out, sample_bars, equity_out):
    """Run the bar step over a history keeping only the metrics (the sweep's inner loop).

    Memory is O(1) beyond the inputs: no equity curve, no records. Writes the metrics
    of :data:`mmats.types.METRIC_NAMES` into ``out``, and the closing equity at the
    (increasing) bar indices ``sample_bars`` into ``equity_out`` (both may be empty):
    enough for per-period returns of every combination without a bars × combinations
    matrix.
    """
    cfg = cfg_array[0]
    # records in this frame, not on the heap: LLVM keeps their fields in registers
    state = local_record(STATE_DTYPE)
    metrics = local_record(METRICS_DTYPE)
    init_state(state, cash)
    init_metrics(metrics, cash)
    fill_a = local_record(FILL_DTYPE)
    fill_b = local_record(FILL_DTYPE)
    order = local_record(ORDER_DTYPE)
    trade_a = local_record(TRADE_DTYPE)
    trade_b = local_record(TRADE_DTYPE)
    run_bars(state, metrics, cfg, ts_ns, day, open_, high, low, close, volume, signal,
             stop_distance, take_profit_distance, 0, ts_ns.shape[0], sample_bars, 0,
             equity_out, fill_a, fill_b, order, trade_a, trade_b)
    finalize_metrics(metrics, state, cfg.periods_per_year, bar_ns, out)


@njit(cache=True, inline="always")
def run_bars(state, metrics, cfg, ts_ns, day, open_, high, low, close, volume, signal,
             stop_distance, take_profit_distance, first, last, sample_bars, next_sample,
             equity_out, fill_a, fill_b, order, trade_a, trade_b):
    """The bar step and the metrics over bars ``first`` to ``last - 1``: ``run_metrics``
    over a whole history, and the sweep kernel over blocks of bars whose signal it
    computes block by block (:mod:`mmats.fused`). ``signal`` and the distances hold those
    bars only (``signal[t - first]`` is bar t's); the distances may be empty (no stops).
    Returns the index into ``sample_bars`` of the next bar whose equity is sampled.
    """
    has_stops = stop_distance.shape[0] > 0
    has_targets = take_profit_distance.shape[0] > 0
    n_samples = sample_bars.shape[0]
    for t in range(first, last):
        # unsigned indices: numba then adds no negative-index wraparound to each read
        u = np.uint64(t)
        i = np.uint64(t - first)
        on_bar(state, cfg, t, ts_ns[u], day[u], open_[u], high[u], low[u], close[u],
               volume[u], fill_a, fill_b, order, trade_a, trade_b)
        update_metrics(metrics, state.equity, state.position, t, ts_ns[u])
        if next_sample < n_samples and sample_bars[next_sample] == t:
            equity_out[next_sample] = state.equity
            next_sample += 1
        on_signal(state, cfg, ts_ns[u], signal[i],
                  stop_distance[i] if has_stops else math.nan,
                  take_profit_distance[i] if has_targets else math.nan)
    return next_sample
