"""Protective stops resting at the local Binance look-alike, through the real ccxt client
and the runner's in-process ticks: an entry's stop-loss and take-profit rest as one OCO
order list with the kernel's levels, are replaced when the kernel moves the stop and
cancelled on exit, and a stop the venue fills between ticks (the server's price moved
through it) is booked by the next tick as the kernel's stop fill.

The strategy is scripted in the candles' volume (last digit: 1 flat, 2 half long, 3
long, 0 keep); its stop is 1 % and its take-profit 2 % of the close."""

from __future__ import annotations

import textwrap
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest
import yaml

from mmats.live import control
from mmats.live.config import load_config
from mmats.live.journal import Journal
from mmats.types import FillReason

from .test_operator_e2e import (
    CASH_BTC,
    FIVE_MINUTES_NS,
    _binance,
    _fast_ccxt,
    _venue_price,
)

SLEEVE = "scripted:ETH/BTC"
SCRIPTED = textwrap.dedent('''
    import numpy as np
    from numba import njit

    PARAMS = {"stop_pct": [1.0], "take_pct": [2.0]}
    DEFAULTS = {"stop_pct": 1.0, "take_pct": 2.0}


    def warmup(stop_pct, take_pct):
        return 1


    @njit(cache=False)
    def signal(open, high, low, close, volume, stop_pct, take_pct):
        n = close.shape[0]
        exposure = np.full(n, np.nan)
        for i in range(n):
            code = int(round(volume[i])) % 10
            if code == 1:
                exposure[i] = 0.0
            elif code == 2:
                exposure[i] = 0.5
            elif code == 3:
                exposure[i] = 1.0
        return exposure, close * stop_pct / 100.0, close * take_pct / 100.0
''')


def candles_for(closes, codes):
    close = np.asarray(closes, dtype=float)
    open_ = np.concatenate([[close[0]], close[:-1]])
    return pd.DataFrame({
        "ts": pd.date_range("2024-01-01", periods=len(close), freq="5min", tz="UTC"),
        "open": open_, "high": np.maximum(open_, close) * 1.0005,
        "low": np.minimum(open_, close) * 0.9995, "close": close,
        "volume": 100.0 + np.asarray(codes, dtype=float)})


class Venue:
    """The Binance look-alike, a prod operator configuration and in-process ticks."""

    def __init__(self, folder, candles):
        self.candles = candles
        self.server = _binance(candles)
        (folder / "scripted.py").write_text(SCRIPTED)
        path = folder / "live.yaml"
        path.write_text(yaml.safe_dump({
            "mode": "operator", "environment": "prod",
            "venues": {"binance": {"exchange": "binance", "base_url": self.server.url,
                                   "timeout_s": 2}},
            "markets": {"crypto": {"type": "crypto", "feed": "binance",
                                   "execution": "binance", "symbols": ["ETH/BTC"],
                                   "timeframe": "5m"}},
            "models": [{"id": "scripted", "strategy": str(folder / "scripted.py"),
                        "market": "crypto", "params": {"stop_pct": 1.0, "take_pct": 2.0},
                        "costs": {"fee_bps": 10}, "risk": {"allow_short": False}}],
            "journal": str(folder / "journal.sqlite"), "data_root": str(folder / "data"),
            "notifications": [f"file://{folder / 'notes.log'}"]}))
        self.config = load_config(path)
        self.broker = _fast_ccxt(self.server.url)

    def tick(self, index, *, price=None):
        close = self.candles["ts"].iloc[index].value + FIVE_MINUTES_NS
        self.server.set_now(close // 1_000_000)
        self.server.set_price("ETHBTC", price if price is not None else _venue_price(
            self.candles["close"].iloc[index]))
        return control.tick_once(self.config, cash=CASH_BTC, now_ns=close, mode="operator",
                                 brokers={"crypto": self.broker},
                                 sources={"binance": self.broker})

    def state(self):
        with Journal(self.config.journal) as journal:
            return journal.load_state(SLEEVE)[0]

    def fills(self):
        with Journal(self.config.journal) as journal:
            return journal.rows("fills")

    def legs(self, status=("NEW",)):
        return {o.type: o for o in self.server.orders
                if o.type in ("STOP_LOSS_LIMIT", "LIMIT_MAKER") and o.status in status}

    def venue_position(self) -> float:
        free, locked = self.server.balance("ETH")
        return float(free + locked)


@pytest.fixture
def venue_factory(tmp_path):
    made = []

    def make(closes, codes):
        venue = Venue(tmp_path, candles_for(closes, codes))
        made.append(venue)
        return venue

    yield make
    for venue in made:
        venue.server.stop()


FLAT = [0.05] * 20


def test_an_entry_rests_an_oco_with_the_kernels_levels(venue_factory):
    venue = venue_factory(FLAT + [0.05, 0.0501, 0.0502], [1] * 20 + [3, 0, 0])
    venue.tick(20)  # warms up on 20 bars, decides long at the last: bought and protected
    state = venue.state()
    assert state["position"] > 0
    legs = venue.legs()
    assert set(legs) == {"STOP_LOSS_LIMIT", "LIMIT_MAKER"}
    stop, take = legs["STOP_LOSS_LIMIT"], legs["LIMIT_MAKER"]
    assert stop.list_id == take.list_id >= 0 and stop.side == take.side == "SELL"
    assert float(stop.stop_price) == pytest.approx(float(state["stop_price"]), abs=1e-5)
    assert float(take.price) == pytest.approx(float(state["take_profit_price"]), abs=1e-5)
    assert stop.price < stop.stop_price  # the stop-limit's limit lies below its trigger
    assert float(stop.qty) == pytest.approx(float(state["position"]), abs=0.001)
    assert stop.client_order_id.startswith("mm") and take.client_order_id.startswith("mm")
    venue.tick(21)  # neither cancelled as strays nor holding the sleeve
    assert venue.legs() == legs
    with Journal(venue.config.journal) as journal:
        kinds = [e["kind"] for e in journal.rows("risk_events")]
    assert "stray_order_cancelled" not in kinds
    assert venue.state()["position"] == pytest.approx(venue.venue_position(), abs=1e-12)


def test_a_moved_stop_is_replaced_and_an_exit_cancels_the_legs(venue_factory):
    closes = FLAT + [0.05, 0.0502, 0.0504, 0.0505, 0.0505]
    venue = venue_factory(closes, [1] * 20 + [2, 3, 0, 1, 0])
    venue.tick(20)
    first = venue.legs()
    assert float(first["STOP_LOSS_LIMIT"].stop_price) == pytest.approx(0.0495, abs=1e-5)
    venue.tick(21)  # adds to a full position at 0.0502: the kernel moves the stop up
    second = venue.legs()
    state = venue.state()
    assert all(leg.status == "CANCELED" for leg in first.values())
    assert float(second["STOP_LOSS_LIMIT"].stop_price) == pytest.approx(
        float(state["stop_price"]), abs=1e-5) == pytest.approx(0.0502 * 0.99, abs=1e-5)
    assert float(second["STOP_LOSS_LIMIT"].qty) == pytest.approx(float(state["position"]),
                                                                 abs=0.001)
    venue.tick(22)
    assert venue.legs() == second
    venue.tick(23)  # flat decided: the legs are cancelled, then one market sell
    assert venue.legs() == {}
    assert all(leg.status == "CANCELED" for leg in second.values())
    sells = [o for o in venue.server.orders if o.side == "SELL" and o.executed_qty > 0]
    assert len(sells) == 1 and sells[0].type == "MARKET"
    assert venue.state()["position"] == pytest.approx(venue.venue_position(), abs=1e-12)


def test_a_stop_filled_between_ticks_is_booked_as_the_kernels_stop_fill(venue_factory):
    closes = FLAT + [0.05, 0.0492, 0.0491]
    venue = venue_factory(closes, [1] * 20 + [3, 0, 0])
    venue.tick(20)
    legs = venue.legs()
    stop = legs["STOP_LOSS_LIMIT"]
    # the runner is down; the market falls through the stop: the venue sells
    venue.server.set_price("ETHBTC", Decimal("0.04935"))
    assert stop.status == "FILLED" and legs["LIMIT_MAKER"].status == "EXPIRED"
    venue.tick(21, price=Decimal("0.04920"))
    fills = venue.fills()
    assert [f["reason"] for f in fills] == [int(FillReason.SIGNAL),
                                           int(FillReason.STOP_LOSS)]
    booked = fills[-1]
    assert booked["client_order_id"] == stop.client_order_id
    assert booked["price"] == pytest.approx(0.04935, rel=1e-12)
    assert booked["qty"] == pytest.approx(float(stop.executed_qty), rel=1e-12)
    commission = sum(f["commission"] for f in stop.fills)  # in BTC, the asset received
    assert booked["fee"] == pytest.approx(float(commission), abs=1e-8)  # 8 decimals sent
    # no double exit: one sell at the venue, the journal's fills are the venue's
    sells = [o for o in venue.server.orders if o.side == "SELL" and o.executed_qty > 0]
    assert sells == [stop]
    traded = [o for o in venue.server.orders if o.executed_qty > 0]
    assert [o.client_order_id for o in traded] == [f["client_order_id"] for f in fills]
    for order, fill in zip(traded, fills, strict=True):
        assert float(order.executed_qty) == pytest.approx(fill["qty"], rel=1e-12)
    state = venue.state()
    assert state["position"] == pytest.approx(venue.venue_position(), abs=1e-12)
    free, locked = venue.server.balance("BTC")
    assert state["cash"] == pytest.approx(float(free + locked), abs=1e-8)
    assert venue.legs() == {}
    venue.tick(22)
    assert len(venue.fills()) == 2
    assert venue.state()["position"] == pytest.approx(venue.venue_position(), abs=1e-12)
