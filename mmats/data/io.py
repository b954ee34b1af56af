"""Loading candles: from a CSV/Parquet file, or from the store by ``VENUE:SYMBOL:TIMEFRAME``.

:func:`load` is the one call research code needs::

    df = load("bittrex:ETH/BTC:5m")              # store under $MMATS_DATA_ROOT or ./data,
                                                  # else the sample shipped with MMATS
    df = load("my_candles.csv", timeframe="1h")   # any file in (roughly) the candle schema
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mmats.data.calendar import calendar_for_venue, infer_calendar, infer_timeframe
from mmats.data.schema import COLUMNS, Reject, validate_candles
from mmats.data.store import (
    CandleStore,
    parse_store_name,
    stored_metadata,
    to_ns,
    typed_symbol,
)
from mmats.errors import CandleValidationError, ConfigError, DataError

CSV_SUFFIXES = (".csv", ".csv.gz", ".txt")
PARQUET_SUFFIXES = (".parquet", ".pq")

# Lower-cased, stripped header -> schema column.
_ALIASES = {
    **{name: "ts" for name in ("ts", "timestamp", "time", "date", "datetime", "open_time",
                               "opentime", "open time", "date_time", "ts_ns")},
    **{name: "open" for name in ("open", "o")},
    **{name: "high" for name in ("high", "h")},
    **{name: "low" for name in ("low", "l")},
    **{name: "close" for name in ("close", "c")},
    **{name: "volume" for name in ("volume", "vol", "v")},
}


class Located(NamedTuple):
    """Where a source lives and what its name says about it (None where it says nothing)."""

    path: Path
    venue: str | None
    symbol: str | None
    timeframe: str | None


def default_root() -> Path:
    """The store root: ``$MMATS_DATA_ROOT``, else ``./data``."""
    return Path(os.environ.get("MMATS_DATA_ROOT") or "data")


def sample_roots() -> list[Path]:
    """Roots of the sample data: the set that ships inside the package, then a
    ``data/sample`` folder under the working directory if there is one."""
    roots = []
    for root in (Path(__file__).resolve().parent / "sample", Path.cwd() / "data" / "sample"):
        if root.is_dir() and root.resolve() not in [r.resolve() for r in roots]:
            roots.append(root)
    return roots


def parse_spec(spec: str) -> tuple[str, str, str] | None:
    """``'bittrex:ETH/BTC:5m'`` -> ``('bittrex', 'ETH/BTC', '5m')``; None if not a spec.

    The symbol may itself hold colons: ``'binance:XRP/USDT:USDT:1h'``.
    """
    text = str(spec)
    if text.count(":") < 2 or text.lower().endswith(CSV_SUFFIXES + PARQUET_SUFFIXES):
        return None
    venue, rest = text.split(":", 1)
    symbol, _, timeframe = rest.rpartition(":")
    if not venue or not symbol or not timeframe:
        return None
    return venue, symbol, timeframe


def resolve_source(source, root=None) -> Located:
    """Find the file behind a path or a ``VENUE:SYMBOL:TIMEFRAME`` spec.

    A spec is looked up in ``root`` (default :func:`default_root`), then in the bundled
    sample roots. Raises :class:`DataError` naming what was tried.
    """
    text = os.fspath(source)
    spec = None if Path(text).exists() else parse_spec(text)
    if spec is None:
        path = Path(text)
        if path.is_dir():
            raise DataError(f"{path}: is a folder, not a candle file; give a .csv or .parquet "
                            "file in it, or a VENUE:SYMBOL:TIMEFRAME spec with --root")
        if not path.is_file():
            hint = "" if path.suffix else (" (nor a VENUE:SYMBOL:TIMEFRAME spec such as "
                                           "'bittrex:ETH/BTC:5m')")
            raise DataError(f"{path}: no such file{hint}")
        return Located(path, *_layout_names(path))
    venue, symbol, timeframe = spec
    roots = [Path(root) if root is not None else default_root()] + sample_roots()
    tried, available = [], []
    for candidate in roots:
        store = CandleStore(candidate)
        path = store.path(venue, symbol, timeframe)
        if path.is_file():
            return Located(path, venue, symbol, timeframe)
        tried.append(str(path))
        available += [f"{v}:{s}:{t}" for v, s, t in store.keys() if v == venue]
    have = (f"available for venue {venue!r}: {', '.join(dict.fromkeys(available))}" if available
            else f"nothing is stored for venue {venue!r}")
    raise DataError(f"no candles for {venue}:{symbol}:{timeframe}: looked for "
                    f"{' and '.join(tried)}; {have}. Import some with `mmats import` or `mmats fetch`.")


def _layout_names(path: Path) -> tuple[str | None, str | None, str | None]:
    """venue, symbol, timeframe when ``path`` sits in the store layout, else Nones."""
    parsed = parse_store_name(path.name)
    if parsed is None or not path.parent.name:
        return None, None, None
    key, timeframe = parsed
    symbol = stored_metadata(path).get("symbol") or typed_symbol(key)
    return path.parent.name, symbol, timeframe


def read_raw_candles(path) -> pd.DataFrame:
    """Read a CSV or Parquet file and map its column names onto the schema, unvalidated.

    Column names match case-insensitively (``Date``, ``Timestamp``, ``open_time``, ``Open``,
    ``Vol``...). Columns outside the schema are dropped and listed in
    ``df.attrs["dropped_columns"]``; two columns that both mean the same thing fail.
    CSVs are read with pandas: polars read a 10M-row candle CSV no faster
    (``benchmarks/bench_import.py``), so MMATS does not depend on it.
    """
    path = Path(path)
    name = path.name.lower()
    if not name.endswith(CSV_SUFFIXES + PARQUET_SUFFIXES):
        raise DataError(f"{path}: unknown file type; candle files end in "
                        f"{', '.join(CSV_SUFFIXES + PARQUET_SUFFIXES)}")
    if path.is_dir():
        raise DataError(f"{path}: is a folder, not a candle file")
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        if name.endswith(CSV_SUFFIXES):
            frame = pd.read_csv(path, skipinitialspace=True)
        else:
            frame = pq.read_table(path).to_pandas()
            if not isinstance(frame.index, pd.RangeIndex):
                frame = frame.reset_index()
    except (OSError, EOFError, zlib.error, ValueError, pa.ArrowException,
            pd.errors.ParserError) as exc:  # EOFError: a truncated .gz
        raise DataError(f"{path}: cannot read it (damaged or truncated?): {exc}") from None
    frame, dropped = _map_columns(frame, str(path))
    if "ts" in frame.columns:
        frame["ts"] = _parse_iso_ts(frame["ts"])
    frame.attrs = {"source": str(path), "dropped_columns": dropped}
    return frame


def _parse_iso_ts(texts: pd.Series) -> pd.Series:
    """``texts`` parsed as ISO-8601 times (UTC) when every one of them is, else unchanged.

    :func:`~mmats.data.schema.parse_ts` reads a text column the same way, but first tries
    every text as an epoch number, which costs three quarters of an import (10M rows:
    ~50 s of ~100 s). A column whose first text is not a number is not all epochs, so
    ``parse_ts`` would parse it with this very call; a column with any text this call
    cannot read, or a time nanoseconds cannot hold, is returned as text, so the bad rows
    are refused by the same code with the same messages as before.
    """
    if not len(texts) or not pd.api.types.is_string_dtype(texts.dtype):
        return texts
    first = texts.iloc[0]
    if not isinstance(first, str):
        return texts
    if pd.notna(pd.to_numeric(pd.Series([first]), errors="coerce")[0]):
        return texts  # maybe all epochs: parse_ts tells
    stamps = pd.to_datetime(texts, utc=True, errors="coerce", format="ISO8601")
    if (stamps.isna().any() or stamps.min() < pd.Timestamp.min.tz_localize("UTC")
            or stamps.max() > pd.Timestamp.max.tz_localize("UTC")):
        return texts
    return stamps.dt.as_unit("ns")


def _map_columns(frame: pd.DataFrame, source: str) -> tuple[pd.DataFrame, list[str]]:
    mapping, dropped = _column_targets([str(c) for c in frame.columns], source)
    frame = frame[list(mapping)].rename(columns=mapping)
    present = [c for c in COLUMNS if c in frame.columns]
    return frame[present + [c for c in frame.columns if c not in present]], dropped


def _column_targets(names: list[str], source: str) -> tuple[dict[str, str], list[str]]:
    """Column name -> schema column for the names that mean one, and the names dropped;
    :class:`CandleValidationError` when two names mean the same column."""
    mapping, dropped, claimed = {}, [], {}
    for column in names:
        target = _ALIASES.get(column.strip().lower())
        if target is None:
            dropped.append(column)
            continue
        if target in claimed:
            reason = (f"columns {claimed[target]!r} and {column!r} both look like "
                      f"{target!r}; keep one")
            raise CandleValidationError(f"{source}: {reason}. Nothing was written.",
                                        [Reject(source, 0, reason)])
        claimed[target] = column
        mapping[column] = target
    return mapping, dropped


def read_parquet_arrays(path) -> dict[str, np.ndarray]:
    """The whole of a stored candle file as arrays (``ts`` int64 ns, the rest float64),
    sorted by ``ts``, read with pyarrow.

    For whole-series work such as resampling a large file: ~2x faster than the store's
    DuckDB read and ~25 % less memory at 10M rows. polars reads it no faster and with
    less than 1.3x less memory (``benchmarks/bench_import.py``): MMATS does not use it.
    Give ranges to :meth:`~mmats.data.store.CandleStore.read`, which skips row groups.
    """
    path = Path(path)
    try:
        table = pq.read_table(path, columns=list(COLUMNS))
        ts = table.column("ts").cast(pa.timestamp("ns")).cast(pa.int64()).to_numpy()
        arrays = {c: table.column(c).cast(pa.float64()).to_numpy() for c in COLUMNS[1:]}
    except (pa.ArrowException, OSError, KeyError, ValueError) as exc:
        raise DataError(f"{path}: cannot read it (damaged or truncated?): {exc}") from None
    del table
    if ts.size > 1 and not (ts[1:] >= ts[:-1]).all():  # written behind the store's back
        order = np.argsort(ts, kind="stable")
        ts, arrays = ts[order], {c: v[order] for c, v in arrays.items()}
    return {"ts": ts, **arrays}


def read_candle_file(path, timeframe: str | None = None,
                     strict: bool = True) -> tuple[pd.DataFrame, list[Reject]]:
    """Read a CSV or Parquet candle file and validate it: returns ``(clean_df, rejects)``.

    Timestamps may be ISO strings (naive = UTC) or epoch numbers in s/ms/us/ns. With
    ``strict=True`` a bad row raises :class:`~mmats.errors.CandleValidationError` naming
    the file, rows and reasons.

    >>> df, _ = read_candle_file("data/sample/bittrex/ETH_BTC_5m.parquet", "5m")
    >>> len(df)
    5760
    """
    raw = read_raw_candles(path)
    return validate_candles(raw, source=str(path), timeframe=timeframe, strict=strict)


def load(source, *, root=None, start=None, end=None, timeframe: str | None = None) -> pd.DataFrame:
    """Candles from a file path or a ``VENUE:SYMBOL:TIMEFRAME`` spec, validated and sorted.

    Returns a frame with a RangeIndex, the schema columns and ``df.attrs`` holding
    ``venue``, ``symbol``, ``timeframe``, ``calendar`` and ``source``. ``start``/``end``
    keep bars with ``start <= ts < end``. ``timeframe`` is the bar length of the data
    (inferred when not given); to change it, use :func:`mmats.data.resample`.

    >>> df = load("bittrex:ETH/BTC:5m", start="2018-01-11", end="2018-01-12")
    >>> len(df), df.attrs["calendar"]
    (288, '24/7')
    """
    located = resolve_source(source, root)
    if timeframe and located.timeframe and timeframe != located.timeframe:
        raise ConfigError(f"{source} holds {located.timeframe} bars, not {timeframe}; "
                          f"load it as is and call mmats.data.resample(df, {timeframe!r})")
    timeframe = timeframe or located.timeframe
    label = str(located.path)
    if located.venue is not None and parse_spec(os.fspath(source)) is not None:
        venue, symbol = located.venue, located.symbol
        raw = CandleStore(located.path.parents[1]).read(
            venue, symbol, timeframe, start=start, end=end)
    else:
        venue, symbol = located.venue, located.symbol
        raw = read_raw_candles(located.path)
    clean, _ = validate_candles(raw, label, timeframe, strict=True)
    if timeframe is None and len(clean) >= 2:
        timeframe = infer_timeframe(_ts_ns(clean))
        clean, _ = validate_candles(clean, label, timeframe, strict=True)
    start_ns, end_ns = to_ns(start), to_ns(end)
    if start_ns is not None or end_ns is not None:
        ts_ns = _ts_ns(clean)
        keep = np.ones(ts_ns.size, dtype=bool)
        if start_ns is not None:
            keep &= ts_ns >= start_ns
        if end_ns is not None:
            keep &= ts_ns < end_ns
        clean = clean.loc[keep].reset_index(drop=True)
    calendar = calendar_for_venue(venue)
    if calendar is None:
        calendar = infer_calendar(_ts_ns(clean), timeframe) if len(clean) >= 2 else "24/7"
    clean.attrs = {"venue": venue, "symbol": symbol, "timeframe": timeframe,
                   "calendar": calendar, "source": label}
    return clean


def _ts_ns(frame: pd.DataFrame) -> np.ndarray:
    return frame["ts"].to_numpy(dtype="M8[ns]").view(np.int64)
