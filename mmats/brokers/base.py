"""The ports the live runner talks to. Adapters implement them; only adapter modules
import a venue's SDK (ccxt, oandapyV20).

- :class:`DataFeed`: closed candles of a symbol up to a time (never the bar still forming);
- :class:`Execution`: send and cancel orders, look one up by client order id, list the
  open ones, protect a position, and the instrument's trading rules;
- :class:`AccountState`: balances and positions, for reconciliation;
- :class:`MarketDepth` (optional, for the operator console): ``order_book(symbol, depth)``,
  the top ``depth`` price levels of each side as an :class:`OrderBook`, read with no key
  where the venue publishes its book. An adapter whose venue has none (the paper venue:
  its orders fill at the last stored close) raises :class:`OrderBookUnavailable`, and a
  caller treats an adapter without the method the same way.

What crosses a port is a plain dict, the same for every venue; its shape is declared once,
by the TypedDicts below: :class:`Order` (what :meth:`Execution.send` takes),
:class:`OrderReport` (what ``send``, ``lookup``, ``cancel``, ``protect`` and
``open_orders`` return), :class:`ProtectRequest` with its :class:`ProtectLeg` (what
:meth:`Execution.protect` takes) and :class:`InstrumentRules`. Being TypedDicts they cost
nothing at run time (callers still build and read dicts), and a type checker or the
conformance suite (``tests/venues/test_ports.py``) holds every adapter to them.

Protective orders rest at the venue for an open position: a stop-loss, a take-profit, or
both as one-cancels-the-other legs, placed by one :meth:`Execution.protect`. When one leg
fills, the other is cancelled; cancelling either leg cancels both, on every venue (Binance:
its OCO order list; OANDA, which has none: the adapter cancels the sibling's orders too;
paper: the linked rows), so a position is never left with half of its protection: to move
one level, cancel and protect again with both. Legs placed by separate ``protect`` calls
are not siblings. (A ccxt venue with no order list in its facts, ``oco_method``, cannot
keep this: there the two legs are independent orders; Binance, the venue configured, has
one.) A stop-loss triggers when the price trades through its level and fills
at the venue's price then (the paper venue: the kernel's stop-fill rule); a leg cancelled
with its sibling (filled or cancelled) reports ``canceled`` (or ``expired``) with nothing
filled, and cancelling it again returns that report.

Every adapter maps its venue's errors onto the four outcomes the runner acts on:
retry (:class:`VenueUnavailable`), back off (:class:`RateLimited`), reject
(:class:`OrderRejected`: journaled, two in a row halt the sleeve) and halt
(:class:`AuthenticationFailed`). A request that may have reached the venue but whose
answer was lost raises :class:`OutcomeUnknown`: the runner then looks the order up by its
client id before it sends anything else. Messages name the venue and symbol and never
carry a key or secret.

>>> order: Order = {"client_order_id": "mm-4k2j", "symbol": "ETH/BTC", "side": "buy",
...                 "qty": 0.5, "type": "market", "price": None, "time_in_force": "GTC"}
"""

# No ``from __future__ import annotations`` here: under it Python 3.11 cannot see
# NotRequired in a TypedDict, and every key would count as required.
from typing import Literal, NotRequired, Protocol, TypedDict, get_args, runtime_checkable

import pandas as pd

from mmats.errors import MMATSError

Side = Literal["buy", "sell"]
OrderStatus = Literal["open", "partially_filled", "filled", "canceled", "rejected", "expired"]
ProtectiveType = Literal["stop_loss", "take_profit"]

ORDER_STATES: tuple[str, ...] = get_args(OrderStatus)
FINAL_STATES = ("filled", "canceled", "rejected", "expired")


class Order(TypedDict):
    """An order handed to :meth:`Execution.send`."""

    client_order_id: str   # deterministic, <= 32 chars of [A-Za-z0-9_-]
    symbol: str            # "BASE/QUOTE", e.g. "ETH/BTC"
    side: Side
    qty: float             # > 0, in base units
    type: Literal["market", "limit"]
    price: float | None    # the limit price; None for a market order
    time_in_force: str     # "GTC"


class OrderReport(TypedDict):
    """The venue's account of one order (a protective leg counts as one order)."""

    client_order_id: str
    venue_order_id: str
    symbol: str
    side: Side
    qty: float
    filled_qty: float          # >= 0, cumulative, <= qty
    avg_price: float | None    # None until something filled
    fee: float                 # cumulative, in the quote currency
    status: OrderStatus
    reason: str | None         # why it was rejected or cancelled
    # The part of ``fee`` the venue took in the base asset, in base units, withheld from
    # the quantity received rather than paid (ccxt spot venues).
    fee_base: NotRequired[float]
    # Fees in a third currency (e.g. BNB on Binance), by currency, not converted.
    other_fees: NotRequired[dict[str, float]]
    # Reports of protective legs only: which leg, and the level that triggers it.
    type: NotRequired[ProtectiveType]
    stop_price: NotRequired[float]


class ProtectLeg(TypedDict):
    """One protective leg: its client order id and trigger level."""

    client_order_id: str
    price: float


class ProtectRequest(TypedDict):
    """A position's protective orders, handed to :meth:`Execution.protect`."""

    symbol: str
    side: Side                      # sell protects a long, buy a short
    qty: float                      # the position, in base units
    stop_loss: ProtectLeg | None
    take_profit: ProtectLeg | None


class InstrumentRules(TypedDict):
    """An instrument's trading rules, each 0 when the venue has none."""

    lot_size: float       # base units
    tick_size: float      # quote units
    min_notional: float   # quote units


class OrderBook(TypedDict):
    """A snapshot of the top of an instrument's book (what ``order_book`` returns)."""

    symbol: str
    bids: list[list[float]]   # [[price, quantity], ...], best (highest) first
    asks: list[list[float]]   # [[price, quantity], ...], best (lowest) first
    ts_ms: int                # the venue's time of the snapshot, else when it arrived


def book_levels(levels, depth: int, *, descending: bool) -> list[list[float]]:
    """The best ``depth`` of a side's ``levels`` (rows starting ``price, quantity``, as
    ccxt and the venues send them, numbers or text) as ``[[price, quantity], ...]``
    floats; rows without a positive price or quantity are dropped.

    >>> book_levels([["0.05", "2"], [0.051, 1.5, 7]], 1, descending=True)
    [[0.051, 1.5]]
    """
    rows = []
    for row in levels or ():
        try:
            price, quantity = float(row[0]), float(row[1])
        except (TypeError, ValueError, IndexError):
            continue
        if price > 0 and quantity > 0:
            rows.append([price, quantity])
    rows.sort(key=lambda level: level[0], reverse=descending)
    return rows[:max(1, int(depth))]


class BrokerError(MMATSError):
    """A venue could not do what was asked."""


class VenueUnavailable(BrokerError):
    """A network error, timeout or 5xx before the venue acted: safe to retry."""


class RateLimited(BrokerError):
    """The venue asked us to slow down (429/418); wait ``retry_after`` seconds."""

    def __init__(self, message, retry_after: float = 1.0):
        super().__init__(message)
        self.retry_after = float(retry_after)


class OutcomeUnknown(BrokerError):
    """The request may have reached the venue but the answer was lost (timeout after
    sending, dropped connection): look the order up by client id before anything else."""


class OrderRejected(BrokerError):
    """The venue refused the order (funds, lot size, minimum notional, duplicate id...)."""

    def __init__(self, message, reason: str = "rejected"):
        super().__init__(message)
        self.reason = reason


class InsufficientFunds(OrderRejected):
    def __init__(self, message):
        super().__init__(message, "insufficient_funds")


class AuthenticationFailed(BrokerError):
    """Bad, expired or revoked credentials: the runner halts and notifies."""


class OrderBookUnavailable(BrokerError):
    """The venue (or its adapter) has no order book to give; the message says why."""


@runtime_checkable
class DataFeed(Protocol):
    def closed_bars(self, symbol: str, timeframe: str, *, since_ns: int | None,
                    until_ns: int) -> pd.DataFrame:
        """Bars opened after ``since_ns`` whose close time (open + timeframe) is at or
        before ``until_ns``, in the candle schema, oldest first."""

    def history(self, symbol: str, timeframe: str, *, end_ns: int, bars: int) -> pd.DataFrame:
        """The last ``bars`` closed bars up to and including the bar opened at ``end_ns``."""


@runtime_checkable
class Execution(Protocol):
    def send(self, order: Order) -> OrderReport:
        """Send an order; return its report. Raises one of the errors above."""

    def cancel(self, client_order_id: str, symbol: str) -> OrderReport | None:
        """Cancel an open order; return its final report (None if the venue never had it).
        Cancelling a protective leg cancels its sibling too; the report is the named leg's."""

    def lookup(self, client_order_id: str, symbol: str) -> OrderReport | None:
        """The venue's report of an order, or None if it never arrived."""

    def open_orders(self, symbol: str | None = None) -> list[OrderReport]:
        """Reports of the open orders (of ``symbol``, or all), resting legs included."""

    def protect(self, order: ProtectRequest) -> list[OrderReport]:
        """Rest a position's stop-loss and/or take-profit; return the report of each leg
        (with ``type`` and ``stop_price``). Raises one of the errors above."""

    def instrument(self, symbol: str) -> InstrumentRules:
        """The instrument's trading rules."""


@runtime_checkable
class AccountState(Protocol):
    def balances(self) -> dict[str, float]:
        """Total balance of each asset (currency) in the account."""

    def positions(self) -> dict[str, float]:
        """Signed position of each traded symbol, in base units (0 entries omitted)."""


@runtime_checkable
class MarketDepth(Protocol):
    def order_book(self, symbol: str, depth: int = 10) -> OrderBook:
        """The top ``depth`` levels of each side of ``symbol``'s book. Raises
        :class:`OrderBookUnavailable` where the venue has none, else the errors above."""
