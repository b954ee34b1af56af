"""QuantStats HTML tearsheets that never touch the network.

quantstats downloads a benchmark when given a ticker and its page template links a
favicon and its home page; here the benchmark is always a local return series, and the
written page is stripped of external references, so it can be written and opened offline.

Example::

    write_tearsheet(result.returns, "reports/ema.html", benchmark=hold_returns,
                    title="EMA cross on ETH/BTC", periods_per_year=105_120)
"""

from __future__ import annotations

import contextlib
import functools
import html
import logging
import re
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from mmats.errors import ConfigError
from mmats.reports.files import atomic_path

FONT = "DejaVu Sans"  # ships with matplotlib, so it is always found
SVG_SALT = "mmats"  # fixed ids in the SVG figures: the same inputs give the same page

# quantstats' template: a favicon from its site, a link to its home page, a save() hook
# that is not defined; matplotlib's SVG: metadata and a DTD naming external addresses
_EXTERNAL = (
    (re.compile(r"<link\b[^>]*\bhref=\"https?://[^\"]*\"[^>]*>\s*", re.IGNORECASE), ""),
    (re.compile(r"<a\b[^>]*\bhref=\"https?://[^\"]*\"[^>]*>(.*?)</a>",
                re.IGNORECASE | re.DOTALL), r"\1"),
    (re.compile(r"\s+onload=\"save\(\)\""), ""),
    (re.compile(r"<metadata>.*?</metadata>\s*", re.DOTALL), ""),
    (re.compile(r"<!DOCTYPE svg[^>]*>\s*", re.IGNORECASE), ""),
)


def write_tearsheet(
    returns: pd.Series,
    path: str | Path,
    *,
    benchmark: pd.Series | None = None,
    title: str = "Strategy tearsheet",
    periods_per_year: float,
    strategy_title: str = "Strategy",
    benchmark_title: str = "Buy and hold",
    cache: bool = True,
) -> Path:
    """Write a quantstats HTML tearsheet of ``returns`` to ``path``, offline and atomically.

    Parameters
    ----------
    returns
        Per-bar fractional returns on a DatetimeIndex (tz-aware or naive UTC).
    benchmark
        The benchmark's returns on the same timestamps (e.g. buy and hold of the same
        data); never a ticker, which quantstats would download.
    periods_per_year
        Bars per year, for annualising (105,120 for 5-minute bars traded 24/7).
    cache
        Reuse the page rendered before from the same inputs (:mod:`mmats.reports.cache`);
        False renders it afresh.

    Returns the path written. Raises :class:`~mmats.errors.ConfigError` on unusable input.

    Example
    -------
    >>> write_tearsheet(wf.returns, "reports/oos.html", benchmark=hold,
    ...                 periods_per_year=wf.market.periods_per_year)  # doctest: +SKIP
    """
    page = tearsheet_page(returns, benchmark=benchmark, title=title,
                          periods_per_year=periods_per_year, strategy_title=strategy_title,
                          benchmark_title=benchmark_title)
    return write_page(page, path, cache=cache)


def write_page(page: TearsheetPage, path: str | Path, cache: bool = True) -> Path:
    """Write ``page`` (rendered, or taken from the cache) to ``path`` atomically. A
    module-level function, so a process pool can run it."""
    from mmats.reports.cache import cached

    path = Path(path)
    data = cached(page.key, page.render, enabled=cache)
    with atomic_path(path) as temporary:
        temporary.write_bytes(data)
    return path


class TearsheetPage:
    """The checked inputs of one tearsheet, its cache key and how to render it."""

    def __init__(self, returns, benchmark, title, periods, strategy_title, benchmark_title):
        from mmats.reports.cache import digest

        self.arguments = (returns, benchmark, title, periods, strategy_title, benchmark_title)
        self.key = digest("tearsheet", sys.modules[__name__], *self.arguments)

    def render(self) -> bytes:
        """The offline page as UTF-8 bytes (quantstats draws it: seconds)."""
        return _render_page(*self.arguments).encode("utf-8")


def tearsheet_page(returns: pd.Series, *, benchmark: pd.Series | None = None,
                   title: str = "Strategy tearsheet", periods_per_year: float,
                   strategy_title: str = "Strategy",
                   benchmark_title: str = "Buy and hold") -> TearsheetPage:
    """Check the inputs of :func:`write_tearsheet` (ConfigError if unusable), render
    nothing yet."""
    returns = _naive_utc(returns, "returns").dropna()
    if returns.empty:
        raise ConfigError("returns are empty (or all NaN): there is nothing to report")
    if benchmark is not None:
        benchmark = _aligned_benchmark(benchmark, returns.index)
        if returns.nunique() == 1:  # quantstats' regression on the benchmark would fail
            warnings.warn("returns are constant (no trades?): the tearsheet leaves out the "
                          "benchmark comparison", stacklevel=3)
            benchmark = None
    periods = round(float(periods_per_year))
    if periods < 1:
        raise ConfigError(f"periods_per_year={periods_per_year!r} must be at least 1")
    return TearsheetPage(returns, benchmark, title, periods, strategy_title, benchmark_title)


def _render_page(returns, benchmark, title, periods, strategy_title, benchmark_title) -> str:
    with _quantstats() as qs, tempfile.TemporaryDirectory(prefix="mmats-tearsheet-") as folder:
        output = Path(folder) / "tearsheet.html"
        qs.reports.html(
            returns.rename(strategy_title),
            benchmark=None if benchmark is None else benchmark.rename(benchmark_title),
            output=str(output),
            title=html.escape(title),
            periods_per_year=periods,
            match_dates=False,  # keep the whole span, idle start included
            strategy_title=html.escape(strategy_title),
            benchmark_title=html.escape(benchmark_title),
        )
        return _offline(output.read_text(encoding="utf-8"), title)


def _naive_utc(series: pd.Series, name: str) -> pd.Series:
    """The series on a tz-naive UTC index: quantstats fails on tz-aware ones."""
    if not isinstance(series, pd.Series):
        raise ConfigError(f"{name} must be a pandas Series of returns, got "
                          f"{type(series).__name__}")
    if not isinstance(series.index, pd.DatetimeIndex):
        raise ConfigError(f"{name} must have a DatetimeIndex, got {type(series.index).__name__}")
    series = series.astype("float64")
    if series.index.tz is not None:
        series = series.tz_convert("UTC").tz_localize(None)
    return series


def _aligned_benchmark(benchmark, index: pd.DatetimeIndex) -> pd.Series:
    if isinstance(benchmark, str):
        raise ConfigError(f"benchmark={benchmark!r}: pass the benchmark's returns as a Series "
                          "(a ticker would make quantstats download it)")
    benchmark = _naive_utc(benchmark, "benchmark").dropna()
    missing = index.difference(benchmark.index)
    if len(missing):
        raise ConfigError(f"benchmark has no return at {len(missing)} of the {len(index)} "
                          f"timestamps of returns (the first is {missing[0]}); pass its "
                          "returns on the same index")
    # an index equal to the returns' keeps quantstats from resampling the benchmark daily
    return benchmark.reindex(index)


@contextlib.contextmanager
def _quantstats() -> Iterator:
    """quantstats, with Agg (unless pyplot already runs a backend), its own theme, a font
    that exists and its warnings and font-fallback logging silenced. Every matplotlib
    setting is restored on leaving, so the report's charts drawn after a tearsheet look as
    they do without one (and a tearsheet drawn in a worker process is the same page)."""
    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")  # nothing to close yet; a notebook's backend is left alone
    theme = _imported_theme()
    import quantstats as qs

    # quantstats asks for Arial by name in every title; matplotlib logs each fallback
    font_log = logging.getLogger("matplotlib.font_manager")
    level = font_log.level
    font_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), matplotlib.rc_context():
            dict.update(matplotlib.rcParams, theme)  # values its import already validated
            with matplotlib.rc_context({"font.family": "sans-serif",
                                        "font.sans-serif": [FONT],
                                        "svg.hashsalt": SVG_SALT}):
                warnings.simplefilter("ignore")
                yield qs
    finally:
        font_log.setLevel(level)


@functools.lru_cache(maxsize=1)
def _imported_theme() -> dict:
    """Import quantstats; return the matplotlib settings its import sets process-wide
    (seaborn's theme, Arial), which are undone here and applied to its pages only. The
    font family is left out: its Arial would only log fallbacks."""
    import matplotlib

    with matplotlib.rc_context():
        before = dict(matplotlib.rcParams)
        import quantstats  # noqa: F401

        after = dict(matplotlib.rcParams)
    return {key: value for key, value in after.items()
            if key != "font.family" and before.get(key) != value}


def _offline(page: str, title: str) -> str:
    """The page without references to other hosts, titled ``title``."""
    for pattern, replacement in _EXTERNAL:
        page = pattern.sub(replacement, page)
    heading = f"<title>{html.escape(title)}</title>"
    return re.sub(r"<title>.*?</title>", lambda _: heading, page, count=1, flags=re.DOTALL)
