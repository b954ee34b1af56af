"""The pandas-facing backtest and parameter sweep.

Both run the shared numba kernel (:mod:`mmats.nb.sim`): ``backtest`` keeps the equity
curve and every order, fill and trade record; ``sweep`` evaluates a whole grid in one
fused ``prange`` kernel that keeps only the metrics.

Example::

    from mmats.backtest import backtest, sweep
    from mmats.data import load

    candles = load("bittrex:ETH/BTC:5m")
    result = backtest("ema_cross", candles, {"fast": 10, "slow": 50}, fee_bps=10)
    result.metrics["sharpe"]
    table = sweep("ema_cross", candles, {"fast": [5, 10], "slow": [50, 100]}).table
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from mmats.data.calendar import (
    calendar_for_venue,
    check_calendar,
    infer_calendar,
    infer_timeframe,
    periods_per_year,
    timeframe_ns,
)
from mmats.data.schema import VALUE_COLUMNS
from mmats.errors import ConfigError, DataError, LookaheadError
from mmats.lookahead import check_lookahead
from mmats.records import records_frame
from mmats.sleeve import SleeveConfig, acted_signal, new_metrics, new_state
from mmats.strategy import Strategy, load_strategy
from mmats.types import METRIC_NAMES
from mmats.units import DAY_NS


@dataclass(frozen=True)
class Market:
    """Price arrays of one symbol, ready for the kernel."""

    ts_ns: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    timeframe: str
    calendar: str
    symbol: str | None = None
    venue: str | None = None
    # a strategy's extra inputs aligned to these bars (with_inputs); part of `arrays`
    extras: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.ts_ns.shape[0]

    def take(self, bars) -> Market:
        """The bars ``bars`` (a slice or an index array), extra inputs included."""
        return Market(ts_ns=self.ts_ns[bars], open=self.open[bars], high=self.high[bars],
                      low=self.low[bars], close=self.close[bars], volume=self.volume[bars],
                      timeframe=self.timeframe, calendar=self.calendar, symbol=self.symbol,
                      venue=self.venue, extras={k: v[bars] for k, v in self.extras.items()})

    @property
    def day(self) -> np.ndarray:
        return self.ts_ns // DAY_NS

    @property
    def arrays(self) -> dict[str, np.ndarray]:
        return {"ts": self.ts_ns, "open": self.open, "high": self.high, "low": self.low,
                "close": self.close, "volume": self.volume, **self.extras}

    @property
    def index(self) -> pd.DatetimeIndex:
        return pd.DatetimeIndex(pd.to_datetime(self.ts_ns, utc=True), name="ts")

    @property
    def periods_per_year(self) -> float:
        return periods_per_year(self.timeframe, self.calendar)

    @property
    def bar_ns(self) -> int:
        return timeframe_ns(self.timeframe)


def market(data: Any, *, timeframe: str | None = None, calendar: str | None = None,
           symbol: str | None = None) -> Market:
    """Turn candles into a :class:`Market`.

    ``data`` is a DataFrame in the candle schema (a ``ts`` column or a DatetimeIndex),
    a path to a Parquet/CSV file, a store spec ``VENUE:SYMBOL:TIMEFRAME``, or a Market.
    """
    if isinstance(data, Market):
        return data
    if isinstance(data, str | os.PathLike):
        from mmats.data import load

        data = load(str(data), timeframe=timeframe)
    if not isinstance(data, pd.DataFrame):
        raise DataError(f"cannot use {type(data).__name__} as candles; pass a DataFrame, "
                        "a file path or VENUE:SYMBOL:TIMEFRAME")
    attrs = dict(data.attrs)
    frame = data.reset_index() if "ts" not in data.columns else data
    missing = [c for c in ("ts", *VALUE_COLUMNS) if c not in frame.columns]
    if missing:
        raise DataError(f"candles lack column(s) {', '.join(missing)}; the schema is "
                        "ts, open, high, low, close, volume")
    ts_ns = pd.to_datetime(frame["ts"], utc=True).dt.as_unit("ns").astype("int64").to_numpy()
    if ts_ns.size < 2:
        raise DataError("need at least two candles")
    if np.any(np.diff(ts_ns) <= 0):
        first = int(np.flatnonzero(np.diff(ts_ns) <= 0)[0]) + 1
        raise DataError(f"candle timestamps must increase strictly; row {first} does not "
                        "(run scripts/check_data.py on the file)")
    columns = {}
    for name in VALUE_COLUMNS:
        values = np.ascontiguousarray(frame[name].to_numpy(dtype=np.float64))
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            raise DataError(f"column {name} has a non-finite value at row {bad[0]} "
                            f"({bad.size} in all); clean the data first")
        columns[name] = values
    timeframe = timeframe or attrs.get("timeframe") or infer_timeframe(ts_ns)
    calendar = (calendar or attrs.get("calendar") or calendar_for_venue(attrs.get("venue"))
                or infer_calendar(ts_ns, timeframe))
    check_calendar(calendar)
    return Market(ts_ns=np.ascontiguousarray(ts_ns), timeframe=timeframe, calendar=calendar,
                  symbol=symbol or attrs.get("symbol"), venue=attrs.get("venue"), **columns)


def with_inputs(prices: Market, strategy: Strategy, extra_data: dict | None = None) -> Market:
    """``prices`` with ``strategy``'s extra inputs (``INPUTS``) aligned to its bars: its
    own symbol at longer timeframes, built from its bars, and other symbols or venues from
    ``extra_data`` (``{"VENUE:SYMBOL:TIMEFRAME": candles}``) or else the candle store.
    A strategy without extra inputs, or ``prices`` that hold them already (a walk-forward
    fold of a market built here), gets ``prices`` as they are."""
    if all(name in prices.extras for name in strategy.inputs):
        return prices
    from mmats.data.extras import extra_arrays, load_others, parse_inputs, series_needed

    inputs = parse_inputs(strategy.input_specs, f"strategy {strategy.name!r}")
    keys = series_needed(inputs, venue=prices.venue, symbol=prices.symbol,
                         timeframe=prices.timeframe)
    unnamed = [key for key in keys if None in key]
    if unnamed:
        raise ConfigError(
            f"strategy {strategy.name!r} reads another series relative to its own venue and "
            "symbol, which these candles do not say: load them by VENUE:SYMBOL:TIMEFRAME, "
            "or name the venue and symbol in INPUTS")
    own = {"ts": prices.ts_ns, "open": prices.open, "high": prices.high, "low": prices.low,
           "close": prices.close, "volume": prices.volume}
    extras = extra_arrays(inputs, own, prices.timeframe, venue=prices.venue,
                          symbol=prices.symbol, others=load_others(keys, given=extra_data))
    return replace(prices, extras=extras)


@dataclass
class BacktestResult:
    """Everything one backtest produced. Records use the dtypes of :mod:`mmats.types`."""

    strategy: str
    params: dict
    config: SleeveConfig
    cash: float  # equity at the start of the run
    market: Market
    equity: pd.Series
    position: pd.Series
    signal: pd.Series  # the strategy's exposure
    fills: np.ndarray
    orders: np.ndarray
    trades: np.ndarray
    metrics: dict[str, float]
    state: np.ndarray = field(repr=False)
    confidence: pd.Series | None = None  # the strategy's confidence (when it gives one)
    acted: pd.Series | None = None  # the exposure the bar step acted on (after confidence)

    @property
    def returns(self) -> pd.Series:
        """Bar returns of the equity curve; the first is against the starting cash."""
        values = self.equity.to_numpy()
        previous = np.concatenate([[self.cash], values[:-1]])
        return pd.Series(values / previous - 1.0, index=self.equity.index, name="returns")

    def fills_frame(self) -> pd.DataFrame:
        return records_frame(self.fills)

    def orders_frame(self) -> pd.DataFrame:
        return records_frame(self.orders)

    def trades_frame(self) -> pd.DataFrame:
        return records_frame(self.trades)

    def to_vectorbt(self):
        """A vectorbt ``Portfolio`` of the same fills (``Portfolio.from_orders``).

        Its ``value()`` equals :attr:`equity` whenever fees are proportional (they always
        are here), so vectorbt's analysis and plots can be used on MMATS results.
        """
        from mmats.interop import to_vectorbt

        return to_vectorbt(self)

    def plot(self, *, path: str | os.PathLike | None = None):
        """A matplotlib ``Figure``: price with each trade's entry and exit, equity against
        buy and hold, and drawdown; ``path`` (``.png``) also saves it atomically.

        Example: ``backtest("ema_cross", candles).plot(path="ema_cross.png")``
        """
        from mmats.plots import backtest_figure  # matplotlib only when drawing

        return backtest_figure(self, path=path)


def backtest(
    strategy: str | Strategy,
    data: Any,
    params: dict | None = None,
    *,
    cash: float = 10_000.0,
    config: SleeveConfig | dict | None = None,
    timeframe: str | None = None,
    calendar: str | None = None,
    start: Any = None,
    state: np.ndarray | None = None,
    check_lookahead_bias: bool = True,
    extra_data: dict | None = None,
    sentiment: Any = None,
    sentiment_rule: Any = None,
    **settings,
) -> BacktestResult:
    """Backtest one strategy with one parameter set over candles.

    ``settings`` are :class:`SleeveConfig` fields (``fee_bps``, ``slippage_bps``,
    ``max_drawdown_pct``, ...). The signal is computed over all of ``data`` (so earlier
    bars serve as warm-up) and trading starts at ``start`` (a timestamp or bar index;
    default the first bar). ``state`` continues from a previous run's final state
    (walk-forward carries equity and positions this way); otherwise a fresh sleeve with
    ``cash``. Raises :class:`LookaheadError` if the strategy peeks at later bars, unless
    ``check_lookahead_bias=False``. A strategy with extra inputs (``INPUTS``) reads other
    series from ``extra_data`` (``{"VENUE:SYMBOL:TIMEFRAME": candles}``) or the store.

    ``sentiment`` (records, or the JSON-lines file, folder or URL they come from:
    :mod:`mmats.data.sentiment`) lowers and caps the exposure by ``sentiment_rule``
    (a :class:`~mmats.data.sentiment.SentimentRule` or its dict), from the records in
    force at each bar's close, as the live runner would read them.
    """
    strategy = load_strategy(strategy)
    config = sleeve_config(config, settings)
    prices = with_inputs(market(data, timeframe=timeframe, calendar=calendar), strategy,
                         extra_data)
    params = strategy.resolve_params(params)
    if check_lookahead_bias:
        require_no_lookahead(strategy, prices, params)
    output = strategy.run(prices.arrays, params)
    first = _start_index(prices, start)
    state = new_state(cash) if state is None else np.array(state, copy=True)
    start_equity = float(state[0]["equity"])
    metrics = new_metrics(start_equity)
    news = None if sentiment is None else _sentiment_factors(
        sentiment, sentiment_rule, prices, output.exposure, check_lookahead_bias)
    return simulate_signal(strategy, params, config, prices, output, first, state, metrics,
                           start_equity, news=news)


def _sentiment_factors(sentiment, rule, prices: Market, exposure: np.ndarray,
                       check: bool) -> tuple[np.ndarray, np.ndarray]:
    """The sentiment rule's multiplier and size cap at each bar of ``prices``; with
    ``check``, the as-of check first (a record from after a close must not reach it)."""
    from mmats.data.sentiment import (
        SentimentRecords,
        SentimentRule,
        check_asof,
        read_sentiment,
        sentiment_factors,
    )

    records = sentiment if isinstance(sentiment, SentimentRecords) else read_sentiment(
        sentiment)
    rule = rule if isinstance(rule, SentimentRule) else SentimentRule.from_dict(rule)
    if prices.symbol is None:
        raise ConfigError("sentiment records are per symbol, and these candles do not say "
                          "theirs: load them by VENUE:SYMBOL:TIMEFRAME")
    if check:
        late = check_asof(records, rule, prices.symbol, prices.ts_ns, prices.bar_ns, exposure)
        if late:
            raise LookaheadError(f"sentiment reached {len(late)} bar(s) before it was known, "
                                 f"first at bar {late[0]}")
    return sentiment_factors(records, rule, prices.symbol, prices.ts_ns, prices.bar_ns,
                             exposure)


def simulate_signal(strategy: Strategy, params: dict, config: SleeveConfig, prices: Market,
                    output, first: int, state: np.ndarray, metrics: np.ndarray,
                    start_equity: float, news: tuple | None = None) -> BacktestResult:
    """Trade a computed signal through the kernel from bar ``first`` on; the one
    simulation behind :func:`backtest` and walk-forward's folds.

    ``output`` is the strategy's :class:`~mmats.strategy.SignalOutput` over all of
    ``prices`` (earlier bars were its warm-up); ``state`` and ``metrics`` are the sleeve's
    records (:func:`~mmats.sleeve.new_state`, :func:`~mmats.sleeve.new_metrics`), updated
    in place; ``start_equity`` is the equity the returns are measured against; ``news``
    the sentiment rule's ``(multiplier, size cap)`` over all of ``prices``, if any.

    >>> output = strategy.run(prices.arrays, params)                    # doctest: +SKIP
    >>> simulate_signal(strategy, params, sleeve_config(None, {}), prices, output, 0,
    ...                 new_state(10_000.0), new_metrics(10_000.0), 10_000.0)  # doctest: +SKIP
    """
    from mmats.nb.metrics import finalize_metrics
    from mmats.nb.sim import simulate

    empty = np.empty(0)
    window = slice(first, None)
    acted = acted_signal(output, config, *(news or ()))
    stops = output.stop_distance[window] if output.stop_distance is not None else empty
    targets = (output.take_profit_distance[window]
               if output.take_profit_distance is not None else empty)
    cfg = config.to_record(prices.periods_per_year)
    equity, position, fills, orders, trades = simulate(
        prices.ts_ns[window], prices.day[window], prices.open[window], prices.high[window],
        prices.low[window], prices.close[window], prices.volume[window],
        np.ascontiguousarray(acted[window]), np.ascontiguousarray(stops),
        np.ascontiguousarray(targets), cfg, state, metrics,
    )
    for records in (fills, orders):  # bar indices count from the start of `data`
        records["bar"] += first
    if len(trades):
        trades["entry_bar"] += first
        trades["exit_bar"] += first
    values = np.empty(len(METRIC_NAMES))
    finalize_metrics(metrics[0], state[0], prices.periods_per_year, prices.bar_ns, values)
    index = prices.index[window]
    return BacktestResult(
        strategy=strategy.name,
        params=params,
        config=config,
        cash=start_equity,
        market=prices,
        equity=pd.Series(equity, index=index, name="equity"),
        position=pd.Series(position, index=index, name="position"),
        signal=pd.Series(output.exposure[window], index=index, name="signal"),
        confidence=None if output.confidence is None else
        pd.Series(output.confidence[window], index=index, name="confidence"),
        acted=pd.Series(acted[window], index=index, name="acted"),
        fills=fills,
        orders=orders,
        trades=trades,
        metrics=metrics_dict(values),
        state=state,
    )


def metrics_dict(values: np.ndarray) -> dict[str, float]:
    metrics = {name: float(value) for name, value in zip(METRIC_NAMES, values, strict=True)}
    metrics["trades"] = int(metrics["trades"])
    metrics["max_drawdown_duration_bars"] = int(metrics["max_drawdown_duration_bars"])
    return metrics


@dataclass
class SweepResult:
    """One row per parameter combination (and symbol): its params and every metric.

    ``n_trials`` is how many combinations were tried, the number a deflated Sharpe ratio
    of the best row must be deflated by: the table's rows for the exhaustive sweep; for a
    search (:class:`mmats.search.SearchResult`) every candidate tried, those dropped
    before the whole history was scored included.
    """

    strategy: str
    table: pd.DataFrame
    skipped: int
    seconds: float
    bar_combinations: int
    returns: pd.DataFrame | None = None  # periods × combinations, with period_returns=
    n_trials: int | None = None  # combinations tried (None: unknown)

    @property
    def bar_combinations_per_s(self) -> float:
        return self.bar_combinations / self.seconds if self.seconds > 0 else math.nan

    def best(self, objective: str = "sharpe", n: int = 10) -> pd.DataFrame:
        if objective not in self.table.columns:
            raise ConfigError(f"objective {objective!r} is not a metric; use one of "
                              f"{', '.join(METRIC_NAMES)}")
        ascending = objective in ("max_drawdown_duration_bars", "max_drawdown_duration_days",
                                  "volatility", "fees_paid")
        return self.table.sort_values(objective, ascending=ascending,
                                      na_position="last").head(n)

    def plot(self, x: str | None = None, y: str | None = None, *, metric: str = "sharpe",
             aggregate: str = "best", path: str | os.PathLike | None = None):
        """A matplotlib ``Figure`` of ``metric`` by parameters: a heatmap (rows ``y``,
        columns ``x``; by default the first two parameters) or, for a one-parameter grid, a
        line. Other parameters, and the symbols of a multi-symbol sweep, are folded into
        each cell by ``aggregate``: ``"best"`` (as :meth:`best` ranks), ``"max"``,
        ``"min"``, ``"mean"`` or ``"median"``. ``path`` (``.png``) also saves it atomically.

        Example: ``sweep("ema_cross", candles, grid).plot(metric="sortino", path="grid.png")``
        """
        from mmats.plots import sweep_figure  # matplotlib only when drawing

        return sweep_figure(self, x, y, metric=metric, aggregate=aggregate, path=path)


def sweep(
    strategy: str | Strategy,
    data: Any,
    grid: dict | None = None,
    *,
    cash: float = 10_000.0,
    config: SleeveConfig | dict | None = None,
    timeframe: str | None = None,
    calendar: str | None = None,
    check_lookahead_bias: bool = True,
    progress: bool = False,
    chunks: int | None = None,
    period_returns: str | None = None,
    cluster: Any = None,
    search: str | None = None,
    trials: int | None = None,
    seed: int | None = None,
    extra_data: dict | None = None,
    **settings,
) -> SweepResult:
    """Evaluate every parameter combination of ``grid`` (default: the strategy's PARAMS).

    Runs one fused numba ``prange`` kernel: each combination computes its signal and
    simulates inside numba keeping only streaming metrics, so memory is O(threads × bars),
    never bars × combinations. ``data`` may also be a dict ``{symbol: candles}`` (or a
    list of specs/paths) to sweep several symbols into one table with a ``symbol`` column.
    Combinations the strategy's ``valid()`` rejects are skipped and counted.

    ``period_returns`` (a timeframe such as ``"1d"``, or ``"bar"``) also keeps every
    combination's returns per period, sampled from its equity at the last bar of each
    period: ``result.returns`` is a periods × combinations frame whose columns are the
    table's row numbers (what overfitting statistics such as PBO need).

    ``cluster`` (``"tcp://HOST:8786"``, ``"local:N"`` or a ``distributed.Client``) runs
    the grid in ``chunks`` batches on a Dask cluster (:mod:`mmats.distributed`); the table
    is the local run's, bit for bit, in the same order.

    ``search`` (``"tpe"`` or ``"halving"``, :mod:`mmats.search`) tries only ``trials``
    distinct combinations of the grid (``seed`` makes it repeatable) instead of every
    one: the table then has a row, with the same columns, for each combination scored
    on the whole history (for halving, the survivors of its rounds on shorter prefixes),
    and ``result.n_trials`` counts every combination tried, early rounds included. For
    the exhaustive sweep ``result.n_trials`` is the table's row count.

    >>> found = sweep("ema_cross", candles, search="tpe", trials=200, seed=1)  # doctest: +SKIP
    >>> found.n_trials, found.best("sharpe", 1)                               # doctest: +SKIP
    """
    if search is not None:
        return _search_sweep(strategy, data, grid, search=search, trials=trials, seed=seed,
                             cash=cash, config=config, timeframe=timeframe,
                             calendar=calendar, check_lookahead_bias=check_lookahead_bias,
                             period_returns=period_returns, cluster=cluster,
                             extra_data=extra_data, **settings)
    if trials is not None or seed is not None:
        raise ConfigError("trials= and seed= go with search= (\"tpe\" or \"halving\"); "
                          "without it every combination of the grid is swept")
    if isinstance(cluster, str):  # one client (or local cluster) for the whole sweep
        from mmats.distributed import connect

        with connect(cluster) as client:
            return sweep(strategy, data, grid, cash=cash, config=config, timeframe=timeframe,
                         calendar=calendar, check_lookahead_bias=check_lookahead_bias,
                         progress=progress, chunks=chunks, period_returns=period_returns,
                         cluster=client, extra_data=extra_data, **settings)
    strategy = load_strategy(strategy)
    config = sleeve_config(config, settings)
    combos, skipped = strategy.combinations(grid)
    if not combos:
        raise ConfigError(f"the grid leaves no valid combination for {strategy.name!r} "
                          f"({skipped} skipped as invalid)")
    datasets = _datasets(data)
    frames, seconds, bar_combinations, returns = [], 0.0, 0, []
    for symbol, candles in datasets:
        prices = with_inputs(market(candles, timeframe=timeframe, calendar=calendar,
                                    symbol=symbol), strategy, extra_data)
        if check_lookahead_bias:
            for params in lookahead_samples(strategy, combos):
                require_no_lookahead(strategy, prices, params)
        sample_bars = _period_ends(prices, period_returns)
        equity = np.full((len(combos), sample_bars.shape[0]), np.nan)
        started = time.perf_counter()
        if cluster is None:
            values = _sweep_market(strategy, prices, combos, config, cash, progress, chunks,
                                   sample_bars, equity)
        else:
            from mmats.distributed import sweep_market

            values = sweep_market(cluster, _sweep_market, strategy, prices, combos, config,
                                  cash, progress, chunks, sample_bars, equity)
        seconds += time.perf_counter() - started
        if period_returns is not None:
            previous = np.concatenate([np.full((len(combos), 1), float(cash)),
                                       equity[:, :-1]], axis=1)
            returns.append(pd.DataFrame((equity / previous - 1.0).T,
                                        index=prices.index[sample_bars]))
        bar_combinations += len(prices) * len(combos)
        frame = pd.DataFrame(combos)
        metrics = pd.DataFrame(values, columns=list(METRIC_NAMES))
        metrics["trades"] = metrics["trades"].astype(int)
        metrics["max_drawdown_duration_bars"] = metrics["max_drawdown_duration_bars"].astype(int)
        frame = pd.concat([frame, metrics], axis=1)
        if len(datasets) > 1 or symbol is not None:
            frame.insert(0, "symbol", prices.symbol or symbol)
        frames.append(frame)
    table = pd.concat(frames, ignore_index=True)
    period_frame = None
    if returns:
        period_frame = pd.concat(returns, axis=1)
        period_frame.columns = range(len(table))
    return SweepResult(strategy.name, table, skipped, seconds, bar_combinations, period_frame,
                       n_trials=len(table))


def _search_sweep(strategy, data, grid, *, search, trials, seed, cluster, **options):
    """``sweep(..., search=...)``: :func:`mmats.search.search_markets` with the sweep's
    options (imported here: mmats.search builds on this module)."""
    from mmats.search import check_search, search_markets

    seed = 0 if seed is None else seed
    check_search(search, trials, seed)
    if cluster is not None:
        raise ConfigError("a search runs here, batch after batch (each batch learns from "
                          "the last): drop cluster= (--cluster) or sweep the whole grid")
    return search_markets(strategy, data, grid, method=search, trials=trials,
                          seed=seed, **options)


def _period_ends(prices: Market, period: str | None) -> np.ndarray:
    """Indices of the last bar of each period (always including the last bar)."""
    if period is None:
        return np.empty(0, dtype=np.int64)
    if period == "bar":
        return np.arange(len(prices), dtype=np.int64)
    step = timeframe_ns(period)
    if step < prices.bar_ns:
        raise ConfigError(f"period_returns {period!r} is shorter than the bars "
                          f"({prices.timeframe})")
    bucket = prices.ts_ns // step
    return np.flatnonzero(np.concatenate([bucket[1:] != bucket[:-1], [True]])).astype(np.int64)


def _sweep_market(strategy, prices, combos, config, cash, progress, chunks, sample_bars,
                  equity):
    from mmats.fused import keep_freed_memory, specialised_run_metrics, sweep_kernel

    keep_freed_memory()
    cfg = config.to_record(prices.periods_per_year)
    values = np.full((len(combos), len(METRIC_NAMES)), np.nan)
    columns = {name: np.array([c[name] for c in combos],
                              dtype=np.int64 if strategy.param_types[name] is int else np.float64)
               for name in strategy.param_names}
    probe = strategy.run({k: v[: min(len(prices), 64)] for k, v in prices.arrays.items()},
                         combos[0])
    n_outputs = 1 + (probe.stop_distance is not None) + (probe.take_profit_distance is not None)
    day = prices.day
    inputs = (prices.ts_ns, day, prices.open, prices.high, prices.low, prices.close,
              prices.volume)
    bar_ns = prices.bar_ns
    bar = _progress(len(combos), progress, strategy.name)
    # The fused kernel calls signal(prices, params) itself; a strategy with extra inputs or
    # named outputs (confidence) is run here and its acted signal simulated, like numpy's.
    if strategy.is_numba and not (strategy.inputs or strategy.outputs):
        kernel = sweep_kernel(strategy, n_outputs, cfg)  # specialised to cfg
        n_chunks = chunks or (min(50, max(1, len(combos) // 8)) if progress else 1)
        for block in np.array_split(np.arange(len(combos)), n_chunks):
            if block.size == 0:
                continue
            lo, hi = block[0], block[-1] + 1
            kernel(*inputs, *(columns[n][lo:hi] for n in strategy.param_names), cfg,
                   float(cash), bar_ns, values[lo:hi], sample_bars, equity[lo:hi])
            bar.update(hi - lo)
    else:  # signals in Python, the simulation still in numba
        empty = np.empty(0)
        run_metrics = specialised_run_metrics(cfg, n_outputs)
        for k, params in enumerate(combos):
            output = strategy.run(prices.arrays, params)
            run_metrics(*inputs, acted_signal(output, config),
                        output.stop_distance if output.stop_distance is not None else empty,
                        output.take_profit_distance
                        if output.take_profit_distance is not None else empty,
                        cfg, float(cash), bar_ns, values[k], sample_bars, equity[k])
            bar.update(1)
    bar.close()
    return values


def _progress(total, enabled, label):
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, desc=f"sweep {label}", unit="combo",
                leave=False)


def _datasets(data) -> list[tuple[str | None, Any]]:
    if isinstance(data, dict):
        return list(data.items())
    if isinstance(data, list | tuple):
        return [(None, item) for item in data]
    return [(None, data)]


def lookahead_samples(strategy: Strategy, combos: list[dict]) -> list[dict]:
    """Parameter sets whose lookahead is checked before a sweep: the defaults (if valid),
    checked in full, and the valid corners of the grid
    (:func:`~mmats.lookahead.grid_corners`; its first and last combination if no corner
    is valid), checked with the lighter CORNER_BUDGET."""
    from mmats.lookahead import GridCorner, grid_corners

    samples = []
    defaults = strategy.resolve_params()
    if strategy.is_valid(defaults):
        samples.append(defaults)
    corners = grid_corners(strategy, combos) or [GridCorner(combos[0]), GridCorner(combos[-1])]
    for corner in corners:
        if corner not in samples:
            samples.append(corner)
    return samples


def require_no_lookahead(strategy: Strategy, prices: Market, params: dict) -> None:
    """Raise :class:`LookaheadError` unless ``params`` pass the lookahead check: the full
    check (what ``scripts/check_strategy.py`` runs), or CORNER_BUDGET for a grid corner."""
    from mmats.lookahead import CORNER_BUDGET, GridCorner

    budget = CORNER_BUDGET if isinstance(params, GridCorner) else {}
    report = check_lookahead(strategy, prices.arrays, dict(params), **budget)
    if not report.passed:
        raise LookaheadError(report.summary() + "\nPass check_lookahead_bias=False (or "
                             "--no-lookahead-check) to run it anyway.", report)


def sleeve_config(config: SleeveConfig | dict | None, settings: dict) -> SleeveConfig:
    """The :class:`SleeveConfig` of a run: ``config`` (a SleeveConfig, a mapping of its
    fields, or None for the defaults) with ``settings`` (field keyword arguments) on top.

    >>> sleeve_config({"fee_bps": 10}, {"slippage_bps": 2}).fee_bps
    10
    """
    if isinstance(config, SleeveConfig):
        return SleeveConfig.from_mapping(config.to_dict(), **settings) if settings else config
    return SleeveConfig.from_mapping(config, **settings)


def _start_index(prices: Market, start) -> int:
    if start is None:
        return 0
    if isinstance(start, int | np.integer):
        index = int(start)
    else:
        stamp = pd.Timestamp(start)
        stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
        index = int(np.searchsorted(prices.ts_ns, stamp.value))
    if not 0 <= index < len(prices):
        raise ConfigError(f"start {start!r} is outside the data ({len(prices)} bars)")
    return index
