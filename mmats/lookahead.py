"""The lookahead check: a strategy's value at bar t may use bars <= t only.

Three tests, none of which depends on the data being lucky:

- **truncation**: cut the history after bar t, recompute, and compare every value up to
  t with the full run. A strategy that reads a later bar, or normalises by a statistic
  of the whole history, changes — if the later bars happen to matter;
- **perturbation**: keep the history up to bar t and replace every later bar with an
  adversarial continuation (CONTINUATIONS: a spike, a crash, a flat line, the real future
  reversed, noise), recompute and compare every value up to t (on long histories, over
  a window of HISTORY_BARS before the cut and FUTURE_BARS after it, compared with the
  same window unperturbed). A
  leak that is inert on the real future (a maximum that is never crossed, a mean that
  never moves a threshold) is not inert on all of these. Cuts are drawn at random, plus
  a block of consecutive cuts, so a peek that fires only on every 200th bar still meets
  one;
- **recursive**: recompute from several evenly spaced starting bars and compare every bar
  that got at least ``lookback`` bars of history (what the live runner feeds it) with
  the full run. A strategy whose value depends on how much earlier history it was given
  would trade differently live than in the backtest. No randomness: the verdict is the
  same for every seed.

Example::

    report = check_lookahead(load_strategy("ema_cross"), arrays)
    assert report.passed, report.summary()
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

from mmats.data.schema import PRICE_COLUMNS
from mmats.errors import StrategyError
from mmats.strategy import SignalOutput, Strategy

OUTPUTS = ("exposure", "stop_distance", "take_profit_distance", "confidence")
# Every later bar ×10 / ÷10 (volume too): the opposite pair, run at every cut.
JUMP = 10.0
CONTINUATIONS = ("spike", "crash", "flat", "reversed", "noise")
WHAT = {"spike": "a spike (every later bar ×10)", "crash": "a crash (every later bar ÷10)",
        "flat": "a flat line", "reversed": "the real future upside down",
        "noise": "a random walk"}
OPPOSITE_PAIR = ("spike", "crash")
# The sweep gate checks the grid's corners too, more lightly than the defaults: a peek
# that fires on sparse bars whatever the parameters is the defaults' check's to find.
CORNER_BUDGET = {"n_cuts": 12, "block": 50}
MAX_CORNERS = 8
# Perturbed runs see at most this many real bars before a cut (or before the block) and
# this many made-up bars after it, so the check's time does not grow with the history: a
# value up to the cut must equal the same window's unperturbed run, whatever the window.
HISTORY_BARS = 10_000
FUTURE_BARS = 5_000
# Values recorded per check and cut: enough to show the pattern, leaving room in
# ``max_violations`` for the other checks to show theirs.
PER_CUT = 3


@dataclass(frozen=True)
class Violation:
    check: str  # "truncation", "perturbation:<continuation>" or "recursive"
    output: str  # exposure / stop_distance / take_profit_distance / confidence
    bar: int
    cut: int  # truncation/perturbation: last bar kept; recursive: bars of history given
    full_value: float
    check_value: float

    @property
    def difference(self) -> float:
        if np.isnan(self.full_value) != np.isnan(self.check_value):
            return float("inf")
        return abs(self.full_value - self.check_value)

    @property
    def continuation(self) -> str | None:
        """The continuation that exposed a perturbation violation (``"spike"``...)."""
        return self.check.partition(":")[2] or None

    def describe(self, ts=None) -> str:
        when = f" ({ts})" if ts is not None else ""
        if self.check == "truncation":
            how = f"history cut after bar {self.cut}"
        elif self.continuation:
            how = f"bars after {self.cut} replaced by {WHAT[self.continuation]}"
        else:
            how = f"only the last {self.cut} bars given"
        real = "real future" if self.continuation else "full history"
        return (
            f"{self.output} at bar {self.bar}{when}: {real} {self.full_value:.10g}, "
            f"{how} {self.check_value:.10g} (difference {self.difference:.3g})"
        )


@dataclass
class LookaheadReport:
    strategy: str
    params: dict
    bars_checked: int
    cuts_checked: int
    violations: list[Violation] = field(default_factory=list)
    ts: np.ndarray | None = None
    block: tuple[int, int] | None = None  # first and last bar of the consecutive cuts
    continuations: tuple[str, ...] = ()
    starts: list[int] = field(default_factory=list)  # recursive: first bar of each run
    runs: int = 0  # strategy runs made

    @property
    def passed(self) -> bool:
        return not self.violations

    @property
    def checks(self) -> dict[str, int]:
        """Violations per check, e.g. ``{"perturbation:spike": 3, "recursive": 1}``."""
        counts: dict[str, int] = {}
        for violation in self.violations:
            counts[violation.check] = counts.get(violation.check, 0) + 1
        return counts

    def summary(self, limit: int = 10) -> str:
        block = f", bars {self.block[0]}-{self.block[1]} consecutively" if self.block else ""
        head = (
            f"lookahead check of {self.strategy} {self.params}: "
            f"{self.cuts_checked} cuts over {self.bars_checked} bars{block}, "
            f"futures replaced by {'/'.join(self.continuations) or 'nothing'}, "
            f"history from {len(self.starts)} starts: "
        )
        if self.passed:
            return head + "passed"
        found = ", ".join(f"{check} {count}" for check, count in self.checks.items())
        lines = [head + f"FAILED at {len(self.violations)} values ({found})"]
        for violation in self.violations[:limit]:
            when = None
            if self.ts is not None and 0 <= violation.bar < len(self.ts):
                when = np.datetime64(int(self.ts[violation.bar]), "ns")
            lines.append("  " + violation.describe(when))
        if len(self.violations) > limit:
            lines.append(f"  ... and {len(self.violations) - limit} more")
        return "\n".join(lines)


def check_lookahead(
    strategy: Strategy,
    arrays: dict[str, np.ndarray],
    params: dict | None = None,
    *,
    n_cuts: int = 40,
    block: int = 200,
    continuations: tuple[str, ...] = CONTINUATIONS,
    starts: int = 4,
    seed: int = 0,
    tolerance: float = 1e-9,
    recursive_tolerance: float = 1e-6,
    max_violations: int = 200,
) -> LookaheadReport:
    """Run the truncation, perturbation and recursive checks; return a report (never
    raises on a violation).

    ``arrays`` holds ``open, high, low, close, volume`` (and optionally ``ts``, and the
    strategy's extra inputs aligned to its bars, which are cut and bent too). After the
    warm-up, ``n_cuts`` bars are drawn at random (seeded): each is truncated and
    perturbed with every one of ``continuations``. A further ``block`` consecutive bars
    (at a seeded place) are perturbed with the opposite pair, spike and crash, so any
    peek that fires at least once in ``block`` bars meets a cut. The recursive check runs
    from ``starts`` evenly spaced bars. Tolerances are relative: ``tolerance`` for
    truncation and perturbation (which should agree to rounding), the looser
    ``recursive_tolerance`` for the recursive check, since recursive indicators (EMA,
    Wilder) forget their starting value only gradually. A strategy that breaks its
    output contract on a continuation raises :class:`StrategyError` naming it.

    Example::

        report = check_lookahead(load_strategy("ema_cross"), market(candles).arrays)
        report.passed, report.cuts_checked  # (True, 240): 40 random cuts + a block of 200
    """
    unknown = sorted(set(continuations) - set(CONTINUATIONS))
    if unknown:
        raise ValueError(f"unknown continuations {unknown}; choose from {CONTINUATIONS}")
    params = strategy.resolve_params(params)
    n = len(arrays["close"])
    full = _outputs(strategy.run(arrays, params))
    rng = np.random.default_rng(seed)
    first = min(max(strategy.warmup(params), 1), n - 1)
    pool = np.arange(first, n - 1)
    block_cuts = _block(pool, block, rng)
    rest = pool[~np.isin(pool, block_cuts, assume_unique=True)] if len(block_cuts) else pool
    cuts = rng.choice(rest, size=min(n_cuts, rest.size), replace=False) if rest.size else []
    cuts = sorted(int(c) for c in cuts)
    report = LookaheadReport(
        strategy.name, params, n, len(cuts) + len(block_cuts), ts=arrays.get("ts"),
        block=(int(block_cuts[0]), int(block_cuts[-1])) if len(block_cuts) else None,
        continuations=tuple(continuations), runs=1,
    )
    check = _Checker(strategy, params, arrays, full, report, tolerance, max_violations)
    history = max(HISTORY_BARS, 4 * strategy.lookback(params))
    pair = [name for name in OPPOSITE_PAIR if name in continuations]
    windows = [(cut, cut, ["truncation", *continuations]) for cut in cuts]
    if len(block_cuts):
        windows.append((int(block_cuts[0]), int(block_cuts[-1]), pair))
    for low, high, kinds in sorted(windows):
        start, stop = max(0, low - history), min(n, high + 1 + FUTURE_BARS)
        check.window(start, stop)
        for cut in range(low, high + 1):
            for kind in kinds:
                if check.full():
                    return report
                if kind == "truncation":
                    part = _slice(check.arrays_in_window, 0, cut - start + 1)
                    check.compare("truncation", cut, start, part)
                else:
                    future = _continuation(kind, check.arrays_in_window, cut - start, seed)
                    check.compare(f"perturbation:{kind}", cut, start, future)

    lookback = strategy.lookback(params)
    report.starts = _starts(n, lookback, starts)
    for start in report.starts:
        if check.full():
            break
        # a window of HISTORY_BARS from each start: enough bars to compare, at a cost
        # that does not grow with the history
        stop = min(n, start + max(history, 2 * lookback))
        part = _outputs(strategy.run(_slice(arrays, start, stop), params))
        report.runs += 1
        for name, whole, piece in zip(OUTPUTS, full, part, strict=True):
            if whole is None:
                continue
            # bar start + k got k + 1 bars of history; compare those with >= lookback
            bars = _mismatches(whole[start + lookback - 1:stop], piece[lookback - 1:],
                               recursive_tolerance)
            for index in bars[:PER_CUT]:
                bar = start + lookback - 1 + int(index)
                check.record(Violation("recursive", name, bar, bar - start + 1,
                                       float(whole[bar]), float(piece[bar - start])))
    return report


class GridCorner(dict):
    """A parameter set at a corner of a sweep's grid; the gate checks it with
    CORNER_BUDGET."""


def grid_corners(strategy: Strategy, combos: list[dict],
                 limit: int = MAX_CORNERS) -> list[GridCorner]:
    """The valid corners of the grid ``combos`` spans: each parameter at its minimum or
    maximum. All of them when at most three parameters vary, else all-min, all-max and
    each parameter alone at the other end; at most ``limit``.

    Example::

        strategy = load_strategy("ema_cross")
        grid_corners(strategy, strategy.combinations()[0])
        # [{'fast': 5, 'slow': 20}, {'fast': 5, 'slow': 200}, {'fast': 50, 'slow': 200}]
        # (fast 50 / slow 20 is invalid)
    """
    if not combos:
        return []
    names = list(combos[0])
    ends = {name: (min(c[name] for c in combos), max(c[name] for c in combos))
            for name in names}
    varying = [name for name in names if ends[name][0] != ends[name][1]]
    if len(varying) <= 3:
        choices = list(itertools.product((0, 1), repeat=len(varying)))
    else:
        choices = [(0,) * len(varying), (1,) * len(varying)]
        for flip in range(len(varying)):
            for base in (0, 1):
                choices.append(tuple(1 - base if i == flip else base
                                     for i in range(len(varying))))
    corners: list[GridCorner] = []
    for choice in choices:
        corner = GridCorner({name: ends[name][0] for name in names})
        corner.update({name: ends[name][end] for name, end in zip(varying, choice,
                                                                  strict=True)})
        if strategy.is_valid(corner) and corner not in corners:
            corners.append(corner)
    return corners[:limit]


class _Checker:
    """Runs the strategy on altered histories and records where it disagrees."""

    def __init__(self, strategy, params, arrays, full, report, tolerance, max_violations):
        self.strategy, self.params, self.arrays, self.full_run = strategy, params, arrays, full
        self.report, self.tolerance, self.max_violations = report, tolerance, max_violations
        self.arrays_in_window, self.in_window = arrays, full

    def window(self, start: int, stop: int) -> None:
        """Perturb within bars ``[start, stop)``: compare with that window's own run."""
        if start == 0 and stop == len(self.arrays["close"]):
            self.arrays_in_window, self.in_window = self.arrays, self.full_run
            return
        self.arrays_in_window = _slice(self.arrays, start, stop)
        self.in_window = self._run(self.arrays_in_window, f"bars {start}-{stop - 1} only")

    def full(self) -> bool:
        return len(self.report.violations) >= self.max_violations

    def record(self, violation: Violation) -> None:
        if not self.full():
            self.report.violations.append(violation)

    def compare(self, check: str, cut: int, start: int, arrays) -> None:
        """Run on ``arrays`` (bars from ``start``) and compare every value up to bar ``cut``
        with the window's unperturbed run (the full run when the window is everything)."""
        how = "" if check == "truncation" else f", then {WHAT[check.partition(':')[2]]}"
        part = self._run(arrays, f"history cut after bar {cut}{how}")
        kept = cut - start + 1
        for name, whole, piece in zip(OUTPUTS, self.in_window, part, strict=True):
            if whole is None and piece is None:
                continue
            expected = whole[:kept]
            for index in _mismatches(expected, piece[:kept], self.tolerance)[:PER_CUT]:
                self.record(Violation(check, name, start + int(index), cut,
                                      float(expected[index]), float(piece[index])))

    def _run(self, arrays, what: str):
        try:
            part = _outputs(self.strategy.run(arrays, self.params))
        except StrategyError as error:
            raise StrategyError(f"{error} (in the lookahead check, on {what})") from error
        self.report.runs += 1
        return part


def _block(pool: np.ndarray, length: int, rng) -> np.ndarray:
    """``length`` consecutive bars of ``pool`` at a seeded place (all of it if shorter)."""
    if length <= 0 or pool.size == 0:
        return pool[:0]
    if pool.size <= length:
        return pool
    start = int(rng.integers(0, pool.size - length + 1))
    return pool[start:start + length]


def _starts(n: int, lookback: int, count: int) -> list[int]:
    """First bars of the recursive runs: bar 1 up to the last that leaves ``lookback``
    bars, evenly spaced (bar 0 is the full run itself)."""
    last = n - lookback
    if count <= 0 or last < 1:
        return []
    return sorted(set(int(s) for s in np.linspace(1, last, count).round()))


def _continuation(kind: str, arrays, cut: int, seed: int) -> dict[str, np.ndarray]:
    """``arrays`` up to bar ``cut``, then a made-up future of valid candles: prices > 0,
    high >= max(open, close), low <= min(open, close), volume >= 0."""
    future = slice(cut + 1, None)
    last = float(arrays["close"][cut])
    if kind in ("spike", "crash"):
        factor = JUMP if kind == "spike" else 1.0 / JUMP
        made = {key: arrays[key][future] * factor for key in (*PRICE_COLUMNS, "volume")}
    elif kind == "flat":
        length = len(arrays["close"]) - cut - 1
        made = {key: np.full(length, last) for key in PRICE_COLUMNS}
        made["volume"] = np.zeros(length)
    elif kind == "reversed":
        # the real future upside down: each move mirrored in log price around the cut
        mirrored = {key: last * last / arrays[key][future] for key in PRICE_COLUMNS}
        made = {"open": mirrored["open"], "close": mirrored["close"],
                "high": mirrored["low"], "low": mirrored["high"],
                "volume": arrays["volume"][future]}
    else:
        made = _noise(arrays, cut, np.random.default_rng((seed, cut)))
    for key in arrays:  # a strategy's extra inputs (other timeframes, symbols) bend too
        if key not in made and key != "ts":
            made[key] = _bend_extra(kind, arrays[key], cut, seed)
    return {key: (np.concatenate((value[: cut + 1], made[key])) if key in made else value)
            for key, value in arrays.items()}


def _bend_extra(kind: str, values: np.ndarray, cut: int, seed: int) -> np.ndarray:
    """A made-up future for an extra input (any sign, any scale): shifted and scaled up
    or down, held flat at the cut's value, run backwards, or shuffled. The values up to
    the cut are the aligned series' as the strategy saw them; a peek past the cut meets
    one of these."""
    future = values[cut + 1:]
    if kind == "spike":
        return future * JUMP + JUMP
    if kind == "crash":
        return future / JUMP - JUMP
    if kind == "flat":
        return np.full(future.shape[0], values[cut])
    if kind == "reversed":
        return future[::-1].copy()
    return np.random.default_rng((seed, cut, 1)).permutation(future)


def _noise(arrays, cut: int, rng) -> dict[str, np.ndarray]:
    """A random walk from the cut's close with the recent volatility, and volumes drawn
    from the history."""
    length = len(arrays["close"]) - cut - 1
    past = np.log(arrays["close"][max(0, cut - 500): cut + 1])
    sigma = float(np.std(np.diff(past))) if past.size > 2 else 0.0
    sigma = sigma if np.isfinite(sigma) and sigma > 0 else 0.01
    close = arrays["close"][cut] * np.exp(np.cumsum(rng.normal(0.0, sigma, length)))
    open_ = np.concatenate(([arrays["close"][cut]], close[:-1]))
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0.0, sigma / 2, length)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0.0, sigma / 2, length)))
    volume = rng.choice(arrays["volume"][: cut + 1], size=length)
    return {"open": open_, "high": high, "low": low, "close": close, "volume": volume}


def _slice(arrays, start, stop):
    return {key: value[start:stop] for key, value in arrays.items()}


def _outputs(output: SignalOutput):
    return [getattr(output, name) for name in OUTPUTS]


def _mismatches(expected: np.ndarray, got: np.ndarray, tolerance: float) -> np.ndarray:
    if np.array_equal(expected, got, equal_nan=True):  # the usual case, and fast
        return np.empty(0, dtype=np.intp)
    both_nan = np.isnan(expected) & np.isnan(got)
    with np.errstate(invalid="ignore"):
        scale = np.maximum(np.abs(expected), np.abs(got))
        close = (expected == got) | (np.abs(expected - got) <= tolerance * scale)
    return np.flatnonzero(~(both_nan | close))
