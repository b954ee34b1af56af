"""The Risk view: how much of every limit is used, at every level of the hierarchy
global → market → strategy → order, from what the runner journaled.

Each number is measured by the formula the runner acts on, so a red cell is a limit the
runner is enforcing:

- global and market scopes: :func:`mmats.live.portfolio.scope_usage` (the formulas of
  ``apply_limits`` and ``blocks_new_exposure``): daily loss from the book's day-start
  equity, drawdown from its peak, gross leverage Σ|position × last close| / equity, open
  positions counting pending targets;
- strategy (a model): its own limits (:class:`~mmats.sleeve.SleeveConfig`) against each of
  its sleeves' states, as the kernel's ``check_limits`` (:mod:`mmats.nb.risk`) measures
  them; the model's row shows its worst sleeve and names it;
- order (a sleeve): the pending order's notional against the effective
  ``max_order_notional`` (the smallest of the model's, the market's and the global cap,
  as :func:`mmats.live.sleeves.sleeves` sets it) and its target exposure against the
  sleeve's leverage cap.

Status: ``ok`` below 70 % of the limit, ``warn`` from 70 %, ``breach`` once the runner
acts on it — at or over 100 % for daily loss, drawdown, gross leverage and open positions
(the level trips or vetoes there), only *over* 100 % for a sleeve's leverage cap and the
order cap (targets are clipped to them: sitting exactly at the cap is allowed) — or while
the scope is held by it (a halted book is a drawdown breach, a daily loss tripped today
stays a breach until the next UTC day). ``none`` where no limit is set, ``no_data``
where the runner has journaled nothing yet (``used`` None, the level's ``note`` says so).

Example::

    usage = risk_usage(config, states, books)
    usage["levels"][0]["limits"][1]  # {'name': 'drawdown', 'used': 3.2, 'limit': 25.0, ...}
"""

from __future__ import annotations

import math

import numpy as np

from mmats.brokers.paper import quote_of
from mmats.live.closes import book_id
from mmats.live.config import RunnerConfig
from mmats.live.portfolio import scope_usage, scopes
from mmats.live.sleeves import sleeves
from mmats.types import TradingState

#: From this fraction of a limit the status is ``warn``.
WARN_AT = 0.7
NO_DATA = "no data yet"
# the kernel's tolerance before it cuts a position back to its leverage cap (nb/risk.py)
_CAP_TOLERANCE = 1e-9
_SCOPE_LIMITS = (("daily_loss", "%"), ("drawdown", "%"), ("gross_leverage", "x"),
                 ("open_positions", "positions"))
_WORST_FIRST = (TradingState.HALTED, TradingState.REDUCING, TradingState.ACTIVE)


def risk_usage(config: RunnerConfig, states: dict[str, np.ndarray],
               books: dict[str, np.ndarray]) -> dict:
    """The usage of every limit at every level, in the hierarchy's order: the global
    scope, then each market followed by its models (strategy) and their sleeves (order).

    ``states`` maps sleeve ids to their journaled ``STATE_DTYPE`` arrays and ``books`` the
    scopes' ``book_id`` to their ``BOOK_DTYPE`` arrays; either may lack entries (a runner
    that has not ticked yet): those rows say "no data yet".

    Returns ``{"levels": [level, ...]}``, each level ``{"level": "global" | "market" |
    "strategy" | "order", "scope": "global" | "market:<name>" | "model:<id>" |
    "sleeve:<id>", "parent": <scope above> | None, "state": "ACTIVE" | "REDUCING" |
    "HALTED" | None, "note": None | "no data yet", "limits": [limit, ...]}`` (scopes add
    ``equity``; strategy and order levels add ``market``; order levels ``symbol``), each
    limit ``{"name", "used", "limit", "unit", "ratio", "status"}`` (strategy limits add
    ``sleeve``: whose state is shown).

    >>> risk_usage(config, {}, {})["levels"][0]["note"]  # doctest: +SKIP
    'no data yet'
    """
    all_sleeves = sleeves(config, 1.0)
    by_scope = {scope.name: scope for scope in scopes(config, all_sleeves)}
    levels = [_scope_level("global", by_scope["global"], None, states, books)]
    for market in config.markets:
        name = f"market:{market.name}"
        levels.append(_scope_level("market", by_scope[name], "global", states, books))
        for model in config.models:
            if model.market != market.name:
                continue
            mine = [s for s in all_sleeves if s.model_id == model.id]
            levels.append(_strategy_level(model, mine, name, states))
            levels += [_order_level(sleeve, f"model:{model.id}", states) for sleeve in mine]
    return {"levels": levels}


def status_of(used: float | None, limit: float | None, reached: bool) -> str:
    """The colour of one limit: ``no_data`` without a measure, ``none`` without a limit,
    ``breach`` when the runner acts on it (``reached``), else ``warn`` from
    :data:`WARN_AT` of the limit, else ``ok``.

    >>> status_of(7.0, 10.0, False), status_of(6.9, 10.0, False), status_of(9.0, 10.0, True)
    ('warn', 'ok', 'breach')
    """
    if not limit:
        return "none" if used is not None or reached else "no_data"
    if reached:
        return "breach"
    if used is None:
        return "no_data"
    return "warn" if used >= WARN_AT * limit else "ok"


# --- the levels -------------------------------------------------------------------------

def _scope_level(level: str, scope, parent: str | None, states: dict, books: dict) -> dict:
    scope.book = books.get(book_id(scope))
    row = {"level": level, "scope": scope.name, "parent": parent, "state": None,
           "note": None, "equity": None, "limits": []}
    if any(states.get(i) is None for i in scope.sleeve_ids):
        row["note"] = NO_DATA
        row["limits"] = [_limit(name, None, _scope_limit(scope, name), unit, False)
                         for name, unit in _SCOPE_LIMITS]
        return row
    usage = scope_usage(scope, states)
    row["equity"] = _finite(scope.equity(states))
    row["limits"] = [_limit(name, usage[name]["used"], usage[name]["limit"], unit,
                            usage[name]["reached"]) for name, unit in _SCOPE_LIMITS]
    if scope.book is None:
        row["note"] = f"{NO_DATA}: the {scope.name} book starts at the first tick"
        return row
    book = scope.book[0]
    if book["halted"]:
        row["state"] = TradingState.HALTED.name
    elif usage["daily_loss"]["reached"]:
        row["state"] = TradingState.REDUCING.name
    else:
        row["state"] = TradingState.ACTIVE.name
    return row


def _scope_limit(scope, name: str):
    field = {"daily_loss": "max_daily_loss_pct", "drawdown": "max_drawdown_pct",
             "gross_leverage": "max_leverage", "open_positions": "max_open_positions"}[name]
    return getattr(scope.limits, field)


def _strategy_level(model, model_sleeves, parent: str, states: dict) -> dict:
    """A model's own limits (its ``risk:``), each shown for its worst sleeve."""
    settings = model.sleeve
    row = {"level": "strategy", "scope": f"model:{model.id}", "parent": parent,
           "market": model.market, "state": None, "note": None, "limits": []}
    held = [(s.id, states[s.id][0]) for s in model_sleeves if states.get(s.id) is not None]
    measures = (("daily_loss", "%", settings.max_daily_loss_pct, _sleeve_daily_loss),
                ("drawdown", "%", settings.max_drawdown_pct, _sleeve_drawdown),
                ("leverage", "x", settings.max_leverage, _sleeve_leverage))
    if not held:
        row["note"] = NO_DATA
        row["limits"] = [_limit(name, None, limit or None, unit, False)
                         for name, unit, limit, _ in measures]
        return row
    row["state"] = _worst_state(record["trading_state"] for _, record in held)
    for name, unit, limit, measure in measures:
        found = [(sleeve_id, *measure(record, limit)) for sleeve_id, record in held]
        sleeve_id, used, reached = max(found, key=lambda item: (
            item[2], -math.inf if item[1] is None else item[1]))
        row["limits"].append({**_limit(name, used, limit or None, unit, reached),
                              "sleeve": sleeve_id})
    return row


def _order_level(sleeve, parent: str, states: dict) -> dict:
    """A sleeve's pending order against the order cap and its leverage cap."""
    cfg = sleeve.cfg[0]
    cap = float(cfg["max_order_notional"]) or None
    leverage = float(cfg["max_leverage"]) or None
    quote = quote_of(sleeve.symbol)
    row = {"level": "order", "scope": f"sleeve:{sleeve.id}", "parent": parent,
           "market": sleeve.market, "symbol": sleeve.symbol, "state": None, "note": None,
           "limits": []}
    state = states.get(sleeve.id)
    if state is None:
        row["note"] = NO_DATA
        row["limits"] = [_limit("order_notional", None, cap, quote, False),
                         _limit("target_exposure", None, leverage, "x", False)]
        return row
    record = state[0]
    row["state"] = TradingState(int(record["trading_state"])).name
    notional, exposure = pending_order(record)
    row["limits"] = [
        _limit("order_notional", notional, cap, quote,
               bool(cap) and notional > cap * (1 + _CAP_TOLERANCE)),
        _limit("target_exposure", exposure, leverage, "x",
               bool(leverage) and exposure > leverage * (1 + _CAP_TOLERANCE)),
    ]
    return row


# --- the measures -----------------------------------------------------------------------

def pending_order(record) -> tuple[float, float]:
    """``(notional, |target exposure|)`` of a sleeve's pending order: the trade its target
    asks for, |target × equity − position × last close| in the quote currency (what the
    kernel sizes at the next open, priced at the last close), and the target itself;
    ``(0, 0)`` when no order is pending."""
    target = float(record["target"])
    if math.isnan(target):
        return 0.0, 0.0
    equity = float(record["equity"])
    held = float(record["position"]) * float(record["last_close"])
    return abs(target * equity - held), abs(target)


def _sleeve_daily_loss(record, limit: float) -> tuple[float | None, bool]:
    start, equity = float(record["day_start_equity"]), float(record["equity"])
    if start <= 0:
        return None, False
    loss = 100.0 * (start - equity) / start
    return loss, bool(limit) and loss >= limit


def _sleeve_drawdown(record, limit: float) -> tuple[float | None, bool]:
    peak, equity = float(record["equity_peak"]), float(record["equity"])
    if peak <= 0:
        return None, False
    drawdown = 100.0 * (peak - equity) / peak
    return drawdown, bool(limit) and drawdown >= limit


def _sleeve_leverage(record, limit: float) -> tuple[float | None, bool]:
    equity = float(record["equity"])
    value = abs(float(record["position"]) * float(record["last_close"]))
    if equity <= 0:  # the kernel halts a broke sleeve
        return None, True
    return value / equity, bool(limit) and value > limit * (1 + _CAP_TOLERANCE) * equity


def _worst_state(codes) -> str:
    present = {int(code) for code in codes}
    return next(state.name for state in _WORST_FIRST if int(state) in present)


def _limit(name: str, used, limit, unit: str, reached: bool) -> dict:
    used = _finite(used)
    if name == "daily_loss" and used is not None:
        used = max(used, 0.0)  # a gain uses none of the loss limit
    limit = float(limit) if limit else None
    ratio = used / limit if used is not None and limit else None
    return {"name": name, "used": used, "limit": limit, "unit": unit, "ratio": ratio,
            "status": status_of(used, limit, bool(reached))}


def _finite(value) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None
