"""Equity curves for the dashboard, kept at full resolution and appended to as a runner
journals new sleeve states; :class:`~mmats.console.readmodel.ReadModel` feeds them.

A sleeve's curve is its equity after each bar (the journal's ``sleeve_states`` rows: the
row's ``ts_ns`` is the bar's open time). A group's curve (the global book, a market, a
model) is the sum of its sleeves' at every time any of them has a point, each sleeve's
value carried forward from its last point (markets step at different timeframes) and,
before its first point, its first value (a sleeve's first state is its starting cash:
nothing fills at the first bar). Group curves are recomputed lazily and only from the
earliest time a new state touched, so a tick costs the points it adds, not the history.

A sleeve's points are kept in time order; several states of one sleeve at the same time
count as one point, the newest in the journal. That is how
:func:`mmats.live.replay.replay` reads them (``ReplayResult.equity``): operator mode also
saves a state when it sends an order or books a fill, stamped with the tick's clock, and a
control (pause, kill) with the wall clock, so a sleeve's rows are not always journaled in
time order: a row older than the newest point is inserted where its time puts it.

Example::

    curves = Curves({"global": ["a", "b"]})
    curves.extend("a", np.array([0, 60]), np.array([100.0, 101.0]))
    curves.extend("b", np.array([30]), np.array([50.0]))
    curves.series("global")  # (array([0, 30, 60]), array([150., 150., 151.]))
"""

from __future__ import annotations

import numpy as np

NS_PER_MS = 1_000_000


class SleeveCurve:
    """One sleeve's points, in growable arrays (amortised O(1) appends)."""

    def __init__(self, capacity: int = 1024):
        self._ts = np.empty(capacity, dtype=np.int64)
        self._values = np.empty(capacity, dtype=np.float64)
        self.size = 0

    @property
    def ts(self) -> np.ndarray:
        return self._ts[:self.size]

    @property
    def values(self) -> np.ndarray:
        return self._values[:self.size]

    def extend(self, ts: np.ndarray, values: np.ndarray) -> int | None:
        """Add points given in journal order; returns the index of the first point that
        changed (0 means the curve's start moved: its carried-back first value may differ),
        or None when nothing was given.

        Only the points at or after the earliest new time are merged again: for a runner
        journaling bar after bar, the newest point or none."""
        if len(ts) == 0:
            return None
        ts = np.asarray(ts, dtype=np.int64)
        values = np.asarray(values, dtype=np.float64)
        cut = int(np.searchsorted(self.ts, ts.min(), side="left"))
        merged_ts = np.concatenate([self._ts[cut:self.size], ts])
        merged = np.concatenate([self._values[cut:self.size], values])
        order = np.argsort(merged_ts, kind="stable")  # at one time: journal order
        merged_ts, merged = merged_ts[order], merged[order]
        keep = np.ones(len(merged_ts), dtype=bool)
        keep[:-1] = merged_ts[1:] != merged_ts[:-1]  # the newest of one time stands
        merged_ts, merged = merged_ts[keep], merged[keep]
        self._grow(cut + len(merged_ts))
        self._ts[cut:cut + len(merged_ts)] = merged_ts
        self._values[cut:cut + len(merged_ts)] = merged
        self.size = cut + len(merged_ts)
        return cut

    def _grow(self, needed: int) -> None:
        if needed <= len(self._ts):
            return
        capacity = max(needed, 2 * len(self._ts))
        for name in ("_ts", "_values"):
            old = getattr(self, name)
            new = np.empty(capacity, dtype=old.dtype)
            new[:self.size] = old[:self.size]
            setattr(self, name, new)


class Curves:
    """The sleeves' curves and the groups' sums over them.

    ``groups`` maps a group's name to the ids of its sleeves (e.g. ``"global"`` to every
    sleeve, ``"market:crypto"`` to that market's). Not thread-safe: its owner locks."""

    def __init__(self, groups: dict[str, list[str]]):
        self.groups = {name: list(members) for name, members in groups.items()}
        self.sleeves: dict[str, SleeveCurve] = {}
        self._sums: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._dirty: dict[str, int | None] = {}  # group -> recompute from this time (None: all)
        self.version = 0  # bumped by every change: a cache key for derived answers

    def extend(self, sleeve_id: str, ts: np.ndarray, values: np.ndarray) -> None:
        """Append a sleeve's new points (journal order) and mark its groups stale from the
        earliest time they touch."""
        curve = self.sleeves.setdefault(sleeve_id, SleeveCurve())
        changed = curve.extend(ts, values)
        if changed is None:
            return
        self.version += 1
        since = None if changed == 0 else int(curve.ts[changed])
        for name, members in self.groups.items():
            if sleeve_id not in members:
                continue
            if name not in self._dirty:
                self._dirty[name] = since
            elif self._dirty[name] is not None:
                self._dirty[name] = None if since is None else min(self._dirty[name], since)

    def series(self, group: str) -> tuple[np.ndarray, np.ndarray]:
        """The group's curve at full resolution: (times in ns, summed equity)."""
        if group in self._dirty or group not in self._sums:
            since = self._dirty.pop(group, None)
            members = [self.sleeves[i] for i in self.groups.get(group, ())
                       if i in self.sleeves and self.sleeves[i].size]
            old = self._sums.get(group)
            if since is None or old is None:
                self._sums[group] = _summed(members, None)
            else:
                cut = int(np.searchsorted(old[0], since, side="left"))
                tail = _summed(members, since)
                self._sums[group] = (np.concatenate([old[0][:cut], tail[0]]),
                                     np.concatenate([old[1][:cut], tail[1]]))
        return self._sums[group]


def _summed(members: list[SleeveCurve], since: int | None):
    """Sum of the members' carried values at every member time >= ``since``."""
    if not members:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64)
    if len(members) == 1:  # a model of one symbol: its sleeve's own points
        start = 0 if since is None else int(np.searchsorted(members[0].ts, since, side="left"))
        return members[0].ts[start:].copy(), members[0].values[start:].copy()
    parts = [m.ts if since is None else m.ts[np.searchsorted(m.ts, since, side="left"):]
             for m in members]
    times = np.unique(np.concatenate(parts))
    total = np.zeros(len(times), dtype=np.float64)
    for member in members:
        index = np.searchsorted(member.ts, times, side="right") - 1
        np.maximum(index, 0, out=index)  # before its first point: its first value
        total += member.values[index]
    return times, total


def downsample(ts: np.ndarray, values: np.ndarray, max_points: int):
    """At most ``max_points`` of a curve, for drawing: the curve is cut into equal
    buckets and each keeps its first, lowest, highest and last point, in time order, so
    no peak or trough (no drawdown) is hidden; the last point is always kept exactly.

    >>> t, v = downsample(np.arange(10_000), np.random.rand(10_000), 400)
    >>> len(t) <= 400
    True
    """
    n = len(ts)
    if n <= max_points:
        return ts, values
    buckets = max(1, max_points // 4)
    width = -(-n // buckets)  # ceiling
    padded = np.empty(buckets * width, dtype=np.float64)
    padded[:n] = values
    padded[n:] = values[-1]  # padding repeats the last point: it never wins a min or max
    rows = padded.reshape(buckets, width)
    starts = np.arange(buckets) * width
    lows = starts + np.argmin(rows, axis=1)
    highs = starts + np.argmax(rows, axis=1)
    lasts = np.minimum(starts + width - 1, n - 1)
    starts = np.minimum(starts, n - 1)
    keep = np.unique(np.concatenate([starts, np.minimum(lows, n - 1),
                                     np.minimum(highs, n - 1), lasts, [n - 1]]))
    return ts[keep], values[keep]


def points(ts: np.ndarray, values: np.ndarray) -> list[list]:
    """``[[ts_ms, value], ...]`` as plain ints and floats (a non-finite value as None)."""
    millis = (ts // NS_PER_MS).tolist()
    numbers = values.tolist()
    if not np.isfinite(values).all():
        numbers = [v if np.isfinite(v) else None for v in numbers]
    return [[t, v] for t, v in zip(millis, numbers, strict=True)]
