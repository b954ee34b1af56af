#!/usr/bin/env python
"""Check a strategy for lookahead bias and for its output contract.

    python scripts/check_strategy.py ema_cross
    python scripts/check_strategy.py path/to/my_strategy.py --params fast=5,slow=20

Exit code 0: passed; 1: lookahead found (the bars and differences are printed);
2: the strategy could not be loaded or broke its contract.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmats.cli import DEFAULT_DATA, fail, parse_params, print_json  # noqa: E402
from mmats.errors import MMATSError  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description="Truncate history at random bars, and replace what follows with made-up "
        "futures (spike, crash, flat, reversed, noise) there and at a block of consecutive "
        "bars, and recompute; recompute from several starting bars; any difference from "
        "the full run is lookahead. The defaults are the check backtest() and sweep() run.")
    parser.add_argument("strategy", help="name in strategies/ or a path (.py or .zip)")
    parser.add_argument("--data", default=DEFAULT_DATA,
                        help="Parquet/CSV file or VENUE:SYMBOL:TIMEFRAME (default %(default)s)")
    parser.add_argument("--root", help="candle store root")
    parser.add_argument("--params", help="e.g. fast=10,slow=50 (default: DEFAULTS)")
    parser.add_argument("--cuts", type=int, default=40,
                        help="random cuts, each truncated and given every continuation (40)")
    parser.add_argument("--block", type=int, default=200,
                        help="consecutive cuts given a spike and a crash (200)")
    parser.add_argument("--starts", type=int, default=4,
                        help="starting bars of the history-length check (4)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    try:
        from mmats.backtest import market
        from mmats.data import load
        from mmats.lookahead import check_lookahead
        from mmats.strategy import load_strategy

        strategy = load_strategy(args.strategy)
        prices = market(load(args.data, root=args.root))
        report = check_lookahead(strategy, prices.arrays, parse_params(args.params),
                                 n_cuts=args.cuts, block=args.block, starts=args.starts,
                                 seed=args.seed)
    except MMATSError as error:
        return fail(error)
    if args.json:
        print_json({
            "strategy": strategy.name,
            "params": report.params,
            "passed": report.passed,
            "bars": report.bars_checked,
            "cuts": report.cuts_checked,
            "block": list(report.block) if report.block else None,
            "continuations": list(report.continuations),
            "starts": report.starts,
            "runs": report.runs,
            "checks": report.checks,
            "violations": [
                {"check": v.check, "output": v.output, "bar": v.bar, "cut": v.cut,
                 "full_value": v.full_value, "check_value": v.check_value,
                 "difference": v.difference}
                for v in report.violations
            ],
        })
    else:
        print(report.summary(limit=20))
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
