"""Fetch candles from a venue into the candle store: paged, resumable and idempotent.

:func:`fetch_into_store` asks ``source.fetch_candles(symbol, timeframe, since_ms, limit)``
for pages of bars, oldest first, and writes each page to the
:class:`~mmats.data.store.CandleStore` as soon as it arrives, so an interruption loses at
most one page. A re-run starts after the last stored bar; re-fetching bars already stored
changes nothing. The bar still forming (its close time is after now) is never stored:
a live run must not see a bar the backtest never saw.

``source`` is any adapter with that one method (:class:`~mmats.brokers.ccxt_broker.CcxtBroker`,
the OANDA adapter); it returns the first ``limit`` bars opening at or after ``since_ms`` in
the candle schema, and may include the bar still forming.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from mmats.data.calendar import calendar_for_venue, infer_calendar, timeframe_ns
from mmats.data.quality import GapEvent, quality_report
from mmats.data.schema import (
    COLUMNS,
    MAX_LISTED_REJECTS,
    VALUE_COLUMNS,
    Reject,
    frame_bad_bars,
)
from mmats.data.store import CandleStore, to_ns
from mmats.errors import CandleValidationError, ConfigError, DataError

_NS_PER_MS = 1_000_000
PAGE_BARS = 1000


@dataclass
class FetchReport:
    """What :func:`fetch_into_store` did: pages asked for, bars stored, gaps left."""

    venue: str
    symbol: str
    timeframe: str
    path: Path
    since: pd.Timestamp
    until: pd.Timestamp               # exclusive: the end asked for, or now
    pages: int = 0                    # requests made
    bars_received: int = 0            # complete bars in range that the venue sent
    bars_added: int = 0               # of which new to the store
    forming_dropped: int = 0          # bars still forming, not stored
    rows_stored: int = 0              # bars in the store in [since, until) afterwards
    first_ts: pd.Timestamp | None = None
    last_ts: pd.Timestamp | None = None
    calendar: str | None = None
    missing_bars: int = 0
    gaps: list[GapEvent] = field(default_factory=list)

    def __str__(self) -> str:
        text = (f"{self.venue}:{self.symbol}:{self.timeframe} -> {self.path}: "
                f"{self.pages} page(s), {self.bars_received} bar(s) received, "
                f"+{self.bars_added} new; {self.rows_stored} stored in "
                f"[{self.since}, {self.until})")
        if self.first_ts is not None:
            text += f", {self.first_ts} .. {self.last_ts}"
        if self.forming_dropped:
            text += f"; {self.forming_dropped} bar still forming not stored"
        if not self.gaps:
            return text + f"\n  gaps: none ({self.calendar} calendar)"
        text += (f"\n  gaps: {len(self.gaps)}, {self.missing_bars} missing bar(s) "
                 f"({self.calendar} calendar):")
        for gap in self.gaps:
            text += (f"\n    {gap.start} -> {gap.end}: {gap.missing_bars} missing bar(s)"
                     + ("" if gap.kind == "other" else f" ({gap.kind})"))
        return text

    def to_dict(self) -> dict:
        """JSON-safe form."""
        return {
            "venue": self.venue, "symbol": self.symbol, "timeframe": self.timeframe,
            "path": str(self.path), "since": self.since.isoformat(),
            "until": self.until.isoformat(), "pages": self.pages,
            "bars_received": self.bars_received, "bars_added": self.bars_added,
            "forming_dropped": self.forming_dropped, "rows_stored": self.rows_stored,
            "first_ts": _iso(self.first_ts), "last_ts": _iso(self.last_ts),
            "calendar": self.calendar, "missing_bars": self.missing_bars,
            "gaps": [{"start": gap.start.isoformat(), "end": gap.end.isoformat(),
                      "missing_bars": gap.missing_bars, "kind": gap.kind}
                     for gap in self.gaps],
        }


def fetch_into_store(source, store: CandleStore, venue: str, symbol: str, timeframe: str, *,
                     since, until=None, now_ms: int | None = None, progress: bool = False,
                     page_bars: int = PAGE_BARS, calendar: str | None = None,
                     flush_s: float | None = None, backfill: bool = True,
                     summarise: bool = True) -> FetchReport:
    """Fetch the closed bars of ``symbol`` opening in ``[since, until)`` into ``store``.

    Bars before the first stored one are fetched (back-fill; ``backfill=False`` skips
    them), then bars after the last stored one; bars between them are assumed stored and are not asked for again, so a gap
    inside stored data is reported, not re-fetched. ``until`` defaults to now
    (``now_ms``, default the wall clock); a bar is stored only once its close time
    (open + timeframe) is at or before now. ``calendar`` (default: the venue's, else
    inferred) decides which missing bars count as gaps. ``since`` and ``until`` are
    anything :func:`~mmats.data.store.to_ns` reads: a date string, datetime, Timestamp or
    int nanoseconds.

    ``summarise=False`` skips the gap report (the runner's per-tick sync).

    Each page is written as it arrives. Every write rewrites the store's file, so for long
    histories ``flush_s`` gathers pages and writes them together once ``flush_s`` seconds
    have passed since the last write; pages gathered when an error or Ctrl-C stops the fetch
    are still written, so only a hard kill loses them (at most ``flush_s`` of fetching).

    >>> report = fetch_into_store(CcxtBroker("binance"), CandleStore("data"), "binance",
    ...                           "BTC/USDT", "1h", since="2024-01-01")   # doctest: +SKIP
    >>> report.bars_added, report.gaps                                     # doctest: +SKIP
    (8784, [])
    """
    step_ms = timeframe_ns(timeframe) // _NS_PER_MS
    if step_ms == 0:
        raise ConfigError(f"timeframe {timeframe!r}: bars shorter than 1 ms cannot be fetched")
    if page_bars < 1:
        raise ConfigError(f"page_bars must be at least 1, got {page_bars}")
    now_ms = int(time.time() * 1000) if now_ms is None else int(now_ms)
    start_ms = _ceil(_to_ms(since, "since"), step_ms)
    end_ms = now_ms
    if until is not None:
        until_ms = _to_ms(until, "until")
        if until_ms <= start_ms:
            raise ConfigError(f"{venue}:{symbol}:{timeframe}: until ({_stamp(until_ms)}) must "
                              f"be after since ({_stamp(start_ms)})")
        end_ms = min(until_ms, now_ms)
    path = store.path(venue, symbol, timeframe)
    report = FetchReport(venue, symbol, timeframe, path, _stamp(start_ms), _stamp(end_ms))

    first_ms, last_ms = _stored_bounds(store, venue, symbol, timeframe)
    if first_ms is None:
        ranges = [(start_ms, end_ms)]
    else:  # back-fill before the stored bars (unless told not to), then continue after
        ranges = [(start_ms, min(first_ms, end_ms))] if backfill else []
        ranges.append((max(start_ms, last_ms + step_ms), end_ms))
    # A bar opening at t can be stored once t + step <= now.
    ranges = [(lo, min(hi, now_ms - step_ms + 1)) for lo, hi in ranges]
    ranges = [(lo, hi) for lo, hi in ranges if lo < hi]

    bar = _progress_bar(progress, sum(-(-(hi - lo) // step_ms) for lo, hi in ranges),
                        f"{venue} {symbol} {timeframe}")
    writer = _Writer(store, report, flush_s)
    try:
        for lo, hi in ranges:
            _fetch_range(source, writer, report, lo, hi, now_ms, step_ms, page_bars, bar)
    except CandleValidationError as error:  # the venue's bad bars: counted in the store
        writer.rejected_rows += len(error.rejects)
        raise
    finally:
        writer.flush()  # pages that arrived are kept even when the fetch stops early
        if bar is not None:
            bar.close()
    if summarise:  # the runner's per-tick sync skips the gap report
        _summarise(store, report, start_ms, end_ms, calendar)
    return report


def _fetch_range(source, writer, report, lo, hi, now_ms, step_ms, page_bars, bar) -> None:
    """Pages of closed bars opening in ``[lo, hi)``, handed to ``writer`` as they arrive."""
    cursor = lo
    while cursor < hi:
        page = source.fetch_candles(report.symbol, report.timeframe, cursor, page_bars)
        report.pages += 1
        open_ms = _open_ms(page)
        ahead = open_ms >= cursor
        if not ahead.any():
            break  # the venue has nothing more
        forming = ahead & (open_ms + step_ms > now_ms)
        keep = ahead & (open_ms < hi) & ~forming
        report.forming_dropped += int(np.count_nonzero(forming))
        if keep.any():
            writer.add(_checked(page.loc[keep], report))
        next_cursor = int(open_ms[ahead].max()) + step_ms
        if bar is not None:
            bar.update(-(-(min(next_cursor, hi) - cursor) // step_ms))
        cursor = next_cursor


class _Writer:
    """Writes pages to the store: each at once, or gathered for ``flush_s`` seconds."""

    def __init__(self, store: CandleStore, report: FetchReport, flush_s: float | None):
        if flush_s is not None and flush_s < 0:
            raise ConfigError(f"flush_s must be >= 0 seconds, got {flush_s}")
        self.store, self.report, self.flush_s = store, report, flush_s
        self.pending: list[pd.DataFrame] = []
        self.rejected_rows = 0  # bad bars refused since the last write
        self.last_write = time.monotonic()

    def add(self, rows: pd.DataFrame) -> None:
        self.pending.append(rows)
        self.report.bars_received += len(rows)
        if self.flush_s is None or time.monotonic() - self.last_write >= self.flush_s:
            self.flush()

    def flush(self) -> None:
        if not self.pending and not self.rejected_rows:
            return
        frames, self.pending = self.pending, []  # a failed write is not retried
        rejected_rows, self.rejected_rows = self.rejected_rows, 0
        report = self.report
        rows = (pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
                if frames else pd.DataFrame({c: [] for c in COLUMNS}))
        written = self.store.write(report.venue, report.symbol, report.timeframe, rows,
                                   source=f"{report.venue} {report.symbol} {report.timeframe}",
                                   rejected_rows=rejected_rows)
        report.bars_added += written.rows_added
        self.last_write = time.monotonic()


def _summarise(store, report, start_ms, end_ms, calendar) -> None:
    """Fill the stored-range figures and the gaps between stored bars."""
    if not report.path.is_file():
        report.calendar = calendar or calendar_for_venue(report.venue)
        return
    frame = store.read(report.venue, report.symbol, report.timeframe,
                       start=_stamp(start_ms), end=_stamp(end_ms))
    report.rows_stored = len(frame)
    if frame.empty:
        report.calendar = calendar or calendar_for_venue(report.venue)
        return
    ts_ns = frame["ts"].to_numpy(dtype="M8[ns]").view(np.int64)
    report.first_ts, report.last_ts = frame["ts"].iloc[0], frame["ts"].iloc[-1]
    calendar = (calendar or calendar_for_venue(report.venue)
                or infer_calendar(ts_ns, report.timeframe))
    quality = quality_report(frame, report.timeframe, calendar, top_gaps=len(frame))
    report.calendar = quality.calendar
    report.missing_bars = quality.missing_bars
    report.gaps = sorted((g for g in quality.largest_gaps if g.missing_bars > 0),
                         key=lambda gap: gap.start)


def _checked(rows: pd.DataFrame, report: FetchReport) -> pd.DataFrame:
    """``rows`` unchanged, or :class:`CandleValidationError` naming the venue, the symbol,
    the timeframe and the open time of every bar with values no trade may use (NaN, inf,
    a price <= 0, a negative volume...): a venue's bad bar is not stored, and not dropped
    silently either."""
    if any(column not in rows.columns for column in VALUE_COLUMNS):
        return rows  # the store's validation names the missing columns
    bad = frame_bad_bars(rows)
    if not bad:
        return rows
    label = f"{report.venue}:{report.symbol}:{report.timeframe}"
    opens = pd.to_datetime(rows["ts"], utc=True).reset_index(drop=True)
    rejects = [Reject(label, i + 1, f"bar opening {opens.iloc[i]}: {reason}")
               for i, reason in bad.items()]
    lines = [f"{label}: the venue sent {len(rejects)} bad bar(s) in a page of {len(rows)}; "
             "that page was not stored (pages before it were)."]
    lines += [f"  {reject.reason}" for reject in rejects[:MAX_LISTED_REJECTS]]
    if len(rejects) > MAX_LISTED_REJECTS:
        lines.append(f"  ... and {len(rejects) - MAX_LISTED_REJECTS} more")
    raise CandleValidationError("\n".join(lines), rejects)


def _open_ms(page: pd.DataFrame) -> np.ndarray:
    if "ts" not in page.columns:
        raise DataError("fetch_candles returned a frame without a 'ts' column; expected the "
                        "candle schema (ts, open, high, low, close, volume)")
    if page.empty:
        return np.empty(0, dtype=np.int64)
    ts = pd.to_datetime(page["ts"], utc=True)
    return ts.to_numpy(dtype="M8[ns]").view(np.int64) // _NS_PER_MS


def _stored_bounds(store, venue, symbol, timeframe) -> tuple[int | None, int | None]:
    if not store.path(venue, symbol, timeframe).is_file():
        return None, None
    ts = store.read_arrays(venue, symbol, timeframe)["ts"]
    if ts.size == 0:
        return None, None
    return int(ts[0]) // _NS_PER_MS, int(ts[-1]) // _NS_PER_MS


def _to_ms(when, name: str) -> int:
    ns = to_ns(when)
    if ns is None:
        raise ConfigError(f"{name} is required, e.g. '2024-01-01'")
    return ns // _NS_PER_MS


def _ceil(value_ms: int, step_ms: int) -> int:
    return -(-value_ms // step_ms) * step_ms


def _stamp(ms: int) -> pd.Timestamp:
    return pd.Timestamp(ms * _NS_PER_MS, tz="UTC")


def _progress_bar(enabled: bool, total: int, label: str):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=label, unit="bar", unit_scale=True)


def _iso(stamp) -> str | None:
    return None if stamp is None else stamp.isoformat()
