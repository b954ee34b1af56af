"""Benchmark the candle fetcher: 100,000 one-minute candles from the local Binance
look-alike into a fresh candle store, through the real ccxt client.

Prints figures; it never asserts timings. For each run (median of ``--repeat``):

- wall time of :func:`mmats.data.fetch.fetch_into_store` end to end (markets, 100 pages of
  1,000 klines, each page validated and merged into the Parquet file as it arrives, the
  gap report at the end);
- the server's own time (its request handlers: building and serialising each page),
  measured inside the server and subtracted, since a real venue's time is not ours;
- the time spent in ``CandleStore.write`` (each page rewrites the file atomically, so this
  grows with the file).

ccxt's own request throttle (``enableRateLimit``, 50 ms a request for binance) is off unless
``--rate-limit`` is given: it measures politeness, not the fetcher. ``--flush-seconds S``
gathers pages and writes them every S seconds (default 10, as ``scripts/fetch_data.py``);
0 writes each page at once.

Examples::

    python benchmarks/bench_fetch.py
    python benchmarks/bench_fetch.py --candles 20000 --repeat 3 --json
    python benchmarks/bench_fetch.py --flush-seconds 0
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

from mmats.brokers.ccxt_broker import CcxtBroker  # noqa: E402
from mmats.data.fetch import fetch_into_store  # noqa: E402
from mmats.data.store import CandleStore  # noqa: E402
from tests.venues.binance_server import BinanceServer  # noqa: E402

MINUTE_MS = 60_000
NOW_MS = 1_700_000_000_000 // MINUTE_MS * MINUTE_MS + 30_000


class TimedStore(CandleStore):
    """A candle store that adds up the time spent writing."""

    write_seconds = 0.0
    writes = 0

    def write(self, *args, **kwargs):
        self.writes += 1
        started = time.perf_counter()
        try:
            return super().write(*args, **kwargs)
        finally:
            self.write_seconds += time.perf_counter() - started


def run_once(candles: int, rate_limit: bool, flush_s: float | None) -> dict:
    server = BinanceServer(now_ms=NOW_MS).start()
    try:
        server.add_market("BTC", "USDT")
        first_ms = NOW_MS // MINUTE_MS * MINUTE_MS - candles * MINUTE_MS
        server.add_klines("BTCUSDT", "1m", first_open_ms=first_ms)
        broker = CcxtBroker("binance", base_url=server.url, rate_limit=rate_limit)
        with tempfile.TemporaryDirectory() as root:
            store = TimedStore(root)
            started = time.perf_counter()
            report = fetch_into_store(broker, store, "binance", "BTC/USDT", "1m",
                                      since=first_ms * 1_000_000, now_ms=NOW_MS,
                                      flush_s=flush_s)
            wall = time.perf_counter() - started
        if report.rows_stored != candles:
            raise SystemExit(f"expected {candles} candles stored, got {report.rows_stored}")
        server_s = server.handler_seconds
        return {"wall_s": wall, "server_s": server_s, "client_s": wall - server_s,
                "store_write_s": store.write_seconds, "writes": store.writes,
                "pages": report.pages,
                "requests": len(server.requests)}
    finally:
        server.stop()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--candles", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3, help="median of N runs (3)")
    parser.add_argument("--rate-limit", action="store_true",
                        help="keep ccxt's request throttle on")
    parser.add_argument("--flush-seconds", type=float, metavar="S", default=10.0,
                        help="write gathered pages every S seconds (default 10, as "
                             "fetch_data.py; 0: every page)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    runs = [run_once(args.candles, args.rate_limit, args.flush_seconds)
            for _ in range(args.repeat)]
    median = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    figures = {
        "candles": args.candles, "repeat": args.repeat, "rate_limit": args.rate_limit,
        "flush_seconds": args.flush_seconds,
        **{key: round(value, 4) for key, value in median.items()},
        "candles_per_s_wall": round(args.candles / median["wall_s"]),
        "candles_per_s_excluding_server": round(args.candles / median["client_s"]),
    }
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    print(f"fetch {args.candles:,} 1m candles from the local Binance look-alike "
          f"(median of {args.repeat}; ccxt throttle {'on' if args.rate_limit else 'off'}; "
          + ("a write per page)" if not args.flush_seconds
             else f"writes every {args.flush_seconds:g} s)"))
    print(f"  wall              {median['wall_s']:8.3f} s   "
          f"{figures['candles_per_s_wall']:>10,} candles/s")
    print(f"  server handlers   {median['server_s']:8.3f} s")
    print(f"  excluding server  {median['client_s']:8.3f} s   "
          f"{figures['candles_per_s_excluding_server']:>10,} candles/s")
    print(f"  of which writes   {median['store_write_s']:8.3f} s   "
          f"({median['writes']:.0f} writes, {median['pages']:.0f} pages, "
          f"{median['requests']:.0f} requests)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
