"""Benchmark ``mmats.validate.monte_carlo``: reshuffled trades and bootstrapped bar returns.

Prints figures; it never asserts timings. Measured:

1. Cold compile: a fresh Python process with an empty numba cache (``NUMBA_CACHE_DIR`` in a
   temporary folder) times its first ``monte_carlo`` call on a tiny input, which compiles
   the kernel; then a second fresh process times the same call with that warm disk cache.
2. Warm runs, in this process after a warm-up call (median of ``--repeat``):
   10,000 ``reshuffle`` runs over 1,000 trades (target: <= 1 s), and 1,000 ``bootstrap``
   and ``block`` runs over 100,000 bar returns. Wall time of ``monte_carlo`` end to end
   (input checks, seeds, kernel, percentiles of the fan).

Inputs are seeded synthetic returns: trades N(0.2 %, 3 %), bars N(0.01 %, 1 %).

Examples::

    python benchmarks/bench_montecarlo.py
    python benchmarks/bench_montecarlo.py --repeat 5 --json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

COLD_SNIPPET = """
import time
t0 = time.perf_counter()
import numpy as np
from mmats.validate import monte_carlo
t1 = time.perf_counter()
monte_carlo(np.array([0.01, -0.02, 0.015]), runs=4)
t2 = time.perf_counter()
print(f"{t1 - t0:.3f} {t2 - t1:.3f}")
"""


def cold_start(cache_dir: str) -> tuple[float, float]:
    """(import seconds, first-call seconds) of a fresh process using ``cache_dir``."""
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
    out = subprocess.run(
        [sys.executable, "-c", COLD_SNIPPET],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return float(out[0]), float(out[1])


def timed(call, repeat: int) -> float:
    seconds = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="median of N timed calls (3)")
    parser.add_argument("--skip-cold", action="store_true", help="skip the cold-compile runs")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

    import numba
    import numpy as np

    from mmats.validate import monte_carlo

    figures: dict = {
        "threads": numba.get_num_threads(),
        "cpus": os.cpu_count(),
        "load_average_before": os.getloadavg()[0],
    }
    if not args.skip_cold:
        with tempfile.TemporaryDirectory() as cache:
            cold_import, cold_call = cold_start(cache)
            warm_import, warm_call = cold_start(cache)
        figures["cold_compile_first_call_s"] = cold_call
        figures["cold_import_s"] = cold_import
        figures["warm_cache_first_call_s"] = warm_call

    rng = np.random.default_rng(20261122)
    trades = rng.normal(0.002, 0.03, 1_000)
    bars = rng.normal(0.0001, 0.01, 100_000)
    monte_carlo(trade_returns=trades[:10], method="reshuffle", runs=4)  # warm-up / compile

    cases = {
        "reshuffle_10000_runs_x_1000_trades": lambda: monte_carlo(
            trade_returns=trades, method="reshuffle", runs=10_000, seed=1
        ),
        "bootstrap_1000_runs_x_100000_bars": lambda: monte_carlo(
            bars, method="bootstrap", runs=1_000, seed=1
        ),
        "block_1000_runs_x_100000_bars": lambda: monte_carlo(
            bars, method="block", runs=1_000, seed=1
        ),
    }
    for name, call in cases.items():
        figures[f"{name}_s"] = timed(call, args.repeat)
    numba.set_num_threads(1)
    figures["reshuffle_10000_runs_x_1000_trades_one_thread_s"] = timed(
        cases["reshuffle_10000_runs_x_1000_trades"], args.repeat
    )
    figures["bootstrap_1000_runs_x_100000_bars_one_thread_s"] = timed(
        cases["bootstrap_1000_runs_x_100000_bars"], args.repeat
    )
    figures["load_average_after"] = os.getloadavg()[0]

    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    print(
        f"threads {figures['threads']} (cpus {figures['cpus']}), 1-min load average "
        f"{figures['load_average_before']:.2f} before, {figures['load_average_after']:.2f} after"
    )
    if not args.skip_cold:
        print(
            f"cold compile, first call with an empty numba cache: "
            f"{figures['cold_compile_first_call_s']:.2f} s "
            f"(import {figures['cold_import_s']:.2f} s)"
        )
        print(
            f"first call of a new process, warm disk cache:     "
            f"{figures['warm_cache_first_call_s']:.2f} s"
        )
    print(f"warm, median of {args.repeat}:")
    for name in cases:
        steps = 1e7 if name.startswith("reshuffle") else 1e8
        seconds = figures[f"{name}_s"]
        print(f"  {name:<40} {seconds:7.3f} s  ({steps / seconds / 1e6:,.0f} M steps/s)")
    print(
        f"  {'reshuffle, one thread':<40} "
        f"{figures['reshuffle_10000_runs_x_1000_trades_one_thread_s']:7.3f} s"
    )
    print(
        f"  {'bootstrap, one thread':<40} "
        f"{figures['bootstrap_1000_runs_x_100000_bars_one_thread_s']:7.3f} s"
    )
    target = figures["reshuffle_10000_runs_x_1000_trades_s"]
    print(
        f"target 10,000 reshuffle runs x 1,000 trades <= 1 s: {target:.3f} s, "
        f"{'met' if target <= 1.0 else 'NOT met'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
