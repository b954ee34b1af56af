"""Search beyond the grid: TPE (Optuna) and successive halving over a strategy's grid.

An exhaustive sweep of a 10^4-combination grid is cheap for a fast strategy on a few
years of 5-minute bars, but the grid grows as a product: six parameters of ten values
are 10^6 combinations. Two searches evaluate only part of the grid, with the same fused
kernel as :func:`mmats.backtest.sweep`, in batches so that the kernel's ``prange`` keeps
every core busy:

- ``"tpe"``: Optuna's Tree-structured Parzen Estimator proposes ``batch`` candidates at
  a time (its "constant liar" keeps a batch from crowding one point), learns from their
  scores, proposes the next batch, until ``trials`` distinct candidates were scored.
  Each parameter is searched over the *positions* of its grid values, so the order of
  the values is kept and only grid values are ever tried.
- ``"halving"``: successive halving. ``trials`` candidates drawn from the grid are
  scored on a prefix of the history, the best ``1/eta`` go on to a prefix ``eta`` times
  longer, and so on until the survivors are scored on the whole history.

Every candidate tried counts as a trial (``result.n_trials``): the deflated Sharpe ratio
must be deflated by all of them, the ones dropped early by halving included, since the
choice was made among all of them.

:func:`mmats.backtest.sweep` (``search="tpe", trials=N``) and the walk-forward
(:func:`mmats.validate.walkforward.walk_forward`) run these searches in place of the
exhaustive grid.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from mmats.backtest import (
    SweepResult,
    _datasets,
    _period_ends,
    _sweep_market,
    lookahead_samples,
    market,
    require_no_lookahead,
    sleeve_config,
    with_inputs,
)
from mmats.errors import ConfigError
from mmats.sleeve import SleeveConfig
from mmats.strategy import Strategy, load_strategy
from mmats.types import METRIC_NAMES

METHODS = ("tpe", "halving")


@dataclass
class SearchResult(SweepResult):
    """A :class:`~mmats.backtest.SweepResult` of the candidates scored on the whole
    history, in the order they were scored, and how the search went.

    ``n_trials`` (a field of every SweepResult) counts every distinct candidate tried,
    halving's early rounds included (for the deflated Sharpe ratio); ``candidates`` holds
    their parameters, in the order first tried; ``history`` holds, after each batch or
    rung, the candidates tried so far, the wall time and the best score on the whole
    history so far.
    """

    method: str = "tpe"
    metric: str = "sharpe"
    history: pd.DataFrame = field(default_factory=pd.DataFrame)
    candidates: pd.DataFrame = field(default_factory=pd.DataFrame)

    def best(self, objective: str | None = None, n: int = 10) -> pd.DataFrame:
        """The ``n`` best rows by ``objective`` (default: the searched metric), as
        :meth:`SweepResult.best` ranks them; NaN scores (the Sharpe ratio of a candidate
        that never trades) come last, and a table with no finite score is refused."""
        objective = objective or self.metric
        scores = self.table[objective] if objective in self.table.columns else None
        if scores is not None and not scores.notna().any():
            raise ConfigError(f"none of the {len(self.table)} candidates scored has a "
                              f"finite {objective}; try another metric or grid")
        return super().best(objective, n)


def search(
    strategy: str | Strategy,
    data: Any,
    grid: dict | None = None,
    *,
    method: str = "tpe",
    trials: int = 200,
    batch: int = 64,
    metric: str = "sharpe",
    seed: int = 0,
    eta: int = 3,
    min_bars: int | None = None,
    cash: float = 10_000.0,
    config: SleeveConfig | dict | None = None,
    timeframe: str | None = None,
    calendar: str | None = None,
    check_lookahead_bias: bool = True,
    period_returns: str | None = None,
    extra_data: dict | None = None,
    **settings,
) -> SearchResult:
    """Search ``grid`` (default: the strategy's PARAMS) for the best ``metric``.

    ``method`` is ``"tpe"`` or ``"halving"`` (see the module docstring); ``trials`` the
    number of distinct candidates to try (at most the grid's size; a grid no larger than
    ``trials`` is simply swept whole). ``seed`` makes the search repeatable. ``data`` is
    one market's candles (a frame, a store key or path, as :func:`mmats.backtest.sweep`
    takes them). The lookahead check runs as in the sweep, on sample combinations.
    ``period_returns`` keeps the per-period returns of the candidates scored on the whole
    history, as :func:`~mmats.backtest.sweep` does (``result.returns``). A strategy's
    extra inputs are aligned as the sweep aligns them (``extra_data`` or the store).

    >>> result = search("ema_cross", "bittrex:ETH/BTC:5m", trials=100)  # doctest: +SKIP
    >>> result.best("sharpe", 1)[["fast", "slow", "sharpe"]]  # doctest: +SKIP
    """
    strategy = load_strategy(strategy)
    config = sleeve_config(config, settings)
    check_search(method, trials, seed)
    if metric not in METRIC_NAMES:
        raise ConfigError(f"metric {metric!r} is not one of {', '.join(METRIC_NAMES)}")
    for name, value, low in (("batch", batch, 1), ("eta", eta, 2)):
        _check_whole(name, value, low)
    if isinstance(data, dict | list | tuple):
        raise ConfigError("search runs on one market's candles; sweep() takes several")
    space = _Space(strategy, grid)
    prices = with_inputs(market(data, timeframe=timeframe, calendar=calendar), strategy,
                         extra_data)
    if check_lookahead_bias:
        for params in lookahead_candidates(strategy, grid, seed, space):
            require_no_lookahead(strategy, prices, params)
    scorer = _Scorer(strategy, prices, config, cash, metric,
                     _period_ends(prices, period_returns), period_returns is not None)
    if space.size <= trials:  # nothing to search: sweep the grid whole
        combos, skipped = strategy.combinations(grid)
        scorer.score(combos)
        scorer.skipped = skipped
    elif method == "tpe":
        _tpe(space, scorer, trials, batch, seed)
    else:
        _halving(space, scorer, prices, trials, eta, seed,
                 min_bars or max(200, 10 * strategy.warmup()))
    return scorer.result(method)


def check_search(method: str, trials: Any, seed: Any = 0) -> None:
    """Refuse an unknown search method, a trial count that is not a whole number >= 1 or
    a negative seed (:class:`ConfigError`); what sweep(), the walk-forward and the CLI
    check first."""
    if method not in METHODS:
        raise ConfigError(f"search method must be one of {', '.join(METHODS)}, "
                          f"not {method!r}")
    _check_whole("trials", trials, 1)
    _check_whole("seed", seed, 0)


def _check_whole(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ConfigError(f"{name} must be a whole number >= {low}, not {value!r}")


def lookahead_candidates(strategy: Strategy, grid: dict | None, seed: int = 0,
                         space: _Space | None = None) -> list[dict]:
    """The parameter sets a search checks for lookahead: the defaults and the corners of
    8 valid candidates drawn from the grid (:func:`~mmats.backtest.lookahead_samples`),
    without listing a grid that may be too large to list."""
    space = space or _Space(strategy, grid)
    return lookahead_samples(strategy, space.sample_valid(8, seed))


def search_markets(strategy: str | Strategy, data: Any, grid: dict | None = None, *,
                   method: str = "tpe", trials: int = 200, seed: int = 0,
                   timeframe: str | None = None, calendar: str | None = None,
                   **options) -> SearchResult:
    """:func:`search` on each market of ``data`` (one, or a dict / list of several as
    :func:`~mmats.backtest.sweep` takes them): what ``sweep(..., search=...)`` runs.

    Several markets give one table with a ``symbol`` column (as the sweep's), each
    searched on its own; ``n_trials`` is then the sum of their trials.
    """
    strategy = load_strategy(strategy)
    datasets = _datasets(data)
    results = []
    for symbol, candles in datasets:
        prices = market(candles, timeframe=timeframe, calendar=calendar, symbol=symbol)
        found = search(strategy, prices, grid, method=method, trials=trials, seed=seed,
                       **options)
        if len(datasets) > 1 or symbol is not None:
            label = prices.symbol or symbol
            for frame in (found.table, found.history, found.candidates):
                frame.insert(0, "symbol", label)
        results.append(found)
    if len(results) == 1:
        return results[0]
    first = results[0]
    returns = None
    if first.returns is not None:
        returns = pd.concat([r.returns for r in results], axis=1)
        returns.columns = range(returns.shape[1])
    return SearchResult(
        first.strategy, pd.concat([r.table for r in results], ignore_index=True),
        sum(r.skipped for r in results), sum(r.seconds for r in results),
        sum(r.bar_combinations for r in results), returns,
        n_trials=sum(r.n_trials for r in results), method=first.method,
        metric=first.metric,
        history=pd.concat([r.history for r in results], ignore_index=True),
        candidates=pd.concat([r.candidates for r in results], ignore_index=True))


class _Space:
    """The grid as positions: each parameter's values, sorted, indexed 0..k-1."""

    def __init__(self, strategy: Strategy, grid: dict | None):
        self.strategy = strategy
        self.axes = {name: sorted(set(values))
                     for name, values in strategy.grid_axes(grid).items()}
        self.size = math.prod(len(v) for v in self.axes.values())

    def combo(self, positions: dict[str, int]) -> dict:
        return {name: self.axes[name][positions[name]] for name in self.axes}

    def random(self, rng: np.random.Generator) -> dict:
        return {name: values[int(rng.integers(len(values)))]
                for name, values in self.axes.items()}

    def sample_valid(self, count: int, seed: int) -> list[dict]:
        rng = np.random.default_rng(seed)
        found: list[dict] = []
        for _ in range(50 * count):
            combo = self.random(rng)
            if self.strategy.is_valid(combo) and combo not in found:
                found.append(combo)
                if len(found) == count:
                    break
        if not found:
            raise ConfigError(f"the grid leaves no valid combination for "
                              f"{self.strategy.name!r}")
        return found


class _Scorer:
    """Scores candidates with the fused kernel, each distinct candidate once."""

    def __init__(self, strategy, prices, config, cash, metric, sample_bars=None,
                 keep_returns=False):
        self.strategy, self.prices, self.config, self.cash = strategy, prices, config, cash
        self.metric = metric
        self.column = METRIC_NAMES.index(metric)
        self.scores: dict[tuple, float] = {}  # whole-history score of each candidate
        self.rows: list[tuple[dict, np.ndarray]] = []
        self.sample_bars = np.empty(0, dtype=np.int64) if sample_bars is None else sample_bars
        self.keep_returns = keep_returns
        self.equity: list[np.ndarray] = []  # at sample_bars, of each whole-history row
        self.tried: dict[tuple, dict] = {}  # every candidate tried, in order
        self.skipped = 0
        self.history: list[dict] = []
        self.started = time.perf_counter()
        self.kernel_s = 0.0
        self.bar_combinations = 0

    def key(self, combo: dict) -> tuple:
        return tuple(combo[name] for name in self.strategy.param_names)

    def score(self, combos: list[dict], prices=None) -> np.ndarray:
        """The metric of each combination on ``prices`` (default: the whole history)."""
        prices = self.prices if prices is None else prices
        whole = prices is self.prices
        fresh = combos
        if whole:  # each distinct candidate once (a batch may propose one twice)
            fresh = list({self.key(c): c for c in combos
                          if self.key(c) not in self.scores}.values())
        values = np.empty((0, len(METRIC_NAMES)))
        if fresh:
            sample_bars = self.sample_bars if whole else np.empty(0, dtype=np.int64)
            equity = np.full((len(fresh), sample_bars.shape[0]), np.nan)
            started = time.perf_counter()
            values = _sweep_market(self.strategy, prices, fresh, self.config, self.cash,
                                   False, None, sample_bars, equity)
            self.kernel_s += time.perf_counter() - started
            self.bar_combinations += len(prices) * len(fresh)
            if whole:
                self.equity.extend(equity)
        for combo, row in zip(fresh, values, strict=True):
            self.tried.setdefault(self.key(combo), combo)
            if whole:
                self.scores[self.key(combo)] = float(row[self.column])
                self.rows.append((combo, row))
        if not whole:
            return values[:, self.column]
        best = max((s for s in self.scores.values() if not math.isnan(s)), default=math.nan)
        self.history.append({"trials": len(self.tried),
                             "seconds": time.perf_counter() - self.started,
                             "best": best})
        return np.array([self.scores[self.key(c)] for c in combos])

    def result(self, method: str) -> SearchResult:
        frame = pd.DataFrame([combo for combo, _ in self.rows],
                             columns=list(self.strategy.param_names))
        metrics = pd.DataFrame(np.array([row for _, row in self.rows]).reshape(
            len(self.rows), len(METRIC_NAMES)), columns=list(METRIC_NAMES))
        metrics["trades"] = metrics["trades"].astype(int)
        metrics["max_drawdown_duration_bars"] = \
            metrics["max_drawdown_duration_bars"].astype(int)
        table = pd.concat([frame, metrics], axis=1)
        names = list(self.strategy.param_names)
        candidates = pd.DataFrame(list(self.tried.values()), columns=names)
        return SearchResult(self.strategy.name, table, self.skipped, self.kernel_s,
                            self.bar_combinations, self._returns(), n_trials=len(self.tried),
                            method=method, metric=self.metric,
                            history=pd.DataFrame(self.history), candidates=candidates)

    def _returns(self) -> pd.DataFrame | None:
        """Per-period returns of the whole-history rows (periods × rows), as the sweep's."""
        if not self.keep_returns:
            return None
        equity = np.array(self.equity).reshape(len(self.rows), self.sample_bars.shape[0])
        previous = np.concatenate([np.full((len(self.rows), 1), float(self.cash)),
                                   equity[:, :-1]], axis=1)
        return pd.DataFrame((equity / previous - 1.0).T,
                            index=self.prices.index[self.sample_bars])


def _tpe(space: _Space, scorer: _Scorer, trials: int, batch: int, seed: int) -> None:
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True,
                                         n_startup_trials=min(batch, max(10, trials // 10)))
    study = optuna.create_study(direction="maximize", sampler=sampler)
    asked = 0
    while len(scorer.tried) < trials and asked < 20 * trials:
        pending, combos = [], []
        for _ in range(min(batch, trials - len(scorer.tried))):
            trial = study.ask()
            asked += 1
            positions = {name: trial.suggest_int(name, 0, len(values) - 1)
                         for name, values in space.axes.items()}
            combo = space.combo(positions)
            if not space.strategy.is_valid(combo):
                scorer.skipped += 1
                study.tell(trial, state=TrialState.FAIL)
                continue
            pending.append(trial)
            combos.append(combo)
        if not combos:
            continue
        for trial, value in zip(pending, scorer.score(combos), strict=True):
            if math.isnan(value):
                study.tell(trial, state=TrialState.FAIL)
            else:
                study.tell(trial, value)


def _halving(space: _Space, scorer: _Scorer, prices, trials: int, eta: int, seed: int,
             min_bars: int) -> None:
    rng = np.random.default_rng(seed)
    candidates: dict[tuple, dict] = {}
    for _ in range(50 * trials):
        combo = space.random(rng)
        if not space.strategy.is_valid(combo):
            continue
        candidates.setdefault(scorer.key(combo), combo)
        if len(candidates) == trials:
            break
    alive = list(candidates.values())
    n_bars = len(prices)
    rungs = 0  # the last rung leaves at least eta candidates for the whole history
    while len(alive) // eta ** (rungs + 1) >= eta and n_bars // eta ** (rungs + 1) >= min_bars:
        rungs += 1
    for rung in range(rungs, 0, -1):  # prefixes of n / eta^rung bars, growing
        prefix = _prefix(prices, n_bars // eta ** rung)
        alive = _keep_best(alive, scorer.score(alive, prefix), eta)
        scorer.history.append({"trials": len(scorer.tried),
                               "seconds": time.perf_counter() - scorer.started,
                               "best": math.nan})
    scorer.score(alive)


def _keep_best(candidates: list[dict], scores: np.ndarray, eta: int) -> list[dict]:
    """The best ``1/eta`` of ``candidates`` (at least one), best first; a NaN score (a
    candidate that never traded on the prefix) ranks below every finite one, and ties
    keep the candidates' order."""
    keys = np.where(np.isnan(scores), np.inf, -scores)  # ascending: best first, NaN last
    order = np.argsort(keys, kind="stable")
    return [candidates[i] for i in order[: max(1, math.ceil(len(candidates) / eta))]]


def _prefix(prices, bars: int):
    """The first ``bars`` bars of a market, extra inputs included (views, no copies)."""
    return prices.take(slice(0, bars))
