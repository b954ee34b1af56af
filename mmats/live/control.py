"""One tick from the store (what cron runs), its loop and its failure count, and the
operator's controls: kill, pause, resume, status. Every control is journaled as an
operator action. The tick itself, stage by stage, is :mod:`mmats.live.tick`; the lock,
journal, feeds and brokers are built by :mod:`mmats.live.wiring`."""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass

from mmats.data.calendar import timeframe_ns
from mmats.errors import ConfigError, MMATSError
from mmats.files import write_durably
from mmats.live import kill as killswitch
from mmats.live.closes import book_id
from mmats.live.config import RunnerConfig
from mmats.live.environments import EnvironmentMismatch
from mmats.live.notify import notify
from mmats.live.operator import Desk, with_venue_rules
from mmats.live.portfolio import BOOK_DTYPE, reset_book, scopes
from mmats.live.sleeves import sleeves
from mmats.live.tick import TickReport, store_tick
from mmats.live.wiring import RunnerBusy, brokers_for, feeds_for, open_journal, runner_lock
from mmats.nb.risk import flatten, resume
from mmats.nb.risk import pause as pause_state
from mmats.redact import redact_urls
from mmats.types import TradingState

KILL_LOCK_WAIT_S = 1.0  # how long a kill waits for a tick to finish before leaving it


def tick_once(config: RunnerConfig, *, cash: float = 10_000.0, now_ns: int | None = None,
              mode: str | None = None, brokers: dict | None = None,
              sources: dict | None = None, live_trading_allowed: bool = False,
              trace=None, feed_events: tuple = (), held=None) -> TickReport:
    """Lock, journal the configuration if it changed, process every newly closed bar
    (operator mode: recover, reconcile and send through the brokers), notify the signals
    and alerts, exit: :func:`mmats.live.tick.store_tick`. Live feeds are synced into the
    store first (:mod:`mmats.live.sync`; ``sources`` overrides their candle sources);
    ``trace``, when given, hears the name of each stage as it starts; ``feed_events``
    are the always-on service's stream events, journaled by the tick's sync; ``held``
    (:class:`~mmats.live.wiring.HeldJournal`) keeps the journal open across ticks.

    A tick that fails (an error no fail-safe handles) is counted; after
    ``FAILURES_TO_HALT`` in a row the runner kills itself (halt, flatten, one
    notification) instead of failing the same way forever."""
    mode = mode or config.mode
    try:
        report = store_tick(config, cash=cash, now_ns=now_ns, mode=mode, brokers=brokers,
                            sources=sources, live_trading_allowed=live_trading_allowed,
                            trace=trace, feed_events=feed_events, held=held)
    except (RunnerBusy, EnvironmentMismatch):  # not a failing runner: this invocation's
        raise  # mistake, never counted beside (and killing) another environment's journal
    except Exception as error:
        _tick_failed(config, error, mode, cash)
        raise
    with contextlib.suppress(FileNotFoundError):
        _failures_path(config).unlink()
    return report


# After a bar closes, the loop waits this long before its tick: the fetcher's moment.
LOOP_SETTLE_NS = 5_000_000_000


def run_loop(config: RunnerConfig, *, cash: float = 10_000.0, mode: str | None = None,
             live_trading_allowed: bool = False, ticks: int | None = None,
             clock=time.time_ns, sleep=time.sleep) -> int:
    """Tick after every bar close (``scripts/live.py --loop``), ``ticks`` times or forever.

    A tick that another one holds the lock for is skipped. On any other error the loop
    does not crash-loop: it kills (halt every sleeve, flatten; the kill's notification is
    the one message), and re-raises, so the service manager shows the failure. ``clock`` and ``sleep`` are the
    wall clock and the wait (a test passes its own). Returns the ticks run.
    """
    mode = mode or config.mode
    step = min(timeframe_ns(market.timeframe) for market in config.markets)
    done = 0
    while ticks is None or done < ticks:
        try:
            tick_once(config, mode=mode, cash=cash, live_trading_allowed=live_trading_allowed)
        except RunnerBusy:
            pass
        except Exception as error:  # noqa: BLE001 - fail safe: halt, notify once, stop
            _halt_on_error(config, error, mode, cash)
            raise
        done += 1
        if ticks is not None and done >= ticks:
            break
        now = clock()
        sleep(((now // step + 1) * step + LOOP_SETTLE_NS - now) / 1e9)
    return done


def _halt_on_error(config, error, mode, cash) -> None:
    """The loop's fail-safe: kill, which notifies once ("MMATS kill ... runner stopped");
    if the kill itself fails, one notification says both."""
    reason = f"runner stopped: unhandled {error!r}"
    try:
        kill(config, user="runner", reason=reason, mode=mode, cash=cash)
    except Exception as kill_error:  # noqa: BLE001 - still notify, once
        notify(config.notifications, "MMATS halted",
               redact_urls(f"{reason}; the kill itself failed: {kill_error!r}"))


FAILURES_TO_HALT = 3


def _failures_path(config):
    return config.journal.with_name(config.journal.name + ".failures")


def _tick_failed(config, error, mode, cash) -> None:
    """Count a failed tick (in a file beside the journal: the journal itself may be what
    fails); the ``FAILURES_TO_HALT``-th in a row kills trading, and notifies once."""
    path = _failures_path(config)
    try:
        count = json.loads(path.read_text())["count"] + 1
    except (OSError, ValueError, KeyError, TypeError):
        count = 1
    text = json.dumps({"count": count, "last_error": redact_urls(f"{error!r}")}).encode()
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        write_durably(path, lambda handle: handle.write(text), prefix=".failures.")
    if count != FAILURES_TO_HALT:
        return
    reason = f"{count} ticks in a row failed; last: {error}"
    try:
        kill(config, user="runner", reason=reason, mode=mode, cash=cash)
    except Exception as kill_error:  # noqa: BLE001 - still say so, once
        notify(config.notifications, "MMATS halted: ticks failing",
               f"{reason}; the kill itself failed: {kill_error}")


@dataclass
class KillOutcome:
    """What a kill did: the sleeves it halted in the journal (empty when a running tick
    books it, ``deferred``), whether it acted at the venues, and what went wrong there."""

    sleeves: list[str]
    acted_at_venues: bool
    deferred: bool
    problems: list[str]

    def __str__(self) -> str:
        text = ("kill recorded; the running tick halts the sleeves before it sends anything"
                if self.deferred else f"halted {len(self.sleeves)} sleeve(s)")
        text += ("; open orders cancelled and positions flattened at the venues"
                 if self.acted_at_venues else "; positions flatten at the next bar's open")
        return text + "".join(f"\n  problem: {p}" for p in self.problems)


def kill(config: RunnerConfig, *, user: str | None = None, reason: str = "",
         mode: str | None = None, brokers: dict | None = None,
         cash: float = 10_000.0, live_trading_allowed: bool = False) -> KillOutcome:
    """Halt every sleeve, nothing new until :func:`resume_models`; never refused.

    The request is written first (every tick checks it before each close and each
    order). In operator mode the venues' open orders of ours are then cancelled and every
    position flattened by market orders, at once and without the runner's lock. The halt
    and the fills are booked in the journal now if no tick holds the lock, else by that
    tick (:mod:`mmats.live.kill`). Outside operator mode positions flatten at the next
    bar's open."""
    user = user or killswitch.os_user()
    request = killswitch.new_request(user, reason)
    killswitch.write_request(config.journal, request)
    operator = (mode or config.mode) == "operator"
    problems = []
    if operator:
        if brokers is None:
            # risk-reducing: on a real venue in prod the flatten goes out without the
            # live-trading flag (mmats.brokers.connect, purpose "reduce")
            brokers = brokers_for(config, feeds_for(config), cash=cash, purpose="reduce",
                                  live_trading_allowed=live_trading_allowed)
        problems = killswitch.flatten_at_venues(config, brokers, request)
        killswitch.write_request(config.journal, request)  # with its orders, for booking
    changed, deferred = [], False
    try:
        with runner_lock(config.lock, wait_s=KILL_LOCK_WAIT_S), \
                open_journal(config) as journal:
            journal.append_operator_action("kill", "all", user, reason)
            changed = _book_kill(config, journal, request, brokers if operator else None,
                                 cash)
    except RunnerBusy:  # a tick is running: it books the kill at its next check
        deferred = True
        try:
            with open_journal(config) as journal:
                journal.append_operator_action("kill", "all", user, reason)
        except MMATSError as error:  # e.g. the signing key cannot be read here
            problems.append(f"journal: {error}; the next tick books the kill")
    except MMATSError as error:
        deferred = True
        problems.append(f"journal: {error}; the next tick books the kill")
    outcome = KillOutcome(changed, operator, deferred, problems)
    notify(config.notifications, "MMATS kill",
           f"kill by {user} ({reason or 'no reason given'}): {outcome}")
    return outcome


def _book_kill(config, journal, request, brokers, cash) -> list[str]:
    all_sleeves = sleeves(config, cash)
    states = {s.id: journal.load_state(s.id) for s in all_sleeves}
    states = {k: v for k, v in states.items() if v is not None}
    desk = None
    if brokers is not None:
        all_sleeves = with_venue_rules(all_sleeves, brokers)
        desk = Desk(config, all_sleeves, states, brokers, journal, time.time_ns(),
                    TickReport(), killed=lambda: True)  # books; never places anything
        desk.recover()  # fills the venue made meanwhile (a resting stop) come first
    return killswitch.book(journal, desk, all_sleeves, states, request, time.time_ns())


def pause(config: RunnerConfig, model_id: str, *, user: str | None = None,
          reason: str = "") -> list[str]:
    """Stop a model opening anything: HALTED but positions kept (a later signal change
    can still only take them to flat)."""
    return _change(config, model_id, "pause", user, reason, lambda state, now: pause_state(state))


def close_symbol(config: RunnerConfig, symbol: str, *, user: str | None = None,
                 reason: str = "") -> list[str]:
    """Flatten every sleeve trading ``symbol`` at the next open; they keep trading after."""
    if not any(symbol in m.symbols for m in config.markets):
        raise ConfigError(f"{config.source}: no market trades {symbol!r}")
    return _change(config, None, "close", user, reason,
                   lambda state, now: flatten(state, now), symbol=symbol)


def resume_models(config: RunnerConfig, model_id: str | None = None, *,
                  user: str | None = None, reason: str = "") -> list[str]:
    """ACTIVE again. The global and market books over the resumed sleeves measure
    drawdown from here (a scope halted by its drawdown limit would otherwise stay halted
    with its old peak). While the kill switch is on, only a resume of every model (no
    ``model_id``) lifts it, and only once the kill is booked in the journal."""
    def check_kill(journal):
        request = killswitch.read_request(config.journal)
        if request is None:
            return
        if model_id is not None:
            raise ConfigError(f"{config.source}: the kill switch is on; resume every model "
                              "(no MODEL) to lift it")
        if not killswitch.booked(journal, request):
            raise ConfigError(f"{config.source}: the kill of {request.get('user', '?')} is "
                              "not booked in the journal yet (a tick books it); try again "
                              "after the next tick")

    def reset_books(journal, now):
        all_sleeves = sleeves(config, 1.0)
        resumed = {s.id for s in all_sleeves if model_id in (None, s.model_id)}
        states = {s.id: journal.load_state(s.id) for s in all_sleeves}
        for scope in scopes(config, all_sleeves):
            book = journal.load_state(book_id(scope), BOOK_DTYPE)
            if book is None or not resumed & set(scope.sleeve_ids):
                continue
            if any(states[i] is None for i in scope.sleeve_ids):
                continue
            reset_book(book, scope.equity(states))
            journal.save_state(book_id(scope), book, ts_ns=now)
        if model_id is None:
            killswitch.clear_request(config.journal)

    return _change(config, model_id, "resume", user, reason, lambda state, now: resume(state),
                   after=reset_books, before=check_kill)


def _change(config, model_id, action, user, reason, apply, symbol=None,
            after=None, before=None) -> list[str]:
    user = user or killswitch.os_user()
    targets = [s for s in sleeves(config, 1.0) if model_id in (None, s.model_id)
               and symbol in (None, s.symbol)]
    if model_id is not None and not targets:
        raise ConfigError(f"{config.source}: no model {model_id!r}; models: "
                          f"{', '.join(m.id for m in config.models)}")
    changed = []
    now = time.time_ns()
    with runner_lock(config.lock), open_journal(config) as journal:
        if before is not None:
            before(journal)
        with journal.transaction():
            for sleeve in targets:
                state = journal.load_state(sleeve.id)
                if state is None:
                    continue
                apply(state[0], now)
                journal.save_state(sleeve.id, state, ts_ns=now)
                changed.append(sleeve.id)
            journal.append_operator_action(action, symbol or model_id or "all", user, reason)
        if after is not None:
            after(journal, now)
    notify(config.notifications, f"MMATS {action}",
           f"{action} {model_id or 'all'} by {user}: {', '.join(changed) or 'no sleeve yet'}")
    return changed


def status(config: RunnerConfig) -> dict:
    """Positions, equity, trading state and last bar of every sleeve, from the journal,
    under ``environment`` the configuration's (which the journal is checked to share), and
    under ``kill_switch`` the kill in force (who, why, when), or None."""
    result: dict = {"environment": config.environment}
    with open_journal(config) as journal:
        for sleeve in sleeves(config, 1.0):
            state = journal.load_state(sleeve.id)
            if state is None:
                result[sleeve.id] = None
                continue
            record = state[0]
            result[sleeve.id] = {
                "position": float(record["position"]), "equity": float(record["equity"]),
                "cash": float(record["cash"]),
                "trading_state": TradingState(int(record["trading_state"])).name,
                "last_bar_ts_ns": int(record["last_bar_ts_ns"]),
                "trades": int(record["n_trades"]),
                "drawdown_pct": 100.0 * (1 - record["equity"] / record["equity_peak"]),
            }
    request = killswitch.read_request(config.journal)
    result["kill_switch"] = None if request is None else {
        "user": request.get("user"), "reason": request.get("reason"),
        "ts_ns": request.get("ts_ns"), "orders": len(request.get("orders", []))}
    return result
