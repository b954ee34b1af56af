"""The Market view's data: a traded symbol's stored candles, bucketed for a chart, and an
order-book snapshot from the market's venue where its adapter can fetch one.

Candles are read from the candle store (:class:`~mmats.data.store.CandleStore`'s Parquet
file of the market's feed) and aggregated by DuckDB, so a chart of years of minute bars
costs one scan and at most ``max_points`` rows: each bucket is a whole number of
timeframes, aligned to the epoch (a bucket keeps its bars as history grows or the window
zooms), with the first open, the highest high, the lowest low, the last close and the
summed volume of its bars — pandas' ``resample(..., origin="epoch")`` with first / max /
min / last / sum, empty buckets left out. A window of at most ``max_points`` bars is
served bar by bar.

The order book comes from the market's execution venue through its adapter's
``order_book`` (:class:`~mmats.brokers.base.MarketDepth`), opened for reading only
(:func:`mmats.brokers.connect.connect` with ``purpose="read"``: it can place nothing, and
needs no live-trading flag). The paper venue has none; a venue that cannot be reached, an
adapter without keys it needs, or one that cannot fetch a book answer
``{"available": False, "reason": ...}`` instead of an error.

Example::

    bars = candles(config, "crypto", "ETH/BTC", max_points=500)
    book = order_book(config, "crypto", "ETH/BTC", depth=5)
"""

from __future__ import annotations

import math
import os
import threading

from mmats.brokers.base import OrderBookUnavailable
from mmats.data.calendar import timeframe_ns
from mmats.data.store import CandleStore
from mmats.errors import ConfigError, DataError, MMATSError
from mmats.live.config import RunnerConfig

NS_PER_MS = 1_000_000
MAX_DEPTH = 500
PAPER_REASON = ("the paper venue (execution: paper) has no order book: its orders fill at "
                "the last stored close, and stored candles carry no book")
_COLUMNS = ("open", "high", "low", "close", "volume")
_LOCAL = threading.local()


def candles(config: RunnerConfig, market_name: str, symbol: str, *, max_points: int = 2000,
            start_ms: int | None = None, end_ms: int | None = None) -> dict:
    """The stored candles of ``symbol`` in ``start_ms <= t < end_ms`` (either bound
    optional), in at most ``max_points`` time buckets.

    Returns ``{"symbol", "market", "venue", "timeframe", "bucket_ms", "bars", "t",
    "open", "high", "low", "close", "volume"}``: ``t`` the buckets' start times in epoch
    milliseconds (a bar's open time when ``bucket_ms`` is the timeframe), one value per
    bucket in each list (a missing value is None, never NaN), ``bars`` how many stored bars
    the window holds. Raises :class:`ConfigError` for a market or symbol the configuration
    does not trade and :class:`DataError` when the store has no file of it.

    >>> candles(config, "crypto", "ETH/BTC", max_points=100)["bucket_ms"]  # doctest: +SKIP
    1800000
    """
    market = _traded(config, market_name, symbol)
    if not isinstance(max_points, int) or isinstance(max_points, bool) or max_points < 2:
        raise ConfigError(f"max_points must be a whole number >= 2, got {max_points!r}")
    if start_ms is not None and end_ms is not None and start_ms >= end_ms:
        raise ConfigError(f"the window is empty: start_ms {start_ms} is not before "
                          f"end_ms {end_ms}")
    venue, path = _stored_file(config, market, symbol)
    step_ms = timeframe_ns(market.timeframe) // NS_PER_MS
    bounds = [None if v is None else int(v) * NS_PER_MS for v in (start_ms, end_ms)]
    count, first_ms, last_ms = _query(
        path, "SELECT count(*), min(epoch_ns(ts)) // 1000000, max(epoch_ns(ts)) // 1000000 "
              "FROM read_parquet(?) {where}", bounds)[0]
    bucket_ms = step_ms
    if count <= max_points:
        rows = _query(path, "SELECT epoch_ns(ts) // 1000000, open, high, low, close, volume "
                            "FROM read_parquet(?) {where} ORDER BY ts", bounds)
    else:
        slots = (last_ms - first_ms) // step_ms + 1  # bars the span could hold (gaps too)
        bucket_ms = step_ms * math.ceil(slots / (max_points - 1))
        # floor to the bucket (DuckDB's // truncates toward zero before 1970)
        rows = _query(path, f"""
            WITH bars AS (SELECT epoch_ns(ts) // 1000000 AS t, open, high, low, close,
                                 volume FROM read_parquet(?) {{where}})
            SELECT t - ((t % {bucket_ms}) + {bucket_ms}) % {bucket_ms} AS bucket,
                   arg_min(open, t), max(high), min(low), arg_max(close, t), sum(volume)
            FROM bars GROUP BY bucket ORDER BY bucket""", bounds)
    columns = list(zip(*rows, strict=True)) if rows else [()] * 6
    result = {"symbol": symbol, "market": market.name, "venue": venue,
              "timeframe": market.timeframe, "bucket_ms": int(bucket_ms), "bars": int(count),
              "t": [int(t) for t in columns[0]]}
    for name, values in zip(_COLUMNS, columns[1:], strict=True):
        result[name] = [None if v is None or not math.isfinite(v) else float(v)
                        for v in values]
    return result


def order_book(config: RunnerConfig, market_name: str, symbol: str, *, depth: int = 10,
               brokers: dict | None = None) -> dict:
    """The top ``depth`` levels of ``symbol``'s book at the market's venue.

    ``brokers`` maps market names to adapters already open (the dashboard's, or a test's);
    otherwise the market's adapter is opened for reading and closed again. Returns
    ``{"available": True, "market", "symbol", "venue", "depth", "bids": [[price,
    quantity], ...] (best first), "asks": [...], "ts_ms"}``, or ``{"available": False,
    "market", "symbol", "venue", "reason": <a sentence>}`` for the paper venue, a venue
    that failed or an adapter that cannot fetch a book. Raises :class:`ConfigError` only
    for a market or symbol the configuration does not trade, or a bad ``depth``.

    >>> order_book(config, "crypto", "ETH/BTC")["reason"]  # doctest: +SKIP
    'the paper venue (execution: paper) has no order book: ...'
    """
    market = _traded(config, market_name, symbol)
    if not isinstance(depth, int) or isinstance(depth, bool) or not 1 <= depth <= MAX_DEPTH:
        raise ConfigError(f"depth must be a whole number from 1 to {MAX_DEPTH}, got {depth!r}")
    head = {"market": market.name, "symbol": symbol, "venue": market.execution}
    broker = (brokers or {}).get(market.name)
    opened = False
    if broker is None and market.is_paper:
        return {"available": False, **head, "reason": PAPER_REASON}
    if broker is None:
        from mmats.brokers.connect import connect

        try:
            broker = connect(config, market, purpose="read")
        except MMATSError as error:
            return {"available": False, **head, "reason": (
                f"the {market.execution} venue adapter could not be opened to read its "
                f"order book: {error}")}
        opened = True
    try:
        fetch = getattr(broker, "order_book", None)
        if fetch is None:
            return {"available": False, **head, "reason": (
                f"the {market.execution} venue adapter ({type(broker).__name__}) cannot "
                "fetch an order book")}
        book = fetch(symbol, depth)
    except OrderBookUnavailable as error:
        return {"available": False, **head, "reason": str(error)}
    except MMATSError as error:
        return {"available": False, **head, "reason": (
            f"the {market.execution} venue did not give its order book: {error}")}
    finally:
        if opened and hasattr(broker, "close"):
            broker.close()
    return {"available": True, **head, "depth": depth, "bids": book["bids"][:depth],
            "asks": book["asks"][:depth], "ts_ms": int(book["ts_ms"])}


# --- helpers ----------------------------------------------------------------------------

def _traded(config: RunnerConfig, market_name: str, symbol: str):
    """The market called ``market_name``, which must trade ``symbol``."""
    market = config.market(market_name)
    if symbol not in market.symbols:
        raise ConfigError(f"{config.source}: market {market.name!r} does not trade "
                          f"{symbol!r}; its symbols: {', '.join(market.symbols)}")
    return market


def _stored_file(config: RunnerConfig, market, symbol: str):
    """``(feed, Parquet path)`` of the market's stored candles: its primary feed's folder,
    else a backup feed's (a failover fills that one)."""
    store = CandleStore(config.data_root)
    for feed in market.feeds:
        path = store.path(feed, symbol, market.timeframe)
        if path.is_file():
            return feed, path
    store.read_arrays(market.feed, symbol, market.timeframe)  # raises, naming what is there
    raise DataError(f"no candles stored for {market.feed}:{symbol}:{market.timeframe}")


def _query(path, sql: str, bounds: list) -> list[tuple]:
    """Rows of ``sql`` over the Parquet file at ``path``; ``{where}`` becomes the window
    ``start <= ts < end`` of ``bounds`` (epoch nanoseconds, None for open), typed so DuckDB
    skips row groups (``epoch_ns`` where DuckDB lacks TIMESTAMPTZ_NS)."""
    import duckdb  # at the edge, as the store does

    connection = _connection()
    for typed in (True, False):
        clauses, params = [], [str(path)]
        for op, value in ((">=", bounds[0]), ("<", bounds[1])):
            if value is not None:
                clauses.append(f"ts {op} make_timestamp_ns(?)::TIMESTAMPTZ_NS" if typed
                               else f"epoch_ns(ts) {op} ?")
                params.append(value)
        where = "WHERE " + " AND ".join(clauses) if clauses else ""
        try:
            return connection.execute(sql.format(where=where), params).fetchall()
        except (duckdb.BinderException, duckdb.CatalogException):
            if not typed:
                raise
        except duckdb.Error as error:
            raise DataError(f"{path}: DuckDB could not read it: {error}") from None
    raise AssertionError("unreachable")  # pragma: no cover


def _connection():
    """An in-memory DuckDB connection for this thread and process (the dashboard answers
    from a thread pool; a connection is not thread-safe, nor usable after a fork)."""
    import duckdb

    owner = (os.getpid(), threading.get_ident())
    if getattr(_LOCAL, "owner", None) != owner:
        connection = duckdb.connect(":memory:")
        connection.execute("SET TimeZone = 'UTC'")
        try:  # the store replaces files in place: never serve a cached read
            connection.execute("SET enable_external_file_cache = false")
        except duckdb.Error:
            pass
        _LOCAL.connection, _LOCAL.owner = connection, owner
    return _LOCAL.connection
