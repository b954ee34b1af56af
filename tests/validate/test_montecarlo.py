"""Monte Carlo: known answers, statistical checks, reproducibility, and the kernels against
plain numpy on small inputs."""

import doctest
import json
import math
import re

import numba
import numpy as np
import pandas as pd
import pytest

import mmats.validate.montecarlo as mc_module
from mmats.errors import ConfigError
from mmats.nb import montecarlo as nb
from mmats.validate import monte_carlo
from mmats.validate.montecarlo import run_states

START = 10_000.0


# --------------------------------------------------------------------------- references


def numpy_path(returns, start=START, ruin_level=START * 0.5):
    """Plain numpy: equity, max drawdown, longest drawdown (steps under water), ruined."""
    equity = np.concatenate([[start], start * np.cumprod(1.0 + returns)])
    peak = np.maximum.accumulate(equity)
    underwater = equity < peak
    # longest run of consecutive underwater steps
    edges = np.diff(np.concatenate([[0], underwater.astype(np.int8), [0]]))
    runs = np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)
    longest = int(runs.max()) if runs.size else 0
    return equity, float((equity / peak).min() - 1.0), longest, bool((equity < ruin_level).any())


def xoshiro_reference(state, count):
    """xoshiro256** in plain Python integers (Blackman & Vigna 2018)."""
    mask = (1 << 64) - 1
    s = [int(v) for v in state]

    def rotl(x, k):
        return ((x << k) | (x >> (64 - k))) & mask

    out = []
    for _ in range(count):
        out.append(rotl((s[1] * 5) & mask, 7) * 9 & mask)
        t = (s[1] << 17) & mask
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = rotl(s[3], 45)
    return out


def rng_returns(n, seed=1, mean=0.0005, sd=0.01):
    return np.random.default_rng(seed).normal(mean, sd, n)


# --------------------------------------------------------------------------- known answers


@pytest.mark.parametrize("method", ["bootstrap", "block"])
def test_constant_returns_give_identical_runs(method):
    r = np.full(250, 0.001)
    result = monte_carlo(r, method=method, runs=50, seed=3, fan_points=11)
    expected = START
    for _ in range(250):
        expected *= 1.001
    assert (result.final_equity == expected).all()
    assert (result.max_drawdown == 0.0).all()
    assert (result.longest_drawdown == 0).all()
    assert result.probability_of_ruin == 0.0
    assert result.probability_of_drawdown == 0.0
    assert np.allclose(result.cagr, 1.001**252 - 1.0, rtol=1e-12)
    spread = result.percentiles()
    assert (spread.max(axis=1) == spread.min(axis=1)).all()
    steps = result.fan.index.to_numpy()
    assert list(steps) == list(np.linspace(0, 250, 11).round().astype(int))
    for q in result.fan.columns:
        np.testing.assert_allclose(result.fan[q], START * 1.001**steps, rtol=1e-12)


def test_reshuffle_keeps_final_equity_and_changes_the_path():
    trades = rng_returns(300, seed=2, mean=0.002, sd=0.03)
    result = monte_carlo(trade_returns=trades, method="reshuffle", runs=400, seed=5)
    np.testing.assert_allclose(result.final_equity, START * np.prod(1.0 + trades), rtol=1e-11)
    assert np.ptp(result.max_drawdown) > 0.01  # the order matters for the path
    assert np.ptp(result.longest_drawdown) > 0
    assert result.steps == 300


def test_bootstrap_mean_log_growth_matches_the_sample():
    # log(final / start) is a sum of T i.i.d. draws of log(1 + r) from the sample
    r = rng_returns(500, seed=4, mean=0.0003, sd=0.02)
    runs = 4000
    logs = np.log1p(r)
    expected = len(r) * logs.mean()
    standard_error = math.sqrt(len(r) * logs.var() / runs)
    for method in ("bootstrap", "block"):
        result = monte_carlo(r, method=method, runs=runs, seed=11)
        got = np.log(result.final_equity / START).mean()
        # the stationary bootstrap wraps round, so each step is marginally uniform too;
        # its blocks add dependence, hence the wider band
        assert abs(got - expected) < (4 if method == "bootstrap" else 8) * standard_error


def test_block_length_one_is_the_iid_bootstrap():
    r = rng_returns(300, seed=6)
    a = monte_carlo(r, method="bootstrap", runs=200, seed=9)
    b = monte_carlo(r, method="block", block_length=1.0, runs=200, seed=9)
    np.testing.assert_array_equal(a.final_equity, b.final_equity)
    np.testing.assert_array_equal(a.max_drawdown, b.max_drawdown)
    pd.testing.assert_frame_equal(a.fan, b.fan)


def test_block_length_sets_the_mean_block():
    n, length = 1000, 8.0
    out = np.empty(200_000, np.int64)
    nb.sample_indices(n, nb.BLOCK, run_states(1, 1)[0], 1.0 / length, out)
    starts = np.count_nonzero(out[1:] != (out[:-1] + 1) % n) + 1
    # block starts are Bernoulli(1/length) per step (a random start may continue by chance)
    assert len(out) / starts == pytest.approx(length, rel=0.03)
    assert out.min() >= 0 and out.max() < n


def test_ruin_of_one_big_loss_by_hand():
    # reshuffle -55 %, +10 %, +10 %, +10 %: ruined (below 5,000) when the loss comes first
    # (4,500) or second (11,000 × 0.45 = 4,950), not third (12,100 × 0.45 = 5,445) or
    # last: P = 2/4
    trades = np.array([-0.55, 0.1, 0.1, 0.1])
    runs = 20_000
    result = monte_carlo(trade_returns=trades, method="reshuffle", runs=runs, seed=1)
    assert result.probability_of_ruin == pytest.approx(0.5, abs=4 * math.sqrt(0.25 / runs))
    # every order ends at 10,000 × 0.45 × 1.1³ and has the -55 % drawdown
    assert np.allclose(result.final_equity, START * 0.45 * 1.1**3)
    assert result.probability_of_drawdown == 1.0


def test_bootstrap_ruin_and_drawdown_by_hand():
    # 4 draws from {-30 %, 0, 0, 0}: a 20 % drawdown needs at least one loss,
    # ruin (below 5,000) at least two (0.7² = 0.49)
    r = np.array([-0.3, 0.0, 0.0, 0.0])
    runs = 40_000
    result = monte_carlo(r, method="bootstrap", runs=runs, seed=2)
    p_drawdown = 1 - 0.75**4
    p_ruin = 1 - 0.75**4 - 4 * 0.25 * 0.75**3
    assert result.probability_of_drawdown == pytest.approx(
        p_drawdown, abs=4 * math.sqrt(p_drawdown * (1 - p_drawdown) / runs)
    )
    assert result.probability_of_ruin == pytest.approx(
        p_ruin, abs=4 * math.sqrt(p_ruin * (1 - p_ruin) / runs)
    )


def test_equity_is_floored_at_zero():
    result = monte_carlo(trade_returns=np.array([-1.5, 0.5]), method="reshuffle", runs=20)
    assert (result.final_equity == 0.0).all()
    assert (result.max_drawdown == -1.0).all()
    assert (result.cagr == -1.0).all()
    assert result.probability_of_ruin == 1.0


# --------------------------------------------------------------------------- reproducibility


def test_same_seed_same_result_other_seed_other_result():
    r = rng_returns(400, seed=8)
    a = monte_carlo(r, method="block", runs=300, seed=42)
    b = monte_carlo(r, method="block", runs=300, seed=42)
    c = monte_carlo(r, method="block", runs=300, seed=43)
    np.testing.assert_array_equal(a.final_equity, b.final_equity)
    np.testing.assert_array_equal(a.longest_drawdown, b.longest_drawdown)
    pd.testing.assert_frame_equal(a.fan, b.fan)
    assert not np.array_equal(a.final_equity, c.final_equity)
    # no shared runs between neighbouring seeds (seed + run would share all but one)
    assert not np.isin(a.final_equity, c.final_equity).any()


@pytest.mark.parametrize("method", ["reshuffle", "bootstrap", "block"])
def test_thread_count_does_not_change_the_result(method):
    r = rng_returns(200, seed=9)
    kwargs = {"trade_returns": r} if method == "reshuffle" else {"returns": r}
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = monte_carlo(method=method, runs=257, seed=7, **kwargs)
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        many = monte_carlo(method=method, runs=257, seed=7, **kwargs)
    finally:
        numba.set_num_threads(threads)
    np.testing.assert_array_equal(one.final_equity, many.final_equity)
    np.testing.assert_array_equal(one.max_drawdown, many.max_drawdown)
    pd.testing.assert_frame_equal(one.fan, many.fan)


# --------------------------------------------------------------------------- output shape


def test_fan_is_monotone_across_percentiles():
    result = monte_carlo(rng_returns(1000, seed=10), method="bootstrap", runs=500, fan_points=50)
    assert list(result.fan.columns) == [5, 25, 50, 75, 95]
    assert len(result.fan) == 50
    assert result.fan.index[0] == 0 and result.fan.index[-1] == 1000
    assert (np.diff(result.fan.to_numpy(), axis=1) >= 0).all()
    assert (result.fan.iloc[0] == START).all()
    # the last checkpoint is the final equity
    np.testing.assert_allclose(
        result.fan.iloc[-1].to_numpy(), np.percentile(result.final_equity, [5, 25, 50, 75, 95])
    )


def test_fan_points_beyond_the_steps_are_capped():
    result = monte_carlo(np.array([0.01, -0.02, 0.03]), runs=10, fan_points=200)
    assert list(result.fan.index) == [0, 1, 2, 3]


def test_percentiles_and_summary():
    result = monte_carlo(rng_returns(300, seed=12), method="block", runs=200, seed=1)
    table = result.percentiles(q=(10, 90))
    assert list(table.index) == ["final_equity", "cagr", "max_drawdown", "longest_drawdown"]
    assert list(table.columns) == [10, 90]
    assert table.loc["final_equity", 10] == np.percentile(result.final_equity, 10)
    assert list(result.percentiles().columns) == list(result.fan.columns)
    assert (table.loc["max_drawdown"] <= 0).all()
    summary = result.summary()
    json.dumps(summary, allow_nan=False)  # JSON-safe
    assert summary["method"] == "block" and summary["runs"] == 200
    assert summary["block_length"] == pytest.approx(300 ** (1 / 3))
    assert summary["percentiles"]["max_drawdown"]["p50"] == pytest.approx(
        np.median(result.max_drawdown)
    )
    expected_cagr = (result.final_equity / START) ** (252 / 300) - 1
    np.testing.assert_allclose(result.cagr, expected_cagr)


def test_series_input_is_accepted_and_not_mutated():
    r = pd.Series(rng_returns(100, seed=13), index=pd.date_range("2024-01-01", periods=100))
    before = r.copy()
    monte_carlo(r, runs=10)
    pd.testing.assert_series_equal(r, before)


# --------------------------------------------------------------------------- kernels vs numpy


def test_xoshiro_matches_the_published_algorithm():
    state = run_states(0, 1)[0]
    expected = xoshiro_reference(state, 5)
    working = state.copy()
    assert [int(nb.next_uint64(working)) for _ in range(5)] == expected


def test_path_statistics_match_numpy():
    rng = np.random.default_rng(14)
    for _ in range(20):
        r = rng.normal(0.0, 0.05, rng.integers(1, 60))
        checkpoints = np.unique(rng.integers(0, len(r) + 1, 5))
        fan_row = np.empty(len(checkpoints))
        final, worst, longest, ruined = nb.path_statistics(
            r, START, START * 0.8, checkpoints, fan_row
        )
        equity, ref_worst, ref_longest, ref_ruined = numpy_path(r, ruin_level=START * 0.8)
        assert final == pytest.approx(equity[-1], rel=1e-12)
        assert worst == pytest.approx(ref_worst, rel=1e-12, abs=1e-15)
        assert longest == ref_longest
        assert ruined == ref_ruined
        np.testing.assert_allclose(fan_row, equity[checkpoints], rtol=1e-12)


@pytest.mark.parametrize("method", [nb.RESHUFFLE, nb.BOOTSTRAP, nb.BLOCK])
def test_simulate_paths_is_sampling_then_path_statistics(method):
    r = rng_returns(37, seed=15, sd=0.04)
    states = run_states(3, 6)
    checkpoints = np.array([0, 5, 18, 37])
    probability = 0.25
    final, worst, longest, ruined, fan = nb.simulate_paths(
        r, method, states, probability, START, START * 0.9, checkpoints
    )
    for k in range(len(states)):
        indices = np.empty(len(r), np.int64)
        nb.sample_indices(len(r), method, states[k], probability, indices)
        if method == nb.RESHUFFLE:
            assert sorted(indices) == list(range(len(r)))
        equity, ref_worst, ref_longest, ref_ruined = numpy_path(r[indices], ruin_level=START * 0.9)
        assert final[k] == pytest.approx(equity[-1], rel=1e-12)
        assert worst[k] == pytest.approx(ref_worst, rel=1e-12, abs=1e-15)
        assert longest[k] == ref_longest
        assert ruined[k] == ref_ruined
        np.testing.assert_allclose(fan[k], equity[checkpoints], rtol=1e-12)


def test_bootstrap_indices_are_uniform():
    n = 10
    out = np.empty(100_000, np.int64)
    nb.sample_indices(n, nb.BOOTSTRAP, run_states(5, 1)[0], 0.0, out)
    counts = np.bincount(out, minlength=n)
    expected = len(out) / n
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 27.9  # 99.9 % quantile of chi-square with 9 degrees of freedom


# --------------------------------------------------------------------------- input checks


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"returns": [0.01], "method": "jackknife"}, "unknown method 'jackknife'"),
        ({"returns": [0.01], "runs": 0}, "runs=0 must be >= 1"),
        ({"returns": [0.01], "runs": 2.5}, "runs=2.5 must be an integer"),
        ({"returns": []}, "returns is empty"),
        ({"returns": [0.01, np.nan, 0.02, np.nan]}, "returns has NaN at index 1"),
        ({"returns": [0.01, np.inf]}, "returns has inf at index 1"),
        ({"returns": np.zeros((2, 2))}, "one-dimensional"),
        ({"returns": [0.01], "method": "reshuffle"}, "pass trade_returns="),
        ({"trade_returns": [0.01]}, "trade_returns is for method='reshuffle'"),
        ({"method": "bootstrap"}, "pass returns="),
        ({"returns": [0.01], "method": "block", "block_length": 0.5}, "must be >= 1"),
        ({"returns": [0.01], "block_length": 5.0}, "applies to method='block' only"),
        ({"returns": [0.01], "seed": -1}, "seed=-1 must be >= 0"),
        ({"returns": [0.01], "ruin_fraction": 1.5}, "ruin_fraction=1.5 must lie in (0, 1]"),
        ({"returns": [0.01], "drawdown_limit": 0.0}, "drawdown_limit=0.0 must lie in (0, 1]"),
        ({"returns": [0.01], "start_equity": 0.0}, "start_equity=0.0 must be a positive"),
        ({"returns": [0.01], "fan_points": 1}, "fan_points=1 must be >= 2"),
    ],
)
def test_bad_inputs_raise_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        monte_carlo(**kwargs)


def test_nan_in_a_series_names_its_label():
    r = pd.Series([0.01, 0.02, np.nan], index=pd.date_range("2024-01-01", periods=3))
    with pytest.raises(ConfigError, match=r"Timestamp\('2024-01-03 00:00:00'\) \(position 2\)"):
        monte_carlo(r)


def test_docstring_examples_run():
    assert doctest.testmod(mc_module, raise_on_error=False).failed == 0


def test_progress_bar_does_not_change_the_runs():
    returns = np.random.default_rng(5).normal(0.0, 0.01, 300)
    for method in ("bootstrap", "block"):
        plain = monte_carlo(returns, method=method, runs=97, seed=11)
        shown = monte_carlo(returns, method=method, runs=97, seed=11, progress=True)
        np.testing.assert_array_equal(plain.final_equity, shown.final_equity)
        np.testing.assert_array_equal(plain.max_drawdown, shown.max_drawdown)
        pd.testing.assert_frame_equal(plain.fan, shown.fan)


def test_method_codes_are_the_kernels():
    """validate.montecarlo names the kernels' method codes without importing numba."""
    from mmats.nb import montecarlo as nb
    from mmats.validate.montecarlo import METHODS

    assert METHODS == {"reshuffle": nb.RESHUFFLE, "bootstrap": nb.BOOTSTRAP,
                       "block": nb.BLOCK}
