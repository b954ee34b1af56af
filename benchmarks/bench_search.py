"""Search beyond the grid, benchmarked: best score found against wall time.

On a 10^4-combination grid of the RSI mean-reversion strategy (period × lower × upper,
25 × 20 × 20), the exhaustive sweep scores every combination; TPE (Optuna) and
successive halving (``sweep(..., search=..., trials=N)``) score a part of them with the
same fused kernel. For each run the script prints the wall time, the candidates tried,
the best Sharpe ratio found, that candidate's rank among all 10^4 (1 = the grid's best),
the ratio of its wall time to the exhaustive sweep's, and whether it meets the targets:

- the best found ranks in the grid's top 1% (rank <= 100 of 10^4), and
- in at most a quarter of the exhaustive sweep's wall time (ratio <= 0.25).

Figures depend on the load: the 1-minute load average is printed around each run.

    .venv/bin/python benchmarks/bench_search.py                  # 500k synthetic bars
    .venv/bin/python benchmarks/bench_search.py --bars 100000 --quick
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

TARGET_RANK = 100  # top 1% of the 10^4 grid
TARGET_RATIO = 0.25  # of the exhaustive sweep's wall time

GRID = {"period": list(range(4, 54, 2)),  # 25 values
        "lower": list(range(10, 50, 2)),  # 20
        "upper": list(range(52, 92, 2)),  # 20
        "short": [0]}


def make_candles(n_bars: int, seed: int = 11) -> pd.DataFrame:
    """Seeded synthetic 5-minute candles: a geometric random walk with a mean-reverting
    part, so that some RSI settings do better than others (there is something to find)."""
    rng = np.random.default_rng(seed)
    sigma = 0.8 / math.sqrt(365 * 288)
    level = np.zeros(n_bars)
    shocks = rng.normal(0.0, sigma, n_bars)
    for i in range(1, n_bars):  # an AR(1) deviation around a random walk
        level[i] = 0.995 * level[i - 1] + shocks[i] * 2.0
    walk = np.cumsum(rng.normal(0.0, sigma, n_bars))
    close = 100.0 * np.exp(walk + level)
    open_ = np.concatenate([[100.0], close[:-1]])
    wick = np.abs(rng.standard_normal((2, n_bars))) * sigma * 0.5
    return pd.DataFrame({
        "ts": pd.date_range("2016-01-01", periods=n_bars, freq="5min", tz="UTC"),
        "open": open_, "high": np.maximum(open_, close) * np.exp(wick[0]),
        "low": np.minimum(open_, close) * np.exp(-wick[1]), "close": close,
        "volume": rng.lognormal(math.log(1000.0), 0.6, n_bars)})


def load() -> float:
    return os.getloadavg()[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bars", type=int, default=500_000)
    parser.add_argument("--quick", action="store_true", help="fewer runs (a smoke test)")
    parser.add_argument("--seed", type=int, default=0)
    options = parser.parse_args(argv)

    from mmats import sweep
    from mmats.backtest import market

    prices = market(make_candles(options.bars), timeframe="5m", calendar="24/7")
    print(f"bench_search: rsi_reversion, {options.bars:,} bars, grid of "
          f"{math.prod(len(v) for v in GRID.values()):,} combinations; "
          f"{os.cpu_count()} cores; load {load():.2f}")
    sweep("rsi_reversion", prices, {"period": [14], "lower": [30], "upper": [70]},
          check_lookahead_bias=False)  # compile once, outside the timings
    before = load()
    started = time.perf_counter()
    exhaustive = sweep("rsi_reversion", prices, GRID, check_lookahead_bias=False).table
    grid_s = time.perf_counter() - started
    ranked = exhaustive["sharpe"].rank(ascending=False, method="min")
    ranks = dict(zip(map(tuple, exhaustive[["period", "lower", "upper"]].to_numpy()),
                     ranked, strict=True))
    rows = [("grid (exhaustive)", grid_s, len(exhaustive), exhaustive["sharpe"].max(), 1,
             before, load())]
    runs = [("tpe", 250), ("tpe", 1000)] if options.quick else \
        [("tpe", 250), ("tpe", 500), ("tpe", 1000), ("tpe", 2000), ("halving", 2000),
         ("halving", 6000)]
    for method, trials in runs:
        before = load()
        started = time.perf_counter()
        found = sweep("rsi_reversion", prices, GRID, search=method, trials=trials,
                      seed=options.seed, check_lookahead_bias=False)
        seconds = time.perf_counter() - started
        scored = found.table["sharpe"]
        if not scored.notna().any():
            print(f"{method}, {trials} trials: all {len(scored)} scores NaN "
                  f"(trades: {found.table['trades'].describe().to_dict()})")
            continue
        best = found.best("sharpe", 1).iloc[0]
        rank = ranks[(best["period"], best["lower"], best["upper"])]
        rows.append((f"{method}, {trials} trials", seconds, found.n_trials, best["sharpe"],
                     int(rank), before, load()))
    print(f"targets: best found ranks <= {TARGET_RANK} of 10^4, in <= {TARGET_RATIO} x the "
          f"exhaustive sweep's wall time ({grid_s:.2f} s)")
    print(f"{'run':<24} {'wall s':>8} {'tried':>7} {'best sharpe':>12} {'rank':>6} "
          f"{'ratio':>6} {'load':>11}  verdict")
    for name, seconds, tried, sharpe, rank, before, after in rows:
        ratio = seconds / grid_s
        verdict = "" if name.startswith("grid") else \
            "met" if rank <= TARGET_RANK and ratio <= TARGET_RATIO else "not met"
        print(f"{name:<24} {seconds:8.2f} {tried:7d} {sharpe:12.4f} {rank:6d} {ratio:6.3f} "
              f"{before:5.2f}→{after:5.2f}  {verdict}")
    print(f"load after: {load():.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
