"""Sweep a strategy's parameter grid in one fused numba kernel: one row per combination.

examples:
  mmats sweep                                     # ema_cross's grid on bittrex:ETH/BTC:5m
  mmats sweep --strategy ema_cross --data bittrex:ETH/BTC:5m \\
      --grid fast=5:50:5,slow=20:200:10 --json
  mmats sweep --strategy rsi_reversion --data bittrex:ETH/BTC:5m --data bittrex:LTC/BTC:5m \\
      --heatmap heatmap.png
  mmats sweep --cluster tcp://10.0.0.5:8786       # the grid in batches on a Dask cluster
  mmats sweep --cluster local:2                   # ... or on two worker processes here
  mmats sweep --search tpe --trials 2000 --seed 1 # try 2000 combinations of a large grid
  mmats sweep --search halving --trials 6000      # many on short prefixes, the best on all

--search tpe (Optuna's TPE) or halving (successive halving) tries --trials combinations
of the grid instead of every one; the table has a row for each scored on the whole
history and "tried" counts every one tried (the number a deflated Sharpe ratio counts).

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
    add_search_options(parser)
    add_json_option(parser)
    add_cost_options(parser)
    add_data_quality_options(parser)
    args = parser.parse_args(argv)
    sources = args.data or [DEFAULT_DATA]
    try:
        from mmats.backtest import sweep
        from mmats.data import load

        searching = search_options(args)

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
                       progress=not args.json, cluster=args.cluster, **searching,
                       **settings_from(args))
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
            **({"search": search_summary(result, searching)} if searching else {}),
        })
        return 0
    for source, report in quality.items():
        print(f"{source} {report['summary']}" if len(quality) > 1 else report["summary"])
    table = result.best(args.objective, args.top)
    with_pandas_width(lambda: print(table.to_string(index=False, float_format="%.4g")))
    if searching:
        print(f"\n{searching['search']} search (seed {searching['seed']}): "
              f"{result.n_trials} combinations tried, {len(result.table)} scored on the "
              f"whole history ({result.skipped} skipped as invalid), kernel "
              f"{result.seconds:.3f} s: {result.bar_combinations_per_s / 1e6:.1f} M "
              "bar-combinations/s")
        return 0
    print(f"\n{len(result.table)} combinations ({result.skipped} skipped as invalid) in "
          f"{result.seconds:.3f} s: {result.bar_combinations_per_s / 1e6:.1f} M "
          "bar-combinations/s")
    return 0


def add_search_options(parser, *, seed: bool = True) -> None:
    """``--search tpe|halving`` and ``--trials N`` (and ``--seed N``): try part of the
    grid (:mod:`mmats.search`). Read as text and checked by :func:`search_options`, so a
    bad value is one plain error line (exit 2), not argparse's usage block."""
    parser.add_argument("--search", metavar="tpe|halving",
                        help="try --trials combinations of the grid instead of every one: "
                        "tpe (Optuna's TPE, in batches) or halving (successive halving)")
    parser.add_argument("--trials", metavar="N",
                        help="combinations a --search tries (default 200)")
    if seed:
        parser.add_argument("--seed", metavar="N",
                            help="seed of the --search, to repeat it (default 0)")


def search_options(args, *, seed_option: bool = True) -> dict:
    """The ``search=``, ``trials=``, ``seed=`` of sweep() / walk-forward from
    ``--search``, ``--trials`` and ``--seed``; {} without ``--search``. Raises
    :class:`~mmats.errors.ConfigError` naming the option at fault. ``seed_option=False``:
    ``--seed`` is the command's own (walk-forward's Monte Carlo seed), which the search
    shares.

    >>> import argparse
    >>> search_options(argparse.Namespace(search="tpe", trials="50", seed=None))
    {'search': 'tpe', 'trials': 50, 'seed': 0}
    """
    from mmats.errors import ConfigError
    from mmats.search import METHODS

    seed = getattr(args, "seed", None)
    if args.search is None:
        given = [name for name, value in (("--trials", args.trials),
                                          ("--seed", seed if seed_option else None))
                 if value is not None]
        if given:
            raise ConfigError(f"{' and '.join(given)} go with --search tpe|halving; without "
                              "--search every combination of the grid is swept")
        return {}
    if args.search not in METHODS:
        raise ConfigError(f"--search {args.search!r} is not a search method: give "
                          f"{' or '.join(METHODS)}")
    return {"search": args.search,
            "trials": _whole("--trials", args.trials, 1, 200),
            "seed": _whole("--seed", seed, 0, 0)}


def _whole(option: str, text, low: int, default: int) -> int:
    from mmats.errors import ConfigError

    if text is None:
        return default
    value = str(text).strip()
    if not value.isdigit() or int(value) < low:
        raise ConfigError(f"{option} {text!r} is not a whole number >= {low}")
    return int(value)


def search_summary(result, searching: dict) -> dict:
    """What ``--json`` adds about a search: method, seed, trials asked and tried, and the
    best score after each batch or rung."""
    history = result.history.to_dict(orient="records")
    return {"method": searching["search"], "seed": searching["seed"],
            "trials": searching["trials"], "n_trials": result.n_trials,
            "scored_on_whole_history": len(result.table), "history": history}


def add_cluster_option(parser) -> None:
    """``--cluster``: run the batches on a Dask cluster (the same figures as locally)."""
    parser.add_argument("--cluster", metavar="SPEC",
                        help="run on Dask: tcp://HOST:8786 (a running scheduler) or local:N "
                        "(N worker processes here); same results as the local run")


def with_pandas_width(action):
    import pandas as pd

    with pd.option_context("display.width", 200, "display.max_columns", 30):
        action()

