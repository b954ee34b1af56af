"""Build a venue adapter from the configuration: ``venues:`` says how to reach a venue
(ccxt exchange id or ``oanda``, sandbox/practice, base URL, timeout); the keys come from
the environment or the secrets store, never from the configuration.

Credentials, first found wins:

- environment: ``MMATS_<VENUE>_API_KEY`` and ``MMATS_<VENUE>_SECRET`` (ccxt), or
  ``MMATS_<VENUE>_TOKEN`` and ``MMATS_<VENUE>_ACCOUNT_ID`` (OANDA), with ``<VENUE>`` the
  venue's name in capitals;
- the secrets store (:mod:`mmats.secrets`: OS keyring or encrypted file), fields
  ``api_key``/``secret`` or ``token``/``account_id``, set with ``scripts/keys.py set VENUE``.

Adapters are imported here lazily, so only a configuration that uses a venue needs its
SDK; only the adapter modules import ccxt or oandapyV20.
"""

from __future__ import annotations

import os

from mmats.errors import ConfigError


def credentials(venue_name: str) -> dict:
    """The venue's credential fields, from the environment or the secrets store ({} when
    none: public market data needs no key)."""
    prefix = "MMATS_" + venue_name.upper().replace("-", "_").replace(".", "_") + "_"
    fields = {}
    for field in ("api_key", "secret", "token", "account_id", "password"):
        value = os.environ.get(prefix + field.upper())
        if value:
            fields[field] = value
    if fields:
        return fields
    from mmats.secrets import SecretsError, available_without_prompt, get_secret

    if not available_without_prompt():
        return {}  # no store to read without prompting (cron has no terminal)
    try:
        stored = get_secret(venue_name)
    except SecretsError as error:
        raise ConfigError(f"venue {venue_name}: could not read its keys: {error}") from None
    return dict(stored) if stored else {}


def connect(config, market, *, symbols=None, keys: dict | None = None):
    """The Execution/AccountState adapter for ``market.execution``."""
    return open_venue(config.venue(market.execution),
                      symbols=symbols if symbols is not None else market.symbols, keys=keys)


def open_venue(venue, *, symbols=(), keys: dict | None = None):
    """An adapter for a :class:`~mmats.live.config.VenueConfig` (also a candle source:
    ``fetch_candles``)."""
    keys = credentials(venue.name) if keys is None else keys
    if venue.exchange == "oanda":
        from mmats.brokers.oanda_broker import OandaBroker

        return OandaBroker(keys.get("account_id"), keys.get("token"), practice=venue.sandbox,
                           base_url=venue.base_url, timeout_s=venue.timeout_s)
    from mmats.brokers.ccxt_broker import CcxtBroker

    return CcxtBroker(venue.exchange, api_key=keys.get("api_key"), secret=keys.get("secret"),
                      sandbox=venue.sandbox, base_url=venue.base_url,
                      timeout_s=venue.timeout_s, symbols=tuple(symbols))
