"""Order-book snapshots: the adapters' ``order_book`` through the real clients (ccxt against
the local Binance look-alike, oandapyV20 against the OANDA one), and the Market view's
``order_book``, which answers "not available" with a reason rather than an error."""

from __future__ import annotations

import random

import pytest

from mmats.brokers.base import MarketDepth, OrderBookUnavailable, VenueUnavailable
from mmats.console.market_view import PAPER_REASON, order_book
from mmats.errors import ConfigError
from mmats.live.config import parse_config

from .conftest import KEY, NOW_MS, SECRET
from .oanda_server import OandaServer

BIDS = [(f"{19_999.5 - i:.2f}", f"{0.1 * (i + 1):.3f}") for i in range(30)]
ASKS = [(f"{20_000.5 + i:.2f}", f"{0.2 + 0.01 * i:.3f}") for i in range(30)]
OANDA_TOKEN = "book-token-Zq81LmX3"


@pytest.fixture
def book(server):
    shuffled = {"bids": BIDS[:], "asks": ASKS[:]}
    for side in shuffled.values():
        random.Random(5).shuffle(side)  # the look-alike sorts; so must nobody else
    server.set_book("BTCUSDT", **shuffled)
    return server


def levels(pairs, depth) -> list[list[float]]:
    return [[float(price), float(qty)] for price, qty in pairs[:depth]]


def binance_config(server, *, symbols=("BTC/USDT",)):
    return parse_config({
        "mode": "paper",
        "venues": {"binance": {"exchange": "binance", "base_url": server.url}},
        "markets": {"crypto": {"type": "crypto", "feed": "binance", "execution": "binance",
                               "symbols": list(symbols), "timeframe": "1m"},
                    "sim": {"type": "crypto", "feed": "binance", "execution": "paper",
                            "symbols": ["BTC/USDT"], "timeframe": "1m"}},
        "models": [{"id": "m", "strategy": "ema_cross", "market": "crypto"},
                   {"id": "p", "strategy": "ema_cross", "market": "sim"}],
    }, source="book.yaml")


@pytest.fixture
def keys(monkeypatch):
    """The venue's keys where connect() reads them first: the environment."""
    monkeypatch.setenv("MMATS_BINANCE_API_KEY", KEY)
    monkeypatch.setenv("MMATS_BINANCE_SECRET", SECRET)


def test_ccxt_order_book_levels_and_depth(book, broker):
    assert isinstance(broker, MarketDepth)
    top = broker.order_book("BTC/USDT", 5)
    assert top["symbol"] == "BTC/USDT"
    assert top["bids"] == levels(BIDS, 5)  # best (highest) bid first
    assert top["asks"] == levels(ASKS, 5)  # best (lowest) ask first
    assert top["bids"][0][0] < top["asks"][0][0]
    assert isinstance(top["ts_ms"], int) and top["ts_ms"] > NOW_MS  # Binance spot sends no time
    assert book.count("GET", "/api/v3/depth") == 1
    deep = broker.order_book("BTC/USDT", 50)  # more than the book holds: all of it
    assert (len(deep["bids"]), len(deep["asks"])) == (30, 30)
    assert broker.order_book("BTC/USDT", 0)["bids"] == levels(BIDS, 1)  # at least one


def test_an_empty_book_and_an_unknown_market(server, broker):
    assert broker.order_book("ETH/BTC", 10)["bids"] == []  # listed, nobody quoting
    with pytest.raises(ConfigError, match="binance has no market 'DOGE/USDT'"):
        broker.order_book("DOGE/USDT", 10)


def test_market_view_reads_the_venue_without_the_live_trading_flag(book, keys):
    """connect(purpose="read") builds the adapter: it may place nothing, and needs no
    --i-understand-live-trading; the book is public data."""
    config = binance_config(book)
    answer = order_book(config, "crypto", "BTC/USDT", depth=3)
    assert answer == {"available": True, "market": "crypto", "symbol": "BTC/USDT",
                      "venue": "binance", "depth": 3, "bids": levels(BIDS, 3),
                      "asks": levels(ASKS, 3), "ts_ms": answer["ts_ms"]}
    assert not any(method == "POST" for method, _ in book.requests)


def test_paper_venue_has_no_order_book(tmp_path, book):
    config = binance_config(book)
    assert order_book(config, "sim", "BTC/USDT") == {
        "available": False, "market": "sim", "symbol": "BTC/USDT", "venue": "paper",
        "reason": PAPER_REASON}
    assert book.count("GET", "/api/v3/depth") == 0
    from mmats.brokers.paper import PaperBroker
    from mmats.brokers.store_feed import StoreFeed

    paper = PaperBroker(tmp_path / "paper.sqlite", StoreFeed(tmp_path, "binance"), "1m")
    with pytest.raises(OrderBookUnavailable, match="paper venue has no order book"):
        paper.order_book("BTC/USDT", 10)
    answer = order_book(config, "sim", "BTC/USDT", brokers={"sim": paper})
    assert answer["available"] is False
    assert answer["reason"].startswith("the paper venue has no order book for BTC/USDT")
    paper.close()


def test_venue_errors_are_a_reason_not_a_traceback(book, make_broker, sleeps, keys):
    config = binance_config(book)
    broker = make_broker()
    book.fail("500", times=3, path="/api/v3/depth")  # more than the two retries
    with pytest.raises(VenueUnavailable):
        broker.order_book("BTC/USDT", 5)
    book.fail("503", times=3, path="/api/v3/depth")
    answer = order_book(config, "crypto", "BTC/USDT", brokers={"crypto": broker})
    assert answer["available"] is False
    assert answer["reason"].startswith(
        "the binance venue did not give its order book: binance BTC/USDT: fetch the order "
        "book: venue unavailable after 3 attempt(s)")
    assert "Traceback" not in answer["reason"] and SECRET not in answer["reason"]
    assert len(sleeps) == 4  # two backed-off retries per failed read
    book.fail("429", times=1, path="/api/v3/depth", retry_after=0)
    assert order_book(config, "crypto", "BTC/USDT", brokers={"crypto": broker})["available"]


def test_a_configured_symbol_the_venue_lacks(book, keys):
    config = binance_config(book, symbols=("BTC/USDT", "DOGE/USDT"))
    answer = order_book(config, "crypto", "DOGE/USDT")
    assert answer["available"] is False
    assert "binance has no market 'DOGE/USDT'" in answer["reason"]


def test_a_venue_that_cannot_be_opened(book):
    """An unknown ccxt exchange (or OANDA without its keys) is a reason, not an error."""
    config = parse_config({
        "mode": "paper",
        "venues": {"nowhere": {"exchange": "notanexchange", "base_url": book.url},
                   "oandafx": {"exchange": "oanda", "base_url": "http://127.0.0.1:9"}},
        "markets": {"crypto": {"type": "crypto", "feed": "nowhere", "execution": "nowhere",
                               "symbols": ["BTC/USDT"]},
                    "fx": {"type": "forex", "feed": "fxfeed", "execution": "oandafx",
                           "symbols": ["EUR/USD"]}},
        "models": [{"id": "m", "strategy": "ema_cross", "market": "crypto"},
                   {"id": "f", "strategy": "ema_cross", "market": "fx"}],
    }, source="book.yaml")
    answer = order_book(config, "crypto", "BTC/USDT")
    assert answer["available"] is False
    assert answer["reason"].startswith("the nowhere venue adapter could not be opened to "
                                       "read its order book: unknown exchange 'notanexchange'")
    answer = order_book(config, "fx", "EUR/USD")
    assert answer["available"] is False
    assert "could not be opened" in answer["reason"] and "no account id" in answer["reason"]


def test_oanda_order_book_from_its_pricing_levels():
    with OandaServer(token=OANDA_TOKEN) as venue:
        venue.set_price("EUR_USD", 1.2345, half_spread=0.0001)
        from mmats.brokers.oanda_broker import OandaBroker

        broker = OandaBroker(venue.account_id, OANDA_TOKEN, base_url=venue.url, timeout_s=2)
        try:
            top = broker.order_book("EUR/USD", 5)
        finally:
            broker.close()
    assert top["symbol"] == "EUR/USD"
    assert top["bids"] == [[1.2344, 10_000_000.0]]  # the look-alike quotes one level
    assert top["asks"] == [[1.2346, 10_000_000.0]]
    assert isinstance(top["ts_ms"], int) and top["ts_ms"] > 0
