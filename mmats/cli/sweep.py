"""Sweep a strategy's parameter grid in one fused numba kernel: one row per combination.

examples:
  mmats sweep                                     # ema_cross's grid on bittrex:ETH/BTC:5m
  mmats sweep --strategy ema_cross --data bittrex:ETH/BTC:5m \\
      --grid fast=5:50:5,slow=20:200:10 --json
  mmats sweep --strategy rsi_reversion --data bittrex:ETH/BTC:5m --data bittrex:LTC/BTC:5m \\
      --heatmap heatmap.png
  mmats sweep --cluster tcp://10.0.0.5:8786       # the grid in batches on a Dask cluster
  mmats sweep --cluster local:2                   # ... or on two worker processes here

exit codes: 0 done; 2 usage or input error (a bad option or grid, a missing or unreadable
file, a strategy that breaks its contract or peeks ahead). A sweep has no "no": 1 is unused.
"""


from mmats.cli import (
    DEFAULT_DATA,
    add_cost_options,
    add_data_option,
    add_data_quality_options,
    add_json_option,
    add_strategy_option,
    check_output_file,
    command_parser,
    fail,
    parse_grid,
    print_json,
    report_data_quality,
    settings_from,
)
from mmats.errors import MMATSError
from mmats.types import METRIC_NAMES


def main(argv=None, prog="mmats sweep") -> int:
    parser = command_parser(prog, __doc__)
    add_strategy_option(parser)
    add_data_option(parser, repeat=True)  # several: one sweep over all of them
    parser.add_argument("--grid", help="e.g. fast=5:50:5,slow=20|50|100 (stop included); "
                        "default: the strategy's PARAMS")
    parser.add_argument("--objective", default="sharpe", choices=list(METRIC_NAMES),
                        help="metric the table is sorted by (default sharpe)")
    parser.add_argument("--top", type=int, default=10, help="rows shown without --json")
    parser.add_argument("--heatmap", metavar="FILE.png",
                        help="draw the --objective metric by parameters into this PNG file: "
                        "a heatmap of the first two parameters (the rest folded in at their "
                        "best), a line for one")
    parser.add_argument("--timeframe", help="override the inferred timeframe")
    parser.add_argument("--calendar", choices=["24/7", "forex", "stocks"])
    add_cluster_option(parser)
    add_json_option(parser)
    add_cost_options(parser)
    add_data_quality_options(parser)
    args = parser.parse_args(argv)
    sources = args.data or [DEFAULT_DATA]
    try:
        from mmats.backtest import sweep
        from mmats.data import load

        if args.heatmap is not None:
            from mmats.reports.plots import check_png_path

            check_output_file("--heatmap", args.heatmap)
            check_png_path(args.heatmap, "--heatmap")
        datasets = {source: load(source, root=args.root, timeframe=args.timeframe)
                    for source in sources}
        quality = {source: report_data_quality(candles, args, label=source)
                   for source, candles in datasets.items()}
        data = datasets if len(datasets) > 1 else next(iter(datasets.values()))
        result = sweep(args.strategy, data, parse_grid(args.grid) or None, cash=args.cash,
                       timeframe=args.timeframe, calendar=args.calendar,
                       check_lookahead_bias=not args.no_lookahead_check,
                       progress=not args.json, cluster=args.cluster, **settings_from(args))
    except MMATSError as error:
        return fail(error)
    if args.heatmap:
        try:
            result.plot(metric=args.objective, path=args.heatmap)
        except (MMATSError, OSError) as error:  # e.g. a grid with no parameter, a full disk
            return fail(error)
    if args.json:
        print_json({
            "strategy": result.strategy,
            "rows": result.table.to_dict(orient="records"),
            "skipped": result.skipped,
            "timing": {"seconds": result.seconds,
                       "bar_combinations_per_s": result.bar_combinations_per_s},
            # one source: its report; several: a report per source
            "data_quality": quality if len(quality) > 1 else next(iter(quality.values())),
        })
        return 0
    for source, report in quality.items():
        print(f"{source} {report['summary']}" if len(quality) > 1 else report["summary"])
    table = result.best(args.objective, args.top)
    with_pandas_width(lambda: print(table.to_string(index=False, float_format="%.4g")))
    print(f"\n{len(result.table)} combinations ({result.skipped} skipped as invalid) in "
          f"{result.seconds:.3f} s: {result.bar_combinations_per_s / 1e6:.1f} M "
          "bar-combinations/s")
    return 0


def add_cluster_option(parser) -> None:
    """``--cluster``: run the batches on a Dask cluster (the same figures as locally)."""
    parser.add_argument("--cluster", metavar="SPEC",
                        help="run on Dask: tcp://HOST:8786 (a running scheduler) or local:N "
                        "(N worker processes here); same results as the local run")


def with_pandas_width(action):
    import pandas as pd

    with pd.option_context("display.width", 200, "display.max_columns", 30):
        action()

