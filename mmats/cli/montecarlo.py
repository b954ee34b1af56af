"""Monte Carlo of one parameter set: how much of its result could the order of luck change?

examples:
  mmats montecarlo --strategy ema_cross --params fast=10,slow=50 --runs 1000
  mmats montecarlo --method reshuffle --json
  mmats montecarlo --data nasdaq:GOOG:1d --strategy donchian_breakout --method block
  mmats montecarlo --runs 100000 --cluster local:2    # batches of runs on Dask workers

Backtests the parameters once, then resamples: its trades in a new order ("reshuffle"),
its bar returns i.i.d. ("bootstrap") or in blocks ("block", the stationary bootstrap).
Prints percentiles of final equity, CAGR, max drawdown and longest drawdown, and the
probabilities of ruin and of breaching a drawdown limit.

exit codes: 0 done; 2 usage or input error (a bad option, a missing or unreadable file, a
strategy that breaks its contract, reshuffle of a backtest with no trade). 1 is unused.
"""


from mmats.cli import (
    add_cost_options,
    add_data_option,
    add_json_option,
    add_strategy_option,
    command_parser,
    fail,
    parse_params,
    print_json,
    settings_from,
)
from mmats.cli.sweep import add_cluster_option
from mmats.errors import MMATSError


def main(argv=None, prog="mmats montecarlo") -> int:
    parser = command_parser(prog, __doc__)
    add_strategy_option(parser)
    add_data_option(parser)
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
    add_cluster_option(parser)
    add_json_option(parser)
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
                      ruin_fraction=args.ruin_fraction, drawdown_limit=args.drawdown_limit,
                      cluster=args.cluster, progress=bool(args.cluster) and not args.json)
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

