"""Benchmark the live runner. Prints figures; never asserts timings.

Measured, on the bundled ETH/BTC 5-minute sample, operator mode against the paper venue
(both SQLite files in a temporary folder, ``synchronous=FULL``):

1. **Decision latency**: from the start of a tick (the new bar already in the store) to
   the order handed to the broker (``send`` called), for a tick whose model decides to
   trade; median over the ticks that send. One model, then 10 models (for 10 models it
   is the time to the first order, all ten bars processed; the whole tick is also
   printed). Target <= 1 ms median per model.
2. **Replay throughput**: bar-events (one sleeve, one bar) per second of (a) the journaled
   replay, one tick per bar, each tick opening the journal and loading the states as a
   cron run would, and (b) the portfolio backtest of the same configuration (the same
   kernel step, limits and order of events, in memory). Target >= 100k per core.
3. **Memory**: peak RSS of a fresh process running 10 models (ema_cross, rsi_reversion,
   donchian_breakout on ETH/BTC) for 300 ticks. Target <= 300 MB.
4. **Kill switch**: 10 sleeves holding positions; wall time of ``control.kill`` in
   operator mode (lock, halt, cancel open orders, 10 market orders through the paper
   venue, journal). Target <= 1 s.

    python benchmarks/bench_runner.py
    python benchmarks/bench_runner.py --bars 2000 --json
"""

from __future__ import annotations

import argparse
import json
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

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def send(self, order):
        self.sends.append(time.perf_counter())
        return self.inner.send(order)


def decision_latency(candles, models: int, bars: int) -> dict:
    from mmats.brokers.paper import PaperBroker
    from mmats.brokers.replay import ReplayFeed
    from mmats.live.journal import Journal
    from mmats.live.tick import run_tick

    with tempfile.TemporaryDirectory() as folder:
        config = config_for(folder, models)
        feed = ReplayFeed({"ETH/BTC": candles.iloc[:bars]}, "5m")
        clock = [0]
        broker = Timed(PaperBroker(Path(folder) / "venue.sqlite", feed, "5m",
                                   symbols=["ETH/BTC"], clock=lambda: clock[0]))
        first_send, whole = [], []
        for now in feed.close_times("ETH/BTC"):
            clock[0] = int(now)
            sent = len(broker.sends)
            start = time.perf_counter()
            with Journal(config.journal) as journal:
                run_tick(config, {"crypto": feed}, journal, int(now), mode="operator",
                         brokers={"crypto": broker})
            end = time.perf_counter()
            if len(broker.sends) > sent:
                first_send.append(broker.sends[sent] - start)
                whole.append(end - start)
    return {"models": models, "ticks_that_send": len(first_send),
            "median_to_first_order_ms": 1e3 * statistics.median(first_send),
            "median_whole_tick_ms": 1e3 * statistics.median(whole)}


def throughput(candles, models: int, bars: int) -> dict:
    from mmats.live.replay import portfolio_backtest, replay

    config = None
    with tempfile.TemporaryDirectory() as folder:
        config = config_for(folder, models, mode="paper")
        data = {"ETH/BTC": candles.iloc[:bars]}
        start = time.perf_counter()
        replay(config, data, Path(folder) / "journal.sqlite")
        journaled = time.perf_counter() - start
    portfolio_backtest(config, {"ETH/BTC": candles.iloc[:200]})  # warm-up
    start = time.perf_counter()
    portfolio_backtest(config, {"ETH/BTC": candles})
    in_memory = time.perf_counter() - start
    return {"models": models,
            "journaled_replay_bar_events_per_s": models * bars / journaled,
            "portfolio_backtest_bar_events_per_s": models * len(candles) / in_memory}


MEMORY_CHILD = """
import resource, sys, tempfile
sys.path.insert(0, {root!r})
from benchmarks.bench_runner import config_for
from mmats.data import load
from mmats.live.replay import replay
with tempfile.TemporaryDirectory() as folder:
    config = config_for(folder, 10, mode="operator")
    replay(config, {{"ETH/BTC": load("bittrex:ETH/BTC:5m").iloc[:300]}},
           folder + "/journal.sqlite", mode="operator")
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def memory() -> float:
    out = subprocess.run([sys.executable, "-c", MEMORY_CHILD.format(root=str(ROOT))],
                         capture_output=True, text=True, check=True, cwd=ROOT)
    return float(out.stdout.split()[-1])


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
    from mmats.data import load

    candles = load("bittrex:ETH/BTC:5m").reset_index(drop=True)
    figures = {
        "latency_1_model": decision_latency(candles, 1, args.bars),
        "latency_10_models": decision_latency(candles, 10, args.bars // 2),
        "throughput_1_model": throughput(candles, 1, args.bars),
        "throughput_10_models": throughput(candles, 10, args.bars // 2),
        "peak_rss_mib_10_models": memory(),
        "kill_10_positions": kill_switch(candles),
        "this_process_peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    for name in ("latency_1_model", "latency_10_models"):
        f = figures[name]
        print(f"decision latency, {f['models']} model(s): {f['median_to_first_order_ms']:.2f} ms"
              f" median to the first order ({f['ticks_that_send']} ticks that sent; whole tick "
              f"{f['median_whole_tick_ms']:.2f} ms)   target <= 1 ms per model")
    for name in ("throughput_1_model", "throughput_10_models"):
        f = figures[name]
        print(f"throughput, {f['models']} model(s): journaled replay "
              f"{f['journaled_replay_bar_events_per_s']:,.0f} bar-events/s; portfolio backtest "
              f"{f['portfolio_backtest_bar_events_per_s']:,.0f} bar-events/s   target >= 100k")
    print(f"peak RSS, 10 models in one runner process: {figures['peak_rss_mib_10_models']:.0f}"
          " MiB   target <= 300 MB")
    k = figures["kill_10_positions"]
    print(f"kill switch: {k['positions_before']} positions -> {k['positions_after']} in "
          f"{k['kill_seconds']:.3f} s   target <= 1 s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
