"""Protective stops resting at the local OANDA v20 look-alike, through the real oandapyV20
client and the runner's in-process ticks (the OANDA twin of ``test_resting_stops.py``): an
entry's stop-loss and take-profit rest as dependent orders on its trade with the kernel's
levels, are replaced (on every trade of the position) when the kernel moves the stop,
cancelled on exit, gone with a trade the venue closed, and a stop the venue fills between
ticks (the server's price moved through it) is booked by the next tick as the kernel's stop
fill.

The strategy is scripted in the candles' volume (last digit: 1 flat, 2 half long, 3
long, 0 keep); its stop is 1 % and its take-profit 2 % of the close."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from mmats.brokers.oanda_broker import OandaBroker
from mmats.live import control
from mmats.live.config import load_config
from mmats.live.journal import Journal
from mmats.types import FillReason

from .oanda_server import OandaServer
from .test_resting_stops import SCRIPTED

TOKEN = "stops-token-4Kd9sQ2wLx"
ACCOUNT = "101-004-5550001-001"
SLEEVE = "scripted:EUR/USD"
HOUR_NS = 3_600_000_000_000
CASH_USD = 100_000.0
COMMISSION_RATE = 0.00002  # of the notional, in USD: a fee the booking must carry


def candles_for(closes, codes):
    close = np.asarray(closes, dtype=float)
    open_ = np.concatenate([[close[0]], close[:-1]])
    return pd.DataFrame({
        "ts": pd.date_range("2024-01-01", periods=len(close), freq="1h", tz="UTC"),
        "open": open_, "high": np.maximum(open_, close) * 1.0005,
        "low": np.minimum(open_, close) * 0.9995, "close": close,
        "volume": 100.0 + np.asarray(codes, dtype=float)})


class Venue:
    """The OANDA look-alike, a prod operator configuration and in-process ticks."""

    def __init__(self, folder, candles):
        self.candles = candles
        self.server = OandaServer(token=TOKEN, account_id=ACCOUNT, balance=CASH_USD,
                                  commission_rate=COMMISSION_RATE).start()
        self.server.load_candles("EUR_USD", "H1", candles)
        (folder / "scripted.py").write_text(SCRIPTED)
        path = folder / "live.yaml"
        path.write_text(yaml.safe_dump({
            "mode": "operator", "environment": "prod",
            "venues": {"oanda": {"exchange": "oanda", "base_url": self.server.url,
                                 "timeout_s": 2}},
            "markets": {"forex": {"type": "forex", "feed": "oanda", "execution": "oanda",
                                  "symbols": ["EUR/USD"], "timeframe": "1h"}},
            "models": [{"id": "scripted", "strategy": str(folder / "scripted.py"),
                        "market": "forex", "params": {"stop_pct": 1.0, "take_pct": 2.0},
                        "risk": {"allow_short": False, "leverage": 2}}],
            "journal": str(folder / "journal.sqlite"), "data_root": str(folder / "data"),
            "notifications": [f"file://{folder / 'notes.log'}"]}))
        self.config = load_config(path)
        self.broker = OandaBroker(ACCOUNT, TOKEN, base_url=self.server.url, timeout_s=2)

    def tick(self, index, *, price=None):
        close = self.candles["ts"].iloc[index].value + HOUR_NS
        self.server.set_now(close)
        self.server.set_price("EUR_USD", price if price is not None else float(
            self.candles["close"].iloc[index]))
        return control.tick_once(self.config, cash=CASH_USD, now_ns=close, mode="operator",
                                 brokers={"forex": self.broker},
                                 sources={"oanda": self.broker})

    def state(self):
        with Journal(self.config.journal) as journal:
            return journal.load_state(SLEEVE)[0]

    def fills(self):
        with Journal(self.config.journal) as journal:
            return journal.rows("fills")

    def events(self):
        with Journal(self.config.journal) as journal:
            return [e["kind"] for e in journal.rows("risk_events")]

    def dependent(self, states=("PENDING",)) -> dict[str, list[dict]]:
        """The venue's stop-loss and take-profit orders in ``states``, by type, each list
        in the order placed."""
        found: dict[str, list[dict]] = {}
        for accepted in self.server.orders:
            order = self.server.order(accepted["id"])
            if order["type"] in ("STOP_LOSS", "TAKE_PROFIT") and order["state"] in states:
                found.setdefault(order["type"], []).append(order)
        return found

    def trades(self) -> list[dict]:
        return [t for t in self.server._trades if t["state"] == "OPEN"]

    def venue_position(self) -> float:
        return self.broker.positions().get("EUR/USD", 0.0)


@pytest.fixture
def venue_factory(tmp_path):
    made = []

    def make(closes, codes):
        venue = Venue(tmp_path, candles_for(closes, codes))
        made.append(venue)
        return venue

    yield make
    for venue in made:
        venue.broker.close()
        venue.server.stop()


FLAT = [1.10] * 20


def test_an_entry_rests_a_stop_loss_and_take_profit_on_its_trade(venue_factory):
    venue = venue_factory(FLAT + [1.10, 1.1011, 1.1022], [1] * 20 + [3, 0, 0])
    venue.tick(20)  # warms up on 20 bars, decides long at the last: bought and protected
    state = venue.state()
    assert state["position"] > 0
    legs = venue.dependent()
    assert set(legs) == {"STOP_LOSS", "TAKE_PROFIT"}
    (stop,), (take,) = legs["STOP_LOSS"], legs["TAKE_PROFIT"]
    (trade,) = venue.trades()
    assert stop["tradeID"] == take["tradeID"] == trade["id"]
    assert float(trade["currentUnits"]) == state["position"]
    assert float(stop["price"]) == pytest.approx(float(state["stop_price"]), abs=1e-5)
    assert float(take["price"]) == pytest.approx(float(state["take_profit_price"]), abs=1e-5)
    assert float(stop["price"]) < 1.10 < float(take["price"])
    assert trade["stopLossOrder"]["id"] == stop["id"]  # the trade knows its orders
    assert trade["takeProfitOrder"]["id"] == take["id"]
    stop_cid, take_cid = stop["clientExtensions"]["id"], take["clientExtensions"]["id"]
    assert stop_cid.startswith("mm") and take_cid.startswith("mm")
    with Journal(venue.config.journal) as journal:
        rows = {r["client_order_id"]: r for r in journal.rows("orders")}
    assert rows[stop_cid]["reason"] == int(FillReason.STOP_LOSS)
    assert rows[take_cid]["reason"] == int(FillReason.TAKE_PROFIT)
    assert rows[stop_cid]["broker_status"] == rows[take_cid]["broker_status"] == "open"
    # the port lists them as the two legs, with their levels
    listed = {o["type"]: o for o in venue.broker.open_orders("EUR/USD")}
    assert listed["stop_loss"]["client_order_id"] == stop_cid
    assert listed["stop_loss"]["stop_price"] == float(stop["price"])
    assert listed["take_profit"]["stop_price"] == float(take["price"])
    assert listed["stop_loss"]["side"] == "sell"
    assert listed["stop_loss"]["qty"] == state["position"]
    venue.tick(21)  # neither cancelled as strays nor replaced
    assert venue.dependent() == legs
    assert "stray_order_cancelled" not in venue.events()
    assert venue.state()["position"] == venue.venue_position()


def test_a_moved_stop_is_replaced_on_every_trade_and_an_exit_cancels_the_legs(
        venue_factory):
    closes = FLAT + [1.10, 1.1022, 1.1044, 1.1055, 1.1055]
    venue = venue_factory(closes, [1] * 20 + [2, 3, 0, 1, 0])
    venue.tick(20)
    first = venue.dependent()
    # bought at the ask, 1.10005: the stop lies 1 % of the close below
    assert float(first["STOP_LOSS"][0]["price"]) == pytest.approx(1.10005 - 0.011, abs=1e-5)
    venue.tick(21)  # adds to a full position at 1.1022: a second trade, the stop moves up
    state = venue.state()
    trades = venue.trades()
    assert len(trades) == 2
    assert sum(float(t["currentUnits"]) for t in trades) == state["position"]
    for order in first["STOP_LOSS"] + first["TAKE_PROFIT"]:
        replaced = venue.server.order(order["id"])
        assert replaced["state"] == "CANCELLED"
        cancel = venue.server._transactions[replaced["cancellingTransactionID"]]
        assert cancel["reason"] == "CLIENT_REQUEST"
    second = venue.dependent()
    for kind, field in (("STOP_LOSS", "stop_price"), ("TAKE_PROFIT", "take_profit_price")):
        assert sorted(o["tradeID"] for o in second[kind]) == sorted(t["id"] for t in trades)
        assert {o["price"] for o in second[kind]} == {second[kind][0]["price"]}
        assert float(second[kind][0]["price"]) == pytest.approx(float(state[field]), abs=1e-5)
    assert float(state["stop_price"]) > float(first["STOP_LOSS"][0]["price"]) + 1e-3
    # one leg each at the port, for the whole position, under the journaled client id
    listed = {o["type"]: o for o in venue.broker.open_orders("EUR/USD")}
    assert len(venue.broker.open_orders()) == 2
    with Journal(venue.config.journal) as journal:
        unsettled = {r["client_order_id"] for r in journal.rows("orders")
                     if r["broker_status"] == "open"}
    for leg in listed.values():
        assert leg["qty"] == state["position"]
        assert leg["client_order_id"] in unsettled
    venue.tick(22)
    assert venue.dependent() == second
    assert "stray_order_cancelled" not in venue.events()
    venue.tick(23)  # flat decided: the legs are cancelled, then one market sell
    assert venue.dependent() == {}
    assert venue.trades() == []
    for orders in second.values():
        for order in orders:
            cancel = venue.server._transactions[
                venue.server.order(order["id"])["cancellingTransactionID"]]
            assert cancel["reason"] == "CLIENT_REQUEST"
    sells = [f for f in venue.server.fills() if float(f["units"]) < 0]
    assert len(sells) == 1 and sells[0]["reason"] == "MARKET_ORDER"
    assert len(sells[0]["tradesClosed"]) == 2
    assert venue.state()["position"] == venue.venue_position() == 0.0
    assert venue.broker.open_orders() == []


def test_a_stop_filled_between_ticks_is_booked_as_the_kernels_stop_fill(venue_factory):
    closes = FLAT + [1.10, 1.0825, 1.0815]
    venue = venue_factory(closes, [1] * 20 + [3, 0, 0])
    venue.tick(20)
    legs = venue.dependent()
    (stop,), (take,) = legs["STOP_LOSS"], legs["TAKE_PROFIT"]
    # the runner is down; the market falls through the stop: the venue closes the trade
    venue.server.set_price("EUR_USD", 1.0850)
    stop, take = venue.server.order(stop["id"]), venue.server.order(take["id"])
    assert stop["state"] == "FILLED" and take["state"] == "CANCELLED"
    assert venue.server._transactions[take["cancellingTransactionID"]]["reason"] == \
        "LINKED_TRADE_CLOSED"
    venue_fill = venue.server._transactions[stop["fillingTransactionID"]]
    assert venue_fill["reason"] == "STOP_LOSS_ORDER" and venue_fill["tradesClosed"]
    venue.tick(21, price=1.0825)
    fills = venue.fills()
    assert [f["reason"] for f in fills] == [int(FillReason.SIGNAL),
                                           int(FillReason.STOP_LOSS)]
    booked = fills[-1]
    assert booked["client_order_id"] == stop["clientExtensions"]["id"]
    assert booked["price"] == float(venue_fill["price"]) == pytest.approx(1.08495)
    assert booked["qty"] == -float(venue_fill["units"])
    assert booked["fee"] == pytest.approx(float(venue_fill["commission"]), abs=1e-4)
    assert booked["fee"] > 0
    # no double exit: one sell at the venue, the journal's fills are the venue's
    venue_fills = venue.server.fills()
    sells = [f for f in venue_fills if float(f["units"]) < 0]
    assert sells == [venue_fill]
    assert [f["clientOrderID"] for f in venue_fills] == [f["client_order_id"] for f in fills]
    for venue_fill, fill in zip(venue_fills, fills, strict=True):
        assert abs(float(venue_fill["units"])) == fill["qty"]
        assert float(venue_fill["price"]) == fill["price"]
    state = venue.state()
    assert state["position"] == venue.venue_position() == 0.0
    with Journal(venue.config.journal) as journal:
        final = {r["client_order_id"]: r["broker_status"] for r in journal.rows("orders")}
    assert final[take["clientExtensions"]["id"]] == "canceled"
    assert final[stop["clientExtensions"]["id"]] == "filled"
    assert venue.dependent() == {}
    venue.tick(22)
    assert len(venue.fills()) == 2
    assert venue.state()["position"] == venue.venue_position()
    assert not set(venue.events()) & {"reconcile_mismatch", "reconcile_adopted",
                                      "protective_order_missing", "stray_order_cancelled"}
