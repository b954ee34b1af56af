#!/usr/bin/env python
"""The live runner. This version replays stored history through it in paper mode.

    python scripts/live.py --config configs/advisory_crypto.yaml --replay bittrex:ETH/BTC:5m --json

Replay runs the configured runner one tick per bar close, each tick loading its state
from the journal as a cron run would, and prints the fills and final equity. For a
one-model configuration it equals scripts/backtest.py on the same data and parameters.
"""

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmats.cli import fail, print_json  # noqa: E402
from mmats.errors import ConfigError, MMATSError  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="runner configuration (YAML)")
    parser.add_argument("--replay", nargs="?", const="", metavar="DATA",
                        help="replay stored history: a file or VENUE:SYMBOL:TIMEFRAME for a "
                        "one-symbol configuration; without DATA, each configured symbol "
                        "from the configuration's data_root")
    parser.add_argument("--cash", type=float, default=10_000.0,
                        help="starting cash of each market's paper account (10000)")
    parser.add_argument("--journal", help="journal for the replay (default: a new temporary "
                        "file, so a replay never mixes with the live journal)")
    parser.add_argument("--bars", type=int, help="replay only the first N bars")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.replay is None:
        print("error: only --replay is available in this version of the runner",
              file=sys.stderr)
        return 2
    try:
        from mmats.data import load
        from mmats.live.config import load_config
        from mmats.live.runner import replay

        config = load_config(args.config)
        candles = {}
        for market in config.markets:
            for symbol in market.symbols:
                if args.replay:
                    if sum(len(m.symbols) for m in config.markets) != 1:
                        raise ConfigError("--replay DATA serves one symbol; this configuration "
                                          "trades several: give --replay alone")
                    frame = load(args.replay)
                else:
                    frame = load(f"{market.feed}:{symbol}:{market.timeframe}",
                                 root=config.data_root)
                candles[symbol] = frame.iloc[: args.bars] if args.bars else frame
        journal = Path(args.journal) if args.journal else Path(
            tempfile.mkdtemp(prefix="mmats-replay-")) / "journal.sqlite"
        result = replay(config, candles, journal, cash=args.cash)
    except MMATSError as error:
        return fail(error)
    fills = [{"sleeve": f"{row['model_id']}:{row['symbol']}", "ts": row["ts"].isoformat(),
              "side": int(row["side"]), "qty": float(row["qty"]), "price": float(row["price"]),
              "fee": float(row["fee"])}
             for row in _fills_frame(result.journal).to_dict(orient="records")]
    if args.json:
        print_json({"final_equity": result.final_equity, "fills": fills,
                    "trades": result.trades, "journal": str(result.journal)})
        return 0
    for fill in fills:
        side = "BUY " if fill["side"] > 0 else "SELL"
        print(f"{fill['ts']}  {fill['sleeve']:28s} {side} {fill['qty']:.8g} @ "
              f"{fill['price']:.8g}  fee {fill['fee']:.4g}")
    print(f"\nfinal equity {result.final_equity:,.2f}, {result.trades} closed trades; "
          f"journal {result.journal}")
    return 0


def _fills_frame(path):
    from mmats.live.journal import Journal

    with Journal(path, create=False) as journal:
        frame = journal.fills_frame()
    if "ts" not in frame.columns:
        import pandas as pd

        frame["ts"] = pd.to_datetime(frame["fill_ts_ns"] if "fill_ts_ns" in frame else
                                     frame["ts_ns"], utc=True)
    return frame


if __name__ == "__main__":
    sys.exit(main())
