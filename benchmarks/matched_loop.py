"""The matched fused loop: the machine's limit for the ``ema_cross`` sweep of bench_sweep.

A plain numba ``prange`` loop over (fast, slow) combinations, written by hand for exactly
this case, with MMATS's fill rules and results: EMAs as pandas ``ewm(span, adjust=False,
min_periods=span)``; long (exposure 1, all equity) while fast > slow, flat otherwise; a
decision at bar t's close fills at bar t+1's open; the quantity from
:func:`mmats.nb.sizing.target_quantity`'s closed form (all equity, fee included); fees in
the quote currency; trades closed when flat. It keeps the same running metrics as
``sweep()`` (bar returns and their squares, downside squares, max drawdown and its
duration in bars, bars in market, trades, wins, fees) and writes final equity, trades
and Sharpe. No stops, caps, lots, limits or volatility: it is the lower bound of the cost
of the work, not a backtester. bench_sweep checks its final equity against MMATS's.
"""

import math

from numba import njit, prange


@njit(cache=True, inline="always")
def _quantity(exposure, equity, position, price, fee_rate):
    if price <= 0.0 or equity <= 0.0:
        return 0.0
    naive = exposure * equity / price
    if naive > position:
        quantity = exposure * (equity + position * price * fee_rate) / (
            price * (1.0 + exposure * fee_rate))
        return max(quantity, position)
    if naive < position:
        quantity = exposure * (equity - position * price * fee_rate) / (
            price * (1.0 - exposure * fee_rate))
        return min(quantity, position)
    return position


@njit(cache=True, parallel=True)
def matched_sweep(open_, close, fast, slow, fee_bps, cash, periods_per_year, out):
    """For each combination k, write ``out[k] = (final equity, trades, sharpe)``."""
    fee_rate = fee_bps * 1e-4
    n = close.shape[0]
    for k in prange(fast.shape[0]):
        alpha_fast = 2.0 / (fast[k] + 1.0)
        alpha_slow = 2.0 / (slow[k] + 1.0)
        ema_fast = close[0]
        ema_slow = close[0]
        position = 0.0
        cash_now = cash
        equity = cash
        target = math.nan
        last_signal = math.nan
        trade_pnl = 0.0
        n_trades = 0
        n_wins = 0
        fees = 0.0
        prev_equity = cash
        sum_r = 0.0
        sum_sq = 0.0
        sum_sq_neg = 0.0
        peak = cash
        peak_bar = -1
        max_dd = 0.0
        max_dd_bars = 0
        bars_in = 0
        for t in range(n):
            if not math.isnan(target):
                price = open_[t]
                if target == 0.0:
                    wanted = -position
                else:
                    wanted = _quantity(target, cash_now + position * price, position, price,
                                       fee_rate) - position
                if wanted != 0.0:
                    quantity = abs(wanted)
                    fee = quantity * price * fee_rate
                    previous = position
                    trade_pnl -= wanted * price + fee  # the trade's cash flow, fees included
                    cash_now -= wanted * price + fee
                    fees += fee
                    position = previous + wanted
                    if abs(position) <= 1e-12 * max(abs(previous), quantity):
                        position = 0.0
                    if position == 0.0 and previous != 0.0:
                        n_trades += 1
                        if trade_pnl > 0.0:
                            n_wins += 1
                        trade_pnl = 0.0
                target = math.nan
            equity = cash_now + position * close[t]
            r = 0.0
            if equity != prev_equity and prev_equity > 0.0:
                r = equity / prev_equity - 1.0
            sum_r += r
            sum_sq += r * r
            if r < 0.0:
                sum_sq_neg += r * r
            prev_equity = equity
            if equity >= peak:
                peak = equity
                peak_bar = t
            else:
                if equity < peak * (1.0 + max_dd):
                    max_dd = equity / peak - 1.0
                if t - peak_bar > max_dd_bars:
                    max_dd_bars = t - peak_bar
            if position != 0.0:
                bars_in += 1
            if t > 0:
                ema_fast += alpha_fast * (close[t] - ema_fast)
                ema_slow += alpha_slow * (close[t] - ema_slow)
            signal = 1.0 if (t >= slow[k] - 1 and t >= fast[k] - 1
                             and ema_fast > ema_slow) else 0.0
            if signal != last_signal:
                target = signal
                last_signal = signal
        mean = sum_r / n
        std = math.sqrt(max((sum_sq - sum_r * mean) / (n - 1), 0.0))
        out[k, 0] = equity
        out[k, 1] = n_trades
        out[k, 2] = mean / std * math.sqrt(periods_per_year) if std > 0.0 else math.nan
        # read the rest so the compiler cannot drop the work that computes them
        out[k, 3] = max_dd + max_dd_bars + bars_in + sum_sq_neg + n_wins + fees
