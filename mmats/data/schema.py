"""The candle schema and its validation.

Every candle frame in MMATS has exactly these columns, in this order::

    ts      datetime64[ns, UTC]   bar OPEN time
    open    float64
    high    float64
    low     float64
    close   float64
    volume  float64

:func:`validate_candles` turns an arbitrary frame into one that obeys the schema, or says
precisely which rows break it. Naive timestamps are taken to be UTC; tz-aware ones are
converted to UTC; epoch integers are read as seconds, milliseconds, microseconds or
nanoseconds depending on their magnitude.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd

from mmats.data.calendar import timeframe_ns
from mmats.errors import BadBarError, CandleValidationError, DataError

COLUMNS = ("ts", "open", "high", "low", "close", "volume")
VALUE_COLUMNS = COLUMNS[1:]
PRICE_COLUMNS = ("open", "high", "low", "close")

# Rejected rows listed in an error message; the rest are counted.
MAX_LISTED_REJECTS = 10

_NS_PER_UNIT = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}


class Reject(NamedTuple):
    """One bad row: ``row`` is the 1-based data row of the input (header excluded;
    0 means the whole file, e.g. a missing column)."""

    source: str
    row: int
    reason: str


def empty_candles() -> pd.DataFrame:
    """A zero-row frame with the candle schema."""
    frame = pd.DataFrame({c: np.empty(0, dtype=np.float64) for c in VALUE_COLUMNS})
    frame.insert(0, "ts", pd.Series(np.empty(0, dtype="M8[ns]")).dt.tz_localize("UTC"))
    return frame


def candles_from_arrays(ts_ns: np.ndarray, values: dict[str, np.ndarray]) -> pd.DataFrame:
    """Build a schema frame from int64 nanosecond timestamps and the five value arrays."""
    ts = pd.Series(np.asarray(ts_ns, dtype=np.int64).view("M8[ns]")).dt.tz_localize("UTC")
    data = {"ts": ts}
    for column in VALUE_COLUMNS:
        data[column] = np.asarray(values[column], dtype=np.float64)
    return pd.DataFrame(data)


def epoch_unit(values: np.ndarray) -> str:
    """Guess the unit of epoch numbers from their magnitude: s, ms, us or ns.

    Seconds stay below 1e11 until the year 5138; milliseconds after 1973 are above it.
    """
    finite = np.abs(values[np.isfinite(values)])
    if finite.size == 0:
        return "s"
    magnitude = float(np.median(finite))
    if magnitude < 1e11:
        return "s"
    if magnitude < 1e14:
        return "ms"
    if magnitude < 1e17:
        return "us"
    return "ns"


def parse_ts(values) -> tuple[np.ndarray, np.ndarray]:
    """Parse a timestamp column to UTC epoch nanoseconds.

    Returns ``(ts_ns, bad)``: int64 nanoseconds (0 where unparseable) and a boolean mask of
    the entries that could not be parsed. Accepts datetimes (naive = UTC), epoch numbers
    (unit detected by :func:`epoch_unit`) and ISO-8601 strings.

    >>> parse_ts(["2018-01-10 04:55", "1515560100", "soon"])[1].tolist()
    [False, False, True]
    """
    series = pd.Series(values).reset_index(drop=True)
    n = len(series)
    if n == 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=bool)
    if isinstance(series.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(series):
        return _datetimes_to_ns(series)
    if pd.api.types.is_bool_dtype(series):
        return np.zeros(n, dtype=np.int64), np.ones(n, dtype=bool)
    if pd.api.types.is_numeric_dtype(series):
        return _epoch_to_ns(series)
    # Strings or mixed objects: numbers written as text are epochs, the rest ISO dates.
    numeric = pd.to_numeric(series, errors="coerce")
    present = series.notna().to_numpy()
    if present.any() and numeric.notna().to_numpy()[present].all():
        return _epoch_to_ns(numeric)
    parsed = pd.to_datetime(series, utc=True, errors="coerce", format="ISO8601")
    if parsed.isna().all() and present.any():
        parsed = pd.to_datetime(series, utc=True, errors="coerce", format="mixed")
    return _datetimes_to_ns(parsed)


def _datetimes_to_ns(series: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    if series.dt.tz is None:
        series = series.dt.tz_localize("UTC")
    else:
        series = series.dt.tz_convert("UTC")
    # Dates nanoseconds cannot hold (pandas parses the year 3024 at a coarser unit) are bad.
    outside = ((series < pd.Timestamp.min.tz_localize("UTC"))
               | (series > pd.Timestamp.max.tz_localize("UTC")))
    series = series.where(~outside)
    bad = series.isna().to_numpy()
    ts_ns = series.dt.as_unit("ns").to_numpy(dtype="M8[ns]").view(np.int64).copy()
    ts_ns[bad] = 0
    return ts_ns, bad


def _epoch_to_ns(numbers: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    values = numbers.to_numpy(dtype=np.float64, na_value=np.nan)
    unit = epoch_unit(values)
    factor = _NS_PER_UNIT[unit]
    bad = ~np.isfinite(values) | (np.abs(values) * factor >= 9.2e18)
    ts_ns = np.zeros(values.size, dtype=np.int64)
    ok = ~bad
    if pd.api.types.is_integer_dtype(numbers):
        # Exact integer arithmetic: float64 cannot hold every nanosecond near 1.5e18.
        ts_ns[ok] = numbers.to_numpy(dtype=np.int64, na_value=0)[ok] * factor
    else:
        whole = ok & (values == np.floor(values)) & (np.abs(values) < 2**53)
        ts_ns[whole] = values[whole].astype(np.int64) * factor
        fraction = ok & ~whole
        # Fractional epochs: float precision is a few hundred ns, so keep microseconds.
        ts_ns[fraction] = np.round(values[fraction] * (factor / 1000)).astype(np.int64) * 1000
    return ts_ns, bad


def grid_phase(ts_ns: np.ndarray, step_ns: int) -> int:
    """The most common ``ts % step``: where the bar grid of this data is anchored.

    Usually 0 (bars open on whole multiples of the bar length since the epoch); weekly bars
    opening on Mondays, or hourly stock bars opening at :30, have a consistent non-zero phase.
    """
    if ts_ns.size == 0:
        return 0
    phases, counts = np.unique(ts_ns % step_ns, return_counts=True)
    return int(phases[np.argmax(counts)])


def validate_candles(df: pd.DataFrame, source: str = "<frame>", timeframe: str | None = None,
                     strict: bool = True, *, phase_ns: int | None = None,
                     ) -> tuple[pd.DataFrame, list[Reject]]:
    """Check a frame against the candle schema; return ``(clean_df, rejects)``.

    A row is rejected for: an unparseable ``ts``; a NaN, infinite or non-numeric OHLCV
    value; a price <= 0; a negative volume; ``high < low``; ``high < max(open, close)`` or
    ``low > min(open, close)``; a ``ts`` off the timeframe grid (when ``timeframe`` is
    given, at ``phase_ns`` — an existing file's phase — or at the frame's own); a ``ts`` that appears again with different values (every such row is rejected).
    Exact duplicate rows are collapsed and unsorted rows sorted; both are counted in
    ``clean_df.attrs["validation"]``. Missing, extra or repeated columns fail the whole file.

    With ``strict=True`` any reject raises :class:`CandleValidationError` whose message names
    the source, the first rows and their reasons; with ``strict=False`` the good rows are
    returned with the list of rejects, for the caller to report.

    >>> clean, rejects = validate_candles(frame, source="eth.csv", timeframe="5m")  # doctest: +SKIP
    """
    if not isinstance(df, pd.DataFrame):
        raise DataError(f"{source}: expected a pandas DataFrame of candles, got {type(df).__name__}")
    source = str(source)
    frame = df
    if "ts" not in frame.columns and frame.index.name == "ts":
        frame = frame.reset_index()
    _check_columns(frame, source)
    n = len(frame)
    step_ns = timeframe_ns(timeframe) if timeframe else None

    ts_ns, ts_bad = parse_ts(frame["ts"])
    raw = {c: frame[c].reset_index(drop=True) for c in COLUMNS}
    values = {c: pd.to_numeric(raw[c], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
              for c in VALUE_COLUMNS}
    nan = {c: np.isnan(values[c]) for c in VALUE_COLUMNS}

    defects = _defects(values)
    any_nan = np.zeros(n, dtype=bool)
    for column in VALUE_COLUMNS:
        any_nan |= nan[column]
    off_grid = np.zeros(n, dtype=bool)
    if step_ns is not None:
        good_ts = ts_ns[~ts_bad]
        phase = grid_phase(good_ts, step_ns) if phase_ns is None else phase_ns
        off_grid = ~ts_bad & (ts_ns % step_ns != phase)

    row_bad = ts_bad | any_nan | off_grid
    for mask in defects.values():
        row_bad |= mask
    reasons: dict[int, list[str]] = {}
    for i in np.flatnonzero(row_bad):
        reasons[int(i)] = _row_reasons(i, ts_bad, ts_ns, raw, values, nan, defects, off_grid,
                                       timeframe)

    # Duplicates among the otherwise good rows: identical ones collapse, conflicting ones fail.
    good = np.flatnonzero(~row_bad)
    order = good[np.argsort(ts_ns[good], kind="stable")]
    sorted_ts = ts_ns[order]
    same_as_previous = np.zeros(order.size, dtype=bool)
    same_as_previous[1:] = sorted_ts[1:] == sorted_ts[:-1]
    differs = np.zeros(order.size, dtype=bool)
    for column in VALUE_COLUMNS:
        col = values[column][order]
        differs[1:] |= col[1:] != col[:-1]
    differs &= same_as_previous
    group = np.cumsum(~same_as_previous) - 1
    conflicting_group = np.zeros(int(group[-1]) + 1 if group.size else 0, dtype=bool)
    conflicting_group[group[differs]] = True
    in_conflict = conflicting_group[group]
    for g in np.flatnonzero(conflicting_group):
        members = np.sort(order[group == g])
        rows = ", ".join(str(int(m) + 1) for m in members)
        when = pd.Timestamp(int(ts_ns[members[0]]), tz="UTC")
        for m in members:
            reasons[int(m)] = [f"duplicate ts {when} with conflicting values (rows {rows})"]
    keep = ~in_conflict & ~same_as_previous
    kept = order[keep]
    duplicates_collapsed = int(np.count_nonzero(same_as_previous & ~in_conflict))

    parsed = ts_ns[~ts_bad]
    unsorted = int(np.count_nonzero(parsed[1:] < parsed[:-1])) if parsed.size > 1 else 0

    rejects = [Reject(source, row + 1, "; ".join(reasons[row])) for row in sorted(reasons)]
    if rejects and strict:
        raise CandleValidationError(format_rejects(source, rejects, n), rejects)

    clean = candles_from_arrays(ts_ns[kept], {k: values[k][kept] for k in VALUE_COLUMNS})
    clean.attrs = dict(df.attrs)
    clean.attrs["validation"] = {
        "source": source, "rows_in": n, "rows_out": len(clean), "rejected": len(rejects),
        "duplicates_collapsed": duplicates_collapsed, "unsorted": unsorted,
    }
    return clean, rejects


def _check_columns(frame: pd.DataFrame, source: str) -> None:
    names = [str(c) for c in frame.columns]
    repeated = sorted({c for c in names if names.count(c) > 1})
    missing = [c for c in COLUMNS if c not in names]
    extra = [c for c in names if c not in COLUMNS]
    problems = []
    if missing:
        problems.append(f"missing column(s) {', '.join(missing)}")
    if extra:
        problems.append(f"unexpected column(s) {', '.join(extra)}")
    if repeated:
        problems.append(f"repeated column(s) {', '.join(repeated)}")
    if problems:
        reason = "; ".join(problems)
        raise CandleValidationError(
            f"{source}: {reason}. The candle schema is exactly {', '.join(COLUMNS)} "
            "(read_candle_file maps common aliases such as Date, Timestamp or Open). "
            "Nothing was written.",
            [Reject(source, 0, reason)],
        )


def _row_reasons(i, ts_bad, ts_ns, raw, values, nan, defects, off_grid, timeframe):
    reasons = []
    if ts_bad[i]:
        reasons.append(_ts_reason(raw["ts"].iloc[i]))
    nan_columns = []
    for column in VALUE_COLUMNS:
        if nan[column][i]:
            original = raw[column].iloc[i]
            if pd.isna(original):
                nan_columns.append(column)
            else:
                reasons.append(f"{column} is not a number: {_show(original)}")
    if nan_columns:
        reasons.append(f"NaN in {', '.join(nan_columns)}")
    reasons += _defect_reasons(i, values, defects)
    if off_grid[i]:
        when = pd.Timestamp(int(ts_ns[i]), tz="UTC")
        reasons.append(f"ts {when} is off the {timeframe} grid")
    return reasons


def _ts_reason(value) -> str:
    """Why a ts was not read: unparseable, or a date outside what nanoseconds hold."""
    try:
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError, OverflowError):
        stamp = None
    if stamp is not None and not pd.isna(stamp) and not isinstance(value, (int, float)):
        return (f"ts {_show(value)} is outside the dates MMATS can hold "
                f"({pd.Timestamp.min:%Y-%m-%d} .. {pd.Timestamp.max:%Y-%m-%d})")
    return f"unparseable ts {_show(value)}"


def _defects(values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Row masks of what is wrong with the (float) values of bars, NaN aside: an infinite
    value, a price <= 0, a negative volume, high < low, a body outside [low, high]."""
    o, h, lo, c, v = (values[k] for k in VALUE_COLUMNS)
    infinite = np.zeros(o.shape, dtype=bool)
    for column in VALUE_COLUMNS:
        infinite |= np.isinf(values[column])
    with np.errstate(invalid="ignore"):
        return {
            "infinite": infinite,
            "nonpositive": (o <= 0) | (h <= 0) | (lo <= 0) | (c <= 0),
            "negative_volume": v < 0,
            "high_below_low": h < lo,
            "high_below_body": h < np.fmax(o, c),
            "low_above_body": lo > np.fmin(o, c),
        }


def _defect_reasons(i, values, defects) -> list[str]:
    """The reasons for row ``i`` of :func:`_defects`, naming the columns and values."""
    reasons = []
    if defects["infinite"][i]:
        bad = [f"{k}={values[k][i]:g}" for k in VALUE_COLUMNS if np.isinf(values[k][i])]
        reasons.append(f"infinite value ({', '.join(bad)})")
    if defects["nonpositive"][i]:
        bad = [f"{k}={values[k][i]:g}" for k in PRICE_COLUMNS if values[k][i] <= 0]
        reasons.append(f"non-positive price ({', '.join(bad)})")
    if defects["negative_volume"][i]:
        reasons.append(f"negative volume ({values['volume'][i]:g})")
    if defects["high_below_low"][i]:
        reasons.append(f"high < low (high={values['high'][i]:g}, low={values['low'][i]:g})")
    if defects["high_below_body"][i]:
        reasons.append("high < max(open, close)")
    if defects["low_above_body"][i]:
        reasons.append("low > min(open, close)")
    return reasons


def bad_bars(values: dict[str, np.ndarray]) -> dict[int, str]:
    """Index -> reason for every bar whose values no trade may be based on.

    ``values`` maps open, high, low, close and volume to equal-length arrays. A bar is bad
    for a NaN or infinite value, a price <= 0, a negative volume, ``high < low`` or a body
    outside ``[low, high]``: the same rules :func:`validate_candles` applies to a file.

    >>> bad_bars({"open": [1.0, 1.0], "high": [1.1, float("inf")], "low": [0.9, 0.9],
    ...           "close": [1.0, 1.0], "volume": [5.0, 5.0]})
    {1: 'infinite value (high=inf)'}
    """
    values = {k: np.asarray(values[k], dtype=np.float64) for k in VALUE_COLUMNS}
    defects = _defects(values)
    bad = np.zeros(values["open"].shape, dtype=bool)
    for mask in defects.values():
        bad |= mask
    for column in VALUE_COLUMNS:
        bad |= np.isnan(values[column])
    found = {}
    for i in np.flatnonzero(bad):
        nan_columns = [k for k in VALUE_COLUMNS if np.isnan(values[k][i])]
        reasons = [f"NaN in {', '.join(nan_columns)}"] if nan_columns else []
        found[int(i)] = "; ".join(reasons + _defect_reasons(i, values, defects))
    return found


def bad_bar_reason(open, high, low, close, volume) -> str | None:
    """Why one bar must not reach a strategy or an order, or None when it is sound.

    >>> bad_bar_reason(1.0, 1.1, 0.9, 1.0, 5.0) is None
    True
    >>> bad_bar_reason(1.0, float("inf"), 0.9, 1.0, 5.0)
    'infinite value (high=inf)'
    """
    given = dict(zip(VALUE_COLUMNS, (open, high, low, close, volume), strict=True))
    values = {}
    for column, value in given.items():
        try:
            values[column] = np.array([float(value)])
        except (TypeError, ValueError):
            return f"{column} is not a number: {_show(value)}"
    return bad_bars(values).get(0)


def served_bars(frame: pd.DataFrame, first: int, last: int, symbol: str, timeframe: str,
                source: str, bad: dict[int, str]) -> pd.DataFrame:
    """``frame.iloc[first:last]`` for a data feed, or :class:`BadBarError` naming the symbol
    and the open time of the first bad bar in that range; ``bad`` is :func:`bad_bars` of
    the whole frame, computed once."""
    hits = [i for i in bad if first <= i < last]
    if hits:
        i = min(hits)
        ts_ns = int(pd.Timestamp(frame["ts"].iloc[i]).value)
        when = pd.Timestamp(ts_ns, tz="UTC")
        raise BadBarError(f"{source}: {symbol} {timeframe} bar opening {when} is bad: "
                          f"{bad[i]}; it is not served to a strategy. Fix or remove it "
                          "(mmats check-data lists every bad row)",
                          symbol=symbol, ts_ns=ts_ns, reason=bad[i])
    return frame.iloc[first:last]


def frame_bad_bars(frame: pd.DataFrame) -> dict[int, str]:
    """:func:`bad_bars` of a candle frame's value columns (by position)."""
    return bad_bars({c: pd.to_numeric(frame[c], errors="coerce").to_numpy(
        dtype=np.float64, na_value=np.nan) for c in VALUE_COLUMNS})


def _show(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def format_rejects(source: str, rejects: list[Reject], rows: int,
                   header_lines: int | None = None) -> str:
    """The error message for rejected rows: source, first rows with reasons, total count.

    ``header_lines`` (default: one for a CSV or text file, else none) turns a data row
    into the file's line number in the message.
    """
    if header_lines is None:
        header_lines = 1 if str(source).lower().endswith((".csv", ".csv.gz", ".txt")) else 0
    lines = [f"{source}: {len(rejects)} of {rows} row(s) rejected; nothing was written."]
    for reject in rejects[:MAX_LISTED_REJECTS]:
        where = f"row {reject.row}" if reject.row else "file"
        if header_lines and reject.row:
            where += f" (line {reject.row + header_lines})"
        lines.append(f"  {where}: {reject.reason}")
    if len(rejects) > MAX_LISTED_REJECTS:
        lines.append(f"  ... and {len(rejects) - MAX_LISTED_REJECTS} more")
    lines.append("Fix these rows, or keep only the good ones with strict=False "
                 "(mmats import --reject-bad).")
    return "\n".join(lines)


def candle_rows(frame: pd.DataFrame) -> list[tuple[int, float, float, float, float, float]]:
    """``(open time in ns, open, high, low, close, volume)`` of each bar of a candle frame,
    through one conversion of the frame (pandas' row iteration and per-column access
    cost more than a kernel step on the few bars a tick reads)."""
    if len(frame) == 0:
        return []
    columns = list(frame.columns)
    at = [columns.index(name) for name in ("ts", *VALUE_COLUMNS)]
    return [(pd.Timestamp(row[at[0]]).value, *(float(row[i]) for i in at[1:]))
            for row in frame.to_numpy()]
