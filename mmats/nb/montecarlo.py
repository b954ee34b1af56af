"""Monte Carlo kernels: resample a return sequence many times and measure each equity path.

Three ways to build a run of ``n`` steps from ``n`` observed returns:

- ``RESHUFFLE``: a random permutation (Fisher–Yates, drawn one step at a time), so every
  run compounds the same returns in a new order: same final equity, other paths.
- ``BOOTSTRAP``: ``n`` draws with replacement (i.i.d. bootstrap, Efron 1979).
- ``BLOCK``: the stationary bootstrap of Politis & Romano (1994): a run starts at a random
  index; each later step starts a new block at a random index with probability ``p`` (mean
  block length ``1 / p``) and otherwise takes the next return, wrapping round the end.

Randomness comes from xoshiro256** (Blackman & Vigna 2018, "Scrambled linear
pseudorandom number generators"), one generator per run whose 256-bit state the caller
derives from the master seed (``numpy.random.SeedSequence``). Run ``k`` therefore draws
the same numbers whatever thread runs it: the output depends on the seed, never on the
number of threads. (numba's own ``np.random`` is a per-thread Mersenne Twister, ~6× slower
per draw here, and would need reseeding at each run.)

Equity compounds ``equity *= 1 + r`` from ``start_equity``; once it reaches 0 or less it
stays at 0 (wiped out). Drawdown is ``equity / running peak - 1`` (as
:mod:`mmats.nb.metrics`); a drawdown's length is the number of steps since the last peak,
counted while under water.
"""

import numpy as np
from numba import njit, prange

RESHUFFLE = 0
BOOTSTRAP = 1
BLOCK = 2


_U = np.uint64
_5, _7, _9, _11, _17, _45, _64 = _U(5), _U(7), _U(9), _U(11), _U(17), _U(45), _U(64)
_TO_UNIT = 1.0 / 9007199254740992.0  # 2**-53


@njit(cache=True, inline="always")
def _rotl(x, k):
    return (x << k) | (x >> (_64 - k))


@njit(cache=True, inline="always")
def next_uint64(state):
    """Advance a xoshiro256** ``state`` (4 × uint64, updated in place); return the output."""
    result = _rotl(state[1] * _5, _7) * _9
    t = state[1] << _17
    state[2] ^= state[0]
    state[3] ^= state[1]
    state[1] ^= state[2]
    state[0] ^= state[3]
    state[2] ^= t
    state[3] = _rotl(state[3], _45)
    return result


@njit(cache=True, inline="always")
def _uniform(state):
    """A double in [0, 1) from the top 53 bits."""
    return (next_uint64(state) >> _11) * _TO_UNIT


@njit(cache=True, inline="always")
def _below(state, n):
    """An integer in [0, n): 53-bit float scaling, bias below n / 2**53."""
    i = int(_uniform(state) * n)
    return i if i < n else n - 1


@njit(cache=True, inline="always")
def _next_index(method, step, previous, n, block_probability, state, order):
    """Index of the return taken at ``step`` of a run (``order`` is scratch for RESHUFFLE)."""
    if method == RESHUFFLE:
        # forward Fisher–Yates: position ``step`` is final once swapped
        j = step + _below(state, n - step)
        index = order[j]
        order[j] = order[step]
        order[step] = index
        return index
    if method == BOOTSTRAP:
        return _below(state, n)
    # BLOCK: with p >= 1 every step starts a block and no uniform is drawn, so a mean
    # block length of 1 consumes the generator exactly as BOOTSTRAP does
    if step == 0 or block_probability >= 1.0 or _uniform(state) < block_probability:
        return _below(state, n)
    index = previous + 1
    return 0 if index == n else index


@njit(cache=True)
def sample_indices(returns_length, method, seed_state, block_probability, out):
    """Write the indices one run draws (``len(out)`` steps, at most ``returns_length`` for
    RESHUFFLE) into ``out``.

    The same draws as run ``k`` of :func:`simulate_paths` when ``seed_state =
    run_states[k]``; used by tests to check the kernel against a plain numpy computation
    on ``returns[out]``.
    """
    state = seed_state.copy()
    order = np.arange(returns_length) if method == RESHUFFLE else np.empty(0, np.int64)
    index = -1
    for step in range(out.shape[0]):
        index = _next_index(method, step, index, returns_length, block_probability, state, order)
        out[step] = index


@njit(cache=True)
def path_statistics(returns, start_equity, ruin_level, checkpoints, fan_row):
    """Final equity, max drawdown, longest drawdown and ruin of one return path.

    ``checkpoints`` are sorted step numbers in ``[0, len(returns)]`` (step 0 is the start);
    the equity after each is written into ``fan_row``. Returns ``(final_equity,
    max_drawdown, longest_drawdown_steps, ruined)``; ruined means the equity fell strictly
    below ``ruin_level`` at some step. Reference: ``numpy.cumprod`` of ``1 + returns`` and
    ``numpy.maximum.accumulate`` (see tests/validate/test_montecarlo.py).
    """
    n = returns.shape[0]
    equity = start_equity
    peak = start_equity
    peak_step = 0
    max_drawdown = 0.0
    longest = 0
    ruined = equity < ruin_level
    k = 0
    n_checkpoints = checkpoints.shape[0]
    while k < n_checkpoints and checkpoints[k] == 0:
        fan_row[k] = equity
        k += 1
    for step in range(1, n + 1):
        equity = _grow(equity, returns[step - 1])
        peak, peak_step, max_drawdown, longest, ruined = _track(
            equity, step, peak, peak_step, max_drawdown, longest, ruined, ruin_level
        )
        while k < n_checkpoints and checkpoints[k] == step:
            fan_row[k] = equity
            k += 1
    return equity, max_drawdown, longest, ruined


@njit(cache=True, inline="always")
def _grow(equity, r):
    equity *= 1.0 + r
    return equity if equity > 0.0 else 0.0


@njit(cache=True, inline="always")
def _track(equity, step, peak, peak_step, max_drawdown, longest, ruined, ruin_level):
    if equity >= peak:
        peak = equity
        peak_step = step
    else:
        # compare by multiplication: the division only when a new low is set
        if equity < peak * (1.0 + max_drawdown):
            max_drawdown = equity / peak - 1.0
        if step - peak_step > longest:
            longest = step - peak_step
    if equity < ruin_level:
        ruined = True
    return peak, peak_step, max_drawdown, longest, ruined


@njit(cache=True, parallel=True)
def simulate_paths(
    returns, method, run_states, block_probability, start_equity, ruin_level, checkpoints
):
    """Run ``len(run_states)`` resampled paths of ``len(returns)`` steps each, in parallel.

    Returns ``(final_equity, max_drawdown, longest_drawdown, ruined, fan)`` with one entry
    (one ``fan`` row of ``len(checkpoints)`` equities) per run: memory is runs × checkpoints,
    never runs × steps. Run ``k`` equals :func:`path_statistics` of
    ``returns[sample_indices(..., run_states[k], ...)]``. ``run_states`` is
    (runs, 4) uint64, no row all zero.
    """
    n = returns.shape[0]
    runs = run_states.shape[0]
    n_checkpoints = checkpoints.shape[0]
    final_equity = np.empty(runs)
    max_drawdown = np.empty(runs)
    longest_drawdown = np.empty(runs, np.int64)
    ruined = np.empty(runs, np.bool_)
    fan = np.empty((runs, n_checkpoints))
    for run in prange(runs):
        state = run_states[run].copy()
        order = np.arange(n) if method == RESHUFFLE else np.empty(0, np.int64)
        equity = start_equity
        peak = start_equity
        peak_step = 0
        worst = 0.0
        longest = 0
        is_ruined = equity < ruin_level
        k = 0
        while k < n_checkpoints and checkpoints[k] == 0:
            fan[run, k] = equity
            k += 1
        index = -1
        for step in range(1, n + 1):
            index = _next_index(method, step - 1, index, n, block_probability, state, order)
            equity = _grow(equity, returns[index])
            peak, peak_step, worst, longest, is_ruined = _track(
                equity, step, peak, peak_step, worst, longest, is_ruined, ruin_level
            )
            while k < n_checkpoints and checkpoints[k] == step:
                fan[run, k] = equity
                k += 1
        final_equity[run] = equity
        max_drawdown[run] = worst
        longest_drawdown[run] = longest
        ruined[run] = is_ruined
    return final_equity, max_drawdown, longest_drawdown, ruined, fan
