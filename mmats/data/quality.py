"""Data-quality report for a candle frame, valid or not.

:func:`quality_report` describes a frame without changing or rejecting anything, so it can
explain what is wrong with a bad file. It separates **problems** (the data breaks the
schema: unparseable, duplicate, unsorted or off-grid timestamps, NaN or infinite values,
non-positive prices, negative volume, ``high < low``, OHLC inconsistencies, missing
columns) from **warnings** (the data is valid but incomplete or unusual: missing bars,
zero-volume bars, outlier returns). ``report.ok`` is True when there are no problems.

Missing bars are counted against the calendar:

- ``24/7``: every bar-length step between the first and last bar is expected.
- ``forex``: the market is closed from Friday 21:00 to Sunday 22:00 UTC (the union of the
  summer and winter closures, so DST needs no special case); bars inside that window are not
  expected. A gap that spans a Saturday is a *weekend gap*.
- ``stocks``: weekdays only. Daily bars: a missing weekday is a missing bar. Intraday
  bars: the overnight gap between one session and the next weekday's is not missing
  (a *session gap*); each skipped weekday counts a median day's worth of bars. Without an
  exchange holiday list, holidays show up as missing bars and as *other gaps (holidays?)*.

``expected_bars`` is the distinct timestamps plus the missing bars.

:func:`data_quality` is the short summary every result carries (bars, expected and missing
bars, gaps, zero volume, rows rejected at import); :func:`data_quality_warnings` turns it
into the lines a script prints on stderr when a gap is large or too much is missing.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from mmats.data.calendar import (
    calendar_for_venue,
    check_calendar,
    infer_calendar,
    infer_timeframe,
    timeframe_ns,
)
from mmats.data.schema import COLUMNS, PRICE_COLUMNS, VALUE_COLUMNS, grid_phase, parse_ts
from mmats.errors import ConfigError
from mmats.units import DAY_NS, EPOCH_MONDAY_NS, HOUR_NS, WEEK_NS

# Forex weekly closure as offsets from Monday 00:00 UTC: Friday 21:00 to Sunday 22:00.
_FOREX_CLOSED = (4 * DAY_NS + 21 * HOUR_NS, 6 * DAY_NS + 22 * HOUR_NS)
_EXAMPLES = 5

# (field, label) in report order; a non-zero count is a problem.
_PROBLEMS = (
    ("unparseable_ts", "unparseable timestamps"),
    ("duplicate_ts", "duplicate timestamps"),
    ("unsorted_ts", "timestamps out of order"),
    ("off_grid_ts", "timestamps off the timeframe grid"),
    ("nan_cells", "NaN or non-numeric OHLCV cells"),
    ("infinite_values", "rows with an infinite OHLCV value"),
    ("non_positive_prices", "rows with a price <= 0"),
    ("negative_volume", "rows with negative volume"),
    ("high_below_low", "rows with high < low"),
    ("ohlc_inconsistent", "rows with high < max(open, close) or low > min(open, close)"),
)


class GapEvent(NamedTuple):
    """A place where consecutive bars are more than one step apart.

    ``start``/``end`` are the bars either side; ``kind`` is ``weekend`` (spans a Saturday),
    ``session`` (closed hours, nothing missing) or ``other``.
    """

    start: pd.Timestamp
    end: pd.Timestamp
    missing_bars: int
    kind: str


class Outlier(NamedTuple):
    """A bar whose close-to-close log return is far outside its neighbours' spread."""

    row: int
    ts: pd.Timestamp
    log_return: float


@dataclass
class QualityReport:
    """Counts of what is wrong or unusual in a candle frame; rows are 1-based input rows."""

    source: str | None
    timeframe: str | None
    calendar: str | None
    rows: int
    first_ts: pd.Timestamp | None = None
    last_ts: pd.Timestamp | None = None
    expected_bars: int = 0
    missing_bars: int = 0
    gap_events: int = 0
    weekend_gap_events: int = 0
    session_gap_events: int = 0
    other_gap_events: int = 0
    largest_gaps: list[GapEvent] = field(default_factory=list)
    missing_columns: list[str] = field(default_factory=list)
    unparseable_ts: int = 0
    duplicate_ts: int = 0
    unsorted_ts: int = 0
    off_grid_ts: int = 0
    nan_cells: int = 0
    infinite_values: int = 0
    non_positive_prices: int = 0
    negative_volume: int = 0
    high_below_low: int = 0
    ohlc_inconsistent: int = 0
    zero_volume_rows: int = 0
    outliers: list[Outlier] = field(default_factory=list)
    examples: dict[str, list[int]] = field(default_factory=dict)

    @property
    def problems(self) -> list[str]:
        """Schema violations, one line each; empty when the data is valid."""
        found = []
        if self.missing_columns:
            found.append(f"missing column(s): {', '.join(self.missing_columns)}")
        for name, label in _PROBLEMS:
            count = getattr(self, name)
            if count:
                found.append(f"{count} {label}{self._rows(name)}")
        return found

    @property
    def warnings(self) -> list[str]:
        """Valid but noteworthy: missing bars, zero volume, outlier returns."""
        found = []
        if self.rows == 0:
            found.append("no rows")
        if self.missing_bars:
            found.append(f"{self.missing_bars} missing bar(s) in {self.gap_events} gap(s) "
                         f"({self.weekend_gap_events} weekend, {self.other_gap_events} other"
                         + (" (holidays?)" if self.calendar == "stocks" else "") + ")")
        if self.zero_volume_rows:
            found.append(f"{self.zero_volume_rows} zero-volume row(s)"
                         f"{self._rows('zero_volume_rows')}")
        if self.outliers:
            shown = ", ".join(f"row {o.row} ({o.ts}, {o.log_return:+.3f})"
                              for o in self.outliers[:_EXAMPLES])
            more = f" and {len(self.outliers) - _EXAMPLES} more" if len(self.outliers) > _EXAMPLES else ""
            found.append(f"{len(self.outliers)} outlier return(s): {shown}{more}")
        return found

    @property
    def ok(self) -> bool:
        """True when there are no problems (warnings allowed)."""
        return not self.problems

    def _rows(self, name: str) -> str:
        rows = self.examples.get(name)
        return f" (rows {', '.join(map(str, rows))}{', ...' if len(rows) >= _EXAMPLES else ''})" if rows else ""

    def to_dict(self) -> dict:
        """JSON-safe form, with ``ok``, ``problems`` and ``warnings`` included."""
        data = asdict(self)
        data["first_ts"] = _iso(self.first_ts)
        data["last_ts"] = _iso(self.last_ts)
        data["largest_gaps"] = [
            {"start": _iso(g.start), "end": _iso(g.end), "missing_bars": int(g.missing_bars),
             "duration": str(g.end - g.start), "kind": g.kind} for g in self.largest_gaps]
        data["outliers"] = [{"row": o.row, "ts": _iso(o.ts), "log_return": o.log_return}
                            for o in self.outliers]
        data.update(ok=self.ok, problems=self.problems, warnings=self.warnings)
        return json.loads(json.dumps(data))

    def to_text(self) -> str:
        """A short human-readable summary."""
        lines = [f"quality report: {self.source or '<frame>'}",
                 f"  timeframe {self.timeframe or '?'}, calendar {self.calendar or '?'}, "
                 f"{self.rows} rows" + (f", {self.first_ts} .. {self.last_ts}"
                                        if self.first_ts is not None else "")]
        if self.timeframe:
            lines.append(f"  expected bars {self.expected_bars}, missing {self.missing_bars}; "
                         f"gaps {self.gap_events} ({self.weekend_gap_events} weekend, "
                         f"{self.session_gap_events} overnight/closed, "
                         f"{self.other_gap_events} other"
                         + (" (holidays?)" if self.calendar == "stocks" else "") + ")")
        if self.largest_gaps:
            lines.append("  largest gaps:")
            for g in self.largest_gaps:
                lines.append(f"    {g.start} -> {g.end}: {g.missing_bars} missing bar(s), "
                             f"{g.end - g.start} apart ({g.kind})")
        lines.append("  problems:" + ("" if self.problems else " none"))
        lines += [f"    - {p}" for p in self.problems]
        lines.append("  warnings:" + ("" if self.warnings else " none"))
        lines += [f"    - {w}" for w in self.warnings]
        lines.append("  result: " + ("OK" if self.ok else "PROBLEMS FOUND"))
        return "\n".join(lines)


def quality_report(df: pd.DataFrame, timeframe: str | None = None, calendar: str | None = None,
                   source: str | None = None, *, outlier_mads: float = 10.0,
                   outlier_min_return: float = 0.05, top_gaps: int = 5) -> QualityReport:
    """Describe the quality of a candle frame (raw or validated); never raises on bad rows.

    ``timeframe``, ``calendar`` and ``source`` default to ``df.attrs`` (``calendar`` then to
    the venue's, then to one inferred from the bars). An outlier is a bar whose log return
    differs from the rolling median (101 bars, centred) by more than ``outlier_mads``
    rolling median absolute deviations and is larger than ``outlier_min_return`` in size.

    >>> report = quality_report(load("bittrex:ADA/BTC:5m"))   # doctest: +SKIP
    >>> report.missing_bars, report.gap_events                # doctest: +SKIP
    (40, 5)
    """
    attrs = df.attrs or {}
    source = source or attrs.get("source")
    frame = df.reset_index() if "ts" not in df.columns and df.index.name == "ts" else df
    frame = frame.rename(columns={c: str(c).strip().lower() for c in frame.columns
                                  if str(c).strip().lower() in COLUMNS})
    n = len(frame)
    report = QualityReport(source=source, timeframe=None, calendar=None, rows=n)
    report.missing_columns = [c for c in COLUMNS if c not in frame.columns]
    examples = report.examples

    def count(name: str, mask: np.ndarray, rows: np.ndarray | None = None) -> None:
        hits = np.flatnonzero(mask) if rows is None else rows[mask]
        setattr(report, name, int(hits.size))
        if hits.size:
            examples[name] = [int(r) + 1 for r in np.sort(hits)[:_EXAMPLES]]

    values = {c: pd.to_numeric(frame[c], errors="coerce").to_numpy(dtype=np.float64,
                                                                    na_value=np.nan)
              if c in frame.columns else np.full(n, np.nan) for c in VALUE_COLUMNS}
    present = [c for c in VALUE_COLUMNS if c in frame.columns]
    nan_cells = sum(int(np.isnan(values[c]).sum()) for c in present)
    report.nan_cells = nan_cells
    nan_rows = np.zeros(n, dtype=bool)
    for column in present:
        nan_rows |= np.isnan(values[column])
    if nan_cells:
        examples["nan_cells"] = [int(r) + 1 for r in np.flatnonzero(nan_rows)[:_EXAMPLES]]
    o, h, lo, c, v = (values[k] for k in VALUE_COLUMNS)
    infinite = np.zeros(n, dtype=bool)
    for column in present:
        infinite |= np.isinf(values[column])
    count("infinite_values", infinite)
    with np.errstate(invalid="ignore"):
        nonpositive = np.zeros(n, dtype=bool)
        for column in PRICE_COLUMNS:
            nonpositive |= values[column] <= 0
        count("non_positive_prices", nonpositive)
        count("negative_volume", v < 0)
        count("zero_volume_rows", v == 0)
        count("high_below_low", h < lo)
        count("ohlc_inconsistent", (h < np.fmax(o, c)) | (lo > np.fmin(o, c)))

    if "ts" not in frame.columns or n == 0:
        report.calendar = calendar
        report.timeframe = timeframe or attrs.get("timeframe")
        return report
    ts_ns, ts_bad = parse_ts(frame["ts"])
    count("unparseable_ts", ts_bad)
    rows = np.flatnonzero(~ts_bad)
    parsed = ts_ns[rows]
    descending = np.zeros(parsed.size, dtype=bool)
    descending[1:] = parsed[1:] < parsed[:-1]
    count("unsorted_ts", descending, rows)
    order = np.argsort(parsed, kind="stable")
    sorted_ts = parsed[order]
    repeat = np.zeros(sorted_ts.size, dtype=bool)
    repeat[1:] = sorted_ts[1:] == sorted_ts[:-1]
    count("duplicate_ts", repeat, rows[order])
    unique_ts = sorted_ts[~repeat]
    unique_rows = rows[order][~repeat]
    if unique_ts.size == 0:
        report.calendar = calendar
        return report
    report.first_ts = pd.Timestamp(int(unique_ts[0]), tz="UTC")
    report.last_ts = pd.Timestamp(int(unique_ts[-1]), tz="UTC")

    timeframe = timeframe or attrs.get("timeframe")
    if timeframe is None and unique_ts.size >= 2:
        timeframe = infer_timeframe(unique_ts)
    calendar = calendar or attrs.get("calendar") or calendar_for_venue(attrs.get("venue"))
    if calendar is None:
        calendar = infer_calendar(unique_ts, timeframe) if timeframe else "24/7"
    report.calendar = check_calendar(calendar)
    report.timeframe = timeframe
    report.expected_bars = int(unique_ts.size)
    if timeframe is None:
        return report
    step = timeframe_ns(timeframe)
    count("off_grid_ts", parsed % step != grid_phase(parsed, step), rows)

    gaps = _gap_events(unique_ts, step, report.calendar)
    report.gap_events = len(gaps.kind)
    report.weekend_gap_events = int(np.count_nonzero(gaps.kind == "weekend"))
    report.session_gap_events = int(np.count_nonzero(gaps.kind == "session"))
    report.other_gap_events = int(np.count_nonzero(gaps.kind == "other"))
    report.missing_bars = int(gaps.missing.sum())
    report.expected_bars = int(unique_ts.size + report.missing_bars)
    biggest = np.lexsort((-(gaps.end - gaps.start), -gaps.missing))[:top_gaps]
    report.largest_gaps = [
        GapEvent(pd.Timestamp(int(gaps.start[i]), tz="UTC"), pd.Timestamp(int(gaps.end[i]), tz="UTC"),
                 int(gaps.missing[i]), str(gaps.kind[i])) for i in biggest]

    report.outliers = _outliers(unique_ts, unique_rows, c, outlier_mads, outlier_min_return)
    return report


class _Gaps(NamedTuple):
    start: np.ndarray
    end: np.ndarray
    missing: np.ndarray
    kind: np.ndarray


def _gap_events(ts: np.ndarray, step: int, calendar: str) -> _Gaps:
    """Gaps between sorted unique timestamps, with the bars the calendar says are missing."""
    at = np.flatnonzero(np.diff(ts) > step)
    start, end = ts[at], ts[at + 1]
    slots = -((start - end) // step) - 1  # grid points strictly between start and end
    if calendar == "24/7":
        return _Gaps(start, end, slots, np.full(at.size, "other", dtype=object))
    # Spans a Saturday: the first Saturday on or after the first missing slot's day
    # starts before the next bar.
    first_day = (start + step) // DAY_NS
    saturday = first_day + (5 - (first_day + 3)) % 7
    weekend = saturday * DAY_NS < end
    if calendar == "forex":
        missing = _forex_open_slots(start, slots, step)
    elif step >= DAY_NS:
        skipped = np.busday_count((start // DAY_NS + 1).astype("M8[D]"),
                                  (end // DAY_NS).astype("M8[D]"))
        missing = np.maximum(skipped, 0) // (step // DAY_NS)
    else:
        days, per_day = np.unique(ts // DAY_NS, return_counts=True)
        weekday = (days + 3) % 7 < 5
        bars_per_day = int(np.median(per_day[weekday])) if weekday.any() else 0
        same_day = start // DAY_NS == end // DAY_NS
        skipped = np.busday_count((start // DAY_NS + 1).astype("M8[D]"),
                                  (end // DAY_NS).astype("M8[D]"))
        missing = np.where(same_day, slots, np.maximum(skipped, 0) * bars_per_day)
    missing = missing.astype(np.int64)
    kind = np.where(weekend, "weekend", np.where(missing == 0, "session", "other")).astype(object)
    return _Gaps(start, end, missing, kind)


def _forex_open_slots(start: np.ndarray, slots: np.ndarray, step: int) -> np.ndarray:
    """How many of the ``slots`` grid points after each ``start`` fall outside the weekend
    closure. The closure repeats weekly, so at most one week of points is enumerated per gap
    when the bar length divides a week."""
    if start.size == 0:
        return np.zeros(0, dtype=np.int64)
    per_week = WEEK_NS // step if WEEK_NS % step == 0 else None
    enumerated = slots if per_week is None else np.minimum(slots, per_week)
    gap = np.repeat(np.arange(start.size), enumerated)
    first = np.repeat(np.cumsum(enumerated) - enumerated, enumerated)
    k = np.arange(gap.size) - first + 1
    position = (start[gap] + k * step - EPOCH_MONDAY_NS) % WEEK_NS
    is_open = ~((position >= _FOREX_CLOSED[0]) & (position < _FOREX_CLOSED[1]))
    if per_week is None:
        return np.bincount(gap, weights=is_open, minlength=start.size).astype(np.int64)
    weeks, remainder = slots // per_week, slots % per_week
    open_per_week = np.bincount(gap, weights=is_open, minlength=start.size)
    in_remainder = k <= remainder[gap]
    open_remainder = np.bincount(gap, weights=is_open & in_remainder, minlength=start.size)
    full = np.where(weeks > 0, weeks * open_per_week, 0)
    return (full + open_remainder).astype(np.int64)


def _outliers(ts, rows, close, mads, min_return) -> list[Outlier]:
    closes = close[rows]
    usable = np.isfinite(closes) & (closes > 0)
    if np.count_nonzero(usable) < 3:
        return []
    log_return = np.diff(np.log(closes[usable]))
    at_rows, at_ts = rows[usable][1:], ts[usable][1:]
    series = pd.Series(log_return)
    median = series.rolling(101, center=True, min_periods=11).median()
    deviation = (series - median).abs()
    spread = deviation.rolling(101, center=True, min_periods=11).median()
    flagged = ((deviation > mads * spread) & (series.abs() > min_return)).to_numpy()
    return [Outlier(int(at_rows[i]) + 1, pd.Timestamp(int(at_ts[i]), tz="UTC"),
                    round(float(log_return[i]), 6)) for i in np.flatnonzero(flagged)]


def _iso(stamp) -> str | None:
    return None if stamp is None else stamp.isoformat()



# -- the summary every result carries ----------------------------------------------------

REPAIRED_NOTE = ("repaired_rows is always 0: MMATS never repairs, fills or drops a bar; a bad "
                 "row is rejected at import (counted in rejected_rows) or refused at load")
DEFAULT_MAX_GAP = "1%"
DEFAULT_MAX_MISSING = "5%"


@dataclass(frozen=True)
class DataQuality:
    """How complete the candles behind a result are, counted against their calendar.

    ``missing_bars`` and ``gap_count`` count only bars the calendar expects: the weekend of a
    forex or stocks series and the overnight gap of an intraday stocks series are not
    missing. ``largest_gap`` is the gap with the most missing bars (None when nothing is
    missing). ``rejected_rows`` is read from the candle store's metadata (rows that
    ``mmats import --reject-bad`` or a fetch refused, cumulative over the file's
    imports, all of its dates); ``rejected_rows_known`` is False when the candles did not
    come from a store file that records it, and ``notes`` says so.
    """

    source: str | None
    timeframe: str | None
    calendar: str | None
    bars: int
    expected_bars: int
    missing_bars: int
    gap_count: int
    largest_gap: GapEvent | None
    zero_volume_bars: int
    repaired_rows: int
    rejected_rows: int
    rejected_rows_known: bool
    first_ts: pd.Timestamp | None
    last_ts: pd.Timestamp | None
    notes: tuple[str, ...] = ()

    @property
    def missing_share(self) -> float:
        """Missing bars as a fraction of the expected bars (0 when none are expected)."""
        return self.missing_bars / self.expected_bars if self.expected_bars else 0.0

    def to_dict(self) -> dict:
        """JSON-safe form; the largest gap as ``{start, end, missing_bars, duration, kind}``."""
        gap = self.largest_gap
        return {
            "source": self.source, "timeframe": self.timeframe, "calendar": self.calendar,
            "bars": self.bars, "expected_bars": self.expected_bars,
            "missing_bars": self.missing_bars, "missing_share": round(self.missing_share, 6),
            "gap_count": self.gap_count,
            "largest_gap": None if gap is None else {
                "start": _iso(gap.start), "end": _iso(gap.end),
                "missing_bars": int(gap.missing_bars), "duration": str(gap.end - gap.start),
                "kind": gap.kind},
            "zero_volume_bars": self.zero_volume_bars, "repaired_rows": self.repaired_rows,
            "rejected_rows": self.rejected_rows,
            "rejected_rows_known": self.rejected_rows_known,
            "first_ts": _iso(self.first_ts), "last_ts": _iso(self.last_ts),
            "notes": list(self.notes),
        }

    def summary(self) -> str:
        """One line for a script's text output.

        >>> data_quality(load("bittrex:ADA/BTC:5m")).summary()   # doctest: +SKIP
        'data: 5720 bars of 5760 expected (24/7, 5m); 40 missing (0.69%) in 5 gap(s), ...'
        """
        text = (f"data: {self.bars} bars of {self.expected_bars} expected "
                f"({self.calendar or '?'}, {self.timeframe or '?'})")
        if self.missing_bars:
            gap = self.largest_gap
            text += (f"; {self.missing_bars} missing ({self.missing_share:.2%}) in "
                     f"{self.gap_count} gap(s), largest {gap.missing_bars} bar(s) "
                     f"{gap.start} -> {gap.end}")
        else:
            text += "; none missing"
        text += f"; {self.zero_volume_bars} zero-volume"
        text += (f"; {self.rejected_rows} row(s) rejected at import" if self.rejected_rows_known
                 else "; rejected rows not recorded")
        return text + "; none repaired"


def data_quality(candles, *, source: str | None = None) -> DataQuality:
    """Summarise a loaded candle frame (or a :class:`~mmats.backtest.Market`): bars, missing
    bars against its calendar, gaps, the largest gap, zero-volume bars, rows rejected at import.

    The frame is what :func:`mmats.data.load` returns (``ts`` column or index, ``attrs``
    with timeframe, calendar, venue and source); a Market carries ``ts_ns``, ``volume``,
    ``timeframe`` and ``calendar``. Nothing is changed, filled or dropped.

    >>> quality = data_quality(load("bittrex:ADA/BTC:5m"))   # doctest: +SKIP
    >>> quality.missing_bars, quality.gap_count, quality.largest_gap.missing_bars  # doctest: +SKIP
    (40, 5, 33)
    """
    if hasattr(candles, "ts_ns"):  # a Market
        ts_ns = np.asarray(candles.ts_ns, dtype=np.int64)
        volume = np.asarray(candles.volume, dtype=np.float64)
        attrs = {"timeframe": candles.timeframe, "calendar": candles.calendar,
                 "venue": getattr(candles, "venue", None)}
    else:
        frame = candles
        attrs = dict(frame.attrs or {})
        stamps = frame["ts"] if "ts" in frame.columns else frame.index.to_series()
        ts_ns = pd.to_datetime(stamps, utc=True).to_numpy(dtype="M8[ns]").view(np.int64)
        volume = (frame["volume"].to_numpy(dtype=np.float64) if "volume" in frame.columns
                  else np.full(ts_ns.size, np.nan))
    source = source or attrs.get("source")
    ordered = ts_ns.size < 2 or bool((np.diff(ts_ns) > 0).all())  # as loaded: skip the sort
    unique_ts = ts_ns if ordered else np.unique(ts_ns)
    timeframe = attrs.get("timeframe")
    if timeframe is None and unique_ts.size >= 2:
        timeframe = infer_timeframe(unique_ts)
    calendar = attrs.get("calendar") or calendar_for_venue(attrs.get("venue"))
    if calendar is None:
        calendar = infer_calendar(unique_ts, timeframe) if timeframe else "24/7"
    missing = gap_count = 0
    largest = None
    if timeframe is not None and unique_ts.size >= 2:
        gaps = _gap_events(unique_ts, timeframe_ns(timeframe), calendar)
        missing, gap_count = int(gaps.missing.sum()), int(np.count_nonzero(gaps.missing))
        if gap_count:
            i = int(np.lexsort((-(gaps.end - gaps.start), -gaps.missing))[0])
            largest = GapEvent(pd.Timestamp(int(gaps.start[i]), tz="UTC"),
                               pd.Timestamp(int(gaps.end[i]), tz="UTC"),
                               int(gaps.missing[i]), str(gaps.kind[i]))
    rejected, known, rejected_note = _rejected_rows(source)
    return DataQuality(
        source=source, timeframe=timeframe, calendar=calendar, bars=int(ts_ns.size),
        expected_bars=int(unique_ts.size + missing), missing_bars=missing, gap_count=gap_count,
        largest_gap=largest, zero_volume_bars=int(np.count_nonzero(volume == 0)),
        repaired_rows=0, rejected_rows=rejected, rejected_rows_known=known,
        first_ts=pd.Timestamp(int(unique_ts[0]), tz="UTC") if unique_ts.size else None,
        last_ts=pd.Timestamp(int(unique_ts[-1]), tz="UTC") if unique_ts.size else None,
        notes=(rejected_note, REPAIRED_NOTE))


def _rejected_rows(source) -> tuple[int, bool, str]:
    """(count, known, note) from the store metadata of the file ``source`` names."""
    from mmats.data.store import stored_metadata  # the store imports nothing from here

    path = Path(source) if source else None
    if path is None or path.suffix.lower() not in (".parquet", ".pq") or not path.is_file():
        return 0, False, ("rejected_rows: not recorded (the candles did not come from a "
                          "candle-store file); 0 does not mean no row was ever rejected")
    metadata = stored_metadata(path)
    if "rejected_rows" not in metadata:
        return 0, False, (f"rejected_rows: not recorded in {path} (written before rejected "
                          "rows were counted, or not by the candle store)")
    return int(metadata["rejected_rows"]), True, (
        f"rejected_rows: rows refused when importing or fetching into {path}, cumulative "
        "over its imports and all of its dates (not only the range loaded)")


class GapLimit(NamedTuple):
    """A largest-gap threshold: a number of bars, a duration in ns, or a share of the
    expected bars (exactly one is set)."""

    bars: int | None = None
    duration_ns: int | None = None
    share: float | None = None
    text: str = ""


def parse_gap_limit(text: str) -> GapLimit:
    """``"30"`` (bars), ``"1h"`` (a duration, as a timeframe is written) or ``"1%"`` (of the
    expected bars) -> :class:`GapLimit`; :class:`ConfigError` otherwise.

    >>> parse_gap_limit("90m").duration_ns
    5400000000000
    """
    value = str(text).strip()
    try:
        if value.endswith("%"):
            share = float(value[:-1]) / 100
            if math.isfinite(share) and share >= 0:
                return GapLimit(share=share, text=value)
        elif value.isdigit():
            return GapLimit(bars=int(value), text=value)
        else:
            return GapLimit(duration_ns=timeframe_ns(value), text=value)
    except (ValueError, ConfigError):
        pass
    raise ConfigError(f"--max-gap {text!r}: give a number of bars (30), a duration (1h, 2d) "
                      "or a share of the expected bars (1%)")


def parse_share(text: str) -> float:
    """``"5%"`` or ``"0.05"`` -> 0.05; :class:`ConfigError` unless 0 <= share <= 1."""
    value = str(text).strip()
    try:
        share = float(value[:-1]) / 100 if value.endswith("%") else float(value)
    except ValueError:
        share = math.nan
    if not (0 <= share <= 1):
        raise ConfigError(f"--max-missing {text!r}: give a share of the expected bars, "
                          "e.g. 5% or 0.05")
    return share


def data_quality_warnings(quality: DataQuality, *, max_gap=DEFAULT_MAX_GAP,
                          max_missing=DEFAULT_MAX_MISSING) -> list[str]:
    """The warnings a script prints on stderr: the largest gap is longer than ``max_gap``,
    or more than ``max_missing`` of the expected bars are missing.

    ``max_gap`` is what :func:`parse_gap_limit` reads (default ``"1%"``: a gap missing more
    than 1% of the expected bars); ``max_missing`` what :func:`parse_share` reads (default
    ``"5%"``, above the ~4% of weekdays a US stock series loses to exchange holidays, which
    the stocks calendar counts as missing). Weekend and overnight gaps are never missing, so
    never warned about.

    >>> data_quality_warnings(data_quality(load("bittrex:ETH/BTC:5m")))   # doctest: +SKIP
    []
    """
    limit = max_gap if isinstance(max_gap, GapLimit) else parse_gap_limit(max_gap)
    share = parse_share(max_missing) if isinstance(max_missing, str) else float(max_missing)
    found = []
    gap = quality.largest_gap
    name = quality.source or "the data"
    if gap is not None:
        step = timeframe_ns(quality.timeframe)
        if limit.share is not None:
            too_long = gap.missing_bars > limit.share * quality.expected_bars
        elif limit.bars is not None:
            too_long = gap.missing_bars > limit.bars
        else:
            too_long = gap.missing_bars * step > limit.duration_ns
        if too_long:
            found.append(f"{name}: a gap of {gap.missing_bars} missing bar(s) "
                         f"({pd.Timedelta(gap.missing_bars * step)}) from {gap.start} to "
                         f"{gap.end} is longer than --max-gap {limit.text}; "
                         f"{quality.missing_bars} bar(s) missing in {quality.gap_count} gap(s) "
                         "in all, none filled")
    if quality.missing_share > share:
        found.append(f"{name}: {quality.missing_bars} of {quality.expected_bars} expected "
                     f"bars ({quality.missing_share:.2%}) are missing, more than --max-missing "
                     f"{share:.2%}; none filled")
    return found
