"""Benchmark the dashboard's read model (:mod:`mmats.console.readmodel`). Prints figures;
never asserts timings.

A synthetic journal as a runner leaves it: four sleeves on two markets (5m and 1h bars)
with ``--bars`` bars of states in all (a tick, a signal and the sleeve's state per bar)
and ``--fills`` fills (each with its order). Measured:

1. **first load**: a new ReadModel's first ``refresh()`` and ``portfolio()`` (the
   Portfolio view's first paint, server side; target well under 1 s), and each other
   view once;
2. **one more tick**: a bar of every sleeve and a fill journaled, then ``refresh()`` and
   ``portfolio()`` again (the cost per tick: the new rows, not the journal).

    python benchmarks/bench_readmodel.py                 # 100k bars, 10k fills
    python benchmarks/bench_readmodel.py --bars 20000 --json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

START_NS = 1_600_000_000 * 10**9
STEPS_NS = {"crypto": 300 * 10**9, "forex": 3600 * 10**9}


def write_config(folder: Path) -> Path:
    path = folder / "bench.yaml"
    path.write_text(f"""mode: paper
environment: dev
risk: {{max_daily_loss_pct: 5%, max_drawdown_pct: 25%}}
markets:
  crypto: {{type: crypto, feed: synth, execution: paper, symbols: [BTC/USDT, ETH/USDT], timeframe: 5m}}
  forex: {{type: forex, feed: synth, execution: paper, symbols: [EUR/USD], timeframe: 1h}}
models:
  - {{id: ema, strategy: ema_cross, market: crypto, params: {{fast: 10, slow: 50}}}}
  - {{id: rsi, strategy: rsi_reversion, market: forex}}
  - {{id: donchian, strategy: donchian_breakout, market: forex}}
journal: {folder / "journal.sqlite"}
data_root: {folder / "data"}
""")
    return path


def write_journal(config, bars: int, fills: int) -> None:
    """``bars`` bars of states over the sleeves, a fill (and its order) every
    ``bars // fills`` of them."""
    from mmats.live.journal import Journal
    from mmats.live.sleeves import sleeves
    from mmats.sleeve import new_state
    from mmats.types import FILL_DTYPE, ORDER_DTYPE

    all_sleeves = sleeves(config, 10_000.0)
    rng = np.random.default_rng(11)
    states = {s.id: new_state(s.cash) for s in all_sleeves}
    every = max(1, bars // max(fills, 1))
    order = np.zeros(1, dtype=ORDER_DTYPE)[0]
    fill = np.zeros(1, dtype=FILL_DTYPE)[0]
    with Journal(config.journal, durable=False, sign=False) as journal:
        done = 0
        while done < bars:
            with journal.transaction():
                for _ in range(min(2000, bars - done)):
                    sleeve = all_sleeves[done % len(all_sleeves)]
                    bar = done // len(all_sleeves)
                    ts_ns = START_NS + bar * STEPS_NS[sleeve.market]
                    record = states[sleeve.id][0]
                    record["equity"] *= 1 + rng.normal(0, 0.002)
                    record["last_close"] = 100 * (1 + rng.normal(0, 0.01))
                    record["last_bar_ts_ns"] = ts_ns
                    journal.append_tick(sleeve.symbol, ts_ns, 100, 101, 99, 100, 5,
                                        timeframe=sleeve.timeframe, ts_ns=ts_ns)
                    journal.append_signal(sleeve.model_id, sleeve.symbol, "HOLD", 0.0,
                                          meta={"target_exposure": None}, ts_ns=ts_ns)
                    if done % every == 0:
                        side = 1 if (done // every) % 2 == 0 else -1
                        record["position"] = 1.0 if side > 0 else 0.0
                        record["avg_price"] = record["last_close"]
                        order["order_id"], order["ts_ns"] = done, ts_ns
                        order["requested_qty"] = order["filled_qty"] = side
                        order["price"] = record["last_close"]
                        cid = f"mm{done:030d}"
                        journal.append_order(sleeve.model_id, sleeve.symbol, cid, order,
                                             broker_status="PAPER", ts_ns=ts_ns)
                        fill["order_id"], fill["ts_ns"], fill["side"] = done, ts_ns, side
                        fill["qty"], fill["price"] = 1.0, record["last_close"]
                        journal.append_fill(sleeve.model_id, sleeve.symbol, cid, fill,
                                            ts_ns=ts_ns)
                    journal.save_state(sleeve.id, states[sleeve.id], ts_ns=ts_ns)
                    done += 1


def one_more_tick(config, bar: int) -> None:
    from mmats.live.journal import Journal
    from mmats.live.sleeves import sleeves
    from mmats.types import FILL_DTYPE

    with Journal(config.journal, durable=False, sign=False) as journal, journal.transaction():
        for sleeve in sleeves(config, 10_000.0):
            state = journal.load_state(sleeve.id)
            ts_ns = START_NS + bar * STEPS_NS[sleeve.market]
            state[0]["last_bar_ts_ns"] = ts_ns
            journal.append_tick(sleeve.symbol, ts_ns, 100, 101, 99, 100, 5,
                                timeframe=sleeve.timeframe, ts_ns=ts_ns)
            journal.append_signal(sleeve.model_id, sleeve.symbol, "HOLD", 0.0, ts_ns=ts_ns)
            journal.save_state(sleeve.id, state, ts_ns=ts_ns)
        fill = np.zeros(1, dtype=FILL_DTYPE)[0]
        fill["ts_ns"], fill["side"], fill["qty"], fill["price"] = ts_ns, 1, 1.0, 100.0
        journal.append_fill(sleeve.model_id, sleeve.symbol, f"mmtick{bar}", fill, ts_ns=ts_ns)


def timed(function):
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=100_000, help="bars of states in all")
    parser.add_argument("--fills", type=int, default=10_000)
    parser.add_argument("--ticks", type=int, default=20, help="further ticks to time")
    parser.add_argument("--repeats", type=int, default=5,
                        help="first loads to time (each by a new ReadModel; the median counts:"
                             " the machine is shared)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from mmats.console.readmodel import ReadModel
    from mmats.live.config import load_config

    with tempfile.TemporaryDirectory(prefix="mmats-bench-readmodel-") as folder:
        config = load_config(write_config(Path(folder)))
        built, _ = timed(lambda: write_journal(config, args.bars, args.fills))
        size_mb = config.journal.stat().st_size / 1e6
        loads = []
        for _ in range(args.repeats):
            model = ReadModel(config)
            refresh_s, head = timed(model.refresh)
            portfolio_s, answer = timed(model.portfolio)
            loads.append((refresh_s + portfolio_s, refresh_s, portfolio_s))
            model.close()
        _, refresh_s, portfolio_s = sorted(loads)[len(loads) // 2]
        model = ReadModel(config)
        model.refresh()
        answer = model.portfolio()
        views = {name: timed(getattr(model, name))[0] for name in
                 ("overview", "positions", "orders", "fills", "strategies", "logs")}
        first_rows = model.rows_read
        tick_refresh, tick_portfolio, tick_rows = [], [], []
        newest_bar = args.bars // 4
        for index in range(args.ticks):
            one_more_tick(config, newest_bar + 1 + index)
            before = model.rows_read
            tick_refresh.append(timed(model.refresh)[0])
            tick_portfolio.append(timed(model.portfolio)[0])
            tick_rows.append(model.rows_read - before)
        figures = {
            "bars_of_states": args.bars, "fills": args.fills, "journal_rows": head,
            "journal_mb": round(size_mb, 1), "build_s": round(built, 1),
            "first_refresh_s": round(refresh_s, 4), "first_portfolio_s": round(portfolio_s, 4),
            "first_paint_s": round(refresh_s + portfolio_s, 4),
            "first_paint_s_all": [round(load[0], 4) for load in loads],
            "first_rows_read": first_rows,
            "global_points": len(answer["equity"]["global"]),
            "other_views_s": {name: round(seconds, 5) for name, seconds in views.items()},
            "tick_refresh_ms_median": round(1e3 * statistics.median(tick_refresh), 3),
            "tick_portfolio_ms_median": round(1e3 * statistics.median(tick_portfolio), 3),
            "tick_rows_read": sorted(set(tick_rows)),
        }
        model.close()
    if args.json:
        print(json.dumps(figures, indent=1))
        return 0
    print(f"journal: {figures['journal_rows']:,} rows ({figures['journal_mb']} MB), "
          f"{args.bars:,} bars of states, {args.fills:,} fills (built in {built:.1f} s)")
    print(f"first load: refresh {refresh_s * 1e3:.0f} ms + portfolio {portfolio_s * 1e3:.0f} ms"
          f" = {(refresh_s + portfolio_s) * 1e3:.0f} ms (median of {len(loads)}: "
          f"{', '.join(f'{load[0] * 1e3:.0f}' for load in loads)} ms; target well under 1 s); "
          f"{first_rows:,} rows read, global curve drawn with "
          f"{figures['global_points']} points")
    print("other views: " + ", ".join(f"{name} {seconds * 1e3:.1f} ms"
                                      for name, seconds in views.items()))
    print(f"one more tick ({tick_rows[0]} rows): refresh "
          f"{figures['tick_refresh_ms_median']} ms + portfolio "
          f"{figures['tick_portfolio_ms_median']} ms (median of {args.ticks})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
