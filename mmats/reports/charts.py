"""matplotlib figures of the research report; each function returns a ``Figure``.

Figures are built without pyplot (no global figure registry, no backend needed to draw
them), so a report can be written from a notebook or a server alike. Long series are
thinned to a few thousand points: the charts look the same and the PDF stays small.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Mapping, Sequence

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import FuncFormatter, PercentFormatter

FONT = "DejaVu Sans"
STRATEGY = "#1f5fa8"
BENCHMARK = "#8a8a8a"
ACCENT = "#c0392b"
MAX_POINTS = 4000
WIDE = (10.0, 4.6)

RC = {
    "font.family": "sans-serif",
    "font.sans-serif": [FONT],
    "font.size": 9,
    "axes.titlesize": 11,
    "axes.titleweight": "bold",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#e4e4e4",
    "grid.linewidth": 0.6,
    "legend.frameon": False,
}


@contextlib.contextmanager
def style() -> Iterator[None]:
    """The report's matplotlib settings, for building and for saving figures."""
    with matplotlib.rc_context(RC):
        yield


def _styled(build: Callable[..., Figure]) -> Callable[..., Figure]:
    """Build the figure under :func:`style`: most settings are read when artists are made."""

    @functools.wraps(build)
    def wrapper(*args, **kwargs) -> Figure:
        with style():
            return build(*args, **kwargs)

    return wrapper


def thin(series: pd.Series, points: int = MAX_POINTS) -> pd.Series:
    """Every k-th value (the last always kept) so that at most ~``points`` remain."""
    step = max(1, len(series) // points)
    if step == 1:
        return series
    keep = np.zeros(len(series), dtype=bool)
    keep[::step] = True
    keep[-1] = True
    return series[keep]


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


def heatmap_axes(figure: Figure, grid: pd.DataFrame):
    """Draw ``grid`` (rows: one parameter's values, columns: another's) as a heatmap on a
    new axes of ``figure``: red to green, centred on 0 when the values straddle it, grey
    where a cell is NaN. Returns ``(ax, image, values)``."""
    values = grid.to_numpy(dtype=np.float64)
    finite = values[np.isfinite(values)]
    ax = figure.add_subplot()
    ax.grid(False)
    cmap = matplotlib.colormaps["RdYlGn"].with_extremes(bad="#dddddd")
    norm = None
    if finite.size and finite.min() < 0.0 < finite.max():
        norm = TwoSlopeNorm(vcenter=0.0, vmin=finite.min(), vmax=finite.max())
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, norm=norm, aspect="auto",
                      origin="lower")
    ax.set_xticks(range(grid.shape[1]), [format_value(v) for v in grid.columns])
    ax.set_yticks(range(grid.shape[0]), [format_value(v) for v in grid.index])
    ax.set_xlabel(str(grid.columns.name))
    ax.set_ylabel(str(grid.index.name))
    return ax, image, values


def text_colour(image, value: float) -> str:
    """Black or white, whichever reads on the heatmap cell of ``value`` (NaN: grey)."""
    red, green, blue, _ = image.cmap(image.norm(value)) if np.isfinite(value) else (
        0.87, 0.87, 0.87, 1.0)
    return "white" if 0.299 * red + 0.587 * green + 0.114 * blue < 0.5 else "black"


@_styled
def parameter_line(curves: pd.DataFrame, *, objective: str, chosen: Sequence = ()) -> Figure:
    """The in-sample objective against a single parameter: one faint line per fold
    (columns of ``curves``) and their mean; values chosen by a fold are marked."""
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


def format_value(value) -> str:
    """A parameter value as a short label: 20.0 -> "20", 2.5 -> "2.5"."""
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return f"{value:g}" if isinstance(value, float | np.floating) else str(value)


def _naive(series: pd.Series) -> pd.Series:
    if isinstance(series.index, pd.DatetimeIndex) and series.index.tz is not None:
        return series.tz_convert("UTC").tz_localize(None)
    return series


def _naive_time(stamp) -> pd.Timestamp:
    stamp = pd.Timestamp(stamp)
    return stamp.tz_convert("UTC").tz_localize(None) if stamp.tzinfo is not None else stamp
