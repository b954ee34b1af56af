"""CcxtBroker with the real ccxt client against the local Binance look-alike."""

import email.utils
import socket
import traceback
from decimal import Decimal

import pandas as pd
import pytest

from mmats.brokers.base import (
    AccountState,
    AuthenticationFailed,
    BrokerError,
    Execution,
    InsufficientFunds,
    OrderRejected,
    OutcomeUnknown,
    RateLimited,
    VenueUnavailable,
)
from mmats.brokers.ccxt_broker import CcxtBroker
from mmats.errors import ConfigError

from .binance_server import kline_values
from .conftest import FIRST_BAR_MS, KEY, MINUTE_MS, NOW_MS, SECRET

ORDER = "/api/v3/order"
ACCOUNT = "/api/v3/account"


def market(cid, qty, side="buy", symbol="BTC/USDT", price=None):
    return {"client_order_id": cid, "symbol": symbol, "side": side, "qty": qty,
            "type": "market", "price": price, "time_in_force": "GTC"}


def limit(cid, qty, price, side="buy", symbol="BTC/USDT"):
    return {"client_order_id": cid, "symbol": symbol, "side": side, "qty": qty,
            "type": "limit", "price": price, "time_in_force": "GTC"}


def test_implements_the_ports(broker):
    assert isinstance(broker, Execution) and isinstance(broker, AccountState)


# -- markets and candles -------------------------------------------------------------------

def test_markets_load_lazily_with_one_exchange_info_call(server, broker):
    assert server.requests == []  # nothing at construction
    assert broker.instrument("BTC/USDT") == {"lot_size": 0.001, "tick_size": 0.01,
                                             "min_notional": 10.0}
    assert broker.instrument("ETH/BTC") == {"lot_size": 0.01, "tick_size": 0.000001,
                                            "min_notional": 0.001}  # older MIN_NOTIONAL
    assert server.requests == [("GET", "/api/v3/exchangeInfo")]


def test_fetch_candles_in_the_candle_schema_with_the_forming_bar(broker):
    frame = broker.fetch_candles("BTC/USDT", "1m", FIRST_BAR_MS, limit=3)
    assert list(frame.columns) == ["ts", "open", "high", "low", "close", "volume"]
    assert str(frame["ts"].dtype) == "datetime64[ns, UTC]"
    assert (frame.dtypes.iloc[1:] == "float64").all()
    assert frame["ts"].tolist() == [pd.Timestamp(FIRST_BAR_MS + i * MINUTE_MS, unit="ms",
                                                 tz="UTC") for i in range(3)]
    assert tuple(frame.iloc[0, 1:]) == kline_values(FIRST_BAR_MS, MINUTE_MS)

    forming_open = NOW_MS // MINUTE_MS * MINUTE_MS
    latest = broker.fetch_candles("BTC/USDT", "1m", forming_open - MINUTE_MS)
    assert latest["ts"].iloc[-1] == pd.Timestamp(forming_open, unit="ms", tz="UTC")
    assert tuple(latest.iloc[-1, 1:]) != kline_values(forming_open, MINUTE_MS)  # partial


def test_candle_requests_are_capped_at_the_venue_page_size(server, broker):
    frame = broker.fetch_candles("BTC/USDT", "1m", FIRST_BAR_MS, limit=5000)
    assert len(frame) == 1000


def test_unknown_symbol_and_timeframe_name_the_venue(broker):
    with pytest.raises(ConfigError, match=r"binance has no market 'BTC/USDX'.*BTC/USDT"):
        broker.fetch_candles("BTC/USDX", "1m", FIRST_BAR_MS)
    with pytest.raises(ConfigError, match="binance has no '7m' candles"):
        broker.fetch_candles("BTC/USDT", "7m", FIRST_BAR_MS)


# -- orders --------------------------------------------------------------------------------

def test_market_order_fills_with_rounded_qty_and_fee_in_quote(server, broker):
    report = broker.send(market("mm-buy-1", 0.0105))
    assert report == {"client_order_id": "mm-buy-1", "venue_order_id": "1",
                      "symbol": "BTC/USDT", "side": "buy", "qty": 0.01, "filled_qty": 0.01,
                      "avg_price": 20000.0, "fee": pytest.approx(0.2), "status": "filled",
                      "reason": None, "fee_base": pytest.approx(1e-5)}  # taken in BTC
    sent = server.orders[0]
    assert (sent.client_order_id, sent.qty) == ("mm-buy-1", Decimal("0.010"))
    # Commission is taken in BTC on a buy: 0.1 % of 0.01 BTC, worth 0.2 USDT.
    assert broker.balances() == {"BTC": pytest.approx(1.00999), "USDT": pytest.approx(9800.0)}
    assert broker.positions() == {"BTC/USDT": pytest.approx(1.00999)}


def test_numpy_quantities_are_accepted(server, broker):
    import numpy as np

    assert broker.send(market("mm-np-1", np.float64(0.01)))["status"] == "filled"
    assert broker.send(limit("mm-np-2", np.int64(1), np.float64(100.0)))["status"] == "open"
    assert [o.qty for o in server.orders] == [Decimal("0.010"), Decimal("1.000")]


def test_float_noise_does_not_cost_a_lot(server, broker):
    broker.send(market("mm-noise-1", 3 * 0.1, side="sell"))    # 0.30000000000000004
    broker.send(market("mm-noise-2", 0.7 - 0.4, side="sell"))  # 0.29999999999999993
    broker.send(market("mm-noise-3", 0.2999, side="sell"))     # a real shortfall
    assert [o.qty for o in server.orders] == [Decimal("0.300"), Decimal("0.300"),
                                              Decimal("0.299")]


def test_limit_order_rests_fills_partly_and_is_canceled(server, broker):
    report = broker.send(limit("mm-lim-1", 0.01, 19000.009))
    assert report["status"] == "open" and report["filled_qty"] == 0.0
    assert server.orders[0].price == Decimal("19000.00")  # a buy price rounds down
    assert server.balance("USDT") == (Decimal("9810"), Decimal("190"))
    assert [o["client_order_id"] for o in broker.open_orders("BTC/USDT")] == ["mm-lim-1"]
    assert [o["client_order_id"] for o in broker.open_orders()] == ["mm-lim-1"]

    server.fill("mm-lim-1", qty="0.004")
    partial = broker.lookup("mm-lim-1", "BTC/USDT")
    assert partial["status"] == "partially_filled"
    assert partial["filled_qty"] == pytest.approx(0.004)
    assert partial["avg_price"] == 19000.0
    assert partial["fee"] == pytest.approx(0.004 * 0.001 * 19000)  # from the trades

    canceled = broker.cancel("mm-lim-1", "BTC/USDT")
    assert canceled["status"] == "canceled" and canceled["reason"] == "canceled"
    assert canceled["filled_qty"] == pytest.approx(0.004)
    assert broker.open_orders("BTC/USDT") == []
    assert server.balance("USDT") == (Decimal("9924"), Decimal("0"))
    # Cancelling again reports the final state; an order the venue never had is None.
    assert broker.cancel("mm-lim-1", "BTC/USDT")["status"] == "canceled"
    assert broker.cancel("mm-never", "BTC/USDT") is None
    assert broker.lookup("mm-never", "BTC/USDT") is None


def test_limit_sell_price_rounds_up_and_fills_in_quote_fee(server, broker):
    broker.send(limit("mm-sell-1", 0.5, 20000.001, side="sell"))
    assert server.orders[0].price == Decimal("20000.01")
    server.fill("mm-sell-1")
    report = broker.lookup("mm-sell-1", "BTC/USDT")
    assert report["status"] == "filled"
    assert report["fee"] == pytest.approx(0.5 * 20000.01 * 0.001)
    assert broker.positions() == {"BTC/USDT": pytest.approx(0.5)}


def test_a_lost_response_is_outcome_unknown_and_never_sent_twice(server, broker):
    server.fail("lost_response", path=ORDER)
    with pytest.raises(OutcomeUnknown, match=r"binance BTC/USDT: .*mm-lost-1.*look it up"):
        broker.send(market("mm-lost-1", 0.01))
    assert server.count("POST", ORDER) == 1  # no retry of an order that may have arrived
    found = broker.lookup("mm-lost-1", "BTC/USDT")
    assert found["status"] == "filled" and found["filled_qty"] == pytest.approx(0.01)
    # Sending it again is answered by the venue's duplicate-id check with the same order.
    assert broker.send(market("mm-lost-1", 0.01)) == found
    assert [o.client_order_id for o in server.orders] == ["mm-lost-1"]


def test_a_duplicate_id_on_a_different_order_is_rejected(server, broker):
    broker.send(market("mm-dup-1", 0.01))
    with pytest.raises(OrderRejected, match="Duplicate order") as caught:
        broker.send(market("mm-dup-1", 0.02))
    assert caught.value.reason == "duplicate_client_id"
    assert len(server.orders) == 1


@pytest.mark.parametrize("fault", ["drop", "500", "503"])
def test_an_order_whose_answer_failed_is_outcome_unknown(server, broker, sleeps, fault):
    broker.instrument("BTC/USDT")
    server.fail(fault, path=ORDER)
    with pytest.raises(OutcomeUnknown, match="mm-fault-1"):
        broker.send(market("mm-fault-1", 0.01))
    assert server.count("POST", ORDER) == 1 and sleeps == []
    assert broker.lookup("mm-fault-1", "BTC/USDT") is None  # the venue never acted here


def test_an_order_timeout_is_outcome_unknown(server, make_broker):
    broker = make_broker(timeout_s=0.3)
    broker.instrument("BTC/USDT")
    server.fail("delay", path=ORDER, delay_s=30)  # acts at once, answers too late
    with pytest.raises(OutcomeUnknown, match="RequestTimeout"):
        broker.send(market("mm-slow-1", 0.01))
    assert broker.lookup("mm-slow-1", "BTC/USDT")["status"] == "filled"
    assert len(server.orders) == 1


def test_an_order_to_a_venue_that_is_down_is_retried_then_unavailable(server, broker, sleeps):
    broker.instrument("BTC/USDT")
    server.stop()  # the connection is refused: the order cannot have arrived
    with pytest.raises(VenueUnavailable, match=r"binance BTC/USDT: send buy limit order mm-down-1"):
        broker.send(limit("mm-down-1", 0.01, 19000))
    assert sleeps == [0.01, 0.02]
    assert server.orders == []


def test_rate_limited_order_waits_retry_after_then_goes_through(server, broker, sleeps):
    broker.instrument("BTC/USDT")
    server.fail("429", path=ORDER, retry_after=4)
    assert broker.send(market("mm-429-1", 0.01))["status"] == "filled"
    assert sleeps == [4.0] and len(server.orders) == 1


def test_insufficient_funds(server, broker):
    with pytest.raises(InsufficientFunds, match="binance BTC/USDT: .*insufficient") as caught:
        broker.send(market("mm-poor-1", 1.0))  # 20000 USDT needed, 10000 held
    assert caught.value.reason == "insufficient_funds"
    assert isinstance(caught.value, OrderRejected)
    assert server.orders == []


def test_lot_size_and_min_notional_rejected_locally_before_sending(server, broker):
    with pytest.raises(OrderRejected, match=r"binance BTC/USDT: order mm-tiny-1 .*lot size"
                       ) as caught:
        broker.send(market("mm-tiny-1", 0.0004))
    assert caught.value.reason == "lot_size"
    with pytest.raises(OrderRejected, match="notional 0.001 x 5000 = 5 is below") as caught:
        broker.send(limit("mm-small-1", 0.001, 5000.0))
    assert caught.value.reason == "min_notional"
    with pytest.raises(OrderRejected, match="0.01 x 0.05 = 0.0005 is below the minimum 0.001"
                       ) as caught:
        broker.send(market("mm-small-2", 0.01, symbol="ETH/BTC"))
    assert caught.value.reason == "min_notional"
    assert server.count("POST", ORDER) == 0


def test_a_market_order_is_checked_at_the_last_price(server, broker):
    server.set_price("BTCUSDT", "900")
    with pytest.raises(OrderRejected, match="0.01 x 900 = 9 is below") as caught:
        broker.send(market("mm-cheap-1", 0.01))
    assert caught.value.reason == "min_notional"
    assert server.count("GET", "/api/v3/ticker/24hr") == 1
    assert server.count("POST", ORDER) == 0


def test_filters_stricter_than_the_client_knew_are_rejected_by_the_venue(server, broker):
    broker.instrument("BTC/USDT")  # the client learns the rules, then the venue tightens them
    server.markets["BTCUSDT"].min_notional = Decimal("500")
    with pytest.raises(OrderRejected, match=r"rejected by the venue \(min_notional\)") as caught:
        broker.send(market("mm-venue-1", 0.01))
    assert caught.value.reason == "min_notional"
    server.markets["BTCUSDT"].step_size = Decimal("0.1")
    with pytest.raises(OrderRejected, match="LOT_SIZE") as caught:
        broker.send(market("mm-venue-2", 0.03))
    assert caught.value.reason == "lot_size"
    assert server.count("POST", ORDER) == 2 and server.orders == []


@pytest.mark.parametrize("order, problem", [
    (market("mm bad id", 0.01), "client order id"),
    (market("x" * 37, 0.01), "1-36 characters"),
    (market("mm-1", -1.0), "positive number"),
    (market("mm-1", float("nan")), "positive number"),
    (market("mm-1", True), "positive number"),
    (market("mm-1", "0.01"), "positive number"),
    ({**market("mm-1", 0.01), "side": "hold"}, "side 'hold'"),
    (limit("mm-1", 0.01, None), "needs a positive price"),
    ({**market("mm-1", 0.01), "type": "stop"}, "type 'stop'"),
])
def test_malformed_orders_are_rejected_without_a_request(server, broker, order, problem):
    with pytest.raises(OrderRejected, match=problem) as caught:
        broker.send(order)
    assert caught.value.reason == "invalid_order"
    assert server.requests == []


def test_unknown_symbol_order_is_rejected(broker):
    with pytest.raises(OrderRejected, match="no market 'DOGE/EUR'") as caught:
        broker.send(market("mm-1", 1.0, symbol="DOGE/EUR"))
    assert caught.value.reason == "unknown_symbol"


# -- rate limits, outages, timeouts ---------------------------------------------------------

@pytest.mark.parametrize("status", ["429", "418"])
def test_rate_limit_honours_retry_after(server, broker, sleeps, status):
    server.fail(status, times=2, path=ACCOUNT, retry_after=7)
    assert broker.balances()["USDT"] == 10000.0
    assert sleeps == [7.0, 7.0]
    assert server.count("GET", ACCOUNT) == 3


def test_retry_after_as_an_http_date(server, make_broker, sleeps):
    now = 1_800_000_000.0
    broker = make_broker(clock=lambda: now)
    server.fail("429", path=ACCOUNT, retry_after=email.utils.formatdate(now + 30, usegmt=True))
    broker.balances()
    assert sleeps == [30.0]


def test_persistent_rate_limit_raises_rate_limited(server, broker, sleeps):
    server.fail("429", times=10, path=ACCOUNT, retry_after=2)
    with pytest.raises(RateLimited, match=r"binance: fetch balances: rate limited .*HTTP 429"
                       ) as caught:
        broker.balances()
    assert caught.value.retry_after == 2.0
    assert sleeps == [2.0, 2.0]


def test_a_long_ban_is_not_slept_through(server, broker, sleeps):
    server.fail("418", path=ACCOUNT, retry_after=600)
    with pytest.raises(RateLimited, match="HTTP 418") as caught:
        broker.balances()
    assert caught.value.retry_after == 600.0 and sleeps == []


def test_rate_limit_without_retry_after_backs_off(server, broker, sleeps):
    server.fail("429", times=2, path=ACCOUNT)
    broker.balances()
    assert sleeps == [0.01, 0.02]


@pytest.mark.parametrize("fault", ["500", "503", "drop"])
def test_reads_are_retried_through_outages(server, broker, sleeps, fault):
    server.fail(fault, times=2, path=ACCOUNT)
    assert broker.balances()["BTC"] == 1.0
    assert sleeps == [0.01, 0.02]


@pytest.mark.parametrize("fault, name", [("500", "OperationFailed"),
                                         ("503", "ExchangeNotAvailable"),
                                         ("drop", "NetworkError")])
def test_a_persistent_outage_is_venue_unavailable(server, broker, sleeps, fault, name):
    server.fail(fault, times=10, path=ACCOUNT)
    with pytest.raises(VenueUnavailable, match=f"binance: fetch balances: .*3 attempt.*{name}"):
        broker.balances()
    assert server.count("GET", ACCOUNT) == 3


def test_a_read_timeout_is_retried(server, make_broker, sleeps):
    broker = make_broker(timeout_s=0.3)
    broker.instrument("BTC/USDT")
    server.fail("delay", path=ACCOUNT, delay_s=30)
    assert broker.balances()["USDT"] == 10000.0
    server.fail("delay", times=3, path=ACCOUNT, delay_s=30)
    with pytest.raises(VenueUnavailable, match="RequestTimeout"):
        broker.balances()


def test_market_loading_is_retried(server, broker, sleeps):
    server.fail("503", path="/api/v3/exchangeInfo")
    assert broker.instrument("BTC/USDT")["lot_size"] == 0.001
    assert sleeps == [0.01]


# -- credentials ---------------------------------------------------------------------------

@pytest.mark.parametrize("key, secret", [(KEY, "wrong-secret"), ("wrong-key", SECRET)])
def test_bad_credentials_are_authentication_failed(make_broker, sleeps, key, secret):
    broker = make_broker(api_key=key, secret=secret)
    with pytest.raises(AuthenticationFailed, match="binance: fetch balances: credentials"):
        broker.balances()
    assert sleeps == []


def test_a_key_revoked_mid_session_halts_rather_than_backing_off(server, broker, sleeps):
    broker.balances()
    server.api_key = "rotated"  # ccxt now reports -2015 as a DDoSProtection
    with pytest.raises(AuthenticationFailed, match="credentials refused"):
        broker.balances()
    assert sleeps == []


def _raisers(server, make_broker):
    """Ways to make the broker raise, each after arranging the venue's misbehaviour."""
    def bad_secret():
        make_broker(secret=SECRET[::-1]).balances()

    def bad_key():
        make_broker(api_key=KEY[::-1]).send(market("mm-k-1", 0.01))

    def gateway_echo():
        server.fail("echo_headers", times=10)
        make_broker().balances()

    def gateway_echo_on_order():
        broker = make_broker()
        broker.instrument("BTC/USDT")
        server.fail("echo_headers", path=ORDER)
        broker.send(market("mm-e-1", 0.01))

    def lost():
        server.fail("lost_response", path=ORDER)
        make_broker().send(market("mm-l-1", 0.01))

    def throttled():
        server.fail("429", times=10, retry_after=1)
        make_broker().open_orders()

    def broke():
        make_broker().send(market("mm-p-1", 5.0))

    def tiny():
        make_broker().send(market("mm-t-1", 0.0001))

    return [bad_secret, bad_key, gateway_echo, gateway_echo_on_order, lost, throttled, broke,
            tiny]


@pytest.mark.parametrize("case", range(8))
def test_key_and_secret_never_appear_in_errors(server, make_broker, case):
    raiser = _raisers(server, make_broker)[case]
    with pytest.raises(BrokerError) as caught:
        raiser()
    error = caught.value
    chain = []
    while error is not None:
        chain.append(error)
        error = error.__cause__ or error.__context__
    text = "".join(traceback.format_exception(caught.value))
    text += "".join(str(e) + repr(e) + repr(vars(e)) for e in chain)
    assert KEY not in text and SECRET not in text, text
    # No ccxt exception is chained: its request object carries the key in a header.
    assert all(isinstance(e, BrokerError) for e in chain)


def test_the_gateway_echo_really_carries_the_key(server, broker):
    """The leak the scrubbing guards against is real: the raw ccxt message has the key."""
    import ccxt

    server.fail("echo_headers", path=ACCOUNT)
    with pytest.raises(ccxt.ExchangeNotAvailable) as caught:
        broker._exchange.fetch_balance()
    assert KEY in str(caught.value)


def test_repr_hides_the_key(broker):
    assert KEY not in repr(broker) and SECRET not in repr(broker)
    assert repr(broker) == "CcxtBroker('binance', with key)"
    shown = {name: value for name, value in vars(broker).items() if name != "_exchange"}
    assert KEY not in repr(shown) and SECRET not in repr(shown)


def test_notional_at_the_minimum_exactly_is_sent(server, broker):
    # 0.7 x 0.1 is 0.07 in decimal, as the venue computes it, but 0.06999... in floats.
    assert 0.7 * 0.1 < 0.07
    server.markets["ETHBTC"].min_notional = Decimal("0.07")
    assert broker.send(limit("mm-edge-1", 0.7, 0.1, symbol="ETH/BTC"))["status"] == "filled"


def test_latest_candles_without_since(broker):
    frame = broker.fetch_candles("BTC/USDT", "1m", None, limit=5)
    assert len(frame) == 5
    assert frame["ts"].iloc[-1] == pd.Timestamp(NOW_MS // MINUTE_MS * MINUTE_MS, unit="ms",
                                                tz="UTC")


# -- construction --------------------------------------------------------------------------

def test_unknown_exchange_suggests_close_ids():
    with pytest.raises(ConfigError, match="unknown exchange 'binanse'.*binance"):
        CcxtBroker("binanse")


def test_base_url_keeps_each_path_prefix():
    broker = CcxtBroker("binance", base_url="http://127.0.0.1:9/proxy")
    urls = broker._exchange.urls["api"]
    assert urls["public"] == "http://127.0.0.1:9/proxy/api/v3"
    assert urls["sapi"] == "http://127.0.0.1:9/proxy/sapi/v1"
    with pytest.raises(ConfigError, match="needs a scheme and host"):
        CcxtBroker("binance", base_url="localhost")


def test_sandbox_selects_the_test_network():
    broker = CcxtBroker("binance", sandbox=True)
    assert "testnet" in broker._exchange.urls["api"]["public"]
    with pytest.raises(ConfigError, match="has no sandbox"):
        CcxtBroker("kraken", sandbox=True)


def test_positions_need_distinct_base_assets():
    with pytest.raises(ConfigError, match="share the base asset ETH"):
        CcxtBroker("binance", symbols=["ETH/BTC", "ETH/USDT"])


def test_positions_of_unconfigured_broker_are_empty(server, make_broker):
    assert make_broker(symbols=()).positions() == {}
    assert server.requests == []


def test_unused_port_for_reads(make_broker, sleeps):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    broker = make_broker(base_url=f"http://127.0.0.1:{port}")
    with pytest.raises(VenueUnavailable, match="binance: load markets: venue unavailable"):
        broker.instrument("BTC/USDT")
    assert sleeps == [0.01, 0.02]
