"""The kill switch against the local Binance look-alike, through the real ccxt client:
a kill issued while a tick is stuck in a slow venue answer flattens and cancels at the
venue within 5 s, exits 0, and the stuck tick then sends nothing more."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from decimal import Decimal

import yaml

from mmats.brokers.ccxt_broker import CcxtBroker
from mmats.data import load
from mmats.live import control
from mmats.live.config import load_config
from mmats.live.journal import Journal
from mmats.types import TradingState

from .test_operator_e2e import (
    FIVE_MINUTES_NS,
    KEY,
    SCRIPT,
    SECRET,
    START,
    _binance,
    _venue_price,
)

ROOT = SCRIPT.parents[1]
SLOW_ANSWER_S = 15.0  # how long the venue sits on the tick's order before answering
STRAY = "mm" + "k" * 30  # a resting order of ours the kill must cancel


def _two_model_config(folder, url):
    """Two identical models on ETH/BTC: they decide at the same close, so one tick sends
    two orders, and the kill lands between them."""
    path = folder / "live.yaml"
    model = {"strategy": "ema_cross", "market": "crypto", "params": {"fast": 5, "slow": 20},
             "costs": {"fee_bps": 10}, "risk": {"allow_short": False}, "allocation": 0.5}
    path.write_text(yaml.safe_dump({
        "mode": "operator", "environment": "prod",
        "venues": {"binance": {"exchange": "binance", "base_url": url, "timeout_s": 30}},
        "markets": {"crypto": {"type": "crypto", "feed": "binance", "execution": "binance",
                               "symbols": ["ETH/BTC"], "timeframe": "5m"}},
        "models": [{"id": "ema_a", **model}, {"id": "ema_b", **model}],
        "journal": str(folder / "journal.sqlite"), "data_root": str(folder / "data"),
        "notifications": [f"file://{folder / 'notes.log'}"]}))
    return path


def _ours_open(server):
    with server.lock:
        return [o for o in server.orders if o.status in ("NEW", "PARTIALLY_FILLED")
                and o.client_order_id.startswith("mm")]


def test_kill_during_a_tick_stuck_in_a_slow_venue_answer(tmp_path):
    candles = load("bittrex:ETH/BTC:5m")
    server = _binance(candles)
    try:
        config_path = _two_model_config(tmp_path, server.url)
        config = load_config(config_path)
        broker = CcxtBroker("binance", api_key=KEY, secret=SECRET, base_url=server.url,
                            timeout_s=30, symbols=["ETH/BTC"], rate_limit=False)
        side = CcxtBroker("binance", api_key=KEY, secret=SECRET, base_url=server.url,
                          timeout_s=30, symbols=["ETH/BTC"], rate_limit=False)
        env = {**os.environ, "MMATS_PROD_BINANCE_API_KEY": KEY,
               "MMATS_PROD_BINANCE_SECRET": SECRET}
        result = {}
        for index in range(START, START + 200):
            close = candles["ts"].iloc[index].value + FIVE_MINUTES_NS
            server.set_now(close // 1_000_000)
            server.set_price("ETHBTC", _venue_price(candles["close"].iloc[index]))
            sent_before = server.count("POST", "/api/v3/order")
            server.fail("delay", path="/api/v3/order", delay_s=SLOW_ANSWER_S)

            def tick(close=close):
                result["report"] = control.tick_once(
                    config, cash=1.0, now_ns=close, mode="operator",
                    brokers={"crypto": broker}, sources={"binance": broker})

            thread = threading.Thread(target=tick)
            thread.start()
            while thread.is_alive() and server.count("POST", "/api/v3/order") == sent_before:
                time.sleep(0.01)
            if server.count("POST", "/api/v3/order") > sent_before:
                break  # the tick's first order is at the venue, its answer is held back
            thread.join()
            server.clear_faults()
        else:
            raise AssertionError("the models never traded")
        assert thread.is_alive()
        # a resting order of ours at the venue, which the kill must cancel
        side.send({"client_order_id": STRAY, "symbol": "ETH/BTC", "side": "buy",
                   "qty": 1.0, "type": "limit", "price": 0.01, "time_in_force": "GTC"})
        assert len(_ours_open(server)) == 1 and server.balance("ETH")[0] > 0

        started = time.monotonic()
        kill = subprocess.Popen(  # no --i-understand-live-trading: a kill never needs it
            [sys.executable, str(SCRIPT), "--config", str(config_path), "--mode",
             "operator", "--cash", "1", "kill", "--reason", "drill"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
        flat_after = None
        while time.monotonic() - started < 30:
            eth_free, eth_locked = server.balance("ETH")
            if eth_free + eth_locked < Decimal("0.001") and not _ours_open(server):
                flat_after = time.monotonic() - started
                break
            time.sleep(0.02)
        out, err = kill.communicate(timeout=60)
        print(f"venue flat and orders cancelled {flat_after:.2f} s after the kill command")
        assert kill.returncode == 0, out + err
        assert flat_after is not None and flat_after < 5.0, (flat_after, out, err)
        assert "Traceback" not in err
        assert thread.is_alive()  # the tick was still waiting for its answer all along

        thread.join(timeout=60)
        assert not thread.is_alive()
        report = result["report"]
        # the stuck tick sent nothing more: its one order, then only the kill's
        posts = [o for o in server.orders if o.client_order_id != STRAY]
        assert report.orders == 1
        # POSTs: the tick's first order, the stray set up above, the kill's flatten
        assert server.count("POST", "/api/v3/order") == 3
        assert [o.type for o in posts] == ["MARKET", "MARKET"]  # the tick's, the kill's
        assert server.balance("ETH")[0] + server.balance("ETH")[1] < Decimal("0.001")
        assert not _ours_open(server)
        with Journal(config.journal) as journal:
            assert journal.verify().ok
            statuses = [r["broker_status"] for r in journal.rows("orders")]
            assert "abandoned" in statuses  # the second model's order never left
            for sleeve in ("ema_a:ETH/BTC", "ema_b:ETH/BTC"):
                state = journal.load_state(sleeve)[0]
                assert state["trading_state"] == int(TradingState.HALTED)
                assert abs(state["position"]) < 0.001  # the kill's fill was booked
            kinds = [r["kind"] for r in journal.rows("risk_events")]
            assert "kill_switch" in kinds
            users = [r["user"] for r in journal.rows("operator_actions")]
            assert users and users[-1] not in ("", "operator")  # the real OS user

        # nothing is sent while the kill stands, even with new closes
        later = candles["ts"].iloc[index + 1].value + FIVE_MINUTES_NS
        server.set_now(later // 1_000_000)
        control.tick_once(config, cash=1.0, now_ns=later, mode="operator",
                          brokers={"crypto": broker}, sources={"binance": broker})
        assert len([o for o in server.orders if o.client_order_id != STRAY]) == 2
    finally:
        server.stop()


def test_kill_cancels_an_oco_resting_at_the_venue_and_flattens(tmp_path):
    from .test_resting_stops import FLAT, Venue, candles_for

    venue = Venue(tmp_path, candles_for(FLAT + [0.05, 0.0501], [1] * 20 + [3, 0]))
    try:
        venue.tick(20)  # long, with a stop-loss and a take-profit resting as one OCO list
        assert set(venue.legs()) == {"STOP_LOSS_LIMIT", "LIMIT_MAKER"}
        outcome = control.kill(venue.config, mode="operator", brokers={"crypto": venue.broker},
                               reason="drill")
        assert outcome.problems == [] and not outcome.deferred
        assert venue.legs() == {} and venue.venue_position() < 0.001
        with Journal(venue.config.journal) as journal:
            state = journal.load_state("scripted:ETH/BTC")[0]
            assert journal.verify().ok
        assert state["trading_state"] == int(TradingState.HALTED)
        assert abs(state["position"] - venue.venue_position()) < 1e-12
        venue.tick(21)  # killed: nothing placed or sent again
        assert venue.legs() == {} and venue.venue_position() < 0.001
    finally:
        venue.server.stop()


def test_kill_books_a_stop_the_venue_filled_before_it(tmp_path):
    from mmats.types import FillReason

    from .test_resting_stops import FLAT, Venue, candles_for

    venue = Venue(tmp_path, candles_for(FLAT + [0.05, 0.0501], [1] * 20 + [3, 0]))
    try:
        venue.tick(20)
        stop = venue.legs()["STOP_LOSS_LIMIT"]
        venue.server.set_price("ETHBTC", Decimal("0.04935"))  # through the stop: sold
        assert stop.status == "FILLED" and venue.venue_position() < 0.001
        outcome = control.kill(venue.config, mode="operator", brokers={"crypto": venue.broker},
                               reason="drill")
        assert outcome.problems == [] and not outcome.deferred
        with Journal(venue.config.journal) as journal:
            state = journal.load_state("scripted:ETH/BTC")[0]
            reasons = [f["reason"] for f in journal.rows("fills")]
        # the venue's stop fill is booked as the kernel's stop fill; nothing else sold
        assert reasons == [int(FillReason.SIGNAL), int(FillReason.STOP_LOSS)]
        assert abs(state["position"] - venue.venue_position()) < 1e-12
        assert state["trading_state"] == int(TradingState.HALTED)
    finally:
        venue.server.stop()
