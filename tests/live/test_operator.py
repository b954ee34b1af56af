"""Operator mode against the paper venue: orders sent with deterministic client ids,
fills applied through the kernel, lost answers recovered by client id, refusals and
authentication failures pausing, reconciliation, and the kill switch through the broker.

Faults are injected by wrapping the real paper venue (it still keeps the order log)."""

import json
import sqlite3

import numpy as np
import pandas as pd
import pytest

from mmats.backtest import backtest
from mmats.brokers.base import (
    AuthenticationFailed,
    OrderRejected,
    OutcomeUnknown,
    VenueUnavailable,
)
from mmats.brokers.paper import PaperBroker
from mmats.brokers.replay import ReplayFeed
from mmats.data import CandleStore, load
from mmats.live import control
from mmats.live.config import parse_config
from mmats.live.journal import Journal
from mmats.live.operator import client_order_id
from mmats.live.replay import replay
from mmats.live.tick import run_tick
from mmats.types import TradingState

FIVE_MINUTES = 300_000_000_000


def config_for(tmp_path, models=None, **extra):
    return parse_config({
        "mode": "operator",
        "markets": {"crypto": {"type": "crypto", "feed": "bittrex", "execution": "paper",
                               "symbols": ["ETH/BTC"], "timeframe": "5m"}},
        "models": models or [{"id": "ema", "strategy": "ema_cross", "market": "crypto",
                              "params": {"fast": 5, "slow": 20}, "costs": {"fee_bps": 10}}],
        "journal": str(tmp_path / "journal.sqlite"),
        "data_root": str(tmp_path / "data"),
        "notifications": [f"file://{tmp_path / 'notes.log'}"],
        **extra,
    })


def chained_candles(bars=500, seed=3):
    """A random walk whose every bar opens at the previous close: sizing at the decision
    close and filling at the next open then see the same price."""
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.004, bars)))
    open_ = np.concatenate([[100.0], close[:-1]])
    spread = np.abs(rng.normal(0, 0.002, bars))
    return pd.DataFrame({
        "ts": pd.date_range("2024-01-01", periods=bars, freq="5min", tz="UTC"),
        "open": open_, "high": np.maximum(open_, close) * (1 + spread),
        "low": np.minimum(open_, close) * (1 - spread), "close": close,
        "volume": rng.uniform(10, 100, bars)})


class Faulty:
    """The paper venue with scripted faults on its next sends."""

    def __init__(self, inner):
        self.inner = inner
        self.faults = []
        self.sent = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def send(self, order):
        self.sent += 1
        fault = self.faults.pop(0) if self.faults else None
        if fault == "lose_response":
            self.inner.send(order)
            raise OutcomeUnknown(f"paper: {order['symbol']}: the answer was lost")
        if fault == "never_arrives":
            raise OutcomeUnknown(f"paper: {order['symbol']}: timed out")
        if fault == "reject":
            raise OrderRejected(f"paper: {order['symbol']}: below the minimum", "min_notional")
        if fault == "auth":
            raise AuthenticationFailed("paper: invalid API key")
        if fault == "down":
            raise VenueUnavailable("paper: 503")
        if fault == "half":  # an IOC order the venue filled in part, then cancelled
            report = self.inner.send({**order, "qty": order["qty"] / 2})
            return {**report, "qty": order["qty"], "status": "canceled"}
        return self.inner.send(order)


class Rig:
    """Ticks one bar close at a time over ``candles``, with a (faulty) paper venue."""

    def __init__(self, tmp_path, candles, config=None, **venue_rules):
        self.config = config or config_for(tmp_path)
        self.feed = ReplayFeed({"ETH/BTC": candles}, "5m")
        self.closes = self.feed.close_times("ETH/BTC")
        self.now = 0
        self.venue = PaperBroker(tmp_path / "venue.sqlite", self.feed, "5m", cash=10_000,
                                 fee_bps=10, symbols=["ETH/BTC"], clock=lambda: self.now,
                                 **venue_rules)
        self.broker = Faulty(self.venue)
        self.reports = []

    def tick(self, index):
        self.now = int(self.closes[index])
        with Journal(self.config.journal) as journal:
            report = run_tick(self.config, {"crypto": self.feed}, journal, self.now,
                              mode="operator", brokers={"crypto": self.broker})
        self.reports.append(report)
        return report

    def run(self, start, stop):
        for index in range(start, stop):
            self.tick(index)

    def tick_until_sent(self, sends, start=0) -> int:
        """Tick from close ``start`` until the venue has been sent ``sends`` orders in all
        (faults included); returns the next close to tick."""
        index = start
        while self.broker.sent < sends:
            self.tick(index)
            index += 1
        return index

    def state(self, sleeve="ema:ETH/BTC"):
        with Journal(self.config.journal) as journal:
            return journal.load_state(sleeve)[0]

    def journal_rows(self, table, where="", params=()):
        with Journal(self.config.journal) as journal:
            return journal.rows(table, where, params)


def test_operator_replay_equals_the_backtest_when_bars_open_at_the_last_close(tmp_path):
    candles = chained_candles()
    config = config_for(tmp_path)
    result = replay(config, {"ETH/BTC": candles}, tmp_path / "journal.sqlite",
                    mode="operator")
    expected = backtest("ema_cross", candles, params={"fast": 5, "slow": 20}, fee_bps=10)
    assert len(expected.fills) > 10
    np.testing.assert_allclose(result.equity.iloc[:, 0].to_numpy(),
                               expected.equity.to_numpy(), rtol=1e-9)
    fills = result.fills
    np.testing.assert_array_equal(fills["bar"], expected.fills["bar"])
    np.testing.assert_array_equal(fills["side"], expected.fills["side"])
    for column in ("qty", "price", "fee"):
        np.testing.assert_allclose(fills[column], expected.fills[column], rtol=1e-9)
    assert result.trades == expected.metrics["trades"]


def test_journal_venue_log_and_positions_agree(tmp_path):
    models = [{"id": "ema", "strategy": "ema_cross", "market": "crypto", "allocation": 0.5,
               "params": {"fast": 5, "slow": 20}, "costs": {"fee_bps": 10}},
              {"id": "donchian", "strategy": "donchian_breakout", "market": "crypto",
               "allocation": 0.5, "params": {"channel": 10}, "costs": {"fee_bps": 10}}]
    config = config_for(tmp_path, models)
    candles = load("bittrex:ETH/BTC:5m").iloc[:400]
    result = replay(config, {"ETH/BTC": candles}, tmp_path / "journal.sqlite",
                    mode="operator")
    venue = sqlite3.connect(tmp_path / "journal.crypto.paper.sqlite")
    log = venue.execute("SELECT client_order_id, side, filled_qty, avg_price FROM orders "
                        "ORDER BY seq").fetchall()
    position = venue.execute("SELECT value FROM account WHERE key = 'position:ETH/BTC'"
                             ).fetchone()
    venue.close()
    with Journal(tmp_path / "journal.sqlite") as journal:
        fills = journal.rows("fills")
        sent = [r for r in journal.rows("orders") if r["broker_status"] == "SENDING"]
        assert journal.verify().ok
    assert len(log) > 10
    assert [row[0] for row in log] == [row["client_order_id"] for row in sent]
    assert [row[0] for row in log] == [row["client_order_id"] for row in fills]
    for (_, side, qty, price), fill in zip(log, fills, strict=True):
        assert (1 if side == "buy" else -1) == fill["side"]
        assert qty == pytest.approx(fill["qty"], rel=1e-12)
        assert price == pytest.approx(fill["price"], rel=1e-12)
    held = sum(float(state[0]["position"]) for state in result.states.values())
    assert held == pytest.approx(position[0] if position else 0.0, abs=1e-9)


def test_a_lost_answer_is_looked_up_by_client_id_and_never_sent_twice(tmp_path):
    rig = Rig(tmp_path, chained_candles(300))
    rig.run(0, 40)
    first_order = rig.broker.sent
    assert first_order > 0  # the EMA crossed by now
    rig.broker.faults = ["lose_response"] * 50
    before = len(rig.venue.orders())
    index = rig.tick_until_sent(first_order + 1, start=40)
    cid = rig.venue.orders()[-1]["client_order_id"]
    assert len(rig.venue.orders()) == before + 1
    assert [r["broker_status"] for r in rig.journal_rows(
        "orders", "client_order_id = ?", (cid,))] == ["SENDING", "UNKNOWN"]
    rig.broker.faults = []
    rig.tick(index)  # the next tick looks it up before anything else
    statuses = [r["broker_status"] for r in rig.journal_rows(
        "orders", "client_order_id = ?", (cid,))]
    assert statuses == ["SENDING", "UNKNOWN", "filled"]
    fills = rig.journal_rows("fills", "client_order_id = ?", (cid,))
    venue_order = rig.venue.lookup(cid, "ETH/BTC")
    assert len(fills) == 1 and fills[0]["price"] == venue_order["avg_price"]
    rig.run(index + 1, 300)
    cids = [o["client_order_id"] for o in rig.venue.orders()]
    assert len(cids) == len(set(cids))
    assert rig.state()["position"] == pytest.approx(
        rig.venue.positions().get("ETH/BTC", 0.0), abs=1e-9)


def test_an_order_that_never_arrived_is_sent_again_with_the_same_id(tmp_path):
    rig = Rig(tmp_path, chained_candles(300))
    rig.broker.faults = ["never_arrives"]
    index = rig.tick_until_sent(1)
    assert rig.venue.orders() == []
    rows = rig.journal_rows("orders")
    cid = rows[-1]["client_order_id"]
    assert rows[-1]["broker_status"] == "UNKNOWN"
    rig.tick(index)
    assert [o["client_order_id"] for o in rig.venue.orders()] == [cid]
    assert rig.state()["position"] == pytest.approx(rig.venue.positions()["ETH/BTC"])


def test_two_refusals_in_a_row_pause_the_sleeve(tmp_path):
    rig = Rig(tmp_path, chained_candles(300))
    rig.broker.faults = ["reject", "reject"]
    index = rig.tick_until_sent(2)
    assert rig.state()["trading_state"] == int(TradingState.HALTED)
    events = [e["kind"] for e in rig.journal_rows("risk_events")]
    assert events.count("order_rejected") == 2 and "rejects_in_a_row" in events
    assert any("rejects in a row" in title for r in rig.reports for title, _ in r.alerts)
    rig.run(index, 300)
    assert rig.broker.sent == 2 and rig.venue.orders() == []  # nothing new while paused


def test_one_refusal_is_retried_at_the_next_close(tmp_path):
    rig = Rig(tmp_path, chained_candles(300))
    rig.broker.faults = ["reject"]
    rig.tick_until_sent(2)
    assert rig.state()["trading_state"] == int(TradingState.ACTIVE)
    assert len(rig.venue.orders()) == 1  # the retry reached the venue


def test_authentication_failure_pauses_the_market_and_alerts(tmp_path):
    rig = Rig(tmp_path, chained_candles(300))
    rig.broker.faults = ["auth"]
    index = rig.tick_until_sent(1)
    assert rig.state()["trading_state"] == int(TradingState.HALTED)
    assert "authentication_failed" in [e["kind"] for e in rig.journal_rows("risk_events")]
    assert any("authentication" in title for r in rig.reports for title, _ in r.alerts)
    rig.run(index, 300)
    assert rig.broker.sent == 1 and rig.venue.orders() == []


def test_venue_down_leaves_the_order_for_the_next_tick(tmp_path):
    rig = Rig(tmp_path, chained_candles(300))
    rig.broker.faults = ["down"]
    index = rig.tick_until_sent(1)
    assert rig.journal_rows("orders")[-1]["broker_status"] == "UNSENT"
    rig.tick(index)
    assert len(rig.venue.orders()) == 1
    assert rig.state()["trading_state"] == int(TradingState.ACTIVE)


def _set_venue_position(path, quantity):
    venue = sqlite3.connect(path)
    venue.execute("UPDATE account SET value = ? WHERE key = 'position:ETH/BTC'", (quantity,))
    venue.commit()
    venue.close()


def test_reconcile_adopts_a_small_difference_and_pauses_on_a_large_one(tmp_path):
    rig = Rig(tmp_path, chained_candles(300))
    rig.tick(0)
    index = 1
    while rig.state()["position"] == 0.0:
        rig.tick(index)
        index += 1
    held = float(rig.state()["position"])
    _set_venue_position(tmp_path / "venue.sqlite", held * (1 - 0.001))  # fee dust
    rig.tick(index)
    assert rig.state()["position"] == pytest.approx(held * (1 - 0.001), rel=1e-12)
    adopted = [e for e in rig.journal_rows("risk_events") if e["kind"] == "reconcile_adopted"]
    assert len(adopted) == 1
    _set_venue_position(tmp_path / "venue.sqlite", held * 0.5)
    rig.tick(index + 1)
    assert rig.state()["trading_state"] == int(TradingState.HALTED)
    assert "reconcile_mismatch" in [e["kind"] for e in rig.journal_rows("risk_events")]


def test_client_ids_are_deterministic_and_fit_every_venue():
    cid = client_order_id("ema:ETH/BTC", 1_700_000_000_000_000_000, 3)
    assert cid == client_order_id("ema:ETH/BTC", 1_700_000_000_000_000_000, 3)
    assert cid != client_order_id("ema:ETH/BTC", 1_700_000_000_000_000_000, 4)
    assert len(cid) == 32 and cid.isalnum()


def test_kill_cancels_and_flattens_through_the_broker(tmp_path):
    candles = load("bittrex:ETH/BTC:5m").iloc[:300].reset_index(drop=True)
    CandleStore(tmp_path / "data").write("bittrex", "ETH/BTC", "5m", candles)
    config = config_for(tmp_path)
    now = candles["ts"].iloc[-1].value + FIVE_MINUTES
    index = 60
    while True:  # tick until the sleeve holds a position
        control.tick_once(config, now_ns=candles["ts"].iloc[index].value + FIVE_MINUTES)
        with Journal(config.journal) as journal:
            if journal.load_state("ema:ETH/BTC")[0]["position"] != 0.0:
                break
        index += 1
    feeds = control.feeds_for(config)
    brokers = control.brokers_for(config, feeds, clock=lambda: now)
    venue = brokers["crypto"]
    assert venue.positions()["ETH/BTC"] != 0.0
    venue.send({"client_order_id": "mm" + "r" * 30, "symbol": "ETH/BTC", "side": "buy",
                "qty": 0.01, "type": "limit", "price": 1e-9})
    outcome = control.kill(config, mode="operator", brokers=brokers, reason="test")
    assert outcome.sleeves == ["ema:ETH/BTC"] and not outcome.deferred
    assert venue.positions() == {}
    assert venue.open_orders() == []
    with Journal(config.journal) as journal:
        state = journal.load_state("ema:ETH/BTC")[0]
        assert state["trading_state"] == int(TradingState.HALTED)
        assert state["position"] == 0.0
        assert journal.verify().ok
    orders_after_kill = len(venue.orders())
    for later in range(index + 1, len(candles)):
        control.tick_once(config, now_ns=candles["ts"].iloc[later].value + FIVE_MINUTES,
                          brokers=brokers)
    assert len(venue.orders()) == orders_after_kill  # nothing trades until resume


def test_venue_balances_are_journaled_and_a_short_quote_balance_warns(tmp_path):
    rig = Rig(tmp_path, chained_candles(120))
    rig.run(0, 15)  # still warming up: flat, all cash
    assert rig.venue.orders() == [] and rig.state()["cash"] == 10_000.0
    snapshots = [e for e in rig.journal_rows("risk_events") if e["kind"] == "venue_balances"]
    assert snapshots and json.loads(snapshots[0]["data"]) == {"BTC": 10_000.0}
    assert not [e for e in rig.journal_rows("risk_events") if e["kind"] == "balance_short"]
    venue = sqlite3.connect(tmp_path / "venue.sqlite")  # someone withdrew half the cash
    venue.execute("UPDATE account SET value = value / 2 WHERE key = 'cash:BTC'")
    venue.commit()
    venue.close()
    rig.tick(15)
    short = [e for e in rig.journal_rows("risk_events") if e["kind"] == "balance_short"]
    assert len(short) == 1 and json.loads(short[0]["data"])["venue"] == 5_000.0
    assert any("balance short" in title for title, _ in rig.reports[-1].alerts)
    kinds = [e["kind"] for e in rig.journal_rows("risk_events")]
    assert kinds.count("venue_balances") == 2  # journaled again because they changed


def test_orders_are_sized_to_the_venues_lot_size(tmp_path):
    rig = Rig(tmp_path, chained_candles(300), lot_size=0.5, min_notional=20.0)
    rig.run(0, 300)
    orders = rig.venue.orders()
    assert len(orders) > 5
    assert all(abs(o["qty"] / 0.5 - round(o["qty"] / 0.5)) < 1e-9 for o in orders)
    assert sum(r.rejects for r in rig.reports) == 0
    assert rig.state()["position"] == pytest.approx(rig.venue.positions().get("ETH/BTC", 0))


def test_a_partly_filled_cancelled_order_is_completed_at_the_next_close(tmp_path):
    rig = Rig(tmp_path, chained_candles(300))
    rig.broker.faults = ["half"]
    index = rig.tick_until_sent(1)
    half = float(rig.state()["position"])
    assert half == pytest.approx(rig.venue.positions()["ETH/BTC"])
    rig.tick(index)  # the rest is decided again and sent
    assert rig.broker.sent == 2
    assert abs(rig.state()["position"]) == pytest.approx(2 * abs(half), rel=0.02)
    assert rig.state()["position"] == pytest.approx(rig.venue.positions()["ETH/BTC"])
