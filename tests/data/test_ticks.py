"""Ticks kept from the streams: Parquet parts per UTC day, whole or absent, read back in
time order."""

import pandas as pd

from mmats.brokers.streams import StreamTick
from mmats.data.ticks import TickRecorder, read_ticks

MIDNIGHT = pd.Timestamp("2026-03-02", tz="UTC").value


def test_ticks_are_written_per_day_and_read_back_in_order(tmp_path):
    recorder = TickRecorder(tmp_path, "binance")
    recorder.add(StreamTick("BTC/USDT", MIDNIGHT + 5, 101.0, size=0.5))
    recorder.add(StreamTick("BTC/USDT", MIDNIGHT - 7, 100.0, size=0.25))  # the day before
    recorder.add(StreamTick("EUR/USD", MIDNIGHT, 1.1, bid=1.0999, ask=1.1001))
    assert recorder.flush() == 3
    recorder.add(StreamTick("BTC/USDT", MIDNIGHT + 9, 102.0, size=1.0))
    assert recorder.flush() == 1 and recorder.flush() == 0
    days = sorted(p.name for p in (tmp_path / "binance" / "ticks" / "BTC_USDT").iterdir())
    assert days == ["2026-03-01", "2026-03-02"]
    assert not list(tmp_path.rglob(".ticks.*"))  # no temp file left behind
    ticks = read_ticks(tmp_path, "binance", "BTC/USDT")
    assert ticks["price"].tolist() == [100.0, 101.0, 102.0]
    assert ticks["size"].tolist() == [0.25, 0.5, 1.0]
    assert ticks["ts"].iloc[0] == pd.Timestamp(MIDNIGHT - 7, tz="UTC")
    quotes = read_ticks(tmp_path, "binance", "EUR/USD")
    assert quotes[["bid", "ask"]].iloc[0].tolist() == [1.0999, 1.1001]
    assert read_ticks(tmp_path, "binance", "ETH/USDT").empty
