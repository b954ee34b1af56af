"""Operator mode: the tick's venue side. Orders go to a broker (a venue adapter or the
paper venue); fills come back from it.

Per tick, before any new bar is processed:

1. **recover** — every order whose outcome the journal does not know (sent, no answer;
   not sent because the venue was down; still open) is looked up by its client id; fills
   found are applied through the kernel, and an order the venue never saw is sent now,
   with the same id. Nothing else is sent before this is done.
2. **reconcile** — the venue's positions and open orders against the journal's: a
   difference within ``reconcile_tolerance_pct`` is adopted (the venue is the truth) and
   journaled; beyond it the symbol's sleeves are paused (HALTED, positions kept, nothing
   sent) and the operator is told. Orders of ours the journal does not hold open are
   cancelled.

After the bars (``on_bar_venue``: stops and limits queue exits rather than simulate
fills) and the decisions, **send** turns each sleeve's pending target into a market
order sized by the kernel at the last close, journals it (``SENDING``) with the state in
one transaction, sends it and journals the venue's answer. A refusal is journaled and the
decision retried at the next close; two refusals in a row pause the sleeve; an
authentication failure pauses the market. Every one of these is a risk event and an alert.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict

import numpy as np

from mmats.brokers.base import (
    FINAL_STATES,
    AuthenticationFailed,
    BrokerError,
    OrderRejected,
    OutcomeUnknown,
)
from mmats.live.orders import CLIENT_ID_PREFIX, client_order_id, order_record
from mmats.live.protect import Protection, is_protective
from mmats.nb.fills import adopt_position, fee_in_base
from mmats.nb.risk import order_refused, reduce_only
from mmats.nb.risk import pause as pause_state
from mmats.nb.sim import plan_venue_order, venue_fill, venue_stop_fill
from mmats.types import FILL_DTYPE, ORDER_DTYPE, TRADE_DTYPE, OrderStatus

# journal statuses of an order whose outcome is not known yet
UNSETTLED = ("SENDING", "PLACING", "UNKNOWN", "UNSENT", "open", "partially_filled")
# PLACING: a protective leg (mmats.live.protect) journaled, its answer not yet known
# "abandoned": never reached the venue, and the sleeve was halted before it could go
REJECTS_TO_PAUSE = 2


def with_venue_rules(sleeves, brokers) -> list:
    """The sleeves with each venue's lot size and minimum notional in their kernel
    settings (the stricter of the model's and the venue's), so the kernel sizes orders
    the venue accepts; a venue that cannot say now leaves the sleeve as configured (its
    adapter still checks before sending)."""
    from dataclasses import replace

    result = []
    for sleeve in sleeves:
        broker = brokers.get(sleeve.market)
        try:
            rules = broker.instrument(sleeve.symbol) if broker is not None else None
        except BrokerError:
            rules = None
        if not rules:
            result.append(sleeve)
            continue
        cfg = sleeve.cfg.copy()
        cfg[0]["lot_size"] = max(float(cfg[0]["lot_size"]), float(rules.get("lot_size") or 0))
        cfg[0]["min_notional"] = max(float(cfg[0]["min_notional"]),
                                     float(rules.get("min_notional") or 0))
        result.append(replace(sleeve, cfg=cfg))
    return result


class Desk:
    """One tick's dealings with the brokers: ``brokers`` maps market names to adapters
    implementing :class:`~mmats.brokers.base.Execution` and ``AccountState``."""

    def __init__(self, config, sleeves, states, brokers, journal, now_ns, report,
                 killed=lambda: False):
        self.config = config
        self.killed = killed  # the kill switch: checked before every order
        self.sleeves = {s.id: s for s in sleeves}
        self.by_key = {(s.model_id, s.symbol): s for s in sleeves}
        self.states = states
        self.brokers = brokers
        self.journal = journal
        self.now_ns = now_ns
        self.report = report
        self.halted_markets: set[str] = set()  # authentication failed
        self.unsettled_markets: set[str] = set()  # an outcome is unknown: send nothing
        self.waiting: set[str] = set()  # sleeves whose order the venue is still working
        self.mismatched: set[tuple[str, str]] = set()  # (market, symbol) beyond tolerance
        fills = np.zeros(1, dtype=FILL_DTYPE)
        trades = np.zeros(1, dtype=TRADE_DTYPE)
        self.fill, self.trade = fills[0], trades[0]
        self.protection = Protection(self)  # stop-loss / take-profit resting at the venue
        self._unsettled: tuple | None = None  # ((head seq, hash), unsettled orders by id)

    # -- 1. recover ------------------------------------------------------------------
    def recover(self) -> None:
        for cid, row in self._unsettled_orders().items():
            sleeve = self.by_key.get((row["model_id"], row["symbol"]))
            if sleeve is None or sleeve.market in self.halted_markets:
                continue
            broker = self.brokers[sleeve.market]
            try:
                venue = broker.lookup(cid, sleeve.symbol)
            except AuthenticationFailed as error:
                self._auth_failed(sleeve.market, error)
                continue
            except BrokerError as error:
                self.unsettled_markets.add(sleeve.market)
                self._event("WARNING", sleeve, "lookup_failed",
                            f"{cid}: outcome still unknown ({error})", alert=False)
                continue
            order = order_record(row)
            if venue is not None:
                self._settle(sleeve, cid, order, venue, journaled=row["broker_status"])
            elif is_protective(order):  # never re-sent as it was: the next sync places anew
                self.protection.lost(sleeve, cid, order, row)
            elif row["broker_status"] in ("SENDING", "UNKNOWN", "UNSENT"):
                if self._may_send(sleeve, order):
                    self._send(sleeve, cid, order, _side_of(order),
                               abs(order["requested_qty"]))
                else:  # halted or reducing since, and the order would not reduce
                    self._status(sleeve, cid, order, "abandoned")
            else:  # the venue lost an order it had acknowledged
                with self.journal.transaction():
                    self.journal.append_order(sleeve.model_id, sleeve.symbol, cid, order,
                                              broker_status="missing", ts_ns=self.now_ns)
                    self._event("CRITICAL", sleeve, "order_missing",
                                f"{cid} was open at the venue and is gone; the position is "
                                "reconciled next")

    def _may_send(self, sleeve, order) -> bool:
        """Whether the trading state still allows the order as it was planned: the
        kernel's fill-time rule (a REDUCING or HALTED sleeve may only move toward flat)."""
        record = self.states[sleeve.id][0]
        target = float(record["position"]) + float(order["requested_qty"])
        return reduce_only(record, target) == target

    def _unsettled_orders(self) -> dict[str, dict]:
        """The newest row of each client order whose outcome is unsettled, by client id,
        in journal order. Asked a dozen times a tick (recovery, reconciliation, each
        sleeve's protective legs): read in full once, then only the order rows appended
        since, while the head it was read at is still in the journal's chain (the journal
        is append-only; a rolled-back transaction's head is not)."""
        head = self.journal.head()
        known = self._unsettled
        if known is not None and known[0] == head:
            return dict(known[1])
        if known is not None and head[0] > known[0][0] and self.journal.holds_head(known[0]):
            unsettled = dict(known[1])
            for row in self.journal.order_rows_after(known[0][0]):
                unsettled.pop(row["client_order_id"], None)  # its newest row goes last
                if row["broker_status"] in UNSETTLED:
                    unsettled[row["client_order_id"]] = row
        else:
            unsettled = {row["client_order_id"]: row
                         for row in self.journal.orders_in_states(UNSETTLED)}
        self._unsettled = (head, unsettled)
        return dict(unsettled)

    # -- 2. reconcile ----------------------------------------------------------------
    def reconcile(self) -> None:
        tolerance = self.config.reconcile_tolerance_pct / 100.0
        for market in self.config.markets:
            if market.name not in self.brokers or market.name in self.halted_markets \
                    or market.name in self.unsettled_markets:
                continue
            broker = self.brokers[market.name]
            try:
                venue_positions = broker.positions()
                # per symbol: cheaper at venues that weigh an all-symbols query heavily
                venue_orders = [o for symbol in market.symbols
                                for o in broker.open_orders(symbol)]
                self.report.balances[market.name] = broker.balances()
            except AuthenticationFailed as error:
                self._auth_failed(market.name, error)
                continue
            except BrokerError as error:
                self.report.alerts.append(("MMATS reconcile skipped",
                                           f"{market.name}: {error}"))
                continue
            ours = defaultdict(list)
            for sleeve in self.sleeves.values():
                if sleeve.market == market.name:
                    ours[sleeve.symbol].append(sleeve)
            self._check_balances(market, self.report.balances[market.name], ours, tolerance)
            for symbol, members in ours.items():
                held = sum(float(self.states[s.id][0]["position"]) for s in members)
                venue = float(venue_positions.get(symbol, 0.0))
                difference = venue - held
                scale = max(abs(venue), abs(held))
                if scale == 0.0 or difference == 0.0:
                    continue
                if abs(difference) <= max(1e-12 * scale, 1e-12):  # float dust, not news
                    owner = max(members, key=lambda s: abs(self.states[s.id][0]["position"]))
                    adopt_position(self.states[owner.id][0],
                                   float(self.states[owner.id][0]["position"]) + difference)
                    self.journal.save_state(owner.id, self.states[owner.id], ts_ns=self.now_ns)
                    continue
                data = {"symbol": symbol, "journal": held, "venue": venue,
                        "difference": difference}
                if abs(difference) <= tolerance * scale:
                    owner = max(members, key=lambda s: abs(self.states[s.id][0]["position"]))
                    record = self.states[owner.id][0]
                    with self.journal.transaction():
                        adopt_position(record, float(record["position"]) + difference)
                        self.journal.save_state(owner.id, self.states[owner.id],
                                                ts_ns=self.now_ns)
                        self._event("WARNING", owner, "reconcile_adopted",
                                    f"{symbol}: venue holds {venue:.10g}, journal "
                                    f"{held:.10g}; adopted the venue's", data, alert=False)
                else:
                    self.mismatched.add((market.name, symbol))
                    with self.journal.transaction():
                        for sleeve in members:
                            pause_state(self.states[sleeve.id][0])
                            self.journal.save_state(sleeve.id, self.states[sleeve.id],
                                                    ts_ns=self.now_ns)
                        self._event("CRITICAL", members[0], "reconcile_mismatch",
                                    f"{symbol}: venue holds {venue:.10g}, journal {held:.10g} "
                                    f"(beyond {self.config.reconcile_tolerance_pct}%); "
                                    "paused, nothing is sent until an operator resumes", data)
            self._cancel_strays(market.name, broker, venue_orders)
            self.protection.sync_market(market.name)  # the levels rest at the venue

    def _check_balances(self, market, balances, ours, tolerance) -> None:
        """Journal the venue's balances when they change; on a spot crypto market, warn
        when the quote currency held is short of the cash the sleeves believe they have
        (orders would be refused)."""
        scope = f"market:{market.name}"
        last = self.journal.last_risk_event("venue_balances", scope)
        snapshot = {asset: float(amount) for asset, amount in sorted(balances.items())}
        if last is None or json.loads(last["data"]) != snapshot:
            self.journal.append_risk_event("INFO", scope, "venue_balances",
                                           f"{market.name} balances at the venue", snapshot,
                                           ts_ns=self.now_ns)
        if market.type != "crypto":
            return  # margin accounts: the balance does not move when a position opens
        quotes = {symbol.split("/")[1] for symbol in ours if "/" in symbol}
        if len(quotes) != 1:
            return
        quote = quotes.pop()
        believed = sum(float(self.states[s.id][0]["cash"]) for members in ours.values()
                       for s in members)
        held = float(balances.get(quote, 0.0))
        if held < believed * (1.0 - tolerance) - 1e-12:
            self.journal.append_risk_event(
                "WARNING", scope, "balance_short",
                f"{market.name}: the venue holds {held:.10g} {quote}, the sleeves count on "
                f"{believed:.10g}; buys may be refused", {"venue": held, "journal": believed},
                ts_ns=self.now_ns)
            self.report.alerts.append(("MMATS balance short", f"{market.name}: venue "
                                       f"{held:.10g} {quote} < journal {believed:.10g}"))

    def _cancel_strays(self, market, broker, venue_orders) -> None:
        known = self._unsettled_orders()
        for order in venue_orders:
            cid = order.get("client_order_id") or ""
            if not cid.startswith(CLIENT_ID_PREFIX) or cid in known:
                continue
            try:
                broker.cancel(cid, order["symbol"])
            except BrokerError as error:
                self.report.alerts.append(("MMATS stray order", f"{cid}: {error}"))
            self.journal.append_risk_event(
                "WARNING", f"market:{market}", "stray_order_cancelled",
                f"{cid} ({order['symbol']}) was open at the venue but settled in the journal",
                {"order": order}, ts_ns=self.now_ns)

    def cancel_open_orders(self) -> None:
        """Cancel every open order of ours at every venue (the kill switch's first step)."""
        for broker in self.brokers.values():
            for venue in broker.open_orders():
                cid = venue.get("client_order_id") or ""
                if not cid.startswith(CLIENT_ID_PREFIX):
                    continue
                final = broker.cancel(cid, venue["symbol"]) or venue
                rows = self.journal.orders_by_client_id(cid)
                sleeve = self.by_key.get((rows[-1]["model_id"], rows[-1]["symbol"])) \
                    if rows else None
                if sleeve is not None:
                    self._settle(sleeve, cid, order_record(rows[-1]), final)

    # -- 3. send ---------------------------------------------------------------------
    def send_pending(self, volumes: dict[str, float], planned: list | None = None) -> None:
        """Send an order for every sleeve with a pending target: all of them planned and
        journaled (``SENDING``) in one transaction, one fsync, then sent one by one.
        ``planned`` is what :meth:`plan_in_close` already journaled this tick: only sent.
        Then the protective legs the reconciliation left for after the orders."""
        if planned is None:
            if self.killed():
                return  # killed: nothing more goes out (the targets stay in the states)
            self.protection.release_before_send()  # a reducing order goes out unencumbered
            with self.journal.transaction():
                planned = self._plan(volumes)
        for sleeve, cid, order, side, quantity in planned:
            if sleeve.market in self.unsettled_markets or sleeve.market in self.halted_markets:
                self._status(sleeve, cid, order, "UNSENT")  # looked up first, next tick
                continue
            self._send(sleeve, cid, order, side, quantity)
        self.protection.sync_deferred()

    def plan_in_close(self, volumes: dict[str, float]) -> list | None:
        """The orders of the newest close planned and journaled (``SENDING``) in that
        close's own transaction, so one commit and one fsync put both the close and its
        orders in the journal before anything goes out; :meth:`send_pending` sends them.
        None, planning nothing, when the kill switch is on or a protective leg must be
        cancelled first (a venue call, never made inside a transaction): then
        :meth:`send_pending` plans after the close, in a transaction of its own."""
        if self.killed() or self.protection.must_release():
            return None
        return self._plan(volumes)

    def _plan(self, volumes: dict[str, float]) -> list:
        """Journal an order (``SENDING``, or ``NOT_SENT_...`` when the kernel refuses it)
        for every sleeve with a pending target, inside the caller's transaction; returns
        ``(sleeve, client id, order, side, quantity)`` of each order to send."""
        planned = []
        for sleeve in self.sleeves.values():
            record = self.states[sleeve.id][0]
            if math.isnan(record["target"]) or sleeve.market not in self.brokers \
                    or sleeve.market in self.halted_markets \
                    or sleeve.market in self.unsettled_markets \
                    or sleeve.id in self.waiting \
                    or (sleeve.market, sleeve.symbol) in self.mismatched:
                continue  # the target stays pending for a later tick
            volume = volumes.get(sleeve.id) or float(record["volume_ewm"]) or math.inf
            order = np.zeros(1, dtype=ORDER_DTYPE)[0]
            side, quantity = plan_venue_order(record, sleeve.cfg[0], record["bars"],
                                              self.now_ns, record["last_close"], volume,
                                              order)
            if side != 0:
                cid = client_order_id(sleeve.id, int(order["decision_ts_ns"]),
                                      int(order["order_id"]))
                if quantity <= 0.0:  # the kernel refused it (lot size, minimum notional)
                    status = f"NOT_SENT_{OrderStatus(int(order['status'])).name}"
                else:
                    status = "SENDING"
                    order["requested_qty"] = side * quantity
                    planned.append((sleeve, cid, order, side, quantity))
                self.journal.append_order(sleeve.model_id, sleeve.symbol, cid, order,
                                          broker_status=status, ts_ns=self.now_ns)
            self.journal.save_state(sleeve.id, self.states[sleeve.id], ts_ns=self.now_ns)
        return planned

    def _send(self, sleeve, cid, order, side, quantity) -> None:
        if self.killed():  # a kill came while this tick ran: it sends nothing more
            self._status(sleeve, cid, order, "abandoned")
            return
        broker = self.brokers[sleeve.market]
        request = {"client_order_id": cid, "symbol": sleeve.symbol,
                   "side": "buy" if side > 0 else "sell", "qty": float(quantity),
                   "type": "market", "price": None, "time_in_force": "GTC"}
        try:
            venue = broker.send(request)
        except OutcomeUnknown as error:
            self._status(sleeve, cid, order, "UNKNOWN")
            self._event("WARNING", sleeve, "outcome_unknown",
                        f"{cid}: {error}; looked up by client id before anything else is "
                        "sent", alert=False)
            self.unsettled_markets.add(sleeve.market)
            return
        except AuthenticationFailed as error:
            self._status(sleeve, cid, order, "UNSENT")
            self._auth_failed(sleeve.market, error)
            return
        except OrderRejected as error:
            self._rejected(sleeve, cid, order, str(error), error.reason)
            return
        except BrokerError as error:  # unavailable or rate limited: tried again next tick
            self._status(sleeve, cid, order, "UNSENT")
            self._event("WARNING", sleeve, "venue_unavailable", f"{cid}: {error}",
                        alert=False)
            self.unsettled_markets.add(sleeve.market)
            return
        self.report.orders += 1
        self._settle(sleeve, cid, order, venue)

    def book_report(self, sleeve, cid, order, venue: dict) -> None:
        """Book a venue's report of an order of ``sleeve`` (e.g. the kill switch's
        flattening fill): the fills the journal has not seen, the order's status."""
        self._settle(sleeve, cid, order, venue)

    def _settle(self, sleeve, cid, order, venue: dict, journaled: str | None = None) -> None:
        """Apply the part of the venue's report the journal has not seen yet. Nothing is
        written when there is none: no new fill, and the status the order's newest row
        already has (``journaled``), as an order resting at the venue reports tick
        after tick."""
        if venue["status"] == "rejected":
            self._rejected(sleeve, cid, order, venue.get("reason") or "rejected by the venue",
                           venue.get("reason") or "rejected")
            return
        if venue["status"] == journaled and not float(venue["filled_qty"] or 0.0):
            self._unchanged(sleeve, order, venue)  # resting unfilled: no fill to look for
            return
        done = self.journal.fills_of_order(cid)
        filled = sum(f["qty"] for f in done)
        notional = sum(f["qty"] * f["price"] for f in done)
        fees = sum(f["fee"] for f in done)
        new = float(venue["filled_qty"] or 0.0) - filled
        record = self.states[sleeve.id][0]
        booked = new > 1e-12 * max(filled, 1.0) and bool(venue.get("avg_price"))
        if not booked and venue["status"] == journaled:  # nothing new: nothing to journal
            self._unchanged(sleeve, order, venue)
            return
        with self.journal.transaction():
            if booked:
                # the first fill is at the venue's price itself (q x p / q may be off an ulp)
                price = float(venue["avg_price"]) if not done else (
                    float(venue["filled_qty"]) * float(venue["avg_price"]) - notional) / new
                fee = max(float(venue.get("fee") or 0.0) - fees, 0.0)
                cfg = sleeve.cfg.copy()
                cfg[0]["fee_bps"] = fee / (new * price) * 1e4
                self._book_fill(record, cfg[0], order, new, price)
                base_fee = float(venue.get("fee_base") or 0.0) * new / float(
                    venue["filled_qty"])
                if base_fee > 0.0:  # withheld from the quantity, not paid in cash
                    fee_in_base(record, self.fill, base_fee, price)
                self.journal.append_fill(sleeve.model_id, sleeve.symbol, cid, self.fill,
                                         ts_ns=self.now_ns)
                self.report.fills += 1
                order = order.copy()
                order["filled_qty"] = _side_of(order) * float(venue["filled_qty"])
            if venue["status"] in ("canceled", "expired") and not is_protective(order) and \
                    float(venue["filled_qty"] or 0.0) < abs(float(order["requested_qty"])):
                order_refused(record)  # the unfilled rest is decided again at the next close
            self.journal.append_order(sleeve.model_id, sleeve.symbol, cid, order,
                                      broker_status=venue["status"], ts_ns=self.now_ns)
            self.journal.save_state(sleeve.id, self.states[sleeve.id], ts_ns=self.now_ns)
        if venue["status"] not in FINAL_STATES and not is_protective(order):
            self.waiting.add(sleeve.id)  # resting protective orders do not hold a sleeve
        if booked:
            self.protection.sync(sleeve)  # the position or the levels moved

    def _unchanged(self, sleeve, order, venue: dict) -> None:
        """An order the venue reports as the journal has it: still working, it holds its
        sleeve (a resting protective leg does not)."""
        if venue["status"] not in FINAL_STATES and not is_protective(order):
            self.waiting.add(sleeve.id)

    def _book_fill(self, record, cfg, order, quantity, price) -> None:
        """A venue's fill through the kernel: a protective order's as the kernel's stop
        fill, any other as an order's fill."""
        if is_protective(order):
            venue_stop_fill(record, cfg, record["bars"], self.now_ns, quantity, price,
                            int(order["reason"]), self.fill, self.trade)
        else:
            venue_fill(record, cfg, record["bars"], self.now_ns, _side_of(order), quantity,
                       price, int(order["reason"]), int(order["order_id"]), self.fill,
                       self.trade)

    def _rejected(self, sleeve, cid, order, message, reason) -> None:
        record = self.states[sleeve.id][0]
        with self.journal.transaction():
            order_refused(record)
            self.journal.append_order(sleeve.model_id, sleeve.symbol, cid, order,
                                      broker_status="rejected", ts_ns=self.now_ns)
            self._event("WARNING", sleeve, "order_rejected", f"{cid}: {message}",
                        {"reason": reason}, alert=False)
            self.report.rejects += 1
            if self._rejects_in_a_row(sleeve) >= REJECTS_TO_PAUSE:
                pause_state(record)
                self._event("CRITICAL", sleeve, "rejects_in_a_row",
                            f"{REJECTS_TO_PAUSE} orders in a row refused (last: {message}); "
                            "paused until an operator resumes")
            self.journal.save_state(sleeve.id, self.states[sleeve.id], ts_ns=self.now_ns)

    def _rejects_in_a_row(self, sleeve) -> int:
        """Final order rows of the sleeve that were refusals, counted back from the newest
        (up to REJECTS_TO_PAUSE: all the check needs)."""
        count = 0
        for status in self.journal.latest_final_statuses(
                sleeve.model_id, sleeve.symbol, FINAL_STATES, REJECTS_TO_PAUSE):
            if status != "rejected":
                break
            count += 1
        return count

    def _auth_failed(self, market: str, error) -> None:
        self.halted_markets.add(market)
        with self.journal.transaction():
            for sleeve in self.sleeves.values():
                if sleeve.market == market:
                    pause_state(self.states[sleeve.id][0])
                    self.journal.save_state(sleeve.id, self.states[sleeve.id],
                                            ts_ns=self.now_ns)
            self.journal.append_risk_event(
                "CRITICAL", f"market:{market}", "authentication_failed",
                f"{error}; the market's sleeves are paused until an operator resumes",
                ts_ns=self.now_ns)
        self.report.alerts.append(("MMATS halted: authentication failed",
                                   f"{market}: {error}"))

    def _status(self, sleeve, cid, order, status) -> None:
        self.journal.append_order(sleeve.model_id, sleeve.symbol, cid, order,
                                  broker_status=status, ts_ns=self.now_ns)

    def _event(self, level, sleeve, kind, message, data=None, *, alert=True) -> None:
        self.journal.append_risk_event(level, f"sleeve:{sleeve.id}", kind, message,
                                       data or {}, ts_ns=self.now_ns)
        if alert:
            self.report.alerts.append((f"MMATS {kind.replace('_', ' ')}",
                                       f"{sleeve.id}: {message}"))


def _side_of(order) -> int:
    return 1 if order["requested_qty"] > 0 else -1
