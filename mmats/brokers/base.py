"""The ports the live runner talks to. Adapters implement them; only adapter modules
import a venue's SDK.

- :class:`DataFeed`: closed candles of a symbol up to a time (never the bar still forming);
- :class:`Execution`: send and cancel orders, look one up by client order id, list fills;
- :class:`AccountState`: balances and positions, for reconciliation.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import pandas as pd


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
        """Send an order (``client_order_id``, ``symbol``, ``side``, ``qty``, ``type``...)."""

    def cancel(self, client_order_id: str) -> None: ...

    def lookup(self, client_order_id: str) -> dict | None:
        """The venue's view of an order, or None if it never arrived."""

    def open_orders(self) -> list[dict]: ...


@runtime_checkable
class AccountState(Protocol):
    def balances(self) -> dict[str, float]: ...

    def positions(self) -> dict[str, float]: ...
