"""Bad values stop at the door: NaN, inf, prices <= 0 and negative volumes are refused by
the importers, the store, the fetcher and load(), reported by the quality check, and never
served by a data feed."""

import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mmats.brokers.replay import ReplayFeed
from mmats.brokers.store_feed import StoreFeed
from mmats.data import CandleStore, load, quality_report
from mmats.data.fetch import fetch_into_store
from mmats.data.schema import bad_bar_reason, bad_bars, validate_candles
from mmats.errors import BadBarError, CandleValidationError, DataError

HOUR_NS = 3_600_000_000_000
T0 = pd.Timestamp("2024-01-01", tz="UTC")


def candles(n=6, **changes):
    """``n`` sound hourly bars; ``changes`` maps a column to ``{row: value}``."""
    frame = pd.DataFrame({
        "ts": pd.date_range(T0, periods=n, freq="1h"),
        "open": np.full(n, 10.0), "high": np.full(n, 11.0), "low": np.full(n, 9.0),
        "close": np.full(n, 10.5), "volume": np.full(n, 100.0)})
    for column, rows in changes.items():
        for row, value in rows.items():
            frame.loc[row, column] = value
    return frame


@pytest.mark.parametrize("column, value, reason", [
    ("high", math.inf, "infinite value (high=inf)"),
    ("close", -math.inf, "close=-inf"),
    ("volume", math.inf, "infinite value (volume=inf)"),
    ("volume", math.nan, "NaN in volume"),
    ("volume", -1.0, "negative volume (-1)"),
    ("open", 0.0, "non-positive price (open=0)"),
    ("low", -2.0, "non-positive price (low=-2)"),
])
def test_validation_names_the_row_column_and_value(column, value, reason):
    with pytest.raises(CandleValidationError) as info:
        validate_candles(candles(**{column: {3: value}}), source="bars.csv", timeframe="1h")
    message = str(info.value)
    assert "bars.csv" in message and "row 4 (line 5)" in message and reason in message
    assert [(r.source, r.row) for r in info.value.rejects] == [("bars.csv", 4)]


def test_bad_bar_reason_is_the_same_rule_for_one_bar():
    assert bad_bar_reason(10.0, 11.0, 9.0, 10.5, 100.0) is None
    assert bad_bar_reason(10.0, math.inf, 9.0, 10.5, 100.0) == "infinite value (high=inf)"
    assert bad_bar_reason(10.0, 11.0, 9.0, 10.5, math.nan) == "NaN in volume"
    assert bad_bar_reason(10.0, 11.0, -9.0, 10.5, 1.0) == "non-positive price (low=-9)"
    assert bad_bar_reason(10.0, 11.0, 9.0, 10.5, "lots") == "volume is not a number: 'lots'"
    assert bad_bars({c: candles()[c].to_numpy() for c in candles().columns[1:]}) == {}


@pytest.mark.parametrize("column, value", [("open", 0.0), ("low", -1.0), ("volume", math.nan),
                                           ("volume", math.inf), ("high", math.inf)])
def test_the_store_never_writes_a_bad_value(tmp_path, column, value):
    store = CandleStore(tmp_path)
    store.write("v", "A/B", "1h", candles())
    path = store.path("v", "A/B", "1h")
    before = path.read_bytes()
    later = candles(**{column: {2: value}})
    later["ts"] += pd.Timedelta(hours=6)
    with pytest.raises(CandleValidationError, match="row 3"):
        store.write("v", "A/B", "1h", later, source="later.csv")
    assert path.read_bytes() == before
    with pytest.raises(CandleValidationError):
        store.write("v", "C/D", "1h", candles(**{column: {0: value}}))
    assert not store.path("v", "C/D", "1h").exists()


def write_unchecked(path, frame):
    """A Parquet candle file written behind the store's back (an old or hand-made file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)


def test_load_and_the_quality_report_refuse_an_infinite_value(tmp_path):
    csv = tmp_path / "bars.csv"
    candles(high={4: math.inf}).to_csv(csv, index=False)
    with pytest.raises(CandleValidationError, match=r"row 5 \(line 6\): infinite value"):
        load(csv)
    report = quality_report(pd.read_csv(csv), timeframe="1h")
    assert not report.ok and report.infinite_values == 1
    assert "1 rows with an infinite OHLCV value (rows 5)" in report.problems


class PagedSource:
    """A venue serving ``frame`` through ``fetch_candles``, one page at a time."""

    def __init__(self, frame):
        self.frame = frame

    def fetch_candles(self, symbol, timeframe, since_ms, limit=1000):
        open_ms = self.frame["ts"].dt.as_unit("ms").astype("int64")
        return self.frame[open_ms >= since_ms].head(limit).reset_index(drop=True)


def test_a_fetched_bad_bar_is_refused_naming_the_venue_symbol_and_bar(tmp_path):
    store = CandleStore(tmp_path)
    frame = candles(n=8, high={5: math.inf})
    source = PagedSource(frame)
    now_ms = int((T0 + pd.Timedelta(hours=10)).value // 1_000_000)
    with pytest.raises(CandleValidationError) as info:
        fetch_into_store(source, store, "binance", "BTC/USDT", "1h", since=T0, now_ms=now_ms,
                         page_bars=4)
    message = str(info.value)
    assert "binance:BTC/USDT:1h" in message
    assert "bar opening 2024-01-01 05:00:00+00:00: infinite value (high=inf)" in message
    stored = store.read("binance", "BTC/USDT", "1h")  # the good page before it is kept
    assert len(stored) == 4 and np.isfinite(stored[["open", "high", "low", "close"]]).all().all()


def test_feeds_never_serve_a_bad_stored_bar(tmp_path):
    store = CandleStore(tmp_path)
    bad = candles(n=8, volume={6: math.nan})
    write_unchecked(store.path("v", "A_B", "1h"), bad)
    until = int((T0 + pd.Timedelta(hours=8)).value)
    bad_ns = int((T0 + pd.Timedelta(hours=6)).value)
    replay = ReplayFeed({"A/B": bad}, "1h")
    for feed in (StoreFeed(tmp_path, "v"), replay):
        symbol = "A/B" if feed is replay else "A_B"
        early = feed.closed_bars(symbol, "1h", since_ns=None, until_ns=until - 2 * HOUR_NS)
        assert len(early) == 6  # bars before the bad one are served
        with pytest.raises(BadBarError) as info:
            feed.closed_bars(symbol, "1h", since_ns=None, until_ns=until)
        error = info.value
        assert isinstance(error, DataError)
        assert (error.symbol, error.ts_ns, error.reason) == (symbol, bad_ns, "NaN in volume")
        assert f"{symbol} 1h bar opening 2024-01-01 06:00:00+00:00 is bad" in str(error)
        with pytest.raises(BadBarError):
            feed.history(symbol, "1h", end_ns=bad_ns + HOUR_NS, bars=3)
        assert len(feed.closed_bars(symbol, "1h", since_ns=bad_ns, until_ns=until)) == 1
