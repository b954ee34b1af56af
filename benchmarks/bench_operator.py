"""Benchmark an operator-mode tick against the local Binance look-alike server.

Prints figures; never asserts timings. One model (ema_cross 5/20, long only) on the
bundled ETH/BTC 5-minute sample; for each of ``--bars`` closes the server's clock and
price follow the bar, then ``control.tick_once`` runs a whole tick through the real ccxt
client: lock, journal, sync the closed bar from the venue into the store, recover,
reconcile (positions, open orders, balances), decide, send, journal. The adapter is the
one ``mmats.brokers.connect`` builds, with ccxt's own rate limiter off (it sleeps to
respect the venue's weights, ~1.2 s a tick, which says nothing about MMATS). The server
runs in this process (a thread): its time is included. Target: <= 50 ms median.

    python benchmarks/bench_operator.py
    python benchmarks/bench_operator.py --bars 300 --json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mmats.data import load  # noqa: E402
from mmats.live import control  # noqa: E402
from mmats.live.config import load_config  # noqa: E402
from tests.venues.test_operator_e2e import (  # noqa: E402
    CASH_BTC,
    FIVE_MINUTES_NS,
    START,
    _binance,
    _binance_config,
    _fast_ccxt,
    _venue_price,
)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bars", type=int, default=200, help="ticks to time (200)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    candles = load("bittrex:ETH/BTC:5m")
    server = _binance(candles)
    try:
        with tempfile.TemporaryDirectory() as folder:
            config = load_config(_binance_config(Path(folder), server.url))
            broker = _fast_ccxt(server.url)
            ticks, sending = [], []
            for position in range(args.bars + 1):
                index = START + position
                close = candles["ts"].iloc[index].value + FIVE_MINUTES_NS
                server.set_now(close // 1_000_000)
                server.set_price("ETHBTC", _venue_price(candles["close"].iloc[index]))
                start = time.perf_counter()
                report = control.tick_once(config, cash=CASH_BTC, now_ns=close,
                                           mode="operator", brokers={"crypto": broker},
                                           sources={"binance": broker})
                seconds = time.perf_counter() - start
                if position == 0:
                    continue  # the first tick warms up on 100 bars of history
                ticks.append(seconds)
                if report.orders:
                    sending.append(seconds)
    finally:
        server.stop()
    figures = {"ticks": len(ticks), "median_tick_ms": 1e3 * statistics.median(ticks),
               "p90_tick_ms": 1e3 * statistics.quantiles(ticks, n=10)[-1],
               "ticks_that_sent": len(sending),
               "median_sending_tick_ms": 1e3 * statistics.median(sending) if sending else None}
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    print(f"operator tick against the local Binance server: {figures['median_tick_ms']:.1f} ms "
          f"median, {figures['p90_tick_ms']:.1f} ms p90 over {len(ticks)} ticks; ticks that "
          f"sent an order ({len(sending)}): {figures['median_sending_tick_ms'] or 0:.1f} ms "
          "median   target <= 50 ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
