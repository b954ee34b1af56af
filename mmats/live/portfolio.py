"""Global and market limits: the upper levels of the risk hierarchy.

global → market → strategy → order. The strategy level is the kernel's own gates on each
sleeve's state. The levels above act through the same states: a daily-loss breach puts
every sleeve of its scope in REDUCING (no new exposure until the next UTC day), a
drawdown breach halts and flattens them with the kernel's ``halt()``, and a full book
(max open positions) or a leverage cap blocks a sleeve's new exposure for that decision.
The runner and the portfolio backtest call these same functions at every bar close.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mmats.nb.risk import halt
from mmats.types import TradingState
from mmats.units import DAY_NS

ACTIVE = int(TradingState.ACTIVE)
REDUCING = int(TradingState.REDUCING)
HALTED = int(TradingState.HALTED)

#: What a scope (global, or one market) remembers between ticks.
BOOK_DTYPE = np.dtype([("day", np.int64), ("day_start_equity", np.float64),
                       ("equity_peak", np.float64), ("loss_tripped_day", np.int64),
                       ("halted", np.int64)], align=True)


@dataclass
class Scope:
    name: str  # "global" or "market:<name>"
    limits: object  # mmats.live.config.RiskLimits
    sleeve_ids: list[str]
    book: np.ndarray = field(default=None)

    def equity(self, states) -> float:
        return float(sum(states[i][0]["equity"] for i in self.sleeve_ids))


def scopes(config, sleeves) -> list[Scope]:
    """The global scope and one per market, with their sleeves."""
    result = [Scope("global", config.global_risk, [s.id for s in sleeves])]
    for market in config.markets:
        result.append(Scope(f"market:{market.name}", market.risk,
                            [s.id for s in sleeves if s.market == market.name]))
    return result


def reset_book(book: np.ndarray, equity: float) -> None:
    """After an operator's resume: measure drawdown from here, not from the old peak."""
    book["equity_peak"], book["halted"] = equity, 0


def new_book(equity: float) -> np.ndarray:
    book = np.zeros(1, dtype=BOOK_DTYPE)
    book["day"], book["day_start_equity"], book["equity_peak"] = -1, equity, equity
    book["loss_tripped_day"] = -1
    return book


def apply_limits(scope: Scope, states: dict, ts_ns: int) -> list[tuple[str, str, dict]]:
    """Check a scope's daily loss and drawdown at a close; returns risk events
    ``(kind, message, data)`` for the journal."""
    book, limits = scope.book[0], scope.limits
    equity = scope.equity(states)
    events = []
    day = ts_ns // DAY_NS
    if day != book["day"]:
        book["day"], book["day_start_equity"] = day, equity
    book["equity_peak"] = max(book["equity_peak"], equity)
    if limits.max_drawdown_pct and not book["halted"]:
        drawdown = 100.0 * (book["equity_peak"] - equity) / book["equity_peak"]
        if drawdown >= limits.max_drawdown_pct:
            book["halted"] = 1
            for sleeve_id in scope.sleeve_ids:
                halt(states[sleeve_id][0], ts_ns)
            events.append(("max_drawdown", f"{scope.name} drawdown {drawdown:.2f} % >= "
                           f"{limits.max_drawdown_pct} %: flatten and halt",
                           {"equity": equity, "peak": float(book["equity_peak"])}))
    if book["halted"]:  # its sleeves stay HALTED in their own states until a resume
        return events
    if limits.max_daily_loss_pct and book["day_start_equity"] > 0:
        loss = 100.0 * (book["day_start_equity"] - equity) / book["day_start_equity"]
        if loss >= limits.max_daily_loss_pct:
            for sleeve_id in scope.sleeve_ids:
                record = states[sleeve_id][0]
                if record["trading_state"] == ACTIVE:
                    record["trading_state"] = REDUCING
            if book["loss_tripped_day"] != day:
                book["loss_tripped_day"] = day
                events.append(("max_daily_loss", f"{scope.name} daily loss {loss:.2f} % >= "
                               f"{limits.max_daily_loss_pct} %: no new exposure today",
                               {"equity": equity,
                                "day_start": float(book["day_start_equity"])}))
    return events


def blocks_new_exposure(scopes_of_sleeve, sleeve_id: str, states: dict) -> bool:
    """Whether a full book (max open positions) or the gross leverage cap of any scope of
    this sleeve forbids it new exposure at this decision (it is retried later):
    :func:`blocking_limit` found one."""
    return blocking_limit(scopes_of_sleeve, sleeve_id, states) is not None


def blocking_limit(scopes_of_sleeve, sleeve_id: str,
                   states: dict) -> tuple[str, str, str] | None:
    """The first limit of this sleeve's scopes (in their order: global, then its market)
    that forbids it new exposure at this decision, as ``(scope name, limit name,
    detail)``, or None: a full book (``max_open_positions``, for a sleeve not yet holding:
    :func:`open_positions` at or above it) before the gross leverage cap
    (``max_leverage``: :func:`gross_exposure` at or above the cap × the scope's equity).

    >>> blocking_limit(scopes_of[sleeve.id], sleeve.id, states)  # doctest: +SKIP
    ('market:crypto', 'max_open_positions', '2/2 open')
    """
    holding = states[sleeve_id][0]["position"] != 0.0
    for scope in scopes_of_sleeve:
        limits = scope.limits
        if limits.max_open_positions and not holding:
            count = open_positions(scope, states)
            if count >= limits.max_open_positions:
                return scope.name, "max_open_positions", \
                    f"{count}/{limits.max_open_positions} open"
        if limits.max_leverage:
            equity = scope.equity(states)
            gross = gross_exposure(scope, states)
            if equity <= 0 or gross >= limits.max_leverage * equity:
                detail = (f"equity {equity:.6g} <= 0" if equity <= 0 else
                          f"gross {gross / equity:.4g}x >= {limits.max_leverage:g}x equity")
                return scope.name, "max_leverage", detail
    return None


# --- usage: how much of each limit a scope uses (read-only; the console's risk view) ------

def open_positions(scope: Scope, states: dict) -> int:
    """The scope's sleeves holding a position or waiting on a non-zero target, as
    :func:`blocks_new_exposure` counts them against ``max_open_positions``."""
    return sum(1 for i in scope.sleeve_ids
               if states[i][0]["position"] != 0.0
               or (not np.isnan(states[i][0]["target"]) and states[i][0]["target"] != 0.0))


def gross_exposure(scope: Scope, states: dict) -> float:
    """Σ |position × last close| of the scope's sleeves, in the quote currency, as
    :func:`blocks_new_exposure` weighs it against ``max_leverage`` × equity."""
    return float(sum(abs(states[i][0]["position"] * states[i][0]["last_close"])
                     for i in scope.sleeve_ids if states[i][0]["position"] != 0.0))


def scope_usage(scope: Scope, states: dict) -> dict[str, dict]:
    """How much of each limit of ``scope`` is used at its last close, by the formulas
    :func:`apply_limits` and :func:`blocks_new_exposure` act on; nothing is changed.

    Returns ``{name: {"used", "limit", "reached"}}`` for

    - ``daily_loss``: percent lost since the book's day-start equity (``used`` None
      without a book);
    - ``drawdown``: percent below the book's equity peak (None without a book);
    - ``gross_leverage``: :func:`gross_exposure` / equity, in x (inf at equity <= 0);
    - ``open_positions``: :func:`open_positions`.

    ``limit`` is the scope's limit (None: none set); ``reached`` says the scope acts on
    it now: daily loss tripped today (REDUCING), drawdown halted, a full book or the
    leverage cap vetoing new exposure. Every sleeve of the scope must have a state.

    >>> scope_usage(scope, states)["drawdown"]  # doctest: +SKIP
    {'used': 3.2, 'limit': 25.0, 'reached': False}
    """
    limits = scope.limits
    equity = scope.equity(states)
    gross = gross_exposure(scope, states)
    count = open_positions(scope, states)
    usage = {
        "daily_loss": {"used": None, "limit": limits.max_daily_loss_pct, "reached": False},
        "drawdown": {"used": None, "limit": limits.max_drawdown_pct, "reached": False},
        "gross_leverage": {
            "used": gross / equity if equity > 0 else float("inf"),
            "limit": limits.max_leverage,
            "reached": bool(limits.max_leverage)
            and (equity <= 0 or gross >= limits.max_leverage * equity)},
        "open_positions": {
            "used": float(count), "limit": limits.max_open_positions,
            "reached": bool(limits.max_open_positions) and count >= limits.max_open_positions},
    }
    if scope.book is None:
        return usage
    book = scope.book[0]
    peak = max(float(book["equity_peak"]), equity)
    if peak > 0:
        drawdown = 100.0 * (peak - equity) / peak
        usage["drawdown"].update(used=drawdown, reached=bool(book["halted"]) or bool(
            limits.max_drawdown_pct and drawdown >= limits.max_drawdown_pct))
    start = float(book["day_start_equity"])
    if start > 0:
        loss = 100.0 * (start - equity) / start
        tripped = book["loss_tripped_day"] == book["day"] and book["day"] >= 0
        usage["daily_loss"].update(used=loss, reached=bool(limits.max_daily_loss_pct) and (
            bool(tripped) or loss >= limits.max_daily_loss_pct))
    return usage
