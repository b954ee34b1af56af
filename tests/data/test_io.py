"""read_candle_file and load: file formats, column and epoch variants, specs, attrs."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mmats.data import CandleStore, load, read_candle_file
from mmats.errors import CandleValidationError, ConfigError, DataError

SAMPLE = Path(__file__).resolve().parents[2] / "mmats" / "data" / "sample"


@pytest.fixture(scope="module")
def eth():
    return pd.read_parquet(SAMPLE / "bittrex" / "ETH_BTC_5m.parquet").iloc[:50]


def _epoch(frame, unit):
    ns = frame["ts"].to_numpy("M8[ns]").view(np.int64)
    return ns // {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}[unit]


@pytest.mark.parametrize("header, ts_form", [
    ("ts,open,high,low,close,volume", "iso"),
    ("Date,Open,High,Low,Close,Volume", "iso"),
    ("timestamp,OPEN,HIGH,LOW,CLOSE,VOLUME", "s"),
    ("open_time,open,high,low,close,volume", "ms"),
    ("Time, Open, High, Low, Close, Vol", "us"),
    ("datetime,o,h,l,c,v", "ns"),
    ("time,open,high,low,close,volume", "iso+02:00"),
])
def test_csv_column_and_epoch_variants(tmp_path, eth, header, ts_form):
    table = eth.copy()
    if ts_form == "iso":
        table["ts"] = table["ts"].dt.strftime("%Y-%m-%d %H:%M:%S")
    elif ts_form == "iso+02:00":
        table["ts"] = table["ts"].dt.tz_convert("Etc/GMT-2").dt.strftime("%Y-%m-%dT%H:%M:%S%z")
    else:
        table["ts"] = _epoch(table, ts_form)
    path = tmp_path / "candles.csv"
    table.to_csv(path, index=False, header=[h.strip() for h in header.split(",")])
    clean, rejects = read_candle_file(path, timeframe="5m")
    assert rejects == []
    pd.testing.assert_frame_equal(clean, eth.reset_index(drop=True), check_like=False)


def test_extra_columns_are_dropped_and_listed(tmp_path, eth):
    table = eth.assign(trades=7, quote_volume=1.5)
    path = tmp_path / "binance.csv"
    table.to_csv(path, index=False)
    clean, _ = read_candle_file(path)
    assert list(clean.columns) == ["ts", "open", "high", "low", "close", "volume"]
    assert clean.attrs["dropped_columns"] == ["trades", "quote_volume"]


def test_two_columns_meaning_the_same_fail(tmp_path, eth):
    path = tmp_path / "both.csv"
    eth.assign(date=eth["ts"]).to_csv(path, index=False)
    with pytest.raises(CandleValidationError, match="'ts' and 'date' both look like 'ts'"):
        read_candle_file(path)


def test_parquet_with_datetime_index(tmp_path, eth):
    path = tmp_path / "indexed.parquet"
    eth.rename(columns=str.capitalize).rename(columns={"Ts": "Date"}).set_index("Date").to_parquet(path)
    clean, _ = read_candle_file(path, "5m")
    pd.testing.assert_frame_equal(clean, eth.reset_index(drop=True))


def test_unknown_extension_and_missing_file(tmp_path):
    odd = tmp_path / "candles.xlsx"
    odd.write_bytes(b"")
    with pytest.raises(DataError, match="candles.xlsx: unknown file type"):
        read_candle_file(odd)
    with pytest.raises(DataError, match="nope.csv: no such file"):
        read_candle_file(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="nope.parquet: no such file"):
        load(tmp_path / "nope.parquet")


def test_load_spec_from_bundled_sample(tmp_path):
    df = load("bittrex:ETH/BTC:5m", root=tmp_path)
    assert len(df) == 5760 and isinstance(df.index, pd.RangeIndex)
    assert df.attrs == {"venue": "bittrex", "symbol": "ETH/BTC", "timeframe": "5m",
                        "calendar": "24/7",
                        "source": str(SAMPLE.resolve() / "bittrex" / "ETH_BTC_5m.parquet")}
    day = load("bittrex:ETH/BTC:5m", root=tmp_path, start="2018-01-11", end="2018-01-12")
    assert len(day) == 288
    assert load("fx:EUR/USD:1h", root=tmp_path).attrs["calendar"] == "forex"
    assert load("nasdaq:GOOG:1d", root=tmp_path).attrs["calendar"] == "stocks"


def test_load_spec_prefers_the_store_root(tmp_path, eth, monkeypatch):
    CandleStore(tmp_path).write("bittrex", "ETH/BTC", "5m", eth.iloc[:10])
    assert len(load("bittrex:ETH/BTC:5m", root=tmp_path)) == 10
    monkeypatch.setenv("MMATS_DATA_ROOT", str(tmp_path))
    assert len(load("bittrex:ETH/BTC:5m")) == 10
    assert load("bittrex:ETH/BTC:5m").attrs["source"] == str(tmp_path / "bittrex" / "ETH_BTC_5m.parquet")


def test_load_symbol_with_colons(tmp_path, eth):
    CandleStore(tmp_path).write("binance_futures", "XRP/USDT:USDT", "5m", eth)
    df = load("binance_futures:XRP/USDT:USDT:5m", root=tmp_path)
    assert df.attrs["symbol"] == "XRP/USDT:USDT" and len(df) == 50


def test_load_missing_spec_lists_what_exists(tmp_path):
    with pytest.raises(DataError) as info:
        load("bittrex:DOGE/BTC:5m", root=tmp_path)
    message = str(info.value)
    assert str(tmp_path / "bittrex" / "DOGE_BTC_5m.parquet") in message
    assert "bittrex:ETH/BTC:5m" in message  # as users type it, not the file name's ETH_BTC
    assert "ETH_BTC:5m" not in message


def test_load_file_in_store_layout(tmp_path, eth):
    store = CandleStore(tmp_path)
    report = store.write("kraken", "ETH/BTC", "5m", eth)
    df = load(report.path)
    assert (df.attrs["venue"], df.attrs["symbol"], df.attrs["timeframe"]) == ("kraken", "ETH/BTC", "5m")
    assert df.attrs["calendar"] == "24/7"


def test_load_plain_csv_infers_timeframe_and_calendar(tmp_path):
    goog = pd.read_parquet(SAMPLE / "nasdaq" / "GOOG_1d.parquet").iloc[:60]
    path = tmp_path / "goog.csv"
    goog.to_csv(path, index=False)
    df = load(path, start="2004-09-01")
    assert df.attrs["venue"] is None and df.attrs["symbol"] is None
    assert df.attrs["timeframe"] == "1d" and df.attrs["calendar"] == "stocks"
    assert df.attrs["source"] == str(path)
    assert df["ts"].iloc[0] == pd.Timestamp("2004-09-01", tz="UTC")


def test_load_rejects_bad_files_and_wrong_timeframe(tmp_path, eth):
    path = tmp_path / "bad.csv"
    eth.assign(low=-eth["low"]).to_csv(path, index=False)
    with pytest.raises(CandleValidationError, match="bad.csv: 50 of 50 row"):
        load(path)
    with pytest.raises(ConfigError, match="holds 5m bars, not 1h.*resample"):
        load("bittrex:ETH/BTC:5m", root=tmp_path, timeframe="1h")
    with pytest.raises(DataError, match="not-a-spec: no such file"):
        load("not-a-spec")
