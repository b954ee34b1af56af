"""Monte Carlo robustness of a backtest: resample its returns, look at the spread of outcomes.

``monte_carlo(trade_returns=..., method="reshuffle")`` compounds the trades in random
orders (same final equity, other paths and drawdowns); ``method="bootstrap"`` and
``"block"`` resample bar returns with replacement, i.i.d. or in stationary-bootstrap blocks
(Politis & Romano 1994) that keep short-range dependence. The kernels are in
:mod:`mmats.nb.montecarlo`; this module checks inputs and shapes the output.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from mmats.errors import ConfigError

# mmats.nb.montecarlo's RESHUFFLE, BOOTSTRAP and BLOCK (a test checks they agree): the
# kernels are imported when a batch runs, so importing this module (or unpickling a
# cached research result) does not load numba
METHODS = {"reshuffle": 0, "bootstrap": 1, "block": 2}
STATISTICS = ("final_equity", "cagr", "max_drawdown", "longest_drawdown")
FAN_PERCENTILES = (5, 25, 50, 75, 95)


@dataclass(frozen=True, eq=False)
class MonteCarloResult:
    """Per-run outcomes of :func:`monte_carlo` and the inputs that produced them.

    ``max_drawdown`` is a negative fraction (-0.25 = 25 % below the peak);
    ``longest_drawdown`` counts steps (bars or trades) spent under a previous peak;
    ``ruined`` flags the runs whose equity fell below ``start_equity × (1 - ruin_fraction)``;
    ``fan`` holds equity percentiles (columns 5 … 95) at evenly spaced steps (index).
    """

    method: str
    runs: int
    seed: int
    block_length: float | None
    steps: int
    start_equity: float
    periods_per_year: float
    ruin_fraction: float
    drawdown_limit: float
    final_equity: np.ndarray
    cagr: np.ndarray
    max_drawdown: np.ndarray
    longest_drawdown: np.ndarray
    ruined: np.ndarray = field(repr=False)
    fan: pd.DataFrame = field(repr=False)

    @property
    def probability_of_ruin(self) -> float:
        """Share of runs whose equity fell below ``start × (1 - ruin_fraction)``."""
        return float(self.ruined.mean())

    @property
    def probability_of_drawdown(self) -> float:
        """Share of runs with a max drawdown of ``drawdown_limit`` or deeper."""
        return float((np.abs(self.max_drawdown) >= self.drawdown_limit).mean())

    def percentiles(self, q=(5, 25, 50, 75, 95)) -> pd.DataFrame:
        """Percentiles ``q`` (columns) of the four per-run statistics (rows)."""
        q = np.atleast_1d(q).tolist()
        if any(not 0.0 <= x <= 100.0 for x in q):
            raise ConfigError(f"percentiles q={q}: each must lie in [0, 100]")
        rows = {name: np.percentile(getattr(self, name), q) for name in STATISTICS}
        return pd.DataFrame.from_dict(rows, orient="index", columns=q)

    def summary(self) -> dict:
        """Inputs, probabilities and the default percentiles as a JSON-safe dict."""
        table = self.percentiles()
        return {
            "method": self.method,
            "runs": self.runs,
            "seed": self.seed,
            "block_length": self.block_length,
            "steps": self.steps,
            "start_equity": self.start_equity,
            "periods_per_year": self.periods_per_year,
            "ruin_fraction": self.ruin_fraction,
            "drawdown_limit": self.drawdown_limit,
            "probability_of_ruin": self.probability_of_ruin,
            "probability_of_drawdown": self.probability_of_drawdown,
            "mean": {name: _json_float(getattr(self, name).mean()) for name in STATISTICS},
            "percentiles": {
                name: {f"p{q:g}": _json_float(v) for q, v in table.loc[name].items()}
                for name in STATISTICS
            },
        }


def monte_carlo(
    returns: np.ndarray | pd.Series | None = None,
    *,
    trade_returns: np.ndarray | pd.Series | None = None,
    method: str = "bootstrap",
    runs: int = 1000,
    seed: int = 0,
    block_length: float | None = None,
    start_equity: float = 10_000.0,
    periods_per_year: float = 252.0,
    ruin_fraction: float = 0.5,
    drawdown_limit: float = 0.2,
    fan_points: int = 200,
    progress: bool = False,
    cluster=None,
) -> MonteCarloResult:
    """Resample returns ``runs`` times and report the distribution of equity outcomes.

    Parameters
    ----------
    returns
        Bar returns as fractions (0.01 = +1 %), for ``method="bootstrap"`` or ``"block"``;
        each run draws ``len(returns)`` of them.
    trade_returns
        Fractional return of each trade (e.g. ``trades["return_pct"] / 100`` of
        :data:`mmats.types.TRADE_DTYPE` records), for ``method="reshuffle"``; each run
        compounds all of them in a random order.
    method
        ``"reshuffle"``, ``"bootstrap"`` (i.i.d.) or ``"block"`` (stationary bootstrap).
    block_length
        Mean block length of ``"block"``, at least 1; default ``len(returns) ** (1/3)``.
    periods_per_year
        Steps per year, for CAGR (``years = steps / periods_per_year``); for trades, the
        number of trades a year.
    ruin_fraction, drawdown_limit
        A run is ruined when its equity falls below ``start_equity × (1 - ruin_fraction)``
        at any step; ``probability_of_drawdown`` is P(|max drawdown| >= drawdown_limit).
    fan_points
        Number of evenly spaced steps (first and last included) at which equity
        percentiles are kept (fewer if the run has fewer steps); memory is
        ``runs × fan_points``, never ``runs × steps``.

    The same ``seed`` gives identical results on any number of threads, and with or
    without ``progress`` (a progress bar; the runs are then simulated in chunks), and on
    a Dask ``cluster`` (``"tcp://HOST:8786"``, ``"local:N"`` or a ``distributed.Client``:
    batches of runs as tasks, see :mod:`mmats.distributed`).

    Example
    -------
    >>> r = np.random.default_rng(1).normal(0.0005, 0.01, 1000)
    >>> mc = monte_carlo(r, method="block", runs=500, seed=7)
    >>> bool(mc.percentiles().loc["max_drawdown", 50] < 0)
    True
    """
    if method not in METHODS:
        raise ConfigError(
            f"unknown method {method!r}: choose one of {', '.join(map(repr, METHODS))}"
        )
    if method == "reshuffle":
        if trade_returns is None:
            raise ConfigError("method='reshuffle' permutes trades: pass trade_returns=...")
        if returns is not None:
            raise ConfigError("method='reshuffle' uses trade_returns only; drop returns=...")
        values = _check_returns(trade_returns, "trade_returns")
    else:
        if trade_returns is not None:
            raise ConfigError(
                f"method={method!r} resamples bar returns (returns=...); trade_returns is for"
                " method='reshuffle'"
            )
        if returns is None:
            raise ConfigError(f"method={method!r} resamples bar returns: pass returns=...")
        values = _check_returns(returns, "returns")
    runs = _check_int(runs, "runs", minimum=1)
    seed = _check_int(seed, "seed", minimum=0)
    fan_points = _check_int(fan_points, "fan_points", minimum=2)
    _check_positive(start_equity, "start_equity")
    _check_positive(periods_per_year, "periods_per_year")
    _check_fraction(ruin_fraction, "ruin_fraction")
    _check_fraction(drawdown_limit, "drawdown_limit")
    steps = len(values)
    if method == "block":
        if block_length is None:
            block_length = steps ** (1.0 / 3.0)
        elif not (math.isfinite(block_length) and block_length >= 1.0):
            raise ConfigError(f"block_length={block_length!r}: the mean block length must be >= 1")
        block_length = float(block_length)
    elif block_length is not None:
        raise ConfigError(f"block_length applies to method='block' only, not {method!r}")

    checkpoints = np.unique(np.linspace(0, steps, fan_points).round().astype(np.int64))
    states = run_states(seed, runs)
    chunks = np.array_split(np.arange(runs), min(runs, 20) if progress else 1)
    from tqdm.auto import tqdm

    shared = (values, METHODS[method], 1.0 / block_length if block_length else 0.0,
              float(start_equity), float(start_equity) * (1.0 - ruin_fraction), checkpoints)
    if cluster is not None:
        from mmats.distributed import map_batches

        parts = map_batches(cluster, simulate_batch, states, shared, progress=progress,
                            label=f"monte carlo ({method})")
    else:
        parts = []
        with tqdm(total=runs, disable=not progress, desc=f"monte carlo ({method})",
                  unit="run", leave=False) as bar:
            for chunk in chunks:
                parts.append(simulate_batch(states[chunk[0]:chunk[-1] + 1], *shared))
                bar.update(len(chunk))
    final_equity, max_drawdown, longest, ruined, fan = (
        np.concatenate([part[i] for part in parts]) for i in range(5))
    growth = final_equity / start_equity
    with np.errstate(divide="ignore", over="ignore"):
        cagr = np.where(growth > 0.0, growth ** (periods_per_year / steps) - 1.0, -1.0)
    fan_table = pd.DataFrame(
        np.percentile(fan, FAN_PERCENTILES, axis=0).T,
        index=pd.Index(checkpoints, name="step"),
        columns=list(FAN_PERCENTILES),
    )
    return MonteCarloResult(
        method=method,
        runs=runs,
        seed=seed,
        block_length=block_length,
        steps=steps,
        start_equity=float(start_equity),
        periods_per_year=float(periods_per_year),
        ruin_fraction=float(ruin_fraction),
        drawdown_limit=float(drawdown_limit),
        final_equity=final_equity,
        cagr=cagr,
        max_drawdown=max_drawdown,
        longest_drawdown=longest,
        ruined=ruined,
        fan=fan_table,
    )


def simulate_batch(states, values, method, restart_probability, start_equity, ruin_equity,
                   checkpoints):
    """The runs whose generator states are the rows of ``states``: the one call behind a
    local run's chunks and a cluster's tasks (:func:`mmats.nb.montecarlo.simulate_paths`)."""
    from mmats.nb import montecarlo as nb

    return nb.simulate_paths(values, method, np.ascontiguousarray(states),
                             restart_probability, start_equity, ruin_equity, checkpoints)


def trade_returns_on_equity(result) -> np.ndarray:
    """Each trade's P&L over the sleeve's equity just before it opened, so compounding
    them in the order they happened gives the run's own growth over its trades (what the
    "reshuffle" method reorders).

    ``result`` is a :class:`~mmats.backtest.BacktestResult`; its trades' bars count in
    its market, whose last ``len(result.equity)`` bars it traded.
    """
    equity = result.equity.to_numpy()
    offset = len(result.market) - len(equity)
    before = np.asarray(result.trades["entry_bar"]) - offset - 1
    base = np.where(before >= 0, equity[np.maximum(before, 0)], result.cash)
    return np.asarray(result.trades["pnl"]) / base


def trades_per_year(result) -> float:
    """Closed trades per year of the run: the annualisation when each step is a trade."""
    years = len(result.equity) / result.market.periods_per_year
    return len(result.trades) / years


def run_states(seed: int, runs: int) -> np.ndarray:
    """The (runs, 4) uint64 xoshiro256** states of the runs, derived from ``seed``."""
    states = np.random.SeedSequence(seed).generate_state(4 * runs, np.uint64).reshape(runs, 4)
    states[~states.any(axis=1), 0] = 1  # an all-zero state would emit zeros forever
    return states


def _check_returns(values, name: str) -> np.ndarray:
    labels = values.index if isinstance(values, pd.Series) else None
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name} must be numbers: {exc}") from None
    if array.ndim != 1:
        raise ConfigError(f"{name} must be one-dimensional, got shape {array.shape}")
    if array.size == 0:
        raise ConfigError(f"{name} is empty: nothing to resample")
    bad = np.flatnonzero(~np.isfinite(array))
    if bad.size:
        i = int(bad[0])
        where = f"index {labels[i]!r} (position {i})" if labels is not None else f"index {i}"
        raise ConfigError(
            f"{name} has {'NaN' if np.isnan(array[i]) else array[i]} at {where}"
            f" ({bad.size} non-finite value(s) in all): drop or fill them first"
        )
    return np.ascontiguousarray(array)


def _check_int(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"{name}={value!r} must be an integer")
    if value < minimum:
        raise ConfigError(f"{name}={value!r} must be >= {minimum}")
    return int(value)


def _check_positive(value, name: str) -> None:
    if not (isinstance(value, (int, float, np.number)) and math.isfinite(value) and value > 0):
        raise ConfigError(f"{name}={value!r} must be a positive number")


def _check_fraction(value, name: str) -> None:
    if not (isinstance(value, (int, float, np.number)) and 0.0 < value <= 1.0):
        raise ConfigError(f"{name}={value!r} must lie in (0, 1]")


def _json_float(value) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None
