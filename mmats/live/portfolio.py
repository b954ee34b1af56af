"""Global and market limits: the upper levels of the risk hierarchy.

global → market → strategy → order. The strategy level is the kernel's own gates on each
sleeve's state. The levels above act through the same states: a daily-loss breach puts
every sleeve of its scope in REDUCING (no new exposure until the next UTC day), a
drawdown breach halts and flattens them with the kernel's ``halt()``, and a full book
(max open positions) or a leverage cap blocks a sleeve's new exposure for that decision.

The arithmetic is numba (:mod:`mmats.nb.portfolio`), run by the runner's close and the
portfolio backtest alike; this module keeps the scopes of a configuration, packs the
sleeves' states for those functions, and says what they found in words (risk events,
the blocking limit) for the journal, manual orders and the console.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mmats.nb.portfolio import (
    BLOCK_DTYPE,
    BOOK_DTYPE,
    EVENT_DTYPE,
    LIMITS_DTYPE,
    MAX_DAILY_LOSS,
    MAX_DRAWDOWN,
    MAX_OPEN_POSITIONS,
    TOTALS_DTYPE,
    book_full,
    daily_loss_pct,
    drawdown_pct,
    first_blocking,
    leverage_full,
    limit_scopes,
    scope_totals,
    totals_of_scopes,
)
from mmats.types import STATE_DTYPE, TradingState

ACTIVE = int(TradingState.ACTIVE)
REDUCING = int(TradingState.REDUCING)
HALTED = int(TradingState.HALTED)

__all__ = ["ACTIVE", "BLOCK_DTYPE", "BOOK_DTYPE", "HALTED", "REDUCING", "Scope",
           "apply_limits", "blocking_limit", "blocking_text", "blocks_new_exposure",
           "copy_records", "event_text", "gross_exposure", "limits_array", "member_matrix",
           "new_book", "open_positions", "pack", "pack_states", "reset_book", "scope_usage",
           "scopes", "unpack_states"]


@dataclass
class Scope:
    name: str  # "global" or "market:<name>"
    limits: object  # mmats.live.config.RiskLimits
    sleeve_ids: list[str]
    book: np.ndarray = field(default=None)

    def totals(self, states) -> tuple[float, int, float]:
        """``(equity, open positions, gross exposure)`` of the scope's sleeves
        (:func:`mmats.nb.portfolio.scope_totals`)."""
        packed = pack_states(self.sleeve_ids, states)
        equity, count, gross = scope_totals(packed, np.ones(len(packed), dtype=np.uint8))
        return float(equity), int(count), float(gross)

    def equity(self, states) -> float:
        return self.totals(states)[0]


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


# --- the numba functions' inputs, and their results in words ------------------------------

def pack_states(sleeve_ids, states: dict) -> np.ndarray:
    """The sleeves' 1-element states as one ``STATE_DTYPE`` array (copies), in order."""
    return pack(sleeve_ids, states, STATE_DTYPE)


def pack(keys, arrays: dict, dtype: np.dtype) -> np.ndarray:
    """The 1-element record arrays ``arrays[key]`` as one array of ``dtype``, in order (a
    copy per record: ``np.concatenate`` of aligned record dtypes costs 100x more). Records
    already of ``dtype`` are joined as bytes: an empty array of a large record dtype
    costs more than the whole join."""
    joined = bytearray()
    for key in keys:
        record = arrays[key]
        if type(record) is not np.ndarray or record.dtype != dtype or record.shape != (1,):
            return _pack_each(keys, arrays, dtype)
        joined += record.tobytes()
    if not joined:
        return np.empty(0, dtype=dtype)
    packed = np.frombuffer(joined, dtype=dtype)  # writable: it owns the bytearray
    return packed if packed.flags.aligned else packed.copy()


def _pack_each(keys, arrays: dict, dtype: np.dtype) -> np.ndarray:
    """:func:`pack` record by record, each cast to ``dtype``."""
    packed = np.empty(len(keys), dtype=dtype)
    for i, key in enumerate(keys):
        packed[i] = arrays[key][0]
    return packed


def copy_records(records: np.ndarray) -> np.ndarray:
    """A copy of a record array, made through its bytes: numpy copies an aligned record
    dtype field by field, ten times slower (a tick copies the sleeves' settings)."""
    if records.ndim != 1 or not records.flags.c_contiguous or not len(records):
        return records.copy()
    copied = np.frombuffer(bytearray(records.tobytes()), dtype=records.dtype)
    return copied if copied.flags.aligned else copied.copy()


def unpack_states(sleeve_ids, packed: np.ndarray, states: dict) -> None:
    """Write :func:`pack_states`' array back into the sleeves' own states."""
    for i, sleeve_id in enumerate(sleeve_ids):
        states[sleeve_id][0] = packed[i]


def limits_array(scopes_: list[Scope]) -> np.ndarray:
    """The scopes' limits as ``LIMITS_DTYPE`` records (None: 0, no limit)."""
    result = np.zeros(len(scopes_), dtype=LIMITS_DTYPE)
    for j, scope in enumerate(scopes_):
        for name in LIMITS_DTYPE.names:
            result[j][name] = getattr(scope.limits, name) or 0
    return result


def member_matrix(scopes_: list[Scope], sleeve_ids: list[str]) -> np.ndarray:
    """Which sleeve (column, in ``sleeve_ids``' order) each scope (row) holds."""
    member = np.zeros((len(scopes_), len(sleeve_ids)), dtype=np.uint8)
    column = {sleeve_id: i for i, sleeve_id in enumerate(sleeve_ids)}
    for j, scope in enumerate(scopes_):
        for sleeve_id in scope.sleeve_ids:
            member[j, column[sleeve_id]] = 1
    return member


def event_text(scope: Scope, event) -> tuple[str, str, dict]:
    """A limit's event (an ``EVENT_DTYPE`` record) as ``(kind, message, data)``."""
    limits, equity = scope.limits, float(event["equity"])
    if event["kind"] == MAX_DRAWDOWN:
        return ("max_drawdown", f"{scope.name} drawdown {event['figure']:.2f} % >= "
                f"{limits.max_drawdown_pct} %: flatten and halt",
                {"equity": equity, "peak": float(event["reference"])})
    if event["kind"] == MAX_DAILY_LOSS:
        return ("max_daily_loss", f"{scope.name} daily loss {event['figure']:.2f} % >= "
                f"{limits.max_daily_loss_pct} %: no new exposure today",
                {"equity": equity, "day_start": float(event["reference"])})
    raise ValueError(f"unknown limit event kind {int(event['kind'])}")


def blocking_text(scope: Scope, block) -> tuple[str, str, str]:
    """A blocked decision (a ``BLOCK_DTYPE`` record) as ``(scope name, limit name,
    detail)``."""
    limits = scope.limits
    if block["limit"] == MAX_OPEN_POSITIONS:
        return scope.name, "max_open_positions", \
            f"{int(block['open_positions'])}/{limits.max_open_positions} open"
    equity, gross = float(block["equity"]), float(block["gross"])
    detail = (f"equity {equity:.6g} <= 0" if equity <= 0 else
              f"gross {gross / equity:.4g}x >= {limits.max_leverage:g}x equity")
    return scope.name, "max_leverage", detail


# --- the limits, for one scope or one decision ---------------------------------------------

def apply_limits(scope: Scope, states: dict, ts_ns: int) -> list[tuple[str, str, dict]]:
    """Check a scope's daily loss and drawdown at a close (:func:`mmats.nb.portfolio.
    limit_scope`), acting on its sleeves' states and its book; returns risk events
    ``(kind, message, data)`` for the journal."""
    packed = pack_states(scope.sleeve_ids, states)
    events = np.empty(1, dtype=EVENT_DTYPE)
    count = limit_scopes(scope.book, limits_array([scope]), packed,
                         np.ones((1, len(packed)), dtype=np.uint8), ts_ns, events)
    unpack_states(scope.sleeve_ids, packed, states)
    return [event_text(scope, event) for event in events[:count]]


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
    Scopes given that do not hold the sleeve are passed over. The arithmetic is
    :func:`mmats.nb.portfolio.first_blocking`, as the runner's close calls it.

    >>> blocking_limit(scopes_of[sleeve.id], sleeve.id, states)  # doctest: +SKIP
    ('market:crypto', 'max_open_positions', '2/2 open')
    """
    column = {}  # the sleeves of the scopes, each scope's own order kept (its sums add so)
    for scope in scopes_of_sleeve:
        for i in scope.sleeve_ids:
            column.setdefault(i, len(column))
    column.setdefault(sleeve_id, len(column))
    ids = list(column)
    member = member_matrix(scopes_of_sleeve, ids)
    totals = np.zeros(len(scopes_of_sleeve), dtype=TOTALS_DTYPE)
    totals_of_scopes(pack_states(ids, states), member, totals)
    block = np.zeros(1, dtype=BLOCK_DTYPE)
    holding = states[sleeve_id][0]["position"] != 0.0
    if not first_blocking(limits_array(scopes_of_sleeve), member, totals, column[sleeve_id],
                          holding, block[0]):
        return None
    return blocking_text(scopes_of_sleeve[int(block[0]["scope"])], block[0])


# --- usage: how much of each limit a scope uses (read-only; the console's risk view) ------

def open_positions(scope: Scope, states: dict) -> int:
    """The scope's sleeves holding a position or waiting on a non-zero target, as
    :func:`blocks_new_exposure` counts them against ``max_open_positions``."""
    return scope.totals(states)[1]


def gross_exposure(scope: Scope, states: dict) -> float:
    """Σ |position × last close| of the scope's sleeves, in the quote currency, as
    :func:`blocks_new_exposure` weighs it against ``max_leverage`` × equity."""
    return scope.totals(states)[2]


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
    equity, count, gross = scope.totals(states)
    usage = {
        "daily_loss": {"used": None, "limit": limits.max_daily_loss_pct, "reached": False},
        "drawdown": {"used": None, "limit": limits.max_drawdown_pct, "reached": False},
        "gross_leverage": {
            "used": gross / equity if equity > 0 else float("inf"),
            "limit": limits.max_leverage,
            "reached": bool(leverage_full(limits.max_leverage or 0.0, equity, gross))},
        "open_positions": {
            "used": float(count), "limit": limits.max_open_positions,
            "reached": bool(book_full(limits.max_open_positions or 0, count))},
    }
    if scope.book is None:
        return usage
    book = scope.book[0]
    peak = max(float(book["equity_peak"]), equity)
    if peak > 0:
        drawdown = float(drawdown_pct(peak, equity))
        usage["drawdown"].update(used=drawdown, reached=bool(book["halted"]) or bool(
            limits.max_drawdown_pct and drawdown >= limits.max_drawdown_pct))
    start = float(book["day_start_equity"])
    if start > 0:
        loss = float(daily_loss_pct(start, equity))
        tripped = book["loss_tripped_day"] == book["day"] and book["day"] >= 0
        usage["daily_loss"].update(used=loss, reached=bool(limits.max_daily_loss_pct) and (
            bool(tripped) or loss >= limits.max_daily_loss_pct))
    return usage
