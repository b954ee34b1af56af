"""Helpers for the kernel tests: hand-built bars run through the shared numba bar step.

Two ways to run bars, both over the very same compiled functions:

- :func:`run` calls :func:`mmats.nb.sim.simulate` (what ``backtest()`` calls);
- :func:`step` calls ``on_bar`` / ``on_signal`` once per bar from Python, as the live
  runner does, and keeps a snapshot of the state after every bar, so tests can see the
  trading state and the position bar by bar.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mmats.nb.sim import on_bar, on_signal, simulate
from mmats.sleeve import SleeveConfig, new_metrics, new_state
from mmats.types import FILL_DTYPE, ORDER_DTYPE, STATE_DTYPE, TRADE_DTYPE

SAMPLE = Path(__file__).resolve().parents[2] / "mmats" / "data" / "sample"
HOUR_NS = 3_600_000_000_000
DAY_NS = 24 * HOUR_NS
T0_NS = pd.Timestamp("2024-01-01", tz="UTC").value  # a Monday, 00:00 UTC
BIG_VOLUME = 1e12


@dataclass
class Bars:
    """Price arrays of a hand-built history."""

    ts_ns: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray

    @property
    def day(self) -> np.ndarray:
        return self.ts_ns // DAY_NS

    def __len__(self) -> int:
        return self.ts_ns.shape[0]

    def frame(self) -> pd.DataFrame:
        """The bars in the candle schema, for ``backtest()``."""
        return pd.DataFrame({"ts": pd.to_datetime(self.ts_ns, utc=True), "open": self.open,
                             "high": self.high, "low": self.low, "close": self.close,
                             "volume": self.volume})


def bars(rows, step_ns: int = HOUR_NS, start_ns: int = T0_NS) -> Bars:
    """Bars from rows ``(open, high, low, close)`` or ``(open, high, low, close, volume)``."""
    table = np.array([tuple(r) + ((BIG_VOLUME,) if len(r) == 4 else ()) for r in rows],
                     dtype=np.float64)
    assert np.all(table[:, 2] <= np.minimum(table[:, 0], table[:, 3])), "low above open/close"
    assert np.all(table[:, 1] >= np.maximum(table[:, 0], table[:, 3])), "high below open/close"
    ts = start_ns + step_ns * np.arange(len(rows), dtype=np.int64)
    return Bars(ts, *(np.ascontiguousarray(table[:, k]) for k in range(5)))


@dataclass
class Run:
    """What one run produced. ``states`` (``step`` only) holds the state after each bar's
    ``on_bar`` (index ``t``), i.e. at bar ``t``'s close before its signal is read."""

    equity: np.ndarray
    position: np.ndarray
    fills: np.ndarray
    orders: np.ndarray
    trades: np.ndarray
    state: np.ndarray
    cfg: np.ndarray
    states: np.ndarray | None = None


def _arrays(prices: Bars, signal, stops, take_profits):
    n = len(prices)
    signal = np.ascontiguousarray(signal, dtype=np.float64)
    assert signal.shape == (n,)
    stops = np.empty(0) if stops is None else np.ascontiguousarray(stops, dtype=np.float64)
    take_profits = (np.empty(0) if take_profits is None
                    else np.ascontiguousarray(take_profits, dtype=np.float64))
    return signal, stops, take_profits


def config(periods_per_year: float = 8760.0, **settings) -> np.ndarray:
    return SleeveConfig(**settings).to_record(periods_per_year)


def run(prices: Bars, signal, *, stops=None, take_profits=None, cash: float = 10_000.0,
        periods_per_year: float = 8760.0, **settings) -> Run:
    """Run ``prices`` through :func:`mmats.nb.sim.simulate` with a fresh sleeve."""
    signal, stops, take_profits = _arrays(prices, signal, stops, take_profits)
    cfg = config(periods_per_year, **settings)
    state = new_state(cash)
    metrics = new_metrics(cash)
    equity, position, fills, orders, trades = simulate(
        prices.ts_ns, prices.day, prices.open, prices.high, prices.low, prices.close,
        prices.volume, signal, stops, take_profits, cfg, state, metrics)
    return Run(equity, position, fills, orders, trades, state, cfg)


def step(prices: Bars, signal, *, stops=None, take_profits=None, cash: float = 10_000.0,
         periods_per_year: float = 8760.0, **settings) -> Run:
    """Run ``prices`` bar by bar through ``on_bar`` / ``on_signal`` (the runner's path)."""
    signal, stops, take_profits = _arrays(prices, signal, stops, take_profits)
    cfg = config(periods_per_year, **settings)
    state = new_state(cash)
    scratch_fills = np.zeros(2, dtype=FILL_DTYPE)  # a bar fills its order and a stop
    scratch_orders = np.zeros(1, dtype=ORDER_DTYPE)
    scratch_trades = np.zeros(2, dtype=TRADE_DTYPE)
    n = len(prices)
    states = np.zeros(n, dtype=STATE_DTYPE)
    equity, position = np.empty(n), np.empty(n)
    fills, orders, trades = [], [], []
    record, settings_record = state[0], cfg[0]
    for t in range(n):
        n_fills, n_orders, n_trades = on_bar(
            record, settings_record, t, prices.ts_ns[t], prices.day[t], prices.open[t],
            prices.high[t], prices.low[t], prices.close[t], prices.volume[t],
            scratch_fills[0], scratch_fills[1], scratch_orders[0], scratch_trades[0],
            scratch_trades[1])
        fills.append(scratch_fills[:n_fills].copy())
        orders.append(scratch_orders[:n_orders].copy())
        trades.append(scratch_trades[:n_trades].copy())
        states[t] = state[0]
        equity[t], position[t] = state[0]["equity"], state[0]["position"]
        on_signal(record, settings_record, prices.ts_ns[t], signal[t],
                  stops[t] if stops.size else np.nan,
                  take_profits[t] if take_profits.size else np.nan)
    return Run(equity, position, np.concatenate(fills), np.concatenate(orders),
               np.concatenate(trades), state, cfg, states)


def random_bars(rng: np.random.Generator, n: int, start_price: float = 100.0,
                step_ns: int = HOUR_NS, volatility: float = 0.01) -> Bars:
    """A random but valid OHLCV path (low <= open, close <= high), with gaps at the open."""
    log_close = np.log(start_price) + np.cumsum(rng.normal(0.0, volatility, n))
    close = np.exp(log_close)
    previous = np.concatenate([[start_price], close[:-1]])
    open_ = previous * np.exp(rng.normal(0.0, volatility / 3, n))
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0.0, volatility, n)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0.0, volatility, n)))
    volume = rng.uniform(10.0, 1000.0, n)
    ts = T0_NS + step_ns * np.arange(n, dtype=np.int64)
    return Bars(ts, open_, high, low, close, volume)


def load_sample(relative: str) -> pd.DataFrame:
    return pd.read_parquet(SAMPLE / relative)
