"""MMATS's own SPA test against ``arch.bootstrap.SPA`` (arch 8), draw for draw.

arch is no longer a dependency of MMATS; the dev extra installs it to check this module.
Both use ``default_rng(seed)`` in the same order, so the p-values must be equal, not close.
"""

import numpy as np
import pytest
from arch.bootstrap import SPA
from scipy import stats

from mmats.validate import overfitting
from mmats.validate.overfitting import spa_test


def arch_pvalues(models, benchmark, block_length, reps, seed):
    spa = SPA(-benchmark, -models, block_size=block_length, reps=reps,
              bootstrap="stationary", seed=seed)
    spa.compute()
    return [float(spa.pvalues[name]) for name in ("lower", "consistent", "upper")]


def ours(models, benchmark, block_length, reps, seed):
    result = spa_test(models, benchmark=benchmark, reps=reps, block_length=block_length,
                      seed=seed)
    return [result.pvalue_lower, result.pvalue_consistent, result.pvalue_upper]


@pytest.mark.parametrize("seed", range(8))
def test_spa_pvalues_equal_arch(seed):
    rng = np.random.default_rng(100 + seed)
    t, k = int(rng.integers(12, 400)), int(rng.integers(1, 30))
    edge = rng.normal(0.0, 0.0015, k)  # some columns better, some worse than the benchmark
    models = rng.normal(edge, 0.01, (t, k))
    benchmark = rng.normal(0.0, 0.01, t)
    block_length = int(rng.integers(1, 25))
    assert ours(models, benchmark, block_length, 400, seed) == arch_pvalues(
        models, benchmark, block_length, 400, seed)


def test_spa_lower_consistent_upper_differ_and_still_equal_arch():
    # the three re-centrings give three different p-values
    rng = np.random.default_rng(0)
    models = rng.normal(0.0, 0.01, (300, 6))
    models[:, 0] -= 0.003  # clearly worse: left out of the consistent re-centring
    models[:, 1] -= 0.0003  # a little worse: re-centred by the consistent one, not lower
    models[:, 2:4] += 0.0003
    benchmark = np.zeros(300)
    expected = arch_pvalues(models, benchmark, 17, 1000, 3)
    assert len(set(expected)) == 3
    assert ours(models, benchmark, 17, 1000, 3) == expected


def test_spa_on_the_sample_research_returns_equals_arch():
    """The returns the default walk-forward tests: its 174 combinations' hourly returns
    against buy and hold (the spa_pvalue of scripts/walkforward.py)."""
    from mmats.backtest import market, sweep
    from mmats.data import load
    from mmats.validate.research import _benchmark_returns, statistics_period

    prices = market(load("bittrex:ETH/BTC:5m"))
    period = statistics_period(prices)
    swept = sweep("ema_cross", prices, fee_bps=10.0, check_lookahead_bias=False,
                  period_returns=period)
    returns = swept.returns.to_numpy()
    benchmark = _benchmark_returns(swept.returns.index, prices,
                                   prices.close / prices.open[0])
    block_length = int(np.sqrt(returns.shape[0]))
    assert ours(returns, benchmark, block_length, 1000, 0) == arch_pvalues(
        returns, benchmark, block_length, 1000, 0)


def test_spa_variance_is_arch_s_kernel_restated():
    """The long-run variance by its definition: autocovariances weighted by
    (1 - i/T)(1 - p)^i + (i/T)(1 - p)^(T - i), summed over both sides."""
    rng = np.random.default_rng(9)
    x = rng.normal(size=(40, 3))
    x -= x.mean(axis=0)
    t, p = 40, 1 / 6
    expected = []
    for j in range(3):
        total = np.dot(x[:, j], x[:, j]) / t
        for i in range(1, t):
            kappa = (1 - i / t) * (1 - p) ** i + (i / t) * (1 - p) ** (t - i)
            total += 2 * kappa * np.dot(x[: t - i, j], x[i:, j]) / t
        expected.append(total)
    np.testing.assert_allclose(overfitting._stationary_long_run_variance(x, 6), expected,
                               rtol=1e-13)


def test_normal_distribution_is_scipy_stats_bit_for_bit():
    """PSR and DSR use scipy.special's ndtr / ndtri, which scipy.stats.norm calls: the same
    numbers as before, without importing scipy.stats."""
    for n in (2, 10, 174, 10_000):
        z = (1.0 - overfitting.EULER_GAMMA) * stats.norm.ppf(1.0 - 1.0 / n) + \
            overfitting.EULER_GAMMA * stats.norm.ppf(1.0 - 1.0 / (n * np.e))
        assert overfitting.expected_maximum_sharpe(n, 0.25) == float(0.5 * z)
    for sharpe in (-0.3, 0.0, 0.05, 0.4):
        result = overfitting.probabilistic_sharpe_ratio_from_statistics(sharpe, 250)
        assert result.psr == float(stats.norm.cdf(result.z))


def test_importing_the_statistics_loads_neither_arch_nor_scipy_stats(python):
    import subprocess

    probe = ("import sys, mmats.validate.overfitting, mmats.validate.montecarlo; "
             "print(sorted(m for m in ('arch', 'scipy.stats', 'numba') if m in sys.modules))")
    done = subprocess.run([python, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
