"""The kill switch: it is never refused, and nothing is sent after it.

A kill does three things, in this order:

1. **Request.** A durable file beside the journal (``<journal>.kill``: who, why, when)
   records that trading is killed. Every tick checks it before each bar close it
   processes and before every order it sends, so a tick that was running when the kill
   came sends nothing more. It stays until an operator resumes every model.
2. **Act at the venues** (operator mode). Our open orders are cancelled and every
   position of a configured symbol is flattened by a market order, by the kill command
   itself, through its own connections and *without* the runner's lock: a tick stuck in
   a slow venue call cannot delay it.
3. **Book.** Every sleeve is halted and the flattening fills are booked to the sleeves
   that held the position (the kernel's ``venue_fill``), in one journal transaction. The
   kill does this itself when no tick holds the lock; otherwise the running tick does it
   as soon as it sees the request, or the next tick does after a crash.

The request file, not the journal, carries the signal: a tick inside a journal
transaction cannot block it, and it is checked with one system call (``access``).
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mmats.brokers.base import BrokerError
from mmats.files import fsync_folder, write_durably
from mmats.live.orders import CLIENT_ID_PREFIX, client_order_id
from mmats.nb.risk import halt
from mmats.types import ORDER_DTYPE, FillReason

BOOKED_KIND = "kill_switch"  # the risk event that says a request has been booked


def request_path(journal_path) -> Path:
    """Where the kill request of a journal lives: beside it, named after it."""
    journal_path = Path(journal_path)
    return journal_path.with_name(journal_path.name + ".kill")


def is_killed(journal_path) -> bool:
    """Whether a kill request is in force (one ``access``: cheap enough for every order)."""
    return _exists(_request_text(os.fspath(journal_path)))


def kill_check(journal_path) -> Callable[[], bool]:
    """:func:`is_killed` of one journal, its request's path worked out once: a tick asks
    before each close and each order, and building the path cost more than the ``stat``.

    >>> killed = kill_check("journal.sqlite")  # doctest: +SKIP
    >>> killed()  # doctest: +SKIP
    False
    """
    path = _request_text(os.fspath(journal_path))
    return lambda: _exists(path)


def _exists(path: str) -> bool:
    """Whether ``path`` exists, as ``os.path.exists`` says (a missing file, or one that
    cannot be reached, is not there), asked with ``access(F_OK)``: no ``stat`` result to
    build, nor an exception raised and caught when it is missing (the usual answer, asked
    several times a tick), so about half the cost."""
    return os.access(path, os.F_OK)


@functools.lru_cache(maxsize=64)
def _request_text(journal_path: str) -> str:
    return os.fspath(request_path(journal_path))


def read_request(journal_path) -> dict | None:
    """The request in force, or None. A damaged request file still means killed."""
    path = request_path(journal_path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as error:
        return {"id": 0, "user": "?", "reason": f"unreadable kill request: {error}",
                "orders": []}
    try:
        request = json.loads(text)
        if not isinstance(request, dict) or not isinstance(request.get("id"), int):
            raise ValueError("not a kill request")
    except ValueError:
        return {"id": 0, "user": "?", "reason": f"damaged kill request {path}", "orders": []}
    request.setdefault("orders", [])
    return request


def write_request(journal_path, request: dict) -> None:
    """Write (or rewrite) the request durably: after a crash it is whole or absent."""
    path = request_path(journal_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(request, sort_keys=True, indent=1).encode("utf-8")
    write_durably(path, lambda handle: handle.write(text), prefix=".kill.")


def clear_request(journal_path) -> bool:
    """Remove the request (an operator's resume of every model); True if there was one."""
    path = request_path(journal_path)
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    fsync_folder(path.parent)
    return True


def new_request(user: str, reason: str) -> dict:
    now = time.time_ns()
    return {"id": now, "ts_ns": now, "user": user, "reason": reason, "orders": []}


def flatten_at_venues(config, brokers: dict, request: dict) -> list[str]:
    """Cancel every open order of ours and flatten every position of a configured symbol
    at every market's venue, now. The flattening orders are recorded in
    ``request["orders"]`` (with the venue's report); returns problems, one line each (a
    venue error on one market never stops the others)."""
    problems = []
    for market in config.markets:
        broker = brokers.get(market.name)
        if broker is None:
            continue
        for symbol in market.symbols:  # per symbol: an all-symbols query weighs more
            problem = _cancel_ours(broker, market.name, symbol)
            if problem:
                problems.append(problem)
        try:
            positions = broker.positions()
        except BrokerError as error:
            problems.append(f"{market.name}: reading positions: {error}")
            continue
        for symbol in market.symbols:
            problem = _flatten_symbol(broker, market.name, symbol,
                                      float(positions.get(symbol, 0.0)), request)
            if problem:
                problems.append(problem)
    return problems


def _cancel_ours(broker, market, symbol, passes: int = 3) -> str | None:
    """Cancel every open order of ours on ``symbol`` (resting stops included; cancelling
    one leg of an OCO list takes its sibling with it), asking again until none is left."""
    error = None
    for _ in range(passes):
        try:
            ours = [o for o in broker.open_orders(symbol)
                    if (o.get("client_order_id") or "").startswith(CLIENT_ID_PREFIX)]
        except BrokerError as failure:
            error = failure
            continue
        if not ours:
            return None
        for order in ours:
            try:
                broker.cancel(order["client_order_id"], order["symbol"])
            except BrokerError as failure:  # the next pass sees whether it is still open
                error = failure
    return f"{market}: cancelling {symbol} orders: {error or 'orders still open'}"


def _flatten_symbol(broker, market, symbol, held, request) -> str | None:
    try:
        lot = float((broker.instrument(symbol) or {}).get("lot_size") or 0.0)
    except BrokerError:
        lot = 0.0
    quantity = abs(held)
    if lot > 0:  # what the venue accepts; dust below one lot stays (it cannot be sold)
        quantity = math.floor(quantity / lot + 1e-9) * lot
    if quantity <= 0:
        return None
    done = sum(1 for o in request["orders"] if o["symbol"] == symbol)
    cid = client_order_id(f"kill:{market}:{symbol}", request["id"], done)
    order = {"client_order_id": cid, "market": market, "symbol": symbol,
             "side": "sell" if held > 0 else "buy", "qty": quantity, "report": None}
    request["orders"].append(order)
    try:
        order["report"] = broker.send({"client_order_id": cid, "symbol": symbol,
                                       "side": order["side"], "qty": quantity,
                                       "type": "market", "price": None,
                                       "time_in_force": "GTC"})
    except BrokerError as error:
        return f"{market}: flattening {symbol}: {error}"
    return None


def booked(journal, request: dict) -> bool:
    """Whether this request's halt and all its flattening orders are in the journal (a
    tick may book a request before the kill command has written its orders)."""
    row = journal.last_risk_event(BOOKED_KIND)
    if row is not None:
        data = json.loads(row["data"] or "{}")
        return data.get("request") == request["id"] and data.get("orders") == [
            o["client_order_id"] for o in request["orders"]]
    return False


def book(journal, desk, sleeves, states, request: dict, now_ns: int) -> list[str]:
    """Halt every sleeve and book the request's flattening fills to the sleeves that held
    the position (``desk``: the tick's :class:`~mmats.live.operator.Desk`, or None when
    no venue executes), in one transaction. Returns the halted sleeve ids."""
    changed = []
    with journal.transaction():
        if desk is not None:
            for order in request["orders"]:
                _book_order(journal, desk, sleeves, states, order)
        for sleeve in sleeves:
            state = states.get(sleeve.id)
            if state is None:
                continue
            halt(state[0], now_ns)
            journal.save_state(sleeve.id, state, ts_ns=now_ns)
            changed.append(sleeve.id)
        journal.append_risk_event(
            "CRITICAL", "global", BOOKED_KIND,
            f"kill by {request.get('user', '?')}: {request.get('reason') or 'no reason given'}",
            {"request": request["id"], "sleeves": changed,
             "orders": [o["client_order_id"] for o in request["orders"]]}, ts_ns=now_ns)
    return changed


def _book_order(journal, desk, sleeves, states, order) -> None:
    """Share one flattening fill among the sleeves of its symbol that held the position,
    in proportion to what each held (each sleeve's share booked under its own id)."""
    report = order.get("report")
    if report is None or report.get("status") not in ("filled", "partially_filled",
                                                      "canceled", "expired"):
        with contextlib.suppress(BrokerError):
            report = desk.brokers[order["market"]].lookup(order["client_order_id"],
                                                          order["symbol"])
    if not report or not float(report.get("filled_qty") or 0.0):
        return
    side = 1 if order["side"] == "buy" else -1
    holders = [s for s in sleeves if s.market == order["market"]
               and s.symbol == order["symbol"] and s.id in states
               and -side * float(states[s.id][0]["position"]) > 0]
    total = sum(abs(float(states[s.id][0]["position"])) for s in holders)
    filled = float(report["filled_qty"])
    for index, sleeve in enumerate(holders):
        share = abs(float(states[sleeve.id][0]["position"])) / total
        cid = order["client_order_id"] if len(holders) == 1 else client_order_id(
            f"{order['client_order_id']}:{sleeve.id}", 0, index)
        if journal.fills_of_order(cid):
            continue  # booked by an earlier attempt
        record = np.zeros(1, dtype=ORDER_DTYPE)[0]
        record["requested_qty"] = side * filled * share
        record["reason"] = int(FillReason.RISK)
        record["order_id"] = -1
        record["decision_ts_ns"] = desk.now_ns
        desk.book_report(sleeve, cid, record, {
            **report, "filled_qty": filled * share,
            "fee": float(report.get("fee") or 0.0) * share,
            "fee_base": float(report.get("fee_base") or 0.0) * share,
            "status": "filled"})


def os_user() -> str:
    """The operating-system user running this process (journaled with every control)."""
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid:{os.getuid()}"
