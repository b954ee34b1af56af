"""Why a strategy's value became an order, or did not: the kernel's gates, one by one, for
the journal (each signal's ``meta``) and the operator's screens.

At each close the kernel takes a strategy's value through ``on_signal`` (:mod:`mmats.nb.sim`):
a NaN or the value last acted on places nothing; otherwise the sizing model scales it
(``exposure_scale``), the sleeve's leverage cap and short rule clip it
(``clip_exposure``), and the trading state lets it through, cuts it or vetoes it
(``gate_target``) — a state the upper levels make REDUCING for this decision while a full
book or a leverage cap blocks new exposure (:func:`mmats.live.portfolio.blocking_limit`).
:func:`explain` walks the same path with the same functions on the state as it was just
before ``on_signal``, changing nothing, so the account cannot drift from what was done::

    {"value": 1.0,
     "gates": [{"gate": "signal", "result": "new value"},
               {"gate": "sizing", "model": "fixed_fraction", "scale": 1.0, "exposure": 1.0},
               {"gate": "clip", "limit": null, "from": 1.0, "to": 1.0},
               {"gate": "upper_limits",
                "blocked_by": "market:crypto max_open_positions (1/1 open)"},
               {"gate": "trading_state", "state": "REDUCING", "from": 1.0, "to": null}],
     "decision": "vetoed", "vetoed_by": "upper_limits",
     "reason": "vetoed by market:crypto max_open_positions (1/1 open): no new exposure; ..."}

``decision`` is ``hold`` (nothing to decide), ``sized`` (the target was set to the last
gate's ``to``) or ``vetoed`` (no target set; the value is tried again at the next close
while it persists). Numbers are plain floats (``null`` for NaN), so the dict is JSON.
"""

from __future__ import annotations

import math

import numpy as np

from mmats.nb.risk import clip_exposure, gate_target
from mmats.nb.sizing import exposure_scale
from mmats.types import SizingMode, TradingState

ACTIVE = int(TradingState.ACTIVE)
REDUCING = int(TradingState.REDUCING)
HALTED = int(TradingState.HALTED)
_SIZING_NAMES = {int(mode): mode.name.lower() for mode in SizingMode}
_STATE_NAMES = {int(state): state.name for state in TradingState}


def explain(state: np.ndarray, cfg, value: float, blocking: tuple | None) -> dict:
    """How ``value`` goes (or does not go) through the kernel's ``on_signal``, gate by
    gate, without changing anything.

    Parameters
    ----------
    state : the sleeve's 1-element ``STATE_DTYPE`` array, as it is just before
        ``on_signal`` at this close.
    cfg : the sleeve's ``CONFIG_DTYPE`` record.
    value : the strategy's raw value at this close (NaN: no opinion).
    blocking : :func:`mmats.live.portfolio.blocking_limit` for this decision, or None.

    Returns ``{"value", "gates", "decision", "reason"}`` plus ``vetoed_by`` (the first
    vetoing gate's name) on a veto.

    >>> explain(state, sleeve.cfg[0], 1.0, None)["decision"]  # doctest: +SKIP
    'sized'
    """
    record = state[0]
    value = float(value)
    if math.isnan(value):
        return _hold(None, "no opinion (NaN)",
                     "no opinion from the strategy (NaN): what is held is kept")
    if value == record["last_signal"]:
        return _hold(number(value), "unchanged: holding",
                     f"value {value:g} is the one last acted on: no new order")
    gates = [{"gate": "signal", "result": "new value"}]
    model = _SIZING_NAMES.get(int(cfg["sizing_mode"]), str(int(cfg["sizing_mode"])))
    scale = exposure_scale(record, cfg)
    if math.isnan(scale):
        if value != 0.0:
            gates.append({"gate": "sizing", "model": model, "scale": None, "exposure": None})
            return _vetoed(value, gates, "sizing",
                           f"{model} cannot size yet (no volatility known): tried again "
                           "at the next close")
        scale = 0.0
    sized = value * scale
    gates.append({"gate": "sizing", "model": model, "scale": number(scale),
                  "exposure": number(sized)})
    desired = clip_exposure(sized, cfg)
    gates.append({"gate": "clip", "limit": _clip_limit(cfg, sized, desired),
                  "from": number(sized), "to": number(desired)})
    own = int(record["trading_state"])
    upper = blocking is not None and own == ACTIVE  # the kernel's veto: decide as REDUCING
    gates.append({"gate": "upper_limits", "blocked_by": limit_text(blocking)})
    effective = REDUCING if upper else own
    allowed = gate_target(_as_state(state, effective), desired)
    gates.append({"gate": "trading_state", "state": _STATE_NAMES.get(effective, str(effective)),
                  "from": number(desired), "to": number(allowed)})
    if math.isnan(allowed):
        return _vetoed(value, gates, "upper_limits" if upper else "trading_state",
                       _veto_sentence(upper, blocking, effective, record))
    reason = f"sized: target exposure {allowed:.6g} ({model} scale {scale:.6g} x value {value:g}"
    if desired != sized:
        reason += f", clipped by {gates[2]['limit']}"
    reason += ")"
    if allowed != desired:
        cause = limit_text(blocking) if upper else _STATE_NAMES.get(effective)
        rule = "only to flat" if effective == HALTED else "only reduce"
        reason += f", cut from {desired:.6g} by {cause} ({rule})"
    return {"value": number(value), "gates": gates, "decision": "sized", "reason": reason}


def number(value) -> float | None:
    """A float for the journal's JSON: None for NaN or an infinity."""
    value = float(value)
    return value if math.isfinite(value) else None


def _hold(value, result: str, reason: str) -> dict:
    return {"value": value, "gates": [{"gate": "signal", "result": result}],
            "decision": "hold", "reason": reason}


def _vetoed(value, gates, gate: str, reason: str) -> dict:
    return {"value": number(value), "gates": gates, "decision": "vetoed", "vetoed_by": gate,
            "reason": reason}


def _as_state(state: np.ndarray, trading_state: int):
    """The record itself, or a copy in ``trading_state`` (the upper levels' REDUCING),
    so the real state is never touched."""
    if int(state[0]["trading_state"]) == trading_state:
        return state[0]
    probe = state.copy()
    probe[0]["trading_state"] = trading_state
    return probe[0]


def _clip_limit(cfg, sized: float, desired: float) -> str | None:
    """Which of the sleeve's rules clipped the exposure (None: neither)."""
    if desired == sized:
        return None
    if desired == 0.0 and sized < 0.0 and not cfg["allow_short"]:
        return "allow_short false"
    return f"max_leverage {float(cfg['max_leverage']):g}"


def limit_text(blocking: tuple | None) -> str | None:
    """``"market:crypto max_open_positions (2/2 open)"`` for a
    :func:`~mmats.live.portfolio.blocking_limit` result; None for None."""
    if blocking is None:
        return None
    scope, limit, detail = blocking
    return f"{scope} {limit} ({detail})"


def _veto_sentence(upper: bool, blocking, state: int, record) -> str:
    if upper:
        return (f"vetoed by {limit_text(blocking)}: no new exposure while it holds; "
                "tried again at the next close while the value persists")
    name = _STATE_NAMES.get(state, str(state))
    if state == HALTED:
        return f"vetoed: the sleeve is {name} and flat (it may only go to flat)"
    if record["position"] == 0.0:
        return f"vetoed: the sleeve is {name} and flat (it may only reduce)"
    return f"vetoed: the sleeve is {name} (it may only reduce, not grow or flip)"
