"""OANDA's wire format, shared by the adapter and its protective legs: instrument names,
order states, units and prices as OANDA writes them, how a failed request is told
(:class:`Failure`) and what the venues' retry policy does about it
(:func:`classify_failure`). No SDK here: the adapter modules import oandapyV20."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, Decimal, InvalidOperation

from mmats.brokers.base import (
    AuthenticationFailed,
    BrokerError,
    OutcomeUnknown,
    RateLimited,
    VenueUnavailable,
)
from mmats.brokers.retry import Verdict, give_up, rate_limited, retry
from mmats.errors import ConfigError

GRANULARITIES = {"1m": "M1", "5m": "M5", "15m": "M15", "30m": "M30", "1h": "H1", "4h": "H4",
                 "1d": "D"}
MAX_CANDLES_PER_REQUEST = 5000  # OANDA's limit on ``count``

STATUS = {"PENDING": "open", "TRIGGERED": "open", "FILLED": "filled", "CANCELLED": "canceled"}
PROTECTIVE = {"STOP_LOSS": "stop_loss", "TAKE_PROFIT": "take_profit"}  # dependent orders
# a protective leg's order on the position's k-th trade (k >= 2): "<leg client id>.k"; its
# clientExtensions.comment: "<side> <units> (k/n)", then " oco <the other leg's client id>"
# when the stop-loss and take-profit were placed together (cancelling one cancels both)
LEG_MEMBER = re.compile(r"^(?P<leg>.+)\.(?P<k>[2-9]|[1-9][0-9]+)$")
LEG_COMMENT = re.compile(r"^(?P<side>buy|sell) (?P<units>[0-9.]+) \((?P<k>\d+)/(?P<n>\d+)\)"
                         r"(?: oco (?P<sibling>\S+))?$")
FUNDS_REASONS = ("INSUFFICIENT_MARGIN", "INSUFFICIENT_FUNDS", "INSUFFICIENT_LIQUIDITY_FUNDS")
MARKET_TIME_IN_FORCE = ("FOK", "IOC")
LIMIT_TIME_IN_FORCE = ("GTC", "GFD")
TAG = "mmats"


def to_instrument(symbol: str) -> str:
    """OANDA's name of a symbol: ``"EUR/USD"`` -> ``"EUR_USD"``."""
    return str(symbol).strip().upper().replace("/", "_")


def to_symbol(instrument: str) -> str:
    """Our name of an OANDA instrument: ``"EUR_USD"`` -> ``"EUR/USD"``."""
    return str(instrument).replace("_", "/")


@dataclass
class Failure:
    """Why one request failed: ``kind`` is auth, rate, refused (other 4xx), server (5xx),
    unsent (nothing reached the venue), lost (the answer was lost), garbled (unreadable
    body) or protocol (an unexpected success status). ``retry_after_s`` is the answer's
    ``Retry-After``, in seconds, when it had one."""

    kind: str
    detail: str
    status: int | None = None
    body: dict | None = None
    retry_after_s: float | None = None


class Refused(Exception):
    """The venue answered 4xx (not 401/403/429): the caller decides what it means."""

    def __init__(self, failure: Failure):
        super().__init__(failure.detail)
        self.failure = failure


class RequestFailed(Exception):
    """One try of a request failed (internal: the adapter raises it for the retry policy
    to judge with :func:`classify_failure`)."""

    def __init__(self, failure: Failure):
        super().__init__(failure.detail)
        self.failure = failure


def classify_failure(exc: Exception, where: str, *, idempotent: bool = True,
                     refusal: bool = False) -> Verdict:
    """What the retry policy does about a failed OANDA request (see
    :mod:`mmats.brokers.retry`).

    ``where`` names the account and the request; ``idempotent`` is False for a request
    that creates an order (never sent again once it may have arrived: only a connection
    that was never opened is retried); ``refusal`` lets the caller read a 4xx itself
    (:class:`Refused`) instead of a :class:`~mmats.brokers.base.BrokerError`.

    >>> classify_failure(RequestFailed(Failure("server", "HTTP 503")), "OANDA").action
    'retry'
    >>> classify_failure(RequestFailed(Failure("server", "HTTP 503")), "OANDA",
    ...                  idempotent=False).action
    'give_up'
    """
    if not isinstance(exc, RequestFailed):
        return give_up(exc)
    failure = exc.failure
    if failure.kind == "auth":
        return give_up(AuthenticationFailed(
            f"{where}: credentials refused (HTTP {failure.status}: {failure.detail}); check "
            "the token and that it may use this account"))
    if failure.kind == "refused":
        return give_up(Refused(failure) if refusal else BrokerError(
            f"{where}: the venue refused the request ({failure.detail})"))
    if failure.kind == "rate":
        return rate_limited(lambda tries, wait: RateLimited(
            f"{where}: rate limited {tries} times in a row (HTTP 429); wait {wait:g} s",
            retry_after=wait), failure.retry_after_s)
    if failure.kind == "unsent":  # nothing reached the venue: safe to try again
        sent = "" if idempotent else "; the order was not sent"
        return retry(lambda tries: VenueUnavailable(
            f"{where}: {failure.detail}{sent} ({tries} attempts); retry later"))
    if idempotent:
        return retry(lambda tries: VenueUnavailable(
            f"{where}: {failure.detail} ({tries} attempts); retry later"))
    if failure.kind == "protocol" and "orderCreateTransaction" not in (failure.body or {}):
        return give_up(VenueUnavailable(f"{where}: venue protocol error: {failure.detail}; "
                                        "the answer shows no order created"))
    return give_up(OutcomeUnknown(
        f"{where}: {failure.detail}; the order may have reached the venue: look the order "
        "up by its client id before sending anything else"))


def rfc3339(ts_ns: int) -> str:
    seconds, nanos = divmod(int(ts_ns), 1_000_000_000)
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(seconds))}.{nanos:09d}Z"


def round_units(qty: float, precision: int) -> Decimal:
    """Round a quantity down to ``precision`` decimals (never more than asked for)."""
    try:
        return Decimal(repr(float(qty))).quantize(Decimal(1).scaleb(-precision),
                                                  rounding=ROUND_DOWN)
    except InvalidOperation:
        raise ConfigError(f"quantity {qty!r} cannot be rounded to {precision} decimals") from None


def round_price(price: float, precision: int) -> Decimal:
    return Decimal(repr(float(price))).quantize(Decimal(1).scaleb(-precision),
                                                rounding=ROUND_HALF_EVEN)


def decimal_text(number: Decimal) -> str:
    return format(number, "f")


def units_text(units: float) -> str:
    """Units as OANDA writes them: ``1000.0`` -> ``"1000"``, ``0.5`` -> ``"0.5"``."""
    return decimal_text(Decimal(repr(abs(float(units)))).normalize())


# --- the real-money guard's facts (mmats.brokers.connect holds the rule) -----------------
