"""Benchmark the live runner. Prints figures, each with its target, the 1-minute load
average before and after it, and "met" / "not met"; never asserts timings.

Measured, on the bundled ETH/BTC 5-minute sample, 1 and 10 models (ema_cross,
rsi_reversion, donchian_breakout):

1. **Decision latency** (operator mode against the paper venue, both SQLite files in a
   temporary folder, ``synchronous=FULL``): from the start of a tick (the new bar already
   in the store) to the order handed to the broker (``send`` called), for a tick whose
   model decides to trade; median over the ticks that send. For 10 models it is the time
   to the first order, all ten bars processed, so per model it is that over 10 (the
   whole tick is also printed), and the CPU time of this process to it (steadier than the
   wall time on a shared machine). Target <= 1 ms per model, for the runner that has a
   latency to speak of: the always-on service (``mmats serve``), which keeps the journal
   open from tick to tick. A cron tick's figure is printed beside it: it opens the
   journal (and, not counted here, starts a Python process first: about a second).
2. **Journaled replay** (paper mode): bar-events (one sleeve, one bar) per second of
   :func:`mmats.live.replay.replay`, one tick per bar close, each tick loading its states
   from the journal and writing each close in one transaction as a cron run would; one
   process, one thread, so the figure is per core (the CPU-time rate is printed beside:
   on a loaded machine it is the steadier of the two). The kernel is compiled (or loaded
   from numba's cache) by a short replay first. Target >= 5,000 per core (NF2). The
   portfolio backtest of the same configuration (in memory) is printed beside it
   (target >= 1 M).
3. **Memory**: peak RSS (``VmHWM``) of a fresh process that is a runner of 10 models:
   300 cron-style ticks (``control.tick_once``: lock, journal, store, operator mode
   against the paper venue) over a candle store written beforehand; and, beside it, of
   a fresh process replaying 300 bars of the 10 models in operator mode (the figure the
   issue measured), and of a runner of 10 models ticking 5 times over a store of 1 M
   bars (each tick must read the file's tail, not its history). Target <= 300 MB
   (MB = 10^6 bytes; MiB printed beside). Each process also says which research-only
   libraries (DuckDB, polars, matplotlib, ...) it loaded: a tick needs none.
4. **Kill switch**: 10 sleeves holding positions; wall time of ``control.kill`` in
   operator mode (lock, halt, cancel open orders, 10 market orders through the paper
   venue, journal). Target <= 1 s.

Operator mode signs its journals: unless ``MMATS_SECRETS_PASSPHRASE`` is set, the
benchmark keeps the signing key in a throwaway secrets file of its own.

    python benchmarks/bench_runner.py
    python benchmarks/bench_runner.py --bars 2000 --json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STRATEGIES = [("ema_cross", {"fast": 5, "slow": 20}), ("rsi_reversion", {"period": 14}),
              ("donchian_breakout", {"channel": 10})]


def config_for(folder, models: int, mode="operator"):
    from mmats.live.config import parse_config

    specs = []
    for index in range(models):
        strategy, params = STRATEGIES[index % len(STRATEGIES)]
        params = {**params}
        if strategy == "ema_cross":
            params["fast"] = 5 + index
        specs.append({"id": f"m{index}", "strategy": strategy, "market": "crypto",
                      "allocation": 1.0 / models, "params": params,
                      "costs": {"fee_bps": 10}})
    return parse_config({
        "mode": mode,
        "markets": {"crypto": {"type": "crypto", "feed": "bittrex", "execution": "paper",
                               "symbols": ["ETH/BTC"], "timeframe": "5m"}},
        "models": specs,
        "journal": str(Path(folder) / "journal.sqlite"),
        "data_root": str(Path(folder) / "data"),
        "notifications": [f"file://{Path(folder) / 'notes.log'}"],
    })


class Timed:
    """The paper venue, noting when each order reached it."""

    def __init__(self, inner):
        self.inner = inner
        self.sends = []
        self.cpu_at_sends = []  # this process's CPU time at each send

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def send(self, order):
        self.sends.append(time.perf_counter())
        self.cpu_at_sends.append(time.process_time())
        return self.inner.send(order)


#: The syncs before a tick's first order, one model (counted with ``strace -f -e
#: trace=fsync,fdatasync,write`` on this benchmark's ticks, a marker written at each
#: tick's start and at each ``send``; 14 ticks that sent, each way). The newest close and
#: the orders it decided are journaled in one transaction (:func:`mmats.live.tick.plan`):
#: one commit, one fsync of the WAL. Served (the journal kept open, as the always-on
#: service holds it) that is all. A cron tick's fresh connection also restarts the WAL
#: (the last close removed it): its header and its folder are synced first. The anchor's
#: lines are fsync'ed once, after the orders (``Journal.anchor_sync_deferred``). With 10
#: models the reconciliation's own commits (a changed balance, a protective leg placed)
#: may come first: served 1 to 9, median 2; cron 3 to 11, median 4 (44 ticks that sent).
#: (Before the close and its orders shared a commit: 4 for one model's cron tick.)
SYNCS_BEFORE_ORDER = {"served": 1, "cron": 3}


def load_1min() -> float:
    """The 1-minute load average (the machine is shared: every figure carries it)."""
    return os.getloadavg()[0]


def decision_latency(candles, models: int, bars: int, *, served: bool = True) -> dict:
    """The decision latency of ``models`` over ``bars`` ticks: ``served``, the journal
    kept open from tick to tick as the always-on service holds it
    (:class:`mmats.live.wiring.HeldJournal`); else each tick opens and closes it, as a
    cron run's does."""
    from mmats.brokers.paper import PaperBroker
    from mmats.brokers.replay import ReplayFeed
    from mmats.live.journal import Journal
    from mmats.live.tick import run_tick

    load_before = load_1min()
    with tempfile.TemporaryDirectory() as folder:
        config = config_for(folder, models)
        feed = ReplayFeed({"ETH/BTC": candles.iloc[:bars]}, "5m")
        clock = [0]
        broker = Timed(PaperBroker(Path(folder) / "venue.sqlite", feed, "5m",
                                   symbols=["ETH/BTC"], clock=lambda: clock[0]))
        first_send, whole, deciding, stages, parts, cpu = [], [], [], [], [], []
        held = Journal(config.journal) if served else None
        for now in feed.close_times("ETH/BTC"):
            clock[0] = int(now)
            sent = len(broker.sends)
            stages.clear()
            start, cpu_start = time.perf_counter(), time.process_time()
            journal = held or Journal(config.journal)  # a cron tick opens it
            try:
                stages.append(("opened", time.perf_counter()))
                run_tick(config, {"crypto": feed}, journal, int(now), mode="operator",
                         brokers={"crypto": broker},
                         trace=lambda name: stages.append((name, time.perf_counter())))
            finally:
                if held is None:
                    journal.close()
            end = time.perf_counter()
            if len(broker.sends) > sent:
                first_send.append(broker.sends[sent] - start)
                cpu.append(broker.cpu_at_sends[sent] - cpu_start)
                whole.append(end - start)
                deciding.append(_deciding(stages))
                parts.append(_parts(start, stages, broker.sends[sent]))
        if held is not None:
            held.close()
    to_first = 1e3 * _median(first_send)
    decide = 1e3 * _median(deciding) / models
    return {"models": models, "served": served, "ticks_that_send": len(first_send),
            "median_to_first_order_ms": to_first, "per_model_ms": to_first / models,
            "cpu_to_first_order_ms": 1e3 * _median(cpu),
            "median_whole_tick_ms": 1e3 * _median(whole),
            "decide_and_gate_per_model_ms": decide,
            "target_per_model_ms": 1.0, "met": to_first / models <= 1.0,
            "decide_met": decide <= 1.0,
            "to_first_order_ms": {name: 1e3 * _median([p[name] for p in parts])
                                  for name in PARTS},
            "fsync": fsync_cost(), "load_before": load_before, "load_after": load_1min()}


#: The parts of the time to the first order: opening the journal (nil when served); the
#: states, the venue's recovery and reconciliation; the closes (deciding, then journaling
#: each in its transaction: the newest with its orders' SENDING rows, one commit, one
#: fsync of the WAL); and the act stage to the order (planning and journaling the orders
#: in a transaction of their own only when a protective leg was released first).
PARTS = ("open_journal", "recover_and_reconcile", "deciding", "journaling_closes",
         "act_to_send")


def _parts(start: float, stages: list[tuple[str, float]], sent: float) -> dict:
    """Seconds spent in each of :data:`PARTS` before the first order of a tick."""
    at = {}  # the first mark of each stage
    for name, when in stages:
        at.setdefault(name, when)
    first = next(when for name, when in stages if name == "decide")
    deciding = _deciding(stages)
    return {"open_journal": at["opened"] - start,
            "recover_and_reconcile": first - at["opened"],
            "deciding": deciding,
            "journaling_closes": at["act"] - first - deciding,
            "act_to_send": sent - at["act"]}


def fsync_cost(count: int = 200) -> dict:
    """The fsync of this disk: median and 90th percentile of ``count`` fsyncs, each after
    a 4 KiB append (a commit's WAL frame, or an anchor line), in a temporary folder."""
    times = []
    with tempfile.TemporaryDirectory() as folder:
        handle = os.open(Path(folder) / "probe", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            for _ in range(count):
                os.write(handle, b"x" * 4096)
                start = time.perf_counter()
                os.fsync(handle)
                times.append(time.perf_counter() - start)
        finally:
            os.close(handle)
    times.sort()
    return {"median_ms": 1e3 * times[len(times) // 2],
            "p90_ms": 1e3 * times[int(0.9 * len(times))], "load": load_1min()}


def _median(values: list[float]) -> float:
    """The median; NaN (never "met") when no tick sent an order."""
    return statistics.median(values) if values else float("nan")


def _deciding(stages: list[tuple[str, float]]) -> float:
    """Seconds the tick spent deciding: from each close's ``decide`` stage to its
    ``journal`` stage (the strategies on their windows, the kernel's step, the limits,
    sizing and gates), summed over the tick's closes."""
    total, began = 0.0, None
    for name, at in stages:
        if name == "decide":
            began = at
        elif name == "journal" and began is not None:
            total, began = total + at - began, None
    return total


def throughput(candles, models: int, bars: int) -> dict:
    from mmats.live.replay import portfolio_backtest, replay

    config = None
    with tempfile.TemporaryDirectory() as folder:
        warm = config_for(folder, models, mode="paper")  # the kernel compiled or loaded
        replay(warm, {"ETH/BTC": candles.iloc[:40]}, Path(folder) / "warm.sqlite")
    load_before = load_1min()
    with tempfile.TemporaryDirectory() as folder:
        config = config_for(folder, models, mode="paper")
        data = {"ETH/BTC": candles.iloc[:bars]}
        start, cpu = time.perf_counter(), time.process_time()
        replay(config, data, Path(folder) / "journal.sqlite")
        journaled, journaled_cpu = time.perf_counter() - start, time.process_time() - cpu
    load_after = load_1min()
    portfolio_backtest(config, {"ETH/BTC": candles.iloc[:200]})  # warm-up
    start = time.perf_counter()
    portfolio_backtest(config, {"ETH/BTC": candles})
    in_memory = time.perf_counter() - start
    rate = models * bars / journaled
    return {"models": models, "bars": bars,
            "journaled_replay_bar_events_per_s": rate,
            "journaled_replay_bar_events_per_cpu_s": models * bars / journaled_cpu,
            "target_journaled_per_core": 5_000, "met": rate >= 5_000,
            "load_before": load_before, "load_after": load_after,
            "portfolio_backtest_bar_events_per_s": models * len(candles) / in_memory,
            "target_portfolio": 1_000_000}


PEAK = """
def peak_mib():
    import re
    status = open("/proc/self/status").read()
    return int(re.search(r"VmHWM:\\s+(\\d+)", status).group(1)) / 1024


def report():
    import json
    research = {research!r}
    loaded = sorted(name for name in sys.modules if name.split(".")[0] in research)
    print(json.dumps({{"peak_mib": peak_mib(),
                      "research_only": sorted({{name.split(".")[0] for name in loaded}})}}))
"""

# What a tick must not load (the store is read with pyarrow; SciPy appears only through
# numba's own BLAS check, so it is not listed).
RESEARCH_ONLY = ("duckdb", "polars", "matplotlib", "quantstats", "arch", "statsmodels",
                 "sklearn", "vectorbt", "optuna", "plotly", "dask", "distributed", "fastapi",
                 "uvicorn", "ccxt", "telegram")

RUNNER_CHILD = PEAK + """
import json, sys
sys.path.insert(0, {root!r})
from benchmarks.bench_runner import config_for
from mmats.live import control
config = config_for({folder!r}, 10, mode="operator")
for now_ns in json.load(open({times!r})):
    control.tick_once(config, now_ns=now_ns, mode="operator")
report()
"""

REPLAY_CHILD = PEAK + """
import sys, tempfile
sys.path.insert(0, {root!r})
from benchmarks.bench_runner import config_for
from mmats.data import load
from mmats.live.replay import replay
with tempfile.TemporaryDirectory() as folder:
    config = config_for(folder, 10, mode="operator")
    replay(config, {{"ETH/BTC": load("bittrex:ETH/BTC:5m").iloc[:300]}},
           folder + "/journal.sqlite", mode="operator")
report()
"""

LONG_HISTORY_BARS = 1_000_000


def memory(candles) -> dict:
    """Peak RSS of fresh processes (a child's own figure: a parent's peak is not
    inherited by ``python -c``, and ``VmHWM`` is this process's alone), and which
    research-only libraries each loaded."""
    from mmats.data import CandleStore

    load_before = load_1min()
    with tempfile.TemporaryDirectory() as folder:
        config = config_for(folder, 10)
        CandleStore(config.data_root).write("bittrex", "ETH/BTC", "5m", candles.iloc[:400])
        step = 300_000_000_000
        times = Path(folder) / "times.json"
        times.write_text(json.dumps([int(candles["ts"].iloc[bar].value) + step
                                     for bar in range(60, 360)]))
        runner = _child(RUNNER_CHILD.format(root=str(ROOT), folder=folder, times=str(times),
                                            research=RESEARCH_ONLY))
    replayed = _child(REPLAY_CHILD.format(root=str(ROOT), research=RESEARCH_ONLY))
    with tempfile.TemporaryDirectory() as folder:
        times = _long_history(folder, LONG_HISTORY_BARS)
        long = _child(RUNNER_CHILD.format(root=str(ROOT), folder=folder, times=str(times),
                                          research=RESEARCH_ONLY))
    return {"runner_peak_mib": runner["peak_mib"], "replay_peak_mib": replayed["peak_mib"],
            "long_history_peak_mib": long["peak_mib"], "long_history_bars": LONG_HISTORY_BARS,
            "research_only_loaded": sorted({*runner["research_only"],
                                            *replayed["research_only"],
                                            *long["research_only"]}),
            "target_mb": 300, "met": runner["peak_mib"] * MB_PER_MIB <= 300,
            "replay_met": replayed["peak_mib"] * MB_PER_MIB <= 300,
            "long_history_met": long["peak_mib"] * MB_PER_MIB <= 300,
            "load_before": load_before, "load_after": load_1min()}


MB_PER_MIB = 1.048576  # the target is in MB (10^6 bytes); VmHWM is in KiB


def _long_history(folder, bars: int) -> Path:
    """A runner of 10 models warmed up (one tick, in this process) on the newest 300 of
    ``bars`` stored 5-minute bars; the store then holds them all, and 5 more ticks are left
    for a fresh process: each must read the tail of the file, not its history."""
    import numpy as np
    import pandas as pd

    from mmats.data import CandleStore
    from mmats.live import control

    step = 300_000_000_000
    first = 1_500_000_000_000_000_000 // step * step
    rng = np.random.default_rng(14)
    close = 0.05 * np.exp(np.cumsum(rng.normal(0, 0.001, bars)))
    open_ = np.r_[close[0], close[:-1]]
    frame = pd.DataFrame({
        "ts": pd.to_datetime(first + step * np.arange(bars), utc=True), "open": open_,
        "high": np.maximum(open_, close) * 1.001, "low": np.minimum(open_, close) * 0.999,
        "close": close, "volume": rng.uniform(1, 10, bars)})
    config = config_for(folder, 10)
    store = CandleStore(config.data_root)
    store.write("bittrex", "ETH/BTC", "5m", frame.iloc[-300:-5])
    control.tick_once(config, now_ns=first + step * (bars - 5), mode="operator")
    store.write("bittrex", "ETH/BTC", "5m", frame)
    times = Path(folder) / "times.json"
    times.write_text(json.dumps([first + step * (bars - 4 + i) for i in range(5)]))
    return times


def _child(source: str) -> dict:
    out = subprocess.run([sys.executable, "-c", source], capture_output=True, text=True,
                         cwd=ROOT)
    if out.returncode != 0:
        raise RuntimeError(f"memory child failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.splitlines()[-1])


def kill_switch(candles) -> dict:
    from mmats.data import CandleStore
    from mmats.live import control
    from mmats.live.journal import Journal

    with tempfile.TemporaryDirectory() as folder:
        config = config_for(folder, 10)
        CandleStore(config.data_root).write("bittrex", "ETH/BTC", "5m", candles.iloc[:400])
        step = 300_000_000_000
        bar = 30
        held = 0
        while bar < 400 and held < 10:  # until every sleeve holds a position at the venue
            control.tick_once(config, now_ns=int(candles["ts"].iloc[bar].value) + step,
                              mode="operator")
            with Journal(config.journal) as journal:
                held = sum(journal.load_state(f"m{i}:ETH/BTC")[0]["position"] != 0
                           for i in range(10))
            bar += 1
        start = time.perf_counter()
        control.kill(config, mode="operator", reason="benchmark")
        seconds = time.perf_counter() - start
        with Journal(config.journal) as journal:
            left = sum(journal.load_state(f"m{i}:ETH/BTC")[0]["position"] != 0
                       for i in range(10))
    return {"positions_before": int(held), "positions_after": int(left),
            "kill_seconds": seconds}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bars", type=int, default=1000, help="bars for the replays (1000)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as secrets:
        if not os.environ.get("MMATS_SECRETS_PASSPHRASE"):  # a throwaway signing key
            os.environ["MMATS_SECRETS_FILE"] = str(Path(secrets) / "secrets.enc")
            os.environ["MMATS_SECRETS_PASSPHRASE"] = "bench_runner's own passphrase"
        figures = _measure(args.bars)
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    for line in report_lines(figures):
        print(line)
    return 0


def _measure(bars: int) -> dict:
    from mmats.data import load

    candles = load("bittrex:ETH/BTC:5m").reset_index(drop=True)
    return {
        "latency_1_model": decision_latency(candles, 1, bars),
        "latency_10_models": decision_latency(candles, 10, bars // 2),
        "cron_latency_1_model": decision_latency(candles, 1, bars, served=False),
        "cron_latency_10_models": decision_latency(candles, 10, bars // 2, served=False),
        "throughput_1_model": throughput(candles, 1, bars),
        "throughput_10_models": throughput(candles, 10, bars // 2),
        "memory_10_models": memory(candles),
        "kill_10_positions": kill_switch(candles),
        "this_process_peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def report_lines(figures: dict) -> list[str]:
    """The figures as text: each with its target, ratio, met / not met and the load."""
    def verdict(f):
        return f"{'met' if f['met'] else 'NOT MET'}   (load {f['load_before']:.2f} -> " \
               f"{f['load_after']:.2f})"

    lines = []
    for name in ("latency_1_model", "latency_10_models", "cron_latency_1_model",
                 "cron_latency_10_models"):
        f = figures[name]
        how = "served, journal kept open" if f["served"] else \
            "cron tick, opening the journal (not the target's figure)"
        lines.append(
            f"decision latency, {f['models']} model(s), {how}: {f['per_model_ms']:.3f} ms "
            "per model "
            f"({f['median_to_first_order_ms']:.2f} ms median to the first order over "
            f"{f['ticks_that_send']} ticks that sent, each close journaled durably first; "
            f"CPU time to it {f['cpu_to_first_order_ms']:.2f} ms; "
            f"whole tick {f['median_whole_tick_ms']:.2f} ms)   target <= 1 ms per model, "
            f"ratio {f['per_model_ms']:.2f}   {verdict(f)}")
        lines.append(
            f"  deciding alone (strategy, kernel step, limits, gates), {f['models']} model(s):"
            f" {f['decide_and_gate_per_model_ms']:.3f} ms per model   target <= 1 ms, ratio "
            f"{f['decide_and_gate_per_model_ms']:.2f}   "
            f"{'met' if f['decide_met'] else 'NOT MET'}")
        lines.append("  to the first order, median ms: " + ", ".join(
            f"{name} {value:.3f}" for name, value in f["to_first_order_ms"].items()))
        lines.append(
            f"  fsync on this disk: median {f['fsync']['median_ms']:.3f} ms, p90 "
            f"{f['fsync']['p90_ms']:.3f} ms (load {f['fsync']['load']:.2f}); before the "
            f"first order of one model's tick: {SYNCS_BEFORE_ORDER['served' if f['served'] else 'cron']}"
            " sync(s), more with ten (see SYNCS_BEFORE_ORDER)")
    for name in ("throughput_1_model", "throughput_10_models"):
        f = figures[name]
        rate = f["journaled_replay_bar_events_per_s"]
        lines.append(
            f"journaled replay, {f['models']} model(s) x {f['bars']} bars: {rate:,.0f} "
            f"bar-events/s ({f['journaled_replay_bar_events_per_cpu_s']:,.0f} per CPU-second)"
            f"   target >= 5,000 per core, ratio {rate / 5_000:.2f}   {verdict(f)}")
        backtest = f["portfolio_backtest_bar_events_per_s"]
        lines.append(f"  portfolio backtest, same models, in memory: {backtest:,.0f} "
                     f"bar-events/s   target >= 1 M, ratio {backtest / 1e6:.2f}")
    f = figures["memory_10_models"]
    runner_mb, replay_mb = f["runner_peak_mib"] * MB_PER_MIB, f["replay_peak_mib"] * MB_PER_MIB
    long_mb = f["long_history_peak_mib"] * MB_PER_MIB
    lines.append(
        f"peak RSS, a runner of 10 models (300 ticks, fresh process): {runner_mb:.0f} MB "
        f"({f['runner_peak_mib']:.0f} MiB)   target <= 300 MB, ratio {runner_mb / 300:.2f}   "
        f"{verdict(f)}")
    lines.append(
        f"  a replay of 10 models (300 bars, fresh process): {replay_mb:.0f} MB "
        f"({f['replay_peak_mib']:.0f} MiB)   target <= 300 MB, ratio {replay_mb / 300:.2f}   "
        f"{'met' if f['replay_met'] else 'NOT MET'}")
    lines.append(
        f"  a runner of 10 models over {f['long_history_bars']:,} stored bars (5 ticks, fresh "
        f"process): {long_mb:.0f} MB ({f['long_history_peak_mib']:.0f} MiB)   target <= 300 "
        f"MB, ratio {long_mb / 300:.2f}   {'met' if f['long_history_met'] else 'NOT MET'}")
    loaded = ", ".join(f["research_only_loaded"]) or "none"
    lines.append(f"  research-only libraries these processes loaded: {loaded}")
    k = figures["kill_10_positions"]
    lines.append(f"kill switch: {k['positions_before']} positions -> {k['positions_after']} in "
                 f"{k['kill_seconds']:.3f} s   target <= 1 s   "
                 f"{'met' if k['kill_seconds'] <= 1 else 'NOT MET'}")
    return lines


if __name__ == "__main__":
    sys.exit(main())
