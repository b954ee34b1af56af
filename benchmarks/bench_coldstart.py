"""Cold start: how long a fresh process takes to its first backtest result, and vectorbt's.

Each figure is a fresh Python process, timed from just before it is started to the moment
its result exists (the parent passes its clock; the child reports), median of
``--repeat`` runs, with the 1-minute load average before and after each run and the
child's CPU seconds (on a shared machine, wall time far above CPU time means waiting):

(a) ``import mmats``, and the imports the first backtest needs (mmats.data,
    mmats.backtest, numba);
(b) ``mmats.load(sample)`` then ``mmats.backtest("ema_cross", candles, {"fast": 10,
    "slow": 50}, fee_bps=10)`` (lookahead check on, the default), with empty
    ``NUMBA_CACHE_DIR`` and ``MMATS_CACHE_DIR`` (new temporary folders each run);
(c) the same after ``mmats warmup --strategy ema_cross`` ran once into those caches (the
    warm-up's own time is printed too: it is paid once, after installing);
(d) vectorbt on the same file with an empty ``NUMBA_CACHE_DIR``: ``import vectorbt``,
    ``pandas.read_parquet`` (a plain, timezone-naive index: vectorbt's faster set-up), EMA(10) and EMA(50) with ``vbt.MA.run(ewm=True)``, the
    crossing signals, ``Portfolio.from_signals(..., price=open, fees=0.001, size=inf)``
    and ``.stats()``.

The sample is ``mmats/data/sample/bittrex/ETH_BTC_5m.parquet`` (5,760 bars). (b) and (c)
also print where their time went: imports, data load, and in ``backtest()`` the seconds
numba spent compiling (its ``numba:compile`` events). Nothing is asserted: the last lines
print the target (<= 5 s), the figures, their ratio to it and met / not met.

    .venv/bin/python benchmarks/bench_coldstart.py                # 3 runs each (~5 min)
    .venv/bin/python benchmarks/bench_coldstart.py --repeat 1 --skip-vectorbt
    .venv/bin/python benchmarks/bench_coldstart.py --json         # one JSON object
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "mmats" / "data" / "sample" / "bittrex" / "ETH_BTC_5m.parquet"
SPEC = "bittrex:ETH/BTC:5m"
TARGET_S = 5.0


# -- workers: each runs in a fresh process and prints one JSON line ------------------------

def worker_import(t0: float) -> dict:
    entered = time.time()
    import mmats  # noqa: F401

    imported = time.time()
    import numba  # noqa: F401

    import mmats.backtest  # noqa: F401
    import mmats.data  # noqa: F401

    done = time.time()
    return {"to_result_s": done - t0, "interpreter_s": entered - t0,
            "import_mmats_s": imported - entered, "imports_s": done - entered}


def worker_mmats(t0: float) -> dict:
    """The first backtest of a fresh process, its time split into imports, the data load,
    and backtest() with the seconds numba compiled in it."""
    entered = time.time()
    from numba.core import event

    import mmats
    import mmats.backtest  # noqa: F401
    import mmats.data  # noqa: F401

    imported = time.time()
    candles = mmats.load(SPEC)
    loaded = time.time()
    with event.install_recorder("numba:compile") as recorder:
        result = mmats.backtest("ema_cross", candles, {"fast": 10, "slow": 50}, fee_bps=10)
    done = time.time()
    return {"to_result_s": done - t0, "interpreter_s": entered - t0,
            "imports_s": imported - entered, "load_s": loaded - imported,
            "backtest_s": done - loaded, "compile_s": _top_level_compile_s(recorder.buffer),
            "compiled": len({id(e.data["dispatcher"]) for _, e in recorder.buffer}),
            "bars": len(result.equity), "final_equity": result.metrics["final_equity"]}


def _top_level_compile_s(buffer) -> float:
    """Seconds inside numba's outermost compilations (a callee compiles inside its caller)."""
    depth, started, total = 0, 0.0, 0.0
    for stamp, happened in buffer:
        if happened.is_start:
            depth += 1
            if depth == 1:
                started = stamp
        else:
            depth -= 1
            if depth == 0:
                total += stamp - started
    return total


def worker_vectorbt(t0: float) -> dict:
    entered = time.time()
    import numpy as np
    import pandas as pd
    import vectorbt as vbt

    imported = time.time()
    frame = pd.read_parquet(SAMPLE)
    index = pd.DatetimeIndex(frame["ts"])
    index = index.tz_localize(None) if index.tz is not None else index  # its faster set-up
    close = pd.Series(frame["close"].to_numpy(), index=index)
    open_ = pd.Series(frame["open"].to_numpy(), index=close.index)
    loaded = time.time()
    fast = vbt.MA.run(close, 10, ewm=True).ma
    slow = vbt.MA.run(close, 50, ewm=True).ma
    above = pd.Series(fast.to_numpy() > slow.to_numpy(), index=close.index)
    previous = above.shift(1, fill_value=False)
    entries = (above & ~previous).shift(1, fill_value=False)  # decided at close, filled next open
    exits = (~above & previous).shift(1, fill_value=False)
    portfolio = vbt.Portfolio.from_signals(close, entries, exits, price=open_, size=np.inf,
                                           fees=0.001, init_cash=10_000.0, freq="5min",
                                           min_size=0)
    stats = portfolio.stats()
    done = time.time()
    return {"to_result_s": done - t0, "interpreter_s": entered - t0,
            "imports_s": imported - entered, "load_s": loaded - imported,
            "backtest_s": done - loaded, "final_equity": float(stats["End Value"]),
            "vectorbt": vbt.__version__}


WORKERS = {"import": worker_import, "mmats": worker_mmats, "vectorbt": worker_vectorbt}


# -- the parent: fresh processes, caches, load, medians -----------------------------------

def run_worker(name: str, env: dict) -> dict:
    """Run worker ``name`` in a fresh process; its figures plus CPU seconds and load."""
    load_before = os.getloadavg()[0]
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.time()
    done = subprocess.run([sys.executable, __file__, "--worker", name, "--t0", repr(t0)],
                          env=env, cwd=REPO, capture_output=True, text=True, timeout=1800)
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"bench_coldstart: worker {name} failed:\n{done.stderr}")
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    figures["cpu_s"] = ((cpu_after.ru_utime - cpu_before.ru_utime)
                        + (cpu_after.ru_stime - cpu_before.ru_stime))
    figures["load_before"], figures["load_after"] = load_before, os.getloadavg()[0]
    return figures


def fresh_caches(scratch: Path, name: str) -> dict:
    folder = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=scratch))
    return {**os.environ, "NUMBA_CACHE_DIR": str(folder / "numba"),
            "MMATS_CACHE_DIR": str(folder / "mmats"), "MPLCONFIGDIR": str(folder / "mpl")}


def warm_up(env: dict) -> dict:
    load_before = os.getloadavg()[0]
    started = time.time()
    done = subprocess.run([sys.executable, "-m", "mmats.cli.main", "warmup", "--strategy",
                           "ema_cross", "--json"], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=1800)
    if done.returncode != 0:
        raise SystemExit(f"bench_coldstart: mmats warmup failed:\n{done.stderr}")
    report = json.loads(done.stdout)
    return {"wall_s": time.time() - started, "compiled": report["compiled"],
            "load_before": load_before, "load_after": os.getloadavg()[0]}


def measure(options, log) -> dict:
    figures = {"machine": machine(), "repeat": options.repeat}
    with tempfile.TemporaryDirectory(prefix="bench-coldstart-") as scratch:
        scratch = Path(scratch)
        runs = {"import": [], "empty": [], "warm": [], "vectorbt": []}
        for k in range(options.repeat):
            log(f"run {k + 1}/{options.repeat}: (a) imports")
            runs["import"].append(run_worker("import", fresh_caches(scratch, "import")))
            log(f"run {k + 1}/{options.repeat}: (b) first backtest, empty caches")
            runs["empty"].append(run_worker("mmats", fresh_caches(scratch, "empty")))
        env = fresh_caches(scratch, "warm")
        log("(c) mmats warmup --strategy ema_cross, once")
        figures["warmup"] = warm_up(env)
        for k in range(options.repeat):
            log(f"run {k + 1}/{options.repeat}: (c) first backtest after the warm-up")
            runs["warm"].append(run_worker("mmats", env))
        if not options.skip_vectorbt:
            for k in range(options.repeat):
                log(f"run {k + 1}/{options.repeat}: (d) vectorbt, empty numba cache")
                runs["vectorbt"].append(run_worker("vectorbt", fresh_caches(scratch, "vbt")))
    figures["runs"] = {name: values for name, values in runs.items() if values}
    figures["median"] = {name: medians(values) for name, values in figures["runs"].items()}
    return figures


def medians(runs: list[dict]) -> dict:
    keys = [k for k, v in runs[0].items() if isinstance(v, int | float)]
    return {k: statistics.median(run[k] for run in runs) for k in keys}


def machine() -> dict:
    import numba
    import pandas

    return {"cpus": os.cpu_count(), "python": platform.python_version(),
            "numba": numba.__version__, "pandas": pandas.__version__,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


# -- the report ---------------------------------------------------------------------------

def report(figures: dict) -> str:
    m, runs = figures["machine"], figures["runs"]
    lines = [f"bench_coldstart {m['date']}: {m['cpus']} CPUs, Python {m['python']}, numba "
             f"{m['numba']}, pandas {m['pandas']}; sample {SPEC} ({SAMPLE.name}); median of "
             f"{figures['repeat']} fresh processes", "",
             f"{'':46s} {'wall s':>7s} {'(min-max)':>13s} {'cpu s':>6s}  load 1-min before/after"]

    def row(label, name, key="to_result_s"):
        values = [run[key] for run in runs[name]]
        loads = ", ".join(f"{run['load_before']:.1f}/{run['load_after']:.1f}"
                          for run in runs[name])
        cpu = statistics.median(run["cpu_s"] for run in runs[name])
        lines.append(f"{label:46s} {statistics.median(values):7.2f} "
                     f"{f'({min(values):.2f}-{max(values):.2f})':>13s} {cpu:6.2f}  {loads}")

    row("(a) import mmats (process start to done)", "import")
    median = figures["median"]
    lines.append(f"{'    of which import mmats / + backtest path':46s} "
                 f"{median['import']['import_mmats_s']:7.2f} / {median['import']['imports_s']:.2f}")
    row("(b) first backtest result, empty caches", "empty")
    lines.append(phases(median["empty"]))
    warm = figures["warmup"]
    lines.append(f"{'    mmats warmup --strategy ema_cross (once)':46s} {warm['wall_s']:7.2f}"
                 f"{'':20s}  {warm['load_before']:.1f}/{warm['load_after']:.1f}"
                 f"  ({warm['compiled']} kernels compiled)")
    row("(c) first backtest result after mmats warmup", "warm")
    lines.append(phases(median["warm"]))
    if "vectorbt" in runs:
        row(f"(d) vectorbt {runs['vectorbt'][0]['vectorbt']} first from_signals + stats",
            "vectorbt")
        lines.append(phases(median["vectorbt"]))
    lines += ["", f"target: cold start <= {TARGET_S:g} s to the first backtest result"]
    for label, name in (("empty caches (b)", "empty"), ("after `mmats warmup` (c)", "warm")):
        value = median[name]["to_result_s"]
        lines.append(f"  {label:28s} {value:6.2f} s  ratio {value / TARGET_S:.2f} of the "
                     f"target  -> {'met' if value <= TARGET_S else 'not met'}  (CPU "
                     f"{median[name]['cpu_s']:.2f} s: near the wall time on an idle machine)")
    if "vectorbt" in runs:
        theirs = median["vectorbt"]["to_result_s"]
        lines.append(f"  vectorbt (d) {theirs:.2f} s: {theirs / median['empty']['to_result_s']:.1f}x "
                     f"MMATS's empty-cache start, {theirs / median['warm']['to_result_s']:.1f}x "
                     "after the warm-up")
    return "\n".join(lines)


def phases(median: dict) -> str:
    parts = [f"interpreter {median['interpreter_s']:.2f}", f"imports {median['imports_s']:.2f}",
             f"data load {median['load_s']:.2f}", f"backtest {median['backtest_s']:.2f}"]
    if "compile_s" in median:
        parts[-1] += (f" (numba compiling {median['compile_s']:.2f}, "
                      f"{median['compiled']:.0f} functions)")
    return "    " + ", ".join(parts)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (median)")
    parser.add_argument("--skip-vectorbt", action="store_true")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--t0", type=float, help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.worker:
        print(json.dumps(WORKERS[options.worker](options.t0)))
        return 0
    quiet = options.json

    def log(text):
        if not quiet:
            print(f"[{time.strftime('%H:%M:%S')} load {os.getloadavg()[0]:.1f}] {text}",
                  file=sys.stderr, flush=True)

    figures = measure(options, log)
    print(json.dumps(figures, indent=1) if options.json else report(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
