#!/usr/bin/env python
"""Monte Carlo of one parameter set: how much of its result could the order of luck change?

    python scripts/montecarlo.py --strategy ema_cross --params fast=10,slow=50 --runs 1000
    python scripts/montecarlo.py --method reshuffle --json

Backtests the parameters once, then resamples: its trades in a new order ("reshuffle"),
its bar returns i.i.d. ("bootstrap") or in blocks ("block", the stationary bootstrap).
Prints percentiles of final equity, CAGR, max drawdown and longest drawdown, and the
probabilities of ruin and of breaching a drawdown limit.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmats.cli import (  # noqa: E402
    DEFAULT_DATA,
    add_cost_options,
    fail,
    parse_params,
    print_json,
    settings_from,
)
from mmats.errors import MMATSError  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--strategy", default="ema_cross", help="name in strategies/ or a path")
    parser.add_argument("--data", default=DEFAULT_DATA,
                        help="Parquet/CSV file or VENUE:SYMBOL:TIMEFRAME (default %(default)s)")
    parser.add_argument("--root", help="candle store root")
    parser.add_argument("--params", help="e.g. fast=10,slow=50 (default: DEFAULTS)")
    parser.add_argument("--method", default="bootstrap",
                        choices=["bootstrap", "block", "reshuffle"])
    parser.add_argument("--runs", type=int, default=1000, help="resampled runs (1000)")
    parser.add_argument("--block-length", type=float, help="mean block length (block)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ruin-fraction", type=float, default=0.5,
                        help="ruin = equity ever below start × (1 - this) (0.5)")
    parser.add_argument("--drawdown-limit", type=float, default=0.2,
                        help="report the probability of a drawdown beyond this (0.2)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    add_cost_options(parser)
    args = parser.parse_args(argv)
    try:
        from mmats.data import load

        candles = load(args.data, root=args.root)  # bad input fails before the heavy imports
        from mmats.backtest import backtest
        from mmats.validate.montecarlo import monte_carlo, trade_returns_on_equity, trades_per_year

        result = backtest(args.strategy, candles, parse_params(args.params), cash=args.cash,
                          check_lookahead_bias=not args.no_lookahead_check,
                          **settings_from(args))
        common = dict(method=args.method, runs=args.runs, seed=args.seed,
                      block_length=args.block_length, start_equity=result.cash,
                      periods_per_year=result.market.periods_per_year,
                      ruin_fraction=args.ruin_fraction, drawdown_limit=args.drawdown_limit)
        if args.method == "reshuffle":
            if len(result.trades) == 0:
                return fail(MMATSError("the backtest closed no trade: nothing to reshuffle; "
                                       "use --method bootstrap"))
            trade_returns = trade_returns_on_equity(result)
            # per trade, steps are trades: annualise by trades per year of the backtest
            common["periods_per_year"] = trades_per_year(result)
            mc = monte_carlo(trade_returns=trade_returns, **common)
        else:
            mc = monte_carlo(result.returns.to_numpy(), **common)
    except MMATSError as error:
        return fail(error)
    if args.json:
        print_json({"strategy": result.strategy, "params": result.params, "data": args.data,
                    "backtest": result.metrics, "monte_carlo": mc.summary()})
        return 0
    print(f"{result.strategy} {result.params} on {args.data}: final equity "
          f"{result.metrics['final_equity']:,.2f}, max drawdown "
          f"{result.metrics['max_drawdown']:.2%}, {result.metrics['trades']} trades")
    print(f"\n{mc.runs} {mc.method} runs (seed {mc.seed}); percentiles:")
    print(mc.percentiles().to_string(float_format=lambda v: f"{v:,.4g}"))
    print(f"\nP(ruin: equity below {1 - args.ruin_fraction:.0%} of start) = "
          f"{mc.probability_of_ruin:.3f}")
    print(f"P(max drawdown >= {args.drawdown_limit:.0%}) = {mc.probability_of_drawdown:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
