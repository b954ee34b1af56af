"""A data feed over the candle store: what a cron runner reads after the fetcher (or an
import, or the tick's own sync) has appended the latest closed bars."""

from __future__ import annotations

import numpy as np
import pandas as pd

from mmats.data.calendar import timeframe_ns
from mmats.data.schema import frame_bad_bars, served_bars
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
        self._cache: dict[tuple[str, str], tuple] = {}  # (start_ns, frame, ts, bad bars)

    def closed_bars(self, symbol, timeframe, *, since_ns, until_ns) -> pd.DataFrame:
        step = timeframe_ns(timeframe)
        start = None if since_ns is None else since_ns - self.window_bars * step
        frame, ts = self._frame(symbol, timeframe, start)
        first = 0 if since_ns is None else int(np.searchsorted(ts, since_ns, side="right"))
        last = int(np.searchsorted(ts + step, until_ns, side="right"))
        return self._served(symbol, timeframe, first, last)

    def history(self, symbol, timeframe, *, end_ns, bars) -> pd.DataFrame:
        start = end_ns - bars * timeframe_ns(timeframe) * 8
        frame, ts = self._frame(symbol, timeframe, start)
        stop = int(np.searchsorted(ts, end_ns, side="right"))
        if stop < bars and self._cache[(symbol, timeframe)][0] is not None:
            frame, ts = self._frame(symbol, timeframe, None)  # gaps or weekends: read all
            stop = int(np.searchsorted(ts, end_ns, side="right"))
        return self._served(symbol, timeframe, max(0, stop - bars), stop)

    def _served(self, symbol, timeframe, first, last) -> pd.DataFrame:
        _, frame, _, bad = self._cache[(symbol, timeframe)]
        source = frame.attrs.get("source") or f"{self.venue} store"
        return served_bars(frame, first, last, symbol, timeframe, source, bad)

    def _frame(self, symbol, timeframe, start_ns):
        """The stored bars from ``start_ns`` (None: all), read once per covering range."""
        key = (symbol, timeframe)
        cached = self._cache.get(key)
        if cached is None or (cached[0] is not None and (start_ns is None
                                                         or start_ns < cached[0])):
            frame = self.store.read(self.venue, symbol, timeframe, start=None if start_ns
                                    is None else pd.Timestamp(start_ns, tz="UTC"))
            frame = frame.reset_index(drop=True)
            ts = pd.to_datetime(frame["ts"], utc=True).dt.as_unit("ns").astype(
                "int64").to_numpy()
            cached = self._cache[key] = (start_ns, frame, ts, frame_bad_bars(frame))
        return cached[1], cached[2]
