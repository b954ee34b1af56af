"""The lookahead check: a strategy's value at bar t may use bars <= t only.

Two tests, both on real history:

- **truncation**: cut the history after bar t, recompute, and compare every value up to
  t with the full run. A strategy that reads a later bar, or normalises by a statistic
  of the whole history, changes;
- **recursive**: recompute bar t from a trailing window of ``lookback`` bars (what the
  live runner feeds it) and from twice that, and compare with the full run. A strategy
  whose value depends on how much earlier history it was given would trade differently
  live than in the backtest.

Example::

    report = check_lookahead(load_strategy("ema_cross"), arrays)
    assert report.passed, report.summary()
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mmats.strategy import SignalOutput, Strategy

OUTPUTS = ("exposure", "stop_distance", "take_profit_distance")


@dataclass(frozen=True)
class Violation:
    check: str  # "truncation" or "recursive"
    output: str  # exposure / stop_distance / take_profit_distance
    bar: int
    cut: int  # truncation: last bar kept; recursive: bars of history given
    full_value: float
    check_value: float

    @property
    def difference(self) -> float:
        if np.isnan(self.full_value) != np.isnan(self.check_value):
            return float("inf")
        return abs(self.full_value - self.check_value)

    def describe(self, ts=None) -> str:
        when = f" ({ts})" if ts is not None else ""
        if self.check == "truncation":
            how = f"history cut after bar {self.cut}"
        else:
            how = f"only the last {self.cut} bars given"
        return (
            f"{self.output} at bar {self.bar}{when}: full history {self.full_value:.10g}, "
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

    @property
    def passed(self) -> bool:
        return not self.violations

    def summary(self, limit: int = 10) -> str:
        head = (
            f"lookahead check of {self.strategy} {self.params}: "
            f"{self.cuts_checked} cuts over {self.bars_checked} bars: "
        )
        if self.passed:
            return head + "passed"
        lines = [head + f"FAILED at {len(self.violations)} values"]
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
    n_cuts: int = 20,
    seed: int = 0,
    tolerance: float = 1e-9,
    recursive_tolerance: float = 1e-6,
    max_violations: int = 200,
) -> LookaheadReport:
    """Run the truncation and recursive checks; return a report (never raises on failure).

    ``arrays`` holds ``open, high, low, close, volume`` (and optionally ``ts``). Cuts are
    drawn at random (seeded) after the warm-up, plus the last bar. Tolerances are
    relative: ``tolerance`` for truncation (which should agree to rounding), and the looser
    ``recursive_tolerance`` for trailing windows, since recursive indicators (EMA, Wilder)
    forget their starting value only gradually.
    """
    params = strategy.resolve_params(params)
    n = len(arrays["close"])
    full = strategy.run(arrays, params)
    warmup = strategy.warmup(params)
    rng = np.random.default_rng(seed)
    first = min(max(warmup, 1), n - 1)
    pool = np.arange(first, n - 1)
    cuts = rng.choice(pool, size=min(n_cuts, pool.size), replace=False) if pool.size else []
    cuts = sorted(set(int(c) for c in cuts))
    report = LookaheadReport(strategy.name, params, n, len(cuts), ts=arrays.get("ts"))

    for cut in cuts:
        part = strategy.run(_slice(arrays, 0, cut + 1), params)
        _compare(report, "truncation", cut, full, part, 0, cut + 1, tolerance, max_violations)

    lookback = strategy.lookback(params)
    ends = [c for c in cuts if c + 1 > lookback] + ([n - 1] if n > lookback else [])
    for end in sorted(set(ends)):
        for length in (lookback, 2 * lookback):
            if length > end + 1:
                continue
            part = strategy.run(_slice(arrays, end + 1 - length, end + 1), params)
            report.cuts_checked += 1
            _compare_last(report, length, end, full, part, recursive_tolerance,
                          max_violations)
    return report


def _slice(arrays, start, stop):
    return {key: value[start:stop] for key, value in arrays.items()}


def _outputs(output: SignalOutput):
    return [getattr(output, name) for name in OUTPUTS]


def _compare(report, check, cut, full, part, start, stop, tolerance, max_violations):
    for name, whole, piece in zip(OUTPUTS, _outputs(full), _outputs(part), strict=True):
        if whole is None and piece is None:
            continue
        expected = whole[start:stop]
        bad = _mismatches(expected, piece, tolerance)
        for index in bad[: max(0, max_violations - len(report.violations))]:
            report.violations.append(
                Violation(check, name, int(start + index), cut,
                          float(expected[index]), float(piece[index]))
            )


def _compare_last(report, length, end, full, part, tolerance, max_violations):
    for name, whole, piece in zip(OUTPUTS, _outputs(full), _outputs(part), strict=True):
        if whole is None or len(report.violations) >= max_violations:
            continue
        expected, got = whole[end], piece[-1]
        if _mismatches(np.array([expected]), np.array([got]), tolerance).size:
            report.violations.append(
                Violation("recursive", name, int(end), length, float(expected), float(got))
            )


def _mismatches(expected: np.ndarray, got: np.ndarray, tolerance: float) -> np.ndarray:
    both_nan = np.isnan(expected) & np.isnan(got)
    with np.errstate(invalid="ignore"):
        scale = np.maximum(np.abs(expected), np.abs(got))
        close = (expected == got) | (np.abs(expected - got) <= tolerance * scale)
    return np.flatnonzero(~(both_nan | close))
