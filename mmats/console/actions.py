"""The operator's actions from the dashboard: the same functions ``mmats live`` calls.

Each action names its target again in ``confirm`` (the model id, the symbol, ``KILL`` for
the emergency stop, ``ORDER`` for a ticket): the page asks for that confirmation, and a
request without it is refused, so a stray POST cannot act. Each is journaled as an
operator action with the dashboard user (by :mod:`mmats.live.control` and
:mod:`mmats.live.manual`). A control that finds a tick holding the runner's lock tries
again for a few seconds; the kill never waits for the lock (it writes its request first,
and acts at the venues at once in operator mode).
"""

from __future__ import annotations

import time

from mmats.errors import ConfigError, MMATSError
from mmats.live import control
from mmats.live.wiring import RunnerBusy

BUSY_WAIT_S = 5.0  # how long a pause/resume/close/order waits for a running tick


class ActionRefused(MMATSError):
    """An action not done: the reason, an HTTP status and any details for the page."""

    def __init__(self, message: str, status: int = 400, **details):
        super().__init__(message)
        self.status, self.details = status, details


def perform(settings, action: str, body: dict, user: str) -> dict:
    """Do one action for ``user``; returns what the page shows, or raises
    :class:`ActionRefused`."""
    handler = ACTIONS.get(action)
    if handler is None:
        raise ActionRefused(f"unknown action {action!r}; actions: {', '.join(ACTIONS)}", 404)
    reason = str(body.get("reason") or "")[:500]
    try:
        return handler(settings, body, user, reason)
    except ActionRefused:
        raise
    except RunnerBusy:
        raise ActionRefused("a runner tick is still running; try again in a moment",
                            409) from None
    except MMATSError as error:
        raise ActionRefused(str(error)) from None


def _confirmed(body: dict, expected: str) -> None:
    if str(body.get("confirm", "")) != expected:
        raise ActionRefused(f"not confirmed: send confirm={expected!r} to go ahead", 400)


def _text(body: dict, key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise ActionRefused(f"{key} is missing", 400)
    return value


def _patiently(function, *args, **kwargs):
    """A control that needs the runner's lock, retried while a tick holds it."""
    deadline = time.monotonic() + BUSY_WAIT_S
    while True:
        try:
            return function(*args, **kwargs)
        except RunnerBusy:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.1)


def _pause(settings, body, user, reason) -> dict:
    model = _text(body, "model")
    _confirmed(body, model)
    changed = _patiently(control.pause, settings.config, model, user=user, reason=reason)
    return {"message": f"paused {model}: {', '.join(changed) or 'no sleeve yet'}",
            "sleeves": changed}


def _resume(settings, body, user, reason) -> dict:
    model = body.get("model") or None
    _confirmed(body, model or "ALL")
    changed = _patiently(control.resume_models, settings.config, model, user=user,
                         reason=reason)
    return {"message": f"resumed {model or 'every model'}: "
                       f"{', '.join(changed) or 'no sleeve yet'}", "sleeves": changed}


def _close(settings, body, user, reason) -> dict:
    symbol = _text(body, "symbol")
    _confirmed(body, symbol)
    changed = _patiently(control.close_symbol, settings.config, symbol, user=user,
                         reason=reason)
    when = ("now at the venue" if settings.mode == "operator"
            else "at the next bar's open")
    return {"message": f"closing {symbol} ({', '.join(changed) or 'no sleeve yet'}) {when}",
            "sleeves": changed}


def _kill(settings, body, user, reason) -> dict:
    _confirmed(body, "KILL")
    outcome = control.kill(settings.config, user=user, reason=reason or "dashboard",
                           mode=settings.mode, cash=settings.cash,
                           live_trading_allowed=settings.live_trading_allowed)
    return {"message": str(outcome), "sleeves": outcome.sleeves,
            "acted_at_venues": outcome.acted_at_venues, "deferred": outcome.deferred,
            "problems": outcome.problems}


def _order(settings, body, user, reason) -> dict:
    from mmats.live.manual import manual_order

    _confirmed(body, "ORDER")
    side = _text(body, "side").lower()
    if side not in ("buy", "sell"):
        raise ActionRefused(f"side must be buy or sell, got {side!r}")
    amounts = {key: _number(body, key) for key in ("quantity", "exposure")
               if body.get(key) not in (None, "")}
    if len(amounts) != 1:
        raise ActionRefused("give either a quantity or an exposure (one of them)")
    outcome = _patiently(manual_order, settings.config, _text(body, "model"),
                         _text(body, "symbol"), side=side, user=user, reason=reason,
                         mode=settings.mode, cash=settings.cash,
                         live_trading_allowed=settings.live_trading_allowed, **amounts)
    result = outcome.to_dict() if hasattr(outcome, "to_dict") else dict(vars(outcome))
    if not result.get("accepted", True):
        raise ActionRefused(f"refused: {result.get('reason')}", 422, outcome=result)
    return {"message": result.get("message") or "order accepted", "outcome": result}


def _number(body: dict, key: str) -> float:
    try:
        value = float(body[key])
    except (TypeError, ValueError):
        raise ConfigError(f"{key} must be a number, got {body[key]!r}") from None
    if not (value > 0 or (key == "exposure" and value == 0)):
        raise ConfigError(f"{key} must be above 0 (an exposure may be 0: flat), got "
                          f"{body[key]!r}")
    return value


ACTIONS = {"pause": _pause, "resume": _resume, "close": _close, "kill": _kill,
           "order": _order}
