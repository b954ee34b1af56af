"""A data feed over the candle store: what a cron runner reads after the fetcher (or an
import) has appended the latest closed bars."""

from __future__ import annotations

import pandas as pd

from mmats.data.calendar import timeframe_ns
from mmats.data.store import CandleStore


class StoreFeed:
    """Closed bars of ``venue`` from the Parquet store under ``root``."""

    def __init__(self, root, venue: str):
        self.store = CandleStore(root)
        self.venue = venue

    def closed_bars(self, symbol, timeframe, *, since_ns, until_ns) -> pd.DataFrame:
        start = None if since_ns is None else pd.Timestamp(since_ns + 1, tz="UTC")
        frame = self.store.read(self.venue, symbol, timeframe, start=start)
        ts = pd.to_datetime(frame["ts"], utc=True).dt.as_unit("ns").astype("int64")
        return frame[(ts + timeframe_ns(timeframe)).to_numpy() <= until_ns]

    def history(self, symbol, timeframe, *, end_ns, bars) -> pd.DataFrame:
        start = pd.Timestamp(end_ns - bars * timeframe_ns(timeframe) * 8, tz="UTC")
        frame = self.store.read(self.venue, symbol, timeframe, start=start,
                                end=pd.Timestamp(end_ns + 1, tz="UTC"))
        if len(frame) < bars:  # gaps or weekends: take everything up to end_ns
            frame = self.store.read(self.venue, symbol, timeframe,
                                    end=pd.Timestamp(end_ns + 1, tz="UTC"))
        return frame.iloc[-bars:]
