"""Benchmark sweeps on a Dask cluster: 1 against 2 local workers, and a sizing note.

The workload is bench_sweep's: ``ema_cross`` on seeded synthetic 5-minute candles (1M
bars) over 1,000 (fast, slow) combinations, 10 bps fees, 10,000 cash. It runs in this
process (numba's own threads: the local baseline), then on ``local:1`` and ``local:2``
(LocalClusters of single-threaded worker processes on 127.0.0.1), each after a warm-up on
3,000 bars run on every worker, so compilation is excluded. Each distributed table is checked equal, bit for
bit, to the local one. Prints bar-combinations/s (median of ``--repeat`` runs), the
speed-up of 2 workers over 1, the 1-minute load before and after each measurement,
targets with "met" / "not met", and a sizing note for 100 workers computed from the
measured one-worker (per-core) figure. It never asserts a timing.

Examples::

    python benchmarks/bench_cluster.py                  # 1M bars × 1,000 combinations
    python benchmarks/bench_cluster.py --quick          # 100k bars × 200, a smoke test
    python benchmarks/bench_cluster.py --json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_sweep import FEE_BPS, STRATEGY, WARMUP_BARS, make_candles, make_grid  # noqa: E402

TARGET_SPEEDUP = 1.8  # 2 workers over 1: 90 % scaling on two idle cores
TARGET_OVERHEAD = 0.9  # local:2 against the in-process sweep on two numba threads
SIZING_WORKERS = 100
SIZING_COMBOS = 100_000


def load() -> float:
    return round(os.getloadavg()[0], 2)


def measure(run, repeat: int) -> dict:
    """Median wall time of ``run()`` over ``repeat`` runs, the load around each."""
    seconds, loads, result = [], [], None
    for _ in range(repeat):
        before = load()
        started = time.perf_counter()
        result = run()
        seconds.append(time.perf_counter() - started)
        loads.append((before, load()))
    return {"seconds": statistics.median(seconds), "all_seconds": seconds, "load": loads,
            "result": result}


def same_bits(local, other) -> bool:
    if list(local.columns) != list(other.columns):
        return False
    for column in local.columns:
        mine, theirs = local[column].to_numpy(), other[column].to_numpy()
        equal = (mine.tobytes() == theirs.tobytes() if mine.dtype.kind in "biuf"
                 else mine.tolist() == theirs.tolist())
        if not equal:
            return False
    return True


def run(bars: int, combos: int, workers: list[int], repeat: int) -> dict:
    from mmats.backtest import sweep
    from mmats.distributed import connect, sizing

    candles = make_candles(bars)
    warmup = make_candles(WARMUP_BARS)
    grid = make_grid(combos)
    options = dict(fee_bps=FEE_BPS, check_lookahead_bias=False)
    sweep(STRATEGY, warmup, grid, **options)
    figures = {"bars": bars, "combos": combos, "repeat": repeat,
               "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               "cpus": os.cpu_count()}
    local = measure(lambda: sweep(STRATEGY, candles, grid, **options).table, repeat)
    figures["local"] = _figure(local, bars, combos)
    print(_line("in-process sweep (numba threads)", figures["local"]), flush=True)
    for count in workers:
        started = time.perf_counter()
        with connect(f"local:{count}") as client:
            start_s = time.perf_counter() - started
            client.run(_warm_up, warmup, grid, options)  # every worker compiles, once
            measured = measure(lambda c=client: sweep(STRATEGY, candles, grid, cluster=c,
                                                      **options).table, repeat)
        figure = _figure(measured, bars, combos)
        figure["cluster_start_s"] = start_s
        figure["equal_to_local"] = same_bits(local["result"], measured["result"])
        figures[f"local:{count}"] = figure
        print(_line(f"local:{count} ({count} worker process{'es' if count > 1 else ''})",
                    figure) + f", table equal bit for bit: {figure['equal_to_local']}",
              flush=True)
    one, two = figures.get("local:1"), figures.get("local:2")
    if one and two:
        figures["speedup"] = two["bar_combos_s"] / one["bar_combos_s"]
        figures["vs_in_process"] = two["bar_combos_s"] / figures["local"]["bar_combos_s"]
    if one:
        figures["sizing"] = sizing(bars, SIZING_COMBOS, SIZING_WORKERS, one["bar_combos_s"])
    return figures


def _warm_up(candles, grid, options) -> None:
    """Run on every worker (``client.run``): compile (or load) the sweep kernel."""
    from mmats.backtest import sweep

    sweep(STRATEGY, candles, grid, **options)


def _figure(measured: dict, bars: int, combos: int) -> dict:
    return {"seconds": measured["seconds"], "all_seconds": measured["all_seconds"],
            "bar_combos_s": bars * combos / measured["seconds"], "load": measured["load"]}


def _line(label: str, figure: dict) -> str:
    loads = ", ".join(f"{a:.2f}→{b:.2f}" for a, b in figure["load"])
    return (f"{label:38s} {figure['bar_combos_s'] / 1e6:8.1f} M bar-combos/s "
            f"(median {figure['seconds']:.2f} s; load {loads})")


def report(figures: dict) -> None:
    print(f"\n{figures['bars']:,} bars × {figures['combos']:,} combinations, "
          f"{figures['cpus']} CPUs, {figures['date']}")
    if "speedup" in figures:
        speedup, ratio = figures["speedup"], figures["vs_in_process"]
        print(f"speed-up 2 workers / 1: {speedup:.2f} (target ≥ {TARGET_SPEEDUP}: "
              f"{'met' if speedup >= TARGET_SPEEDUP else 'not met'})")
        print(f"local:2 / in-process sweep: {ratio:.2f} (target ≥ {TARGET_OVERHEAD}: "
              f"{'met' if ratio >= TARGET_OVERHEAD else 'not met'})")
    equal = all(figures[key]["equal_to_local"] for key in figures if key.startswith("local:"))
    print(f"every distributed table equal to the local one, bit for bit: "
          f"{'met' if equal else 'not met'}")
    if "sizing" in figures:
        s = figures["sizing"]
        print(f"\nsizing note, {s['workers']} single-threaded workers, {figures['bars']:,} bars "
              f"× {SIZING_COMBOS:,} combinations, from the measured "
              f"{figures['local:1']['bar_combos_s'] / 1e6:.0f} M bar-combos/s per core:")
        print(f"  data per worker: {s['data_per_worker_mb']:.0f} MB of candles (sent once, "
              "fetched from a peer), plus a few arrays of bars per kernel thread")
        print(f"  batches: {s['batches']} of {s['batch_combos']} combinations, "
              f"~{s['batch_seconds']:.1f} s each (≥ 1 s keeps the scheduler's ~ms per task "
              "negligible)")
        print(f"  expected: {s['expected_bar_combos_s'] / 1e9:.1f} G bar-combos/s, "
              f"{s['expected_seconds']:.0f} s for the grid (if the network delivers the "
              "candles in well under that)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().partition("\n\n")[0])
    parser.add_argument("--bars", type=int, default=1_000_000)
    parser.add_argument("--combos", type=int, default=1_000)
    parser.add_argument("--workers", default="1,2", help="local worker counts (1,2)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="100k bars × 200, one run")
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    args = parser.parse_args(argv)
    if args.quick:
        args.bars, args.combos, args.repeat = 100_000, 200, 1
    figures = run(args.bars, args.combos, [int(n) for n in args.workers.split(",")],
                  args.repeat)
    report(figures)
    if args.json:
        print(json.dumps(figures, indent=2, default=float))
    return 0


if __name__ == "__main__":  # LocalCluster's worker processes re-import this module
    sys.exit(main())
