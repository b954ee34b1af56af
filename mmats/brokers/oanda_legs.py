"""OANDA's protective legs: a position's stop-loss and take-profit resting at the venue as
dependent STOP_LOSS / TAKE_PROFIT orders, one on each open trade of the position (see
:meth:`ProtectiveLegs.protect`). OANDA has no order lists: a fill closes the trade and the
venue cancels its other dependent orders, but a cancel takes only the order named, so the
adapter cancels a leg's sibling itself (:meth:`ProtectiveLegs._cancel_sibling`), as the
port promises. A mixin of :class:`~mmats.brokers.oanda_broker.OandaBroker`, which
supplies the requests (``_call``), the rules and the guard."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import oandapyV20.endpoints.orders as oanda_orders
import oandapyV20.endpoints.trades as oanda_trades

from mmats.brokers.base import (
    AuthenticationFailed,
    BrokerError,
    OrderRejected,
    RateLimited,
    VenueUnavailable,
)
from mmats.brokers.oanda_wire import (
    LEG_COMMENT,
    PROTECTIVE,
    STATUS,
    TAG,
    Refused,
    decimal_text,
    round_price,
    to_instrument,
    to_symbol,
    units_text,
)


class ProtectiveLegs:
    """``protect`` and the reports of its legs, for the OANDA adapter."""

    def protect(self, order: dict) -> list[dict]:
        """Rest a position's stop-loss and/or take-profit (see :mod:`mmats.brokers.base`) as
        OANDA's dependent STOP_LOSS / TAKE_PROFIT orders, one on each open trade of the
        position (oldest first; the oldest's carries the leg's client id, the others
        ``<client id>.k``, placed before it so a leg whose own order exists is complete).
        Each order's comment names the other leg when both are asked for, so cancelling
        one cancels both (see :meth:`~mmats.brokers.oanda_broker.OandaBroker.cancel`).
        Levels are rounded to the instrument's ``displayPrecision``. A dependent order
        closes its whole trade, so the trades must hold the units asked for; otherwise
        :class:`OrderRejected` (``position_mismatch``). If a leg is refused, the orders
        already placed are cancelled before the error is raised.

        >>> broker.protect({"symbol": "EUR/USD", "side": "sell", "qty": 1000,
        ...                 "stop_loss": {"client_order_id": "mm-s", "price": 1.09},
        ...                 "take_profit": {"client_order_id": "mm-t", "price": 1.12}})  # doctest: +SKIP
        """
        legs = {kind: order[kind] for kind in ("stop_loss", "take_profit") if order.get(kind)}
        symbol, side = str(order.get("symbol") or ""), str(order.get("side") or "").lower()
        first = next(iter(legs.values()), {}).get("client_order_id")
        self._guard({**order, "client_order_id": first})
        label = f"OANDA account {self.account_id}: protective orders {first} on {symbol}"
        try:
            qty = float(order["qty"])
            levels = {kind: float(leg["price"]) for kind, leg in legs.items()}
            cids = {kind: str(leg["client_order_id"]) for kind, leg in legs.items()}
        except (KeyError, TypeError, ValueError) as err:
            raise OrderRejected(f"{label}: malformed request ({type(err).__name__}: {err}); "
                                "see mmats.brokers.base for its shape", "invalid_order") from None
        if not legs or side not in ("buy", "sell") or not qty > 0 \
                or not all(np.isfinite(v) and v > 0 for v in levels.values()):
            raise OrderRejected(f"{label}: rejected before sending: needs a side, a qty > 0 "
                                "and a stop_loss or take_profit with a price > 0",
                                "invalid_order")
        rules = self._order_rules(symbol)
        trades = sorted((t for t in self.trades()
                         if to_instrument(t["symbol"]) == to_instrument(symbol)
                         and (t["units"] > 0) == (side == "sell") and t["units"] != 0),
                        key=lambda t: int(t["trade_id"]))
        held = sum(abs(t["units"]) for t in trades)
        lot = float(Decimal(1).scaleb(-rules["units_precision"]))
        if not trades or abs(held - qty) > lot / 2:
            raise OrderRejected(
                f"{label}: the {len(trades)} open {'long' if side == 'sell' else 'short'} "
                f"trade(s) hold {held:g} units, not the {qty:g} to protect; a stop-loss or "
                "take-profit closes its whole trade (another sleeve, or a manual trade, on "
                "this instrument?)", "position_mismatch")
        placed: list[str] = []
        closed = False  # a leg filled at once (its level already reached): nothing is left
        reports = {}
        try:
            for kind, cid in cids.items():
                if closed:
                    reports[kind] = {
                        "client_order_id": cid, "venue_order_id": None, "symbol": symbol,
                        "side": side, "qty": held, "filled_qty": 0.0, "avg_price": None,
                        "fee": 0.0, "status": "canceled", "type": kind,
                        "reason": "not sent: the other leg filled at once",
                        "stop_price": levels[kind]}
                    continue
                price = decimal_text(round_price(levels[kind], rules["price_precision"]))
                sibling = "".join(f" oco {other}" for name, other in cids.items()
                                  if name != kind)
                members = [(f"{cid}.{k}", k, trade) for k, trade in enumerate(trades, 1)]
                members = members[1:] + [(cid, 1, trades[0])]  # the leg's own order last
                for member_cid, k, trade in members:
                    closed |= self._place_dependent(
                        kind, member_cid, trade, price,
                        f"{side} {units_text(trade['units'])} ({k}/{len(trades)}){sibling}",
                        symbol)
                    placed.append(member_cid)
        except (OrderRejected, VenueUnavailable, RateLimited, AuthenticationFailed):
            for member_cid in reversed(placed):  # nothing half-protected left behind
                try:
                    self._cancel_order(member_cid, symbol)
                except BrokerError:
                    pass  # still resting: the runner cancels it as a stray
            raise
        return [reports.get(kind) or self.lookup(cid, symbol) for kind, cid in cids.items()]

    def _place_dependent(self, kind: str, cid: str, trade: dict, price: str, comment: str,
                         symbol: str) -> bool:
        """Create one dependent order; True when it filled at once (its trade is closed)."""
        venue_type = {"stop_loss": "STOP_LOSS", "take_profit": "TAKE_PROFIT"}[kind]
        body = {"type": venue_type, "tradeID": str(trade["trade_id"]), "price": price,
                "timeInForce": "GTC", "triggerCondition": "DEFAULT",
                "clientExtensions": {"id": cid, "tag": TAG, "comment": comment}}
        what = f"send {venue_type} at {price} on trade {trade['trade_id']} (client id {cid})"
        request = oanda_orders.OrderCreate(self.account_id, data={"order": body})
        refused = None
        try:
            response = self._call(request, what, symbol, idempotent=False, refusal=True)
        except Refused as err:
            refused = err.failure
        if refused is not None:
            raise self._rejection(what, refused.body or {}, refused.detail)
        cancel = response.get("orderCancelTransaction")
        if cancel and not response.get("orderFillTransaction"):
            raise OrderRejected(f"OANDA account {self.account_id}: {what}: the venue cancelled "
                                f"the order at once ({cancel.get('reason')})",
                                cancel.get("reason") or "CANCELLED")
        return bool(response.get("orderFillTransaction"))

    def _cancel_leg(self, client_order_id: str, order: dict, symbol: str | None) -> dict:
        """Cancel the orders of a protective leg on the position's other trades (its own
        order, ``order``, was cancelled by the caller); return the leg's report."""
        members = self._members(client_order_id, order, symbol)
        if any(m["state"] == "PENDING" for m in members[1:]):
            for member in members[1:]:
                if member["state"] == "PENDING":
                    self._cancel_order(member["clientExtensions"]["id"], symbol)
            members = self._members(client_order_id, self._order_by_client_id(
                client_order_id, symbol), symbol)
        return self._leg_report(client_order_id, symbol, members)

    def _cancel_sibling(self, order: dict, symbol: str | None) -> None:
        """Cancel the other leg placed with the protective order ``order`` (named in its
        comment), on every trade: cancelling one leg cancels both. A sibling already
        filled or cancelled is left as it is."""
        described = LEG_COMMENT.match((order.get("clientExtensions") or {}).get(
            "comment") or "")
        sibling = described and described.group("sibling")
        if not sibling:
            return  # a leg placed alone
        self._cancel_order(sibling, symbol)  # refused when already final: nothing to do
        other = self._order_by_client_id(sibling, symbol)
        if other is None:
            self._cancel_orphans(sibling, symbol)  # its own order never went out
        elif other.get("type") in PROTECTIVE:
            self._cancel_leg(sibling, other, symbol)

    def _members(self, client_order_id: str, order: dict, symbol: str | None) -> list[dict]:
        """A protective leg's dependent orders: its own, then those on the position's other
        trades (their count is in its comment)."""
        count = LEG_COMMENT.match((order.get("clientExtensions") or {}).get("comment") or "")
        members = [order]
        for k in range(2, int(count.group("n")) + 1 if count else 2):
            member = self._order_by_client_id(f"{client_order_id}.{k}", symbol)
            if member is not None:
                members.append(member)
        return members

    def _leg_report(self, client_order_id: str, symbol: str | None, members: list) -> dict:
        """One report over a protective leg's dependent orders: units and fills summed,
        open while one is pending, filled when all filled, else cancelled."""
        first = members[0]
        side, qty, filled, notional, fee, reason, fills = None, 0.0, 0.0, 0.0, 0.0, None, []
        for member in members:
            state = member.get("state")
            if state not in STATUS:
                raise BrokerError(f"OANDA account {self.account_id}: order {member.get('id')} "
                                  f"has an unknown state {state!r}")
            described = LEG_COMMENT.match((member.get("clientExtensions") or {}).get(
                "comment") or "")
            if described:
                side, qty = described.group("side"), qty + float(described.group("units"))
            if member.get("fillingTransactionID"):
                fill = self._transaction(member["fillingTransactionID"], symbol)
                units = float(fill.get("units", 0))
                side = side or ("buy" if units > 0 else "sell")
                symbol = symbol or to_symbol(fill.get("instrument", ""))
                filled += abs(units)
                notional += abs(units) * float(fill["price"])
                fee += (float(fill.get("commission", 0))
                        + float(fill.get("guaranteedExecutionFee", 0))
                        - float(fill.get("financing", 0)))
                fills.append(float(fill["price"]))
            if state == "CANCELLED" and member.get("cancellingTransactionID") and not reason:
                reason = self._transaction(member["cancellingTransactionID"], symbol).get(
                    "reason", "CANCELLED")
        if symbol is None or side is None:
            trade = self._call(oanda_trades.TradeDetails(self.account_id, first["tradeID"]),
                               f"read trade {first['tradeID']}", symbol)["trade"]
            symbol = symbol or to_symbol(trade["instrument"])
            side = side or ("sell" if float(trade["initialUnits"]) > 0 else "buy")
            qty = qty or abs(float(trade["initialUnits"]))
        states = {member["state"] for member in members}
        if states & {"PENDING", "TRIGGERED"}:
            status = "partially_filled" if filled else "open"
        else:
            status = "filled" if states == {"FILLED"} else "canceled"
        return {"client_order_id": client_order_id, "venue_order_id": str(first["id"]),
                "symbol": symbol, "side": side, "qty": max(qty, filled), "filled_qty": filled,
                # one price: itself (q x p / q may be off an ulp)
                "avg_price": (fills[0] if len(set(fills)) == 1 else notional / filled) if filled
                else None,
                "fee": fee, "status": status, "reason": reason if status == "canceled" else None,
                "type": PROTECTIVE[first["type"]], "stop_price": float(first["price"])}
