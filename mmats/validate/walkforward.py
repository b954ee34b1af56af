"""Walk-forward optimisation: re-optimise on a training window, trade the next window.

Each fold sweeps the grid in-sample (the fused sweep of :mod:`mmats.backtest`), picks a
parameter set by an objective, then trades the out-of-sample window with it, carrying the
sleeve's state (cash, position, stops, pending order) from the previous fold. A fold's
figures are its own: its trades are those closed within its test window. The stitched
out-of-sample run equals one backtest whose signal is, window by window, the signal of
that window's chosen parameters; :func:`walk_forward` computes it that way too.

Example::

    result = walk_forward("ema_cross", candles, folds=5, fee_bps=10)
    result.folds          # one row per fold: dates, chosen params, IS and OOS metrics
    result.equity         # stitched out-of-sample equity
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from mmats.backtest import (
    BacktestResult,
    Market,
    lookahead_samples,
    market,
    require_no_lookahead,
    simulate_signal,
    sleeve_config,
    sweep,
    with_inputs,
)
from mmats.data.calendar import timeframe_ns
from mmats.errors import ConfigError
from mmats.sleeve import new_metrics, new_state
from mmats.strategy import SignalOutput, load_strategy

OBJECTIVES = ("sharpe", "sortino", "cagr", "profit_factor", "total_return")
SELECTIONS = ("best", "robust")
FOLD_METRICS = ("sharpe", "sortino", "cagr", "total_return", "max_drawdown", "profit_factor",
                "win_rate", "trades")


@dataclass(frozen=True)
class Fold:
    """Bar ranges of one fold: train ``[train_start, train_stop)``, test likewise."""

    index: int
    train_start: int
    train_stop: int
    test_start: int
    test_stop: int


def walk_forward_splits(
    ts_ns: np.ndarray,
    *,
    folds: int | None = 5,
    train_fraction: float = 0.7,
    train: int | str | None = None,
    test: int | str | None = None,
    step: int | str | None = None,
    anchored: bool = False,
    embargo: int | str = 0,
) -> list[Fold]:
    """Split bars into walk-forward folds.

    Either ``folds`` windows whose train:test lengths are ``train_fraction``:(1 -
    ``train_fraction``), with test windows tiling the data after the first training
    window; or explicit ``train`` / ``test`` lengths in bars (int) or time (``"60d"``),
    test windows following each other until the data ends. ``anchored`` keeps every
    training window starting at the first bar. ``embargo`` bars (or time) are left out
    between a training window and its test window, so no training bar is within reach
    of the test window's first decisions.

    ``step`` (with ``train`` and ``test``; default: the test length) is how far each fold
    moves forward. It may not be shorter than the test window: overlapping test windows
    would trade some bars twice. A longer step leaves gaps between test windows that no
    fold trades (the sleeve holds its position across a gap as across a market closure).

    Example: hourly bars, 70 days' training, re-optimised every 30 days::

        walk_forward_splits(ts_ns, train="70d", test="30d")
    """
    ts_ns = np.asarray(ts_ns, dtype=np.int64)
    n = ts_ns.shape[0]
    gap = _bars(ts_ns, embargo, "embargo")
    if train is None and test is None:
        if folds is None or folds < 1:
            raise ConfigError("folds must be >= 1 (or give train= and test= lengths)")
        if not 0.0 < train_fraction < 1.0:
            raise ConfigError(f"train_fraction must be between 0 and 1, got {train_fraction}")
        ratio = train_fraction / (1.0 - train_fraction)
        test_bars = int((n - gap) / (folds + ratio))
        train_bars = n - gap - folds * test_bars
    elif train is not None and test is not None:
        train_bars, test_bars = _bars(ts_ns, train, "train"), _bars(ts_ns, test, "test")
    else:
        raise ConfigError("give both train= and test= lengths, or neither (then folds= and "
                          "train_fraction= set them)")
    if train_bars < 2 or test_bars < 1:
        raise ConfigError(f"{n} bars are too few for these folds: training windows of "
                          f"{train_bars} bars and test windows of {test_bars}")
    step_bars = _step(ts_ns, step, test_bars, train is not None)
    result = []
    test_start = train_bars + gap
    while test_start < n:
        test_stop = min(test_start + test_bars, n)
        if train is not None and test_stop - test_start < test_bars:
            break  # with explicit lengths, a short last window is dropped
        train_stop = test_start - gap
        train_start = 0 if anchored else max(0, train_stop - train_bars)
        result.append(Fold(len(result), train_start, train_stop, test_start, test_stop))
        test_start += step_bars
    if not result:
        raise ConfigError(f"{n} bars leave no test window after {train_bars} training bars "
                          f"(and {test_bars} test bars): shorten the windows")
    if train is None:  # the fraction split tiles exactly: the last window ends the data
        last = result[-1]
        result[-1] = Fold(last.index, last.train_start, last.train_stop, last.test_start, n)
    return result


def _step(ts_ns: np.ndarray, step, test_bars: int, explicit: bool) -> int:
    if step is None:
        return test_bars
    if not explicit:
        raise ConfigError("step= needs train= and test= lengths (with folds= the test "
                          "windows tile the data, one after another)")
    step_bars = _bars(ts_ns, step, "step")
    if step_bars < test_bars:
        raise ConfigError(f"step {step!r} ({step_bars} bars) is shorter than the test window "
                          f"({test_bars} bars): test windows would overlap and trade some "
                          "bars twice; give a step at least as long as the test window")
    return step_bars


def _bars(ts_ns: np.ndarray, length: int | str, name: str) -> int:
    if isinstance(length, int | np.integer):
        if length < 0:
            raise ConfigError(f"{name} must be >= 0 bars")
        return int(length)
    span = timeframe_ns(str(length))
    # bars within the first `span` of time: time-based lengths follow the calendar
    return int(np.searchsorted(ts_ns, ts_ns[0] + span))


@dataclass
class WalkForwardResult:
    """Folds, the stitched out-of-sample run and what it was compared with."""

    strategy: str
    market: Market
    folds: pd.DataFrame
    oos: BacktestResult  # the stitched out-of-sample run
    fold_results: list[BacktestResult]
    in_sample: list[pd.DataFrame]  # each fold's sweep table
    objective: str
    selection: str
    settings: dict = field(default_factory=dict)
    # combinations tried over all folds, each counted once (for the deflated Sharpe
    # ratio): the grid's for a sweep; with a search, every candidate any fold tried
    n_trials: int = 0
    candidates: pd.DataFrame | None = None  # a search's distinct candidates (None: grid)

    @property
    def equity(self) -> pd.Series:
        return self.oos.equity

    @property
    def returns(self) -> pd.Series:
        return self.oos.returns

    @property
    def metrics(self) -> dict:
        return self.oos.metrics

    @property
    def benchmark(self) -> pd.Series:
        """Buy and hold over the out-of-sample span: bought at its first open, no costs."""
        start = self.oos.cash
        bars = self.market.ts_ns.searchsorted(self.oos.equity.index.asi8)
        close = self.market.close[bars]  # the out-of-sample bars (test windows may have gaps)
        return pd.Series(start * close / self.market.open[bars[0]],
                         index=self.oos.equity.index, name="buy_and_hold")

    @property
    def efficiency(self) -> float:
        """Walk-forward efficiency: the chosen parameters' mean annualised out-of-sample
        return over their mean annualised in-sample return (1 = as good out of sample as
        in; NaN if in-sample made nothing). Returns are annualised simply (total return ×
        bars per year / bars), since compounding a few days into a year explodes."""
        per_year = self.market.periods_per_year
        folds = self.folds
        in_sample = (folds["is_total_return"] * per_year / folds["train_bars"]).mean()
        out_of_sample = (folds["oos_total_return"] * per_year / folds["test_bars"]).mean()
        return float(out_of_sample / in_sample) if in_sample > 0 else math.nan


def walk_forward(
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
    objective: str | Callable[[pd.DataFrame], Any] = "sharpe",
    selection: str = "best",
    cash: float = 10_000.0,
    timeframe: str | None = None,
    calendar: str | None = None,
    check_lookahead_bias: bool = True,
    extra_data: dict | None = None,
    progress: bool = False,
    cluster=None,
    search: str | None = None,
    trials: int | None = None,
    seed: int = 0,
    **settings,
) -> WalkForwardResult:
    """Walk-forward optimisation of ``strategy`` over ``grid`` (default: its PARAMS).

    ``objective`` is a metric name (one of OBJECTIVES) or a callable that takes a sweep
    table and returns one score per row (higher is better). ``selection`` "best" takes the
    top score; "robust" the top median score over each combination and its grid
    neighbours (one step along one parameter), which prefers plateaus to spikes.
    ``settings`` are :class:`~mmats.sleeve.SleeveConfig` fields. ``cluster`` (a Dask
    ``Client``, ``"tcp://HOST:8786"`` or ``"local:N"``) optimises the folds there, one task
    each (:mod:`mmats.distributed`), with the same result.

    ``search`` (``"tpe"`` or ``"halving"``) optimises each fold by trying ``trials``
    combinations of the grid (:mod:`mmats.search`, repeatable with ``seed``) instead of
    all of them; ``result.n_trials`` counts the distinct combinations tried over all
    folds (without a search: the grid's valid combinations).

    >>> walk_forward("ema_cross", candles, search="tpe", trials=200).n_trials  # doctest: +SKIP
    """
    strategy = load_strategy(strategy)
    config = sleeve_config(None, settings)
    prices = with_inputs(market(data, timeframe=timeframe, calendar=calendar), strategy,
                         extra_data)
    if selection not in SELECTIONS:
        raise ConfigError(f"selection {selection!r} is unknown; use one of {SELECTIONS}")
    if isinstance(objective, str) and objective not in OBJECTIVES:
        raise ConfigError(f"objective {objective!r} is unknown; use one of "
                          f"{', '.join(OBJECTIVES)} or a callable")
    combos = _grid_or_search(strategy, grid, search, trials, seed)
    if check_lookahead_bias:
        for params in _lookahead_params(strategy, grid, combos, seed):
            require_no_lookahead(strategy, prices, params)
    splits = walk_forward_splits(prices.ts_ns, folds=folds, train_fraction=train_fraction,
                                 train=train, test=test, step=step, anchored=anchored,
                                 embargo=embargo)
    from tqdm.auto import tqdm

    state = new_state(cash)
    if cluster is not None:  # the folds' in-sample halves, all at once on the cluster
        from mmats.distributed import map_folds

        choices = map_folds(cluster, optimise_fold, strategy, prices, splits,
                            progress=progress, grid=grid, config=config, cash=cash,
                            objective=objective, selection=selection, search=search,
                            trials=trials, seed=seed)
    rows, fold_results, tables, outputs, tried = [], [], [], [], []
    for fold in tqdm(splits, desc="walk-forward", unit="fold", disable=not progress,
                     leave=False):
        choice = choices[fold.index] if cluster is not None else optimise_fold(
            strategy, prices, fold, grid, config=config, cash=cash, objective=objective,
            selection=selection, search=search, trials=trials, seed=seed)
        table, chosen, params = choice.table, choice.chosen, choice.params
        history = _window(prices, 0, fold.test_stop)
        output = strategy.run(history.arrays, params)
        outputs.append((fold, output, params))
        before = state.copy()
        result = simulate_signal(strategy, params, config, history, output,
                                 fold.test_start, state,
                                 new_metrics(float(state[0]["equity"])),
                                 float(state[0]["equity"]))
        _own_trade_metrics(result.metrics, before[0], result.state[0])
        state = np.array(result.state, copy=True)
        fold_results.append(result)
        tables.append(table)
        tried.append(choice.candidates)
        rows.append(_fold_row(fold, prices, params, table.loc[chosen], result.metrics,
                              _score(table, objective)[chosen]))
    oos = _stitched(strategy, config, prices, outputs, cash)
    return WalkForwardResult(
        strategy=strategy.name, market=prices, folds=pd.DataFrame(rows), oos=oos,
        fold_results=fold_results, in_sample=tables,
        objective=objective if isinstance(objective, str) else getattr(
            objective, "__name__", "custom"),
        selection=selection,
        settings={"folds": len(splits), "train_fraction": train_fraction, "train": train,
                  "test": test, "step": step, "anchored": anchored, "embargo": embargo, "cash": cash,
                  **config.to_dict(), **_search_settings(search, trials, seed)},
        **_trials_tried(combos, tried),
    )


@dataclass(frozen=True)
class FoldChoice:
    """What one fold's training window chose: its sweep table, the chosen row's label and
    the chosen parameters (resolved as the strategy runs them)."""

    fold: Fold
    table: pd.DataFrame
    chosen: int
    params: dict
    n_trials: int = 0  # combinations tried: the table's rows, or all a search tried
    candidates: pd.DataFrame | None = None  # a search's candidates tried (None: the grid)


def optimise_fold(strategy, prices: Market, fold: Fold, grid: dict | None = None, *,
                  config, cash: float = 10_000.0, objective="sharpe",
                  selection: str = "best", search: str | None = None,
                  trials: int | None = None, seed: int = 0) -> FoldChoice:
    """Sweep ``grid`` on ``fold``'s training window and choose a combination.

    The in-sample half of a fold, and the part that depends on nothing but its own window:
    folds can be optimised in any order or all at once (a process pool, a cluster), then
    traded in order by :func:`walk_forward`, which carries the sleeve's state from one
    test window to the next. ``strategy`` is a loaded strategy, ``config`` a
    :class:`~mmats.sleeve.SleeveConfig`. With ``search`` (``"tpe"`` or ``"halving"``) the
    window is searched with ``trials`` candidates (:mod:`mmats.search`) instead: the table
    holds those scored on the whole window and ``n_trials`` counts every one tried.
    """
    window = _window(prices, fold.train_start, fold.train_stop)
    if search is None:
        table = sweep(strategy, window, grid, cash=cash, config=config,
                      check_lookahead_bias=False).table
        n_trials, candidates = len(table), None
    else:
        found = sweep(strategy, window, grid, cash=cash, config=config,
                      check_lookahead_bias=False, search=search, trials=trials, seed=seed)
        table, n_trials, candidates = found.table, found.n_trials, found.candidates
    chosen = select(table, strategy.param_names, objective, selection)
    params = {name: table.at[chosen, name] for name in strategy.param_names}
    return FoldChoice(fold, table, chosen, strategy.resolve_params(params), n_trials,
                      candidates)


def _grid_or_search(strategy, grid, search, trials, seed) -> list[dict] | None:
    """The grid's valid combinations, or None for a search (whose options are checked
    here, before any fold): a grid too large to sweep is never listed."""
    if search is None:
        combos, _ = strategy.combinations(grid)
        return combos
    from mmats.search import check_search

    check_search(search, trials, seed)
    return None


def _lookahead_params(strategy, grid, combos, seed) -> list[dict]:
    """The parameter sets checked for lookahead before the folds: the grid's samples, or
    for a search (``combos`` None) the samples the search draws."""
    if combos is not None:
        return lookahead_samples(strategy, combos)
    from mmats.search import lookahead_candidates

    return lookahead_candidates(strategy, grid, seed)


def _search_settings(search, trials, seed) -> dict:
    return {} if search is None else {"search": search, "trials": trials, "seed": seed}


def _trials_tried(combos, tried: list) -> dict:
    """``n_trials`` and ``candidates`` of a walk-forward: the grid's valid combinations,
    or every distinct candidate the folds' searches tried."""
    if combos is not None:
        return {"n_trials": len(combos), "candidates": None}
    candidates = pd.concat(tried, ignore_index=True).drop_duplicates(ignore_index=True)
    return {"n_trials": len(candidates), "candidates": candidates}


def select(table: pd.DataFrame, param_names, objective="sharpe", selection="best") -> int:
    """Row label of the chosen combination of a sweep table (NaN scores never win)."""
    scores = _score(table, objective)
    if selection == "robust":
        scores = _neighbour_median(table, list(param_names), scores)
    if np.all(np.isnan(scores)):
        # nothing scored (e.g. no combination traded): the first combination, flat
        return int(table.index[0])
    return int(table.index[int(np.nanargmax(scores))])


def _score(table: pd.DataFrame, objective) -> np.ndarray:
    if callable(objective):
        scores = np.asarray(objective(table), dtype=np.float64)
        if scores.shape != (len(table),):
            raise ConfigError(f"the objective returned shape {scores.shape}; expected one "
                              f"score per combination ({len(table)},)")
    else:
        scores = table[objective].to_numpy(dtype=np.float64, copy=True)
    scores[~np.isfinite(scores) & ~(scores == np.inf)] = np.nan
    return scores


def _neighbour_median(table, names, scores):
    """Median score of each grid cell and the cells one step away along one parameter.

    A neighbour missing at the edge of the grid (or skipped as invalid) counts as the cell
    itself, so an edge cell next to a lone spike does not inherit half of it.
    """
    axes = {name: np.sort(table[name].unique()) for name in names}
    position = {name: {value: i for i, value in enumerate(axes[name])} for name in names}
    index = {tuple(position[n][row[n]] for n in names): k
             for k, row in enumerate(table[names].to_dict("records"))}
    result = np.full(len(table), np.nan)
    for cell, k in index.items():
        values = [scores[k]]
        for axis in range(len(names)):
            for step in (-1, 1):
                other = list(cell)
                other[axis] += step
                neighbour = index.get(tuple(other))
                values.append(scores[k] if neighbour is None else scores[neighbour])
        values = np.array(values)
        if not np.isnan(scores[k]) and np.any(~np.isnan(values)):
            result[k] = np.nanmedian(values)
    return result


def _window(prices: Market, start: int, stop: int) -> Market:
    return _take(prices, slice(start, stop))


def _take(prices: Market, bars) -> Market:
    """The bars ``bars`` (a slice or an index array) of ``prices``, extra inputs too."""
    return prices.take(bars)


def _fold_row(fold, prices, params, in_sample, out_of_sample, score):
    stamp = lambda bar: pd.Timestamp(int(prices.ts_ns[bar]), tz="UTC")  # noqa: E731
    row = {"fold": fold.index, "train_start": stamp(fold.train_start),
           "train_end": stamp(fold.train_stop - 1), "test_start": stamp(fold.test_start),
           "test_end": stamp(fold.test_stop - 1),
           "train_bars": fold.train_stop - fold.train_start,
           "test_bars": fold.test_stop - fold.test_start, **params, "is_score": score}
    for name in FOLD_METRICS:
        row[f"is_{name}"] = in_sample[name]
    for name in FOLD_METRICS:
        row[f"oos_{name}"] = out_of_sample[name]
    return row


def _own_trade_metrics(metrics: dict, before, after) -> None:
    """Make a fold's trade figures its own, in place.

    The kernel reads trades, win rate, profit factor and fees from the sleeve's counters,
    which the carried state accumulates from the first fold on (Kelly sizing reads them,
    so the state itself keeps them). A fold's own are the counters' differences over the
    fold, with the kernel's conventions: NaN without a trade, +inf without a loss.
    """
    trades = int(after["n_trades"] - before["n_trades"])
    wins = int(after["n_wins"] - before["n_wins"])
    profit = float(after["gross_profit"] - before["gross_profit"])
    loss = float(after["gross_loss"] - before["gross_loss"])
    metrics["trades"] = trades
    metrics["win_rate"] = wins / trades if trades > 0 else math.nan
    metrics["profit_factor"] = (math.nan if trades == 0 else profit / loss if loss > 0.0
                                else math.inf)
    metrics["fees_paid"] = float(after["fees_paid"] - before["fees_paid"])


def _stitched(strategy, config, prices, outputs, cash) -> BacktestResult:
    """One backtest over the test windows whose signal is, window by window, the signal
    of that window's chosen parameters. Bars between test windows (a step longer than
    the test) are left out, as the folds' carried state skips them."""
    first = outputs[0][0].test_start
    n = outputs[-1][0].test_stop
    parts = {"exposure": np.full(n, np.nan), "stop_distance": None,
             "take_profit_distance": None, "confidence": None}
    for fold, output, _ in outputs:
        window = slice(fold.test_start, fold.test_stop)
        parts["exposure"][window] = output.exposure[window]
        for name in ("stop_distance", "take_profit_distance", "confidence"):
            values = getattr(output, name)
            if values is not None:
                if parts[name] is None:
                    parts[name] = np.full(n, np.nan)
                parts[name][window] = values[window]
    keep = np.concatenate([np.arange(first)] + [np.arange(fold.test_start, fold.test_stop)
                                                for fold, _, _ in outputs])
    history = _take(prices, keep)
    signal = SignalOutput(**{name: None if values is None else values[keep]
                             for name, values in parts.items()})
    params = {"folds": [params for _, _, params in outputs]}
    return simulate_signal(strategy, params, config, history, signal, first,
                           new_state(cash), new_metrics(cash), cash)
