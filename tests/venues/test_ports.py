"""One conformance suite for every adapter of the ports in :mod:`mmats.brokers.base`.

Each test runs against the paper venue, the ccxt adapter (the local Binance look-alike)
and the OANDA adapter (the local OANDA v20 look-alike), through the real clients. The
report shapes are read from the port's TypedDicts themselves, so the declaration and the
adapters cannot drift apart. A venue rig (:class:`Rig`) holds what differs between venues
as data: the symbol, a valid quantity, a price far from the market, orders the venue
must refuse, and protective levels around the market.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pytest

from mmats.brokers.base import (
    FINAL_STATES,
    ORDER_STATES,
    AccountState,
    Execution,
    InstrumentRules,
    InsufficientFunds,
    OrderRejected,
    OrderReport,
)

from .conftest import KEY, SECRET
from .oanda_server import OandaServer

OANDA_TOKEN = "ports-token-9Xq2Lm7Vb4"
FIVE_MINUTES_NS = 300_000_000_000


@dataclass
class Rig:
    """One adapter and the venue facts the suite needs to drive it."""

    broker: object
    symbol: str
    qty: float                      # a valid market-order quantity
    far_below: float                # a buy limit there rests: the market is well above
    stop: float                     # a long's stop-loss level, below the market
    take: float                     # a long's take-profit level, above the market
    # orders the venue refuses, by the rule they break: {rule: (qty, expected error)}
    refused: dict = field(default_factory=dict)


def _paper(tmp_path) -> Rig:
    from mmats.brokers.paper import PaperBroker
    from mmats.brokers.replay import ReplayFeed

    close = 0.05 * np.exp(np.cumsum(np.random.default_rng(3).normal(0, 0.001, 24)))
    open_ = np.concatenate([[close[0]], close[:-1]])
    candles = pd.DataFrame({
        "ts": pd.date_range("2024-01-01", periods=len(close), freq="5min", tz="UTC"),
        "open": open_, "high": np.maximum(open_, close) * 1.001,
        "low": np.minimum(open_, close) * 0.999, "close": close, "volume": 100.0})
    feed = ReplayFeed({"ETH/BTC": candles}, "5m")
    now = int(feed.close_times("ETH/BTC")[-1])
    # lot_size given as an int, as a hand-written configuration would
    broker = PaperBroker(tmp_path / "venue.sqlite", feed, "5m", cash=10.0, fee_bps=10,
                         lot_size=1, tick_size=0.000001, min_notional=0.0001,
                         symbols=["ETH/BTC"], clock=lambda: now)
    return Rig(broker, "ETH/BTC", qty=2.0, far_below=0.01, stop=0.04, take=0.06,
               refused={"lot size": (2.5, OrderRejected),
                        "insufficient funds": (1000.0, InsufficientFunds)})


def _ccxt(request) -> Rig:
    server = request.getfixturevalue("server")  # tests/venues/conftest.py
    from mmats.brokers.ccxt_broker import CcxtBroker

    broker = CcxtBroker("binance", api_key=KEY, secret=SECRET, base_url=server.url,
                        timeout_s=5.0, retries=0, backoff_s=0.01, rate_limit=False,
                        symbols=["BTC/USDT"], sleep=lambda _: None)
    return Rig(broker, "BTC/USDT", qty=0.01, far_below=10_000.0, stop=19_000.0,
               take=21_000.0,
               refused={"lot size": (0.0001, OrderRejected),
                        "insufficient funds": (1.0, InsufficientFunds)})  # 20 000 USDT


def _oanda(request) -> Rig:
    from mmats.brokers.oanda_broker import OandaBroker

    server = OandaServer(token=OANDA_TOKEN).start()
    request.addfinalizer(server.stop)
    broker = OandaBroker(server.account_id, OANDA_TOKEN, base_url=server.url, timeout_s=2.0,
                         sleep=lambda _: None)
    request.addfinalizer(broker.close)
    return Rig(broker, "EUR/USD", qty=1000.0, far_below=0.5, stop=1.05, take=1.15,
               refused={"minimum trade size": (0.4, OrderRejected),
                        "insufficient margin": (1e8, InsufficientFunds)})


@pytest.fixture(params=["paper", "ccxt", "oanda"])
def rig(request, tmp_path) -> Rig:
    made = {"paper": lambda: _paper(tmp_path), "ccxt": lambda: _ccxt(request),
            "oanda": lambda: _oanda(request)}[request.param]()
    yield made
    if request.param == "paper":
        made.broker.close()


def order(rig, cid, side="buy", qty=None, kind="market", price=None) -> dict:
    return {"client_order_id": cid, "symbol": rig.symbol, "side": side,
            "qty": rig.qty if qty is None else qty, "type": kind, "price": price,
            "time_in_force": "GTC"}


def protective(rig, cids=("mm-sl-1", "mm-tp-1")) -> dict:
    return {"symbol": rig.symbol, "side": "sell", "qty": rig.qty,
            "stop_loss": {"client_order_id": cids[0], "price": rig.stop},
            "take_profit": {"client_order_id": cids[1], "price": rig.take}}


# -- checking a value against a TypedDict ------------------------------------------------

def _conforms(value, hint) -> bool:
    """Whether ``value`` is of the annotated type (the few forms the ports use)."""
    origin = typing.get_origin(hint)
    if hint is type(None):
        return value is None
    if hint is float:  # a float, not an int or bool that happens to compare equal
        return isinstance(value, float)
    if hint is str:
        return isinstance(value, str)
    if origin in (typing.Union, types.UnionType):
        return any(_conforms(value, arm) for arm in typing.get_args(hint))
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if origin is dict:
        key_type, value_type = typing.get_args(hint)
        return isinstance(value, dict) and all(
            _conforms(k, key_type) and _conforms(v, value_type) for k, v in value.items())
    raise NotImplementedError(f"no check for {hint!r}")


def assert_shape(record: dict, declared, where: str) -> None:
    """``record`` has every required key of ``declared``, no key it does not declare, and
    each value of the declared type."""
    hints = typing.get_type_hints(declared)
    missing = declared.__required_keys__ - record.keys()
    unknown = record.keys() - hints.keys()
    assert not missing and not unknown, (
        f"{where}: missing {sorted(missing)}, undeclared {sorted(unknown)} in {record}")
    wrong = {key: value for key, value in record.items() if not _conforms(value, hints[key])}
    assert not wrong, f"{where}: values not of the declared type {wrong} in {record}"


def assert_report(report: dict, where: str) -> None:
    assert_shape(report, OrderReport, where)
    assert report["status"] in ORDER_STATES
    assert 0.0 <= report["filled_qty"] <= report["qty"] * (1 + 1e-12), where
    assert report["fee"] >= 0.0, where
    assert ("type" in report) == ("stop_price" in report), f"{where}: {report}"


# -- the suite ----------------------------------------------------------------------------

def test_implements_the_ports(rig):
    assert isinstance(rig.broker, Execution)
    assert isinstance(rig.broker, AccountState)


def test_instrument_rules_are_non_negative_floats(rig):
    rules = rig.broker.instrument(rig.symbol)
    assert_shape(rules, InstrumentRules, "instrument()")
    assert all(value >= 0.0 for value in rules.values()), rules


def test_a_market_order_reports_the_documented_keys_and_lookup_finds_it(rig):
    report = rig.broker.send(order(rig, "mm-mkt-1"))
    assert_report(report, "send()")
    assert report["client_order_id"] == "mm-mkt-1"
    assert (report["symbol"], report["side"]) == (rig.symbol, "buy")
    assert report["status"] == "filled" and report["filled_qty"] > 0
    assert report["avg_price"] > 0
    assert "type" not in report  # not a protective leg

    found = rig.broker.lookup("mm-mkt-1", rig.symbol)
    assert_report(found, "lookup()")
    assert found == report
    assert rig.broker.lookup("mm-never-sent", rig.symbol) is None


def test_a_limit_far_from_the_market_rests_until_cancelled(rig):
    resting = rig.broker.send(order(rig, "mm-lim-1", kind="limit", price=rig.far_below))
    assert_report(resting, "send() of a limit")
    assert (resting["status"], resting["filled_qty"]) == ("open", 0.0)
    assert resting["avg_price"] is None

    listed = rig.broker.open_orders(rig.symbol)
    for item in listed:
        assert_report(item, "open_orders()")
    assert [o["client_order_id"] for o in listed] == ["mm-lim-1"]
    assert [o["client_order_id"] for o in rig.broker.open_orders()] == ["mm-lim-1"]
    assert listed[0] == rig.broker.lookup("mm-lim-1", rig.symbol)

    done = rig.broker.cancel("mm-lim-1", rig.symbol)
    assert_report(done, "cancel()")
    assert done["client_order_id"] == "mm-lim-1"
    assert done["status"] in FINAL_STATES and done["status"] == "canceled"
    assert done["filled_qty"] == 0.0 and isinstance(done["reason"], str)
    assert rig.broker.open_orders(rig.symbol) == []
    assert rig.broker.lookup("mm-lim-1", rig.symbol) == done


def test_cancel_of_an_order_the_venue_never_had_is_none(rig):
    assert rig.broker.cancel("mm-never-sent", rig.symbol) is None


def test_balances_and_positions_are_floats_and_a_buy_goes_long(rig):
    before = rig.broker.positions()
    balances = rig.broker.balances()
    assert balances and _conforms(balances, dict[str, float]), balances
    assert _conforms(before, dict[str, float]), before

    filled = rig.broker.send(order(rig, "mm-pos-1"))["filled_qty"]
    after = rig.broker.positions()
    assert _conforms(after, dict[str, float]), after
    assert after[rig.symbol] > 0
    # a spot venue withholds a fee taken in the base asset from what is received
    assert after[rig.symbol] - before.get(rig.symbol, 0.0) == pytest.approx(
        filled, rel=0.01)
    assert all(value != 0.0 for value in after.values()), "zero positions are omitted"


def test_protect_returns_one_report_per_leg(rig):
    rig.broker.send(order(rig, "mm-entry-1"))
    legs = rig.broker.protect(protective(rig))
    assert len(legs) == 2
    for leg in legs:
        assert_report(leg, "protect()")
    by_cid = {leg["client_order_id"]: leg for leg in legs}
    assert set(by_cid) == {"mm-sl-1", "mm-tp-1"}
    stop, take = by_cid["mm-sl-1"], by_cid["mm-tp-1"]
    assert (stop["type"], take["type"]) == ("stop_loss", "take_profit")
    assert stop["stop_price"] == pytest.approx(rig.stop)
    assert take["stop_price"] == pytest.approx(rig.take)
    assert {leg["side"] for leg in legs} == {"sell"}
    assert {leg["status"] for leg in legs} == {"open"}

    resting = {o["client_order_id"]: o for o in rig.broker.open_orders(rig.symbol)}
    assert set(resting) == {"mm-sl-1", "mm-tp-1"}
    for cid in resting:
        assert_report(resting[cid], "open_orders() of a leg")
        assert (resting[cid]["type"], resting[cid]["stop_price"]) == (
            by_cid[cid]["type"], pytest.approx(by_cid[cid]["stop_price"]))
        looked = rig.broker.lookup(cid, rig.symbol)
        assert_report(looked, "lookup() of a leg")
        assert looked["type"] == by_cid[cid]["type"]


@pytest.mark.parametrize("named", ["mm-sl-1", "mm-tp-1"])
def test_cancelling_one_leg_cancels_its_sibling(rig, named):
    rig.broker.send(order(rig, "mm-entry-1"))
    rig.broker.protect(protective(rig))
    done = rig.broker.cancel(named, rig.symbol)
    assert_report(done, "cancel() of a leg")
    assert done["status"] == "canceled" and done["filled_qty"] == 0.0
    assert done["type"] == {"mm-sl-1": "stop_loss", "mm-tp-1": "take_profit"}[named]
    sibling = ({"mm-sl-1", "mm-tp-1"} - {named}).pop()
    other = rig.broker.lookup(sibling, rig.symbol)
    assert_report(other, "lookup() of the sibling")
    assert (other["status"], other["filled_qty"]) == ("canceled", 0.0)
    assert rig.broker.open_orders(rig.symbol) == []
    # cancelling the sibling afterwards answers its final report, as it is
    assert rig.broker.cancel(sibling, rig.symbol)["status"] == "canceled"
    assert rig.broker.positions()[rig.symbol] > 0  # the position itself is untouched


@pytest.mark.parametrize("rule", [0, 1], ids=["rule-checked-here", "rule-checked-there"])
def test_an_order_breaking_a_venue_rule_raises_order_rejected(rig, rule):
    name, (qty, error) = list(rig.refused.items())[rule]
    with pytest.raises(error) as refused:
        rig.broker.send(order(rig, f"mm-bad-{rule}", qty=qty))
    assert isinstance(refused.value, OrderRejected), name
    assert isinstance(refused.value.reason, str) and refused.value.reason, name
    # Never on the venue's books, or (OANDA: insufficient margin is a 201 whose order the
    # venue cancelled at once) there as a final order with nothing filled.
    found = rig.broker.lookup(f"mm-bad-{rule}", rig.symbol)
    if found is not None:
        assert_report(found, f"lookup() of an order refused for {name}")
        assert found["status"] in FINAL_STATES and found["filled_qty"] == 0.0, found
    assert rig.broker.open_orders(rig.symbol) == []
