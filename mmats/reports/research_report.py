"""The research report: a quantstats tearsheet of the stitched out-of-sample returns, and
a walk-forward report (HTML and PDF) of the folds, the chosen parameters, the Monte Carlo
spread and the overfitting statistics of one :class:`~mmats.validate.research.ResearchResult`.

Example::

    research = run_research("ema_cross", load("bittrex:ETH/BTC:5m"), fee_bps=10)
    paths = write_research_report(research, "reports")
    paths["html"]   # reports/walkforward_ema_cross_ETH_BTC_20261122T013000Z.html
"""

from __future__ import annotations

import math
import os
import re
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from mmats.errors import ConfigError
from mmats.reports import charts
from mmats.reports.cache import is_cached
from mmats.reports.render import (
    Chart,
    Document,
    Heading,
    Section,
    Table,
    Text,
    write_html,
    write_pdf,
)
from mmats.reports.tearsheet import tearsheet_page, write_page
from mmats.units import DAY_NS

# how the tearsheet's worker starts: a fork shares the imports already made (pandas,
# matplotlib), where a fresh interpreter would spend a second importing them again
WORKER_START = "fork" if sys.platform.startswith("linux") else "spawn"
PERIODS = {  # research.period: (rate wording, returns wording)
    "bar": ("per bar", "per-bar"),
    "1h": ("per hour", "hourly"),
    "4h": ("per 4 hours", "4-hourly"),
    "1d": ("per day", "daily"),
}
PERCENTILE_ROWS = {  # MonteCarloResult statistic: (label, format)
    "final_equity": ("Final equity", "money"),
    "cagr": ("CAGR", "percent"),
    "max_drawdown": ("Max drawdown", "percent"),
    "longest_drawdown": ("Longest drawdown (bars)", "count"),
}


def write_research_report(research, directory: str | Path = "reports", *,
                          stem: str | None = None, tearsheet: bool = True, pdf: bool = True,
                          jobs: int | None = None, cache: bool = True,
                          pdf_worker=None) -> dict[str, Path]:
    """Write the tearsheet, the walk-forward HTML report and its PDF under ``directory``.

    Files are named ``{stem}_tearsheet.html``, ``{stem}.html`` and ``{stem}.pdf``; the
    default stem is ``walkforward_{strategy}_{symbol}_{UTC time}``. Nothing is
    downloaded and each file is written atomically. Returns the paths by kind:
    ``{"tearsheet": ..., "html": ..., "pdf": ...}``; ``tearsheet=False`` or ``pdf=False``
    leaves that file out (and the HTML page then does not link a tearsheet).

    ``jobs`` processes draw at once (default: 2 where there are two cores): the
    quantstats tearsheet, the slowest part, is drawn in a worker process while this one
    draws the report's charts, HTML and PDF; ``jobs=1`` draws everything here, in
    order. The files are the same either way. ``cache`` reuses parts rendered before
    from the same inputs (:mod:`mmats.reports.cache`); False draws everything afresh.
    ``pdf_worker``, a :class:`~mmats.reports.pdf_worker.PdfWorker` started before the
    research, writes the PDF while this process writes the HTML page (the caller waits
    for it: its ``wait()``).

    Example
    -------
    >>> paths = write_research_report(research, "reports")  # doctest: +SKIP
    >>> sorted(paths)  # doctest: +SKIP
    ['html', 'pdf', 'tearsheet']
    """
    wf = research.walk_forward
    stem = default_stem(research) if stem is None else _checked_stem(stem)
    jobs = default_jobs() if jobs is None else _checked_jobs(jobs)
    directory = Path(directory)
    paths = {"tearsheet": directory / f"{stem}_tearsheet.html",
             "html": directory / f"{stem}.html",
             "pdf": directory / f"{stem}.pdf"}
    if not tearsheet:
        del paths["tearsheet"]
    if not pdf:
        del paths["pdf"]
    page = tearsheet_page(  # inputs checked before anything is drawn or written
        wf.returns, benchmark=hold_returns(wf),
        title=f"{wf.strategy} on {_market_name(wf)}: walk-forward out of sample",
        periods_per_year=wf.market.periods_per_year,
        strategy_title=wf.strategy) if tearsheet else None
    document = research_document(research,
                                 tearsheet=paths["tearsheet"].name if tearsheet else None)
    with _TearsheetDrawing(page, paths.get("tearsheet"), jobs=jobs, cache=cache) as drawing:
        for chart in charts_of(document):
            chart.render(cache)
        if pdf and pdf_worker is not None:
            # with the tearsheet drawn beside, the worker's helper would only crowd it
            pdf_worker.write(document, paths["pdf"], cache, share=drawing.pool is None)
        write_html(document, paths["html"])
        if pdf and pdf_worker is None:
            write_pdf(document, paths["pdf"], cache=cache)
        drawing.finish()
    return paths


def default_jobs() -> int:
    """Processes that draw a report at once: 2 with two cores or more, else 1."""
    return 2 if (os.cpu_count() or 1) >= 2 else 1


def charts_of(document: Document) -> list[Chart]:
    """The charts of ``document``, in order."""
    return [block for section in document.sections for block in section.blocks
            if isinstance(block, Chart)]


class _TearsheetDrawing:
    """The tearsheet, written in a worker process while the caller draws the rest (jobs
    >= 2 and not cached), else in this process. :meth:`finish` waits for it and raises
    what it raised; leaving the block early stops the worker."""

    def __init__(self, page, path: Path | None, *, jobs: int, cache: bool):
        self.page, self.path, self.jobs, self.cache = page, path, jobs, cache
        self.pool = self.future = None

    def __enter__(self):
        if self.page is None:
            return self
        if self.jobs >= 2 and not (self.cache and is_cached(self.page.key)):
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            import matplotlib.figure  # noqa: F401 - both processes draw: import it once

            self.pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context(
                WORKER_START))
            self.future = self.pool.submit(write_page, self.page, self.path, self.cache)
        else:
            write_page(self.page, self.path, self.cache)
        return self

    def finish(self) -> None:
        if self.future is not None:
            self.future.result()

    def __exit__(self, kind, error, traceback):
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
        return False


def _checked_jobs(jobs) -> int:
    if isinstance(jobs, bool) or not isinstance(jobs, int | np.integer) or jobs < 1:
        raise ConfigError(f"jobs={jobs!r}: give 1 (draw everything in this process) or "
                          "more (the tearsheet in a worker process beside it)")
    return int(jobs)


def default_stem(research, now: datetime | None = None) -> str:
    """``walkforward_{strategy}_{symbol}_{YYYYmmddTHHMMSSZ}``, safe as a file name."""
    wf = research.walk_forward
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    parts = ["walkforward", wf.strategy, wf.market.symbol or "market", stamp]
    return "_".join(_safe(part) for part in parts)


def hold_returns(wf) -> pd.Series:
    """Per-bar returns of buy and hold over the out-of-sample span (the first bar's
    against the starting cash, as the strategy's)."""
    hold = wf.benchmark
    return (hold / hold.shift(1, fill_value=wf.oos.cash) - 1.0).rename("buy_and_hold")


def research_document(research, *, tearsheet: str | None = None) -> Document:
    """The walk-forward report as a :class:`~mmats.reports.render.Document`."""
    wf = research.walk_forward
    start, end = wf.equity.index[0], wf.equity.index[-1]
    subtitle = (f"{_market_name(wf)} · out of sample {_stamp(start, wf)} to "
                f"{_stamp(end, wf)} UTC · {len(wf.folds)} folds · objective "
                f"{wf.objective} ({wf.selection})")
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return Document(
        title=f"Walk-forward report: {wf.strategy} on {wf.market.symbol or 'market'}",
        subtitle=subtitle,
        sections=[_summary(research, tearsheet), *_data(research), _parameters(wf), _folds(wf),
                  _equity(wf),
                  _monte_carlo(research), _overfitting(research)],
        links=[("Tearsheet (quantstats)", tearsheet)] if tearsheet else [],
        footer=f"Generated by MMATS at {generated}. Times are UTC.",
    )


# --------------------------------------------------------------------------- sections


def _summary(research, tearsheet: str | None) -> Section:
    wf = research.walk_forward
    oos = wf.metrics
    hold = float(wf.benchmark.iloc[-1] / wf.oos.cash - 1.0)
    settings = wf.settings
    spa = _spa_pvalues(research.spa)
    mc = research.monte_carlo
    rows = [
        ("Strategy", wf.strategy),
        ("Market", _market_name(wf)),
        ("Out-of-sample span", f"{_stamp(wf.equity.index[0], wf)} to "
                               f"{_stamp(wf.equity.index[-1], wf)} ({len(wf.equity):,} bars)"),
        ("Walk-forward", f"{len(wf.folds)} {'anchored' if settings.get('anchored') else 'rolling'}"
                         f" folds; objective {wf.objective}, selection {wf.selection}"),
        ("Costs", f"fee {settings.get('fee_bps', 0):g} bps, slippage "
                  f"{settings.get('slippage_bps', 0):g} bps"),
        ("Combinations swept", f"{len(research.sweep.table):,}"),
        ("Out-of-sample return", _pct(oos["total_return"], sign=True)),
        ("Buy-and-hold return", _pct(hold, sign=True)),
        ("Sharpe ratio (annualised)", _num(oos["sharpe"])),
        ("Max drawdown", _pct(oos["max_drawdown"])),
        ("Trades", f"{oos['trades']:,}"),
        ("Win rate", _pct(oos["win_rate"])),
        ("Profit factor", _num(oos["profit_factor"])),
        ("Walk-forward efficiency", _num(wf.efficiency)),
        ("Deflated Sharpe ratio", _num(research.deflated_sharpe.dsr)),
        ("Probability of backtest overfitting", _pct(research.pbo.pbo, digits=0)),
        ("SPA p-value", _num(spa.get("consistent", math.nan))),
        ("Monte Carlo median final equity", _money(np.median(mc.final_equity))),
        ("Monte Carlo probability of ruin", _pct(mc.probability_of_ruin)),
    ]
    blocks = [Text(research.verdict, emphasis=True),
              Table(pd.DataFrame(rows, columns=["Measure", "Value"]))]
    if tearsheet:
        blocks.append(Text(f"The quantstats tearsheet of the out-of-sample returns against "
                           f"buy and hold is in {tearsheet}, beside this file."))
    return Section("summary", "Summary and verdict", blocks)


def _data(research) -> list[Section]:
    """The data's quality (``research.data_quality``, a DataQuality or its dict); none
    when the run did not record it."""
    quality = getattr(research, "data_quality", None)
    if quality is None:
        return []
    q = quality.to_dict() if hasattr(quality, "to_dict") else dict(quality)
    gap = q.get("largest_gap")
    share = q["missing_bars"] / q["expected_bars"] if q["expected_bars"] else 0.0
    rows = [
        ("Source", q.get("source") or "n/a"),
        ("Calendar and bar length", f"{q.get('calendar') or '?'}, {q.get('timeframe') or '?'}"),
        ("Span", f"{q.get('first_ts') or '?'} to {q.get('last_ts') or '?'}"),
        ("Bars", f"{q['bars']:,}"),
        ("Bars the calendar expects", f"{q['expected_bars']:,}"),
        ("Missing bars", f"{q['missing_bars']:,} ({_pct(share, digits=2)})"),
        ("Gaps with missing bars", f"{q['gap_count']:,}"),
        ("Largest gap", "none" if gap is None else
         f"{gap['missing_bars']:,} bar(s) missing between {gap['start']} and {gap['end']} "
         f"({gap['duration']} apart, {gap['kind']})"),
        ("Zero-volume bars", f"{q['zero_volume_bars']:,}"),
        ("Rows rejected at import", f"{q['rejected_rows']:,}" if q.get("rejected_rows_known")
         else "not recorded"),
        ("Rows repaired", f"{q['repaired_rows']:,}"),
    ]
    blocks = [Text("Missing bars are counted against the calendar: weekends and closed hours "
                   "of forex and stock markets are not missing. Nothing was filled: the run "
                   "steps from the bar before a gap to the bar after it."),
              Table(pd.DataFrame(rows, columns=["Measure", "Value"]))]
    blocks += [Text(note) for note in q.get("notes", [])]
    blocks += [Text(f"Warning: {warning}", emphasis=True) for warning in q.get("warnings", [])]
    return [Section("data", "Data", blocks)]


def _parameters(wf) -> Section:
    title = "In-sample parameter heatmap"
    names = param_names(wf.folds)
    if not names:
        return Section("parameters", title, [Text("The strategy has no parameters to sweep.")])
    objective = wf.objective if wf.objective in wf.in_sample[0].columns else "sharpe"
    table = pd.concat([t.assign(_fold=i) for i, t in enumerate(wf.in_sample)],
                      ignore_index=True)
    table[objective] = table[objective].astype("float64").replace([np.inf, -np.inf], np.nan)
    counts = {name: table[name].nunique() for name in names}
    varying = [name for name in names if counts[name] > 1]
    axes = sorted(varying, key=lambda name: -counts[name])[:2]  # stable: ties keep PARAMS order
    fixed = {name: table[name].max() for name in varying if name not in axes}
    chosen_rows = wf.folds
    for name, value in fixed.items():
        table = table[table[name] == value]
        chosen_rows = chosen_rows[chosen_rows[name] == value]
    if not axes:
        return Section("parameters", title, [Text(
            "Only one combination was swept, so there is no parameter map to draw.")])
    held = ", ".join(f"{name} = {charts.format_value(value)}" for name, value in fixed.items())
    intro = (f"Each fold swept {len(wf.in_sample[0]):,} combinations on its training window "
             f"and chose one by {wf.objective} ({wf.selection}). ")
    if len(axes) == 1:
        curves = table.pivot_table(index=axes[0], columns="_fold", values=objective,
                                   aggfunc="mean")
        chart = Chart.drawn_by(charts.parameter_line, curves, objective=objective,
                               chosen=list(chosen_rows[axes[0]]))
        text = intro + (f"The line is {objective} against {axes[0]}, averaged over the folds"
                        + (f", with {held}" if held else "") + "; circles mark values a fold "
                        "chose. A broad plateau is more trustworthy than a lone peak.")
    else:
        x, y = axes
        grid = table.groupby([y, x])[objective].mean().unstack(x)
        chart = Chart.drawn_by(charts.parameter_heatmap, grid, objective=objective,
                               folds=len(wf.in_sample),
                               chosen={int(row["fold"]): (row[y], row[x])
                                       for _, row in chosen_rows.iterrows()},
                               note=held)
        text = intro + (f"The map shows {objective} over {x} and {y} (the parameters with the "
                        "most values), averaged over the folds" + (f", with {held}" if held
                        else "") + ". Outlined cells were chosen by a fold; grey cells were "
                        "not run. A broad region of good values is more trustworthy than a "
                        "lone bright cell.")
    return Section("parameters", title, [Text(text), chart])


def _folds(wf) -> Section:
    folds = wf.folds
    names = param_names(folds)
    frame = pd.DataFrame({
        "Fold": folds["fold"].astype(int).astype(str),
        "Train start": [_stamp(t, wf) for t in folds["train_start"]],
        "Train end": [_stamp(t, wf) for t in folds["train_end"]],
        "Test start": [_stamp(t, wf) for t in folds["test_start"]],
        "Test end": [_stamp(t, wf) for t in folds["test_end"]],
    })
    for name in names:
        frame[name] = [charts.format_value(v) for v in folds[name]]
    if wf.objective not in ("sharpe", "total_return"):
        frame[f"IS {wf.objective}"] = [_num(v) for v in folds["is_score"]]
    frame["IS Sharpe"] = [_num(v) for v in folds["is_sharpe"]]
    frame["OOS Sharpe"] = [_num(v) for v in folds["oos_sharpe"]]
    frame["IS return"] = [_pct(v, sign=True) for v in folds["is_total_return"]]
    frame["OOS return"] = [_pct(v, sign=True) for v in folds["oos_total_return"]]
    frame["IS max DD"] = [_pct(v) for v in folds["is_max_drawdown"]]
    frame["OOS max DD"] = [_pct(v) for v in folds["oos_max_drawdown"]]
    frame["OOS trades"] = [f"{int(v):,}" for v in folds["oos_trades"]]
    better = int((folds["oos_total_return"] > 0).sum())
    text = (f"Training windows of {int(folds['train_bars'].iloc[0]):,} bars, test windows of "
            f"{int(folds['test_bars'].iloc[0]):,} bars (the last one may be longer); each "
            f"test window trades the parameters chosen on the training window before it, "
            f"carrying positions and cash over. {better} of {len(folds)} folds made money "
            "out of sample. IS = in sample (training), OOS = out of sample (test); Sharpe "
            "ratios are annualised.")
    return Section("folds", "Walk-forward folds", [Text(text), Table(frame)])


def _equity(wf) -> Section:
    chart = Chart.drawn_by(charts.equity_chart, wf.equity, wf.benchmark,
                           list(wf.folds["test_start"]),
                           title=f"{wf.strategy} out of sample vs buy and hold")
    final, hold = float(wf.equity.iloc[-1]), float(wf.benchmark.iloc[-1])
    text = (f"The test windows stitched into one run from {_money(wf.oos.cash)}: it ended at "
            f"{_money(final)} against {_money(hold)} for buying at the first out-of-sample "
            "open and holding (no costs). Dotted lines mark where each fold's test window "
            "starts; the lower panel is the strategy's drawdown.")
    return Section("equity", "Out-of-sample equity vs buy and hold", [Text(text), chart])


def _monte_carlo(research) -> Section:
    wf, mc = research.walk_forward, research.monte_carlo
    actual = None
    if mc.steps == len(wf.returns) and mc.method != "reshuffle":
        path = np.concatenate([[wf.oos.cash], wf.equity.to_numpy()])
        actual = charts.thin(pd.Series(path, index=np.arange(len(path))))
    fan = Chart.drawn_by(charts.fan_chart, mc.fan, actual, runs=mc.runs, method=mc.method,
                         start_equity=mc.start_equity)
    drawdowns = Chart.drawn_by(charts.histogram, mc.max_drawdown,
                               title="Maximum drawdown of each run",
                               xlabel="maximum drawdown", percent=True, ylabel="runs",
                               marker=wf.metrics["max_drawdown"],
                               marker_label="realised out of sample")
    percentiles = mc.percentiles()
    table = pd.DataFrame({"Statistic": [PERCENTILE_ROWS.get(n, (n, "number"))[0]
                                        for n in percentiles.index]})
    for q in percentiles.columns:
        table[f"{q:g}th pct"] = [_format(v, PERCENTILE_ROWS.get(n, (n, "number"))[1])
                                 for n, v in percentiles[q].items()]
    block = f", mean block length {mc.block_length:.1f}" if mc.block_length else ""
    if mc.method == "reshuffle":
        how = (f"The {mc.steps:,} out-of-sample trades were put in a new order {mc.runs:,} "
               f"times (reshuffle, seed {mc.seed}; every run ends at the same equity)")
    else:
        how = (f"The {mc.steps:,} out-of-sample bar returns were resampled {mc.runs:,} times "
               f"({mc.method}{block}, seed {mc.seed})")
    intro = (f"{how}, each run compounding from {_money(mc.start_equity)}. The fan shows the "
             "spread of equity paths; the histogram, how deep the worst drawdown of a run of "
             "this length can be.")
    odds = (f"Probability of ruin (equity falling {mc.ruin_fraction:.0%} below the start): "
            f"{_pct(mc.probability_of_ruin)}. Probability of a drawdown of "
            f"{mc.drawdown_limit:.0%} or deeper: {_pct(mc.probability_of_drawdown)}.")
    return Section("monte-carlo", "Monte Carlo", [
        Text(intro), fan, drawdowns,
        Table(table, caption="Percentiles of each statistic across runs."), Text(odds)])


def _overfitting(research) -> Section:
    dsr, pbo, spa = research.deflated_sharpe, research.pbo, research.spa
    per, kind = PERIODS.get(research.period, (f"per {research.period}", research.period))
    wf, span = research.walk_forward, research.trial_returns.index
    span_text = f"{_stamp(span[0], wf)} to {_stamp(span[-1], wf)}"
    blocks = [Text(f"These statistics use {kind} returns. The deflated Sharpe ratio tests "
                   f"the stitched out-of-sample ones against every swept combination's over "
                   f"the same {dsr.n_observations:,} periods ({span_text}); PBO and SPA "
                   "compare every swept combination over the whole history.")]
    value = float(dsr.dsr)
    blocks += [
        Heading("Deflated Sharpe ratio (DSR)"),
        Text(f"DSR = {value:.2f}: the probability that the true Sharpe ratio exceeds "
             f"{dsr.sr0:.3f} {per}, the best that {dsr.n_trials:,} "
             "luck-only trials would be expected to reach. "
             + ("At 0.95 or above the Sharpe ratio survives the search."
                if value >= 0.95 else
                "Below 0.95 it cannot be told apart from the luck of the search.")),
        Table(pd.DataFrame([
            ("Deflated Sharpe ratio", _num(value)),
            (f"Sharpe ratio ({per})", _num(dsr.sharpe, 3)),
            (f"Expected best of the trials, SR0 ({per})", _num(dsr.sr0, 3)),
            ("Trials (combinations swept)", f"{dsr.n_trials:,}"),
            ("Observations (tested and trials)", f"{dsr.n_observations:,}"),
            ("Span (tested and trials)", span_text),
            ("Skewness", _num(dsr.skewness)),
            ("Kurtosis (3 = normal)", _num(dsr.kurtosis)),
        ], columns=["Measure", "Value"])),
    ]
    value = float(pbo.pbo)
    blocks += [
        Heading("Probability of backtest overfitting (PBO)"),
        Text(f"PBO = {value:.0%}: in {value:.0%} of the {pbo.n_combinations:,} ways of "
             f"splitting the history's {pbo.n_splits} blocks into halves, the combination "
             "best in one half ranked in the bottom half of the other. "
             + ("Below 20% the optimisation looks sound." if value < 0.2 else
                "Between 20% and 50% the in-sample best is a weak guide out of sample."
                if value < 0.5 else
                "At 50% or above the optimisation is fitting noise.")),
        Chart.drawn_by(charts.histogram, pbo.logits, title="Logits of the out-of-sample rank "
                       "of the in-sample best", xlabel="logit (≤ 0: bottom half out of "
                       "sample)", marker=0.0, marker_label="median rank", ylabel="splits",
                       bins=20),
        Table(pd.DataFrame([
            ("PBO", _pct(value, digits=0)),
            ("Blocks (CSCV splits)", f"{pbo.n_splits}"),
            ("In/out-of-sample halvings", f"{pbo.n_combinations:,}"),
            ("Combinations compared", f"{pbo.n_strategies:,}"),
            ("Probability of an out-of-sample loss", _pct(pbo.probability_of_loss, digits=0)),
            ("Performance degradation slope", _num(pbo.degradation_slope)),
        ], columns=["Measure", "Value"])),
    ]
    pvalues = _spa_pvalues(spa)
    p = pvalues.get("consistent", math.nan)
    best = _combination(research, getattr(spa, "best", None))
    blocks += [
        Heading("Superior predictive ability (Hansen's SPA test)"),
        Text(f"SPA p = {p:.2f}, for the hypothesis that no swept combination beats buy and "
             "hold. " + ("Below 0.05 at least one combination beats buy and hold beyond data "
                         "snooping." if p < 0.05 else "At 0.05 or above none does once the "
                         "number of combinations tried is accounted for.")),
        Table(pd.DataFrame(
            [(f"p-value ({name})", _num(v, 3)) for name, v in pvalues.items()]
            + ([("Best combination", best)] if best else [])
            + ([(f"Its mean excess return ({per})", _pct(spa.best_mean_excess, digits=3))]
               if hasattr(spa, "best_mean_excess") else []),
            columns=["Measure", "Value"]),
            caption="Hansen recommends the consistent p-value; lower and upper bound it "
                    "(upper is White's Reality Check)."),
    ]
    return Section("overfitting", "Overfitting", blocks)


# --------------------------------------------------------------------------- helpers


def param_names(folds: pd.DataFrame) -> list[str]:
    """The parameter columns of a walk-forward fold table (between the bar counts and
    the in-sample score)."""
    columns = list(folds.columns)
    return columns[columns.index("test_bars") + 1:columns.index("is_score")]


def _spa_pvalues(spa) -> dict[str, float]:
    names = {"lower": "pvalue_lower", "consistent": "pvalue_consistent",
             "upper": "pvalue_upper"}
    values = {key: float(getattr(spa, name)) for key, name in names.items()
              if hasattr(spa, name)}
    if not values and hasattr(spa, "pvalue"):
        values["consistent"] = float(spa.pvalue)
    return values


def _combination(research, position) -> str:
    """The parameters of sweep column ``position`` (the table's row), e.g. "fast 5, slow 30"."""
    table = research.sweep.table
    if not isinstance(position, int | np.integer) or not 0 <= position < len(table):
        return ""
    names = [n for n in param_names(research.walk_forward.folds) if n in table.columns]
    row = table.iloc[int(position)]
    return ", ".join(f"{name} {charts.format_value(row[name])}" for name in names)


def _market_name(wf) -> str:
    market = wf.market
    venue = f" ({market.venue})" if market.venue else ""
    return f"{market.symbol or 'market'}{venue}, {market.timeframe} bars"


def _stamp(stamp, wf) -> str:
    """A UTC time as text: the date alone for daily or longer bars."""
    stamp = pd.Timestamp(stamp)
    stamp = stamp.tz_convert("UTC") if stamp.tzinfo is not None else stamp
    return stamp.strftime("%Y-%m-%d" if wf.market.bar_ns >= DAY_NS else "%Y-%m-%d %H:%M")


def _checked_stem(stem: str) -> str:
    if not stem or stem in (".", "..") or re.search(r"[/\\\x00]", stem):
        raise ConfigError(f"stem={stem!r} must be a plain file name (no directories)")
    return stem


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "_", str(text)).strip("_") or "x"


def _finite(value) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _pct(value, digits: int = 1, sign: bool = False) -> str:
    if not _finite(value):
        return "n/a" if value is None or np.isnan(float(value)) else str(value)
    return f"{float(value):{'+' if sign else ''},.{digits}%}"


def _num(value, digits: int = 2) -> str:
    if not _finite(value):
        return "n/a" if value is None or np.isnan(float(value)) else str(float(value))
    return f"{float(value):,.{digits}f}"


def _money(value) -> str:
    return f"{float(value):,.2f}" if _finite(value) else "n/a"


def _format(value, kind: str) -> str:
    if kind == "percent":
        return _pct(value)
    if kind == "money":
        return _money(value)
    if kind == "count":
        return f"{float(value):,.0f}" if _finite(value) else "n/a"
    return _num(value)
