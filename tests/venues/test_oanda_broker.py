"""The OANDA adapter against a local OANDA v20 look-alike, through the real oandapyV20 client.

Offline (127.0.0.1), no timed asserts: back-offs go to a recorder instead of sleeping, and
the only waits are the client's short timeout when a fault makes the venue answer late.
"""

import socket
from pathlib import Path

import pandas as pd
import pytest

from mmats.brokers.base import (
    AuthenticationFailed,
    BrokerError,
    InsufficientFunds,
    OrderRejected,
    OutcomeUnknown,
    RateLimited,
    VenueUnavailable,
)
from mmats.brokers.oanda_broker import OandaBroker
from mmats.errors import ConfigError

try:
    from .oanda_server import OandaServer
except ImportError:  # tests/venues collected without its package __init__
    from oanda_server import OandaServer

SAMPLE = Path(__file__).resolve().parents[2] / "mmats" / "data" / "sample" / "fx" / "EUR_USD_1h.parquet"
TOKEN = "tok-SECRET-7f3a9c51e0"
TIMEOUT_S = 0.25


@pytest.fixture(scope="module")
def sample() -> pd.DataFrame:
    return pd.read_parquet(SAMPLE)


@pytest.fixture(scope="module")
def venue(sample):
    with OandaServer(token=TOKEN, delay_s=1.0) as running:
        yield running


@pytest.fixture(autouse=True)
def fresh(venue, sample):
    venue.reset()
    venue.load_candles("EUR_USD", "H1", sample)
    yield
    venue.candles.clear()


@pytest.fixture
def waits() -> list:
    return []


@pytest.fixture
def oanda(venue, waits):
    client = OandaBroker(venue.account_id, TOKEN, base_url=venue.url, timeout_s=TIMEOUT_S,
                         sleep=waits.append)
    yield client
    client.close()


def order(cid="mm-1", side="buy", qty=1000.0, kind="market", price=None, symbol="EUR/USD",
          time_in_force="GTC"):
    return {"client_order_id": cid, "symbol": symbol, "side": side, "qty": qty, "type": kind,
            "price": price, "time_in_force": time_in_force}


def ms(ts) -> int:
    return int(pd.Timestamp(ts).value // 1_000_000)


def requests_to(venue, fragment, method=None):
    return [r for r in venue.requests
            if fragment in r["path"] and (method is None or r["method"] == method)]


# -- candles ----------------------------------------------------------------------------

def test_candles_page_through_the_sample_and_drop_the_bar_still_forming(venue, oanda, sample):
    oanda.page_size = 700
    candles = oanda.fetch_candles("EUR/USD", "1h", since_ms=ms(sample["ts"].iloc[0]))

    # The venue marks the sample's last bar as still forming: every other bar comes back.
    pd.testing.assert_frame_equal(candles, sample.iloc[:-1].reset_index(drop=True))
    pages = requests_to(venue, "/candles")
    assert len(pages) == 8
    for number, page in enumerate(pages):
        params = page["params"]
        assert params["granularity"] == "H1" and params["price"] == "M"
        assert params["dailyAlignment"] == "0" and params["alignmentTimezone"] == "UTC"
        assert int(params["count"]) <= 700
        assert ("includeFirst" in params) == (number > 0)
    # Each page resumes after the last bar of the previous one: no duplicates, no holes.
    assert candles["ts"].is_unique and candles["ts"].is_monotonic_increasing


def test_candles_resume_from_a_since_and_stop_at_the_limit(oanda, sample):
    start = sample["ts"].iloc[1234]
    exact = oanda.fetch_candles("EUR/USD", "1h", since_ms=ms(start), limit=10)
    pd.testing.assert_frame_equal(exact, sample.iloc[1234:1244].reset_index(drop=True))

    # A since between two bars starts at the next bar.
    between = oanda.fetch_candles("EUR/USD", "1h", since_ms=ms(start) + 1_800_000, limit=3)
    assert list(between["ts"]) == list(sample["ts"].iloc[1235:1238])


def test_candles_exclude_the_incomplete_last_candle(venue, oanda, sample):
    since = ms(sample["ts"].iloc[-3])
    assert list(oanda.fetch_candles("EUR/USD", "1h", since)["ts"]) == list(
        sample["ts"].iloc[-3:-1])
    latest = oanda.fetch_candles("EUR/USD", "1h", since_ms=None, limit=4)
    assert list(latest["ts"]) == list(sample["ts"].iloc[-5:-1])

    venue.load_candles("EUR_USD", "H1", sample, incomplete_last=False)
    assert list(oanda.fetch_candles("EUR/USD", "1h", since)["ts"]) == list(
        sample["ts"].iloc[-3:])


def test_daily_candles_ask_for_utc_midnight_alignment(venue, oanda, sample):
    daily = (sample.set_index("ts").resample("1D")
             .agg({"open": "first", "high": "max", "low": "min", "close": "last",
                   "volume": "sum"}).dropna().reset_index())
    venue.load_candles("EUR_USD", "D", daily)
    candles = oanda.fetch_candles("EUR/USD", "1d", since_ms=ms(daily["ts"].iloc[0]))
    assert len(candles) == len(daily) - 1
    assert (candles["ts"].dt.hour == 0).all()
    params = requests_to(venue, "/candles")[-1]["params"]
    assert params["granularity"] == "D"
    assert (params["dailyAlignment"], params["alignmentTimezone"]) == ("0", "UTC")
    assert list(candles.columns) == ["ts", "open", "high", "low", "close", "volume"]


def test_unknown_timeframe_and_empty_history(oanda):
    with pytest.raises(ConfigError, match="2h"):
        oanda.fetch_candles("EUR/USD", "2h", since_ms=0)
    empty = oanda.fetch_candles("USD/JPY", "1h", since_ms=0)
    assert empty.empty and list(empty.columns) == ["ts", "open", "high", "low", "close",
                                                   "volume"]


def test_price(venue, oanda):
    venue.set_price("EUR_USD", 1.2, half_spread=0.0001)
    quote = oanda.price("EUR/USD")
    assert (quote["bid"], quote["ask"]) == (1.1999, 1.2001)
    assert quote["ts"].tzname() == "UTC"


# -- orders -----------------------------------------------------------------------------

def test_market_order_fills_with_units_signed_and_the_client_id_at_the_venue(venue, oanda):
    venue.reset(commission_rate=0.0001)
    report = oanda.send(order("mm-buy", qty=1000.7))
    assert report == {"client_order_id": "mm-buy", "venue_order_id": venue.orders[0]["id"],
                      "symbol": "EUR/USD", "side": "buy", "qty": 1000.0, "filled_qty": 1000.0,
                      "avg_price": 1.10005, "fee": pytest.approx(0.11), "status": "filled",
                      "reason": None}
    sent = venue.orders[0]["body"]
    assert sent["units"] == "1000" and sent["type"] == "MARKET" and sent["timeInForce"] == "FOK"
    assert sent["clientExtensions"]["id"] == sent["tradeClientExtensions"]["id"] == "mm-buy"

    sold = oanda.send(order("mm-sell", side="sell", qty=1300, time_in_force="IOC"))
    assert (sold["status"], sold["filled_qty"], sold["avg_price"]) == ("filled", 1300.0, 1.09995)
    assert venue.orders[1]["body"]["units"] == "-1300"
    assert venue.orders[1]["body"]["timeInForce"] == "IOC"
    assert oanda.positions() == {"EUR/USD": -300.0}
    [trade] = oanda.trades()
    assert (trade["units"], trade["client_id"]) == (-300.0, "mm-sell")
    assert oanda.lookup("mm-buy", "EUR/USD") == report


def test_account_state(venue, oanda):
    assert oanda.balances() == {"USD": 100_000.0}
    oanda.send(order(qty=10_000))
    summary = oanda.account_summary()
    assert summary["currency"] == "USD"
    assert summary["margin_used"] == pytest.approx(10_000 * 1.1 / 20)
    assert summary["nav"] == pytest.approx(100_000 - 1.0)  # the spread, marked at the bid
    assert summary["margin_available"] == pytest.approx(summary["nav"] - summary["margin_used"])


def test_limit_order_rests_is_listed_and_cancelled(venue, oanda):
    report = oanda.send(order("mm-lim", qty=500, kind="limit", price=1.0912345))
    assert (report["status"], report["filled_qty"], report["avg_price"]) == ("open", 0.0, None)
    sent = venue.orders[0]["body"]
    assert (sent["price"], sent["timeInForce"], sent["type"]) == ("1.09123", "GTC", "LIMIT")

    assert oanda.open_orders() == [report]
    assert oanda.open_orders("EUR/USD") == [report]
    assert oanda.open_orders("USD/JPY") == []
    assert oanda.lookup("mm-lim", "EUR/USD") == report

    cancelled = oanda.cancel("mm-lim", "EUR/USD")
    assert (cancelled["status"], cancelled["reason"]) == ("canceled", "CLIENT_REQUEST")
    assert oanda.open_orders() == []
    # Cancelling again is answered with the order as it is; an unknown id with None.
    assert oanda.cancel("mm-lim", "EUR/USD") == cancelled
    assert oanda.cancel("mm-never", "EUR/USD") is None
    assert oanda.lookup("mm-never", "EUR/USD") is None


def test_resting_limit_fills_when_the_market_reaches_it(venue, oanda):
    oanda.send(order("mm-lim", side="sell", qty=2000, kind="limit", price=1.105))
    venue.set_price("EUR_USD", 1.10498)
    assert oanda.lookup("mm-lim", "EUR/USD")["status"] == "open"  # bid 1.10493 < 1.105
    venue.set_price("EUR_USD", 1.10506)
    filled = oanda.lookup("mm-lim", "EUR/USD")
    assert (filled["status"], filled["filled_qty"], filled["avg_price"]) == ("filled", 2000.0,
                                                                            1.10501)
    assert oanda.positions() == {"EUR/USD": -2000.0}
    # A filled order cannot be cancelled: cancel reports it as filled.
    assert oanda.cancel("mm-lim", "EUR/USD")["status"] == "filled"


def protective(side="sell", qty=1500.0, stop=1.0912345, take=1.12, cids=("mm-s", "mm-t")):
    return {"symbol": "EUR/USD", "side": side, "qty": qty,
            "stop_loss": None if stop is None else {"client_order_id": cids[0], "price": stop},
            "take_profit": None if take is None else {"client_order_id": cids[1],
                                                      "price": take}}


def dependent(venue, state="PENDING"):
    return [o for o in (venue.order(a["id"]) for a in venue.orders)
            if o["type"] in ("STOP_LOSS", "TAKE_PROFIT") and o["state"] == state]


def test_protective_legs_rest_on_every_trade_and_report_as_one_order(venue, oanda):
    oanda.send(order("mm-a", qty=1000))
    oanda.send(order("mm-b", qty=500))  # a second trade: OANDA does not merge them
    stop, take = oanda.protect(protective())
    assert (stop["type"], stop["stop_price"], stop["status"]) == ("stop_loss", 1.09123, "open")
    assert (take["type"], take["stop_price"]) == ("take_profit", 1.12)
    assert (stop["client_order_id"], stop["side"], stop["qty"]) == ("mm-s", "sell", 1500.0)
    resting = dependent(venue)
    trades = sorted(t["trade_id"] for t in oanda.trades())
    assert sorted((o["type"], o["tradeID"], o["price"], o["clientExtensions"]["id"])
                  for o in resting) == [
        ("STOP_LOSS", trades[0], "1.09123", "mm-s"), ("STOP_LOSS", trades[1], "1.09123",
                                                      "mm-s.2"),
        ("TAKE_PROFIT", trades[0], "1.12000", "mm-t"),
        ("TAKE_PROFIT", trades[1], "1.12000", "mm-t.2")]
    assert sorted(oanda.open_orders("EUR/USD"), key=lambda r: r["type"]) == [stop, take]
    assert oanda.open_orders("USD/JPY") == []
    assert oanda.lookup("mm-s", "EUR/USD") == stop
    cancelled = oanda.cancel("mm-s", "EUR/USD")  # every trade's stop goes, and the take
    assert (cancelled["status"], cancelled["reason"]) == ("canceled", "CLIENT_REQUEST")
    assert dependent(venue) == [] and oanda.open_orders() == []
    gone = oanda.lookup("mm-t", "EUR/USD")  # one cancels the other, as the port promises
    assert (gone["status"], gone["reason"], gone["qty"]) == ("canceled", "CLIENT_REQUEST",
                                                             1500.0)
    assert sorted(o["clientExtensions"]["id"] for o in dependent(venue, "CANCELLED")) == [
        "mm-s", "mm-s.2", "mm-t", "mm-t.2"]
    assert oanda.positions() == {"EUR/USD": 1500.0}  # the trades stay open, unprotected


def test_legs_name_each_other_and_a_leg_placed_alone_cancels_only_itself(venue, oanda):
    oanda.send(order("mm-a", qty=1000))
    oanda.send(order("mm-b", qty=500))
    oanda.protect(protective(stop=None, cids=("-", "mm-t0")))
    assert sorted(o["clientExtensions"]["comment"] for o in dependent(venue)) == [
        "sell 1000 (1/2)", "sell 500 (2/2)"]
    assert oanda.cancel("mm-t0", "EUR/USD")["status"] == "canceled"
    oanda.protect(protective(take=None, cids=("mm-s0", "-")))
    oanda.protect(protective(stop=None, cids=("-", "mm-t1")))  # placed apart: not siblings
    assert oanda.cancel("mm-t1", "EUR/USD")["status"] == "canceled"
    assert oanda.lookup("mm-s0", "EUR/USD")["status"] == "open"
    assert oanda.cancel("mm-s0", "EUR/USD")["status"] == "canceled"
    oanda.protect(protective())
    assert sorted(o["clientExtensions"]["comment"] for o in dependent(venue)) == [
        "sell 1000 (1/2) oco mm-s", "sell 1000 (1/2) oco mm-t", "sell 500 (2/2) oco mm-s",
        "sell 500 (2/2) oco mm-t"]


@pytest.mark.parametrize("named", ["mm-s", "mm-t"])
def test_cancelling_either_leg_clears_a_sibling_cut_short(venue, oanda, named):
    """A crash while the take-profit was placed: the stop rests on both trades, the take's
    order on the second trade rests too, its own order never went out. Cancelling either
    leg's id clears all of them."""
    oanda.send(order("mm-a", qty=1000))
    oanda.send(order("mm-b", qty=500))
    first, second = sorted(oanda.trades(), key=lambda t: int(t["trade_id"]))
    for kind, cid, trade, comment in (
            ("stop_loss", "mm-s.2", second, "sell 500 (2/2) oco mm-t"),
            ("stop_loss", "mm-s", first, "sell 1000 (1/2) oco mm-t"),
            ("take_profit", "mm-t.2", second, "sell 500 (2/2) oco mm-s")):  # then the crash
        oanda._place_dependent(kind, cid, trade, "1.09123" if kind == "stop_loss"
                               else "1.12000", comment, "EUR/USD")
    assert len(dependent(venue)) == 3
    done = oanda.cancel(named, "EUR/USD")
    assert done is None if named == "mm-t" else done["status"] == "canceled"
    assert dependent(venue) == [] and oanda.open_orders() == []


def test_a_triggered_stop_closes_every_trade_and_cancels_the_take_profit(venue, oanda):
    oanda.send(order("mm-a", qty=1000))
    oanda.send(order("mm-b", qty=500))
    oanda.protect(protective())
    venue.set_price("EUR_USD", 1.0900)  # the bid, 1.08995, is through the stop
    stop = oanda.lookup("mm-s", "EUR/USD")
    assert (stop["status"], stop["filled_qty"], stop["avg_price"]) == ("filled", 1500.0,
                                                                       1.08995)
    take = oanda.lookup("mm-t", "EUR/USD")
    assert (take["status"], take["filled_qty"], take["reason"]) == (
        "canceled", 0.0, "LINKED_TRADE_CLOSED")
    assert oanda.positions() == {} and oanda.open_orders() == []
    assert oanda.cancel("mm-t", "EUR/USD") == take  # final: answered as it is
    assert [f["reason"] for f in venue.fills()][-2:] == ["STOP_LOSS_ORDER"] * 2


def test_a_trade_closed_by_an_order_takes_its_protective_orders_with_it(venue, oanda):
    oanda.send(order("mm-a", qty=1000))
    oanda.protect(protective(qty=1000))
    oanda.send(order("mm-x", side="sell", qty=1000))
    for cid in ("mm-s", "mm-t"):
        gone = oanda.lookup(cid, "EUR/USD")
        assert (gone["status"], gone["reason"], gone["filled_qty"]) == (
            "canceled", "LINKED_TRADE_CLOSED", 0.0)
    assert dependent(venue) == [] and oanda.open_orders() == []


def test_a_stop_already_crossed_fills_at_once(venue, oanda):
    oanda.send(order("mm-a", side="sell", qty=1000))  # short: a buy stop above
    stop, take = oanda.protect(protective(side="buy", qty=1000, stop=1.0999, take=1.05))
    assert (stop["status"], stop["side"], stop["avg_price"]) == ("filled", "buy", 1.10005)
    # its trade closed: the take-profit is never sent, and reported as cancelled
    assert (take["status"], take["filled_qty"], take["client_order_id"]) == (
        "canceled", 0.0, "mm-t")
    assert oanda.positions() == {} and venue.rejections == []


def test_protective_orders_need_the_positions_trades(venue, oanda):
    with pytest.raises(OrderRejected) as refused:
        oanda.protect(protective())  # nothing held
    assert refused.value.reason == "position_mismatch"
    oanda.send(order("mm-a", qty=1000))
    with pytest.raises(OrderRejected) as refused:
        oanda.protect(protective(qty=600))  # part of a trade cannot be protected
    assert refused.value.reason == "position_mismatch"
    with pytest.raises(OrderRejected) as refused:
        oanda.protect(protective(side="buy", qty=1000))  # the wrong side
    assert refused.value.reason == "position_mismatch"
    with pytest.raises(OrderRejected):
        oanda.protect(protective(qty=1000, stop=None, take=None))
    assert venue.count("POST", r"/orders$") == 1  # only the entry was sent


def test_a_refused_leg_withdraws_the_legs_placed_before_it(venue, oanda):
    oanda.send(order("mm-a", qty=1000))
    oanda.protect(protective(qty=1000, stop=None, cids=("-", "mm-t0")))
    with pytest.raises(OrderRejected) as refused:  # the trade has a take-profit already
        oanda.protect(protective(qty=1000))
    assert refused.value.reason == "TAKE_PROFIT_ORDER_ALREADY_EXISTS"
    assert oanda.lookup("mm-s", "EUR/USD")["status"] == "canceled"
    assert [o["clientExtensions"]["id"] for o in dependent(venue)] == ["mm-t0"]


def test_cancel_clears_the_orders_of_a_leg_cut_short(venue, oanda):
    """A crash between a leg's orders: those on the later trades rest, the leg's own order
    (placed last) never went out; cancelling the leg's id clears them."""
    oanda.send(order("mm-a", qty=1000))
    oanda.send(order("mm-b", qty=500))
    second = max(oanda.trades(), key=lambda t: int(t["trade_id"]))
    oanda._place_dependent("stop_loss", "mm-s.2", second, "1.09123", "sell 500 (2/2)",
                           "EUR/USD")  # then the crash
    assert oanda.lookup("mm-s", "EUR/USD") is None
    assert [o["client_order_id"] for o in oanda.open_orders()] == ["mm-s"]  # its .2
    assert oanda.cancel("mm-s", "EUR/USD") is None
    assert dependent(venue) == [] and oanda.open_orders() == []


def test_instrument_rules_and_rounding(venue, oanda):
    assert oanda.instrument("EUR/USD") == {"lot_size": 1.0, "tick_size": 1e-05,
                                            "min_notional": 0.0}
    assert oanda.instrument("DE30/EUR") == {"lot_size": 0.1, "tick_size": 0.1,
                                             "min_notional": 0.0}
    report = oanda.send(order("mm-dax", qty=1.27, symbol="DE30/EUR"))
    assert report["qty"] == report["filled_qty"] == 1.2
    assert venue.orders[0]["body"]["units"] == "1.2"

    with pytest.raises(OrderRejected) as below:
        oanda.send(order("mm-tiny", qty=0.4))
    assert below.value.reason == "UNITS_MINIMUM_NOT_MET"
    with pytest.raises(OrderRejected) as unknown:
        oanda.send(order("mm-xyz", symbol="XYZ/ABC"))
    assert unknown.value.reason == "INSTRUMENT_UNKNOWN"
    with pytest.raises(OrderRejected, match="side must be buy or sell"):
        oanda.send(order("mm-bad", side="long"))
    assert len(venue.orders) == 1 and len(requests_to(venue, "/orders", "POST")) == 1


def test_venue_rejection_carries_the_reject_reason(venue, oanda):
    oanda.send(order("mm-dup"))
    with pytest.raises(OrderRejected, match="already assigned") as rejected:
        oanda.send(order("mm-dup"))
    assert rejected.value.reason == "CLIENT_ORDER_ID_ALREADY_EXISTS"
    assert len(venue.orders) == 1 and len(venue.rejections) == 1


def test_insufficient_margin_is_rejected_not_filled(venue, oanda):
    with pytest.raises(InsufficientFunds, match="INSUFFICIENT_MARGIN") as short:
        oanda.send(order("mm-big", qty=10_000_000))
    assert short.value.reason == "insufficient_funds"
    assert oanda.positions() == {} and oanda.balances() == {"USD": 100_000.0}
    # The venue did accept and then cancel it: a look-up tells the same story.
    looked = oanda.lookup("mm-big", "EUR/USD")
    assert (looked["status"], looked["filled_qty"], looked["reason"]) == (
        "canceled", 0.0, "INSUFFICIENT_MARGIN")
    # Without leverage, adding to a position runs out of margin; reducing it never does.
    venue.reset(leverage=1.0)
    oanda.send(order("mm-a", qty=90_000))
    with pytest.raises(InsufficientFunds):
        oanda.send(order("mm-b", qty=5_000))
    oanda.send(order("mm-c", side="sell", qty=50_000))
    assert oanda.positions() == {"EUR/USD": 40_000.0}


# -- lost answers ----------------------------------------------------------------------

def test_lost_response_is_outcome_unknown_and_the_lookup_finds_the_order(venue, oanda):
    venue.fail_next("lost_response", method="POST", path="/orders")
    with pytest.raises(OutcomeUnknown, match="look the order up"):
        oanda.send(order("mm-lost"))
    found = oanda.lookup("mm-lost", "EUR/USD")
    assert (found["status"], found["filled_qty"]) == ("filled", 1000.0)
    assert len(venue.orders) == 1
    assert len(requests_to(venue, "/orders", "POST")) == 1  # never re-sent


def test_timeout_on_send_is_outcome_unknown(venue, oanda):
    venue.fail_next("timeout", method="POST", path="/orders")
    with pytest.raises(OutcomeUnknown, match="no answer within"):
        oanda.send(order("mm-slow"))
    assert oanda.lookup("mm-slow", "EUR/USD")["status"] == "filled"
    assert len(venue.orders) == 1 and len(requests_to(venue, "/orders", "POST")) == 1


def test_dropped_connection_on_send_is_outcome_unknown(venue, oanda):
    venue.fail_next("drop", method="POST", path="/orders")
    with pytest.raises(OutcomeUnknown, match="connection dropped"):
        oanda.send(order("mm-drop"))
    assert oanda.lookup("mm-drop", "EUR/USD") is None  # this time it never arrived
    assert venue.orders == []


def test_server_error_on_send_is_outcome_unknown_never_retried(venue, oanda, waits):
    venue.fail_next("500", count=3, method="POST")
    with pytest.raises(OutcomeUnknown):
        oanda.send(order("mm-500"))
    assert len(requests_to(venue, "/orders", "POST")) == 1 and waits == []


def test_rate_limit_on_send_backs_off_and_sends_once(venue, oanda, waits):
    venue.fail_next("429", count=2, method="POST")
    assert oanda.send(order("mm-429"))["status"] == "filled"
    assert waits == [0.5, 1.0]
    assert len(venue.orders) == 1


def test_protocol_errors_on_send(venue, oanda):
    venue.fail_next("wrong_status", method="POST")
    with pytest.raises(VenueUnavailable, match="protocol error"):
        oanda.send(order("mm-200"))
    assert venue.orders == []

    # A 200 whose body shows the order was created: the outcome is unknown, not retryable.
    venue.fail_next("accepted_200", method="POST")
    with pytest.raises(OutcomeUnknown):
        oanda.send(order("mm-200b"))
    assert oanda.lookup("mm-200b", "EUR/USD")["status"] == "filled"


def test_connection_refused_on_send_means_nothing_was_sent(waits):
    with OandaServer(token=TOKEN) as gone:
        client = OandaBroker(gone.account_id, TOKEN, base_url=gone.url, timeout_s=TIMEOUT_S,
                             sleep=waits.append)
        client.instrument("EUR/USD")  # rules cached: the next call is the order itself
    # nothing can have reached the venue: the order is tried again like a read
    with pytest.raises(VenueUnavailable, match="not sent .*4 attempts"):
        client.send(order("mm-refused"))
    assert waits == [0.5, 1.0, 2.0]
    with pytest.raises(VenueUnavailable, match="connection refused"):
        client.positions()
    assert waits == [0.5, 1.0, 2.0] * 2
    assert gone.orders == []


# -- reads: retries and back-off --------------------------------------------------------

def test_rate_limit_backs_off_then_succeeds(venue, oanda, waits):
    venue.fail_next("429", count=3, path="/pricing")
    assert oanda.price("EUR/USD")["ask"] == 1.10005
    assert waits == [0.5, 1.0, 2.0]


def test_persistent_rate_limit_raises_rate_limited(venue, oanda, waits):
    venue.fail_next("429", count=50)
    with pytest.raises(RateLimited, match="429") as limited:
        oanda.balances()
    assert limited.value.retry_after == 8.0
    assert waits == [0.5, 1.0, 2.0, 4.0]
    assert len(requests_to(venue, "/summary")) == 5


def test_server_errors_are_retried_then_succeed(venue, oanda, waits):
    venue.fail_next("503", count=1, path="/openPositions")
    venue.fail_next("500", count=2, path="/openPositions")
    assert oanda.positions() == {}
    assert waits == [0.5, 1.0, 2.0]


def test_persistent_server_errors_raise_venue_unavailable(venue, oanda, waits):
    venue.fail_next("503", count=50)
    with pytest.raises(VenueUnavailable, match="HTTP 503.*4 attempts"):
        oanda.open_orders()
    assert len(requests_to(venue, "/pendingOrders")) == 4 and len(waits) == 3


def test_read_timeout_is_retried(venue, oanda, waits):
    venue.fail_next("timeout", count=1, path="/summary")
    assert oanda.balances() == {"USD": 100_000.0}
    assert waits == [0.5]


def test_persistent_read_timeout_raises_venue_unavailable(venue, oanda):
    venue.fail_next("timeout", count=4, path="/candles")
    with pytest.raises(VenueUnavailable, match="no answer within"):
        oanda.fetch_candles("EUR/USD", "1h", since_ms=0, limit=5)
    assert venue.faults_left() == 0


def test_dropped_connection_on_a_read_is_retried(venue, oanda, waits):
    venue.fail_next("drop", count=2, path="/openTrades")
    assert oanda.trades() == []
    assert waits == [0.5, 1.0]


def test_cancel_whose_answer_timed_out_is_retried_safely(venue, oanda):
    oanda.send(order("mm-lim", qty=100, kind="limit", price=1.0))
    venue.fail_next("timeout", path="/cancel")
    cancelled = oanda.cancel("mm-lim", "EUR/USD")  # done on the first try, 404 on the retry
    assert (cancelled["status"], cancelled["reason"]) == ("canceled", "CLIENT_REQUEST")
    assert len(requests_to(venue, "/cancel")) == 2


def test_a_refused_read_is_a_broker_error(oanda):
    with pytest.raises(BrokerError, match="instrument"):
        oanda.fetch_candles("NOPE/USD", "1h", since_ms=0)


# -- credentials ------------------------------------------------------------------------

def test_bad_token_is_authentication_failed(venue, waits):
    wrong = "wrong-SECRET-1a2b3c4d"
    client = OandaBroker(venue.account_id, wrong, base_url=venue.url, timeout_s=TIMEOUT_S,
                         sleep=waits.append)
    with pytest.raises(AuthenticationFailed, match="HTTP 401") as failed:
        client.balances()
    with pytest.raises(AuthenticationFailed):
        client.send(order("mm-auth"))
    assert venue.orders == [] and waits == []
    assert venue.account_id in str(failed.value)
    assert_no_secret(failed.value, wrong)
    assert wrong not in repr(client) and wrong not in str(client)


def test_account_of_someone_else_is_authentication_failed(venue):
    client = OandaBroker("101-004-9999999-001", TOKEN, base_url=venue.url,
                         timeout_s=TIMEOUT_S)
    with pytest.raises(AuthenticationFailed, match="101-004-9999999-001"):
        client.positions()


def test_credentials_come_from_the_environment(venue, monkeypatch):
    monkeypatch.delenv("OANDA_ACCOUNT_ID", raising=False)
    monkeypatch.delenv("OANDA_TOKEN", raising=False)
    with pytest.raises(AuthenticationFailed, match="OANDA_ACCOUNT_ID"):
        OandaBroker()
    with pytest.raises(AuthenticationFailed, match="OANDA_TOKEN"):
        OandaBroker(venue.account_id)
    monkeypatch.setenv("OANDA_ACCOUNT_ID", venue.account_id)
    monkeypatch.setenv("OANDA_TOKEN", TOKEN)
    assert OandaBroker(base_url=venue.url, timeout_s=TIMEOUT_S).balances() == {"USD": 100_000.0}


def test_environments():
    assert OandaBroker("101-1", TOKEN).environment == "practice"
    assert OandaBroker("101-1", TOKEN, practice=False).environment == "live"
    with pytest.raises(ConfigError, match="base_url"):
        OandaBroker("101-1", TOKEN, base_url="127.0.0.1:1")
    with pytest.raises(ConfigError, match="timeout_s"):
        OandaBroker("101-1", TOKEN, timeout_s=0)


def test_the_token_never_appears_in_errors_or_reprs(venue, oanda):
    caught = []

    def catch(call, *faults):
        for kind, path in faults:
            venue.fail_next(kind, count=10, path=path)
        with pytest.raises(BrokerError) as info:
            call()
        caught.append(info.value)
        venue.reset()

    catch(lambda: oanda.send(order("mm-t1")), ("lost_response", "/orders"))
    catch(lambda: oanda.send(order("mm-t2")), ("timeout", "/orders"))
    catch(lambda: oanda.send(order("mm-t3", qty=1e9)))
    catch(lambda: oanda.positions(), ("drop", "/openPositions"))
    catch(lambda: oanda.balances(), ("429", "/summary"))
    catch(lambda: oanda.price("EUR/USD"), ("timeout", "/pricing"))
    oanda.send(order("mm-t4"))
    catch(lambda: oanda.send(order("mm-t4")))
    assert [type(e) for e in caught] == [OutcomeUnknown, OutcomeUnknown, InsufficientFunds,
                                         VenueUnavailable, RateLimited, VenueUnavailable,
                                         OrderRejected]
    for error in caught:
        assert venue.account_id in str(error)
        assert_no_secret(error, TOKEN)
    assert TOKEN not in repr(oanda) and TOKEN not in str(oanda)


def assert_no_secret(error: BaseException, secret: str) -> None:
    """Neither the error nor anything chained to it shows the secret, and no chained
    exception carries a request (whose headers hold the token)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        assert secret not in str(error) and secret not in repr(error)
        assert getattr(error, "request", None) is None, f"{type(error).__name__} keeps a request"
        error = error.__cause__ or error.__context__


def test_a_stopped_server_refuses_connections():
    # What test_connection_refused_on_send_means_nothing_was_sent relies on.
    with OandaServer(token=TOKEN) as running:
        host, port = running.url.removeprefix("http://").split(":")
    with socket.socket() as probe, pytest.raises(OSError):
        probe.settimeout(1.0)
        probe.connect((host, int(port)))
