"""A market whose every feed fails is said once per outage (not at every tick of it), the
stale-data halt still fires, and the recovery is said once too."""

from mmats.data import load
from mmats.live import control
from mmats.live.config import load_config
from mmats.live.journal import Journal

from .test_operator_e2e import (
    FIVE_MINUTES_NS,
    START,
    _binance,
    _binance_config,
    _fast_ccxt,
    _venue_price,
)


def test_an_outage_is_notified_once_and_the_stale_halt_still_fires(tmp_path):
    candles = load("bittrex:ETH/BTC:5m")
    server = _binance(candles)
    try:
        config = load_config(_binance_config(tmp_path, server.url))
        broker = _fast_ccxt(server.url)
        titles = []
        for position in range(10):
            index = START + position
            close = candles["ts"].iloc[index].value + FIVE_MINUTES_NS
            server.set_now(close // 1_000_000)
            server.set_price("ETHBTC", _venue_price(candles["close"].iloc[index]))
            server.clear_faults()
            if 2 <= position < 8:  # klines down for six closes
                server.fail("503", times=100, path="/api/v3/klines")
            report = control.tick_once(config, cash=1.0, now_ns=close, mode="operator",
                                       brokers={"crypto": broker}, sources={"binance": broker})
            titles.append([title for title, _ in report.alerts])
        assert titles[2] == ["MMATS feeds failing"]
        assert all("MMATS feeds failing" not in t for t in titles[3:8])
        assert titles[8] == ["MMATS feeds recovered"]
        notes = (tmp_path / "notes.log").read_text()
        assert notes.count("feeds failing") == 1 and notes.count("stale data") == 1
        with Journal(config.journal) as journal:
            kinds = [r["kind"] for r in journal.rows("risk_events")
                     if r["kind"] in ("feeds_failing", "feeds_recovered", "stale_data")]
            assert kinds == ["feeds_failing", "stale_data", "feeds_recovered"]
            assert journal.load_state("ema:ETH/BTC")[0]["trading_state"] == 2  # HALTED
    finally:
        server.stop()
