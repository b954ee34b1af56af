"""Walk-forward research report on the sample data shipped with MMATS (or your own).

examples:
  mmats walkforward                               # ema_cross on bittrex:ETH/BTC:5m
  mmats walkforward --strategy donchian_breakout --data nasdaq:GOOG:1d --json
  mmats walkforward --train 7d --test 2d           # re-optimised every 2 days
  mmats walkforward --cluster local:2             # folds, sweep and Monte Carlo on Dask
  mmats walkforward --search tpe --trials 500     # each fold tries 500 combinations

Sweeps the grid on each training window, trades the next window with the best
parameters, then judges the stitched out-of-sample result: Monte Carlo, deflated Sharpe
ratio, probability of backtest overfitting and Hansen's SPA. Writes a quantstats
tearsheet, an HTML report and its PDF under reports/ and prints their paths
(--no-tearsheet and --no-pdf leave those out). A research result, charts, the
tearsheet and the PDF's middle pages made before from the same data, options and code are
taken from a cache, which --no-cache bypasses: the research is deterministic (its bootstraps are seeded).

exit codes: 0 done (whatever the verdict: read it); 2 usage or input error (a bad option,
a missing or unreadable file, a strategy that breaks its contract or peeks ahead, a
reports folder that cannot be written). 1 is unused.
"""

import sys
import time

from mmats.cli import (
    add_cost_options,
    add_data_option,
    add_data_quality_options,
    add_json_option,
    add_strategy_option,
    check_output_folder,
    command_parser,
    fail,
    parse_grid,
    print_json,
    report_data_quality,
    settings_from,
)
from mmats.cli.sweep import add_cluster_option, add_search_options, search_options
from mmats.errors import MMATSError

OBJECTIVES = ["sharpe", "sortino", "cagr", "profit_factor", "total_return"]


def main(argv=None, prog="mmats walkforward") -> int:
    parser = command_parser(prog, __doc__)
    add_strategy_option(parser)
    add_data_option(parser)
    parser.add_argument("--grid", help="e.g. fast=5:50:5,slow=20|50|100 (default: PARAMS)")
    parser.add_argument("--folds", type=int, help="walk-forward folds tiling the data (5)")
    parser.add_argument("--train-fraction", type=float,
                        help="training share of each fold's window (0.7)")
    parser.add_argument("--train", help="training window in bars (500) or time (180d); "
                        "with --test, instead of --folds / --train-fraction")
    parser.add_argument("--test", help="test window in bars or time (30d)")
    parser.add_argument("--step", help="how far each fold moves forward, in bars or time "
                        "(default: the test length; longer leaves untraded gaps)")
    parser.add_argument("--anchored", action="store_true",
                        help="training windows all start at the first bar")
    parser.add_argument("--embargo", default="0",
                        help="bars (or time such as 1h) left out between train and test")
    parser.add_argument("--objective", default="sharpe", choices=OBJECTIVES)
    parser.add_argument("--selection", default="best", choices=["best", "robust"],
                        help="best score, or best median over neighbouring grid cells")
    parser.add_argument("--mc-runs", type=int, default=1000, help="Monte Carlo runs (1000)")
    parser.add_argument("--mc-method", default="bootstrap",
                        choices=["bootstrap", "block", "reshuffle"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reports", default="reports", help="output folder (reports/)")
    parser.add_argument("--no-tearsheet", action="store_true",
                        help="leave out the quantstats tearsheet (the slowest file to draw)")
    parser.add_argument("--no-pdf", action="store_true", help="leave out the PDF report")
    parser.add_argument("--no-cache", action="store_true",
                        help="compute the research and draw every chart, the tearsheet and "
                        "the PDF's pages afresh, not from the cache of results and parts made before from "
                        "the same inputs and code")
    parser.add_argument("--jobs", type=int,
                        help="processes drawing the reports at once: 1 draws them in order "
                        "here; 2 (the default with two cores) draws the tearsheet beside")
    parser.add_argument("--timings", action="store_true",
                        help="print the seconds spent on the research and on the reports "
                        "(to stderr)")
    add_cluster_option(parser)
    add_search_options(parser, seed=False)  # --seed above seeds the search too
    add_json_option(parser)
    add_cost_options(parser, fee_bps=10.0)  # research assumes a realistic fee
    add_data_quality_options(parser)
    args = parser.parse_args(argv)
    started, started_cpu = time.perf_counter(), cpu_seconds()
    pdf_worker = start_pdf_worker(args)  # imports the PDF writer beside the research
    try:
        from mmats.data import load

        check_output_folder("--reports", args.reports)
        check_jobs(args.jobs)
        embargo = int(args.embargo) if args.embargo.isdigit() else args.embargo
        windows = window_options(args)
        searching = search_options(args, seed_option=False)
        candles = load(args.data, root=args.root)  # bad input fails before the heavy imports
        quality = report_data_quality(candles, args, label=args.data)  # gaps warn on stderr, never filled
        from mmats.distributed import connect
        from mmats.validate.research import cached_research

        with connect(args.cluster) as cluster:  # one cluster for the folds, sweep and MC
            research = cached_research(
                args.strategy, candles, parse_grid(args.grid) or None, **windows,
                anchored=args.anchored, embargo=embargo,
                objective=args.objective, selection=args.selection, mc_runs=args.mc_runs,
                mc_method=args.mc_method, seed=args.seed, cash=args.cash,
                progress=not args.json, cluster=cluster, cache=not args.no_cache,
                **{k: v for k, v in searching.items() if k != "seed"}, **settings_from(args))
        researched, researched_cpu = time.perf_counter(), cpu_seconds()
        from mmats.reports.research_report import write_research_report

        paths = write_research_report(research, args.reports, tearsheet=not args.no_tearsheet,
                                      pdf=not args.no_pdf, jobs=args.jobs,
                                      cache=not args.no_cache, pdf_worker=pdf_worker)
        if pdf_worker is not None:
            pdf_worker.wait()
    except (MMATSError, OSError) as error:  # OSError: writing the reports (fail names it)
        return fail(error)
    finally:
        if pdf_worker is not None:
            pdf_worker.close()  # nothing sent (an error before the reports): it just ends
    if args.timings:
        print(f"timings: research {researched - started:.2f} s, reports "
              f"{time.perf_counter() - researched:.2f} s (CPU: research "
              f"{researched_cpu - started_cpu:.2f} s, reports "
              f"{cpu_seconds() - researched_cpu:.2f} s)", file=sys.stderr)
    summary = research.summary()
    summary["data_quality"] = quality  # with the warnings the limits gave
    summary["reports"] = {name: str(path) for name, path in paths.items()}
    if args.json:
        print_json(summary)
        return 0
    print_summary(research, args, paths, quality)
    return 0


def start_pdf_worker(args):
    """A process forked now to write the PDF report (:mod:`mmats.reports.pdf_worker`),
    or None: without a PDF, with --jobs 1, or where there is no fork or one core."""
    if args.no_pdf or (args.jobs is not None and args.jobs < 2):
        return None
    from mmats.reports.pdf_worker import start_pdf_worker as start

    return start()


def cpu_seconds() -> float:
    """CPU time of this process and of its finished workers (user + system)."""
    import resource

    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def check_jobs(jobs) -> None:
    """Refuse --jobs below 1 before any work (ConfigError, exit 2)."""
    from mmats.errors import ConfigError

    if jobs is not None and jobs < 1:
        raise ConfigError(f"--jobs {jobs}: give 1 (draw the reports in order, in this "
                          "process) or more (the tearsheet in a worker process beside it)")


def window_options(args) -> dict:
    """The walk-forward windows: --folds / --train-fraction, or --train / --test / --step."""
    from mmats.errors import ConfigError

    lengths = {name: parse_length(f"--{name}", getattr(args, name))
               for name in ("train", "test", "step")}
    if lengths["train"] is None and lengths["test"] is None:
        if lengths["step"] is not None:
            raise ConfigError("--step needs --train and --test (with --folds the test "
                              "windows tile the data, one after another)")
        return {"folds": 5 if args.folds is None else args.folds,
                "train_fraction": 0.7 if args.train_fraction is None else args.train_fraction}
    if lengths["train"] is None or lengths["test"] is None:
        raise ConfigError("--train and --test go together: give both window lengths")
    if args.folds is not None or args.train_fraction is not None:
        raise ConfigError("give either --folds / --train-fraction (equal folds tiling the "
                          "data) or --train / --test (window lengths; the number of folds "
                          "follows from the data's length), not both")
    return {"folds": None, **lengths}


def parse_length(option, text):
    """Bars (``"500"`` -> 500) or a duration (``"180d"``); None stays None."""
    from mmats.data.calendar import timeframe_ns
    from mmats.errors import ConfigError

    if text is None:
        return None
    text = text.strip()
    if text.isdigit() and int(text) > 0:
        return int(text)
    try:
        timeframe_ns(text)
    except ConfigError:
        raise ConfigError(f"{option} {text!r} is not a length: give a positive number of "
                          "bars (e.g. 500) or a duration (e.g. 180d, 12h, 4w)") from None
    return text


def print_summary(research, args, paths, quality) -> None:
    import pandas as pd

    from mmats.types import METRIC_NAMES

    wf = research.walk_forward
    names = [c for c in research.sweep.table.columns if c not in METRIC_NAMES
             and c != "symbol"]
    table = wf.folds[["fold", "test_start", "test_end", *names, "is_sharpe", "oos_sharpe",
                      "oos_total_return", "oos_max_drawdown", "oos_trades"]].copy()
    for column in ("test_start", "test_end"):
        table[column] = table[column].dt.strftime("%Y-%m-%d %H:%M")
    print(f"{wf.strategy} on {args.data}: {len(wf.folds)} folds, objective {wf.objective}, "
          f"{len(research.sweep.table)} combinations, fees {args.fee_bps:g} bps")
    print(quality["summary"])
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        print(table.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    metrics = wf.metrics
    print(f"\nout of sample: return {metrics['total_return']:+.2%}, Sharpe "
          f"{metrics['sharpe']:.2f}, max drawdown {metrics['max_drawdown']:.2%}, "
          f"{metrics['trades']} trades; buy and hold "
          f"{wf.benchmark.iloc[-1] / wf.oos.cash - 1:+.2%}")
    dsr = research.deflated_sharpe
    print(f"DSR {dsr.dsr:.3f} ({dsr.n_trials} trials, {dsr.n_observations} {research.period} "
          f"periods out of sample)   PBO {research.pbo.pbo:.2f}   "
          f"SPA p {research.spa.pvalue:.3f}   WFE {wf.efficiency:.2f}")
    print("\n" + research.verdict + "\n")
    for name, path in paths.items():
        print(f"{name:10s} {path}")

