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
    _sweep_market,
    lookahead_samples,
    market,
    require_no_lookahead,
    sleeve_config,
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

    ``n_trials`` counts every distinct candidate tried (for the deflated Sharpe ratio);
    ``history`` holds, after each batch or rung, the candidates tried so far, the wall
    time and the best score on the whole history so far.
    """

    method: str = "tpe"
    metric: str = "sharpe"
    n_trials: int = 0
    history: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def best(self) -> pd.Series:
        """The row of the best candidate by the searched metric (NaN scores, such as the
        Sharpe ratio of a candidate that never trades, are passed over)."""
        scores = self.table[self.metric]
        if not scores.notna().any():
            raise ConfigError(f"none of the {len(self.table)} candidates scored has a "
                              f"finite {self.metric}; try another metric or grid")
        return self.table.loc[scores.idxmax()]


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
    **settings,
) -> SearchResult:
    """Search ``grid`` (default: the strategy's PARAMS) for the best ``metric``.

    ``method`` is ``"tpe"`` or ``"halving"`` (see the module docstring); ``trials`` the
    number of distinct candidates to try (at most the grid's size; a grid no larger than
    ``trials`` is simply swept whole). ``seed`` makes the search repeatable. ``data`` is
    one market's candles (a frame, a store key or path, as :func:`mmats.backtest.sweep`
    takes them). The lookahead check runs as in the sweep, on sample combinations.

    >>> result = search("ema_cross", "bittrex:ETH/BTC:5m", trials=100)  # doctest: +SKIP
    >>> result.best[["fast", "slow", "sharpe"]]  # doctest: +SKIP
    """
    strategy = load_strategy(strategy)
    config = sleeve_config(config, settings)
    if method not in METHODS:
        raise ConfigError(f"search method must be one of {', '.join(METHODS)}, "
                          f"not {method!r}")
    if metric not in METRIC_NAMES:
        raise ConfigError(f"metric {metric!r} is not one of {', '.join(METRIC_NAMES)}")
    for name, value, low in (("trials", trials, 1), ("batch", batch, 1), ("eta", eta, 2)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"{name} must be a whole number >= {low}, not {value!r}")
    if isinstance(data, dict | list | tuple):
        raise ConfigError("search runs on one market's candles; sweep() takes several")
    space = _Space(strategy, grid)
    prices = market(data, timeframe=timeframe, calendar=calendar)
    if check_lookahead_bias:
        for params in lookahead_samples(strategy, space.sample_valid(8, seed)):
            require_no_lookahead(strategy, prices, params)
    scorer = _Scorer(strategy, prices, config, cash, metric)
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

    def __init__(self, strategy, prices, config, cash, metric):
        self.strategy, self.prices, self.config, self.cash = strategy, prices, config, cash
        self.metric = metric
        self.column = METRIC_NAMES.index(metric)
        self.scores: dict[tuple, float] = {}  # whole-history score of each candidate
        self.rows: list[tuple[dict, np.ndarray]] = []
        self.tried: set[tuple] = set()
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
        fresh = [c for c in combos if not whole or self.key(c) not in self.scores]
        values = np.empty((0, len(METRIC_NAMES)))
        if fresh:
            values = np.full((len(fresh), len(METRIC_NAMES)), np.nan)
            started = time.perf_counter()
            values = _sweep_market(self.strategy, prices, fresh, self.config, self.cash,
                                   False, None, np.empty(0, dtype=np.int64),
                                   np.empty((len(fresh), 0)))
            self.kernel_s += time.perf_counter() - started
            self.bar_combinations += len(prices) * len(fresh)
        for combo, row in zip(fresh, values, strict=True):
            self.tried.add(self.key(combo))
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
        return SearchResult(self.strategy.name, table, self.skipped, self.kernel_s,
                            self.bar_combinations, None, method=method, metric=self.metric,
                            n_trials=len(self.tried), history=pd.DataFrame(self.history))


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
    rungs = 0
    while len(alive) // eta ** (rungs + 1) >= 1 and n_bars // eta ** (rungs + 1) >= min_bars:
        rungs += 1
    for rung in range(rungs, 0, -1):  # prefixes of n / eta^rung bars, growing
        prefix = _prefix(prices, n_bars // eta ** rung)
        scores = scorer.score(alive, prefix)
        for combo in alive:
            scorer.tried.add(scorer.key(combo))
        order = np.argsort(np.where(np.isnan(scores), -np.inf, -scores), kind="stable")
        alive = [alive[i] for i in order[: max(1, math.ceil(len(alive) / eta))]]
        scorer.history.append({"trials": len(scorer.tried),
                               "seconds": time.perf_counter() - scorer.started,
                               "best": math.nan})
    scorer.score(alive)


def _prefix(prices, bars: int):
    """The first ``bars`` bars of a market (a view: no copy of the arrays)."""
    from dataclasses import fields, replace

    changes = {}
    for item in fields(prices):
        value = getattr(prices, item.name)
        if isinstance(value, np.ndarray) and value.shape[:1] == (len(prices),):
            changes[item.name] = value[:bars]
        elif isinstance(value, pd.Index) and len(value) == len(prices):
            changes[item.name] = value[:bars]
    return replace(prices, **changes)
