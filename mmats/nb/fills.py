"""The fill model: slippage, fees, applying a fill to the state, and closing trades.

A decision taken at bar t's close fills at bar t+1's open (see :mod:`mmats.nb.sim`);
stop-loss and take-profit levels fill inside a bar from its high and low.
"""

import math

from numba import njit

from mmats.nb.features import PARTICIPATION_SLIPPAGE_ON, VOLATILITY_ON
from mmats.nb.sizing import average_volume, bar_variance
from mmats.types import FillReason, SlippageModel

VOLATILITY_SQRT = int(SlippageModel.VOLATILITY_SQRT)
PARTICIPATION = int(SlippageModel.PARTICIPATION)
STOP_LOSS = int(FillReason.STOP_LOSS)
TAKE_PROFIT = int(FillReason.TAKE_PROFIT)


@njit(cache=True, inline="always")
def fee_of(quantity, price, fee_bps):
    """The fee of trading ``quantity`` (unsigned) at ``price``, in the quote currency."""
    return quantity * price * fee_bps * 1e-4


@njit(cache=True, inline="always")
def slippage_fraction(state, cfg, quantity, bar_volume):
    """Adverse price move, as a fraction of price, for trading ``quantity`` (unsigned).

    fixed: ``slippage_bps``; volatility square-root adds ``impact_coef × σ_bar ×
    sqrt(quantity / average bar volume)``; participation adds ``impact_coef × quantity /
    bar_volume``. σ_bar and the average volume are EWMAs of the bars before this one.
    """
    fraction = cfg.slippage_bps * 1e-4
    model = cfg.slippage_model
    if VOLATILITY_ON and model == VOLATILITY_SQRT:
        variance = bar_variance(state, cfg)
        volume = average_volume(state, cfg)
        if variance > 0.0 and volume > 0.0:
            fraction += cfg.impact_coef * math.sqrt(variance) * math.sqrt(quantity / volume)
    elif PARTICIPATION_SLIPPAGE_ON and model == PARTICIPATION:
        if bar_volume > 0.0:
            fraction += cfg.impact_coef * quantity / bar_volume
    return fraction


@njit(cache=True, inline="always")
def fill_price(reference, side, fraction, low, high):
    """Price after slippage against the trader, kept inside the bar's [low, high]."""
    price = reference * (1.0 + side * fraction)
    return min(max(price, low), high)


@njit(cache=True, inline="always")
def stop_exit(position, stop_price, take_profit_price, open_, high, low, entered_this_bar):
    """Where an open position's stop-loss or take-profit fills in this bar, if at all.

    Returns ``(reference price, reason)``, or ``(nan, -1)`` when neither level is touched.
    Pessimistic: when the bar's range holds both levels, the stop-loss is taken. A bar
    that opens beyond a level fills at its open (a gap), except on the bar the position
    was entered, whose open is the entry itself.
    """
    if position > 0.0:
        if low <= stop_price:
            if entered_this_bar:
                return stop_price, STOP_LOSS
            return min(stop_price, open_), STOP_LOSS
        if high >= take_profit_price:
            if entered_this_bar:
                return take_profit_price, TAKE_PROFIT
            return max(take_profit_price, open_), TAKE_PROFIT
    elif position < 0.0:
        if high >= stop_price:
            if entered_this_bar:
                return stop_price, STOP_LOSS
            return max(stop_price, open_), STOP_LOSS
        if low <= take_profit_price:
            if entered_this_bar:
                return take_profit_price, TAKE_PROFIT
            return min(take_profit_price, open_), TAKE_PROFIT
    return math.nan, -1


@njit(cache=True)
def apply_fill(state, cfg, bar, ts_ns, side, quantity, price, reference, reason, order_id,
               fill, trade):
    """Apply one fill of ``quantity`` (> 0) on ``side`` (+1 buy, -1 sell) to the state.

    Updates cash (fees paid in quote currency), position, average price and the open
    trade; writes the ``fill`` record and, when the fill closes a trade, the ``trade``
    record. Returns whether a trade was closed. (Records, not arrays, are passed so the
    per-bar path carries no reference counting.)
    """
    fee = fee_of(quantity, price, cfg.fee_bps)
    signed = side * quantity
    previous = state.position
    closing = 0.0
    if previous != 0.0 and (signed > 0.0) != (previous > 0.0):
        closing = min(quantity, abs(previous))
    realized = 0.0
    if closing > 0.0:
        realized = closing * (price - state.avg_price) * (1.0 if previous > 0.0 else -1.0)
        closing_fee = fee * closing / quantity
        state.trade_pnl += realized - closing_fee
        state.trade_fees += closing_fee
        state.trade_exit_notional += closing * price
        state.trade_exit_qty += closing

    state.cash -= signed * price + fee
    state.fees_paid += fee
    position = previous + signed
    if abs(position) <= 1e-12 * max(abs(previous), quantity):
        position = 0.0

    closed = closing > 0.0 and (position == 0.0 or (position > 0.0) != (previous > 0.0))
    if closed:
        _close_trade(state, bar, ts_ns, reason, trade)

    opening = quantity - closing
    if opening > 0.0 and position != 0.0:
        if previous == 0.0 or (position > 0.0) != (previous > 0.0):
            open_trade(state, float(side), bar, ts_ns)
            state.avg_price = price
        else:
            held = abs(previous)
            state.avg_price = (held * state.avg_price + opening * price) / (held + opening)
        opening_fee = fee * opening / quantity
        state.trade_pnl -= opening_fee
        state.trade_fees += opening_fee
        state.trade_entry_notional += opening * price
        state.trade_entry_qty += opening
    state.trade_max_qty = max(state.trade_max_qty, abs(position))
    state.position = position
    if position == 0.0:
        state.avg_price = 0.0

    record = fill
    record.order_id = order_id
    record.bar = bar
    record.ts_ns = ts_ns
    record.side = side
    record.qty = quantity
    record.price = price
    record.fee = fee
    record.slippage = quantity * abs(price - reference)
    record.reason = reason
    record.position_after = position
    record.cash_after = state.cash
    record.realized_pnl = realized
    return closed


@njit(cache=True, inline="always")
def open_trade(state, direction, bar, ts_ns):
    """Start the state's record of an open trade (direction 0: no trade open)."""
    state.trade_direction = direction
    state.trade_entry_bar = bar
    state.trade_entry_ts_ns = ts_ns
    state.trade_pnl = 0.0
    state.trade_fees = 0.0
    state.trade_entry_notional = 0.0
    state.trade_entry_qty = 0.0
    state.trade_exit_notional = 0.0
    state.trade_exit_qty = 0.0
    state.trade_max_qty = 0.0


@njit(cache=True, inline="always")
def _close_trade(state, bar, ts_ns, reason, record):
    pnl = state.trade_pnl
    record.entry_bar = state.trade_entry_bar
    record.exit_bar = bar
    record.entry_ts_ns = state.trade_entry_ts_ns
    record.exit_ts_ns = ts_ns
    record.direction = int(state.trade_direction)
    record.size = state.trade_max_qty
    record.entry_price = state.trade_entry_notional / state.trade_entry_qty
    record.exit_price = state.trade_exit_notional / state.trade_exit_qty
    record.pnl = pnl
    record.return_pct = 100.0 * pnl / state.trade_entry_notional
    record.fees = state.trade_fees
    record.exit_reason = reason
    state.n_trades += 1
    if pnl > 0.0:
        state.n_wins += 1
        state.gross_profit += pnl
    else:
        state.gross_loss -= pnl
    state.trade_direction = 0.0
    state.trade_pnl = 0.0
    state.trade_fees = 0.0


@njit(cache=True)
def adopt_position(state, position):
    """Reconciliation within tolerance: the venue's position is the truth (fee dust taken
    in the base asset, a rounding of the venue's). Cash is unchanged, so the difference
    shows in equity at the last close."""
    state.position = position
    if position == 0.0:
        state.avg_price = 0.0
    state.equity = state.cash + position * state.last_close


@njit(cache=True)
def fee_in_base(state, fill, base_fee, price):
    """A venue took (part of) a fill's fee in the base asset: it was withheld from the
    quantity received, not paid in cash. ``apply_fill`` charged it to cash as
    ``base_fee × price``; give that back and take ``base_fee`` from the position instead
    (equity is the same; cash and position now match the venue's)."""
    state.cash += base_fee * price
    state.position -= base_fee * (1.0 if state.position >= 0.0 else -1.0)
    if abs(state.position) <= 1e-12 * base_fee:
        state.position = 0.0
    fill.cash_after = state.cash
    fill.position_after = state.position
