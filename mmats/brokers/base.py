"""The ports the live runner talks to. Adapters implement them; only adapter modules
import a venue's SDK (ccxt, oandapyV20).

- :class:`DataFeed`: closed candles of a symbol up to a time (never the bar still forming);
- :class:`Execution`: send and cancel orders, look one up by client order id, list the
  open ones, and the instrument's trading rules;
- :class:`AccountState`: balances and positions, for reconciliation.

Orders and reports are plain dicts with the keys below, the same for every venue.

An order handed to :meth:`Execution.send`::

    {"client_order_id": "mm-4k2j...",       # deterministic, <= 32 chars of [A-Za-z0-9_-]
     "symbol": "ETH/BTC", "side": "buy" | "sell", "qty": 0.5,   # qty > 0, in base units
     "type": "market" | "limit", "price": None | float, "time_in_force": "GTC"}

An order report (what ``send`` and ``lookup`` return, and each item of ``open_orders``)::

    {"client_order_id": ..., "venue_order_id": str, "symbol": ..., "side": ...,
     "qty": float, "filled_qty": float (>= 0, cumulative), "avg_price": float | None,
     "fee": float (cumulative, in the quote currency), "status": one of ORDER_STATES,
     "reason": str | None (why it was rejected or cancelled),
     "fee_base": float (optional: the part of ``fee`` the venue took in the base asset,
                 in base units, withheld from the quantity received rather than paid)}

Protective orders (:meth:`Execution.protect`) rest at the venue for an open position: a
stop-loss, a take-profit, or both as one-cancels-the-other legs (when one fills the venue
cancels the other; cancelling either leg cancels both)::

    {"symbol": "ETH/BTC", "side": "sell" | "buy",   # sell protects a long, buy a short
     "qty": 0.5,                                     # the position, in base units
     "stop_loss": {"client_order_id": "mm...", "price": 0.049} | None,
     "take_profit": {"client_order_id": "mm...", "price": 0.061} | None}

``protect`` returns one report per leg. Reports of protective legs (from ``protect``,
``lookup``, ``cancel`` and ``open_orders``) carry two more keys: ``"type"``:
``"stop_loss" | "take_profit"``, and ``"stop_price"``: the level that triggers the leg.
A stop-loss triggers when the price trades through its level and fills at the venue's
price then (the paper venue: the kernel's stop-fill rule); a leg cancelled because its
sibling filled reports ``canceled`` (or ``expired``) with nothing filled.

Every adapter maps its venue's errors onto the four outcomes the runner acts on:
retry (:class:`VenueUnavailable`), back off (:class:`RateLimited`), reject
(:class:`OrderRejected`: journaled, two in a row halt the sleeve) and halt
(:class:`AuthenticationFailed`). A request that may have reached the venue but whose
answer was lost raises :class:`OutcomeUnknown`: the runner then looks the order up by its
client id before it sends anything else. Messages name the venue and symbol and never
carry a key or secret.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import pandas as pd

from mmats.errors import MMATSError

ORDER_STATES = ("open", "partially_filled", "filled", "canceled", "rejected", "expired")
FINAL_STATES = ("filled", "canceled", "rejected", "expired")


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
    def send(self, order: dict) -> dict:
        """Send an order; return its report. Raises one of the errors above."""

    def cancel(self, client_order_id: str, symbol: str) -> dict | None:
        """Cancel an open order; return its final report (None if the venue never had it)."""

    def lookup(self, client_order_id: str, symbol: str) -> dict | None:
        """The venue's report of an order, or None if it never arrived."""

    def open_orders(self, symbol: str | None = None) -> list[dict]: ...

    def protect(self, order: dict) -> list[dict]:
        """Place a position's protective stop-loss and/or take-profit (the dict above);
        return the report of each leg. Raises one of the errors above."""

    def instrument(self, symbol: str) -> dict:
        """Trading rules: ``{"lot_size", "tick_size", "min_notional"}`` (0 when none)."""


@runtime_checkable
class AccountState(Protocol):
    def balances(self) -> dict[str, float]:
        """Total balance of each asset (currency) in the account."""

    def positions(self) -> dict[str, float]:
        """Signed position of each traded symbol, in base units (0 entries omitted)."""
