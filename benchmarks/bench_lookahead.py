"""Benchmark the lookahead check: how often it catches strategies that cheat on purpose,
how often it flags the shipped ones, and how long the gate takes.

Prints figures; it never asserts. On the bundled 5-minute sample (``bittrex:ETH/BTC:5m``,
5,760 bars), for ``--seeds`` seeds:

- **script**: ``check_lookahead(..., seed=s)`` with its defaults, what
  ``scripts/check_strategy.py`` runs;
- **gate**: what ``backtest()`` runs before it starts (``_require_no_lookahead``, whose
  seed is fixed): here the cheat changes with the seed instead (the bar its peek fires on);
- **old**: the same two against the check as it was at ``--baseline`` (40 random cuts for
  the script, 12 for the gate), read with ``git show``.

Cheats: a one-bar peek (``close[i + 1]``) on every 50th and every 200th bar only, at a
phase that moves with the seed; the close scaled by the whole series' maximum, and
compared with its mean, against thresholds the sample never crosses; an expanding mean
(causal, but its value depends on how much history it got). Shipped: every strategy in
``strategies/`` at its defaults and, lighter, at its grid's corners.

Examples::

    python benchmarks/bench_lookahead.py                  # 100 seeds, ~3 minutes
    python benchmarks/bench_lookahead.py --seeds 20 --json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mmats.backtest import _lookahead_samples, _require_no_lookahead, market  # noqa: E402
from mmats.cli import DEFAULT_DATA  # noqa: E402
from mmats.data import load  # noqa: E402
from mmats.errors import LookaheadError  # noqa: E402
from mmats.lookahead import CORNER_BUDGET, check_lookahead  # noqa: E402
from mmats.strategy import available_strategies, load_strategy  # noqa: E402

BASELINE = "ca0129c"  # the last commit with the truncation-only check

SPARSE_PEEK = """
import numpy as np
from numba import njit
PARAMS = {"every": [50], "phase": [0]}
DEFAULTS = {"every": 50, "phase": 0}

@njit(cache=True)
def signal(open, high, low, close, volume, every, phase):
    out = np.zeros(close.shape[0])
    for i in range(close.shape[0] - 1):
        if i % every == phase and close[i + 1] > close[i]:
            out[i] = 1.0
    return out
"""

CHEATS = {
    "whole-series max": """
import numpy as np
PARAMS = {"level": [0.5]}
DEFAULTS = {"level": 0.5}

def signal(open, high, low, close, volume, level):
    return (close / close.max() > level).astype(np.float64)
""",
    "whole-series mean": """
import numpy as np
PARAMS = {"level": [0.5]}
DEFAULTS = {"level": 0.5}

def signal(open, high, low, close, volume, level):
    return (close > level * close.mean()).astype(np.float64)
""",
    "expanding mean": """
import numpy as np
PARAMS = {"n": [1]}
DEFAULTS = {"n": 1}
WARMUP = 200

def signal(open, high, low, close, volume, n):
    mean = np.cumsum(close) / np.arange(1, close.shape[0] + 1)
    return (close > mean).astype(np.float64)
""",
}


def old_check(baseline: str):
    """``check_lookahead`` as it was at ``baseline``."""
    source = subprocess.run(["git", "show", f"{baseline}:mmats/lookahead.py"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout
    path = Path(tempfile.mkdtemp()) / "old_lookahead.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("old_lookahead", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while defined
    spec.loader.exec_module(module)
    return module.check_lookahead


def gate_catches(strategy, prices, params) -> bool:
    try:
        _require_no_lookahead(strategy, prices, params)
    except LookaheadError:
        return True
    return False


def catch_rates(strategy, prices, old, seeds, every=None) -> dict:
    """Fraction of seeds caught by the script and the gate, new and old."""
    arrays = prices.arrays
    counts = {"script": 0, "gate": 0, "old script": 0, "old gate": 0}
    for seed in range(seeds):
        params = strategy.resolve_params()
        if every:
            params = {"every": every, "phase": seed * every // seeds}
        counts["script"] += not check_lookahead(strategy, arrays, params, seed=seed).passed
        counts["old script"] += not old(strategy, arrays, params, n_cuts=40, seed=seed).passed
        if every or seed == 0:  # otherwise the gate's answer is the same for every seed
            counts["gate"] += gate_catches(strategy, prices, params)
            counts["old gate"] += not old(strategy, arrays, params, n_cuts=12).passed
    gate_runs = seeds if every else 1
    return {"script": counts["script"] / seeds, "gate": counts["gate"] / gate_runs,
            "old script": counts["old script"] / seeds,
            "old gate": counts["old gate"] / gate_runs}


def shipped(prices, seeds: int, corner_seeds: int) -> dict:
    """Seeds at which each shipped strategy is flagged (defaults: full check; corners:
    CORNER_BUDGET), and the gate's time."""
    rows = {}
    for name in available_strategies():
        strategy = load_strategy(name)
        samples = _lookahead_samples(strategy, strategy.combinations()[0])
        defaults, corners = samples[0], samples[1:]
        flagged = sum(not check_lookahead(strategy, prices.arrays, defaults, seed=seed).passed
                      for seed in range(seeds))
        corner_flags = sum(
            not check_lookahead(strategy, prices.arrays, dict(corner), seed=seed,
                                **CORNER_BUDGET).passed
            for seed in range(corner_seeds) for corner in corners)
        full = timed(lambda s=strategy, p=defaults: _require_no_lookahead(s, prices, p))
        sweep_gate = timed(lambda s=strategy, every=samples: [
            _require_no_lookahead(s, prices, p) for p in every])
        rows[name] = {"flagged_defaults": flagged, "seeds": seeds,
                      "flagged_corners": corner_flags,
                      "corner_checks": corner_seeds * len(corners),
                      "gate_seconds": full, "corners": len(corners),
                      "sweep_gate_seconds": sweep_gate}
    return rows


def long_history(prices, bars: int):
    """The sample's bars repeated up to ``bars``, five minutes apart: a long history on
    which the check's time shows whether it grows with the bars."""
    from mmats.backtest import Market

    reps = bars // len(prices) + 1
    tiled = {key: np.tile(getattr(prices, key), reps)[:bars]
             for key in ("open", "high", "low", "close", "volume")}
    ts_ns = prices.ts_ns[0] + prices.bar_ns * np.arange(bars, dtype=np.int64)
    return Market(ts_ns=ts_ns, timeframe=prices.timeframe, calendar=prices.calendar,
                  symbol=prices.symbol, venue=prices.venue, **tiled)


def long_gate(prices, bars: int) -> dict:
    """Seconds of the gate (defaults) and the sweep gate (defaults + corners) of each
    shipped strategy on ``bars`` bars, and of one strategy run for scale."""
    long = long_history(prices, bars)
    rows = {}
    for name in available_strategies():
        strategy = load_strategy(name)
        samples = _lookahead_samples(strategy, strategy.combinations()[0])
        rows[name] = {
            "run_seconds": timed(lambda s=strategy, p=samples[0]: s.run(long.arrays, p), 3),
            "gate_seconds": timed(lambda s=strategy, p=samples[0]:
                                  _require_no_lookahead(s, long, p), 1),
            "sweep_gate_seconds": timed(lambda s=strategy, every=samples: [
                _require_no_lookahead(s, long, p) for p in every], 1),
            "corners": len(samples) - 1}
    return rows


def timed(call, repeat: int = 5) -> float:
    call()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument("--corner-seeds", type=int, default=20,
                        help="seeds for the shipped strategies' grid corners (20)")
    parser.add_argument("--baseline", default=BASELINE,
                        help="commit holding the old check (default %(default)s)")
    parser.add_argument("--long-bars", type=int, default=1_000_000,
                        help="bars of the long history the gate is timed on (1,000,000; "
                        "0 skips it)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()[0]
    prices = market(load(DEFAULT_DATA))
    old = old_check(args.baseline)
    folder = Path(tempfile.mkdtemp())
    cheats = {f"peek every {every}th bar": (SPARSE_PEEK, every) for every in (50, 200)}
    cheats.update({name: (source, None) for name, source in CHEATS.items()})
    started = time.perf_counter()
    rates = {}
    for index, (name, (source, every)) in enumerate(cheats.items()):
        path = folder / f"cheat{index}.py"
        path.write_text(source)
        rates[name] = catch_rates(load_strategy(path), prices, old, args.seeds, every)
    honest = shipped(prices, args.seeds, args.corner_seeds)
    long = long_gate(prices, args.long_bars) if args.long_bars else {}
    figures = {"data": DEFAULT_DATA, "bars": len(prices), "seeds": args.seeds,
               "baseline": args.baseline, "caught": rates, "shipped": honest,
               "long_history": {"bars": args.long_bars, "gate": long},
               "load_before": load_before, "load_after": os.getloadavg()[0],
               "seconds": time.perf_counter() - started, "cpus": os.cpu_count()}
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    print(f"{DEFAULT_DATA}, {len(prices)} bars, {args.seeds} seeds, old = {args.baseline}; "
          f"1-min load {load_before:.2f} -> {figures['load_after']:.2f}, {os.cpu_count()} cpus")
    print(f"{'caught':<24}{'script':>8}{'gate':>8}{'old script':>12}{'old gate':>10}")
    for name, rate in rates.items():
        print(f"{name:<24}" + "".join(f"{rate[key]:>{width}.0%}" for key, width in
                                      (("script", 8), ("gate", 8), ("old script", 12),
                                       ("old gate", 10))))
    print(f"{'shipped':<20}{'flagged (defaults)':>20}{'flagged (corners)':>20}"
          f"{'gate s':>9}{'sweep gate s':>14}")
    for name, row in honest.items():
        print(f"{name:<20}{row['flagged_defaults']:>11} of {row['seeds']:<5}"
              f"{row['flagged_corners']:>11} of {row['corner_checks']:<5}"
              f"{row['gate_seconds']:>9.3f}{row['sweep_gate_seconds']:>11.3f} "
              f"(defaults + {row['corners']} corners)")
    if long:
        print(f"\non {args.long_bars:,} bars (the sample repeated): seconds per check")
        print(f"{'shipped':<20}{'one run':>9}{'gate':>9}{'sweep gate':>12}")
        for name, row in long.items():
            print(f"{name:<20}{row['run_seconds']:>9.3f}{row['gate_seconds']:>9.2f}"
                  f"{row['sweep_gate_seconds']:>12.2f} (defaults + {row['corners']} corners)")
    print(f"{figures['seconds']:.0f} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
