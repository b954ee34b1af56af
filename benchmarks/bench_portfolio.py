"""Benchmark the in-memory portfolio backtest in bar-events per second. Prints figures,
never asserts them.

A bar-event is one sleeve's bar (one model on one symbol): ``portfolio_backtest`` of a
configuration of 10 sleeves over 100,000 bars each is 1,000,000 bar-events. Target: at
least 1,000,000 bar-events/s.

Workload: seeded synthetic 5-minute candles (geometric Brownian motion, 24/7) for two
symbols of one crypto market; five models on both (ema_cross twice, rsi_reversion,
donchian_breakout with its ATR stop, rsi_reversion short), each with a fifth of the
account; the global and market limits all set, so every close checks them (global: 4
open positions, 1.5x gross leverage, 1 % daily loss; market: 80 % drawdown).
``--layout multi`` adds a forex market on 1-hour bars (a second timeframe, a symbol).

Printed, each with the 1-minute load average before and after:

1. **after**: wall time of ``portfolio_backtest`` (candles in, result frames out; the
   signals computed inside), median of ``--repeat`` runs after a warm-up on 2,000 bars
   (compilation excluded); bar-events/s, the target, the ratio, met / not met; and the
   numba loop alone (``run_portfolio``) for the split.
2. **runner's per-close path**: the same backtest stepped one close at a time through
   ``Book.close``, as the tick steps it (on ``--closes-bars`` bars: it is slow).
3. **before** (``--baseline-tree DIR``): ``portfolio_backtest`` of another source tree,
   in a child process, on the same workload cut to ``--baseline-bars`` (the old path
   steps Python objects per bar: slow); e.g. the commit before the numba loop::

       git archive 213cd4a | (mkdir -p /tmp/mmats-before && tar -x -C /tmp/mmats-before)
       .venv/bin/python benchmarks/bench_portfolio.py --baseline-tree /tmp/mmats-before

Run::

    .venv/bin/python benchmarks/bench_portfolio.py                  # 10 sleeves x 100k bars
    .venv/bin/python benchmarks/bench_portfolio.py --bars 300000 --layout multi --json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TARGET = 1_000_000  # bar-events/s
SEED = 14
MODELS = [("ema_fast", "ema_cross", {"fast": 5, "slow": 20}),
          ("ema_slow", "ema_cross", {"fast": 20, "slow": 100}),
          ("rsi", "rsi_reversion", {"period": 14}),
          ("donchian", "donchian_breakout", {"channel": 20}),
          ("rsi_short", "rsi_reversion", {"period": 7, "lower": 35, "upper": 65, "short": 1})]


def load() -> float:
    return os.getloadavg()[0]


def make_candles(n_bars: int, seed: int, freq: str = "5min", start: float = 100.0):
    """Seeded synthetic OHLCV candles (24/7) from a geometric Brownian motion: ``open`` is
    the previous close, half-normal wicks, log-normal volume."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    sigma = 0.8 / math.sqrt(365 * 288)
    close = start * np.exp(np.cumsum(rng.normal(-0.5 * sigma * sigma, sigma, n_bars)))
    open_ = np.concatenate([[start], close[:-1]])
    wicks = np.abs(rng.standard_normal((2, n_bars))) * (0.5 * sigma)
    ts = pd.date_range("2016-01-01", periods=n_bars, freq=freq, tz="UTC", unit="ns")
    return pd.DataFrame({"ts": ts, "open": open_,
                         "high": np.maximum(open_, close) * np.exp(wicks[0]),
                         "low": np.minimum(open_, close) * np.exp(-wicks[1]),
                         "close": close,
                         "volume": rng.lognormal(math.log(1_000.0), 0.6, n_bars)})


def workload(n_bars: int, layout: str):
    """``(config dict, candles by symbol, sleeves)`` of the benchmark."""
    markets = {"crypto": {"type": "crypto", "feed": "bittrex", "execution": "paper",
                          "symbols": ["AAA/BTC", "BBB/BTC"], "timeframe": "5m",
                          "risk": {"max_drawdown": "80%"}}}
    candles = {"AAA/BTC": make_candles(n_bars, SEED),
               "BBB/BTC": make_candles(n_bars, SEED + 1)}
    models = [{"id": name, "strategy": strategy, "market": "crypto", "allocation": 0.2,
               "params": params, "costs": {"fee_bps": 10}}
              for name, strategy, params in MODELS]
    if layout == "multi":
        markets["forex"] = {"type": "forex", "feed": "fx", "execution": "paper",
                            "symbols": ["EUR/USD"], "timeframe": "1h"}
        candles["EUR/USD"] = make_candles(max(n_bars // 12, 200), SEED + 2, "1h", 1.1)
        models.append({"id": "fx_ema", "strategy": "ema_cross", "market": "forex",
                       "params": {"fast": 10, "slow": 50}, "costs": {"fee_bps": 1}})
    config = {"mode": "paper", "markets": markets, "models": models,
              "risk": {"max_open_positions": 4, "max_leverage": 1.5,
                       "max_daily_loss": "1%"}}
    return config, candles


def bar_events(config, candles) -> int:
    """How many sleeve bars the configuration steps."""
    from mmats.live.config import parse_config
    from mmats.live.sleeves import sleeves

    return sum(len(candles[s.symbol]) for s in sleeves(parse_config(config), 10_000.0))


def measure(config_dict, candles, repeat: int) -> dict:
    """Wall time of portfolio_backtest (median of ``repeat``) after a warm-up."""
    from mmats.live.config import parse_config
    from mmats.live.replay import portfolio_backtest

    config = parse_config(config_dict)
    portfolio_backtest(config, {s: c.iloc[:2000] for s, c in candles.items()})
    seconds, before = [], load()
    for _ in range(repeat):
        start = time.perf_counter()
        result = portfolio_backtest(config, candles)
        seconds.append(time.perf_counter() - start)
    events = bar_events(config_dict, candles)
    wall = statistics.median(seconds)
    return {"bar_events": events, "seconds": wall, "bar_events_per_s": events / wall,
            "final_equity": result.final_equity, "risk_events": len(result.risk_events),
            "fills": int(sum(len(f) for f in result.fills.values())),
            "load_before": before, "load_after": load()}


def kernel_only(config_dict, candles, repeat: int) -> dict:
    """The numba loop alone (``run_portfolio``), on the prepared arrays."""
    import numpy as np

    from mmats.live.config import parse_config
    from mmats.live.portfolio import pack_states
    from mmats.live.replay import _portfolio_history
    from mmats.nb.portfolio import run_portfolio

    config = parse_config(config_dict)
    seconds, before = [], load()
    for _ in range(repeat):
        _, states, book, h = _portfolio_history(config, candles, 10_000.0)
        packed = pack_states(book.sleeve_ids, states)
        books = book.books()
        equity = np.empty(len(h.close_ns))
        start = time.perf_counter()
        run_portfolio(packed, book.cfgs, books, book.limits, book.member, h.sleeve_of, h.rows,
                      h.signal_rows, h.close_ns, h.open_ns, h.prices, h.signals, equity)
        seconds.append(time.perf_counter() - start)
    wall = statistics.median(seconds)
    events = len(h.close_ns)
    return {"bar_events": events, "seconds": wall, "bar_events_per_s": events / wall,
            "load_before": before, "load_after": load()}


def per_close(config_dict, candles, n_bars: int) -> dict:
    """The runner's per-close path (Book.close per close) on the first ``n_bars``."""
    from mmats.live.config import parse_config
    from mmats.live.replay import _portfolio_by_closes

    config = parse_config(config_dict)
    cut = {s: c.iloc[:n_bars] if s != "EUR/USD" else c.iloc[:max(n_bars // 12, 200)]
           for s, c in candles.items()}
    _portfolio_by_closes(config, {s: c.iloc[:300] for s, c in cut.items()})
    before = load()
    start = time.perf_counter()
    _portfolio_by_closes(config, cut)
    wall = time.perf_counter() - start
    events = bar_events(config_dict, cut)
    return {"bar_events": events, "seconds": wall, "bar_events_per_s": events / wall,
            "load_before": before, "load_after": load()}


BASELINE_CHILD = """
import importlib.util, json, sys
sys.path.insert(0, {tree!r})
spec = importlib.util.spec_from_file_location("bench_portfolio", {bench!r})
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)  # it puts its own tree first: put the baseline back
sys.path[:] = [{tree!r}] + [p for p in sys.path if p not in ({tree!r}, {root!r})]
measure, workload = bench.measure, bench.workload
import mmats
assert mmats.__file__.startswith({tree!r}), mmats.__file__
config, candles = workload({bars}, {layout!r})
print(json.dumps(measure(config, candles, {repeat})))
"""


def baseline(tree: str, n_bars: int, layout: str, repeat: int) -> dict:
    """``measure`` with the ``mmats`` package of another source tree, in a child."""
    code = BASELINE_CHILD.format(tree=str(Path(tree).resolve()), root=str(ROOT),
                                 bench=str(Path(__file__).resolve()), bars=n_bars,
                                 layout=layout, repeat=repeat)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=tree, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def line(name: str, figure: dict) -> str:
    return (f"{name}: {figure['bar_events']:,} bar-events in {figure['seconds']:.3f} s = "
            f"{figure['bar_events_per_s']:,.0f} bar-events/s   (load {figure['load_before']:.2f}"
            f" -> {figure['load_after']:.2f})")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bars", type=int, default=100_000,
                        help="5-minute bars per symbol (100,000: 10 sleeves -> 1M bar-events)")
    parser.add_argument("--layout", choices=("single", "multi"), default="single",
                        help="one crypto market, or crypto 5m + forex 1h")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--closes-bars", type=int, default=3_000,
                        help="bars for the runner's per-close path (slow)")
    parser.add_argument("--baseline-tree", help="a source tree to measure as 'before'")
    parser.add_argument("--baseline-bars", type=int, default=20_000,
                        help="bars per symbol for 'before' (20,000: the old path is slow)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    config, candles = workload(args.bars, args.layout)
    figures = {"bars": args.bars, "layout": args.layout, "target": TARGET,
               "after": measure(config, candles, args.repeat),
               "kernel_only": kernel_only(config, candles, args.repeat),
               "runner_per_close": per_close(config, candles, args.closes_bars)}
    if args.baseline_tree:
        cut = min(args.bars, args.baseline_bars)
        figures["before"] = baseline(args.baseline_tree, cut, args.layout, 1)
        figures["after_on_baseline_bars"] = measure(*workload(cut, args.layout), 1)
    after = figures["after"]["bar_events_per_s"]
    figures["ratio_to_target"] = after / TARGET
    figures["met"] = after >= TARGET
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    print(f"portfolio_backtest, {args.layout} layout, {args.bars:,} bars per symbol")
    print(line("after (numba loop, end to end)", figures["after"]))
    print(line("  of which the numba loop alone", figures["kernel_only"]))
    print(line("runner's per-close path (Book.close)", figures["runner_per_close"]))
    if "before" in figures:
        before = figures["before"]
        print(line("before (baseline tree)", before))
        same = figures["after_on_baseline_bars"]
        print(line("after, on the same bars", same))
        print(f"  speed-up {same['bar_events_per_s'] / before['bar_events_per_s']:.0f}x on the"
              f" same bars; final equity {before['final_equity']!r} before, "
              f"{same['final_equity']!r} after: "
              f"{'equal' if before['final_equity'] == same['final_equity'] else 'DIFFERENT'}"
              f"; risk events {before['risk_events']} / {same['risk_events']}, fills "
              f"{before['fills']} / {same['fills']}")
    print(f"target >= {TARGET:,} bar-events/s: {after:,.0f} = {after / TARGET:.2f}x -> "
          f"{'met' if figures['met'] else 'not met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
