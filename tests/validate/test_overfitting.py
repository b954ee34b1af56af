"""PSR, DSR, PBO and SPA against published numbers, hand computations and an independent
re-computation."""

import doctest
import math
import re
from fractions import Fraction
from itertools import combinations
from statistics import NormalDist

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import mmats.validate.overfitting as overfitting
from mmats.errors import ConfigError
from mmats.validate import (
    deflated_sharpe_ratio,
    deflated_sharpe_ratio_from_statistics,
    expected_maximum_sharpe,
    probabilistic_sharpe_ratio,
    probabilistic_sharpe_ratio_from_statistics,
    probability_of_backtest_overfitting,
    spa_test,
)

NORMAL = NormalDist()


def independent_dsr(sharpe, t, skew, kurt, n, variance):
    """The paper's formulas restated with the standard library's normal distribution."""
    gamma = 0.5772156649015329
    sr0 = math.sqrt(variance) * (
        (1 - gamma) * NORMAL.inv_cdf(1 - 1 / n) + gamma * NORMAL.inv_cdf(1 - 1 / (n * math.e))
    )
    sigma = math.sqrt((1 - skew * sharpe + (kurt - 1) / 4 * sharpe**2) / (t - 1))
    return sr0, NORMAL.cdf((sharpe - sr0) / sigma)


# --------------------------------------------------------------------------- DSR and PSR


def test_dsr_reproduces_the_papers_worked_example():
    """Bailey & López de Prado, "The Deflated Sharpe Ratio" (Journal of Portfolio Management
    40(5), 2014, pp. 94-107; SSRN 2460551), numerical example: N = 100 independent trials
    with V[SR_n] = 1/2 (annualised), the selected strategy's annualised SR = 2.5 over five
    years of daily returns (T = 1250), skewness -3, kurtosis 10. The paper reports
    SR0 = 0.1132 (per day) and DSR = 0.9004. Annualised figures are converted with 250
    observations a year (1250 days = 5 years), which reproduces both published values to
    the four decimals printed; with 252 they would be 0.1127 and 0.8997.

    The search-tool corpora held no copy of the paper's text, so these two figures are
    quoted from the paper as published, and checked below against an independent
    re-computation of the same formulas.
    """
    days = 250
    result = deflated_sharpe_ratio_from_statistics(
        sharpe=2.5 / math.sqrt(days),
        n_observations=1250,
        skewness=-3.0,
        kurtosis=10.0,
        n_trials=100,
        trial_sharpe_variance=0.5 / days,
    )
    assert result.sr0 == pytest.approx(0.1132, abs=5e-5)
    assert result.dsr == pytest.approx(0.9004, abs=5e-5)
    sr0, dsr = independent_dsr(2.5 / math.sqrt(days), 1250, -3.0, 10.0, 100, 0.5 / days)
    assert result.sr0 == pytest.approx(sr0, rel=1e-12)
    assert result.dsr == pytest.approx(dsr, rel=1e-12)
    assert (result.n_trials, result.n_observations) == (100, 1250)


@pytest.mark.parametrize(
    ("sharpe", "t", "skew", "kurt", "n", "variance"),
    [
        (0.05, 500, 0.0, 3.0, 10, 0.001),
        (0.2, 100, -1.0, 6.0, 1000, 0.01),
        (-0.02, 2000, 0.5, 4.0, 2, 1e-4),
    ],
)
def test_dsr_matches_an_independent_computation(sharpe, t, skew, kurt, n, variance):
    result = deflated_sharpe_ratio_from_statistics(sharpe, t, skew, kurt, n, variance)
    sr0, dsr = independent_dsr(sharpe, t, skew, kurt, n, variance)
    assert result.sr0 == pytest.approx(sr0, rel=1e-12)
    assert result.dsr == pytest.approx(dsr, rel=1e-10, abs=1e-15)


def test_dsr_from_returns_uses_the_sample_moments():
    rng = np.random.default_rng(0)
    returns = rng.standard_t(5, 1500) * 0.01 + 0.0008
    trial_sharpes = rng.normal(0.0, 0.03, 50)
    result = deflated_sharpe_ratio(returns, trial_sharpes=trial_sharpes)
    sharpe = returns.mean() / returns.std(ddof=1)
    skew = stats.skew(returns)  # biased sample moments, as documented
    kurt = stats.kurtosis(returns, fisher=False)
    assert result.sharpe == pytest.approx(sharpe, rel=1e-12)
    assert result.skewness == pytest.approx(skew, rel=1e-10)
    assert result.kurtosis == pytest.approx(kurt, rel=1e-10)
    assert result.n_trials == 50
    assert result.trial_sharpe_variance == pytest.approx(trial_sharpes.var(ddof=1))
    _, dsr = independent_dsr(sharpe, 1500, skew, kurt, 50, trial_sharpes.var(ddof=1))
    assert result.dsr == pytest.approx(dsr, rel=1e-9)
    same = deflated_sharpe_ratio(
        returns, n_trials=50, trial_sharpe_variance=trial_sharpes.var(ddof=1)
    )
    assert same.dsr == result.dsr


def test_psr_properties():
    at_benchmark = probabilistic_sharpe_ratio_from_statistics(0.1, 500, benchmark_sharpe=0.1)
    assert at_benchmark.psr == 0.5
    # normal returns: σ(SR) = sqrt((1 + SR²/2) / (T - 1))
    psr = probabilistic_sharpe_ratio_from_statistics(0.1, 500)
    assert psr.psr == pytest.approx(NORMAL.cdf(0.1 / math.sqrt((1 + 0.005) / 499)), rel=1e-12)
    # negative skew and fat tails widen the Sharpe estimate's error: lower PSR
    worse = probabilistic_sharpe_ratio_from_statistics(0.1, 500, skewness=-2.0, kurtosis=9.0)
    assert worse.psr < psr.psr
    returns = np.random.default_rng(1).normal(0.001, 0.01, 800)
    assert probabilistic_sharpe_ratio(returns).psr == pytest.approx(
        probabilistic_sharpe_ratio_from_statistics(
            returns.mean() / returns.std(ddof=1),
            800,
            stats.skew(returns),
            stats.kurtosis(returns, fisher=False),
        ).psr,
        rel=1e-10,
    )


def test_one_trial_deflates_nothing():
    returns = np.random.default_rng(2).normal(0.001, 0.01, 300)
    assert expected_maximum_sharpe(1, 0.5) == 0.0
    assert (
        deflated_sharpe_ratio(returns, 1, trial_sharpe_variance=0.01).dsr
        == probabilistic_sharpe_ratio(returns).psr
    )


def test_expected_maximum_sharpe_is_close_to_simulation():
    # E[max of N standard normals], simulated, against the paper's approximation
    draws = np.random.default_rng(3).standard_normal((20_000, 100))
    simulated = draws.max(axis=1).mean()
    assert expected_maximum_sharpe(100, 1.0) == pytest.approx(simulated, rel=0.02)
    assert expected_maximum_sharpe(100, 4.0) == pytest.approx(2 * expected_maximum_sharpe(100, 1.0))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: deflated_sharpe_ratio(np.ones(5) * [1, 2, 3, 4, 5], 10), "exactly one of"),
        (
            lambda: deflated_sharpe_ratio([0.1, 0.2, 0.3], trial_sharpe_variance=0.1),
            "n_trials is required",
        ),
        (
            lambda: deflated_sharpe_ratio([0.1, 0.2, np.nan], 5, trial_sharpe_variance=0.1),
            "non-finite value (nan) at position 2",
        ),
        (lambda: probabilistic_sharpe_ratio([0.01, 0.01, 0.01]), "zero variance"),
        (lambda: expected_maximum_sharpe(0, 1.0), "n_trials=0 must be >= 1"),
        (
            lambda: probabilistic_sharpe_ratio_from_statistics(1.0, 100, skewness=5.0),
            "non-positive",
        ),
    ],
)
def test_sharpe_input_errors(call, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        call()


# --------------------------------------------------------------------------- PBO


def test_pbo_of_a_hand_computed_case():
    # 4 groups of 2 identical rows; group means per column (metric "mean"):
    #   g0 [4, 1, 2]   g1 [1, 3, 2]   g2 [2, 1, 4]   g3 [1, 2, 3]
    # IS groups | IS means        -> pick | OOS means        | OOS rank of pick (avg ties)
    # (0, 1)    | [2.5, 2, 2]     -> 0    | [1.5, 1.5, 3.5]  | 1.5 -> ω .375 -> ln(.6)
    # (0, 2)    | [3, 1, 3]       -> 0    | [1, 2.5, 2.5]    | 1   -> ω .25  -> ln(1/3)
    # (0, 3)    | [2.5, 1.5, 2.5] -> 0    | [1.5, 2, 3]      | 1   -> ln(1/3)
    # (1, 2)    | [1.5, 2, 3]     -> 2    | [2.5, 1.5, 2.5]  | 2.5 -> ω .625 -> ln(5/3)
    # (1, 3)    | [1, 2.5, 2.5]   -> 1    | [3, 1, 3]        | 1   -> ln(1/3)
    # (2, 3)    | [1.5, 1.5, 3.5] -> 2    | [2.5, 2, 2]      | 1.5 -> ln(.6)
    # logits <= 0 in 5 of 6 combinations: PBO = 5/6
    groups = np.array([[4, 1, 2], [1, 3, 2], [2, 1, 4], [1, 2, 3]], dtype=float)
    result = probability_of_backtest_overfitting(np.repeat(groups, 2, axis=0), 4, metric="mean")
    assert result.n_combinations == 6
    assert result.pbo == pytest.approx(5 / 6)
    np.testing.assert_array_equal(result.chosen, [0, 0, 0, 2, 1, 2])
    np.testing.assert_array_equal(result.oos_ranks, [1.5, 1, 1, 2.5, 1, 1.5])
    np.testing.assert_allclose(
        result.logits,
        np.log([0.6, 1 / 3, 1 / 3, 5 / 3, 1 / 3, 0.6]),
        rtol=1e-12,
    )
    np.testing.assert_allclose(result.is_performance, [2.5, 3, 2.5, 3, 2.5, 3.5])
    np.testing.assert_allclose(result.oos_performance, [1.5, 1, 1.5, 2.5, 1, 2])


def test_pbo_with_two_splits():
    # S = 2: IS = first half then second half. Means: first [3, 1, 2], second [1, 2, 3].
    # first IS picks column 0, OOS rank 1 of 3 -> logit ln(1/3); second IS picks column 2,
    # OOS (first half) rank 2 -> ω = 0.5 -> logit 0, which counts as overfit: PBO = 1
    m = np.array([[3, 1, 2], [3, 1, 2], [1, 2, 3], [1, 2, 3]], dtype=float)
    result = probability_of_backtest_overfitting(m, n_splits=2, metric="mean")
    np.testing.assert_allclose(result.logits, [math.log(1 / 3), 0.0], atol=1e-15)
    assert result.pbo == 1.0


def test_pbo_of_pure_noise_is_about_one_half():
    # The PBO of one noise data set is itself widely spread (40 seeds of this very case gave
    # 0.16 to 0.90, mean 0.49: the 12,870 combinations share one data set), so one seeded
    # case gets a wide band and the mean over many data sets a narrow one.
    noise = np.random.default_rng(4).normal(0.0, 0.01, (2000, 100))
    result = probability_of_backtest_overfitting(noise, n_splits=16)
    assert result.n_combinations == 12870
    assert 0.2 <= result.pbo <= 0.9
    assert result.degradation_slope < 0.5  # in-sample luck does not carry over
    rng = np.random.default_rng(100)
    pbos = [
        probability_of_backtest_overfitting(rng.normal(0.0, 0.01, (1000, 50)), 8).pbo
        for _ in range(200)
    ]
    # 200 data sets, per-set standard deviation ~0.18: the mean is 0.5 ± 0.013
    assert np.mean(pbos) == pytest.approx(0.5, abs=0.05)


def test_pbo_of_a_real_edge_is_about_zero():
    rng = np.random.default_rng(5)
    m = rng.normal(0.0, 0.01, (2000, 50))
    m[:, 17] += 0.002  # Sharpe 0.2 a period: the best in sample and out of sample
    result = probability_of_backtest_overfitting(pd.DataFrame(m).add_prefix("p"), n_splits=8)
    assert result.pbo < 0.02
    assert (result.chosen == 17).mean() > 0.95
    assert result.columns[17] == "p17"
    assert result.probability_of_loss == 0.0


def test_pbo_sharpe_matches_a_direct_callable():
    m = np.random.default_rng(6).normal(0.0002, 0.01, (240, 12))

    def sharpe(x):
        return x.mean(axis=0) / x.std(axis=0, ddof=1)

    fast = probability_of_backtest_overfitting(m, n_splits=6, metric="sharpe")
    direct = probability_of_backtest_overfitting(m, n_splits=6, metric=sharpe)
    np.testing.assert_allclose(fast.is_performance, direct.is_performance, rtol=1e-9)
    np.testing.assert_allclose(fast.oos_performance, direct.oos_performance, rtol=1e-9)
    np.testing.assert_array_equal(fast.logits, direct.logits)
    assert direct.metric == "sharpe"


def test_pbo_in_chunks_equals_pbo_in_one_go(monkeypatch):
    m = np.random.default_rng(11).normal(0.0, 0.01, (400, 9))
    whole = probability_of_backtest_overfitting(m, n_splits=8)
    monkeypatch.setattr(overfitting, "_CHUNK_CELLS", 20)  # 2 combinations per chunk
    chunked = probability_of_backtest_overfitting(m, n_splits=8)
    np.testing.assert_array_equal(whole.logits, chunked.logits)
    np.testing.assert_array_equal(whole.chosen, chunked.chosen)
    np.testing.assert_array_equal(whole.oos_performance, chunked.oos_performance)
    assert whole.pbo == chunked.pbo


def exact_cscv(m, n_splits):
    """CSCV the slow, obvious way, in exact rational arithmetic: per combination, each
    column's Sharpe in and out of sample, the first column with the largest in-sample
    Sharpe, its out-of-sample rank with ties averaged. Returns (chosen, ranks, pbo)."""
    groups = np.array_split(np.arange(len(m)), n_splits)

    def sharpe_key(rows, column):
        # sign(SR) × SR² = sign(mean) × mean² / variance orders columns as SR does, exactly
        values = [Fraction(int(v)) for v in m[rows, column]]
        mean = sum(values) / len(values)
        variance = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
        return mean * abs(mean) / variance

    chosen, ranks = [], []
    for inside in combinations(range(n_splits), n_splits // 2):
        is_rows = np.concatenate([groups[g] for g in inside])
        oos_rows = np.concatenate([groups[g] for g in range(n_splits) if g not in inside])
        is_keys = [sharpe_key(is_rows, j) for j in range(m.shape[1])]
        oos_keys = [sharpe_key(oos_rows, j) for j in range(m.shape[1])]
        best = is_keys.index(max(is_keys))  # list.index: the first of the tied best
        below = sum(k < oos_keys[best] for k in oos_keys)
        tied = sum(k == oos_keys[best] for k in oos_keys)
        chosen.append(best)
        ranks.append(below + (tied + 1) / 2)
    omega = np.array(ranks) / (m.shape[1] + 1)
    return chosen, ranks, float((np.log(omega / (1 - omega)) <= 0).mean())


def test_pbo_breaks_exact_ties_by_the_documented_rule():
    # Integer returns; column 3 + j is 3 × column j and column 6 + j is column j with rows
    # reordered inside each group, so all three have exactly the same Sharpe ratio on every
    # half. Their floating-point Sharpe ratios differ in the last bits; the first of them
    # must be chosen, and out of sample they share one averaged rank.
    rng = np.random.default_rng(22)
    base = rng.integers(-3, 4, (64, 3)).astype(float)
    within_groups = np.concatenate([rng.permutation(8) + 8 * g for g in range(8)])
    m = np.concatenate([base, 3 * base, base[within_groups]], axis=1)
    chosen, ranks, pbo = exact_cscv(m, 8)
    result = probability_of_backtest_overfitting(m, n_splits=8)
    np.testing.assert_array_equal(result.chosen, chosen)
    np.testing.assert_array_equal(result.oos_ranks, ranks)
    assert result.pbo == pbo == 60 / 70
    assert set(result.chosen) <= {0, 1, 2}  # never a later copy of a tied column


def test_pbo_callable_returning_nan_is_refused():
    m = np.random.default_rng(3).normal(0.0, 0.01, (64, 3))
    m[:, 1] = 0.0

    def sharpe(x):
        return x.mean(axis=0) / x.std(axis=0, ddof=1)  # 0 / 0 for the flat column

    with np.errstate(invalid="ignore"), pytest.raises(ConfigError, match="NaN for column 1"):
        probability_of_backtest_overfitting(m, n_splits=4, metric=sharpe)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((np.zeros((100, 3)), 5), "n_splits=5 must be even"),
        ((np.zeros((10, 3)), 16), "needs at least 32 rows"),
        ((np.zeros((100, 1)), 4), "at least 2 columns"),
        ((np.full((100, 3), np.nan), 4), "non-finite value (nan) at position (0, 0)"),
    ],
)
def test_pbo_input_errors(args, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        probability_of_backtest_overfitting(*args)


# --------------------------------------------------------------------------- SPA


def test_spa_noise_against_zero_is_not_significant():
    noise = np.random.default_rng(7).normal(0.0, 0.01, (1000, 10))
    result = spa_test(noise, reps=500, seed=1)
    assert result.pvalue_consistent > 0.2
    assert result.pvalue_lower <= result.pvalue_consistent <= result.pvalue_upper
    assert result.pvalue == result.pvalue_consistent


def test_spa_detects_a_clear_edge():
    rng = np.random.default_rng(8)
    m = pd.DataFrame(rng.normal(0.0, 0.01, (1000, 10))).add_prefix("model_")
    m["model_3"] += 0.002  # t-statistic about 6
    result = spa_test(m, reps=500, seed=1)
    assert result.pvalue_consistent < 0.01
    assert result.best == "model_3"
    assert result.best_mean_excess == pytest.approx(m["model_3"].mean())


def test_spa_benchmark_is_subtracted():
    # the edge belongs to the benchmark: no model beats it
    rng = np.random.default_rng(9)
    benchmark = rng.normal(0.002, 0.01, 1000)
    models = rng.normal(0.0, 0.01, (1000, 5))
    result = spa_test(models, benchmark=benchmark, reps=500, seed=2)
    assert result.pvalue_consistent > 0.5
    assert result.best_mean_excess < 0


def test_spa_is_reproducible_with_its_seed():
    m = np.random.default_rng(10).normal(0.0003, 0.01, (500, 4))
    a = spa_test(m, reps=300, seed=5, block_length=10)
    b = spa_test(m, reps=300, seed=5, block_length=10)
    assert a == b
    assert a.block_length == 10


def test_spa_input_errors():
    with pytest.raises(ConfigError, match="one return per row"):
        spa_test(np.zeros((50, 2)), benchmark=np.zeros(49))


def test_docstring_examples_run():
    assert doctest.testmod(overfitting, raise_on_error=False).failed == 0
