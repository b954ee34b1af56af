"""Streaming performance metrics: updated once per bar, finalised once per run.

The backtest and the sweep share these two functions, so a sweep row and a single
backtest of the same parameters report identical numbers. Risk-free rate 0. These equal
quantstats' functions of the same name (``tests/test_oracles.py``): total return; Sharpe
``mean / std(ddof=1) × sqrt(periods)``; Sortino ``mean / sqrt(sum(r² for r < 0) / n) ×
sqrt(periods)``; volatility ``std(ddof=1) × sqrt(periods)``; max drawdown ``min(equity /
running peak) - 1``. CAGR does not: it annualises over calendar time, where quantstats and
vectorbt count bars / periods per year. Win rate and profit factor are per closed trade
and exposure is the share of bars in a position (quantstats computes them per bar). The
README's Metrics table states each definition.
"""

import math

import numpy as np
from numba import njit

from mmats.units import DAY_NS

YEAR_NS = 365.25 * DAY_NS
N_METRICS = 14  # = len(mmats.types.METRIC_NAMES)


@njit(cache=True)
def init_metrics(metrics, start_equity):
    metrics.n_returns = 0
    metrics.sum_return = 0.0
    metrics.sum_sq_return = 0.0
    metrics.sum_sq_negative = 0.0
    metrics.max_drawdown = 0.0
    metrics.peak_equity = start_equity
    metrics.peak_ts_ns = 0
    metrics.peak_bar = -1
    metrics.max_dd_duration_bars = 0
    metrics.max_dd_duration_ns = 0
    metrics.bars_in_market = 0
    metrics.first_ts_ns = 0
    metrics.last_ts_ns = 0
    metrics.start_equity = start_equity
    metrics.prev_equity = start_equity


@njit(cache=True, inline="always")
def update_metrics(metrics, equity, position, bar, ts_ns):
    """Fold one bar's closing equity into the running metrics."""
    if metrics.n_returns == 0:
        metrics.first_ts_ns = ts_ns
        metrics.peak_ts_ns = ts_ns
    r = 0.0
    if equity != metrics.prev_equity and metrics.prev_equity > 0.0:
        r = equity / metrics.prev_equity - 1.0
    metrics.n_returns += 1
    metrics.sum_return += r
    metrics.sum_sq_return += r * r
    if r < 0.0:
        metrics.sum_sq_negative += r * r
    metrics.prev_equity = equity
    if equity >= metrics.peak_equity:
        metrics.peak_equity = equity
        metrics.peak_bar = bar
        metrics.peak_ts_ns = ts_ns
    else:
        # compare by multiplication: the division only when a new low is set
        if equity < metrics.peak_equity * (1.0 + metrics.max_drawdown):
            metrics.max_drawdown = equity / metrics.peak_equity - 1.0
        duration = bar - metrics.peak_bar
        if duration > metrics.max_dd_duration_bars:
            metrics.max_dd_duration_bars = duration
        duration_ns = ts_ns - metrics.peak_ts_ns
        if duration_ns > metrics.max_dd_duration_ns:
            metrics.max_dd_duration_ns = duration_ns
    if position != 0.0:
        metrics.bars_in_market += 1
    metrics.last_ts_ns = ts_ns


@njit(cache=True)
def finalize_metrics(metrics, state, periods_per_year, bar_ns, out):
    """Write the metrics of :data:`mmats.types.METRIC_NAMES`, in that order, into ``out``.

    CAGR uses calendar time: the run covers ``last_ts - first_ts + one bar``, in years of
    365.25 days (quantstats' ``cagr`` uses ``bars / periods_per_year`` years instead). Ratios that are undefined (no variance, no trades) are NaN; a profit
    factor without losing trades is +inf.
    """
    n = metrics.n_returns
    final_equity = state.equity
    start = metrics.start_equity
    out[0] = final_equity
    out[1] = final_equity / start - 1.0
    years = (metrics.last_ts_ns - metrics.first_ts_ns + bar_ns) / YEAR_NS
    if n == 0 or years <= 0.0:
        out[2] = math.nan
    elif final_equity <= 0.0:
        out[2] = -1.0
    else:
        out[2] = (final_equity / start) ** (1.0 / years) - 1.0
    mean = metrics.sum_return / n if n > 0 else math.nan
    std = math.nan
    if n > 1:
        # plain sums, not Welford: no division on the per-bar path. Bar returns are small
        # and their mean² is far below their variance, so little precision is lost.
        variance = (metrics.sum_sq_return - metrics.sum_return * mean) / (n - 1)
        std = math.sqrt(max(variance, 0.0))
    root = math.sqrt(periods_per_year)
    out[3] = mean / std * root if std > 0.0 else math.nan
    downside = math.sqrt(metrics.sum_sq_negative / n) if n > 0 else math.nan
    out[4] = mean / downside * root if downside > 0.0 else math.nan
    out[5] = metrics.max_drawdown
    out[6] = metrics.max_dd_duration_bars
    out[7] = metrics.max_dd_duration_ns / DAY_NS
    out[8] = std * root
    trades = state.n_trades
    out[9] = state.n_wins / trades if trades > 0 else math.nan
    if trades == 0:
        out[10] = math.nan
    elif state.gross_loss > 0.0:
        out[10] = state.gross_profit / state.gross_loss
    else:
        out[10] = np.inf
    out[11] = metrics.bars_in_market / n if n > 0 else math.nan
    out[12] = trades
    out[13] = state.fees_paid
