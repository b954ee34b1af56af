"""A local Binance look-alike per test, and the real ccxt client pointed at it."""

import pytest

from .binance_server import BinanceServer

# Distinctive, so a leak into any message is found by a plain substring search.
KEY = "KEYzq81fJk2mVx7PqRt5WnB0cLd9"
SECRET = "SECRETp3Lm8Hq2Zx6Tv9Ns1Gw4Yk7"
MINUTE_MS = 60_000
# The server's pinned now: 40 s into a minute, so the last 1m bar is still forming.
NOW_MS = 1_700_000_000_000 // MINUTE_MS * MINUTE_MS + 40_000
FIRST_BAR_MS = NOW_MS // MINUTE_MS * MINUTE_MS - 2_500 * MINUTE_MS  # 2500 closed bars


@pytest.fixture
def server():
    venue = BinanceServer(api_key=KEY, secret=SECRET, now_ms=NOW_MS).start()
    venue.add_market("BTC", "USDT", step_size="0.001", tick_size="0.01", min_notional="10",
                     price="20000")
    venue.add_market("ETH", "BTC", step_size="0.01", tick_size="0.000001",
                     min_notional="0.001", price="0.05", notional_filter="MIN_NOTIONAL")
    venue.set_balance("USDT", "10000")
    venue.set_balance("BTC", "1")
    venue.add_klines("BTCUSDT", "1m", first_open_ms=FIRST_BAR_MS)
    yield venue
    venue.stop()


@pytest.fixture
def sleeps():
    """The broker's injected sleep: records each wait instead of waiting."""
    return []


@pytest.fixture
def make_broker(server, sleeps):
    from mmats.brokers.ccxt_broker import CcxtBroker

    def make(**overrides):
        settings = dict(api_key=KEY, secret=SECRET, base_url=server.url, timeout_s=5.0,
                        retries=2, backoff_s=0.01, rate_limit=False, symbols=["BTC/USDT"],
                        sleep=sleeps.append)
        settings.update(overrides)
        return CcxtBroker("binance", **settings)

    return make


@pytest.fixture
def broker(make_broker):
    return make_broker()
