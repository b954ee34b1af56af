"""Check a strategy for lookahead bias and for its output contract.

examples:
  mmats check-strategy --strategy ema_cross
  mmats check-strategy --strategy strategies/my_idea.py --params fast=5,slow=20 --json
  mmats check-strategy strategies/my_idea.py      # the strategy may also come first

Truncates history at random bars, and replaces what follows with made-up futures (spike,
crash, flat, reversed, noise) there and at a block of consecutive bars, and recomputes;
recomputes from several starting bars; any difference from the full run is lookahead. The
defaults are the check backtest(), sweep() and walk_forward() run before they trade.

exit codes: 0 passed; 1 lookahead found (the bars and differences are printed); 2 usage or
input error (a bad option, a missing or unreadable file, a strategy that cannot be loaded
or breaks its output contract).
"""


from mmats.cli import (
    DEFAULT_STRATEGY,
    add_data_option,
    add_json_option,
    add_strategy_option,
    command_parser,
    fail,
    parse_params,
    print_json,
)
from mmats.errors import MMATSError


def main(argv=None, prog="mmats check-strategy") -> int:
    parser = command_parser(prog, __doc__)
    parser.add_argument("strategy_name", nargs="?", metavar="STRATEGY",
                        help="the same as --strategy")
    add_strategy_option(parser, default=None)
    add_data_option(parser)
    parser.add_argument("--params", help="e.g. fast=10,slow=50 (default: DEFAULTS)")
    parser.add_argument("--cuts", type=int, default=40,
                        help="random cuts, each truncated and given every continuation (40)")
    parser.add_argument("--block", type=int, default=200,
                        help="consecutive cuts given a spike and a crash (200)")
    parser.add_argument("--starts", type=int, default=4,
                        help="starting bars of the history-length check (4)")
    parser.add_argument("--seed", type=int, default=0)
    add_json_option(parser)
    args = parser.parse_args(argv)
    if args.strategy_name and args.strategy and args.strategy_name != args.strategy:
        parser.error(f"two strategies: {args.strategy_name} and --strategy {args.strategy}")
    args.strategy = args.strategy or args.strategy_name or DEFAULT_STRATEGY
    try:
        from mmats.backtest import market, with_inputs
        from mmats.data import load
        from mmats.lookahead import check_lookahead
        from mmats.strategy import load_strategy

        strategy = load_strategy(args.strategy)
        prices = with_inputs(market(load(args.data, root=args.root)), strategy)
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

