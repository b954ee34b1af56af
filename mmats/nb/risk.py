"""Per-sleeve risk gates and the trading state ACTIVE / REDUCING / HALTED.

Rules (REQUIREMENTS.md, "Risk rules"):

- daily loss ``(equity at day start - equity) / equity at day start >= max_daily_loss_pct``
  → REDUCING until the next UTC day: exposure may shrink, never grow;
- drawdown ``(peak - equity) / peak >= max_drawdown_pct`` → flatten and HALTED until an
  operator resumes;
- leverage ``|position value| / equity <= max_leverage``: targets are clipped to it, and a
  position that price moves push above it is cut back at the next open;
- equity at or below zero → flatten and HALTED.

Global and market levels (the live runner and the portfolio backtest) act through the
same state: they set a sleeve's ``trading_state``, and these gates enforce it.
"""

import math

from numba import njit

from mmats.nb.features import DAILY_LOSS_ON, DRAWDOWN_LIMIT_ON
from mmats.types import FillReason, TradingState

ACTIVE = int(TradingState.ACTIVE)
REDUCING = int(TradingState.REDUCING)
HALTED = int(TradingState.HALTED)
RISK = int(FillReason.RISK)


@njit(cache=True, inline="always")
def current_exposure(state):
    """Position value over equity at the last close (signed); 0 when flat or broke."""
    if state.position == 0.0 or state.equity <= 0.0:
        return 0.0
    return state.position * state.last_close / state.equity


@njit(cache=True, inline="always")
def clip_exposure(desired, cfg):
    """Clip an exposure to the leverage cap, and to >= 0 when shorting is not allowed."""
    cap = cfg.max_leverage
    if cap > 0.0:
        desired = min(max(desired, -cap), cap)
    if cfg.allow_short == 0 and desired < 0.0:
        desired = 0.0
    return desired


@njit(cache=True, inline="always")
def gate_target(state, desired):
    """What the trading state lets a sleeve do with a (clipped) desired exposure.

    Returns the exposure to target, or NaN for "no order": HALTED allows only flat;
    REDUCING allows moving toward flat, never a larger or opposite position.
    """
    mode = state.trading_state
    if mode == HALTED:
        return 0.0 if state.position != 0.0 else math.nan
    if mode == REDUCING:
        current = current_exposure(state)
        if current == 0.0:
            return math.nan
        if desired == 0.0 or (desired > 0.0) != (current > 0.0):
            return 0.0
        if abs(desired) < abs(current):
            return desired
        return math.nan
    return desired


@njit(cache=True)
def reduce_only(state, quantity):
    """The signed target quantity the trading state allows when an order fills.

    ACTIVE allows any. REDUCING and HALTED allow only a move toward flat: a target past
    flat becomes flat, one larger than the position keeps the position (no order).
    :func:`gate_target` judges exposure at the close; this catches what it cannot see:
    the rest of a partial fill placed before the state changed, and an exposure that at
    the next open's price takes more units than are held.
    """
    if state.trading_state == ACTIVE:
        return quantity
    position = state.position
    if position == 0.0 or quantity == 0.0 or (quantity > 0.0) != (position > 0.0):
        return 0.0
    if abs(quantity) > abs(position):
        return position
    return quantity


@njit(cache=True, inline="always")
def start_day(state, day):
    """Roll the daily-loss window at the first bar of a new UTC day (nothing to roll in a
    kernel compiled without the daily-loss limit: only that limit reads the window)."""
    if not DAILY_LOSS_ON:
        return
    if day != state.day:
        state.day = day
        state.day_start_equity = state.equity
        if state.trading_state == REDUCING:
            state.trading_state = ACTIVE


@njit(cache=True, inline="always")
def check_limits(state, cfg, ts_ns):
    """Apply the limits at a bar's close, after mark-to-market.

    May change the trading state and queue a risk order (``state.target``) that fills at
    the next bar's open, like every other decision.
    """
    if state.equity <= 0.0:
        halt(state, ts_ns)
        return
    if DRAWDOWN_LIMIT_ON and cfg.max_drawdown_pct > 0.0 and state.trading_state != HALTED:
        drawdown_pct = 100.0 * (state.equity_peak - state.equity) / state.equity_peak
        if drawdown_pct >= cfg.max_drawdown_pct:
            halt(state, ts_ns)
            return
    if DAILY_LOSS_ON and cfg.max_daily_loss_pct > 0.0 and state.trading_state == ACTIVE:
        loss_pct = 100.0 * (state.day_start_equity - state.equity) / state.day_start_equity
        if loss_pct >= cfg.max_daily_loss_pct:
            state.trading_state = REDUCING
    if cfg.max_leverage > 0.0 and state.position != 0.0:
        value = state.position * state.last_close
        if abs(value) > cfg.max_leverage * (1.0 + 1e-9) * state.equity:
            _queue_risk_target(state, math.copysign(cfg.max_leverage, value), ts_ns)


@njit(cache=True, inline="always")
def halt(state, ts_ns):
    """Flatten and stop: HALTED, and a risk order to flat at the next open if a position
    is held. The drawdown gate and the runner's kill switch both call this."""
    state.trading_state = HALTED
    if state.position != 0.0:
        _queue_risk_target(state, 0.0, ts_ns)
    else:
        state.target = math.nan


@njit(cache=True)
def pause(state):
    """An operator's pause: HALTED with positions kept; a pending order may still only
    reduce (the fill-time check), and a later signal change can only go to flat."""
    state.trading_state = HALTED


@njit(cache=True)
def flatten(state, ts_ns):
    """An operator's close: a risk order to flat at the next open, trading state kept.
    The position stays closed until the strategy's signal changes (as after a stop)."""
    if state.position != 0.0:
        _queue_risk_target(state, 0.0, ts_ns)


@njit(cache=True)
def resume(state):
    """An operator's resume: ACTIVE again; the next signal that differs from the last one
    acted on trades (a halt does not re-enter a position by itself)."""
    state.trading_state = ACTIVE
    state.last_signal = math.nan


@njit(cache=True, inline="always")
def _queue_risk_target(state, exposure, ts_ns):
    state.target = exposure
    state.target_reason = RISK
    state.target_ts_ns = ts_ns
    state.pending_stop_distance = math.nan
    state.pending_take_profit_distance = math.nan


@njit(cache=True)
def order_refused(state):
    """A venue refused the sleeve's order: the decision is tried again at the next close
    while the signal persists (as when a gate blocks it)."""
    state.last_signal = math.nan
