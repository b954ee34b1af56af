"""One tick from the store (what cron runs), and the operator's controls: kill, pause,
resume, status. Every control is journaled as an operator action."""

from __future__ import annotations

import contextlib
import fcntl
import os
import time

from mmats.brokers.store_feed import StoreFeed
from mmats.data.calendar import timeframe_ns
from mmats.errors import ConfigError, MMATSError
from mmats.live.config import RunnerConfig
from mmats.live.journal import Journal
from mmats.live.notify import notify
from mmats.live.runner import run_tick, sleeves
from mmats.nb.risk import flatten, halt, resume
from mmats.nb.risk import pause as pause_state
from mmats.types import TradingState


class RunnerBusy(MMATSError):
    """Another tick holds the runner's lock."""


@contextlib.contextmanager
def runner_lock(path):
    """An exclusive lock, so two ticks (a slow one and the next cron run) never overlap."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    handle = open(path, "a+")  # noqa: SIM115 - held for the whole block
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunnerBusy(f"another runner tick holds {path}; this one exits") from None
        yield
    finally:
        handle.close()


def feeds_for(config: RunnerConfig) -> dict:
    return {market.name: StoreFeed(config.data_root, market.feed) for market in config.markets}


def tick_once(config: RunnerConfig, *, cash: float = 10_000.0, now_ns: int | None = None,
              mode: str | None = None):
    """Lock, journal the configuration if it changed, process every newly closed bar,
    notify the signals, exit."""
    mode = mode or config.mode
    with runner_lock(config.lock), Journal(config.journal) as journal:
        snapshot = config.snapshot()
        last = journal.rows("config_snapshots")[-1:]
        if not last or last[0]["text"] != snapshot:
            journal.append_config_snapshot(snapshot)
        now_ns = now_ns or time.time_ns()
        report = run_tick(config, feeds_for(config), journal, now_ns, cash=cash, mode=mode)
        stale = _halt_stale(config, journal, now_ns)
    for sleeve_id, message in stale:
        notify(config.notifications, "MMATS halted: stale data", f"{sleeve_id}: {message}")
    for signal in report.signals:
        notify(config.notifications, f"MMATS {mode} signal",
               f"{signal['model_id']} {signal['symbol']}: {signal['action']} "
               f"{signal['qty']:.8g} (target exposure {signal['meta']['target_exposure']})")
    return report


def _halt_stale(config, journal, now_ns) -> list[tuple[str, str]]:
    """Fail safe: a sleeve whose newest bar is more than ``stale_after_bars`` bars old
    (its feed stopped) is halted and flattened, with a risk event."""
    halted = []
    for sleeve in sleeves(config, 1.0):
        state = journal.load_state(sleeve.id)
        if state is None or state[0]["trading_state"] == int(TradingState.HALTED):
            continue
        step = timeframe_ns(sleeve.timeframe)
        age_bars = (now_ns - (int(state[0]["last_bar_ts_ns"]) + step)) / step
        if age_bars > config.stale_after_bars:
            message = (f"no new bar for {age_bars:.1f} bars (limit {config.stale_after_bars}); "
                       "halted, positions flatten at the next bar's open")
            with journal.transaction():
                halt(state[0], now_ns)
                journal.save_state(sleeve.id, state, ts_ns=now_ns)
                journal.append_risk_event("CRITICAL", f"sleeve:{sleeve.id}", "stale_data",
                                          message, {"age_bars": age_bars})
            halted.append((sleeve.id, message))
    return halted


def kill(config: RunnerConfig, *, user: str = "operator", reason: str = "") -> list[str]:
    """Halt every sleeve: pending orders cancelled, a flatten at the next open for any
    position, nothing new until :func:`resume_models`."""
    return _change(config, None, "kill", user, reason, lambda state, now: halt(state, now))


def pause(config: RunnerConfig, model_id: str, *, user: str = "operator",
          reason: str = "") -> list[str]:
    """Stop a model opening anything: HALTED but positions kept (a later signal change
    can still only take them to flat)."""
    return _change(config, model_id, "pause", user, reason, lambda state, now: pause_state(state))


def close_symbol(config: RunnerConfig, symbol: str, *, user: str = "operator",
                 reason: str = "") -> list[str]:
    """Flatten every sleeve trading ``symbol`` at the next open; they keep trading after."""
    if not any(symbol in m.symbols for m in config.markets):
        raise ConfigError(f"{config.source}: no market trades {symbol!r}")
    return _change(config, None, "close", user, reason,
                   lambda state, now: flatten(state, now), symbol=symbol)


def resume_models(config: RunnerConfig, model_id: str | None = None, *,
                  user: str = "operator", reason: str = "") -> list[str]:
    return _change(config, model_id, "resume", user, reason, lambda state, now: resume(state))


def _change(config, model_id, action, user, reason, apply, symbol=None) -> list[str]:
    targets = [s for s in sleeves(config, 1.0) if model_id in (None, s.model_id)
               and symbol in (None, s.symbol)]
    if model_id is not None and not targets:
        raise ConfigError(f"{config.source}: no model {model_id!r}; models: "
                          f"{', '.join(m.id for m in config.models)}")
    changed = []
    now = time.time_ns()
    with runner_lock(config.lock), Journal(config.journal) as journal:
        with journal.transaction():
            for sleeve in targets:
                state = journal.load_state(sleeve.id)
                if state is None:
                    continue
                apply(state[0], now)
                journal.save_state(sleeve.id, state, ts_ns=now)
                changed.append(sleeve.id)
            journal.append_operator_action(action, symbol or model_id or "all", user, reason)
            if action == "kill":
                journal.append_risk_event("CRITICAL", "global", "kill_switch",
                                          f"kill by {user}: {reason or 'no reason given'}",
                                          {"sleeves": changed})
    notify(config.notifications, f"MMATS {action}",
           f"{action} {model_id or 'all'} by {user}: {', '.join(changed) or 'no sleeve yet'}")
    return changed


def status(config: RunnerConfig) -> dict:
    """Positions, equity, trading state and last bar of every sleeve, from the journal."""
    result = {}
    with Journal(config.journal) as journal:
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
    return result
