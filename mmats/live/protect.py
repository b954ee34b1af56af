"""Protective orders resting at the venue: a sleeve's stop-loss and take-profit.

The kernel keeps each sleeve's levels in its state (``stop_price``, ``take_profit_price``,
set by ``_after_fill`` when an entry fills). In operator mode they rest at the venue as
one-cancels-the-other legs (:meth:`mmats.brokers.base.Execution.protect`), so a position
is protected between ticks and while the runner is down:

- **sync** (after every booked fill, and once a tick after reconciliation): the legs at
  the venue follow the state — placed after an entry, replaced when the kernel moves a
  level or the position's size changes, cancelled when the position is flat;
- **release** (before the decisions are sent): a sleeve whose pending order reduces or
  closes its position has its legs cancelled first (on a spot venue they hold the base
  asset; the order would be refused, or sell twice);
- **settle**: a leg the venue filled is booked as the kernel's own stop fill
  (:func:`mmats.nb.sim.venue_stop_fill`: reason STOP_LOSS / TAKE_PROFIT, the venue's
  price and fee), found by the tick's recovery look-ups like any unsettled order.

A leg is journaled as an order with ``order_id`` -1 (the kernel's id of stop fills), the
level as its ``price`` and the reason STOP_LOSS / TAKE_PROFIT; its client id is
deterministic (prefix ``mm``), journaled (``PLACING``) before it is sent, so the
reconciliation never takes it for a stray and recovery finds it after a crash. Legs do
not put a sleeve in the ``waiting`` set: they rest for as long as the position is held.
"""

from __future__ import annotations

import math

import numpy as np

from mmats.brokers.base import (
    AuthenticationFailed,
    BrokerError,
    OrderRejected,
    OutcomeUnknown,
)
from mmats.live.orders import client_order_id, order_record
from mmats.nb.risk import current_exposure
from mmats.types import ORDER_DTYPE, FillReason

STOP_LOSS = int(FillReason.STOP_LOSS)
TAKE_PROFIT = int(FillReason.TAKE_PROFIT)
LEGS = (("stop_loss", "stop_price", STOP_LOSS),
        ("take_profit", "take_profit_price", TAKE_PROFIT))
# how close a resting leg must be to the state's level and size to be left alone
LEVEL_TOLERANCE = 1e-9


def is_protective(order) -> bool:
    """Whether a journaled order (an ``ORDER_DTYPE`` record) is a resting protective leg:
    no kernel order id, reason STOP_LOSS or TAKE_PROFIT. (A stop exit the kernel queued as
    a market order has an order id.)"""
    return int(order["order_id"]) < 0 and int(order["reason"]) in (STOP_LOSS, TAKE_PROFIT)


class Protection:
    """The protective legs of a tick's :class:`~mmats.live.operator.Desk`."""

    def __init__(self, desk):
        self.desk = desk
        self._deferred: set[str] = set()  # sleeves left by sync_market for after the orders

    # -- what rests --------------------------------------------------------------------
    def resting(self, sleeve) -> dict[str, dict]:
        """The sleeve's legs the journal holds unsettled (open, or outcome unknown), by
        client id."""
        return {cid: row for cid, row in self.desk._unsettled_orders().items()
                if row["model_id"] == sleeve.model_id and row["symbol"] == sleeve.symbol
                and row["order_id"] is not None and row["order_id"] < 0
                and row["reason"] in (STOP_LOSS, TAKE_PROFIT)}

    def wanted(self, sleeve) -> dict | None:
        """The legs the sleeve's state asks for: ``{"side", "qty", "stop_loss",
        "take_profit"}`` (levels NaN when absent), or None (flat, or no level)."""
        record = self.desk.states[sleeve.id][0]
        position = float(record["position"])
        levels = {kind: float(record[field]) for kind, field, _ in LEGS}
        if position == 0.0 or all(math.isnan(v) for v in levels.values()):
            return None
        qty = abs(position)
        lot = self._lot(sleeve)
        if lot > 0:  # the venue sells whole lots: protect those, the dust cannot be sold
            qty = math.floor(qty / lot * (1 + 1e-12)) * lot
            if qty <= 0:
                return None
        return {"side": "sell" if position > 0 else "buy", "qty": qty, **levels}

    # -- sync --------------------------------------------------------------------------
    def sync_market(self, market: str) -> None:
        """Bring every sleeve of ``market`` in line (once a tick, after reconciling), but
        for a sleeve whose pending order reduces, closes or flips its position: legs
        placed now would be released before that order goes out (after a crash between
        the release and the order, the restart would place and cancel them again). It is
        brought in line after the orders (:meth:`sync_deferred`)."""
        releasing = {sleeve.id for sleeve in self._releasing()}
        for sleeve in self.desk.sleeves.values():
            if sleeve.market == market:
                if sleeve.id in releasing:
                    self._deferred.add(sleeve.id)
                else:
                    self.sync(sleeve)

    def sync_deferred(self) -> None:
        """After the orders: the sleeves :meth:`sync_market` left brought in line (their
        order may not have gone out: refused, killed, its market unsettled)."""
        deferred, self._deferred = self._deferred, set()
        for sleeve_id in sorted(deferred):
            self.sync(self.desk.sleeves[sleeve_id])

    def sync(self, sleeve) -> None:
        """Make the legs resting at the venue those the state asks for: leave them when
        they match, else cancel them (booking any fill found) and place the new ones."""
        if self._blocked(sleeve) or not hasattr(self.desk.brokers[sleeve.market], "protect"):
            return  # a venue without protective orders: the kernel's stop exits apply
        resting = self.resting(sleeve)
        wanted = self.wanted(sleeve)
        if wanted is not None and self._matches(resting, wanted):
            return
        if not self.cancel(sleeve, resting):
            return  # a leg may still rest: place nothing beside it
        wanted = self.wanted(sleeve)  # a cancel may have found a fill
        if wanted is not None and not self._blocked(sleeve):
            self._place(sleeve, wanted)

    def release_before_send(self) -> None:
        """Cancel the legs of every sleeve whose pending order will reduce, close or flip
        its position (called before the decisions are planned and sent)."""
        for sleeve in self._releasing():
            self.cancel(sleeve, self.resting(sleeve))

    def must_release(self) -> bool:
        """Whether :meth:`release_before_send` has a leg to cancel (a venue call) before
        the decisions may be planned."""
        return any(self.resting(sleeve) for sleeve in self._releasing())

    def _releasing(self):
        """The sleeves holding a position their pending order reduces, closes or flips."""
        for sleeve in self.desk.sleeves.values():
            record = self.desk.states[sleeve.id][0]
            target = float(record["target"])
            if math.isnan(target) or float(record["position"]) == 0.0 \
                    or self._blocked(sleeve) or sleeve.id in self.desk.waiting:
                continue
            current = current_exposure(record)
            if target == 0.0 or (target > 0.0) != (current > 0.0) \
                    or abs(target) < abs(current):
                yield sleeve

    def cancel(self, sleeve, resting: dict[str, dict]) -> bool:
        """Cancel ``resting`` legs and book their final reports; False when one could not
        be cancelled (it may still rest at the venue)."""
        broker = self.desk.brokers[sleeve.market]
        for cid, row in resting.items():
            if row["broker_status"] not in ("open", "partially_filled"):
                continue  # never acknowledged: recovery settles it first
            if cid not in self.desk._unsettled_orders():
                continue  # settled meanwhile (its sibling's fill cancelled it)
            try:
                final = broker.cancel(cid, sleeve.symbol)
            except AuthenticationFailed as error:
                self.desk._auth_failed(sleeve.market, error)
                return False
            except BrokerError as error:
                self.desk._event("WARNING", sleeve, "protective_cancel_failed",
                                 f"{cid}: {error}", alert=False)
                return False
            order = order_record(row)
            if final is None:  # the venue never had it
                self.desk._status(sleeve, cid, order, "missing")
            else:
                self.desk._settle(sleeve, cid, order, final)
        return not any(row["broker_status"] not in ("open", "partially_filled")
                       for row in resting.values())

    # -- recovery ----------------------------------------------------------------------
    def lost(self, sleeve, cid, order, row) -> None:
        """A leg the venue does not know: never arrived (abandoned; the next sync places
        new legs), or gone from the venue after it had it (journaled and alerted)."""
        if row["broker_status"] in ("PLACING", "UNKNOWN", "UNSENT"):
            self.desk._status(sleeve, cid, order, "abandoned")
            return
        with self.desk.journal.transaction():
            self.desk._status(sleeve, cid, order, "missing")
            self.desk._event("CRITICAL", sleeve, "protective_order_missing",
                             f"{cid} rested at the venue and is gone; new protective orders "
                             "are placed")

    # -- internals ---------------------------------------------------------------------
    def _blocked(self, sleeve) -> bool:
        desk = self.desk
        return desk.killed() or sleeve.market not in desk.brokers \
            or sleeve.market in desk.halted_markets or sleeve.market in desk.unsettled_markets \
            or (sleeve.market, sleeve.symbol) in desk.mismatched

    def _lot(self, sleeve) -> float:
        try:
            rules = self.desk.brokers[sleeve.market].instrument(sleeve.symbol) or {}
        except BrokerError:
            rules = {}
        return max(float(rules.get("lot_size") or 0.0),
                   float(sleeve.cfg[0]["lot_size"]))

    @staticmethod
    def _matches(resting: dict[str, dict], wanted: dict) -> bool:
        have = {}
        for row in resting.values():
            if row["broker_status"] not in ("open", "partially_filled"):
                return False
            have[int(row["reason"])] = row
        for kind, _, reason in LEGS:
            level = wanted[kind]
            row = have.pop(reason, None)
            if math.isnan(level):
                if row is not None:
                    return False
                continue
            if row is None or not _close(float(row["price"]), level) \
                    or not _close(abs(float(row["requested_qty"])), wanted["qty"]):
                return False
        return not have

    def _place(self, sleeve, wanted: dict) -> None:
        desk = self.desk
        record = desk.states[sleeve.id][0]
        sign = -1.0 if wanted["side"] == "sell" else 1.0
        sequence = len({row["client_order_id"] for row in desk.journal.orders_of_sleeve(
            sleeve.model_id, sleeve.symbol, protective=True)})
        request = {"symbol": sleeve.symbol, "side": wanted["side"], "qty": wanted["qty"]}
        legs = []
        for kind, _, reason in LEGS:
            level = wanted[kind]
            if math.isnan(level):
                request[kind] = None
                continue
            cid = _client_id(sleeve, kind, int(record["trade_entry_ts_ns"]), sequence)
            sequence += 1
            order = _leg_record(record, desk.now_ns, sign * wanted["qty"], level, reason)
            request[kind] = {"client_order_id": cid, "price": level}
            legs.append((cid, order))
        with desk.journal.transaction():
            for cid, order in legs:
                desk._status(sleeve, cid, order, "PLACING")
        try:
            reports = desk.brokers[sleeve.market].protect(request)
        except OutcomeUnknown as error:
            for cid, order in legs:
                desk._status(sleeve, cid, order, "UNKNOWN")
            desk.unsettled_markets.add(sleeve.market)
            desk._event("WARNING", sleeve, "outcome_unknown",
                        f"protective orders {[c for c, _ in legs]}: {error}", alert=False)
            return
        except AuthenticationFailed as error:
            for cid, order in legs:
                desk._status(sleeve, cid, order, "abandoned")
            desk._auth_failed(sleeve.market, error)
            return
        except OrderRejected as error:
            with desk.journal.transaction():
                for cid, order in legs:
                    desk._status(sleeve, cid, order, "rejected")
                desk._event("WARNING", sleeve, "protective_order_rejected",
                            f"{[c for c, _ in legs]}: {error}; the kernel's own stop exit "
                            "still applies at the next closes", {"reason": error.reason})
            return
        except BrokerError as error:
            for cid, order in legs:
                desk._status(sleeve, cid, order, "abandoned")
            desk._event("WARNING", sleeve, "venue_unavailable",
                        f"protective orders: {error}; placed at the next tick", alert=False)
            return
        desk.report.orders += len(legs)
        by_cid = {report["client_order_id"]: report for report in reports}
        for cid, order in legs:
            report = by_cid.get(cid)
            if report is not None:
                desk._settle(sleeve, cid, order, report)


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= LEVEL_TOLERANCE * max(abs(a), abs(b), 1e-300)


def _client_id(sleeve, kind: str, entry_ts_ns: int, sequence: int) -> str:
    return client_order_id(f"{sleeve.id}|{kind}", entry_ts_ns, sequence)


def _leg_record(record, now_ns: int, signed_qty: float, level: float, reason: int):
    order = np.zeros(1, dtype=ORDER_DTYPE)[0]
    order["order_id"] = -1
    order["decision_ts_ns"] = now_ns
    order["bar"] = record["bars"]
    order["ts_ns"] = now_ns
    order["target_exposure"] = 0.0  # an exit to flat, when it triggers
    order["requested_qty"] = signed_qty
    order["price"] = level
    order["reason"] = reason
    return order

