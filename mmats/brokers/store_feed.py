"""A data feed over the candle store: what a cron runner reads after the fetcher (or an
import, or the tick's own sync) has appended the latest closed bars."""

from __future__ import annotations

import numpy as np
import pandas as pd

from mmats.brokers.replay import StoredBars
from mmats.data.calendar import timeframe_ns
from mmats.data.store import CandleStore


class StoreFeed:
    """Closed bars of ``venue`` from the Parquet store under ``root``.

    A feed lives for one tick and the store does not change under it, so each symbol's
    file is read once, from ``window_bars`` timeframes before the first bar asked for
    (enough for the strategies' trailing windows), and later requests inside that range
    are served from memory. A bad stored bar (NaN, inf, a price <= 0...) in a range asked
    for raises :class:`~mmats.errors.BadBarError` naming the symbol and the bar's time.
    """

    def __init__(self, root, venue: str, *, window_bars: int = 2000):
        self.store = CandleStore(root)
        self.venue = venue
        self.window_bars = window_bars
        self._cache: dict[tuple[str, str], tuple] = {}  # (start_ns, StoredBars)

    def closed_bars(self, symbol, timeframe, *, since_ns, until_ns) -> pd.DataFrame:
        return self._closed(symbol, timeframe, since_ns, until_ns, "frame_range")

    def closed_rows(self, symbol, timeframe, *, since_ns, until_ns) -> list[tuple[int, tuple]]:
        """:meth:`closed_bars` as ``(open time in ns, (open, high, low, close, volume))``."""
        return self._closed(symbol, timeframe, since_ns, until_ns, "bar_rows")

    def history(self, symbol, timeframe, *, end_ns, bars) -> pd.DataFrame:
        return self._history(symbol, timeframe, end_ns, bars, "frame_range")

    def history_arrays(self, symbol, timeframe, *, end_ns, bars) -> dict[str, np.ndarray]:
        """:meth:`history` as float64 OHLCV arrays."""
        return self._history(symbol, timeframe, end_ns, bars, "arrays")

    def _closed(self, symbol, timeframe, since_ns, until_ns, serve: str):
        step = timeframe_ns(timeframe)
        start = None if since_ns is None else since_ns - self.window_bars * step
        stored = self._bars(symbol, timeframe, start)
        first = 0 if since_ns is None else int(np.searchsorted(stored.ts, since_ns,
                                                               side="right"))
        last = int(np.searchsorted(stored.ts, until_ns - step, side="right"))
        return getattr(stored, serve)(first, last)

    def _history(self, symbol, timeframe, end_ns, bars, serve: str):
        start = end_ns - bars * timeframe_ns(timeframe) * 8
        stored = self._bars(symbol, timeframe, start)
        stop = int(np.searchsorted(stored.ts, end_ns, side="right"))
        if stop < bars and self._cache[(symbol, timeframe)][0] is not None:
            stored = self._bars(symbol, timeframe, None)  # gaps or weekends: read all
            stop = int(np.searchsorted(stored.ts, end_ns, side="right"))
        return getattr(stored, serve)(max(0, stop - bars), stop)

    def _bars(self, symbol, timeframe, start_ns) -> StoredBars:
        """The stored bars from ``start_ns`` (None: all), read once per covering range."""
        key = (symbol, timeframe)
        cached = self._cache.get(key)
        if cached is None or (cached[0] is not None and (start_ns is None
                                                         or start_ns < cached[0])):
            frame = self.store.read(self.venue, symbol, timeframe, start=None if start_ns
                                    is None else pd.Timestamp(start_ns, tz="UTC"))
            source = frame.attrs.get("source") or f"{self.venue} store"
            cached = self._cache[key] = (start_ns, StoredBars(frame, symbol, timeframe,
                                                              source))
        return cached[1]
