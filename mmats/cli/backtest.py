"""Backtest one strategy with one parameter set: the decision at a bar's close fills at the next bar's open.

examples:
  mmats backtest                                  # ema_cross on the sample bittrex:ETH/BTC:5m
  mmats backtest --strategy ema_cross --data bittrex:ETH/BTC:5m \\
      --params fast=10,slow=50 --fee-bps 10 --json
  mmats backtest --data my_candles.csv --plot backtest.png --trades-csv trades.csv

exit codes: 0 done; 2 usage or input error (a bad option, a missing or unreadable file,
a strategy that breaks its contract or peeks ahead). A backtest has no "no": 1 is unused.
"""


from mmats.cli import (
    add_cost_options,
    add_data_option,
    add_data_quality_options,
    add_json_option,
    add_strategy_option,
    check_date,
    check_output_file,
    command_parser,
    fail,
    parse_params,
    print_json,
    report_data_quality,
    settings_from,
)
from mmats.errors import MMATSError


def main(argv=None, prog="mmats backtest") -> int:
    parser = command_parser(prog, __doc__)
    add_strategy_option(parser)
    add_data_option(parser)
    parser.add_argument("--params", help="e.g. fast=10,slow=50 (unset ones take DEFAULTS)")
    parser.add_argument("--start", help="first timestamp traded (earlier bars are warm-up)")
    parser.add_argument("--end", help="load candles before this timestamp only")
    parser.add_argument("--timeframe", help="override the inferred timeframe, e.g. 5m")
    parser.add_argument("--calendar", choices=["24/7", "forex", "stocks"],
                        help="override the calendar used to annualise")
    parser.add_argument("--trades-csv", help="write the trade records to this CSV file")
    parser.add_argument("--fills-csv", help="write the fill records to this CSV file")
    parser.add_argument("--plot", metavar="FILE.png",
                        help="draw price with trades, equity against buy and hold, and "
                        "drawdown into this PNG file")
    add_json_option(parser)
    add_cost_options(parser)
    add_data_quality_options(parser)
    args = parser.parse_args(argv)
    try:
        from mmats.backtest import backtest
        from mmats.data import load

        if args.start is None or not args.start.isdigit():  # digits: a bar index
            check_date("--start", args.start)
        check_date("--end", args.end)
        check_output_file("--trades-csv", args.trades_csv)
        check_output_file("--fills-csv", args.fills_csv)
        check_picture_file("--plot", args.plot)
        candles = load(args.data, root=args.root, end=args.end, timeframe=args.timeframe)
        quality = report_data_quality(candles, args, label=args.data)
        result = backtest(args.strategy, candles, parse_params(args.params), cash=args.cash,
                          timeframe=args.timeframe, calendar=args.calendar, start=args.start,
                          check_lookahead_bias=not args.no_lookahead_check,
                          **settings_from(args))
    except MMATSError as error:
        return fail(error)
    try:
        if args.trades_csv:
            result.trades_frame().to_csv(args.trades_csv, index=False)
        if args.fills_csv:
            result.fills_frame().to_csv(args.fills_csv, index=False)
        if args.plot:
            result.plot(path=args.plot)
    except OSError as error:  # a full disk or no permission: named, not a traceback
        return fail(error)
    summary = {
        **result.metrics,
        "strategy": result.strategy,
        "params": result.params,
        "data": args.data,
        "bars": len(result.equity),
        "first_ts": result.equity.index[0].isoformat(),
        "last_ts": result.equity.index[-1].isoformat(),
        "timeframe": result.market.timeframe,
        "calendar": result.market.calendar,
        "fills": len(result.fills),
        "data_quality": quality,
    }
    if args.json:
        print_json(summary)
    else:
        print(f"{result.strategy} {result.params} on {args.data} "
              f"({summary['bars']} bars, {summary['first_ts']} .. {summary['last_ts']})")
        print(f"  {quality['summary']}")
        for name, value in result.metrics.items():
            print(f"  {name:28s} {value:,.6g}" if isinstance(value, float)
                  else f"  {name:28s} {value}")
    return 0


def check_picture_file(option, path):
    """Refuse, before any work, a picture path that is not a writable ``.png`` file."""
    if path is None:
        return
    from mmats.reports.plots import check_png_path

    check_output_file(option, path)
    check_png_path(path, option)

