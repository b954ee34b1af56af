"""matplotlib figures of the research report; each function returns a ``Figure``.

Figures are built without pyplot (no global figure registry, no backend needed to draw
them), so a report can be written from a notebook or a server alike. Long series are
thinned to a few thousand points: the charts look the same and the PDF stays small.
matplotlib is imported by the functions that draw, not by this module: a report whose
charts are all in the cache of rendered parts is written without importing it. The
house style and the helpers shared with ``result.plot()`` (:func:`~mmats.plots.style`,
:func:`~mmats.plots.thin`, :func:`~mmats.plots.heatmap_axes`, ...) live in
:mod:`mmats.plots`, below the backtest.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from mmats.plots import (
    ACCENT,
    BENCHMARK,
    STRATEGY,
    heatmap_axes,
    style,
    text_colour,
    thin,
)
from mmats.plots import format_value as format_value  # the report reads it as charts.format_value

if TYPE_CHECKING:
    from matplotlib.figure import Figure

WIDE = (10.0, 4.6)


def _styled(build: Callable[..., Figure]) -> Callable[..., Figure]:
    """Build the figure under :func:`style`: most settings are read when artists are made."""

    @functools.wraps(build)
    def wrapper(*args, **kwargs) -> Figure:
        with style():
            return build(*args, **kwargs)

    return wrapper


@_styled
def parameter_heatmap(
    grid: pd.DataFrame,
    *,
    objective: str,
    folds: int,
    chosen: Mapping[int, tuple] | None = None,
    note: str = "",
) -> Figure:
    """Heatmap of ``grid`` (rows: one parameter's values, columns: another's; cells: the
    mean in-sample objective; NaN where a combination was not run). ``chosen`` maps a fold
    number to the (row value, column value) it picked: those cells are outlined and
    labelled."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    figure = Figure(figsize=(min(10.0, max(6.5, 1.6 + 0.8 * grid.shape[1])),
                             min(7.0, max(4.2, 1.6 + 0.5 * grid.shape[0]))),
                    layout="constrained")
    ax, image, values = heatmap_axes(figure, grid)
    rows, columns = list(grid.index), list(grid.columns)
    picked: dict[tuple[int, int], list[int]] = {}
    for fold, (row_value, column_value) in (chosen or {}).items():
        if row_value in rows and column_value in columns:
            picked.setdefault((rows.index(row_value), columns.index(column_value)), []).append(fold)
    annotate = grid.size <= 300
    size = 9.0 if grid.shape[1] <= 8 else 8.0 if grid.shape[1] <= 12 else 6.5
    for (row, column), value in np.ndenumerate(values):
        label = f"{value:.2f}" if annotate and np.isfinite(value) else ""
        if (row, column) in picked:
            ax.add_patch(Rectangle((column - 0.5, row - 0.5), 1, 1, fill=False,
                                   edgecolor="black", linewidth=2.0))
            if annotate:
                names = ",".join(str(f) for f in picked[row, column])
                label += ("\nfold " if len(picked[row, column]) == 1 else "\nfolds ") + names
        if label:
            ax.text(column, row, label, ha="center", va="center", fontsize=size,
                    linespacing=1.4, color=text_colour(image, value))
    figure.colorbar(image, ax=ax, label=f"in-sample {objective}, mean of {folds} folds")
    ax.set_title(f"In-sample {objective} by parameters" + (f" ({note})" if note else ""))
    return figure


@_styled
def parameter_line(curves: pd.DataFrame, *, objective: str, chosen: Sequence = ()) -> Figure:
    """The in-sample objective against a single parameter: one faint line per fold
    (columns of ``curves``) and their mean; values chosen by a fold are marked."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=WIDE, layout="constrained")
    ax = figure.add_subplot()
    for column in curves.columns:
        ax.plot(curves.index, curves[column], color=STRATEGY, alpha=0.25, linewidth=1)
    mean = curves.mean(axis=1)
    ax.plot(curves.index, mean, color=STRATEGY, linewidth=2, marker="o", markersize=3,
            label=f"mean of {curves.shape[1]} folds")
    picked = [value for value in chosen if value in mean.index]
    if picked:
        ax.scatter(picked, mean.loc[picked], s=60, facecolor="none", edgecolor="black",
                   zorder=3, label="chosen by a fold")
    ax.set_xlabel(str(curves.index.name))
    ax.set_ylabel(f"in-sample {objective}")
    ax.set_title(f"In-sample {objective} by {curves.index.name}")
    ax.legend()
    return figure


@_styled
def equity_chart(equity: pd.Series, benchmark: pd.Series, fold_starts: Sequence,
                 *, title: str) -> Figure:
    """Out-of-sample equity against buy and hold, with fold boundaries, and the
    strategy's drawdown underneath."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import PercentFormatter

    figure = Figure(figsize=(10.0, 5.6), layout="constrained")
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    strategy, hold = thin(_naive(equity)), thin(_naive(benchmark))
    top.plot(strategy.index, strategy.to_numpy(), color=STRATEGY, linewidth=1.3,
             label="strategy (out of sample)")
    top.plot(hold.index, hold.to_numpy(), color=BENCHMARK, linewidth=1.1, label="buy and hold")
    for i, start in enumerate(fold_starts):
        for ax in (top, bottom):
            ax.axvline(_naive_time(start), color="#999999", linestyle=":", linewidth=0.9)
        top.annotate(f"fold {i}", (_naive_time(start), 1.0), xycoords=("data", "axes fraction"),
                     fontsize=7, color="#666666", va="top", ha="left", xytext=(2, 0),
                     textcoords="offset points")
    top.set_ylabel("equity")
    top.set_title(title)
    figure.legend(loc="outside lower center", ncol=2)
    values = equity.to_numpy()
    drawdown = thin(pd.Series(values / np.maximum.accumulate(values) - 1.0,
                              index=_naive(equity).index))
    bottom.fill_between(drawdown.index, drawdown.to_numpy(), 0.0, color=ACCENT, alpha=0.35,
                        linewidth=0)
    bottom.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    bottom.set_ylabel("drawdown")
    return figure


@_styled
def fan_chart(fan: pd.DataFrame, actual: pd.Series | None, *, runs: int, method: str,
              start_equity: float) -> Figure:
    """Monte Carlo equity percentiles (columns 5, 25, 50, 75, 95 by step) as bands, with
    the realised out-of-sample path (indexed by step) on top."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=WIDE, layout="constrained")
    ax = figure.add_subplot()
    steps = fan.index.to_numpy()
    low, high = fan.columns.min(), fan.columns.max()
    ax.fill_between(steps, fan[low], fan[high], color=STRATEGY, alpha=0.15, linewidth=0,
                    label=f"{low:g}th to {high:g}th percentile")
    if 25 in fan.columns and 75 in fan.columns:
        ax.fill_between(steps, fan[25], fan[75], color=STRATEGY, alpha=0.3, linewidth=0,
                        label="25th to 75th percentile")
    if 50 in fan.columns:
        ax.plot(steps, fan[50], color=STRATEGY, linewidth=1.5, label="median")
    if actual is not None:
        ax.plot(actual.index, actual.to_numpy(), color="black", linewidth=1.1,
                label="realised out of sample")
    ax.axhline(start_equity, color=BENCHMARK, linewidth=0.8, linestyle="--")
    ax.set_xlabel("bars into the out-of-sample run")
    ax.set_ylabel("equity")
    ax.set_title(f"Monte Carlo equity fan ({runs:,} {method} runs)")
    figure.legend(loc="outside lower center", ncol=4)
    return figure


@_styled
def histogram(values: np.ndarray, *, title: str, xlabel: str, marker: float | None = None,
              marker_label: str = "", percent: bool = False, ylabel: str = "count",
              bins: int = 40) -> Figure:
    """A histogram of ``values`` with an optional vertical ``marker`` line."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, PercentFormatter

    figure = Figure(figsize=(7.0, 3.8), layout="constrained")
    ax = figure.add_subplot()
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    bins = max(1, min(bins, len(np.unique(values)) * 2))
    ax.hist(values, bins=bins, color=STRATEGY, alpha=0.75, edgecolor="white", linewidth=0.5)
    if marker is not None and np.isfinite(marker):
        ax.axvline(marker, color=ACCENT, linewidth=1.6, label=marker_label)
        if marker_label:
            ax.legend(loc="upper left")
    if percent:
        ax.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:g}"))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    return figure


def _naive(series: pd.Series) -> pd.Series:
    if isinstance(series.index, pd.DatetimeIndex) and series.index.tz is not None:
        return series.tz_convert("UTC").tz_localize(None)
    return series


def _naive_time(stamp) -> pd.Timestamp:
    stamp = pd.Timestamp(stamp)
    return stamp.tz_convert("UTC").tz_localize(None) if stamp.tzinfo is not None else stamp
