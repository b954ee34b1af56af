"""The research run behind ``mmats walkforward``: walk-forward, Monte Carlo and the
overfitting statistics of one strategy on one market, with a plain-words verdict.

Example::

    research = run_research("ema_cross", load("bittrex:ETH/BTC:5m"), fee_bps=10)
    research.verdict
    research.summary()     # JSON-safe
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mmats.backtest import SweepResult, market, sweep, with_inputs
from mmats.data.calendar import timeframe_ns
from mmats.data.quality import data_quality
from mmats.errors import ConfigError
from mmats.records import json_safe
from mmats.strategy import load_strategy
from mmats.validate.walkforward import WalkForwardResult, walk_forward


@dataclass
class ResearchResult:
    """Everything one research run produced; reports read this."""

    walk_forward: WalkForwardResult
    sweep: SweepResult  # the whole history, with per-period returns of every combination
    monte_carlo: Any  # mmats.validate.montecarlo.MonteCarloResult
    deflated_sharpe: Any  # mmats.validate.overfitting: DSR of the stitched OOS returns
    pbo: Any  # probability of backtest overfitting (CSCV) over the sweep's returns
    spa: Any  # Hansen's SPA test of the sweep's combinations against buy and hold
    period: str  # the period of the returns the statistics use, e.g. "1d"
    tested_returns: pd.Series  # the stitched OOS returns per period, which DSR tests
    trial_returns: pd.DataFrame  # the sweep's per-period returns over the same periods
    data_quality: Any = None  # mmats.data.quality.DataQuality of the candles researched

    @property
    def verdict(self) -> str:
        return verdict(self)

    def windows(self) -> dict:
        """How the walk-forward windows were set: folds and train_fraction, or train, test
        and step lengths (the folds then follow from the data)."""
        settings = self.walk_forward.settings
        names = (("train", "test", "step") if settings.get("train") is not None
                 else ("train_fraction",))
        return {"folds": settings["folds"], **{name: settings[name] for name in names},
                "anchored": settings["anchored"], "embargo": settings["embargo"]}

    def dsr_summary(self) -> dict:
        """The deflated Sharpe ratio with what it compared: the trials and their span."""
        dsr, span = self.deflated_sharpe, self.trial_returns.index
        return {"dsr": float(dsr.dsr), "sharpe": float(dsr.sharpe), "sr0": float(dsr.sr0),
                "trials": int(dsr.n_trials), "observations": int(dsr.n_observations),
                "period": self.period, "trial_sharpe_variance": dsr.trial_sharpe_variance,
                "span_start": span[0].isoformat(), "span_end": span[-1].isoformat()}

    def summary(self) -> dict:
        """One JSON-safe dict: folds, stitched OOS metrics, dsr, pbo, spa p-value."""
        wf = self.walk_forward
        folds = wf.folds.copy()
        for column in ("train_start", "train_end", "test_start", "test_end"):
            folds[column] = folds[column].map(lambda t: t.isoformat())
        return json_safe({
            "strategy": wf.strategy,
            "symbol": wf.market.symbol,
            "timeframe": wf.market.timeframe,
            "objective": wf.objective,
            "selection": wf.selection,
            "folds": folds.to_dict(orient="records"),
            "oos_metrics": wf.metrics,
            "buy_and_hold_return": float(wf.benchmark.iloc[-1] / wf.oos.cash - 1.0),
            "walk_forward_efficiency": wf.efficiency,
            "combinations": len(self.sweep.table),
            "windows": self.windows(),
            "dsr": float(self.deflated_sharpe.dsr),
            "deflated_sharpe": self.dsr_summary(),
            "pbo": float(self.pbo.pbo),
            "spa_pvalue": float(self.spa.pvalue),
            "monte_carlo": self.monte_carlo.summary(),
            "data_quality": (None if self.data_quality is None
                             else self.data_quality.to_dict()),
            "verdict": self.verdict,
        })


def run_research(
    strategy,
    data: Any,
    grid: dict | None = None,
    *,
    folds: int | None = 5,
    train_fraction: float = 0.7,
    train: int | str | None = None,
    test: int | str | None = None,
    step: int | str | None = None,
    anchored: bool = False,
    embargo: int | str = 0,
    objective="sharpe",
    selection: str = "best",
    mc_runs: int = 1000,
    mc_method: str = "bootstrap",
    seed: int = 0,
    cash: float = 10_000.0,
    progress: bool = False,
    cluster=None,
    search: str | None = None,
    trials: int | None = None,
    extra_data: dict | None = None,
    **settings,
) -> ResearchResult:
    """Walk-forward the strategy, then judge the result: Monte Carlo of the stitched
    out-of-sample returns (or, with ``mc_method="reshuffle"``, of its trades), the
    deflated Sharpe ratio, PBO by CSCV and Hansen's SPA over every combination's
    per-period returns.

    The windows are ``folds`` / ``train_fraction``, or ``train`` / ``test`` / ``step`` as
    in :func:`~mmats.validate.walkforward.walk_forward_splits`. The deflated Sharpe ratio
    compares like with like: its trials are the swept combinations, each measured over
    the same periods as the stitched out-of-sample returns it deflates.

    ``search`` (``"tpe"`` or ``"halving"``) with ``trials`` searches each fold, and the
    whole history, instead of sweeping the grid (:mod:`mmats.search`, seeded by ``seed``):
    the statistics then compare the candidates scored on the whole history, and the
    deflated Sharpe ratio counts every distinct combination tried, in any fold or on the
    whole history, halving's early rounds included (:func:`trials_tried`).
    """
    from mmats.validate.montecarlo import monte_carlo, trade_returns_on_equity, trades_per_year
    from mmats.validate.overfitting import (
        deflated_sharpe_ratio,
        probability_of_backtest_overfitting,
        spa_test,
    )

    strategy = load_strategy(strategy)
    prices = with_inputs(market(data), strategy, extra_data)
    # the frame when given one: its attrs name the source, whose rejected rows are recorded
    quality = data_quality(data if isinstance(data, pd.DataFrame) else prices)
    wf = walk_forward(strategy, prices, grid, folds=folds, train_fraction=train_fraction,
                      train=train, test=test, step=step, anchored=anchored, embargo=embargo, objective=objective,
                      selection=selection, cash=cash, progress=progress, cluster=cluster,
                      **_search_options(search, trials, seed), **settings)
    period = statistics_period(prices)
    swept = sweep(strategy, prices, grid, cash=cash, check_lookahead_bias=False,
                  progress=progress, period_returns=period,
                  cluster=cluster if search is None else None,
                  **_search_options(search, trials, seed), **settings)
    returns = swept.returns.to_numpy()
    tested = _periods(wf.returns, period)
    trial_returns = _on_periods(swept.returns, tested.index, period)
    dsr = deflated_sharpe_ratio(tested.to_numpy(), n_trials=trials_tried(wf, swept),
                                trial_sharpes=_sharpes(trial_returns.to_numpy()))
    pbo = probability_of_backtest_overfitting(returns, n_splits=_splits(returns.shape[0]))
    hold = prices.close / prices.open[0]
    benchmark = _benchmark_returns(swept.returns.index, prices, hold)
    spa = spa_test(returns, benchmark=benchmark, seed=seed)
    common = dict(method=mc_method, runs=mc_runs, seed=seed, start_equity=wf.oos.cash,
                  periods_per_year=prices.periods_per_year, progress=progress,
                  cluster=cluster)
    if mc_method == "reshuffle":
        trades = trade_returns_on_equity(wf.oos)
        if len(trades) == 0:
            raise ConfigError("the stitched out-of-sample run closed no trade, so the Monte "
                              "Carlo method 'reshuffle' has nothing to reorder; use "
                              "'bootstrap' or 'block'")
        # steps are trades: annualise by trades per year of the out-of-sample span
        common["periods_per_year"] = trades_per_year(wf.oos)
        mc = monte_carlo(trade_returns=trades, **common)
    else:
        mc = monte_carlo(wf.returns.to_numpy(), **common)
    return ResearchResult(walk_forward=wf, sweep=swept, monte_carlo=mc, deflated_sharpe=dsr,
                          pbo=pbo, spa=spa, period=period, tested_returns=tested,
                          trial_returns=trial_returns, data_quality=quality)


def _search_options(search, trials, seed) -> dict:
    return {} if search is None else {"search": search, "trials": trials, "seed": seed}


def trials_tried(wf: WalkForwardResult, swept: SweepResult) -> int:
    """The trials a research run's deflated Sharpe ratio counts: every distinct
    combination it tried. For the grid, the combinations swept (every fold swept them
    too); for a search, the union of the candidates the folds' searches and the
    whole-history search tried, halving's early rounds included."""
    if wf.candidates is None:
        return swept.n_trials
    both = pd.concat([wf.candidates, swept.candidates], ignore_index=True)
    return len(both.drop_duplicates())


def statistics_period(prices, minimum: int = 250) -> str:
    """The coarsest of 1d, 4h and 1h (not finer than the bars) that still gives at least
    ``minimum`` periods, else every bar: daily returns suit years of data, but 20 days of
    5-minute bars need hourly returns for PBO's splits to mean anything."""
    for period in ("1d", "4h", "1h"):
        step = timeframe_ns(period)
        if step > prices.bar_ns and np.unique(prices.ts_ns // step).size >= minimum:
            return period
    return "bar"


def _periods(returns: pd.Series, period: str) -> pd.Series:
    """Bar returns compounded into per-period returns (``"bar"``: unchanged), indexed by
    the time of each period's last bar, as the sweep's per-period returns are."""
    if period == "bar":
        return returns
    buckets = returns.index.asi8 // timeframe_ns(period)
    growth = (1.0 + returns).groupby(buckets).prod()
    ends = returns.index.to_series().groupby(buckets).max()
    return pd.Series(growth.to_numpy() - 1.0, index=pd.DatetimeIndex(ends),
                     name=returns.name)


def _on_periods(returns: pd.DataFrame, index: pd.DatetimeIndex, period: str) -> pd.DataFrame:
    """The rows of ``returns`` (per-period returns of the whole history) whose periods
    are those of ``index``: the trials measured over the tested returns' span."""
    if period == "bar":
        return returns.loc[index]
    step = timeframe_ns(period)
    rows = returns[np.isin(returns.index.asi8 // step, index.asi8 // step)]
    if len(rows) != len(index):
        raise ConfigError(f"the swept returns cover {len(rows)} of the {len(index)} "
                          f"{period} periods of the out-of-sample returns")
    return rows


def _sharpes(returns: np.ndarray) -> np.ndarray:
    std = returns.std(axis=0, ddof=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        sharpes = returns.mean(axis=0) / std
    return sharpes[np.isfinite(sharpes)]


def _splits(n_periods: int) -> int:
    """CSCV splits: 16 when there are enough periods, fewer (even, >= 4) otherwise."""
    for splits in (16, 12, 10, 8, 6, 4):
        if n_periods >= 4 * splits:
            return splits
    return 2


def _benchmark_returns(index: pd.DatetimeIndex, prices, hold: np.ndarray) -> np.ndarray:
    """Buy-and-hold returns sampled at the same period ends as the sweep's returns."""
    ends = prices.ts_ns.searchsorted(index.asi8)
    value = hold[ends]
    return value / np.concatenate([[1.0], value[:-1]]) - 1.0


def verdict(research: ResearchResult) -> str:
    """A few plain sentences on whether the edge looks real."""
    wf = research.walk_forward
    oos = wf.metrics
    hold = float(wf.benchmark.iloc[-1] / wf.oos.cash - 1.0)
    lines = []
    beat = oos["total_return"] > hold
    lines.append(
        f"Out of sample the strategy returned {oos['total_return']:+.1%} against "
        f"{hold:+.1%} for buy and hold ({'better' if beat else 'worse'}), with a maximum "
        f"drawdown of {oos['max_drawdown']:.1%}.")
    dsr = float(research.deflated_sharpe.dsr)
    lines.append(
        f"The deflated Sharpe ratio is {dsr:.2f}: "
        + ("the Sharpe ratio is likely real after allowing for the "
           f"{research.deflated_sharpe.n_trials} combinations tried." if dsr >= 0.95 else
           "after allowing for the combinations tried, the Sharpe ratio is not "
           "distinguishable from luck."))
    pbo = float(research.pbo.pbo)
    lines.append(
        f"The probability of backtest overfitting is {pbo:.0%}: "
        + ("the combination that ranks best in sample usually still ranks in the top half "
           "out of sample (PBO judges the ranking, not whether it makes money)."
           if pbo < 0.2 else
           "the in-sample best often ranks poorly out of sample: treat the optimum with "
           "suspicion." if pbo < 0.5 else
           "the in-sample best does worse than the median out of sample more often than "
           "not: the optimisation is fitting noise."))
    p = float(research.spa.pvalue)
    lines.append(
        f"Hansen's SPA test gives p = {p:.2f}: "
        + ("at least one combination beats buy and hold beyond data snooping."
           if p < 0.05 else "no combination beats buy and hold once data snooping is "
           "accounted for."))
    efficiency = wf.efficiency
    if np.isfinite(efficiency):
        lines.append(f"Walk-forward efficiency is {efficiency:.2f} (out-of-sample annualised "
                     "return over in-sample; above 0.5 is usually considered robust).")
    return " ".join(lines)


# --------------------------------------------------------------------------- cache

RESEARCH_CACHE_ENTRIES = 32  # a research result of the sample is ~4 MB
_PLAIN = (str, int, float, bool, type(None))


def cached_research(strategy, data: Any, grid: dict | None = None, *, cache: bool = True,
                    folder=None, **options) -> ResearchResult:
    """:func:`run_research`, or the result it gave before for the same inputs.

    A research run is deterministic (its bootstraps are seeded), so its result is stored
    under a key that digests everything it depends on: the candles by value (their
    columns, times and attrs), the strategy's source, the options, the source of every
    MMATS module and the versions of the libraries that compute it. Anything changing
    misses the cache, and a hit is the object :func:`run_research` returns, pickled.
    ``progress`` and ``cluster`` are left out of the key (a cluster gives the same result).

    Runs that cannot be keyed by value are computed and not stored: candles given as a
    path or store spec (load them first), a strategy with extra inputs (read from files
    the key does not see), or an option that is not plain data (a callable objective).
    The cache lives in ``folder`` (default ``$MMATS_CACHE_DIR/research``); ``cache=False``
    computes afresh, and a cache that cannot be read or written only costs time.

    Example::

        research = cached_research("ema_cross", load("bittrex:ETH/BTC:5m"), fee_bps=10)
    """
    loaded = load_strategy(strategy)
    key = research_key(loaded, data, grid, options) if cache else None
    if folder is None:
        from mmats.strategy import cache_dir

        folder = cache_dir() / "research"
    path = None if key is None else Path(folder) / key[:2] / f"{key}.pickle"
    if path is not None:
        found = _read_research(path)
        if found is not None:
            return found
    research = run_research(loaded, data, grid, **options)
    if path is not None:
        _write_research(path, research)
    return research


def research_key(strategy, data: Any, grid: dict | None, options: dict) -> str | None:
    """The hex key of one research run's inputs, or None when they cannot be keyed by
    value (see :func:`cached_research`)."""
    import hashlib

    if strategy.inputs or not isinstance(data, pd.DataFrame):
        return None
    keyed = {name: value for name, value in options.items()
             if name not in ("progress", "cluster")}
    if not (_is_plain(grid) and _is_plain(keyed)):
        return None
    h = hashlib.sha256(b"mmats research 1\n")
    h.update(_environment().encode())
    h.update(f"{strategy.name}\n{strategy.source_hash}\n{strategy.version}\n".encode())
    h.update(repr(sorted((grid or {}).items())).encode())
    h.update(repr(sorted(keyed.items())).encode())
    h.update(repr(sorted((str(k), repr(v)) for k, v in data.attrs.items())).encode())
    h.update(repr((list(map(str, data.columns)), str(data.index.dtype))).encode())
    h.update(np.ascontiguousarray(data.index.to_numpy()).view(np.uint8))
    for column in data.columns:
        values = data[column].to_numpy()
        h.update(f"{column}:{values.dtype}:{values.shape}".encode())
        h.update(np.ascontiguousarray(values).view(np.uint8) if values.dtype != object
                 else repr(values.tolist()).encode())
    return h.hexdigest()


def _is_plain(value) -> bool:
    if isinstance(value, _PLAIN):
        return True
    if isinstance(value, list | tuple):
        return all(_is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    return False


def _environment() -> str:
    """The source of every MMATS module and the versions of what computes the research."""
    import hashlib
    import sys
    from importlib import metadata

    h = hashlib.sha256(sys.version.encode())
    package = Path(__file__).resolve().parents[1]
    for path in sorted(package.rglob("*.py")):
        h.update(str(path.relative_to(package)).encode())
        h.update(path.read_bytes())
    for library in ("numpy", "pandas", "numba", "scipy", "optuna"):
        try:
            h.update(f"{library} {metadata.version(library)}\n".encode())
        except metadata.PackageNotFoundError:
            h.update(f"{library} absent\n".encode())
    return h.hexdigest()


def _read_research(path) -> ResearchResult | None:
    """The result stored at ``path``; None when it is absent or unreadable (a cache
    written by another version, a truncated file): the run is then computed again."""
    import os
    import pickle

    try:
        with open(path, "rb") as file:
            research = pickle.load(file)
        os.utime(path)  # recently used: pruned last
    except Exception:  # noqa: BLE001 - any unreadable entry is a miss, never an error
        return None
    return research if isinstance(research, ResearchResult) else None


def _write_research(path, research: ResearchResult) -> None:
    import pickle

    from mmats.files import atomic_path

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path, mode=0o600) as temporary:
            temporary.write_bytes(pickle.dumps(research, protocol=pickle.HIGHEST_PROTOCOL))
        entries = sorted(path.parent.parent.glob("*/*.pickle"),
                         key=lambda p: p.stat().st_mtime, reverse=True)
        for stale in entries[RESEARCH_CACHE_ENTRIES:]:
            stale.unlink(missing_ok=True)
    except OSError:
        pass  # the cache only saves time
