"""A data feed that serves stored history bar by bar on a simulated clock, and the arrays
both stored-history feeds (this one and :class:`~mmats.brokers.store_feed.StoreFeed`)
serve a tick from.

A tick reads one or two bars and a trailing window per sleeve: slicing a DataFrame and
converting it back to numbers cost more than the kernel's step, so besides the port's
DataFrames (``closed_bars``, ``history``) these feeds serve the same bars as rows
(``closed_rows``) and the window as arrays (``history_arrays``), cut from arrays made
once per feed. A bad bar is refused the same way on both paths.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mmats.data.calendar import timeframe_ns
from mmats.data.schema import VALUE_COLUMNS, frame_bad_bars, served_bars
from mmats.errors import DataError


class StoredBars:
    """One symbol's stored bars, held as a frame and as arrays, served by position.

    ``source`` names where they come from in a bad bar's error
    (:class:`~mmats.errors.BadBarError`, raised by :func:`mmats.data.schema.served_bars`).
    """

    def __init__(self, frame: pd.DataFrame, symbol: str, timeframe: str, source: str):
        self.frame = frame.reset_index(drop=True)
        self.symbol, self.timeframe, self.source = symbol, timeframe, source
        self.ts = pd.to_datetime(self.frame["ts"], utc=True).dt.as_unit("ns").astype(
            "int64").to_numpy()
        # as frame_bad_bars reads them: a value that is not a number is NaN, and bad
        self.values = np.column_stack([pd.to_numeric(self.frame[c], errors="coerce").to_numpy(
            dtype=np.float64, na_value=np.nan) for c in VALUE_COLUMNS]) if len(self.frame) \
            else np.empty((0, len(VALUE_COLUMNS)))
        self.columns = {c: np.ascontiguousarray(self.values[:, i])
                        for i, c in enumerate(VALUE_COLUMNS)}
        self.bad = frame_bad_bars(self.frame)
        self._bad_at = np.array(sorted(self.bad), dtype=np.int64)

    def frame_range(self, first: int, last: int) -> pd.DataFrame:
        """Bars ``first`` to ``last`` (exclusive) as the port's DataFrame."""
        return served_bars(self.frame, first, last, self.symbol, self.timeframe, self.source,
                           self.bad)

    def bar_rows(self, first: int, last: int) -> list[tuple[int, tuple]]:
        """Bars ``first`` to ``last`` as ``(open time in ns, (open, high, low, close,
        volume))``, Python numbers."""
        self._check(first, last)
        return list(zip(self.ts[first:last].tolist(),
                        map(tuple, self.values[first:last].tolist()), strict=True))

    def arrays(self, first: int, last: int) -> dict[str, np.ndarray]:
        """Bars ``first`` to ``last`` as float64 OHLCV arrays (copies: a strategy may
        write into its inputs) and ``ts``, their int64 open times in ns (what a strategy's
        extra inputs are aligned by)."""
        self._check(first, last)
        arrays = {name: column[first:last].copy() for name, column in self.columns.items()}
        arrays["ts"] = self.ts[first:last].copy()
        return arrays

    def _check(self, first: int, last: int) -> None:
        """Refuse a range holding a bad bar exactly as the DataFrame path does."""
        if not self.bad:
            return
        at = int(np.searchsorted(self._bad_at, first))
        if at < len(self._bad_at) and self._bad_at[at] < last:
            self.frame_range(first, last)  # raises BadBarError naming the first bad bar


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
        self._bars = {symbol: StoredBars(frame, symbol, timeframe, "replay feed")
                      for symbol, frame in candles.items()}

    def close_times(self, symbol: str) -> np.ndarray:
        """When each bar of ``symbol`` closes: the clock times a cron runner would tick at."""
        return self._stored(symbol).ts + self.step_ns

    def closed_bars(self, symbol, timeframe, *, since_ns, until_ns) -> pd.DataFrame:
        return self._stored(symbol).frame_range(*self._closed(symbol, timeframe, since_ns,
                                                              until_ns))

    def closed_rows(self, symbol, timeframe, *, since_ns, until_ns) -> list[tuple[int, tuple]]:
        """:meth:`closed_bars` as ``(open time in ns, (open, high, low, close, volume))``."""
        return self._stored(symbol).bar_rows(*self._closed(symbol, timeframe, since_ns, until_ns))

    def history(self, symbol, timeframe, *, end_ns, bars) -> pd.DataFrame:
        return self._stored(symbol).frame_range(*self._history(symbol, timeframe, end_ns,
                                                               bars))

    def history_arrays(self, symbol, timeframe, *, end_ns, bars) -> dict[str, np.ndarray]:
        """:meth:`history` as float64 OHLCV arrays."""
        return self._stored(symbol).arrays(*self._history(symbol, timeframe, end_ns, bars))

    # ts.searchsorted, not np.searchsorted: the function's dispatch costs twice the search
    # (a tick makes three)
    def _closed(self, symbol, timeframe, since_ns, until_ns) -> tuple[int, int]:
        self._check(timeframe)
        ts = self._stored(symbol).ts
        first = 0 if since_ns is None else int(ts.searchsorted(since_ns, side="right"))
        last = int(ts.searchsorted(until_ns - self.step_ns, side="right"))
        return first, last

    def _history(self, symbol, timeframe, end_ns, bars) -> tuple[int, int]:
        self._check(timeframe)
        stop = int(self._stored(symbol).ts.searchsorted(end_ns, side="right"))
        return max(0, stop - bars), stop

    def _stored(self, symbol) -> StoredBars:
        if symbol not in self._bars:
            raise DataError(f"replay feed has no candles for {symbol!r}; it has "
                            f"{', '.join(self._bars)}")
        return self._bars[symbol]

    def _check(self, timeframe):
        if timeframe != self.timeframe:
            raise DataError(f"replay feed serves {self.timeframe} bars, not {timeframe}")
