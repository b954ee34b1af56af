"""Pictures of one backtest and of a sweep, with matplotlib only; each returns a ``Figure``.

``BacktestResult.plot()`` and ``SweepResult.plot()`` call these, so they sit beside the
backtest, below the reports (as :mod:`mmats.interop` does for vectorbt); the backtest
imports this module only when a plot is asked for, so ``import mmats.backtest`` never
loads matplotlib. matplotlib itself is imported by the functions that draw, not by this
module, so the research report can key and reuse charts drawn before (and the house
style's constants can be read) without paying for the import. The house style (colours,
fonts, :func:`style`) and the helpers the
research report's charts share with these pictures (:func:`thin`, :func:`heatmap_axes`,
:func:`text_colour`, :func:`format_value`) are defined here once;
:mod:`mmats.reports.charts` draws the report's figures with them. Figures are built
without pyplot (no global figure registry, no backend needed to draw them); ``path=``
also writes a PNG atomically.

Example::

    result = backtest("ema_cross", load("bittrex:ETH/BTC:5m"), {"fast": 10, "slow": 50})
    result.plot(path="ema_cross.png")
    sweep("ema_cross", candles, {"fast": [5, 10], "slow": [50, 100]}).plot(path="grid.png")
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from mmats.errors import ConfigError
from mmats.files import atomic_path
from mmats.types import METRIC_NAMES

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FONT = "DejaVu Sans"
STRATEGY = "#1f5fa8"
BENCHMARK = "#8a8a8a"
ACCENT = "#c0392b"
MAX_POINTS = 4000

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
    import matplotlib

    with matplotlib.rc_context(RC):
        yield


def thin(series: pd.Series, points: int = MAX_POINTS) -> pd.Series:
    """Every k-th value (the last always kept) so that at most ~``points`` remain."""
    step = max(1, len(series) // points)
    if step == 1:
        return series
    keep = np.zeros(len(series), dtype=bool)
    keep[::step] = True
    keep[-1] = True
    return series[keep]


def heatmap_axes(figure: Figure, grid: pd.DataFrame):
    """Draw ``grid`` (rows: one parameter's values, columns: another's) as a heatmap on a
    new axes of ``figure``: red to green, centred on 0 when the values straddle it, grey
    where a cell is NaN. Returns ``(ax, image, values)``."""
    import matplotlib
    from matplotlib.colors import TwoSlopeNorm

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


def format_value(value) -> str:
    """A parameter value as a short label: 20.0 -> "20", 2.5 -> "2.5"."""
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return f"{value:g}" if isinstance(value, float | np.floating) else str(value)



LONG = "#1e8449"
SHORT = ACCENT
AGGREGATES = ("best", "max", "min", "mean", "median")
DPI = 110


def backtest_figure(result, *, path: str | os.PathLike | None = None) -> Figure:
    """Price with every trade's entry and exit, equity against buy and hold, and drawdown.

    Entries are triangles at the average entry price (up: long, down: short), exits are
    crosses at the average exit price; buy and hold starts with the run's cash at the
    first traded bar's close. ``result`` is a :class:`~mmats.backtest.BacktestResult`;
    ``path`` (``.png``) also saves the figure.
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import PercentFormatter

    with style():
        figure = Figure(figsize=(10.0, 7.2), layout="constrained")
        price_ax, equity_ax, drawdown_ax = figure.subplots(
            3, 1, sharex=True, height_ratios=[2.2, 2.0, 1.0])
        index = _naive_index(result.equity.index)
        first = len(result.market) - len(result.equity)  # equity starts at the first traded bar
        close = pd.Series(result.market.close[first:], index=index)
        equity = pd.Series(result.equity.to_numpy(), index=index)

        price = thin(close)
        price_ax.plot(price.index, price.to_numpy(), color=BENCHMARK, linewidth=0.9,
                      label="close")
        _trade_markers(price_ax, result.trades)
        price_ax.set_ylabel("price")
        symbol = f" on {result.market.symbol}" if result.market.symbol else ""
        params = ", ".join(f"{k}={format_value(v)}" for k, v in result.params.items())
        price_ax.set_title(f"{result.strategy} ({params}){symbol}: "
                           f"{len(result.trades)} trades")
        price_ax.legend(loc="upper left", ncol=4)

        hold = thin(close / close.iloc[0] * result.cash)
        shown = thin(equity)
        equity_ax.plot(shown.index, shown.to_numpy(), color=STRATEGY, linewidth=1.3,
                       label="strategy")
        equity_ax.plot(hold.index, hold.to_numpy(), color=BENCHMARK, linewidth=1.0,
                       label="buy and hold")
        equity_ax.set_ylabel("equity")
        equity_ax.legend(loc="upper left", ncol=2)

        values = equity.to_numpy()
        peak = np.maximum.accumulate(np.maximum(values, result.cash))
        drawdown = thin(pd.Series(values / peak - 1.0, index=index))
        drawdown_ax.fill_between(drawdown.index, drawdown.to_numpy(), 0.0, color=ACCENT,
                                 alpha=0.35, linewidth=0)
        drawdown_ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
        drawdown_ax.set_ylabel("drawdown")
    if path is not None:
        save_png(figure, path)
    return figure


def _trade_markers(ax, trades: np.ndarray) -> None:
    """One marker per trade entry (by direction) and one per exit, at the fill prices."""
    entry_time = _times(trades["entry_ts_ns"])
    for direction, marker, color, label in ((1, "^", LONG, "long entry"),
                                            (-1, "v", SHORT, "short entry")):
        chosen = trades["direction"] == direction
        if chosen.any():
            ax.scatter(entry_time[chosen], trades["entry_price"][chosen], marker=marker,
                       s=36, color=color, zorder=3, label=label)
    closed = (trades["exit_bar"] >= 0) & np.isfinite(trades["exit_price"])
    if closed.any():
        ax.scatter(_times(trades["exit_ts_ns"][closed]), trades["exit_price"][closed],
                   marker="x", s=30, color="black", linewidths=1.0, zorder=3, label="exit")


def sweep_grid(result, x: str | None = None, y: str | None = None, *,
               metric: str = "sharpe", aggregate: str = "best") -> pd.DataFrame | pd.Series:
    """The sweep's ``metric`` by parameters: a frame (rows ``y``, columns ``x``; NaN where
    no combination ran) for two parameters, a series for one.

    With one parameter, a series over it; with two or more, ``y`` defaults to the first
    parameter not named and ``x`` to the next. With more (or several symbols), the other parameters and the symbol are
    aggregated within each cell: ``aggregate`` is ``"best"`` (the value
    :meth:`SweepResult.best` ranks first: the highest, or the lowest for volatility, fees and
    drawdown durations), ``"max"``, ``"min"``, ``"mean"`` or ``"median"``.
    """
    table = result.table
    if metric not in METRIC_NAMES:
        raise ConfigError(f"metric {metric!r} is not a metric; use one of "
                          f"{', '.join(METRIC_NAMES)}")
    if aggregate not in AGGREGATES:
        raise ConfigError(f"aggregate {aggregate!r}: use one of {', '.join(AGGREGATES)}")
    params = [c for c in table.columns if c not in METRIC_NAMES and c != "symbol"]
    if not params:
        raise ConfigError(f"the sweep of {result.strategy!r} has no parameter to plot")
    for name in (x, y):
        if name is not None and name not in params:
            raise ConfigError(f"{name!r} is not a parameter of the sweep; use one of "
                              f"{', '.join(params)}")
    if len(params) == 1:
        axes = params
    else:
        rest = [p for p in params if p not in (x, y)]
        y = y or rest.pop(0)
        x = x or rest.pop(0)
        if x == y:
            raise ConfigError(f"x and y are both {x!r}; name two different parameters")
        axes = [y, x]
    if aggregate == "best":
        ranked = result.best(metric, len(table))  # the one ranking rule, best first
        values = ranked.groupby(axes, sort=True)[metric].first()
    else:
        values = table.groupby(axes, sort=True)[metric].agg(aggregate)
    if len(axes) == 1:
        return values.reindex(sorted(table[axes[0]].unique()))
    return values.unstack(x).reindex(index=sorted(table[y].unique()),
                                     columns=sorted(table[x].unique()))


def sweep_figure(result, x: str | None = None, y: str | None = None, *,
                 metric: str = "sharpe", aggregate: str = "best",
                 path: str | os.PathLike | None = None) -> Figure:
    """A heatmap of :func:`sweep_grid` (two or more parameters; cells are annotated when
    the grid is small and grey where no combination ran), or a line for one parameter.
    ``path`` (``.png``) also saves the figure."""
    grid = sweep_grid(result, x, y, metric=metric, aggregate=aggregate)
    params = [c for c in result.table.columns if c not in METRIC_NAMES and c != "symbol"]
    folded = [p for p in params if p not in ([grid.name] if isinstance(grid, pd.Series)
                                             else [grid.index.name, grid.columns.name])]
    if "symbol" in result.table.columns and result.table["symbol"].nunique() > 1:
        folded.append("symbol")
    note = f" ({aggregate} over {', '.join(folded)})" if folded else ""
    with style():
        if isinstance(grid, pd.Series):
            figure = _line(grid, metric)
        else:
            figure = _heatmap(grid, metric)
        figure.axes[0].set_title(f"{result.strategy}: {metric} by "
                                 f"{' and '.join(_names(grid))}{note}")
    if path is not None:
        save_png(figure, path)
    return figure


def _names(grid) -> list[str]:
    if isinstance(grid, pd.Series):
        return [str(grid.index.name)]
    return [str(grid.index.name), str(grid.columns.name)]


def _line(curve: pd.Series, metric: str) -> Figure:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8.0, 4.2), layout="constrained")
    ax = figure.add_subplot()
    ax.plot(curve.index, curve.to_numpy(dtype=np.float64), color=STRATEGY, linewidth=1.8,
            marker="o", markersize=3)
    ax.set_xlabel(str(curve.index.name))
    ax.set_ylabel(metric)
    return figure


def _heatmap(grid: pd.DataFrame, metric: str) -> Figure:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(min(11.0, max(6.5, 1.8 + 0.7 * grid.shape[1])),
                             min(8.0, max(4.2, 1.6 + 0.45 * grid.shape[0]))),
                    layout="constrained")
    ax, image, values = heatmap_axes(figure, grid)
    if grid.size <= 200:
        for (row, column), value in np.ndenumerate(values):
            if np.isfinite(value):
                ax.text(column, row, f"{value:.2f}", ha="center", va="center", fontsize=8,
                        color=text_colour(image, value))
    figure.colorbar(image, ax=ax, label=metric)
    return figure


def check_png_path(path: str | os.PathLike, option: str | None = None) -> Path:
    """Refuse a picture path that does not end in ``.png`` (:class:`ConfigError` naming
    the option, if given, and the path)."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        where = f"{option} {path}" if option else str(path)
        raise ConfigError(f"{where}: pictures are written as PNG; give a file name ending "
                          "in .png")
    return path


def save_png(figure: Figure, path: str | os.PathLike) -> Path:
    """Write ``figure`` as a PNG at ``path`` atomically (a temp file in the same folder,
    then a rename); missing parent folders are created. Returns the path."""
    path = check_png_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with style(), atomic_path(path, mode=0o644) as temporary:
            figure.savefig(temporary, format="png", dpi=DPI, facecolor="white")
    except OSError as error:  # name the file asked for, not the temp file beside it
        raise OSError(error.errno, error.strerror, str(path)) from error
    return path


def _naive_index(index: pd.DatetimeIndex) -> pd.DatetimeIndex:
    return index.tz_convert(None) if index.tz is not None else index


def _times(ts_ns: np.ndarray) -> np.ndarray:
    return np.asarray(ts_ns, dtype=np.int64).astype("datetime64[ns]")
