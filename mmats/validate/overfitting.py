"""How much of a backtest's performance is selection luck: PSR, DSR, PBO and Hansen's SPA.

- :func:`probabilistic_sharpe_ratio` and :func:`deflated_sharpe_ratio` follow Bailey &
  López de Prado, "The Deflated Sharpe Ratio: Correcting for Selection Bias, Backtest
  Overfitting and Non-Normality", Journal of Portfolio Management 40(5), 2014.
- :func:`probability_of_backtest_overfitting` is combinatorially symmetric cross-validation
  (CSCV) of Bailey, Borwein, López de Prado & Zhu, "The Probability of Backtest
  Overfitting", Journal of Computational Finance 20(4), 2017 (SSRN 2013).
- :func:`spa_test` is Hansen's test of superior predictive ability ("A Test for Superior
  Predictive Ability", JBES 23(4), 2005) with Politis & Romano's stationary bootstrap,
  computed here as ``arch.bootstrap.SPA`` (arch 8) computes it, draw for draw: a test
  checks the p-values equal arch's. Importing arch (and the statsmodels and matplotlib it
  loads) cost a research run more time than the test itself.

scipy is imported inside the functions that need its normal distribution, so that
importing this module (and unpickling a cached research result) stays cheap.

Sharpe ratios here are per period and not annualised: ``mean / std(ddof=1)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pandas as pd

from mmats.errors import ConfigError

EULER_GAMMA = 0.5772156649015329
_CHUNK_CELLS = 1_000_000  # combinations × strategies scored at a time by CSCV
_TIE_RTOL = 1e-9  # CSCV scores this close (relative to the row's scale) are equal


# --------------------------------------------------------------------------- PSR and DSR


@dataclass(frozen=True)
class PSRResult:
    """Probability that the true Sharpe ratio exceeds ``benchmark_sharpe``."""

    psr: float
    sharpe: float  # per period
    benchmark_sharpe: float
    skewness: float
    kurtosis: float  # non-excess: 3 for a normal distribution
    n_observations: int
    z: float  # the standardised statistic; psr = Φ(z)


@dataclass(frozen=True)
class DSRResult:
    """PSR against ``sr0``, the Sharpe ratio the best of ``n_trials`` luck-only trials reaches."""

    dsr: float
    sharpe: float  # per period
    sr0: float  # expected maximum Sharpe ratio of the trials, per period
    skewness: float
    kurtosis: float  # non-excess
    n_observations: int
    n_trials: int
    trial_sharpe_variance: float
    z: float


def expected_maximum_sharpe(n_trials: int, trial_sharpe_variance: float) -> float:
    """E[max SR] of ``n_trials`` independent zero-skill trials (Bailey & López de Prado 2014).

    ``sqrt(V) × ((1 - γ) Φ⁻¹(1 - 1/N) + γ Φ⁻¹(1 - 1/(N e)))`` with γ the Euler–Mascheroni
    constant; 0 for a single trial (nothing was selected).
    """
    n_trials = _check_count(n_trials, "n_trials")
    if not (math.isfinite(trial_sharpe_variance) and trial_sharpe_variance >= 0.0):
        raise ConfigError(f"trial_sharpe_variance={trial_sharpe_variance!r} must be >= 0")
    if n_trials == 1:
        return 0.0
    from scipy.special import ndtri  # scipy.stats.norm.ppf, without importing scipy.stats

    z = (1.0 - EULER_GAMMA) * ndtri(1.0 - 1.0 / n_trials) + EULER_GAMMA * ndtri(
        1.0 - 1.0 / (n_trials * math.e)
    )
    return float(math.sqrt(trial_sharpe_variance) * z)


def probabilistic_sharpe_ratio_from_statistics(
    sharpe: float,
    n_observations: int,
    skewness: float = 0.0,
    kurtosis: float = 3.0,
    benchmark_sharpe: float = 0.0,
) -> PSRResult:
    """PSR from summary statistics (per-period Sharpe, non-excess kurtosis).

    ``Φ((SR - SR*) √(T - 1) / √(1 - γ₃ SR + (γ₄ - 1) / 4 × SR²))``.

    Example
    -------
    >>> round(probabilistic_sharpe_ratio_from_statistics(0.1, 252).psr, 4)
    0.943
    """
    n_observations = _check_count(n_observations, "n_observations", minimum=2)
    denominator = 1.0 - skewness * sharpe + (kurtosis - 1.0) / 4.0 * sharpe * sharpe
    if not denominator > 0.0:
        raise ConfigError(
            f"skewness={skewness}, kurtosis={kurtosis} with sharpe={sharpe} give a non-positive"
            " variance of the Sharpe estimate: check the moments (kurtosis is non-excess, 3 = normal)"
        )
    z = (sharpe - benchmark_sharpe) * math.sqrt(n_observations - 1) / math.sqrt(denominator)
    from scipy.special import ndtr  # scipy.stats.norm.cdf, without importing scipy.stats

    return PSRResult(
        psr=float(ndtr(z)),
        sharpe=float(sharpe),
        benchmark_sharpe=float(benchmark_sharpe),
        skewness=float(skewness),
        kurtosis=float(kurtosis),
        n_observations=n_observations,
        z=float(z),
    )


def deflated_sharpe_ratio_from_statistics(
    sharpe: float,
    n_observations: int,
    skewness: float,
    kurtosis: float,
    n_trials: int,
    trial_sharpe_variance: float,
) -> DSRResult:
    """DSR from summary statistics: the PSR against :func:`expected_maximum_sharpe`.

    All Sharpe figures per period (divide an annualised variance by periods per year).

    Example (the paper's: annualised SR 2.5 and V[SR] 0.5, 250 days a year)
    -------
    >>> r = deflated_sharpe_ratio_from_statistics(2.5 / 250**0.5, 1250, -3, 10, 100, 0.5 / 250)
    >>> round(r.sr0, 4), round(r.dsr, 4)
    (0.1132, 0.9004)
    """
    sr0 = expected_maximum_sharpe(n_trials, trial_sharpe_variance)
    psr = probabilistic_sharpe_ratio_from_statistics(
        sharpe, n_observations, skewness, kurtosis, benchmark_sharpe=sr0
    )
    return DSRResult(
        dsr=psr.psr,
        sharpe=psr.sharpe,
        sr0=sr0,
        skewness=psr.skewness,
        kurtosis=psr.kurtosis,
        n_observations=psr.n_observations,
        n_trials=int(n_trials),
        trial_sharpe_variance=float(trial_sharpe_variance),
        z=psr.z,
    )


def probabilistic_sharpe_ratio(returns, benchmark_sharpe: float = 0.0) -> PSRResult:
    """PSR of a return series against a per-period ``benchmark_sharpe``.

    Skewness and kurtosis are the sample (biased, population-formula) moments.

    Example
    -------
    >>> r = np.random.default_rng(0).normal(0.001, 0.01, 1000)
    >>> probabilistic_sharpe_ratio(r).psr > 0.9
    True
    """
    sharpe, skewness, kurtosis, n = _moments(returns, "returns")
    return probabilistic_sharpe_ratio_from_statistics(
        sharpe, n, skewness, kurtosis, benchmark_sharpe
    )


def deflated_sharpe_ratio(
    returns,
    n_trials: int | None = None,
    *,
    trial_sharpe_variance: float | None = None,
    trial_sharpes=None,
) -> DSRResult:
    """DSR of the selected strategy's returns, given how many trials were tried.

    Pass either ``trial_sharpe_variance`` (variance of the per-period Sharpe ratios across
    the trials) or ``trial_sharpes`` (the per-period Sharpe ratio of every trial, the
    selected one included; its variance is taken with ddof=1 and ``n_trials`` defaults to
    its length). ``n_trials`` counts every trial tried, which may be more than the Sharpe
    ratios given (a search scores only some of its trials on the whole history), never
    fewer.

    Example
    -------
    >>> rng = np.random.default_rng(0)
    >>> trials = rng.normal(0.0, 0.01, (500, 50))
    >>> sharpes = trials.mean(0) / trials.std(0, ddof=1)
    >>> deflated_sharpe_ratio(trials[:, sharpes.argmax()], trial_sharpes=sharpes).dsr < 0.95
    True
    """
    if (trial_sharpe_variance is None) == (trial_sharpes is None):
        raise ConfigError("pass exactly one of trial_sharpe_variance= and trial_sharpes=")
    if trial_sharpes is not None:
        sharpes = np.asarray(trial_sharpes, dtype=np.float64).ravel()
        if sharpes.size < 2 or not np.isfinite(sharpes).all():
            raise ConfigError("trial_sharpes needs at least two finite Sharpe ratios")
        trial_sharpe_variance = float(sharpes.var(ddof=1))
        if n_trials is None:
            n_trials = sharpes.size
        elif isinstance(n_trials, int | np.integer) and n_trials < sharpes.size:
            raise ConfigError(f"n_trials={n_trials} is fewer than the {sharpes.size} trial "
                              "Sharpe ratios given: count every trial tried (a search's "
                              "n_trials, its early rounds included)")
    if n_trials is None:
        raise ConfigError("n_trials is required with trial_sharpe_variance=")
    sharpe, skewness, kurtosis, n = _moments(returns, "returns")
    return deflated_sharpe_ratio_from_statistics(
        sharpe, n, skewness, kurtosis, n_trials, trial_sharpe_variance
    )


def _moments(returns, name: str) -> tuple[float, float, float, int]:
    r = _check_finite(np.asarray(returns, dtype=np.float64), name)
    if r.ndim != 1 or r.size < 3:
        raise ConfigError(
            f"{name} must be one-dimensional with at least 3 values, got shape {r.shape}"
        )
    std = r.std(ddof=1)
    if not std > 0.0:
        raise ConfigError(f"{name} have zero variance: the Sharpe ratio is undefined")
    centred = r - r.mean()
    m2 = np.mean(centred**2)
    skewness = np.mean(centred**3) / m2**1.5
    kurtosis = np.mean(centred**4) / m2**2
    return float(r.mean() / std), float(skewness), float(kurtosis), int(r.size)


# --------------------------------------------------------------------------- PBO (CSCV)


@dataclass(frozen=True, eq=False)
class PBOResult:
    """Outcome of CSCV; one entry per combination of in-sample groups.

    ``chosen`` is the position of the in-sample best column, ``oos_ranks`` its rank among
    the out-of-sample metrics (1 = worst, N = best; ties averaged), ``logits`` is
    ``ln(ω / (1 - ω))`` with ``ω = rank / (N + 1)``, and ``is_performance`` /
    ``oos_performance`` are the chosen column's metric in and out of sample (the
    performance-degradation pairs).
    """

    pbo: float
    logits: np.ndarray
    oos_ranks: np.ndarray
    chosen: np.ndarray
    is_performance: np.ndarray
    oos_performance: np.ndarray
    n_combinations: int
    n_splits: int
    n_strategies: int
    metric: str
    columns: list

    @property
    def probability_of_loss(self) -> float:
        """Share of combinations whose chosen column has a negative out-of-sample metric."""
        return float((self.oos_performance < 0.0).mean())

    @property
    def degradation_slope(self) -> float:
        """OLS slope of out-of-sample on in-sample metric of the chosen columns."""
        if np.ptp(self.is_performance) == 0.0:
            return math.nan
        return float(np.polyfit(self.is_performance, self.oos_performance, 1)[0])


def probability_of_backtest_overfitting(
    returns_matrix, n_splits: int = 16, metric="sharpe"
) -> PBOResult:
    """Probability of backtest overfitting by combinatorially symmetric cross-validation.

    ``returns_matrix`` is T × N (rows = time, columns = parameter combinations or
    strategies). Its rows are cut into ``n_splits`` contiguous groups (sizes differ by at
    most one, as ``numpy.array_split``); each of the C(S, S/2) ways to pick half the groups
    in sample (``itertools.combinations`` order) selects the column with the best
    in-sample metric (the first on ties) and ranks it out of sample (ties share the
    average rank). PBO is the share of logits <= 0, i.e. of choices that land in the bottom
    half out of sample.

    Ties are decided with a tolerance, so that equal metrics reached by different rounding
    (a column and its multiple, or the same rows in another order within groups) tie: two
    scores of one combination are equal when they differ by at most 1e-9 times the largest
    finite |score| of that combination (for ``"sharpe"``, times at least 1).

    ``metric``: ``"sharpe"`` (per period; a zero-variance column scores 0 if its mean is 0,
    else ±inf), ``"mean"``, or a callable mapping a (rows × N) array to N scores.

    Example
    -------
    >>> noise = np.random.default_rng(0).normal(0.0, 0.01, (1000, 20))
    >>> 0.2 < probability_of_backtest_overfitting(noise, n_splits=8).pbo < 0.9
    True
    """
    columns = list(returns_matrix.columns) if isinstance(returns_matrix, pd.DataFrame) else None
    m = _check_finite(np.asarray(returns_matrix, dtype=np.float64), "returns_matrix")
    if m.ndim != 2 or m.shape[1] < 2:
        raise ConfigError(
            f"returns_matrix must be 2-D with at least 2 columns (strategies), got shape {m.shape}"
        )
    n_splits = _check_count(n_splits, "n_splits", minimum=2)
    if n_splits % 2:
        raise ConfigError(f"n_splits={n_splits} must be even: half the groups go in sample")
    if n_splits * 2 > m.shape[0]:
        raise ConfigError(
            f"n_splits={n_splits} needs at least {2 * n_splits} rows, got {m.shape[0]}"
        )
    n_strategies = m.shape[1]
    groups = np.array_split(np.arange(m.shape[0]), n_splits)
    in_sample = np.array(list(combinations(range(n_splits), n_splits // 2)))
    membership = np.zeros((len(in_sample), n_splits))
    np.put_along_axis(membership, in_sample, 1.0, axis=1)

    if callable(metric):
        name = getattr(metric, "__name__", "callable")
        scores = _callable_scores
    elif metric in ("sharpe", "mean"):
        name = metric
        scores = _moment_scores
    else:
        raise ConfigError(f"unknown metric {metric!r}: use 'sharpe', 'mean' or a callable")

    # combinations in chunks, so memory stays ~ chunk × N whatever C(S, S/2) is
    chunk = max(1, _CHUNK_CELLS // n_strategies)
    parts = []
    for first in range(0, len(in_sample), chunk):
        is_scores, oos_scores = scores(m, groups, membership[first : first + chunk], metric)
        rows = np.arange(len(is_scores))
        best = is_scores.max(axis=1, keepdims=True)
        chosen = np.argmax(_tied(is_scores, best, metric), axis=1)  # first of the tied best
        chosen_oos = oos_scores[rows, chosen][:, None]
        ties = _tied(oos_scores, chosen_oos, metric)
        below = ((oos_scores < chosen_oos) & ~ties).sum(axis=1)
        ranks = below + (ties.sum(axis=1) + 1) / 2.0
        parts.append((chosen, ranks, is_scores[rows, chosen], chosen_oos[:, 0]))
    chosen, ranks, chosen_is, chosen_oos = (np.concatenate(x) for x in zip(*parts, strict=True))
    omega = ranks / (n_strategies + 1)
    logits = np.log(omega / (1.0 - omega))
    return PBOResult(
        pbo=float((logits <= 0.0).mean()),
        logits=logits,
        oos_ranks=ranks,
        chosen=chosen,
        is_performance=chosen_is,
        oos_performance=chosen_oos,
        n_combinations=len(in_sample),
        n_splits=n_splits,
        n_strategies=n_strategies,
        metric=name,
        columns=columns if columns is not None else list(range(n_strategies)),
    )


def _tied(scores, reference, metric) -> np.ndarray:
    """Which scores equal their row's ``reference`` up to rounding, as a boolean array.

    Equal metrics computed along different paths (the centred-sum shortcut, a column and
    its multiple) differ in the last bits, so "equal" means within ``_TIE_RTOL`` of the
    row's largest finite |score|. A Sharpe ratio's rounding error does not shrink with the
    ratio (it is relative to the standard deviation), so its scale is at least 1.
    """
    finite = np.where(np.isfinite(scores), np.abs(scores), 0.0)
    scale = finite.max(axis=1, keepdims=True)
    if isinstance(metric, str) and metric == "sharpe":
        scale = np.maximum(scale, 1.0)
    with np.errstate(invalid="ignore"):  # inf - inf: equal infinities are caught by ==
        close = np.abs(scores - reference) <= _TIE_RTOL * scale
    return close | (scores == reference)


def _moment_scores(m, groups, membership, metric):
    """In- and out-of-sample Sharpe or mean of every column, from per-group sums."""
    centre = m.mean(axis=0)  # centred sums keep the variance accurate
    sums = np.array([(m[g] - centre).sum(axis=0) for g in groups])
    squares = np.array([((m[g] - centre) ** 2).sum(axis=0) for g in groups])
    counts = np.array([len(g) for g in groups], dtype=np.float64)
    scores = []
    for weights in (membership, 1.0 - membership):
        n = (weights @ counts)[:, None]
        s1 = weights @ sums
        mean = s1 / n + centre
        if metric == "mean":
            scores.append(mean)
            continue
        variance = np.maximum((weights @ squares - s1 * s1 / n) / (n - 1.0), 0.0)
        std = np.sqrt(variance)
        with np.errstate(divide="ignore", invalid="ignore"):
            sharpe = np.where(std > 0.0, mean / std, np.sign(mean) * np.inf)
        scores.append(np.where((std == 0.0) & (mean == 0.0), 0.0, sharpe))
    return scores[0], scores[1]


def _callable_scores(m, groups, membership, metric):
    is_scores = np.empty((len(membership), m.shape[1]))
    oos_scores = np.empty_like(is_scores)
    for i, weights in enumerate(membership):
        inside = np.concatenate([g for g, w in zip(groups, weights, strict=True) if w])
        outside = np.concatenate([g for g, w in zip(groups, weights, strict=True) if not w])
        is_scores[i] = metric(m[inside])
        oos_scores[i] = metric(m[outside])
        for half, scores in (("in-sample", is_scores[i]), ("out-of-sample", oos_scores[i])):
            if np.isnan(scores).any():
                raise ConfigError(
                    f"metric {getattr(metric, '__name__', metric)!r} returned NaN for column"
                    f" {int(np.argmax(np.isnan(scores)))} on the {half} rows of combination {i}:"
                    " return a number (±inf allowed) for every column"
                )
    return is_scores, oos_scores


# --------------------------------------------------------------------------- SPA


@dataclass(frozen=True)
class SPAResult:
    """Hansen's SPA p-values for H0: no strategy beats the benchmark in expected return.

    ``consistent`` is the p-value Hansen recommends; ``lower`` and ``upper`` bound it
    (``upper`` is White's Reality Check). ``best`` is the column with the highest mean
    excess return over the benchmark.
    """

    pvalue_lower: float
    pvalue_consistent: float
    pvalue_upper: float
    best: object  # column label (DataFrame) or position
    best_mean_excess: float  # per period
    reps: int
    block_length: int
    seed: int

    @property
    def pvalue(self) -> float:
        """The consistent p-value, the one to report."""
        return self.pvalue_consistent


def spa_test(
    returns_matrix,
    benchmark=None,
    reps: int = 1000,
    block_length: int | None = None,
    seed: int = 0,
) -> SPAResult:
    """Hansen's test of superior predictive ability of T × N strategy returns.

    The statistic is the largest mean excess return over the benchmark (zero returns by
    default). Its distribution under H0 comes from ``reps`` stationary-bootstrap
    resamples (Politis & Romano 1994, mean block length ``block_length``, default
    ``int(sqrt(T))``) of the excess returns, each column's mean re-centred three ways:
    ``lower`` re-centres only columns that beat the benchmark, ``upper`` every column
    (White's Reality Check) and ``consistent`` those not clearly worse than it (mean above
    ``-sqrt(2 log log T × ω² / T)``, with ω² the bootstrap's long-run variance). This is
    ``arch.bootstrap.SPA(-benchmark, -returns_matrix, bootstrap="stationary")`` of arch 8
    (which compares losses, negative returns) with the same random draws for a given
    ``seed``: the p-values equal arch's (tested), the statistic is not studentised, as
    arch's is not.

    Example
    -------
    >>> noise = np.random.default_rng(0).normal(0.0, 0.01, (500, 5))
    >>> spa_test(noise, reps=200).pvalue_consistent > 0.1
    True
    """
    columns = list(returns_matrix.columns) if isinstance(returns_matrix, pd.DataFrame) else None
    m = _check_finite(np.asarray(returns_matrix, dtype=np.float64), "returns_matrix")
    if m.ndim == 1:
        m = m[:, None]
    if m.ndim != 2 or m.shape[0] < 3:
        raise ConfigError(f"returns_matrix must be T × N with T >= 3, got shape {m.shape}")
    if benchmark is None:
        bench = np.zeros(m.shape[0])
    else:
        bench = _check_finite(np.asarray(benchmark, dtype=np.float64), "benchmark")
        if bench.shape != (m.shape[0],):
            raise ConfigError(
                f"benchmark must have one return per row of returns_matrix ({m.shape[0]}),"
                f" got shape {bench.shape}"
            )
    reps = _check_count(reps, "reps")
    seed = _check_count(seed, "seed", minimum=0)
    if block_length is None:
        block_length = int(np.sqrt(m.shape[0]))
    block_length = _check_count(block_length, "block_length")
    excess = m - bench[:, None]  # arch's loss differential: benchmark loss - model loss
    pvalues = _spa_pvalues(excess, block_length, reps, seed)
    means = excess.mean(axis=0)
    best = int(np.argmax(means))
    return SPAResult(
        pvalue_lower=float(pvalues[0]),
        pvalue_consistent=float(pvalues[1]),
        pvalue_upper=float(pvalues[2]),
        best=columns[best] if columns is not None else best,
        best_mean_excess=float(means[best]),
        reps=reps,
        block_length=block_length,
        seed=seed,
    )


def _spa_pvalues(excess: np.ndarray, block_length: int, reps: int, seed: int) -> np.ndarray:
    """The lower, consistent and upper SPA p-values of T × N excess returns."""
    t = excess.shape[0]
    means = excess.mean(axis=0)
    variances = _stationary_long_run_variance(excess - means, block_length)
    valid = means >= -np.sqrt(variances / t * 2.0 * np.log(np.log(t)))
    centres = np.stack([np.where(means < 0.0, 0.0, means),  # lower
                        np.where(valid, means, 0.0),  # consistent
                        means])  # upper
    resampled = _stationary_bootstrap_means(excess, block_length, reps, seed)  # reps × N
    # the largest re-centred resampled mean against the largest observed one
    simulated = (resampled[None, :, :] - centres[:, None, :]).max(axis=2)
    return (simulated > means.max()).mean(axis=1)


def _stationary_long_run_variance(demeaned: np.ndarray, block_length: int) -> np.ndarray:
    """Per column, the variance of the mean (times T) the stationary bootstrap implies:
    autocovariances weighted by Politis & Romano's kernel, as arch computes them."""
    t = demeaned.shape[0]
    p = 1.0 / block_length
    variances = np.sum(demeaned**2, 0) / t
    for lag in range(1, t):
        kappa = (1.0 - lag / t) * (1 - p) ** lag + (lag / t) * (1 - p) ** (t - lag)
        variances += 2 * kappa * np.sum(demeaned[: t - lag, :] * demeaned[lag:, :], 0) / t
    return variances


def _stationary_bootstrap_means(excess: np.ndarray, block_length: int, reps: int,
                                seed: int) -> np.ndarray:
    """Column means of ``reps`` stationary-bootstrap resamples of the rows (reps × N).

    Each resample draws T start rows and T uniforms from ``default_rng(seed)``, in that
    order (arch's draws); row i continues row i-1's block (wrapping past the end) unless
    its uniform is at most 1/``block_length``, when it starts a new block at its own draw.
    """
    t = excess.shape[0]
    p = 1.0 / block_length
    generator = np.random.default_rng(seed)
    positions = np.arange(t)
    counts = np.zeros((reps, t))
    for rep in range(reps):
        starts = generator.integers(t, size=t, dtype=np.int64)
        uniforms = generator.random(t)
        new_block = uniforms <= p
        new_block[0] = True
        block_start = np.maximum.accumulate(np.where(new_block, positions, 0))
        rows = (starts[block_start] + positions - block_start) % t
        counts[rep] = np.bincount(rows, minlength=t)
    return counts @ excess / t


# --------------------------------------------------------------------------- checks


def _check_finite(array: np.ndarray, name: str) -> np.ndarray:
    if array.size == 0:
        raise ConfigError(f"{name} is empty")
    bad = np.argwhere(~np.isfinite(array))
    if bad.size:
        where = tuple(int(i) for i in bad[0])
        raise ConfigError(
            f"{name} has a non-finite value ({array[where]}) at position {where[0] if len(where) == 1 else where}:"
            " drop or fill it first"
        )
    return array


def _check_count(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"{name}={value!r} must be an integer")
    if value < minimum:
        raise ConfigError(f"{name}={value!r} must be >= {minimum}")
    return int(value)
