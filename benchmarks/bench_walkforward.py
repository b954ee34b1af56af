"""Benchmark the default walk-forward (``scripts/walkforward.py``, the README's main job).
Prints figures, each with its target, the 1-minute load average before and after, and
"met" / "not met"; never asserts timings.

Every run is a fresh process of the script with its default options (ema_cross on the
bundled ETH/BTC 5-minute sample, writing the tearsheet, the HTML report and its PDF)
except ``--reports``, a temporary folder, and ``--timings``, which makes it print the
seconds it spent on the research and on the reports. A warm-up run comes first, so
numba's cache, the research cache and the cache of rendered report parts are warm, as
they are for anyone running the command a second time on the same data, options and
code (the research is deterministic; :func:`mmats.validate.research.cached_research`).

1. **Warm default run** (the target): wall time from process start to exit, median of
   ``--runs``, split into research, reports and the rest (interpreter start-up and the
   first imports); CPU seconds (user + system, the workers included) beside it, the
   steadier figure on a shared machine. Target <= 3 s. The PDF is written by a process
   forked at start-up (:mod:`mmats.reports.pdf_worker`), which imports matplotlib while
   the research is read, then forks a helper: the two draw half the pages each, joined
   into one file. With its charts and tearsheet cached, the command's own process never
   imports matplotlib.
2. **Computed and drawn afresh** (``--no-cache``): the research computed again and every
   chart and the tearsheet drawn again, as for new data, options or code; the tearsheet
   is drawn in a worker process beside the charts, the PDF in another. Informative, no
   target.
3. **Import costs**: fresh processes importing matplotlib (figure and PDF backend) and
   quantstats, the cold imports inside the timed path (quantstats only when a tearsheet
   must be drawn, in the worker).

``--code PATH`` runs the script of another checkout instead (e.g. ``git archive`` of an
older commit unpacked in /tmp), for a before/after on the same machine and hour.

    python benchmarks/bench_walkforward.py
    python benchmarks/bench_walkforward.py --runs 3 --skip-fresh --json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_SECONDS = 3.0
TIMINGS = re.compile(r"timings: research ([\d.]+) s, reports ([\d.]+) s")


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


def run_once(code: Path, folder: Path, extra: list[str]) -> dict:
    """One fresh process of the script: wall, CPU (with its workers), research, reports."""
    env = dict(os.environ)
    if code != ROOT:  # another checkout: its package, not this one's editable install
        env["PYTHONPATH"] = os.pathsep.join([str(code), env.get("PYTHONPATH", "")])
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, str(code / "scripts" / "walkforward.py"),
                           "--json", "--reports", str(folder), *extra],
                          cwd=code, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"scripts/walkforward.py failed ({done.returncode}):\n{done.stderr}")
    written = sorted(json.loads(done.stdout)["reports"])
    match = TIMINGS.search(done.stderr)
    research, reports = (float(match[1]), float(match[2])) if match else (None, None)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall": wall, "cpu": cpu, "research": research, "reports": reports,
            "files": written}


def series(code: Path, runs: int, extra: list[str], label: str, say) -> dict:
    """A warm-up run, then ``runs`` measured ones; medians and the load around them."""
    with tempfile.TemporaryDirectory(prefix="mmats-bench-wf-") as folder:
        say(f"{label}: warm-up run (load {load_average():.2f})")
        run_once(code, Path(folder) / "warm-up", extra)
        load_before = load_average()
        measured = []
        for index in range(runs):
            measured.append(run_once(code, Path(folder) / f"run{index}", extra))
            say(f"{label}: run {index + 1}/{runs} {measured[-1]['wall']:.2f} s wall, "
                f"{measured[-1]['cpu']:.2f} s CPU")
        load_after = load_average()
    figures = {"runs": runs, "load_before": load_before, "load_after": load_after,
               "files": measured[-1]["files"],
               "walls": [round(m["wall"], 3) for m in measured]}
    for name in ("wall", "cpu", "research", "reports"):
        values = [m[name] for m in measured if m[name] is not None]
        figures[name] = statistics.median(values) if values else None
    if figures["research"] is not None:
        figures["rest"] = figures["wall"] - figures["research"] - figures["reports"]
    return figures


def import_costs() -> dict:
    """Seconds to import matplotlib's figure and PDF backend, then quantstats, in a fresh
    process (median of three)."""
    probe = ("import time, json; t = time.perf_counter(); import numpy, pandas; "
             "a = time.perf_counter(); import matplotlib; matplotlib.use('Agg'); "
             "import matplotlib.figure, matplotlib.backends.backend_pdf; "
             "b = time.perf_counter(); import quantstats; c = time.perf_counter(); "
             "print(json.dumps({'numpy_pandas': a - t, 'matplotlib': b - a, "
             "'quantstats': c - b}))")
    samples = [json.loads(subprocess.run([sys.executable, "-c", probe], check=True,
                                         capture_output=True, text=True).stdout)
               for _ in range(3)]
    return {name: statistics.median(s[name] for s in samples) for name in samples[0]}


def verdict(seconds: float) -> str:
    return "met" if seconds <= TARGET_SECONDS else "not met"


def report(figures: dict) -> None:
    warm = figures["warm"]
    print(f"\nwalk-forward default run (scripts/walkforward.py on {figures['code']}), "
          f"{os.cpu_count()} cores, Python {sys.version.split()[0]}, {figures['date']}")
    print(f"files written: {', '.join(warm['files'])}")
    rows = [("warm default run (second run, caches warm)", warm)]
    if figures.get("fresh"):
        rows.append(("computed and drawn afresh (--no-cache)", figures["fresh"]))
    for label, f in rows:
        split = (f"research {f['research']:.2f} s + reports {f['reports']:.2f} s + start-up"
                 f" and imports {f['rest']:.2f} s") if f.get("research") is not None else \
            "no split (that checkout has no --timings)"
        print(f"{label:42s} median {f['wall']:.2f} s wall of {f['runs']} ({split}); "
              f"CPU {f['cpu']:.2f} s; load {f['load_before']:.2f} -> {f['load_after']:.2f}")
    ratio = warm["wall"] / TARGET_SECONDS
    print(f"target: warm default run <= {TARGET_SECONDS:.0f} s wall; measured "
          f"{warm['wall']:.2f} s ({ratio:.2f}x the target): {verdict(warm['wall'])} "
          f"(CPU {warm['cpu']:.2f} s: {verdict(warm['cpu'])} on CPU time, the figure a "
          f"loaded machine disturbs least)")
    if "imports" in figures:
        costs = figures["imports"]
        print(f"cold imports (fresh process): numpy+pandas {costs['numpy_pandas']:.2f} s, "
              f"matplotlib figure+PDF {costs['matplotlib']:.2f} s, quantstats "
              f"{costs['quantstats']:.2f} s (quantstats only when a tearsheet is drawn, "
              "in the worker)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="measured runs per series (5)")
    parser.add_argument("--skip-fresh", action="store_true",
                        help="leave out the series drawn afresh (--no-cache)")
    parser.add_argument("--skip-imports", action="store_true")
    parser.add_argument("--code", type=Path, default=ROOT,
                        help="checkout whose scripts/walkforward.py runs (this one)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    if args.runs < 1:
        print(f"error: --runs {args.runs}: give at least 1", file=sys.stderr)
        return 2
    code = args.code.resolve()
    if not (code / "scripts" / "walkforward.py").is_file():
        print(f"error: --code {code}: no scripts/walkforward.py there", file=sys.stderr)
        return 2

    def say(text):
        print(f"[{time.strftime('%H:%M:%S')} load {load_average():.2f}] {text}",
              file=sys.stderr, flush=True)

    timings = ["--timings"] if code == ROOT or "--timings" in (
        code / "mmats" / "cli" / "walkforward.py").read_text() else []
    figures = {"code": str(code), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               "target_seconds": TARGET_SECONDS}
    figures["warm"] = series(code, args.runs, timings, "warm", say)
    if not args.skip_fresh and timings:
        figures["fresh"] = series(code, args.runs, [*timings, "--no-cache"], "afresh", say)
    if not args.skip_imports:
        say("import costs")
        figures["imports"] = import_costs()
    figures["met"] = figures["warm"]["wall"] <= TARGET_SECONDS
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        report(figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
