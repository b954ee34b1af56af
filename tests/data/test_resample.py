"""resample: pandas reference, chained equals direct, incomplete buckets, refusals."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mmats.data import load, resample, timeframe_ns
from mmats.data.schema import candles_from_arrays
from mmats.errors import ConfigError, DataError

SAMPLE = Path(__file__).resolve().parents[2] / "mmats" / "data" / "sample"
AGG = {"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"}


def reference(df, timeframe, offset="0s"):
    """pandas resample, with empty buckets dropped (our contract: no row without bars)."""
    rule = pd.Timedelta(timeframe_ns(timeframe), unit="ns")
    out = (df.set_index("ts").resample(rule, origin="epoch", offset=pd.Timedelta(offset))
           .agg(AGG).dropna(subset=["open"]).reset_index())
    out["ts"] = out["ts"].dt.as_unit("ns")
    return out


def synthetic_1m(days=9, seed=3, holes=400):
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2021-03-01 00:00", tz="UTC").value
    n = days * 1440
    close = 100 * np.exp(np.cumsum(rng.normal(0, 1e-3, n)))
    open_ = np.r_[close[0], close[:-1]]
    spread = np.abs(rng.normal(0, 5e-4, n)) * close
    values = {"open": open_, "high": np.maximum(open_, close) + spread,
              "low": np.minimum(open_, close) - spread, "close": close,
              "volume": rng.gamma(2.0, 3.0, n)}
    keep = np.ones(n, dtype=bool)
    keep[rng.choice(n, holes, replace=False)] = False
    keep[1440 * 4 + 60: 1440 * 4 + 300] = False  # no bars 01:00-05:00 on day 5
    frame = candles_from_arrays(start + np.arange(n)[keep] * 60 * 10**9,
                                {k: v[keep] for k, v in values.items()})
    frame.attrs["timeframe"] = "1m"
    return frame


def assert_candles_equal(ours, theirs):
    assert ours["ts"].tolist() == theirs["ts"].tolist()
    for column in ("open", "high", "low", "close"):
        np.testing.assert_array_equal(ours[column].to_numpy(), theirs[column].to_numpy())
    np.testing.assert_allclose(ours["volume"].to_numpy(), theirs["volume"].to_numpy(), rtol=1e-12)


@pytest.mark.parametrize("name, timeframe", [
    ("bittrex/ADA_BTC_5m", "15m"), ("bittrex/ADA_BTC_5m", "1h"), ("bittrex/ADA_BTC_5m", "1d"),
    ("binance/XRP_ETH_5m", "30m"), ("fx/EUR_USD_1h", "4h"), ("fx/EUR_USD_1h", "1d"),
])
def test_matches_pandas_reference(name, timeframe):
    df = pd.read_parquet(SAMPLE / f"{name}.parquet")
    ours = resample(df, timeframe, drop_incomplete=False)
    assert_candles_equal(ours, reference(df, timeframe))


def test_offset_matches_pandas():
    df = pd.read_parquet(SAMPLE / "bittrex/ETH_BTC_5m.parquet")
    ours = resample(df, "4h", offset="30m", drop_incomplete=False)
    assert_candles_equal(ours, reference(df, "4h", offset="30min"))
    assert (ours["ts"].dt.minute == 30).all()


def test_chained_equals_direct():
    minute = synthetic_1m()
    chained = resample(resample(resample(minute, "5m"), "1h"), "1d")
    direct = resample(minute, "1d")
    assert len(direct) == 9
    assert_candles_equal(chained, direct)
    # Also without dropping, and for an uneven series end.
    cut = minute.iloc[:-777].copy()
    cut.attrs = minute.attrs
    for drop in (True, False):
        chained = resample(resample(resample(cut, "5m", drop_incomplete=drop), "1h",
                                    drop_incomplete=drop), "1d", drop_incomplete=drop)
        assert_candles_equal(chained, resample(cut, "1d", drop_incomplete=drop))


def test_empty_buckets_produce_no_rows():
    minute = synthetic_1m()
    hourly = resample(minute, "1h")
    outage = (hourly["ts"] >= pd.Timestamp("2021-03-05 01:00", tz="UTC")) & (
        hourly["ts"] < pd.Timestamp("2021-03-05 05:00", tz="UTC"))
    assert not outage.any()
    assert len(hourly) == 9 * 24 - 4


def test_trailing_incomplete_bucket_is_dropped():
    df = pd.read_parquet(SAMPLE / "bittrex/ETH_BTC_5m.parquet")  # ends 04:50, bar ends 04:55
    hourly = resample(df, "1h")
    assert hourly["ts"].iloc[-1] == pd.Timestamp("2018-01-30 03:00", tz="UTC")
    kept = resample(df, "1h", drop_incomplete=False)
    assert kept["ts"].iloc[-1] == pd.Timestamp("2018-01-30 04:00", tz="UTC")
    complete = df.iloc[:-1]  # now ends with the 04:45 bar... still short of 05:00
    assert resample(complete, "1h")["ts"].iloc[-1] == pd.Timestamp("2018-01-30 03:00", tz="UTC")
    whole = df[df["ts"] < pd.Timestamp("2018-01-30 04:00", tz="UTC")]  # last bar 03:55
    assert resample(whole, "1h")["ts"].iloc[-1] == pd.Timestamp("2018-01-30 03:00", tz="UTC")
    # The leading partial bucket (data starts 04:55) is history, not forming: kept.
    assert hourly["ts"].iloc[0] == pd.Timestamp("2018-01-10 04:00", tz="UTC")


def test_weeks_start_on_monday():
    goog = load("nasdaq:GOOG:1d")
    weekly = resample(goog, "1w")
    assert (weekly["ts"].dt.day_of_week == 0).all()
    assert weekly.attrs["timeframe"] == "1w" and weekly.attrs["symbol"] == "GOOG"


def test_refusals():
    df = pd.read_parquet(SAMPLE / "bittrex/ETH_BTC_5m.parquet")
    with pytest.raises(ConfigError, match="7m is not a whole multiple of 5m"):
        resample(df, "7m")
    with pytest.raises(ConfigError, match="cuts 5m bars in two"):
        resample(df, "1h", offset="2m")
    with pytest.raises(DataError, match="not strictly increasing"):
        resample(df.iloc[::-1], "1h")
    assert len(resample(df.iloc[:0], "1h")) == 0


def test_one_million_rows():
    n = 1_000_000
    ts = pd.Timestamp("2020-01-01", tz="UTC").value + np.arange(n) * 60 * 10**9
    price = np.linspace(1.0, 2.0, n)
    frame = candles_from_arrays(ts, {"open": price, "high": price, "low": price, "close": price,
                                     "volume": np.ones(n)})
    frame.attrs["timeframe"] = "1m"
    hourly = resample(frame, "1h")  # speed belongs in benchmarks/, not in an assert
    assert len(hourly) == n // 60 and (hourly["volume"] == 60).all()
