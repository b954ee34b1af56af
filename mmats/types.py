"""Enums and record dtypes shared by the backtest, the sweep and (later) the live journal.

Every record dtype is defined here once. The numba kernel writes these records, the
backtest returns them, and the live runner journals the very same fields, so a report
can read either source.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np


class TradingState(IntEnum):
    """What a sleeve may do: trade freely, only reduce exposure, or nothing at all."""

    ACTIVE = 0
    REDUCING = 1  # e.g. the daily loss limit tripped: no new exposure until the next day
    HALTED = 2  # e.g. max drawdown tripped: flattened, nothing until an operator resumes


class FillReason(IntEnum):
    """Why a fill happened."""

    SIGNAL = 0
    STOP_LOSS = 1
    TAKE_PROFIT = 2
    RISK = 3  # a risk gate flattened or reduced the position


class OrderStatus(IntEnum):
    FILLED = 0
    PARTIAL = 1  # capped by the volume-participation limit; the rest is tried next bar
    REJECTED_MIN_NOTIONAL = 2
    REJECTED_LOT_SIZE = 3  # rounds to zero lots


class SizingMode(IntEnum):
    """How a target exposure in [-1, 1] is scaled before it becomes a quantity."""

    FIXED_FRACTION = 0  # exposure × fraction of equity
    VOLATILITY_TARGET = 1  # exposure × target volatility / realised volatility
    KELLY = 2  # exposure × capped Kelly fraction from the sleeve's closed trades


class SlippageModel(IntEnum):
    FIXED = 0  # fixed basis points
    VOLATILITY_SQRT = 1  # fixed + impact_coef × σ_bar × sqrt(qty / average bar volume)
    PARTICIPATION = 2  # fixed + impact_coef × qty / bar volume


f8, i8 = np.float64, np.int64

#: Settings of one sleeve: costs, sizing, and per-strategy risk limits.
CONFIG_DTYPE = np.dtype(
    [
        ("fee_bps", f8),
        ("slippage_bps", f8),
        ("slippage_model", i8),
        ("impact_coef", f8),
        ("max_participation", f8),  # 0 = no cap; else fraction of the fill bar's volume
        ("max_order_notional", f8),  # 0 = no cap; else quote currency per order
        ("sizing_mode", i8),
        ("fraction", f8),  # fixed fraction (1 = all equity)
        ("vol_target", f8),  # annualised, for VOLATILITY_TARGET
        ("vol_halflife_bars", f8),
        ("kelly_multiplier", f8),
        ("kelly_cap", f8),
        ("kelly_min_trades", i8),
        ("lot_size", f8),  # 0 = fractional quantities
        ("min_notional", f8),
        ("max_leverage", f8),
        ("max_daily_loss_pct", f8),  # 0 = off; e.g. 5 means 5 %
        ("max_drawdown_pct", f8),  # 0 = off
        ("allow_short", i8),
        ("periods_per_year", f8),
        ("ewm_decay", f8),  # derived: 0.5 ** (1 / vol_halflife_bars), set by SleeveConfig
    ],
    align=True,
)

#: The mutable state of one sleeve; the live runner persists it between ticks.
STATE_DTYPE = np.dtype(
    [
        ("cash", f8),
        ("position", f8),
        ("avg_price", f8),
        ("equity", f8),
        ("equity_peak", f8),
        ("day", i8),
        ("day_start_equity", f8),
        ("trading_state", i8),
        ("last_signal", f8),  # last raw signal acted on (NaN before the first)
        ("target", f8),  # pending target exposure, filled at the next bar's open (NaN = none)
        ("target_reason", i8),
        ("target_ts_ns", i8),
        ("pending_stop_distance", f8),
        ("pending_take_profit_distance", f8),
        ("stop_price", f8),
        ("take_profit_price", f8),
        ("last_close", f8),
        ("var_ewm", f8),  # EWMA of squared close-to-close log returns
        ("volume_ewm", f8),
        ("bars", i8),  # bars processed so far
        ("last_bar_ts_ns", i8),  # open time of the last bar processed (-1: none yet)
        ("next_order_id", i8),
        ("trade_direction", f8),
        ("trade_entry_bar", i8),
        ("trade_entry_ts_ns", i8),
        ("trade_pnl", f8),
        ("trade_fees", f8),
        ("trade_entry_notional", f8),
        ("trade_entry_qty", f8),
        ("trade_exit_notional", f8),
        ("trade_exit_qty", f8),
        ("trade_max_qty", f8),
        ("n_trades", i8),
        ("n_wins", i8),
        ("gross_profit", f8),
        ("gross_loss", f8),
        ("fees_paid", f8),
    ],
    align=True,
)

ORDER_DTYPE = np.dtype(
    [
        ("order_id", i8),
        ("decision_ts_ns", i8),  # the close at which the decision was taken
        ("bar", i8),  # index of the bar it was (or would have been) filled in
        ("ts_ns", i8),
        ("target_exposure", f8),
        ("requested_qty", f8),  # signed
        ("filled_qty", f8),  # signed
        ("price", f8),
        ("status", i8),
        ("reason", i8),
    ],
    align=True,
)

FILL_DTYPE = np.dtype(
    [
        ("order_id", i8),  # -1 for stop-loss / take-profit fills
        ("bar", i8),
        ("ts_ns", i8),
        ("side", i8),  # +1 buy, -1 sell
        ("qty", f8),  # positive
        ("price", f8),
        ("fee", f8),
        ("slippage", f8),  # cost against the reference price, in quote currency
        ("reason", i8),
        ("position_after", f8),
        ("cash_after", f8),
        ("realized_pnl", f8),
    ],
    align=True,
)

TRADE_DTYPE = np.dtype(
    [
        ("entry_bar", i8),
        ("exit_bar", i8),
        ("entry_ts_ns", i8),
        ("exit_ts_ns", i8),
        ("direction", i8),  # +1 long, -1 short
        ("size", f8),  # largest absolute quantity held
        ("entry_price", f8),  # average
        ("exit_price", f8),  # average
        ("pnl", f8),  # net of all fees
        ("return_pct", f8),  # pnl / entry notional × 100
        ("fees", f8),
        ("exit_reason", i8),
    ],
    align=True,
)

#: Streaming metrics of one run, updated bar by bar; the sweep keeps only this.
METRICS_DTYPE = np.dtype(
    [
        ("n_returns", i8),
        ("sum_return", f8),
        ("sum_sq_return", f8),
        ("sum_sq_negative", f8),
        ("max_drawdown", f8),  # negative fraction, e.g. -0.25
        ("peak_equity", f8),
        ("peak_ts_ns", i8),
        ("peak_bar", i8),
        ("max_dd_duration_bars", i8),
        ("max_dd_duration_ns", i8),
        ("bars_in_market", i8),
        ("first_ts_ns", i8),
        ("last_ts_ns", i8),
        ("start_equity", f8),
        ("prev_equity", f8),
    ],
    align=True,
)

#: Names of the metrics every backtest and every sweep row report, in order.
METRIC_NAMES = (
    "final_equity",
    "total_return",
    "cagr",
    "sharpe",
    "sortino",
    "max_drawdown",
    "max_drawdown_duration_bars",
    "max_drawdown_duration_days",
    "volatility",
    "win_rate",
    "profit_factor",
    "exposure",
    "trades",
    "fees_paid",
)
