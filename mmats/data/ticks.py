"""Ticks kept from the live streams, where the user asks (``ticks:`` of a venue).

The always-on runner's streams carry trades or quotes between bar closes. Nothing trades
on them (the strategies see closed bars), but research on fills, spreads and slippage
does, so a venue with ``ticks: trades`` or ``ticks: book_ticker`` keeps them: buffered in
memory and written every few seconds as a new Parquet part file (atomically: a part is
whole or absent) under ``<data_root>/<venue>/ticks/<SYMBOL>/<YYYY-MM-DD>/``, one folder
per UTC day, so a crash loses at most the last few seconds and DuckDB reads a day or a
month with one glob.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mmats.data.store import _check_venue, symbol_key
from mmats.files import atomic_path

TICK_COLUMNS = ("ts", "price", "size", "bid", "ask")
FLUSH_S = 5.0


class TickRecorder:
    """Buffers ticks (anything with ``symbol``, ``ts_ns``, ``price``, ``size``, ``bid``,
    ``ask``: :class:`~mmats.brokers.streams.StreamTick`) and writes them as Parquet parts.
    :meth:`add` may be called from any thread; :meth:`flush` writes what is buffered."""

    def __init__(self, root, venue: str, *, flush_s: float = FLUSH_S) -> None:
        self.root, self.venue, self.flush_s = Path(root), _check_venue(venue), flush_s
        self._lock = threading.Lock()
        self._rows: dict[str, list[tuple]] = defaultdict(list)
        self._last_flush = time.monotonic()
        self.written = 0
        self.parts = 0

    def add(self, tick) -> None:
        with self._lock:
            self._rows[tick.symbol].append((tick.ts_ns, tick.price, tick.size, tick.bid,
                                            tick.ask))

    def due(self) -> bool:
        return time.monotonic() - self._last_flush >= self.flush_s

    def flush(self) -> int:
        """Write every buffered tick; returns how many."""
        with self._lock:
            rows, self._rows = self._rows, defaultdict(list)
            self._last_flush = time.monotonic()
        count = 0
        for symbol, ticks in rows.items():
            ticks.sort(key=lambda row: row[0])
            days = defaultdict(list)
            for row in ticks:
                days[time.strftime("%Y-%m-%d", time.gmtime(row[0] // 1_000_000_000))].append(row)
            for day, day_rows in days.items():
                self._write(symbol, day, day_rows)
                count += len(day_rows)
        self.written += count
        return count

    def folder(self, symbol: str) -> Path:
        return self.root / self.venue / "ticks" / symbol_key(symbol)

    def _write(self, symbol: str, day: str, rows: list[tuple]) -> None:
        folder = self.folder(symbol) / day
        folder.mkdir(parents=True, exist_ok=True)
        columns = list(zip(*rows, strict=True))
        table = pa.table({
            "ts": pa.array(columns[0], pa.int64()).cast(pa.timestamp("ns", tz="UTC")),
            **{name: pa.array(values, pa.float64())
               for name, values in zip(TICK_COLUMNS[1:], columns[1:], strict=True)}})
        path = folder / f"{rows[0][0]}-{rows[-1][0]}-{len(rows)}.parquet"
        with atomic_path(path, prefix=".ticks.") as temp:
            pq.write_table(table, temp)
        self.parts += 1


def read_ticks(root, venue: str, symbol: str) -> pd.DataFrame:
    """Every kept tick of ``symbol`` at ``venue``, oldest first (empty if none)."""
    folder = Path(root) / _check_venue(venue) / "ticks" / symbol_key(symbol)
    parts = sorted(folder.glob("*/*.parquet"))
    if not parts:
        return pd.DataFrame({name: [] for name in TICK_COLUMNS})
    frame = pd.concat([pq.read_table(part).to_pandas() for part in parts],
                      ignore_index=True)
    return frame.sort_values("ts", kind="stable").reset_index(drop=True)
