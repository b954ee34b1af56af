"""What a tick is wired from, built from its configuration: the runner's lock, the
journal, a candle feed per market and a broker per market.

Below the tick (:mod:`mmats.live.tick`), the controls (:mod:`mmats.live.control`) and the
replay (:mod:`mmats.live.replay`), so none of them imports another for its wiring.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time

from mmats.brokers.store_feed import StoreFeed
from mmats.errors import MMATSError
from mmats.live.config import RunnerConfig
from mmats.live.environments import (
    EnvironmentMismatch,
    check_anchor,
    check_data_root,
    claim_data_root,
)
from mmats.live.journal import Journal
from mmats.live.sleeves import sleeves


class RunnerBusy(MMATSError):
    """Another tick holds the runner's lock."""


@contextlib.contextmanager
def runner_lock(path, *, wait_s: float = 0.0):
    """An exclusive lock, so two ticks (a slow one and the next cron run) never overlap;
    ``wait_s`` > 0 waits that long for the holder before giving up.

    >>> with runner_lock(config.lock):  # doctest: +SKIP
    ...     ...  # no other tick runs here
    """
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    handle = open(path, "a+")  # noqa: SIM115 - held for the whole block
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise RunnerBusy(f"another runner tick holds {path}; this one "
                                     "exits") from None
                time.sleep(0.05)
        yield
    finally:
        handle.close()


def open_journal(config: RunnerConfig, mode: str | None = None) -> Journal:
    """The configuration's journal, anchored where the configuration says; a new journal
    of operator mode (real orders) must be signed (:mod:`mmats.live.journal_signing`).

    The runner's door to its environment's files (:mod:`mmats.live.environments`): the
    candle store must be the configuration's environment's (an unmarked one is marked),
    and so must the journal and its anchor (a new journal records the environment, one
    made before environments is adopted); otherwise
    :class:`~mmats.live.environments.EnvironmentMismatch` naming the configuration file.
    """
    try:
        claim_data_root(config.data_root, config.environment)
        return Journal(config.journal, anchor=config.journal_anchor,
                       sign=True if (mode or config.mode) == "operator" else None,
                       environment=config.environment)
    except EnvironmentMismatch as error:
        raise EnvironmentMismatch(f"{config.source}: {error}") from None


class HeldJournal:
    """The configuration's journal kept open from tick to tick by a long-running runner
    (the always-on service, :mod:`mmats.live.service`), where a cron tick opens it anew.

    An open connection spares each tick the journal's opening and, since the journal's
    write-ahead log is not removed between ticks, the syncs of starting a new one: one
    commit, one fsync, before a tick's first order. Each tick still takes the runner's
    lock and runs its own transactions; other processes (controls, a kill, the dashboard)
    write and read the journal between ticks as before, and the connection reads what
    they committed. It is opened again when the configuration names other files, when
    the journal or its anchor at the configured path is no longer the file this one
    wrote to at its last tick (moved aside, restored from a backup), and after a tick
    that failed.
    """

    def __init__(self) -> None:
        self.journal: Journal | None = None
        self._opened_for: tuple | None = None  # (journal, anchor, environment, mode)
        self._files: tuple | None = None  # the files' identities after the last tick

    @contextlib.contextmanager
    def open(self, config: RunnerConfig, mode: str | None = None):
        """The held journal for one tick (opened by :func:`open_journal` if need be)."""
        wanted = (config.journal, config.journal_anchor, config.environment,
                  mode or config.mode)
        if self.journal is not None and (wanted != self._opened_for or
                                         _identities(config) != self._files):
            self.close()
        if self.journal is None:
            self.journal = open_journal(config, mode)
            self._opened_for = wanted
        try:
            yield self.journal
        except BaseException:
            self.close()  # a failed tick: the next one starts from a fresh connection
            raise
        self._files = _identities(config)

    def close(self) -> None:
        if self.journal is not None:
            journal, self.journal, self._files = self.journal, None, None
            journal.close()


def _identities(config: RunnerConfig) -> tuple:
    """(device, inode) of the journal and of its anchor (None where there is no file)."""
    found = []
    for path in (config.journal, config.journal_anchor):
        try:
            info = os.stat(path)
        except FileNotFoundError:
            found.append(None)
        else:
            found.append((info.st_dev, info.st_ino))
    return tuple(found)


def check_environment(config: RunnerConfig) -> None:
    """Refuse, writing nothing, a configuration whose candle store, journal or anchor
    belongs to another environment (what :func:`open_journal` checks, without marking or
    adopting): for a control that writes beside the journal before it opens it, such as
    a kill's request file. A journal that does not exist yet, or records no environment,
    passes."""
    try:
        check_data_root(config.data_root, config.environment)
        if config.journal.is_file():
            Journal(config.journal, anchor=config.journal_anchor, readonly=True,
                    environment=config.environment).close()
        else:
            check_anchor(config.journal_anchor, config.journal, None, config.environment)
    except EnvironmentMismatch as error:
        raise EnvironmentMismatch(f"{config.source}: {error}") from None


def feeds_for(config: RunnerConfig, active: dict | None = None) -> dict:
    """A store feed per market, reading the folder of its active feed (the primary unless
    a failover chose another); a candle store of another environment is refused."""
    try:
        check_data_root(config.data_root, config.environment)
    except EnvironmentMismatch as error:
        raise EnvironmentMismatch(f"{config.source}: {error}") from None
    active = active or {}
    return {market.name: StoreFeed(config.data_root, active.get(market.name, market.feed))
            for market in config.markets}


def brokers_for(config: RunnerConfig, feeds: dict, *, cash: float = 10_000.0,
                clock=time.time_ns, purpose: str = "trade",
                live_trading_allowed: bool = False) -> dict:
    """The Execution/AccountState adapter of every market: the paper venue for
    ``execution: paper`` (one SQLite account per market beside the journal; it charges
    the fee and slippage of the market's first model), a venue adapter otherwise.

    >>> brokers = brokers_for(config, feeds_for(config))  # doctest: +SKIP
    """
    from mmats.brokers.paper import PaperBroker

    result = {}
    by_market = {}
    for sleeve in sleeves(config, cash):
        by_market.setdefault(sleeve.market, sleeve)
    for market in config.markets:
        if not market.is_paper:
            from mmats.brokers.connect import connect

            result[market.name] = connect(config, market, purpose=purpose,
                                          live_trading_allowed=live_trading_allowed)
            continue
        first = by_market.get(market.name)
        cfg = first.cfg[0] if first is not None else None
        path = config.journal.with_name(f"{config.journal.stem}.{market.name}.paper.sqlite")
        result[market.name] = PaperBroker(
            path, feeds[market.name], market.timeframe, cash=cash,
            fee_bps=float(cfg["fee_bps"]) if cfg is not None else 0.0,
            slippage_bps=float(cfg["slippage_bps"]) if cfg is not None else 0.0,
            leverage=max([float(s.cfg[0]["max_leverage"]) for s in sleeves(config, cash)
                          if s.market == market.name] + [1.0]),
            symbols=market.symbols, clock=clock)
    return result
