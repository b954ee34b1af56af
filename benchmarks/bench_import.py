"""Candle import and resampling at scale: the production path against pandas and polars alone.

polars was a dependency, used for CSVs of 64 MiB or more; this benchmark found it no faster
(0.95x in one quiet run, 0.93x in the median of three), so MMATS dropped it. It stays here
as a peer, measured when installed (it is in the ``dev`` extra), so that anyone can check
the decision again on their machine.

Measures what ``mmats import FILE --data fx:EUR/USD:1m --resample-to 1h`` does to a large
file, step by step, each variant in a fresh child process (so its peak RSS, VmHWM, is its
own):

- **import**: sniff the layout, read the CSV, validate it as the importer does
  (``validate_candles``: schema, OHLC, grid, duplicates), write it to the candle store
  (which validates again, merges and writes zstd Parquet). The read is ``pandas`` (the
  path before polars: ``pd.read_csv``, then one ISO-8601 parse of the ts column),
  ``polars`` (polars alone: typed ``read_csv`` and ``strptime``, none of the checks that
  keep the frame the one pandas gives) or ``mmats`` (:func:`mmats.data.io.read_raw_candles`
  today: the pandas read);
- **resample**: read the stored 1-minute Parquet into arrays (DuckDB ``before``, pyarrow,
  polars, or ``mmats``: :func:`mmats.data.io.read_parquet_arrays`, what ``mmats import
  --resample-to`` runs), aggregate it to 1h (numpy ``reduceat``), write the 1h file.

Every variant's stored files are compared byte for byte with the reference's (``pandas``,
``before``). Figures are rows per second of input and peak RSS, median of ``--repeat``
runs, with the 1-minute load average before and after each run. Nothing is asserted; for
each step the last lines say whether polars wins there (>= 1.3x the speed, or <= 1/1.3 of
the memory, of the best path without it), whether MMATS uses it, and "met" when polars is
used exactly where it wins (and, where it is used, MMATS's path itself wins by as much).
Without polars installed its variants are skipped and the lines say so.

    .venv/bin/python benchmarks/bench_import.py                 # 10M rows, 3 runs (~10 min)
    .venv/bin/python benchmarks/bench_import.py --rows 1000000 --repeat 1   # a smoke test
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
TARGET_RATIO = 1.3
VENUE, SYMBOL, SOURCE_TF, TARGET_TF = "fx", "EUR/USD", "1m", "1h"
MINUTE_NS = 60_000_000_000


# -- data -----------------------------------------------------------------------------------


def make_csv(path: Path, rows: int, seed: int = 7) -> None:
    """Seeded 1-minute candles, 24/7 from 2005, as ``ts,open,high,low,close,volume`` with
    ``YYYY-MM-DD HH:MM:SS`` times and 5-decimal prices (a typical vendor export)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    rng = np.random.default_rng(seed)
    start = np.datetime64("2005-01-01T00:00", "s").astype(np.int64)
    ts = (start + np.arange(rows, dtype=np.int64) * 60).astype("M8[s]")
    close = np.round(1.2 * np.exp(np.cumsum(rng.normal(0, 0.0005, rows))), 5)
    open_ = np.r_[1.2, close[:-1]]
    high = np.round(np.maximum(open_, close) * (1 + np.abs(rng.normal(0, 2e-4, rows))), 5)
    low = np.round(np.minimum(open_, close) * (1 - np.abs(rng.normal(0, 2e-4, rows))), 5)
    high, low = np.maximum(high, np.maximum(open_, close)), np.minimum(low, np.minimum(open_, close))
    volume = np.round(rng.lognormal(3, 1, rows), 2)
    table = pa.table({"ts": pa.array(ts).cast(pa.string()), "open": open_, "high": high,
                      "low": low, "close": close, "volume": volume})
    partial = path.with_suffix(".partial")
    pacsv.write_csv(table, partial, pacsv.WriteOptions(quoting_style="none"))
    partial.rename(path)


# -- the variants, each run in a child process -------------------------------------------------

# step -> variant -> what it is; the first is the reference whose stored bytes all must match.
VARIANTS = {
    "import": {
        "pandas": "pandas read_csv + ISO-8601 parse up front (read_raw_candles before polars)",
        "polars": "polars read_csv + strptime alone, without the checks (not used as such)",
        "mmats": "read_raw_candles today: pandas (MMATS does not use polars)",
    },
    "resample": {
        "before": "CandleStore.read (DuckDB) -> frame -> resample()",
        "pyarrow": "pyarrow read_table -> arrays -> resample_arrays()",
        "polars": "polars read_parquet -> arrays -> resample_arrays()",
        "mmats": "read_parquet_arrays -> resample_arrays() (mmats import --resample-to today)",
    },
}
# Whether the production path of each step reads with polars (neither does: it is not a
# dependency), and the variants without it.
USES_POLARS = {"import": False, "resample": False}
NO_POLARS = {"import": ("pandas",), "resample": ("before", "pyarrow")}
HAVE_POLARS = importlib.util.find_spec("polars") is not None


def run_import(variant: str, csv: Path, root: Path) -> dict:
    """The importer's steps for one plain candle file (mmats/cli/import_data.py ->
    read_forex_file -> read_candle_file -> CandleStore.write), timed one by one."""
    from mmats.data.forex_formats import detect_format
    from mmats.data.io import read_raw_candles
    from mmats.data.schema import validate_candles
    from mmats.data.store import CandleStore

    times = {}
    cpu = _cpu_s()
    start = time.perf_counter()
    assert detect_format(csv) == "mmats"
    if variant == "mmats":
        raw = read_raw_candles(csv)
    elif variant == "pandas":
        raw = _read_csv_pandas(csv)
    else:
        raw = _read_csv_polars(csv)
    times["read_s"] = time.perf_counter() - start
    mark = time.perf_counter()
    clean, _ = validate_candles(raw, source=str(csv), timeframe=SOURCE_TF, strict=True)
    del raw
    times["validate_s"] = time.perf_counter() - mark
    mark = time.perf_counter()
    CandleStore(root).write(VENUE, SYMBOL, SOURCE_TF, clean, source=str(csv))
    times["write_s"] = time.perf_counter() - mark
    times["total_s"] = time.perf_counter() - start
    times["cpu_s"] = _cpu_s() - cpu
    times["rows"] = len(clean)
    return times


def _cpu_s() -> float:
    """CPU seconds this process has used (user + system, every thread): on a loaded machine
    a steadier measure of the work done than the wall clock."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _read_csv_pandas(csv: Path):
    """read_raw_candles as it was before it read with polars: pandas read_csv, then the ts
    texts parsed as ISO-8601 up front when they all are."""
    import pandas as pd

    from mmats.data.io import _map_columns, _parse_iso_ts

    frame, _ = _map_columns(pd.read_csv(csv, skipinitialspace=True), str(csv))
    frame["ts"] = _parse_iso_ts(frame["ts"])
    return frame


def _read_csv_polars(csv: Path):
    """The best polars reading of the benchmark's clean file: typed columns, the ts texts
    parsed by polars (to microseconds: polars wraps dates past 2262 parsed straight to ns)."""
    import pandas as pd
    import polars as pl

    names = ("open", "high", "low", "close", "volume")
    table = pl.read_csv(csv, schema_overrides={"ts": pl.String, **dict.fromkeys(names, pl.Float64)})
    us = table["ts"].str.strptime(pl.Datetime("us"), "%Y-%m-%d %H:%M:%S",
                                  cache=False).to_physical().to_numpy()
    frame = pd.DataFrame({"ts": (us * 1000).view("M8[ns]"), **{c: table[c].to_numpy() for c in names}})
    return frame


def run_resample(variant: str, source_root: Path, root: Path) -> dict:
    """``--resample-to 1h`` of the stored 1-minute series: read, aggregate, store."""
    from mmats.data import CandleStore, resample
    from mmats.data.io import read_parquet_arrays
    from mmats.data.resample import resample_arrays
    from mmats.data.schema import candles_from_arrays

    readers = {"mmats": read_parquet_arrays, "pyarrow": _pyarrow_arrays,
               "polars": _polars_arrays}
    times = {}
    source = CandleStore(source_root)
    path = source.path(VENUE, SYMBOL, SOURCE_TF)
    cpu = _cpu_s()
    start = time.perf_counter()
    if variant == "before":
        full = source.read(VENUE, SYMBOL, SOURCE_TF)
        rows = len(full)
    else:
        full = readers[variant](path)
        rows = full["ts"].size
    times["read_s"] = time.perf_counter() - start
    mark = time.perf_counter()
    if variant == "before":
        bars = resample(full, TARGET_TF)
    else:
        bars = candles_from_arrays(*resample_arrays(full["ts"], full, TARGET_TF, SOURCE_TF))
    del full
    times["aggregate_s"] = time.perf_counter() - mark
    mark = time.perf_counter()
    CandleStore(root).write(VENUE, SYMBOL, TARGET_TF, bars, source=f"resampled from {SOURCE_TF}")
    times["write_s"] = time.perf_counter() - mark
    times["total_s"] = time.perf_counter() - start
    times["cpu_s"] = _cpu_s() - cpu
    times["rows"] = rows
    return times


def _pyarrow_arrays(path) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    arrays = {"ts": table.column("ts").cast(pa.timestamp("ns", tz="UTC")).cast(pa.int64()).to_numpy()}
    arrays.update({c: table.column(c).to_numpy() for c in ("open", "high", "low", "close", "volume")})
    return arrays


def _polars_arrays(path) -> dict:
    """The stored file as arrays, read with polars (what read_parquet_arrays did before)."""
    import polars as pl

    table = pl.read_parquet(path, columns=["ts", "open", "high", "low", "close", "volume"])
    arrays = {"ts": table["ts"].dt.epoch("ns").to_numpy()}
    arrays.update({c: table[c].to_numpy() for c in ("open", "high", "low", "close", "volume")})
    return arrays


def child(args) -> None:
    # Before anything else: the parent's figures must not leak in (a fresh process).
    if args.child == "import":
        figures = run_import(args.variant, Path(args.csv), Path(args.root))
    else:
        figures = run_resample(args.variant, Path(args.source_root), Path(args.root))
    figures["peak_rss_mib"] = _vm_hwm_mib()
    print(json.dumps(figures))


def _vm_hwm_mib() -> float:
    """This process's own peak resident set (VmHWM), in MiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- the parent -----------------------------------------------------------------------------


def spawn(step: str, variant: str, **paths) -> dict:
    command = [sys.executable, __file__, "--child", step, "--variant", variant]
    for key, value in paths.items():
        command += [f"--{key.replace('_', '-')}", str(value)]
    load_before = os.getloadavg()[0]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    if done.returncode:
        sys.exit(f"{step}/{variant} failed:\n{done.stderr}")
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    figures.update(load_before=load_before, load_after=os.getloadavg()[0])
    return figures


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def summarise(runs: list[dict]) -> dict:
    """Medians (each figure on its own, so the stages need not add up to the total)."""
    keys = [k for k in runs[0] if (k.endswith("_s") or k == "peak_rss_mib")
            and not k.startswith("load")]
    out = {k: statistics.median(r[k] for r in runs) for k in keys}
    out["rows"] = runs[0]["rows"]
    out["rows_per_s"] = out["rows"] / out["total_s"]
    out["load"] = [(round(r["load_before"], 2), round(r["load_after"], 2)) for r in runs]
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workdir", default="/tmp/mmats_bench_import",
                        help="where the CSV and the stores go (never the repository)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    parser.add_argument("--step", choices=tuple(VARIANTS), action="append",
                        help="measure only this step (repeatable; default: both; resample "
                             "reads the file a previous import run stored in --workdir)")
    parser.add_argument("--child", choices=tuple(VARIANTS), help=argparse.SUPPRESS)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--csv", help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    parser.add_argument("--source-root", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args)
        return 0

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    csv = work / f"candles_{args.rows}.csv"
    if not csv.exists():
        print(f"writing {args.rows:,} rows to {csv} ...", flush=True)
        make_csv(csv, args.rows)
    print(f"input: {csv} ({csv.stat().st_size / 2**20:.0f} MiB, {args.rows:,} 1m bars); "
          f"{os.cpu_count()} CPUs; 1-minute load now {os.getloadavg()[0]:.2f}", flush=True)

    results: dict[str, dict[str, list]] = {step: {} for step in (args.step or VARIANTS)}
    stored: dict[str, dict[str, str]] = {step: {} for step in VARIANTS}
    stored_name = {"import": f"EUR_USD_{SOURCE_TF}.parquet", "resample": f"EUR_USD_{TARGET_TF}.parquet"}
    steps = args.step or list(VARIANTS)
    for run in range(args.repeat):
        # Every variant finds the files in the page cache: the first one read must not pay
        # the disk for all (the 10M-row CSV is 546 MiB; a benchmark before may evict it).
        _read_through(csv, *sorted((work / "import_pandas").rglob("*.parquet")))
        for step, variants in ((step, VARIANTS[step]) for step in steps):
            for variant in variants:  # alternated, so drifting load hits every variant alike
                if variant == "polars" and not HAVE_POLARS:
                    continue
                root = work / f"{step}_{variant}"
                shutil.rmtree(root, ignore_errors=True)
                paths = ({"csv": csv, "root": root} if step == "import"
                         else {"source_root": work / "import_pandas", "root": root})
                figures = spawn(step, variant, **paths)
                results[step].setdefault(variant, []).append(figures)
                stored[step][variant] = sha256(root / VENUE / stored_name[step])
                print(f"  {step:<8} {variant:<15} run {run + 1}: {figures['total_s']:6.2f} s, "
                      f"peak {figures['peak_rss_mib']:5.0f} MiB, load "
                      f"{figures['load_before']:.2f} -> {figures['load_after']:.2f}", flush=True)

    report = {step: {variant: summarise(runs) for variant, runs in by.items()}
              for step, by in results.items()}
    print_report(report, stored, args)
    if args.json:
        print(json.dumps({"figures": report, "stored_sha256": stored}, indent=2))
    return 0


def _read_through(*paths: Path) -> None:
    """Read ``paths`` once, so the page cache holds them."""
    for path in paths:
        with open(path, "rb") as handle:
            while handle.read(1 << 24):
                pass


def print_report(report: dict, stored: dict, args) -> None:
    print(f"\nmedian of {args.repeat} run(s), each in a fresh process; rows/s = input rows / "
          "total s; peak = the child's own VmHWM; x = reference / variant")
    verdicts = []
    for step, figures in report.items():
        variants = VARIANTS[step]
        reference_name = next(iter(variants))
        reference = figures[reference_name]
        stages = [k for k in reference if k.endswith("_s")
                  and k not in ("total_s", "cpu_s", "rows_per_s")]
        print(f"\n{step} ({reference['rows']:,} rows; reference: {reference_name})")
        print(f"  {'variant':<10}" + "".join(f"{k:>12}" for k in stages)
              + f"{'total_s':>10}{'x':>7}{'cpu_s':>8}{'x':>7}{'rows/s':>12}{'peak MiB':>10}"
              f"{'x':>7}  same bytes")
        for variant in (v for v in variants if v in figures):
            row = figures[variant]
            same = "yes" if stored[step][variant] == stored[step][reference_name] else "NO"
            print(f"  {variant:<10}" + "".join(f"{row[k]:>12.2f}" for k in stages)
                  + f"{row['total_s']:>10.2f}{reference['total_s'] / row['total_s']:>7.2f}"
                  f"{row['cpu_s']:>8.2f}{reference['cpu_s'] / row['cpu_s']:>7.2f}"
                  f"{row['rows_per_s']:>12,.0f}{row['peak_rss_mib']:>10,.0f}"
                  f"{reference['peak_rss_mib'] / row['peak_rss_mib']:>7.2f}  {same}")
        for variant, what in ((v, w) for v, w in variants.items() if v in figures):
            print(f"    {variant}: {what}; load (1-min, before -> after each run) "
                  f"{figures[variant]['load']}")
        verdicts.append(_verdict(step, figures))
    print()
    for line, _ in verdicts:
        print(line)
    if verdicts:
        print(f"polars used where it wins: {'met' if all(m for _, m in verdicts) else 'not met'}")


def _verdict(step: str, figures: dict) -> tuple[str, bool]:
    """One line on whether polars wins in ``step`` and whether MMATS uses it, and whether
    that is as it should be: used where it wins (and MMATS's path then wins as much too),
    not used where it does not."""
    if "polars" not in figures:
        return (f"{step}: polars is not installed here, not measured (pip install polars to "
                "compare); MMATS does not use it", True)
    # MMATS's own path is one without polars when it does not use it
    without = NO_POLARS[step] + (() if USES_POLARS[step] else ("mmats",))
    best_name = min(without, key=lambda v: figures[v]["total_s"])
    best = figures[best_name]

    def gain(name):
        return (best["total_s"] / figures[name]["total_s"],
                best["peak_rss_mib"] / figures[name]["peak_rss_mib"],
                best["cpu_s"] / figures[name]["cpu_s"])

    speed, memory, cpu = gain("polars")
    wins = speed >= TARGET_RATIO or memory >= TARGET_RATIO
    uses = USES_POLARS[step]
    own_speed, own_memory, own_cpu = gain("mmats")
    met = (own_speed >= TARGET_RATIO or own_memory >= TARGET_RATIO) if uses else not wins
    return (f"{step}: polars alone against the best path without it ({best_name}): "
            f"{speed:.2f}x speed, {memory:.2f}x less memory ({cpu:.2f}x less CPU time) -> "
            f"{'wins' if wins else 'no win'} (target >= {TARGET_RATIO}x speed or memory); "
            f"MMATS {'uses' if uses else 'does not use'} polars here (its path: "
            f"{own_speed:.2f}x speed, {own_memory:.2f}x less memory, {own_cpu:.2f}x less CPU "
            f"time): {'met' if met else 'not met'}"), met


if __name__ == "__main__":
    sys.exit(main())
