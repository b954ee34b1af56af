"""The operator's order ticket: one order for one sleeve (a model on a symbol), through the
same risk gates and the same journal as a model's order.

An order is a quantity of the base asset to buy or sell (relative to the position held),
or a target exposure (a fraction of the sleeve's equity, signed by the side: ``sell``
with exposure 0.5 is a short of half the equity, exposure 0 is flat). The kernel's
decisions are target exposures, so a quantity becomes the exposure that, sized by the
kernel's own ``target_quantity`` at the sleeve's last close, holds the asked position.

Under the runner's lock, with the sleeves' states and the scopes' books loaded as a tick
loads them (operator mode: every order whose outcome is unknown settled first), the
order passes these gates in turn; the first that forbids it refuses it, nothing is
changed, and the refusal is journaled as the operator action ``order_refused`` with the
gate's reason:

1. ``kill_switch`` — nothing is ordered while a kill is in force;
2. ``venue`` (operator mode) — the market's venue is not in doubt (an unknown outcome,
   a failed login) and the sleeve has no order still open there;
3. ``price`` — the sleeve has a last close and a positive equity to size against;
4. ``upper_limits`` — a full book or a gross leverage cap of its global or market scope
   (:func:`mmats.live.portfolio.blocking_limit`) lets the sleeve only reduce, as it lets a
   strategy only reduce;
5. ``trading_state`` — a REDUCING or HALTED (paused) sleeve may only reduce: the
   kernel's fill-time rule (``reduce_only``), so a paused model can still be cut back;
6. ``clip`` — the exposure within the sleeve's leverage cap and short rule
   (``clip_exposure``; an order that reduces an exposure beyond the cap is let through);
7. ``max_order_notional`` — the order's value at the last close within the smallest cap
   of the model, its market and the global risk (the kernel would split it over bars).

Its direction is what takes the position there: ``sell`` with exposure 0 of a short
position buys it back. An order let through becomes the sleeve's pending target, with
the reason ``RISK``: the kernel's code for a target that is not the strategy's own (stops
and take-profits have theirs). No code is added for it, so the numba kernel, the fill
records and every reader of the journal know it as they are; the journal marks the order
as the operator's. It is journaled with a signal (``meta.manual``, the user and the
gates), the state and the operator action ``order``, in one transaction. In paper mode
it fills at the next bar's open, through the kernel's fill model, like a model's order;
in operator mode it is sent to the venue at once, by the tick's own path
(:meth:`mmats.live.operator.Desk.send_pending`), and its fill is journaled.

What happens next: the strategy is not overruled for ever, only until its value changes.
The order records the strategy's standing value (its newest journaled opinion) as the
one acted on, so the model acts again only when its value changes — as after a
stop-loss. An order replaces a target still pending from the last close.

>>> outcome = manual_order(config, "crypto_ema_cross", "ETH/BTC", side="buy",
...                        quantity=0.5, user="alice")  # doctest: +SKIP
>>> outcome.accepted, outcome.reason  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import json
import math
import time
from dataclasses import asdict, dataclass, field

from mmats.errors import ConfigError
from mmats.live import kill as killswitch
from mmats.live.closes import Book
from mmats.live.config import MODES, RunnerConfig, check_can_trade
from mmats.live.gates import limit_text, number
from mmats.live.operator import Desk, with_venue_rules
from mmats.live.portfolio import blocking_limit
from mmats.live.sleeves import sleeves
from mmats.live.tick import TickReport
from mmats.live.wiring import brokers_for, feeds_for, open_journal, runner_lock
from mmats.nb.risk import clip_exposure, current_exposure, reduce_only
from mmats.nb.sizing import target_quantity
from mmats.sleeve import new_state
from mmats.types import FillReason, TradingState

SIDES = {"buy": 1, "sell": -1}
NOT_TAKEN = ("rejected", "abandoned", "not sent")  # a venue's answers that fill nothing
RISK = int(FillReason.RISK)
ACTIVE = int(TradingState.ACTIVE)
REDUCING = int(TradingState.REDUCING)
_STATES = {int(state): state.name for state in TradingState}


@dataclass
class ManualOutcome:
    """What became of an operator's order: ``accepted`` or refused (``gate`` names the
    refusing gate, ``reason`` says why, with the limit and the numbers), and the gates it
    passed (``gates``, the refusing one last). Accepted: the target exposure set, the
    position it asks for at the last close and, in operator mode, the venue's answer
    (``order``: client order id, status, quantity filled, average price). In operator
    mode a venue that takes nothing (``rejected``; the kernel's lot size or minimum
    notional) makes it refused by the gate ``venue``: the tick's path journaled that (the
    order row, a risk event) and, as for a model's order, the strategy decides again at
    the next close. :meth:`to_dict` is its JSON."""

    accepted: bool
    sleeve: str
    side: str
    quantity: float | None
    exposure: float | None
    user: str
    mode: str
    reason: str
    gate: str | None = None
    gates: list[dict] = field(default_factory=list)
    position: float | None = None  # held before the order
    target_exposure: float | None = None
    target_position: float | None = None  # what the target holds, sized at the last close
    price: float | None = None  # the last close it was sized at
    order: dict | None = None  # operator mode: the venue's answer

    @property
    def message(self) -> str:
        """One line for a person."""
        if not self.accepted:
            return f"refused: {self.reason}"
        return f"{self.side} {self.sleeve}: {self.reason}"

    def to_dict(self) -> dict:
        return {**asdict(self), "message": self.message}


def manual_order(config: RunnerConfig, model_id: str, symbol: str, *, side: str,
                 quantity: float | None = None, exposure: float | None = None, user: str,
                 reason: str = "", mode: str | None = None, brokers: dict | None = None,
                 cash: float = 10_000.0, live_trading_allowed: bool = False,
                 now_ns: int | None = None) -> ManualOutcome:
    """Place an operator's order for the sleeve ``model_id`` on ``symbol`` through the
    risk gates (see the module docstring); ``now_ns`` is the action's clock (default: the
    wall clock). Raises :class:`~mmats.errors.ConfigError` for a bad request (an unknown
    model or symbol, both or neither of ``quantity`` and ``exposure``, advisory mode, a
    real venue without ``live_trading_allowed``); a gate's refusal is an outcome, not an
    error.

    >>> manual_order(config, "forex_rsi", "EUR/USD", side="sell", exposure=0.0,
    ...              user="alice").accepted  # doctest: +SKIP
    True
    """
    mode = mode or config.mode
    order = _Ticket.checked(config, model_id, symbol, side, quantity, exposure, user, reason,
                            mode, cash)
    if mode == "operator":
        check_can_trade(config, live_trading_allowed, mode)  # as a tick would refuse it
    now_ns = int(now_ns or time.time_ns())
    with runner_lock(config.lock), open_journal(config, mode) as journal:
        if mode == "operator" and brokers is None:
            brokers = brokers_for(config, feeds_for(config), cash=cash,
                                  clock=lambda: now_ns,
                                  live_trading_allowed=live_trading_allowed)
        return order.place(journal, brokers, now_ns)


@dataclass
class _Ticket:
    """One order on its way through the gates."""

    config: RunnerConfig
    sleeve_id: str
    model_id: str
    symbol: str
    side: str
    quantity: float | None
    exposure: float | None
    user: str
    note: str
    mode: str
    cash: float
    gates: list[dict] = field(default_factory=list)
    sized: dict = field(default_factory=dict)  # price, equity, position, target, goal

    @classmethod
    def checked(cls, config, model_id, symbol, side, quantity, exposure, user, note, mode,
                cash) -> _Ticket:
        """The request, or a ConfigError naming what is wrong with it."""
        if mode not in MODES:
            raise ConfigError(f"mode {mode!r} is not one of {', '.join(MODES)}")
        if mode == "advisory":
            raise ConfigError(f"{config.source}: advisory mode journals signals and places "
                              "no orders; a manual order needs paper or operator mode")
        models = {m.id: m for m in config.models}
        if model_id not in models:
            raise ConfigError(f"{config.source}: no model {model_id!r}; models: "
                              f"{', '.join(models)}")
        if symbol not in models[model_id].symbols:
            raise ConfigError(f"{config.source}: model {model_id!r} does not trade "
                              f"{symbol!r}; it trades {', '.join(models[model_id].symbols)}")
        if side not in SIDES:
            raise ConfigError(f"side must be buy or sell, got {side!r}")
        if (quantity is None) == (exposure is None):
            raise ConfigError("give exactly one of quantity (units to buy or sell) and "
                              "exposure (the target, a fraction of the sleeve's equity)")
        quantity = _amount(quantity, "quantity", "above 0", lambda v: v > 0)
        exposure = _amount(exposure, "exposure", "of 0 or more (the side gives its sign)",
                           lambda v: v >= 0)
        if not str(user or "").strip():
            raise ConfigError("a manual order needs the user who places it")
        return cls(config, f"{model_id}:{symbol}", model_id, symbol, side, quantity, exposure,
                   str(user), " ".join(str(note or "").split()), mode, cash)

    # -- the steps -----------------------------------------------------------------------
    def place(self, journal, brokers, now_ns) -> ManualOutcome:
        all_sleeves = sleeves(self.config, self.cash)
        states = {}
        for sleeve in all_sleeves:
            state = journal.load_state(sleeve.id)
            states[sleeve.id] = new_state(sleeve.cash) if state is None else state
        if killswitch.is_killed(journal.path):
            request = killswitch.read_request(journal.path) or {}
            return self._refuse(journal, now_ns, "kill_switch", {},
                                f"the kill switch is on (kill by {request.get('user', '?')}: "
                                f"{request.get('reason') or 'no reason given'}); nothing is "
                                "ordered until every model is resumed")
        desk = None
        if self.mode == "operator":
            all_sleeves = with_venue_rules(all_sleeves, brokers)
            desk = Desk(self.config, all_sleeves, states, brokers, journal, now_ns,
                        TickReport(), killed=functools.partial(killswitch.is_killed,
                                                               journal.path))
            desk.recover()  # nothing is sent before every unknown outcome is settled
        sleeve = next(s for s in all_sleeves if s.id == self.sleeve_id)
        if desk is not None:
            doubt = _venue_doubt(desk, sleeve)
            if doubt:
                return self._refuse(journal, now_ns, "venue", {"market": sleeve.market},
                                    doubt)
        book = Book(self.config, all_sleeves, states, journal, venue=desk is not None)
        refusal = self._through_gates(sleeve, states, book)
        if refusal is not None:
            return self._refuse(journal, now_ns, *refusal)
        self._set_target(journal, sleeve, states[sleeve.id], now_ns)
        outcome = self._accepted(states[sleeve.id])
        if desk is not None:
            outcome.order = self._send(desk, sleeve, states, journal, now_ns)
            outcome.reason += _venue_words(outcome.order)
            if outcome.order["status"] in NOT_TAKEN or outcome.order["status"].startswith(
                    "NOT_SENT"):  # journaled by the tick's path: the order row, a risk event
                outcome.accepted, outcome.gate = False, "venue"
        else:
            outcome.reason += "; fills at the next bar's open"
        return outcome

    def _through_gates(self, sleeve, states, book) -> tuple | None:
        """The gates in turn; the first refusal as ``(gate, data, sentence)``, or None."""
        record, cfg = states[sleeve.id][0], sleeve.cfg[0]
        price = float(record["last_close"])
        equity = float(record["cash"] + record["position"] * record["last_close"])
        position = float(record["position"])
        if not (price > 0 and equity > 0):
            return ("price", {"price": number(price), "equity": number(equity)},
                    f"{self.sleeve_id} has no last close and positive equity to size the "
                    "order against yet (it has not processed a bar); try after a tick")
        fee_rate = float(cfg["fee_bps"]) * 1e-4
        target, goal = self._target(position, price, equity, fee_rate)
        self.sized = {"price": price, "equity": equity, "position": position,
                      "target_exposure": target, "target_position": goal}
        self.gates.append({"gate": "order", "side": self.side, "quantity": self.quantity,
                           "exposure": self.exposure, **{k: number(v)
                                                          for k, v in self.sized.items()}})
        if goal == position:
            return ("order", {}, f"{self.sleeve_id} already holds {position:.10g}: "
                    "nothing to buy or sell")
        blocking = blocking_limit(book.scopes_of[sleeve.id], sleeve.id, states)
        own = int(record["trading_state"])
        if blocking is not None and own == ACTIVE:  # the upper levels: only reduce
            probe = states[sleeve.id].copy()
            probe[0]["trading_state"] = REDUCING
            if reduce_only(probe[0], goal) != goal:
                return ("upper_limits", {"blocked_by": limit_text(blocking)},
                        f"{limit_text(blocking)} forbids new exposure: {self.sleeve_id} may "
                        f"only reduce its position of {position:.10g}, and this order "
                        f"would take it to {goal:.10g}")
        self.gates.append({"gate": "upper_limits", "blocked_by": limit_text(blocking)})
        if own != ACTIVE and reduce_only(record, goal) != goal:
            name = _STATES.get(own, str(own))
            paused = " (paused)" if own == int(TradingState.HALTED) else ""
            return ("trading_state", {"state": name},
                    f"{self.sleeve_id} is {name}{paused}: it may only reduce its position of "
                    f"{position:.10g}, and this order would take it to {goal:.10g}")
        self.gates.append({"gate": "trading_state", "state": _STATES.get(own, str(own))})
        clipped = clip_exposure(target, cfg)
        current = current_exposure(record)  # cutting back what is beyond a cap is let through
        grows = (target > 0) != (current > 0) or abs(target) > abs(current)
        limit = ("allow_short false" if target < 0 and not cfg["allow_short"]
                 else f"max_leverage {float(cfg['max_leverage']):g}")
        if clipped != target and grows:
            return ("clip", {"limit": limit, "from": number(target), "to": number(clipped)},
                    f"target exposure {target:.6g} is beyond the sleeve's {limit} (at most "
                    f"{clipped:.6g} here)")
        self.gates.append({"gate": "clip", "limit": None if clipped == target else limit,
                           "from": number(target), "to": number(clipped)})
        notional = abs(goal - position) * price
        cap = float(cfg["max_order_notional"])
        where = _cap_owner(self.config, sleeve, cap)
        if cap > 0 and notional > cap:
            return ("max_order_notional", {"limit": cap, "notional": notional, "scope": where},
                    f"the order's value {notional:,.2f} is above the max_order_notional "
                    f"{cap:,.2f} of {where}; split it into orders of at most that")
        self.gates.append({"gate": "max_order_notional", "limit": cap or None,
                           "notional": notional, "scope": where if cap else None})
        return None

    def _target(self, position, price, equity, fee_rate) -> tuple[float, float]:
        """The target exposure and the position the kernel's sizing makes of it at
        ``price``: an asked exposure as it is; an asked quantity as the exposure of the
        new position over the equity left after the order's fee (the inverse of
        ``target_quantity``), flat when it closes the position."""
        sign = SIDES[self.side]
        if self.exposure is not None:
            target = sign * self.exposure or 0.0  # sell 0 is flat, not -0
        else:
            wanted = position + sign * self.quantity
            if abs(wanted) <= 1e-12 * max(abs(position), self.quantity):
                wanted = 0.0  # the whole position: flat, not a speck of dust
            target = wanted * price / (equity - abs(wanted - position) * price * fee_rate)
        goal = 0.0 if target == 0.0 else float(target_quantity(target, equity, position,
                                                               price, fee_rate))
        return float(target), goal

    def _set_target(self, journal, sleeve, state, now_ns) -> None:
        """The order as the sleeve's pending target, journaled in one transaction: the
        signal (``meta.manual``), the state and the operator action."""
        record = state[0]
        target = self.sized["target_exposure"]
        record["target"] = target
        record["target_reason"] = RISK  # not the strategy's: it keeps its own last value
        record["target_ts_ns"] = now_ns
        record["pending_stop_distance"] = math.nan
        record["pending_take_profit_distance"] = math.nan
        value = _latest_value(journal, self.model_id, self.symbol)
        if value is not None:  # the model acts again only when its value changes
            record["last_signal"] = value
        change = self.sized["target_position"] - self.sized["position"]
        what = self._words()
        meta = {"manual": True, "user": self.user, "target_exposure": target,
                "trading_state": int(record["trading_state"]), "value": None,
                "gates": self.gates, "decision": "sized",
                "reason": f"manual order by {self.user}: {what}"}
        with journal.transaction():
            journal.append_signal(self.model_id, self.symbol, "BUY" if change > 0 else "SELL",
                                  abs(change), meta=meta, ts_ns=now_ns)
            journal.save_state(sleeve.id, state, ts_ns=now_ns)
            journal.append_operator_action("order", self.sleeve_id, self.user,
                                           self._journal_reason(what), ts_ns=now_ns)

    def _send(self, desk, sleeve, states, journal, now_ns) -> dict:
        """Operator mode: the pending target to the venue now, by the tick's own path
        (only this sleeve's: the others' wait for their tick); the venue's answer."""
        sender = Desk(self.config, [sleeve], {sleeve.id: states[sleeve.id]}, desk.brokers,
                      journal, now_ns, desk.report, killed=desk.killed)
        sender.send_pending({})
        rows = journal.orders_of_sleeve(self.model_id, self.symbol)
        rows = [r for r in rows if r["decision_ts_ns"] == now_ns and r["order_id"] >= 0]
        if not rows:
            return {"client_order_id": None, "status": "not sent", "filled_qty": 0.0,
                    "avg_price": None}
        cid = rows[-1]["client_order_id"]
        fills = journal.fills_of_order(cid)
        filled = sum(f["qty"] for f in fills)
        return {"client_order_id": cid, "status": rows[-1]["broker_status"],
                "filled_qty": filled,
                "avg_price": sum(f["qty"] * f["price"] for f in fills) / filled if filled
                else None}

    # -- outcomes ------------------------------------------------------------------------
    def _accepted(self, state) -> ManualOutcome:
        sized = self.sized
        return ManualOutcome(
            True, self.sleeve_id, self.side, self.quantity, self.exposure, self.user,
            self.mode, f"target exposure {sized['target_exposure']:.6g} (position "
            f"{sized['position']:.10g} -> {sized['target_position']:.10g} at "
            f"{sized['price']:.10g})", None, self.gates, number(sized["position"]),
            number(sized["target_exposure"]), number(sized["target_position"]),
            number(sized["price"]))

    def _refuse(self, journal, now_ns, gate, data, sentence) -> ManualOutcome:
        """Nothing changed; the refusal journaled as an operator action."""
        if self.gates and self.gates[-1]["gate"] == gate:  # the gate's numbers are there
            self.gates[-1].update(refused=True, **data)
        else:
            self.gates.append({"gate": gate, "refused": True, **data})
        journal.append_operator_action("order_refused", self.sleeve_id, self.user,
                                       self._journal_reason(f"{self._words()}: {sentence}"),
                                       ts_ns=now_ns)
        return ManualOutcome(False, self.sleeve_id, self.side, self.quantity, self.exposure,
                             self.user, self.mode, sentence, gate, self.gates,
                             number(self.sized.get("position", math.nan)),
                             price=number(self.sized.get("price", math.nan)))

    def _words(self) -> str:
        amount = (f"quantity {self.quantity:.10g}" if self.quantity is not None
                  else f"exposure {self.exposure:.6g}")
        return f"{self.side} {amount}"

    def _journal_reason(self, text: str) -> str:
        return f"{text} (note: {self.note})" if self.note else text


def _amount(value, name: str, rule: str, valid) -> float | None:
    """``quantity`` or ``exposure`` as a float (None stays None), or a ConfigError."""
    if value is None:
        return None
    try:
        amount = float(value)
    except (TypeError, ValueError):
        amount = math.nan
    if not (math.isfinite(amount) and valid(amount)):
        raise ConfigError(f"{name} must be a number {rule}, got {value!r}")
    return amount


def _latest_value(journal, model_id: str, symbol: str) -> float | None:
    """The strategy's standing value for this sleeve: its newest journaled opinion (a
    signal's ``meta.value``; None when it never gave one, or the rows predate it)."""
    row = journal.newest_strategy_signal(model_id, symbol)
    if row is None:
        return None
    value = json.loads(row["meta"]).get("value")
    return float(value) if isinstance(value, int | float) else None


def _venue_doubt(desk, sleeve) -> str | None:
    """Why the sleeve's venue cannot take an order now, or None."""
    if sleeve.market in desk.halted_markets:
        return (f"the {sleeve.market} venue refused our login; its sleeves are paused until "
                "an operator resumes")
    if sleeve.market in desk.unsettled_markets:
        return (f"the outcome of an earlier order at the {sleeve.market} venue is not known "
                "yet; try again after the next tick")
    if sleeve.id in desk.waiting:
        return f"an earlier order of {sleeve.id} is still open at the venue"
    return None


def _cap_owner(config, sleeve, cap: float) -> str:
    """Which level's max_order_notional is the sleeve's cap (the smallest of them)."""
    model = next(m for m in config.models if m.id == sleeve.model_id)
    market = config.market(sleeve.market)
    for name, value in ((f"model:{model.id}", model.sleeve.max_order_notional),
                        (f"market:{market.name}", market.risk.max_order_notional),
                        ("global", config.global_risk.max_order_notional)):
        if value and float(value) == cap:
            return name
    return "the sleeve"


def _venue_words(order: dict) -> str:
    if order["filled_qty"]:
        return (f"; {order['status'].replace('_', ' ')}: {order['filled_qty']:.10g} at "
                f"{order['avg_price']:.10g}")
    return f"; the venue's answer: {order['status']}"

