"""A data feed that serves stored history bar by bar on a simulated clock."""

from __future__ import annotations

import numpy as np
import pandas as pd

from mmats.data.calendar import timeframe_ns
from mmats.data.schema import frame_bad_bars, served_bars
from mmats.errors import DataError


class ReplayFeed:
    """Serve candles as if they were arriving live.

    ``candles`` maps ``symbol`` to a DataFrame in the candle schema. A bar is served only
    once it has closed (open time + timeframe <= the clock), exactly like a live feed
    after dropping the bar still forming. A bad bar (NaN, inf, a price <= 0...) is never
    served: asking for a range holding one raises :class:`~mmats.errors.BadBarError`
    naming the symbol and the bar's time.

    >>> feed = ReplayFeed({"ETH/BTC": frame}, "5m")          # doctest: +SKIP
    >>> feed.closed_bars("ETH/BTC", "5m", since_ns=None, until_ns=now)  # doctest: +SKIP
    """

    def __init__(self, candles: dict[str, pd.DataFrame], timeframe: str):
        self.timeframe = timeframe
        self.step_ns = timeframe_ns(timeframe)
        self._frames = {}
        self._ts = {}
        self._bad = {}
        for symbol, frame in candles.items():
            frame = frame.reset_index(drop=True)
            self._frames[symbol] = frame
            self._ts[symbol] = pd.to_datetime(frame["ts"], utc=True).dt.as_unit("ns").astype(
                "int64").to_numpy()
            self._bad[symbol] = frame_bad_bars(frame)

    def close_times(self, symbol: str) -> np.ndarray:
        """When each bar of ``symbol`` closes: the clock times a cron runner would tick at."""
        return self._series(symbol) + self.step_ns

    def closed_bars(self, symbol, timeframe, *, since_ns, until_ns) -> pd.DataFrame:
        self._check(timeframe)
        ts = self._series(symbol)
        first = 0 if since_ns is None else int(np.searchsorted(ts, since_ns, side="right"))
        last = int(np.searchsorted(ts + self.step_ns, until_ns, side="right"))
        return self._served(symbol, first, last)

    def history(self, symbol, timeframe, *, end_ns, bars) -> pd.DataFrame:
        self._check(timeframe)
        ts = self._series(symbol)
        stop = int(np.searchsorted(ts, end_ns, side="right"))
        return self._served(symbol, max(0, stop - bars), stop)

    def _served(self, symbol, first, last) -> pd.DataFrame:
        return served_bars(self._frames[symbol], first, last, symbol, self.timeframe,
                           "replay feed", self._bad[symbol])

    def _series(self, symbol):
        if symbol not in self._ts:
            raise DataError(f"replay feed has no candles for {symbol!r}; it has "
                            f"{', '.join(self._ts)}")
        return self._ts[symbol]

    def _check(self, timeframe):
        if timeframe != self.timeframe:
            raise DataError(f"replay feed serves {self.timeframe} bars, not {timeframe}")
