"""No unguarded road to real money: orders go only to paper, loopback, the venue library's
own sandbox, or a real endpoint with environment: prod and --i-understand-live-trading.

Checked twice: at start-up (check_can_trade) and at the adapter (every send, however the
adapter was built). A socket-level fence fails the test on any attempt to resolve or
reach a non-loopback address, so "refused" means "refused before any request".
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from mmats.brokers import ccxt_broker, oanda_broker
from mmats.brokers.ccxt_broker import CcxtBroker
from mmats.brokers.connect import (
    ALLOWED,
    REAL_MONEY_ATTRIBUTE,
    REDUCE_ONLY,
    REFUSED,
    RealMoneyRefused,
    connect,
    is_loopback,
)
from mmats.brokers.oanda_broker import OandaBroker
from mmats.errors import ConfigError
from mmats.live.config import check_can_trade, load_config, parse_config

OANDA_KEYS = {"account_id": "101-004-1234567-001", "token": "t0ken"}
ORDER = {"client_order_id": "mm-guard-1", "symbol": "ETH/BTC", "side": "buy", "qty": 0.5,
         "type": "market", "price": None, "time_in_force": "GTC"}


@pytest.fixture(autouse=True)
def fence(monkeypatch):
    """Record (and stop) every attempt to resolve or reach a host that is not loopback."""
    attempts = []
    real_connect, real_lookup = socket.socket.connect, socket.getaddrinfo

    def lookup(host, *args, **kwargs):
        if not _loopback_host(host):
            attempts.append(("resolve", host))
            raise OSError(f"test fence: no lookup of {host}")
        return real_lookup(host, *args, **kwargs)

    def connect_to(self, address):
        if not _loopback_host(address[0] if isinstance(address, tuple) else address):
            attempts.append(("connect", address))
            raise OSError(f"test fence: no connection to {address}")
        return real_connect(self, address)

    monkeypatch.setattr(socket, "getaddrinfo", lookup)
    monkeypatch.setattr(socket.socket, "connect", connect_to)
    yield attempts
    assert attempts == [], f"a request left for a non-loopback address: {attempts}"


def _loopback_host(host) -> bool:
    host = host.decode() if isinstance(host, bytes) else str(host)
    return is_loopback(f"http://[{host}]" if ":" in host else f"http://{host}")


def config(execution="binance", venue=None, environment="dev", market_type="crypto",
           symbol="ETH/BTC"):
    venues = {execution: venue} if venue is not None else {}
    return parse_config({
        "mode": "operator", "environment": environment, "venues": venues,
        "markets": {"main": {"type": market_type, "feed": "store", "execution": execution,
                             "symbols": [symbol], "timeframe": "1h"}},
        "models": [{"id": "m", "strategy": "ema_cross", "market": "main"}],
    }, source="configs/live.yaml")


def refused(cfg, flag=False) -> str:
    with pytest.raises(ConfigError) as caught:
        check_can_trade(cfg, i_understand_live_trading=flag)
    return str(caught.value)


@pytest.fixture
def no_adapter(monkeypatch):
    """Fail if connect() builds an adapter at all."""
    def built(*args, **kwargs):
        raise AssertionError("an adapter was built for a refused endpoint")

    monkeypatch.setattr(ccxt_broker, "CcxtBroker", built)
    monkeypatch.setattr(oanda_broker, "OandaBroker", built)


# --- what counts as loopback ----------------------------------------------------------

@pytest.mark.parametrize("url", ["http://127.0.0.1:8080", "http://127.9.8.7/api",
                                 "https://[::1]:9/x", "http://localhost:1", "http://LOCALHOST",
                                 "http://[::ffff:127.0.0.1]:80"])
def test_loopback_addresses(url):
    assert is_loopback(url)


@pytest.mark.parametrize("url", ["http://10.1.2.3:9", "http://example.invalid",
                                 "http://localhost.example.com", "http://127.0.0.1.nip.io",
                                 "http://127.0.0.1@evil.example.com/", "http://0.0.0.0:80",
                                 "https://testnet.binance.vision", "not a url"])
def test_other_hosts_are_not_loopback(url):
    assert not is_loopback(url)


# --- allowed without the flag ---------------------------------------------------------

def test_paper_execution_is_allowed_anywhere():
    check_can_trade(config(execution="paper"), i_understand_live_trading=False)


@pytest.mark.parametrize("sandbox", [True, False])
@pytest.mark.parametrize("url", ["http://127.0.0.1:9", "http://localhost:9", "http://[::1]:9"])
def test_loopback_base_url_is_allowed_without_the_flag(url, sandbox, fence):
    cfg = config(venue={"exchange": "binance", "sandbox": sandbox, "base_url": url})
    check_can_trade(cfg, i_understand_live_trading=False)
    broker = connect(cfg, cfg.markets[0], keys={})
    ccxt_broker._guard_send(broker, ORDER)  # passes: the guard has nothing to refuse


def test_an_order_to_loopback_really_goes_out(fence):
    """The guard lets it through: the adapter's own error says the (closed) port refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    broker = CcxtBroker("binance", base_url=f"http://127.0.0.1:{port}", retries=0,
                        timeout_s=2, rate_limit=False)
    with pytest.raises(Exception) as caught:
        broker.send(ORDER)
    assert not isinstance(caught.value, RealMoneyRefused)


def test_ccxt_sandbox_without_base_url_is_the_library_test_network():
    cfg = config(venue={"exchange": "binance", "sandbox": True})
    check_can_trade(cfg, i_understand_live_trading=False)
    broker = connect(cfg, cfg.markets[0], keys={})
    assert ccxt_broker.sandbox_hosts("binance") >= {"testnet.binance.vision"}
    ccxt_broker._guard_send(broker, ORDER)


def test_oanda_practice_is_allowed():
    cfg = config(execution="oanda", venue={"sandbox": True}, market_type="forex",
                 symbol="EUR/USD")
    check_can_trade(cfg, i_understand_live_trading=False)
    broker = connect(cfg, cfg.markets[0], keys=OANDA_KEYS)
    assert broker.environment == "practice"
    oanda_broker._guard_send(broker, {**ORDER, "symbol": "EUR/USD"})


# --- refused --------------------------------------------------------------------------

@pytest.mark.parametrize("url", ["http://10.1.2.3:9", "http://example.invalid",
                                 "https://localhost.example.com",
                                 "https://user:pa55@api.example.invalid/?token=t0k"])
@pytest.mark.parametrize("sandbox", [True, False])
def test_a_non_loopback_base_url_is_real_whatever_the_label(url, sandbox, no_adapter):
    cfg = config(venue={"exchange": "binance", "sandbox": sandbox, "base_url": url})
    message = refused(cfg)
    assert "main -> binance at http" in message
    assert any(host in message for host in ("10.1.2.3", "example.invalid", "localhost.example"))
    assert "pa55" not in message and "t0k" not in message
    with pytest.raises(ConfigError, match="real orders"):
        connect(cfg, cfg.markets[0], keys={})


@pytest.mark.parametrize("url", ["http://10.1.2.3:9", "http://example.invalid"])
def test_a_hand_built_adapter_refuses_before_any_request(url, fence):
    broker = CcxtBroker("binance", sandbox=True, base_url=url, retries=0, timeout_s=1)
    with pytest.raises(RealMoneyRefused, match="real endpoint"):
        broker.send(ORDER)
    real = CcxtBroker("binance", api_key="k", secret="s")
    with pytest.raises(RealMoneyRefused, match=r"api\.binance\.com"):
        real.send(ORDER)
    live = OandaBroker(**OANDA_KEYS, practice=False)
    with pytest.raises(RealMoneyRefused, match="fxtrade"):
        live.send({**ORDER, "symbol": "EUR/USD"})
    far = OandaBroker(**OANDA_KEYS, base_url=url)
    with pytest.raises(RealMoneyRefused):
        far.send({**ORDER, "symbol": "EUR/USD"})
    assert fence == []


@pytest.mark.parametrize("environment, flag, missing", [
    ("dev", False, "environment: prod"), ("test", True, "environment: prod"),
    ("prod", False, "which was not given"),
])
@pytest.mark.parametrize("venue", [None, {"exchange": "binance", "sandbox": False}])
def test_a_real_endpoint_needs_prod_and_the_flag(environment, flag, missing, venue,
                                                  no_adapter):
    cfg = config(venue=venue, environment=environment)
    message = refused(cfg, flag)
    assert message.startswith("configs/live.yaml: mode: operator")
    assert "main -> binance at https://api.binance.com" in message and missing in message
    with pytest.raises(ConfigError, match=missing):
        connect(cfg, cfg.markets[0], keys={}, live_trading_allowed=flag)


def test_oanda_live_needs_prod_and_the_flag(no_adapter):
    cfg = config(execution="oanda", venue={"sandbox": False}, market_type="forex",
                 symbol="EUR/USD")
    assert "api-fxtrade.oanda.com" in refused(cfg)
    with pytest.raises(ConfigError):
        connect(cfg, cfg.markets[0], keys=OANDA_KEYS)


def test_prod_with_the_flag_is_allowed_built_but_nothing_sent():
    cfg = config(environment="prod")
    check_can_trade(cfg, i_understand_live_trading=True)
    broker = connect(cfg, cfg.markets[0], keys={}, live_trading_allowed=True)
    assert getattr(broker, REAL_MONEY_ATTRIBUTE) == ALLOWED
    ccxt_broker._guard_send(broker, ORDER)
    forex = config(execution="oanda", environment="prod", market_type="forex",
                   symbol="EUR/USD", venue={"sandbox": False})
    check_can_trade(forex, i_understand_live_trading=True)
    oanda = connect(forex, forex.markets[0], keys=OANDA_KEYS, live_trading_allowed=True)
    oanda_broker._guard_send(oanda, {**ORDER, "symbol": "EUR/USD"})


# --- kill / close / status: no flag, reduce-only on a real prod venue --------------------

def test_a_kill_on_a_real_prod_venue_may_only_reduce():
    cfg = config(environment="prod")
    broker = connect(cfg, cfg.markets[0], keys={}, purpose="reduce")
    assert getattr(broker, REAL_MONEY_ATTRIBUTE) == REDUCE_ONLY
    broker.positions = lambda: {"ETH/BTC": 0.75}  # what the venue would report
    sell = {**ORDER, "side": "sell", "qty": 0.75}
    ccxt_broker._guard_send(broker, sell)  # flattening passes
    with pytest.raises(RealMoneyRefused, match="does not shrink"):
        ccxt_broker._guard_send(broker, {**sell, "qty": 1.0})  # would go short
    with pytest.raises(RealMoneyRefused, match="does not shrink"):
        ccxt_broker._guard_send(broker, {**ORDER, "side": "buy"})
    broker.positions = lambda: {}
    with pytest.raises(RealMoneyRefused):
        ccxt_broker._guard_send(broker, sell)


def test_reduce_outside_prod_and_read_send_nothing_real():
    dev = config(environment="dev")
    assert getattr(connect(dev, dev.markets[0], keys={}, purpose="reduce"),
                   REAL_MONEY_ATTRIBUTE) == REFUSED
    prod = config(environment="prod")
    reader = connect(prod, prod.markets[0], keys={}, purpose="read", live_trading_allowed=True)
    assert getattr(reader, REAL_MONEY_ATTRIBUTE) == REFUSED
    with pytest.raises(RealMoneyRefused):
        reader.send(ORDER)
    with pytest.raises(ConfigError, match="purpose"):
        connect(prod, prod.markets[0], keys={}, purpose="close")


def test_the_shipped_testnet_config_needs_no_flag():
    cfg = load_config(Path(__file__).resolve().parents[2] / "configs" / "binance_testnet.yaml")
    check_can_trade(cfg, i_understand_live_trading=False)
