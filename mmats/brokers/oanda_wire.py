"""OANDA's wire format, shared by the adapter and its protective legs: instrument names,
order states, units and prices as OANDA writes them, and how a failed request is told.
No SDK here: the adapter modules import oandapyV20."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, Decimal, InvalidOperation

from mmats.errors import ConfigError

GRANULARITIES = {"1m": "M1", "5m": "M5", "15m": "M15", "30m": "M30", "1h": "H1", "4h": "H4",
                 "1d": "D"}
MAX_CANDLES_PER_REQUEST = 5000  # OANDA's limit on ``count``

STATUS = {"PENDING": "open", "TRIGGERED": "open", "FILLED": "filled", "CANCELLED": "canceled"}
PROTECTIVE = {"STOP_LOSS": "stop_loss", "TAKE_PROFIT": "take_profit"}  # dependent orders
# a protective leg's order on the position's k-th trade (k >= 2): "<leg client id>.k"; its
# clientExtensions.comment: "<side> <units> (k/n)"
LEG_MEMBER = re.compile(r"^(?P<leg>.+)\.(?P<k>[2-9]|[1-9][0-9]+)$")
LEG_COMMENT = re.compile(r"^(?P<side>buy|sell) (?P<units>[0-9.]+) \((?P<k>\d+)/(?P<n>\d+)\)$")
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
    body) or protocol (an unexpected success status)."""

    kind: str
    detail: str
    status: int | None = None
    body: dict | None = None


class Refused(Exception):
    """The venue answered 4xx (not 401/403/429): the caller decides what it means."""

    def __init__(self, failure: Failure):
        super().__init__(failure.detail)
        self.failure = failure


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
