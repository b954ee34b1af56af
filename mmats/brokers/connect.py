"""Build a venue adapter from the configuration: ``venues:`` says how to reach a venue
(ccxt exchange id or ``oanda``, sandbox/practice, base URL, timeout); the keys come from
the environment or the secrets store, never from the configuration.

Credentials belong to the configuration's environment (``dev``, ``test`` or ``prod``): a
configuration reads its own environment's keys and never another's. First found wins:

- environment variables ``MMATS_<ENV>_<VENUE>_API_KEY`` and ``..._SECRET`` (ccxt), or
  ``MMATS_<ENV>_<VENUE>_TOKEN`` and ``..._ACCOUNT_ID`` (OANDA), with ``<ENV>`` and
  ``<VENUE>`` in capitals (``MMATS_PROD_BINANCE_API_KEY``); the names without an
  environment (``MMATS_BINANCE_API_KEY``, as before environments) count as ``dev`` only;
- the secrets store (:mod:`mmats.secrets`: OS keyring or encrypted file), in the
  environment's namespace, fields ``api_key``/``secret`` or ``token``/``account_id``, set
  with ``mmats keys set VENUE --env ENV``.

Adapters are imported here lazily, so only a configuration that uses a venue needs its
SDK; only the adapter modules import ccxt or oandapyV20.

No unguarded road to real money. Orders may go only to a *test endpoint* — a loopback
address (127.0.0.0/8, ::1, ``localhost``: read from the URL, never looked up in DNS; any
other host name is not loopback) or the sandbox the venue's library names itself (ccxt's
``exchange.urls['test']``, OANDA's practice hosts) — or to a real one when the
configuration says ``environment: prod`` *and* the operator gave
``--i-understand-live-trading``. However a venue is labelled (``sandbox: true`` with a
``base_url`` elsewhere), any other endpoint is real. The rule is checked twice:

- at start-up, :func:`mmats.live.config.check_can_trade` (through :func:`refusal`);
- in the adapter, at the top of every ``send``, whatever built it: each adapter carries
  :data:`REAL_MONEY_ATTRIBUTE`, what it may send to a real endpoint (:data:`REFUSED` when
  absent, so an adapter built by hand or by a script is refused too), and
  :func:`guard_order` refuses the rest before any request.

The callers choose with :func:`connect`'s ``purpose``:

- ``"trade"`` (the tick): a real endpoint needs prod and ``live_trading_allowed=True``,
  else :class:`~mmats.errors.ConfigError` before the adapter is built;
- ``"reduce"`` (kill, close: risk-reducing, no live-trading flag): built always; with
  ``environment: prod`` it may send orders that only shrink a position the venue reports
  (a kill can flatten a real account), otherwise nothing to a real endpoint;
- ``"read"`` (status, reconciliation reports): built always, sends nothing to a real
  endpoint.

Candles, balances, positions, open orders and cancels are never refused.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from urllib.parse import urlsplit

from mmats.brokers.base import OrderRejected
from mmats.errors import ConfigError
from mmats.redact import redact_url
from mmats.secrets import DEFAULT_ENVIRONMENT, ENVIRONMENTS

log = logging.getLogger(__name__)

PURPOSES = ("trade", "reduce", "read")
_FIELDS = ("api_key", "secret", "token", "account_id", "password")
REAL_MONEY_ATTRIBUTE = "real_money_orders"
ALLOWED, REDUCE_ONLY, REFUSED = "allowed", "reduce_only", "refused"


class RealMoneyRefused(OrderRejected):
    """An order for a real endpoint that the prod + live-trading decision did not allow;
    nothing was sent."""

    def __init__(self, message):
        super().__init__(message, "real_money_guard")


def credentials(venue_name: str, environment: str) -> dict:
    """The venue's credential fields for ``environment``, from its environment variables
    or its namespace of the secrets store ({} when none: public market data needs no key).
    Another environment's keys are never read.

    >>> credentials("binance", "prod")  # MMATS_PROD_BINANCE_API_KEY, ...  # doctest: +SKIP
    """
    from mmats.secrets import SecretsError, available_without_prompt, get_secret

    for prefix in credential_prefixes(venue_name, environment):
        fields = {}
        for field in _FIELDS:
            value = os.environ.get(prefix + field.upper())
            if value:
                fields[field] = value
        if fields:
            return fields
    if not available_without_prompt():
        return {}  # no store to read without prompting (cron has no terminal)
    try:
        stored = get_secret(venue_name, environment)
    except SecretsError as error:
        raise ConfigError(f"venue {venue_name}: could not read its {environment} keys: "
                          f"{error}") from None
    if not stored and environment != DEFAULT_ENVIRONMENT:
        _hint_unused_keys(venue_name, environment)
    return dict(stored) if stored else {}


def credential_prefixes(venue_name: str, environment: str) -> tuple[str, ...]:
    """The environment variables' prefixes read for a venue, in order.

    The names without an environment count as ``dev`` only, and not even there for a venue
    whose name starts with an environment (``prod-binance``): ``MMATS_PROD_BINANCE_...``
    is the ``prod`` key of ``binance``.

    >>> credential_prefixes("binance", "prod")
    ('MMATS_PROD_BINANCE_',)
    >>> credential_prefixes("binance", "dev")
    ('MMATS_DEV_BINANCE_', 'MMATS_BINANCE_')
    """
    if environment not in ENVIRONMENTS:
        raise ConfigError(f"venue {venue_name}: environment {environment!r} is not one of "
                          f"{', '.join(ENVIRONMENTS)}")
    venue = venue_name.upper().replace("-", "_").replace(".", "_")
    prefixes = (f"MMATS_{environment.upper()}_{venue}_",)
    ambiguous = venue.startswith(tuple(f"{name.upper()}_" for name in ENVIRONMENTS))
    if environment == DEFAULT_ENVIRONMENT and not ambiguous:
        prefixes += (f"MMATS_{venue}_",)
    return prefixes


def _hint_unused_keys(venue_name: str, environment: str) -> None:
    """Say (names only, never values) when a venue has keys for other environments only:
    the usual slip once environments came, as keys stored before them count as dev."""
    from mmats.secrets import SecretsError, list_environments

    others = [other for other in ENVIRONMENTS if other != environment]
    prefixes = tuple(prefix for other in others
                     for prefix in credential_prefixes(venue_name, other))
    found = sorted(name for name in os.environ if name.startswith(prefixes))
    try:
        found += [f"{other} in the secrets store" for other, venues in
                  list_environments().items() if other in others and venue_name in venues]
    except SecretsError:
        pass
    if found:
        log.warning("venue %s: no %s keys (%s... or: mmats keys set %s --env %s); there "
                    "are keys of other environments only (%s), which a %s configuration "
                    "never reads", venue_name, environment,
                    credential_prefixes(venue_name, environment)[0], venue_name, environment,
                    ", ".join(found), environment)


def connect(config, market, *, symbols=None, keys: dict | None = None,
            live_trading_allowed: bool = False, purpose: str = "trade"):
    """The Execution/AccountState adapter for ``market.execution``.

    ``live_trading_allowed`` is the operator's ``--i-understand-live-trading``;
    ``purpose`` is ``"trade"``, ``"reduce"`` (kill, close) or ``"read"`` (see the module
    docstring). A ``"trade"`` adapter for a real endpoint without ``environment: prod``
    and the flag raises :class:`ConfigError` before it is built.

    >>> broker = connect(config, config.market("crypto"), purpose="reduce")  # doctest: +SKIP
    """
    if purpose not in PURPOSES:
        raise ConfigError(f"connect: purpose {purpose!r} is not one of {', '.join(PURPOSES)}")
    venue = config.venue(market.execution)
    allowed = live_trading_allowed and config.environment == "prod"
    if purpose == "trade":
        problem = refusal(config, market, live_trading_allowed)
        if problem:
            raise ConfigError(f"{config.source}: {problem}")
        orders = ALLOWED
    elif purpose == "reduce":
        orders = ALLOWED if allowed else REDUCE_ONLY if config.environment == "prod" else REFUSED
    else:
        orders = REFUSED
    return open_venue(venue, symbols=symbols if symbols is not None else market.symbols,
                      keys=keys, real_money_orders=orders)


def open_venue(venue, *, symbols=(), keys: dict | None = None, real_money_orders=REFUSED):
    """An adapter for a :class:`~mmats.live.config.VenueConfig` (also a candle source:
    ``fetch_candles``). ``real_money_orders`` is what it may send if its endpoint is real
    (:data:`ALLOWED`, :data:`REDUCE_ONLY` or :data:`REFUSED`); only :func:`connect`
    decides more than :data:`REFUSED`."""
    if real_money_orders not in (ALLOWED, REDUCE_ONLY, REFUSED):
        raise ConfigError(f"real_money_orders {real_money_orders!r} is not one of "
                          f"{ALLOWED}, {REDUCE_ONLY}, {REFUSED}")
    keys = credentials(venue.name, venue.environment) if keys is None else keys
    if venue.exchange == "oanda":
        from mmats.brokers.oanda_broker import OandaBroker

        broker = OandaBroker(keys.get("account_id"), keys.get("token"),
                             practice=venue.sandbox, base_url=venue.base_url,
                             timeout_s=venue.timeout_s)
    else:
        from mmats.brokers.ccxt_broker import CcxtBroker

        broker = CcxtBroker(venue.exchange, api_key=keys.get("api_key"),
                            secret=keys.get("secret"), sandbox=venue.sandbox,
                            base_url=venue.base_url, timeout_s=venue.timeout_s,
                            symbols=tuple(symbols))
    setattr(broker, REAL_MONEY_ATTRIBUTE, real_money_orders)
    return broker


# --- the real-money rule ------------------------------------------------------------


def is_loopback(url: str) -> bool:
    """Whether ``url``'s host is a loopback address (127.0.0.0/8, ::1) or ``localhost``,
    read from the URL text alone: no DNS, so any other name is not loopback.

    >>> is_loopback("http://127.0.0.2:8080/api"), is_loopback("http://[::1]:9")
    (True, True)
    >>> is_loopback("http://localhost.example.com"), is_loopback("http://10.1.2.3:9")
    (False, False)
    """
    try:
        host = urlsplit(str(url)).hostname
    except ValueError:
        return False
    if not host:
        return False
    if host.rstrip(".") == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or bool(mapped and mapped.is_loopback)


def is_test_url(url: str, sandbox_hosts) -> bool:
    """Whether ``url`` is loopback or on one of the library's named ``sandbox_hosts``."""
    if is_loopback(url):
        return True
    try:
        host = urlsplit(str(url)).hostname
    except ValueError:
        return False
    return bool(host) and host.rstrip(".").lower() in sandbox_hosts


def venue_endpoints(venue) -> tuple[tuple[str, ...], frozenset]:
    """``(the URLs the venue's adapter would call, the library's sandbox hosts)``, worked
    out from the configuration alone: nothing is built or requested."""
    if venue.exchange == "oanda":
        from mmats.brokers import oanda_broker as adapter
    else:
        from mmats.brokers import ccxt_broker as adapter
    hosts = adapter.sandbox_hosts(venue.exchange)
    if venue.base_url:
        return (str(venue.base_url),), hosts
    return adapter.api_urls(venue.exchange, sandbox=venue.sandbox), hosts


def real_endpoint(venue) -> str | None:
    """The first real (not test) URL the venue would be called at, None if all are test
    endpoints."""
    urls, hosts = venue_endpoints(venue)
    return next((url for url in urls if not is_test_url(url, hosts)), None)


def refusal(config, market, live_trading_allowed: bool) -> str | None:
    """Why orders for ``market`` may not be sent (None when they may): the one statement
    of the real-money rule, used by ``check_can_trade`` and :func:`connect`."""
    if market.is_paper:
        return None
    venue = config.venue(market.execution)
    url = real_endpoint(venue)
    if url is None:
        return None
    missing = []
    if config.environment != "prod":
        missing.append(f"environment: prod (this config says {config.environment!r})")
    if not live_trading_allowed:
        missing.append("the explicit i_understand_live_trading flag "
                       "(--i-understand-live-trading), which was not given")
    if not missing:
        return None
    label = " (labelled sandbox: true)" if venue.sandbox else ""
    return (f"mode: operator sends real orders ({market.name} -> {market.execution} at "
            f"{redact_url(url)}{label}); that needs both environment: prod and the "
            f"i_understand_live_trading flag. Missing: {'; '.join(missing)}. Orders go "
            "without them only to execution: paper, a loopback base_url (127.0.0.1, ::1, "
            "localhost) or the venue's own sandbox (sandbox: true and no base_url).")


def guard_order(broker, order: dict, urls, sandbox_hosts, label: str) -> None:
    """Refuse ``order`` with :class:`RealMoneyRefused` before any request if one of
    ``urls`` (where the adapter sends it) is real and the adapter's
    :data:`REAL_MONEY_ATTRIBUTE` does not allow it. With :data:`REDUCE_ONLY` an order
    passes when it shrinks the position the venue reports (a read) and no more."""
    real = [url for url in urls if not is_test_url(url, sandbox_hosts)]
    if not real:
        return
    allowed = getattr(broker, REAL_MONEY_ATTRIBUTE, REFUSED)
    if allowed == ALLOWED:
        return
    symbol, side = order.get("symbol"), order.get("side")
    where = f"{label} {symbol}: order {order.get('client_order_id')}"
    if allowed == REDUCE_ONLY:
        held = float(broker.positions().get(symbol, 0.0))
        qty = float(order.get("qty") or 0.0)
        shrinks = (held > 0 and side == "sell") or (held < 0 and side == "buy")
        if shrinks and 0 < qty <= abs(held) * (1 + 1e-9):
            return
        raise RealMoneyRefused(
            f"{where} refused before sending: {redact_url(real[0])} is a real endpoint and "
            f"this adapter may only reduce positions (environment: prod, no "
            f"--i-understand-live-trading); {side} {qty:g} does not shrink the {held:g} held")
    raise RealMoneyRefused(
        f"{where} refused before sending: {redact_url(real[0])} is a real endpoint, and "
        "real orders need environment: prod and --i-understand-live-trading (built through "
        "mmats.brokers.connect.connect(..., live_trading_allowed=True))")
