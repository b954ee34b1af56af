"""The always-on runner on OANDA's pricing stream: prices on an accelerated clock (a 1m bar
every 2.5 s) through the real oandapyV20 session, bars built from them and closed by the
clock, ticked within a second of their end and equal to the venue's own candles; the bar
joined mid-way and the bars of a silence come from REST; the silence is noticed by its
missing heartbeats and journaled."""

import sqlite3
import threading
import time

import numpy as np
import pandas as pd
import pytest
import yaml

from mmats.live.config import load_config
from mmats.live.service import RehearsalClock, Service

from .oanda_server import OandaServer
from .oanda_stream_server import OandaStreamServer

SPEED = 24.0
STEP_NS = 60_000_000_000
TOKEN = "oanda-serve-token-4242"
ACCOUNT = "101-004-0000001-001"


GRID_NS = 2_000_000_000  # a price every 2 s of venue time (30 to a bar)


def mid_at(ns: int) -> float:
    return round(1.1 + 0.001 * np.sin(ns / 7e9), 5)


def grid_bars(first_open_ns: int, count: int) -> pd.DataFrame:
    """The venue's own M1 mid candles of the price grid: what REST serves."""
    rows = []
    for i in range(count):
        open_ns = first_open_ns + i * STEP_NS
        mids = [mid_at(t) for t in range(open_ns, open_ns + STEP_NS, GRID_NS)]
        rows.append((pd.Timestamp(open_ns, tz="UTC"), mids[0], max(mids), min(mids),
                     mids[-1], float(len(mids))))
    return pd.DataFrame(rows, columns=["ts", "open", "high", "low", "close", "volume"])


class PricedVenue:
    """OANDA on one clock: REST candles of the price grid up to the clock, and each grid
    price on the stream as the clock passes it."""

    def __init__(self, clock, start_ns):
        self.clock = clock
        first = start_ns // STEP_NS * STEP_NS - 200 * STEP_NS
        self.candles = grid_bars(first, 240)
        self.rest = OandaServer(token=TOKEN, account_id=ACCOUNT, delay_s=0.0).start()
        self.rest.load_candles("EUR_USD", "M1", self.candles, incomplete_last=False)
        self.rest.set_now(clock())
        self.stream = OandaStreamServer(token=TOKEN, account_id=ACCOUNT, heartbeat_s=0.3)
        self.stream.start()
        self._next = -(-clock() // GRID_NS) * GRID_NS
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.wait(0.01):
            now = self.clock()
            self.rest.set_now(now)
            while self._next <= now:
                mid = mid_at(self._next)
                self.stream.push_price("EUR_USD", f"{mid - 0.00005:.5f}",
                                       f"{mid + 0.00005:.5f}", time_ns=self._next)
                self._next += GRID_NS

    def bar(self, open_ns):
        row = self.candles[self.candles["ts"] == pd.Timestamp(open_ns, tz="UTC")].iloc[0]
        return tuple(float(row[c]) for c in ("open", "high", "low", "close", "volume"))

    def stop(self):
        self._stop.set()
        self._thread.join(2)
        self.stream.stop()
        self.rest.stop()


@pytest.mark.slow
def test_oanda_prices_become_bars_ticked_at_their_close(tmp_path, monkeypatch):
    monkeypatch.setenv("MMATS_OANDA_TOKEN", TOKEN)
    monkeypatch.setenv("MMATS_OANDA_ACCOUNT_ID", ACCOUNT)
    start_ns = pd.Timestamp("2026-03-03T10:00:40", tz="UTC").value  # a Tuesday
    clock = RehearsalClock(start_ns, SPEED)
    venue = PricedVenue(clock, start_ns)
    config = tmp_path / "oanda.yaml"
    config.write_text(yaml.safe_dump({
        "mode": "paper", "environment": "dev",
        "venues": {"oanda": {"exchange": "oanda", "base_url": venue.rest.url,
                             "stream_url": venue.stream.url, "timeout_s": 3}},
        "markets": {"fx": {"type": "forex", "feed": "oanda", "execution": "paper",
                           "symbols": ["EUR/USD"], "timeframe": "1m"}},
        "models": [{"id": "rsi", "strategy": "rsi_reversion", "market": "fx",
                    "params": {"period": 5, "lower": 30, "upper": 70}}],
        "heartbeat_s": 1.5, "notifications": ["console"],
        "journal": str(tmp_path / "journal.sqlite"), "data_root": str(tmp_path / "data")}))
    service = Service(load_config(config), health_port=None, clock=clock,
                      say=lambda _: None, backoff_s=(0.1, 1.0))
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while len([r for r in service.tick_log if r["reason"] == "stream fx"]) < 2:
            assert time.monotonic() < deadline, service.tick_log
            time.sleep(0.05)
        # the first close may come while the first tick still catches up on history
        streamed = [r for r in service.tick_log if r["reason"] == "stream fx"][1]
        assert streamed["bars"] == 1, service.tick_log
        close_ns = streamed["closes"][0]
        late_s = streamed["finished"] - clock.wall_ns(close_ns) / 1e9
        print(f"bar end -> tick journaled: {late_s:.3f} s")
        assert late_s < 1.0
        venue.stream.go_silent(True)
        time.sleep(2.5)
        venue.stream.go_silent(False)
        deadline = time.monotonic() + 20
        while service.watches["fx"].state != "live" or service.watches["fx"].silences < 1:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(3.0)  # a bar after the silence
    finally:
        service_partial = [service.watches["fx"].partial_bars]
        holders = [service.sources["oanda"].rest, service.watches["fx"].stream]
        service.stop()
        thread.join(30)
        venue.stop()
    assert service.sources == {} and service.watches == {}
    for holder in holders:  # SIGTERM's "drop the keys": blanked before they are let go
        assert TOKEN not in _everything_in(holder), holder
    with sqlite3.connect(f"file:{service.config.journal}?mode=ro", uri=True) as db:
        bars = db.execute("SELECT bar_ts_ns, open, high, low, close, volume FROM ticks "
                          "ORDER BY bar_ts_ns").fetchall()
        kinds = {row[0] for row in db.execute("SELECT kind FROM risk_events")}
    for row in bars:  # streamed or back-filled, every bar is the venue's own candle
        assert row[1:] == pytest.approx(venue.bar(row[0])), row
    opens = [r[0] for r in bars]
    assert opens == list(range(opens[0], opens[-1] + STEP_NS, STEP_NS))  # none lost, none twice
    assert service_partial[0] >= 1  # the bar the stream joined mid-way came from REST
    assert opens[-1] > close_ns  # bars kept coming after the silence
    assert "stream_silent" in kinds and "stream_restored" in kinds


def _everything_in(obj, depth=3) -> str:
    """The text of an object's attributes, their attributes, closures and headers."""
    if depth == 0:
        return ""
    parts = [repr(obj)[:200]]
    for value in getattr(obj, "__dict__", {}).values():
        if isinstance(value, str | bytes | dict | list | tuple):
            parts.append(repr(value))
        elif callable(value) and getattr(value, "__closure__", None):
            parts += [repr(cell.cell_contents) for cell in value.__closure__]
        else:
            parts.append(_everything_in(value, depth - 1))
    headers = getattr(obj, "headers", None)
    if headers is not None:
        parts.append(repr(dict(headers)))
    return " ".join(parts)
