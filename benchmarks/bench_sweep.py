"""Benchmark the MMATS parameter sweep against vectorbt, and MMATS's cold start.

Prints figures; it never asserts timings. Every measurement runs in its own Python
subprocess (a "worker" of this same script), so peak memory, numba caches and first-touch
page faults of one side cannot contaminate the other. Workers run one at a time.

What is measured (see benchmarks/README.md for the figures on the reference machine):

1. Sweep throughput, end to end (indicators + simulation + metrics) of the ``ema_cross``
   strategy over a grid of 100 valid (fast, slow) combinations on seeded synthetic GBM
   5-minute candles, for MMATS ``sweep()``, the matched fused loop (the machine's limit,
   benchmarks/matched_loop.py, its final equity checked against MMATS's) and vectorbt in
   two set-ups: as a user writes it (``MA.run(ewm=True)`` + ``Portfolio.from_signals`` +
   accessor metrics on a tz-aware index) and its fastest reasonable one (plain index, its
   numba metric functions: benchmarks/vectorbt_fast.py). Compilation is excluded (a
   warm-up call on small data first) and reported separately.
2. Agreement of the two sides on final equity, total return, Sharpe, max drawdown, trades.
3. Peak RSS of each side's worker (``ru_maxrss``), and its baseline after imports and
   data generation; for MMATS also at other combination counts, to show whether memory
   grows with the number of combinations.
4. Cold start: process start to the first ``backtest()`` result on the bundled sample,
   with empty MMATS and numba caches, then warm; and a warm ``scripts/backtest.py`` run.

Examples::

    python benchmarks/bench_sweep.py                 # 100k and 1M bars, several minutes
    python benchmarks/bench_sweep.py --quick         # 10k bars, a smoke test
    python benchmarks/bench_sweep.py --sizes 100000 --skip-vectorbt --json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = "mmats/data/sample/bittrex/ETH_BTC_5m.parquet"
STRATEGY = "ema_cross"
FEE_BPS = 10.0
CASH = 10_000.0
SEED = 20261122
WARMUP_BARS = 3_000
BARS_PER_YEAR = 365 * 288  # 5-minute bars, 24/7
ANNUAL_VOLATILITY = 0.8  # crypto-like
RESULT_PREFIX = "BENCH-RESULT "
SOLVENT_EQUITY = 0.01  # final equity (of CASH at the start) below which a combination is ruined
COMPARED = ("final_equity", "total_return", "sharpe", "max_drawdown", "trades")


# --------------------------------------------------------------------------- data


def make_candles(n_bars: int, seed: int = SEED):
    """Seeded synthetic 5-minute OHLCV candles (24/7) from a geometric Brownian motion.

    ``open`` is the previous close; ``high``/``low`` extend beyond max/min(open, close)
    by a half-normal wick of the bar's volatility; ``volume`` is log-normal (positive).
    """
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    sigma = ANNUAL_VOLATILITY / math.sqrt(BARS_PER_YEAR)
    log_returns = rng.normal(-0.5 * sigma * sigma, sigma, n_bars)
    start = 100.0
    close = start * np.exp(np.cumsum(log_returns))
    open_ = np.empty(n_bars)
    open_[0] = start
    open_[1:] = close[:-1]
    wicks = np.abs(rng.standard_normal((2, n_bars))) * (0.5 * sigma)
    high = np.maximum(open_, close) * np.exp(wicks[0])
    low = np.minimum(open_, close) * np.exp(-wicks[1])
    volume = rng.lognormal(mean=math.log(1_000.0), sigma=0.6, size=n_bars)
    ts = pd.date_range("2016-01-01", periods=n_bars, freq="5min", tz="UTC", unit="ns")
    return pd.DataFrame({"ts": ts, "open": open_, "high": high, "low": low, "close": close,
                         "volume": volume})


def make_grid(n_combos: int) -> dict[str, list[int]]:
    """A (fast, slow) grid of exactly ``n_combos`` combinations, every one with fast < slow:
    ``a`` fast spans 5, 10, ... and ``b`` slow spans above them, ``a × b = n_combos``."""
    a = math.isqrt(n_combos)
    while n_combos % a:
        a -= 1
    b = n_combos // a
    fast = [5 * (i + 1) for i in range(a)]
    slow = [fast[-1] + 10 * (j + 1) for j in range(b)]
    return {"fast": fast, "slow": slow}


def paired(grid: dict[str, list[int]]) -> tuple[list[int], list[int]]:
    pairs = [(f, s) for f in grid["fast"] for s in grid["slow"] if f < s]
    return [p[0] for p in pairs], [p[1] for p in pairs]


# --------------------------------------------------------------------------- helpers


def max_rss_mib() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mib() -> float:
    try:
        with open("/proc/self/statm") as handle:
            pages = int(handle.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return math.nan


def source_state() -> dict:
    """Which MMATS code was measured: a hash of the kernel and strategy sources, HEAD, and
    whether those files differ from HEAD (other people edit them while benchmarks run)."""
    import hashlib

    digest = hashlib.sha256()
    files = sorted((ROOT / "mmats").rglob("*.py"))  # the shipped strategies included
    for path in files:
        digest.update(path.read_bytes())
    state = {"sources_sha256": digest.hexdigest()[:12]}
    try:
        state["head"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                       capture_output=True, text=True).stdout.strip()
        changed = subprocess.run(["git", "status", "--porcelain", "mmats"],
                                 cwd=ROOT, capture_output=True, text=True).stdout
        state["uncommitted_files"] = len(changed.splitlines())
    except OSError:
        pass
    return state


def emit(result: dict) -> None:
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def table_records(frame) -> list[dict]:
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v)
             for k, v in row.items()} for row in frame.to_dict("records")]


# --------------------------------------------------------------------------- workers


def worker_mmats(bars: int, combos: int, repeat: int) -> dict:
    """Time ``sweep()`` ``repeat`` times on ``bars`` synthetic bars after a warm-up."""
    started = time.perf_counter()
    import numba
    import numpy as np
    import pandas as pd

    from mmats.backtest import sweep
    from mmats.nb.indicators import ema

    import_s = time.perf_counter() - started
    grid = make_grid(combos)
    candles = make_candles(bars) if bars else None
    baseline = max_rss_mib()
    baseline_current = current_rss_mib()

    small = make_candles(WARMUP_BARS, seed=SEED + 1)
    t = time.perf_counter()
    sweep(STRATEGY, small, grid, fee_bps=FEE_BPS, cash=CASH, check_lookahead_bias=False)
    first_call_s = time.perf_counter() - t
    t = time.perf_counter()
    sweep(STRATEGY, small, grid, fee_bps=FEE_BPS, cash=CASH, check_lookahead_bias=False)
    second_call_s = time.perf_counter() - t
    if not bars:  # the compile step: warm-up only
        return {"side": "mmats", "first_call_small_s": first_call_s,
                "second_call_small_s": second_call_s, "rss_peak_mib": max_rss_mib(),
                "rss_baseline_mib": baseline, "import_s": import_s}
    # The indicator parity the comparison with vectorbt relies on.
    ema_diff = max(
        float(np.nanmax(np.abs(ema(small["close"].to_numpy(), span) - small["close"].ewm(
            span=span, adjust=False, min_periods=span).mean().to_numpy())))
        for span in (10, 50))
    after_warmup = max_rss_mib()

    walls, kernels, cpus = [], [], []
    result = None
    for _ in range(repeat):
        t, cpu = time.perf_counter(), time.process_time()
        result = sweep(STRATEGY, candles, grid, fee_bps=FEE_BPS, cash=CASH,
                       check_lookahead_bias=False)
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - cpu)
        kernels.append(result.seconds)
    peak = max_rss_mib()
    table = result.table[["fast", "slow", *COMPARED]]
    wall = statistics.median(walls)
    return {
        "side": "mmats", "bars": bars, "combos": len(result.table), "repeat": repeat,
        "threads": numba.config.NUMBA_NUM_THREADS, "numba": numba.__version__,
        "pandas": pd.__version__, "import_s": import_s,
        "first_call_small_s": first_call_s, "second_call_small_s": second_call_s,
        "wall_s": walls, "kernel_s": kernels, "wall_median_s": wall, "cpu_s": cpus,
        "kernel_median_s": statistics.median(kernels),
        "bar_combinations_per_s": bars * len(result.table) / wall,
        "kernel_bar_combinations_per_s": bars * len(result.table) / statistics.median(kernels),
        "rss_baseline_mib": baseline, "rss_baseline_current_mib": baseline_current,
        "rss_after_warmup_mib": after_warmup, "rss_peak_mib": peak,
        "rss_end_current_mib": current_rss_mib(), "ema_vs_pandas_max_abs": ema_diff,
        "table": table_records(table),
    }


def _vectorbt_pipeline(vbt, close, open_, fast_windows, slow_windows):
    """vectorbt's equivalent of one MMATS ema_cross sweep: EMAs, signals, simulation and
    metrics for paired (fast, slow) windows. Returns a DataFrame, one row per pair."""
    import numpy as np
    import pandas as pd

    fast = vbt.MA.run(close, window=fast_windows, ewm=True, short_name="fast").ma.to_numpy()
    slow = vbt.MA.run(close, window=slow_windows, ewm=True, short_name="slow").ma.to_numpy()
    above = fast > slow  # "long while fast > slow"; False while either EMA is NaN
    del fast, slow
    before = np.zeros_like(above)
    before[1:] = above[:-1]
    # The decision at bar t's close fills at bar t+1's open: shift the signals one bar.
    entries = np.zeros_like(above)
    exits = np.zeros_like(above)
    entries[1:] = (above & ~before)[:-1]
    exits[1:] = (before & ~above)[:-1]
    del above, before
    columns = pd.MultiIndex.from_arrays([fast_windows, slow_windows], names=["fast", "slow"])
    portfolio = vbt.Portfolio.from_signals(
        close,
        pd.DataFrame(entries, index=close.index, columns=columns),
        pd.DataFrame(exits, index=close.index, columns=columns),
        price=open_, size=np.inf, fees=FEE_BPS / 10_000, init_cash=CASH, freq="5min",
        # vectorbt's default min_size (1e-8 units) rejects orders once a combination has
        # lost nearly all its equity; MMATS has no minimum unless min_notional is set.
        min_size=0.0,
    )
    del entries, exits
    metrics = pd.DataFrame({
        "final_equity": portfolio.final_value(),
        "total_return": portfolio.total_return(),
        "sharpe": portfolio.sharpe_ratio(),
        "max_drawdown": portfolio.max_drawdown(),
        "trades": portfolio.trades.count(),
    })
    return metrics, portfolio


def worker_vectorbt(bars: int, combos: int, repeat: int, fast_setup: bool = False) -> dict:
    """Time the vectorbt pipeline ``repeat`` times on ``bars`` synthetic bars: as a user
    writes it (tz-aware index, pandas accessors), or ``fast_setup``
    (benchmarks/vectorbt_fast.py)."""
    started = time.perf_counter()
    import numpy as np
    import pandas as pd
    import vectorbt as vbt

    import_s = time.perf_counter() - started
    fast_windows, slow_windows = paired(make_grid(combos))
    candles = make_candles(max(bars, 2))
    index = pd.RangeIndex(len(candles)) if fast_setup else pd.DatetimeIndex(candles["ts"])
    close = pd.Series(candles["close"].to_numpy(), index=index, name="close")
    pipeline = _vectorbt_pipeline
    if fast_setup:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from vectorbt_fast import fast_pipeline

        def pipeline(vbt, close, open_, fast_windows, slow_windows):
            return fast_pipeline(vbt, close, open_, fast_windows, slow_windows,
                                 FEE_BPS / 10_000, CASH, BARS_PER_YEAR)
    open_ = pd.Series(candles["open"].to_numpy(), index=close.index, name="open")
    del candles
    baseline = max_rss_mib()
    baseline_current = current_rss_mib()

    small = make_candles(WARMUP_BARS, seed=SEED + 1)
    small_close = pd.Series(small["close"].to_numpy(), index=(
        pd.RangeIndex(len(small)) if fast_setup else pd.DatetimeIndex(small["ts"])))
    small_open = pd.Series(small["open"].to_numpy(), index=small_close.index)
    t = time.perf_counter()
    pipeline(vbt, small_close, small_open, fast_windows, slow_windows)
    first_call_s = time.perf_counter() - t
    t = time.perf_counter()
    _, small_portfolio = pipeline(vbt, small_close, small_open, fast_windows, slow_windows)
    second_call_s = time.perf_counter() - t
    if not bars:  # the compile step: warm-up only
        return {"side": "vectorbt", "fast_setup": fast_setup, "first_call_small_s": first_call_s,
                "second_call_small_s": second_call_s, "rss_peak_mib": max_rss_mib(),
                "rss_baseline_mib": baseline, "import_s": import_s}
    # Is vectorbt's EWM MA pandas ewm(span, adjust=False, min_periods=span)?
    ma = vbt.MA.run(small_close, window=[10, 50], ewm=True).ma.to_numpy()
    ema_diff = max(
        float(np.nanmax(np.abs(ma[:, i] - small_close.ewm(
            span=span, adjust=False, min_periods=span).mean().to_numpy())))
        for i, span in enumerate((10, 50)))
    nan_pattern_equal = all(
        bool(np.array_equal(np.isnan(ma[:, i]), small_close.ewm(
            span=span, adjust=False, min_periods=span).mean().isna().to_numpy()))
        for i, span in enumerate((10, 50)))
    closed_vs_all = int((small_portfolio.trades.count()
                         - small_portfolio.trades.closed.count()).max())
    del ma, small_portfolio
    after_warmup = max_rss_mib()

    walls, metrics = [], None
    for _ in range(repeat):
        metrics = portfolio = None
        t = time.perf_counter()
        metrics, portfolio = pipeline(vbt, close, open_, fast_windows, slow_windows)
        walls.append(time.perf_counter() - t)
    peak = max_rss_mib()
    closed_trades = portfolio.trades.closed.count().to_numpy()  # for the comparison only
    del portfolio
    table = metrics.reset_index()
    table["closed_trades"] = closed_trades
    wall = statistics.median(walls)
    return {
        "side": "vectorbt", "fast_setup": fast_setup, "bars": bars, "combos": len(table), "repeat": repeat,
        "vectorbt": vbt.__version__, "import_s": import_s,
        "first_call_small_s": first_call_s, "second_call_small_s": second_call_s,
        "wall_s": walls, "wall_median_s": wall,
        "bar_combinations_per_s": bars * len(table) / wall,
        "rss_baseline_mib": baseline, "rss_baseline_current_mib": baseline_current,
        "rss_after_warmup_mib": after_warmup, "rss_peak_mib": peak,
        "rss_end_current_mib": current_rss_mib(),
        "ema_vs_pandas_max_abs": ema_diff, "ema_nan_pattern_equal": nan_pattern_equal,
        "open_trades_counted_small": closed_vs_all,
        "table": table_records(table),
    }


def worker_matched(bars: int, combos: int, repeat: int) -> dict:
    """Time the matched fused loop (benchmarks/matched_loop.py): the machine's limit."""
    import numba
    import numpy as np

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from matched_loop import matched_sweep

    fast, slow = (np.array(w, dtype=np.int64) for w in paired(make_grid(combos)))
    candles = make_candles(max(bars, 2))
    open_, close = candles["open"].to_numpy(), candles["close"].to_numpy()
    out = np.zeros((fast.shape[0], 4))
    matched_sweep(open_[:WARMUP_BARS], close[:WARMUP_BARS], fast, slow, FEE_BPS, CASH,
                  BARS_PER_YEAR, out)
    walls, cpus = [], []
    for _ in range(repeat):
        t, cpu = time.perf_counter(), time.process_time()
        matched_sweep(open_, close, fast, slow, FEE_BPS, CASH, BARS_PER_YEAR, out)
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - cpu)
    wall = statistics.median(walls)
    table = [{"fast": int(f), "slow": int(s), "final_equity": float(o[0]), "trades": int(o[1]),
              "sharpe": float(o[2])} for f, s, o in zip(fast, slow, out, strict=True)]
    return {"side": "matched", "bars": bars, "combos": len(table), "repeat": repeat,
            "threads": numba.config.NUMBA_NUM_THREADS, "wall_s": walls, "wall_median_s": wall,
            "cpu_s": cpus,
            "bar_combinations_per_s": bars * len(table) / wall, "rss_peak_mib": max_rss_mib(),
            "rss_baseline_mib": 0.0, "table": table}


def worker_cold(t0: float) -> dict:
    """Process start (``t0``, the parent's clock at launch) to the first backtest result."""
    entered = time.time()
    t = time.perf_counter()
    import pandas as pd

    from mmats.backtest import backtest

    import_s = time.perf_counter() - t
    t = time.perf_counter()
    candles = pd.read_parquet(ROOT / SAMPLE)
    read_s = time.perf_counter() - t
    t = time.perf_counter()
    result = backtest(STRATEGY, candles, {"fast": 10, "slow": 50}, fee_bps=FEE_BPS)
    backtest_s = time.perf_counter() - t
    done = time.time()
    return {
        "side": "cold", "to_first_result_s": done - t0, "interpreter_start_s": entered - t0,
        "import_s": import_s, "read_s": read_s, "backtest_s": backtest_s,
        "bars": len(candles), "final_equity": result.metrics["final_equity"],
        "rss_peak_mib": max_rss_mib(),
    }


# --------------------------------------------------------------------------- parent


def run_worker(args: list[str], env: dict[str, str] | None = None,
               timeout: float = 7200) -> dict:
    """Run this script as a worker subprocess and return its result dict."""
    command = [sys.executable, str(Path(__file__).resolve()), *args]
    load_before = os.getloadavg()[0]
    completed = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                               timeout=timeout)
    lines = [line for line in completed.stdout.splitlines()
             if line.startswith(RESULT_PREFIX)]
    if completed.returncode != 0 or not lines:
        raise RuntimeError(f"worker {' '.join(args)} failed (exit {completed.returncode}):\n"
                           f"{completed.stderr[-4000:]}")
    result = json.loads(lines[-1][len(RESULT_PREFIX):])
    result["load_average_1min"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    return result


def cache_env(root: Path, name: str) -> dict[str, str]:
    """The environment with MMATS and numba caches in fresh folders under ``root``."""
    env = dict(os.environ)
    env["MMATS_CACHE_DIR"] = str(root / name / "mmats")
    env["NUMBA_CACHE_DIR"] = str(root / name / "numba")
    return env


def relative_difference(ours: float, theirs: float) -> float:
    if ours == theirs:
        return 0.0
    return abs(ours - theirs) / abs(theirs) if theirs != 0 else math.inf


def compare(mmats: dict, vectorbt: dict) -> dict:
    """Largest differences between the two sides' per-combination metrics."""
    ours = {(r["fast"], r["slow"]): r for r in mmats["table"]}
    theirs = {(r["fast"], r["slow"]): r for r in vectorbt["table"]}
    keys = sorted(set(ours) & set(theirs))

    def rel(key, name):
        return relative_difference(ours[key][name], theirs[key][name])

    def worst(names):
        key = max(names, key=lambda k: rel(k, "final_equity"))
        return {"fast": key[0], "slow": key[1],
                "mmats_final_equity": ours[key]["final_equity"],
                "vectorbt_final_equity": theirs[key]["final_equity"]}

    out = {"combinations_compared": len(keys)}
    for name in ("final_equity", "total_return"):
        out[f"{name}_max_rel_diff"] = max(rel(k, name) for k in keys)
    for name in ("sharpe", "max_drawdown"):
        diffs = [abs(ours[k][name] - theirs[k][name]) for k in keys
                 if ours[k][name] is not None and theirs[k][name] is not None]
        out[f"{name}_max_abs_diff"] = max(diffs) if diffs else math.nan
    out["final_equity_within_1e-9"] = sum(rel(k, "final_equity") <= 1e-9 for k in keys)
    out["trades_equal_all"] = sum(ours[k]["trades"] == theirs[k]["trades"] for k in keys)
    out["trades_equal_closed"] = sum(ours[k]["trades"] == theirs[k]["closed_trades"]
                                     for k in keys)
    out["worst"] = worst(keys)
    # Below about a millionth of the starting cash vectorbt's absolute float tolerance
    # (1e-12 in vectorbt.utils.math_) starts rounding cash and fees away, so the
    # combinations that kept more are compared apart.
    solvent = [k for k in keys if theirs[k]["final_equity"] >= SOLVENT_EQUITY]
    out["solvent_combinations"] = len(solvent)
    if solvent:
        out["solvent_final_equity_max_rel_diff"] = max(rel(k, "final_equity") for k in solvent)
        out["solvent_sharpe_max_abs_diff"] = max(
            (abs(ours[k]["sharpe"] - theirs[k]["sharpe"]) for k in solvent
             if ours[k]["sharpe"] is not None and theirs[k]["sharpe"] is not None),
            default=math.nan)
        out["solvent_trades_equal_closed"] = sum(
            ours[k]["trades"] == theirs[k]["closed_trades"] for k in solvent)
        out["solvent_worst"] = worst(solvent)
    return out


def benchmark(options) -> dict:
    sizes = [10_000] if options.quick else [int(s) for s in options.sizes.split(",") if s]
    scaling = [] if options.quick or not options.scaling_combos else [
        int(c) for c in options.scaling_combos.split(",") if int(c) != options.combos]
    combos = str(options.combos)
    figures: dict = {"date": time.strftime("%Y-%m-%d"), "cores": os.cpu_count(),
                     "python": sys.version.split()[0], "sizes": sizes,
                     "combos": options.combos, "sources_at_start": source_state(),
                     "compile": {}, "sweep": {}, "scaling": {}}
    scratch = Path(tempfile.mkdtemp(prefix="mmats-bench-"))
    try:
        # Each side's caches start empty: a warm-up-only worker compiles (the cold compile
        # figure) so that the measured workers load from a warm disk cache and the memory
        # the compiler used does not count in their peak.
        envs = {"mmats": cache_env(scratch, "sweep-mmats"),
                "vectorbt": cache_env(scratch, "sweep-vectorbt")}
        envs["matched"] = envs["mmats"]
        envs["vectorbt-fast"] = envs["vectorbt"]
        sides = ["mmats", "matched"] + ([] if options.skip_vectorbt
                                        else ["vectorbt", "vectorbt-fast"])
        for side in ("mmats", "vectorbt")[:1 if options.skip_vectorbt else 2]:
            log(f"{side}: compiling with empty caches (warm-up on {WARMUP_BARS:,} bars)")
            figures["compile"][side] = run_worker(
                ["--worker", side, "--bars", "0", "--combos", combos], envs[side])
        for size in sizes:
            row = {}
            for side in sides:
                repeat = options.repeat or (1 if side.startswith("vectorbt")
                                            and size >= 1_000_000 else 3)
                log(f"{side}: {size:,} bars x {combos} combinations, {repeat} run(s)"
                    + (" (minutes, ~13 GiB)" if side.startswith("vectorbt")
                       and size >= 1_000_000
                       else ""))
                row[side] = run_worker(["--worker", side, "--bars", str(size), "--combos",
                                        combos, "--repeat", str(repeat)], envs[side])
            row["of_matched"] = (row["mmats"]["bar_combinations_per_s"]
                                 / row["matched"]["bar_combinations_per_s"])
            row["matched_final_equity_max_rel_diff"] = max(
                relative_difference(m["final_equity"], x["final_equity"])
                for m, x in zip(row["mmats"]["table"], row["matched"]["table"], strict=True))
            if "vectorbt-fast" in row:
                row["speedup_fast_setup"] = (row["mmats"]["bar_combinations_per_s"]
                                             / row["vectorbt-fast"]["bar_combinations_per_s"])
                row["agreement_fast_setup"] = compare(row["mmats"], row["vectorbt-fast"])
            if "vectorbt" in row:
                row["agreement"] = compare(row["mmats"], row["vectorbt"])
                row["speedup"] = (row["mmats"]["bar_combinations_per_s"]
                                  / row["vectorbt"]["bar_combinations_per_s"])
                row["memory_ratio"] = (row["vectorbt"]["rss_peak_mib"]
                                       / row["mmats"]["rss_peak_mib"])
            figures["sweep"][str(size)] = row
            save(figures, options.output)
        for count in scaling:
            size = max(sizes)
            log(f"mmats memory scaling: {size:,} bars x {count} combinations")
            figures["scaling"][str(count)] = run_worker(
                ["--worker", "mmats", "--bars", str(size), "--combos", str(count),
                 "--repeat", "1"], envs["mmats"])
        if scaling:
            figures["scaling"][combos] = figures["sweep"][str(max(sizes))]["mmats"]
        save(figures, options.output)
        if not options.skip_cold_start:
            figures["cold_start"] = cold_start(scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    figures["sources_at_end"] = source_state()
    save(figures, options.output)
    return figures


def save(figures: dict, path: str | None) -> None:
    """Write the figures so far, so a failure late in a long run loses nothing."""
    if path:
        Path(path).write_text(to_json(figures, indent=1))


def to_json(figures: dict, indent: int | None = None) -> str:
    """Strict JSON: NaN becomes null and an infinite difference the string "inf"."""

    def clean(value):
        if isinstance(value, float) and not math.isfinite(value):
            return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [clean(v) for v in value]
        return value

    return json.dumps(clean(figures), indent=indent, allow_nan=False)


def cold_start(scratch: Path) -> dict:
    env = cache_env(scratch, "cold-start")
    out = {}
    for label in ("cold", "warm"):
        log(f"cold start: backtest() on {SAMPLE}, {label} caches")
        out[label] = run_worker(["--worker", "cold", "--t0", repr(time.time())], env)
    script = ROOT / "scripts" / "backtest.py"
    if not script.is_file():
        out["script"] = {"skipped": "scripts/backtest.py does not exist yet"}
        return out
    command = [sys.executable, str(script), "--strategy", STRATEGY, "--data", SAMPLE,
               "--params", "fast=10,slow=50", "--json"]
    runs = []
    for _ in range(3):  # the first may still compile what the script needs beyond backtest()
        t = time.perf_counter()
        completed = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                                   timeout=600)
        runs.append(time.perf_counter() - t)
        if completed.returncode != 0:
            out["script"] = {"failed": f"exit {completed.returncode}",
                             "stderr": completed.stderr[-2000:], "seconds": runs}
            return out
    out["script"] = {"seconds": runs, "warm_s": statistics.median(runs[1:]),
                     "stdout_head": completed.stdout[:300]}
    return out


# --------------------------------------------------------------------------- report


def _e(value) -> str:
    """A difference in scientific notation ("inf" and None come from JSON as they are)."""
    return f"{value:.2e}" if isinstance(value, int | float) else str(value)


def _mib(value: float) -> str:
    return f"{value:,.0f} MiB"


def _rate(value: float) -> str:
    return f"{value / 1e6:,.1f} M/s"


def report(figures: dict) -> str:
    lines = [f"MMATS sweep benchmark, {figures['date']}, {figures['cores']} cores, "
             f"Python {figures['python']}, strategy {STRATEGY}, fee {FEE_BPS:g} bps"]
    begin = figures["sources_at_start"]
    end = figures.get("sources_at_end", begin)
    lines.append(f"MMATS sources {begin['sources_sha256']} (HEAD {begin.get('head')}, "
                 f"{begin.get('uncommitted_files')} uncommitted file(s) under mmats/)"
                 + ("" if begin["sources_sha256"] == end["sources_sha256"]
                    else f"; CHANGED during the run to {end['sources_sha256']}"))
    lines.append("")
    for side, c in figures["compile"].items():
        lines.append(f"{side} cold compile (empty caches), first sweep of {WARMUP_BARS:,} bars x "
                     f"{figures['combos']}: {c['first_call_small_s']:.2f} s (second call "
                     f"{c['second_call_small_s']:.3f} s; import {c['import_s']:.2f} s)")
    lines.append("")
    for size, row in figures["sweep"].items():
        m = row["mmats"]
        lines.append(f"== {int(size):,} bars x {m['combos']} combinations "
                     f"({m['threads']} numba threads)")
        loads = {side: row[side]["load_average_1min"] for side in
                 ("mmats", "matched", "vectorbt", "vectorbt-fast") if side in row}
        lines.append(f"  1-min load average before/after each worker: {loads}")
        if "matched" in row:
            x = row["matched"]
            lines.append(f"  matched fused loop (benchmarks/matched_loop.py): "
                         f"{_rate(x['bar_combinations_per_s'])}, median of {x['repeat']}; "
                         f"final equity vs MMATS max rel diff "
                         f"{_e(row['matched_final_equity_max_rel_diff'])}")
            lines.append(f"  ratio MMATS / matched loop: {row['of_matched']:.2f}")
            if "cpu_s" in m and "cpu_s" in x:  # CPU seconds of all threads: less load-bound
                by_cpu = statistics.median(x["cpu_s"]) / statistics.median(m["cpu_s"])
                lines.append(f"  the same ratio by CPU time (median CPU seconds of all "
                             f"threads, matched / MMATS): {by_cpu:.2f}")
        lines.append(f"  MMATS sweep() wall, median of {m['repeat']}: "
                     f"{m['wall_median_s']:.3f} s  (runs {', '.join(f'{w:.3f}' for w in m['wall_s'])})")
        lines.append(f"  MMATS result.seconds (kernel), median:  {m['kernel_median_s']:.3f} s")
        lines.append(f"  MMATS bar-combinations/s, end to end:   "
                     f"{_rate(m['bar_combinations_per_s'])}  (kernel only "
                     f"{_rate(m['kernel_bar_combinations_per_s'])})")
        lines.append(f"  MMATS first call on {WARMUP_BARS:,} bars: {m['first_call_small_s']:.2f} s"
                     f" (warm disk cache), second {m['second_call_small_s']:.3f} s")
        lines.append(f"  MMATS peak RSS: {_mib(m['rss_peak_mib'])}  (baseline after imports + "
                     f"data {_mib(m['rss_baseline_mib'])}, +{_mib(m['rss_peak_mib'] - m['rss_baseline_mib'])})")
        if "vectorbt" in row:
            v = row["vectorbt"]
            a = row["agreement"]
            lines.append(f"  vectorbt {v['vectorbt']} wall, median of {v['repeat']}: "
                         f"{v['wall_median_s']:.2f} s  (runs {', '.join(f'{w:.2f}' for w in v['wall_s'])})")
            lines.append(f"  vectorbt bar-combinations/s, end to end: {_rate(v['bar_combinations_per_s'])}")
            lines.append(f"  vectorbt first call on {WARMUP_BARS:,} bars: {v['first_call_small_s']:.2f} s"
                         f" (warm disk cache), second {v['second_call_small_s']:.2f} s")
            lines.append(f"  vectorbt peak RSS: {_mib(v['rss_peak_mib'])}  (baseline "
                         f"{_mib(v['rss_baseline_mib'])}, +{_mib(v['rss_peak_mib'] - v['rss_baseline_mib'])})")
            if "vectorbt-fast" in row:
                f = row["vectorbt-fast"]
                lines.append(f"  vectorbt fastest set-up (plain index, vectorbt.returns.nb "
                             f"metrics): {_rate(f['bar_combinations_per_s'])}, median of "
                             f"{f['repeat']}; ratio MMATS / it: "
                             f"{row['speedup_fast_setup']:.1f}x; final equity max rel diff "
                             f"{_e(row['agreement_fast_setup']['final_equity_max_rel_diff'])}")
            lines.append(f"  speed MMATS / vectorbt (as set up by a user): {row['speedup']:.1f}x   "
                         f"peak memory vectorbt / MMATS: {row['memory_ratio']:.1f}x")
            lines.append(f"  agreement over {a['combinations_compared']} combinations: final equity "
                         f"max rel diff {_e(a['final_equity_max_rel_diff'])}, total return "
                         f"{_e(a['total_return_max_rel_diff'])}, sharpe max abs diff "
                         f"{_e(a['sharpe_max_abs_diff'])}, max drawdown {_e(a['max_drawdown_max_abs_diff'])}")
            lines.append(f"  final equity within 1e-9 relative: {a['final_equity_within_1e-9']}/"
                         f"{a['combinations_compared']}; worst {a['worst']}")
            if a["solvent_combinations"]:
                lines.append(f"  over the {a['solvent_combinations']} combinations that kept >= "
                             f"{SOLVENT_EQUITY:g} of {CASH:,.0f}: final equity max rel diff "
                             f"{_e(a['solvent_final_equity_max_rel_diff'])}, sharpe max abs diff "
                             f"{_e(a['solvent_sharpe_max_abs_diff'])}, closed trades equal "
                             f"{a['solvent_trades_equal_closed']}/{a['solvent_combinations']}")
            lines.append(f"  trades equal: {a['trades_equal_all']}/{a['combinations_compared']} vs "
                         f"vectorbt trades.count(), {a['trades_equal_closed']}/"
                         f"{a['combinations_compared']} vs trades.closed.count()")
            lines.append(f"  EMA vs pandas ewm(adjust=False, min_periods=span), max abs diff: "
                         f"MMATS {m['ema_vs_pandas_max_abs']:.1e}, vectorbt MA(ewm=True) "
                         f"{v['ema_vs_pandas_max_abs']:.1e} (NaN warm-up equal: {v['ema_nan_pattern_equal']})")
        lines.append("")
    if figures["scaling"]:
        lines.append("== MMATS peak memory vs number of combinations")
        for combos, m in sorted(figures["scaling"].items(), key=lambda kv: int(kv[0])):
            lines.append(f"  {m['bars']:,} bars x {int(combos):>5} combinations: peak "
                         f"{_mib(m['rss_peak_mib'])} (+{_mib(m['rss_peak_mib'] - m['rss_baseline_mib'])}"
                         f" over baseline), {_rate(m['bar_combinations_per_s'])}")
        lines.append("")
    if "cold_start" in figures:
        c = figures["cold_start"]
        lines.append(f"== Cold start: process start to first backtest() result on {SAMPLE}")
        for label in ("cold", "warm"):
            r = c[label]
            lines.append(f"  {label} caches: {r['to_first_result_s']:.2f} s  (interpreter "
                         f"{r['interpreter_start_s']:.2f}, imports {r['import_s']:.2f}, read "
                         f"{r['read_s']:.2f}, backtest() {r['backtest_s']:.2f})")
        s = c["script"]
        if "warm_s" in s:
            lines.append(f"  scripts/backtest.py --json, warm: {s['warm_s']:.2f} s  "
                         f"(runs {', '.join(f'{x:.2f}' for x in s['seconds'])})")
        else:
            lines.append(f"  scripts/backtest.py: {s.get('skipped') or s.get('failed')}")
        lines.append("")
    lines += targets(figures)
    return "\n".join(lines)


def targets(figures: dict) -> list[str]:
    """The issue's targets, met or not, from whatever was measured."""
    lines = ["== Targets"]
    for size, row in figures["sweep"].items():
        if "of_matched" in row:
            lines.append(f"  MMATS >= 50 % of the matched fused loop at {int(size):,} bars: "
                         f"{100 * row['of_matched']:.0f} % -> "
                         f"{'met' if row['of_matched'] >= 0.5 else 'NOT met'}")
    sizes = [s for s, row in figures["sweep"].items() if "vectorbt" in row]
    for size in sizes:
        row = figures["sweep"][size]
        lines.append(f"  speed >= 50x vectorbt at {int(size):,} bars: {row['speedup']:.1f}x "
                     f"-> {'met' if row['speedup'] >= 50 else 'NOT met'}")
        verdict = "met" if row["memory_ratio"] >= 10 else "NOT met"
        if int(size) != 1_000_000 or figures["combos"] != 100:
            verdict = "(the target is at 1,000,000 x 100; for context)"
        lines.append(f"  peak memory <= 1/10 of vectorbt at {int(size):,} bars: 1/"
                     f"{row['memory_ratio']:.1f} -> {verdict}")
    if "cold_start" in figures:
        cold = figures["cold_start"]["cold"]["to_first_result_s"]
        lines.append(f"  cold start to first result <= 5 s: {cold:.2f} s -> "
                     f"{'met' if cold <= 5 else 'NOT met'}")
        script = figures["cold_start"]["script"]
        if "warm_s" in script:
            lines.append(f"  warm scripts/backtest.py <= 2 s: {script['warm_s']:.2f} s -> "
                         f"{'met' if script['warm_s'] <= 2 else 'NOT met'}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Benchmark MMATS sweep() against vectorbt (speed, memory, agreement) "
                    "and MMATS cold start. Prints figures; asserts nothing.")
    parser.add_argument("--sizes", default="100000,1000000",
                        help="comma-separated bar counts (default: 100000,1000000)")
    parser.add_argument("--combos", type=int, default=100,
                        help="parameter combinations per sweep, all valid (default: 100)")
    parser.add_argument("--repeat", type=int, default=None,
                        help="runs per measurement, the median is reported (default: 3, "
                             "but 1 for vectorbt at >= 1M bars)")
    parser.add_argument("--skip-vectorbt", action="store_true", help="MMATS only")
    parser.add_argument("--skip-cold-start", action="store_true",
                        help="skip the cold/warm start measurements")
    parser.add_argument("--scaling-combos", default="10,1000",
                        help="other combination counts for the MMATS memory-scaling check at "
                             "the largest size ('' to skip; default: 10,1000)")
    parser.add_argument("--quick", action="store_true",
                        help="10k bars only, no memory scaling: a smoke test")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object with every figure instead of the table")
    parser.add_argument("--output", metavar="FILE",
                        help="also write the JSON figures to FILE, updated after each step")
    parser.add_argument("--report", metavar="FILE",
                        help="print the table of a JSON file saved from --json, run nothing")
    parser.add_argument("--worker", choices=("mmats", "matched", "vectorbt",
                                             "vectorbt-fast", "cold"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--bars", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--t0", type=float, help=argparse.SUPPRESS)
    options = parser.parse_args(argv)

    if options.worker == "cold":
        emit(worker_cold(options.t0))
        return 0
    if options.worker == "vectorbt-fast":
        emit(worker_vectorbt(options.bars, options.combos, options.repeat or 1, True))
        return 0
    if options.worker:
        work = {"mmats": worker_mmats, "matched": worker_matched,
                "vectorbt": worker_vectorbt}[options.worker]
        emit(work(options.bars, options.combos, options.repeat or 1))
        return 0

    if options.report:
        print(report(json.loads(Path(options.report).read_text())))
        return 0
    figures = benchmark(options)
    if options.json:
        print(to_json(figures))
    else:
        print(report(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
