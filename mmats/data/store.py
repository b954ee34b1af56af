"""The candle store: one Parquet file per (venue, symbol, timeframe), read with pyarrow.

Layout::

    {root}/{venue}/{symbol_key}_{timeframe}.parquet     e.g. data/bittrex/ETH_BTC_5m.parquet

``symbol_key`` is the symbol with ``/`` and ``:`` replaced by ``_``; the original symbol is
kept in the file's Parquet metadata. Writes are idempotent appends, atomic (temp file,
fsync, rename) and serialised per file by an exclusive ``fcntl`` lock, so a crash never
leaves a half-written file and two writers never lose each other's rows.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mmats.data.calendar import calendar_for_venue, infer_calendar, timeframe_ns
from mmats.data.schema import (
    COLUMNS,
    VALUE_COLUMNS,
    candles_from_arrays,
    grid_phase,
    validate_candles,
)
from mmats.errors import ConfigError, DataError
from mmats.files import write_durably

try:  # POSIX; elsewhere writes are still atomic but not serialised between processes.
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

METADATA_KEY = b"mmats"
MAX_LISTED_CONFLICTS = 10
ROW_GROUP_BARS = 65_536  # a tick reads the tail: one or two groups, not the history


def symbol_key(symbol: str) -> str:
    """The file-name form of a symbol: ``'ETH/BTC'`` -> ``'ETH_BTC'`` (already-keyed passes).

    >>> symbol_key("XRP/USDT:USDT")
    'XRP_USDT_USDT'
    """
    key = str(symbol).strip().replace("/", "_").replace(":", "_")
    if not key or key.startswith(".") or "\\" in key or "\0" in key:
        raise ConfigError(f"symbol {symbol!r} cannot name a file; use e.g. 'ETH/BTC'")
    return key


def typed_symbol(key: str) -> str:
    """The symbol as users type it, for a file whose metadata does not say: the inverse of
    :func:`symbol_key` for the usual shapes (``BASE_QUOTE``, ``BASE_QUOTE_SETTLE``).

    >>> typed_symbol("ADA_BTC"), typed_symbol("XRP_USDT_USDT"), typed_symbol("GOOG")
    ('ADA/BTC', 'XRP/USDT:USDT', 'GOOG')
    """
    parts = str(key).split("_")
    if len(parts) == 2 and all(parts):
        return "/".join(parts)
    if len(parts) == 3 and all(parts):
        return f"{parts[0]}/{parts[1]}:{parts[2]}"
    return str(key)


def _check_venue(venue: str) -> str:
    venue = str(venue).strip()
    if not venue or venue.startswith(".") or any(ch in venue for ch in "/\\:\0"):
        raise ConfigError(f"venue {venue!r} cannot name a folder; use e.g. 'binance'")
    return venue


def to_ns(when) -> int | None:
    """A bound given as str, datetime, Timestamp, datetime64 or int nanoseconds -> UTC ns."""
    if when is None:
        return None
    if isinstance(when, (int, np.integer)) and not isinstance(when, bool):
        return int(when)
    try:
        stamp = pd.Timestamp(when)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"cannot read {when!r} as a date/time: {exc}") from None
    if pd.isna(stamp):
        raise ConfigError(f"cannot read {when!r} as a date/time")
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    try:
        return int(stamp.as_unit("ns").value)
    except (ValueError, OverflowError):  # pandas' OutOfBoundsDatetime is a ValueError
        raise ConfigError(f"{when!r} is outside the dates MMATS can hold "
                          f"({pd.Timestamp.min:%Y-%m-%d} .. {pd.Timestamp.max:%Y-%m-%d})") from None


class Conflict(NamedTuple):
    """An existing value replaced by a different new one for the same bar."""

    ts: pd.Timestamp
    column: str
    old: float
    new: float


@dataclass
class AppendReport:
    """What :meth:`CandleStore.write` did to one file."""

    path: Path
    key: tuple[str, str, str]
    rows_before: int
    rows_added: int
    rows_after: int
    conflicts: list[Conflict] = field(default_factory=list)
    written: bool = True
    source: str | None = None

    def __str__(self) -> str:
        venue, symbol, timeframe = self.key
        text = (f"{venue}:{symbol}:{timeframe} -> {self.path}: {self.rows_before} rows before, "
                f"+{self.rows_added} added, {self.rows_after} after")
        if self.source:
            text += f" (from {self.source})"
        if not self.written:
            text += "; already up to date, file unchanged"
        if self.conflicts:
            text += (f"\n  {len(self.conflicts)} existing value(s) differed and were replaced "
                     "by the new ones:")
            for conflict in self.conflicts[:MAX_LISTED_CONFLICTS]:
                text += (f"\n    {conflict.ts} {conflict.column}: "
                         f"{conflict.old!r} -> {conflict.new!r}")
            if len(self.conflicts) > MAX_LISTED_CONFLICTS:
                text += f"\n    ... and {len(self.conflicts) - MAX_LISTED_CONFLICTS} more"
        return text

    def to_dict(self) -> dict:
        """JSON-safe form."""
        venue, symbol, timeframe = self.key
        return {
            "path": str(self.path), "venue": venue, "symbol": symbol, "timeframe": timeframe,
            "source": self.source, "rows_before": self.rows_before,
            "rows_added": self.rows_added, "rows_after": self.rows_after,
            "written": self.written,
            "conflicts": [{"ts": c.ts.isoformat(), "column": c.column, "old": c.old, "new": c.new}
                          for c in self.conflicts],
        }


class CandleStore:
    """Parquet files of candles under ``root``, one per (venue, symbol, timeframe).

    >>> store = CandleStore("data")                                     # doctest: +SKIP
    >>> store.write("bittrex", "ETH/BTC", "5m", frame, source="eth.csv")  # doctest: +SKIP
    >>> store.read("bittrex", "ETH/BTC", "5m", start="2018-01-11", end="2018-01-12")  # doctest: +SKIP
    """

    def __init__(self, root="data"):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"CandleStore({str(self.root)!r})"

    def path(self, venue: str, symbol: str, timeframe: str) -> Path:
        """Where the file for this key lives (whether or not it exists)."""
        timeframe_ns(timeframe)
        if self.root.exists() and not self.root.is_dir():
            raise DataError(f"{self.root}: the candle store root is a file, not a folder; "
                            "point --root, MMATS_DATA_ROOT or data_root at a folder")
        return self.root / _check_venue(venue) / f"{symbol_key(symbol)}_{timeframe}.parquet"

    # -- writing -------------------------------------------------------------------------

    def write(self, venue: str, symbol: str, timeframe: str, df: pd.DataFrame,
              source: str | None = None, *, rejected_rows: int = 0) -> AppendReport:
        """Merge ``df`` into the stored file: new bars are added, identical bars ignored,
        and a bar whose values differ replaces the stored one (listed in ``conflicts``).

        ``df`` is validated first; any bad row raises
        :class:`~mmats.errors.CandleValidationError` and nothing is written.
        ``rejected_rows`` is how many rows of this batch were refused before it (by
        ``import_data.py --reject-bad`` or a fetch); the file's metadata keeps the running
        total, which :func:`~mmats.data.quality.data_quality` reports. A batch that adds no
        bar but rejected some still updates that total (when the file exists).
        """
        if rejected_rows < 0:
            raise ConfigError(f"rejected_rows must be >= 0, got {rejected_rows}")
        path = self.path(venue, symbol, timeframe)
        step_ns = timeframe_ns(timeframe)
        label = source or f"{venue}:{symbol}:{timeframe}"
        path.parent.mkdir(parents=True, exist_ok=True)
        with _exclusive_lock(path):
            _remove_stale_temp_files(path)
            old_ts, old_values = _read_existing(path)
            phase = grid_phase(old_ts, step_ns) if old_ts.size else None
            new, _ = validate_candles(df, label, timeframe, strict=True, phase_ns=phase)
            new_ts = new["ts"].to_numpy(dtype="M8[ns]").view(np.int64)
            new_values = {c: new[c].to_numpy(dtype=np.float64) for c in VALUE_COLUMNS}
            merged_ts, merged_values, conflicts = _merge(old_ts, old_values, new_ts, new_values)
            name = str(symbol)
            if name == symbol_key(name) and old_ts.size:
                # Written as 'ETH_BTC' into a file that knows it as 'ETH/BTC': keep the latter.
                name = stored_metadata(path).get("symbol") or name
            report = AppendReport(path=path, key=(venue, name, timeframe),
                                  rows_before=int(old_ts.size),
                                  rows_added=int(merged_ts.size - old_ts.size),
                                  rows_after=int(merged_ts.size), conflicts=conflicts,
                                  source=source)
            if report.rows_added == 0 and not conflicts and not (rejected_rows and old_ts.size):
                report.written = False
                return report
            before = stored_metadata(path).get("rejected_rows", 0) if old_ts.size else 0
            metadata = {"venue": venue, "symbol": name, "timeframe": timeframe,
                        "source": source, "schema": list(COLUMNS),
                        "rejected_rows": int(before) + int(rejected_rows)}
            _atomic_write(_to_table(merged_ts, merged_values, metadata), path)
        return report

    # -- reading -------------------------------------------------------------------------

    def read(self, venue: str, symbol: str, timeframe: str, start=None, end=None) -> pd.DataFrame:
        """Bars with ``start <= ts < end`` (either bound optional), sorted by ``ts``.

        ``df.attrs`` holds venue, symbol, timeframe, calendar and source (the file path).
        """
        path = self._existing_path(venue, symbol, timeframe)
        arrays = self._query(path, start, end)
        frame = candles_from_arrays(arrays["ts"], arrays)
        stored_symbol = stored_metadata(path).get("symbol") or str(symbol)
        calendar = calendar_for_venue(venue)
        if calendar is None:
            calendar = infer_calendar(arrays["ts"], timeframe) if arrays["ts"].size else "24/7"
        frame.attrs = {"venue": venue, "symbol": stored_symbol, "timeframe": timeframe,
                       "calendar": calendar, "source": str(path)}
        return frame

    def read_arrays(self, venue: str, symbol: str, timeframe: str, start=None,
                    end=None) -> dict[str, np.ndarray]:
        """Like :meth:`read` but as arrays: ``ts`` int64 nanoseconds, the rest float64."""
        return self._query(self._existing_path(venue, symbol, timeframe), start, end)

    def keys(self) -> list[tuple[str, str, str]]:
        """Every stored ``(venue, symbol, timeframe)``; the symbol as originally written."""
        found = []
        if not self.root.is_dir():
            return found
        for venue_dir in sorted(p for p in self.root.iterdir() if p.is_dir()):
            if venue_dir.name.startswith("."):
                continue
            for file in sorted(venue_dir.glob("*.parquet")):
                parsed = parse_store_name(file.name)
                if parsed is None:
                    continue
                key, timeframe = parsed
                symbol = stored_metadata(file).get("symbol") or typed_symbol(key)
                found.append((venue_dir.name, symbol, timeframe))
        return found

    def _existing_path(self, venue, symbol, timeframe) -> Path:
        path = self.path(venue, symbol, timeframe)
        if path.is_file():
            return path
        venue_dir = self.root / str(venue)
        here = [f"{s}:{t}" for v, s, t in self.keys() if v == venue]
        if here:
            have = f"the store has for venue {venue!r}: {', '.join(here)}"
        else:
            venues = sorted({v for v, _, _ in self.keys()})
            have = (f"the store has no venue {venue!r} ({venue_dir} has no candle files); "
                    f"venues present: {', '.join(venues) if venues else 'none'}")
        raise DataError(f"no candles for {venue}:{symbol}:{timeframe}: {path} does not exist; "
                        f"{have}. Import some with `mmats import` or `mmats fetch`.")

    def _query(self, path: Path, start, end) -> dict[str, np.ndarray]:
        """The stored bars with ``start <= ts < end`` as arrays sorted by ``ts``. Only the
        row groups whose ``ts`` statistics can hold such a bar are read (a tick asks for
        the tail of a long history), then cut to the bounds exactly."""
        start_ns, end_ns = to_ns(start), to_ns(end)
        try:
            with pq.ParquetFile(path) as parquet:
                _check_columns(path, parquet.schema_arrow)
                groups = _row_groups_between(parquet, start_ns, end_ns)
                table = parquet.read_row_groups(groups, columns=list(COLUMNS),
                                                use_threads=False)
            ts = table.column("ts")
            ts = ts.cast(pa.timestamp("ns", tz=ts.type.tz)).cast(pa.int64())
            values = {c: table.column(c).cast(pa.float64()) for c in VALUE_COLUMNS}
        except (OSError, pa.ArrowException) as exc:
            raise DataError(f"{path}: could not read it as a Parquet candle file: "
                            f"{exc}") from None
        del table
        ts_ns = ts.fill_null(0).to_numpy()
        rows = _rows_between(ts_ns, ts.is_valid().to_numpy(zero_copy_only=False),
                             start_ns, end_ns)
        arrays = {"ts": _cut(ts_ns, rows)}
        for column in VALUE_COLUMNS:
            # A null (a file written behind the store's back) is NaN, never a silent 0.
            arrays[column] = _cut(values.pop(column).to_numpy(zero_copy_only=False), rows)
        return arrays


def _check_columns(path: Path, schema: pa.Schema) -> None:
    """A candle file has the six columns and a timestamp ``ts``; say which is not so."""
    missing = [column for column in COLUMNS if column not in schema.names]
    if missing:
        raise DataError(f"{path}: not a candle file: no column {', '.join(missing)} "
                        f"(a candle file has {', '.join(COLUMNS)})")
    ts_type = schema.field("ts").type
    if not pa.types.is_timestamp(ts_type):
        raise DataError(f"{path}: not a candle file: column ts is {ts_type}, not a timestamp")


_NS_PER_UNIT = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}


def _row_groups_between(parquet: pq.ParquetFile, start_ns, end_ns) -> list[int]:
    """The row groups that may hold a bar with ``start_ns <= ts < end_ns``: those whose
    ``ts`` minimum and maximum say so, and every group whose statistics cannot tell."""
    metadata = parquet.metadata
    every = list(range(metadata.num_row_groups))
    if (start_ns is None and end_ns is None) or not every:
        return every
    scale = _NS_PER_UNIT[parquet.schema_arrow.field("ts").type.unit]
    column = [metadata.row_group(0).column(j).path_in_schema
              for j in range(metadata.num_columns)].index("ts")
    groups = []
    for index in every:
        chunk = metadata.row_group(index).column(column)
        stats = chunk.statistics
        if (chunk.physical_type != "INT64" or stats is None or not stats.has_min_max
                or stats.min_raw is None):
            groups.append(index)  # an INT96 time or no statistics: read it to know
        elif ((end_ns is None or stats.min_raw * scale < end_ns)
              and (start_ns is None or stats.max_raw * scale >= start_ns)):
            groups.append(index)
    return groups


def _rows_between(ts_ns: np.ndarray, known: np.ndarray, start_ns, end_ns):
    """Where the bars with ``start_ns <= ts < end_ns`` are, in ``ts`` order: a slice when
    the file is sorted (as the store writes it), else positions, a bar without a time
    (kept only when unbounded) last, as SQL's ``ORDER BY ts`` puts NULLs."""
    if known.all() and (ts_ns.size < 2 or bool(np.all(ts_ns[1:] >= ts_ns[:-1]))):
        first = 0 if start_ns is None else int(np.searchsorted(ts_ns, start_ns, "left"))
        last = ts_ns.size if end_ns is None else int(np.searchsorted(ts_ns, end_ns, "left"))
        return slice(first, max(first, last))
    keep = np.ones(ts_ns.size, dtype=bool)
    if start_ns is not None:
        keep &= known & (ts_ns >= start_ns)
    if end_ns is not None:
        keep &= known & (ts_ns < end_ns)
    rows = np.flatnonzero(keep)
    return rows[np.lexsort((ts_ns[rows], ~known[rows]))]


def _cut(values: np.ndarray, rows) -> np.ndarray:
    """``values[rows]`` as an array of its own (indexing by positions copies already): a
    tick keeps its few bars, not a view of the whole row groups they were read from."""
    if not isinstance(rows, slice):
        return values[rows]
    part = values[rows]
    return np.ascontiguousarray(part if part.size == values.size else part.copy())


def parse_store_name(name: str) -> tuple[str, str] | None:
    """``'ETH_BTC_5m.parquet'`` -> ``('ETH_BTC', '5m')``; None for other names."""
    if name.startswith(".") or not name.endswith(".parquet"):
        return None
    key, _, timeframe = name[: -len(".parquet")].rpartition("_")
    if not key:
        return None
    try:
        timeframe_ns(timeframe)
    except ConfigError:
        return None
    return key, timeframe


def stored_metadata(path: Path) -> dict:
    """The MMATS metadata a stored Parquet file carries (its symbol as typed, rows rejected
    on import, ...), or ``{}`` when it has none or cannot be read."""
    try:
        metadata = pq.read_schema(path).metadata or {}
        return json.loads(metadata.get(METADATA_KEY, b"{}"))
    except (OSError, ValueError, pa.ArrowException):
        return {}


def _read_existing(path: Path):
    if not path.exists():
        return np.empty(0, dtype=np.int64), {c: np.empty(0) for c in VALUE_COLUMNS}
    try:
        table = pq.read_table(path, columns=list(COLUMNS))
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"{path}: existing file is unreadable ({exc}); not overwriting it. "
                        "Move it aside and re-import.") from None
    ts = table.column("ts").cast(pa.timestamp("ns", tz="UTC")).cast(pa.int64())
    ts_ns = ts.to_numpy()
    values = {c: table.column(c).to_numpy().astype(np.float64, copy=False) for c in VALUE_COLUMNS}
    return ts_ns, values


def _merge(old_ts, old_values, new_ts, new_values):
    """Union by ts, the new row winning; returns (ts, values, conflicts) sorted by ts."""
    common, old_at, new_at = np.intersect1d(old_ts, new_ts, assume_unique=True,
                                            return_indices=True)
    conflicts = []
    if common.size:
        for column in VALUE_COLUMNS:
            before, after = old_values[column][old_at], new_values[column][new_at]
            for i in np.flatnonzero(before != after):
                conflicts.append(Conflict(pd.Timestamp(int(common[i]), tz="UTC"), column,
                                          float(before[i]), float(after[i])))
        conflicts.sort(key=lambda c: (c.ts, COLUMNS.index(c.column)))
    keep_old = np.ones(old_ts.size, dtype=bool)
    keep_old[old_at] = False
    ts = np.concatenate([old_ts[keep_old], new_ts])
    order = np.argsort(ts, kind="stable")
    values = {c: np.concatenate([old_values[c][keep_old], new_values[c]])[order]
              for c in VALUE_COLUMNS}
    return ts[order], values, conflicts


def _to_table(ts_ns, values, metadata) -> pa.Table:
    arrays = [pa.array(ts_ns, type=pa.int64()).cast(pa.timestamp("ns", tz="UTC"))]
    arrays += [pa.array(values[c], type=pa.float64()) for c in VALUE_COLUMNS]
    table = pa.Table.from_arrays(arrays, names=list(COLUMNS))
    return table.replace_schema_metadata({METADATA_KEY: json.dumps(metadata).encode()})


def _temp_prefix(path: Path) -> str:
    return f".{path.name}."


def _atomic_write(table: pa.Table, path: Path) -> None:
    """Write to a temp file beside ``path``, fsync it, rename over ``path``, fsync the dir.

    Row groups of :data:`ROW_GROUP_BARS` rows, each with its ``ts`` minimum and maximum,
    let a read of the newest bars (every tick's) skip the rest of a long history."""
    write_durably(path, lambda handle: pq.write_table(table, handle, compression="zstd",
                                                      row_group_size=ROW_GROUP_BARS),
                  prefix=_temp_prefix(path))


def _remove_stale_temp_files(path: Path) -> None:
    # Called under the lock: any temp file for this key was left by a writer that died.
    for stale in path.parent.glob(f"{_temp_prefix(path)}*.tmp"):
        with contextlib.suppress(OSError):
            stale.unlink()


@contextlib.contextmanager
def _exclusive_lock(path: Path):
    """Hold an exclusive lock on a sidecar ``.{name}.lock`` (the data file itself is replaced
    by rename, so it cannot carry the lock)."""
    if fcntl is None:  # pragma: no cover
        yield
        return
    lock_path = path.parent / f".{path.name}.lock"
    with open(lock_path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
