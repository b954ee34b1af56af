"""The dashboard's read model: what a runner's journal holds, as JSON-ready answers.

It reads the journal through a read-only SQLite connection (``mode=ro``: it never writes
it and never takes the runner's lock) and follows the sequence number: every row of every
table has one global ``seq`` (the ``chain`` table lists them all), so :meth:`refresh`
reads only the rows after the last one it saw and folds them into in-memory aggregates —
the equity curves at full resolution (:mod:`mmats.console.curves`), each sleeve's newest
state, the newest row of every order, and bounded lists of the recent fills, signals and
log entries. After the first load a refresh costs the rows a tick added, not the journal.

A journal that does not exist yet is no error: everything is empty until it appears. A
journal replaced by another (a different ``meta.journal_id``) or rewound (its head went
back) is read again from the start.

Every answer holds plain dicts, lists, ints, floats and strings (no NaN: None); times are
integer milliseconds since the epoch (``ts_ms``), as the charts want them. The app calls
:meth:`refresh` from one background task and the getters from request handlers: one lock
guards them.

Example::

    model = ReadModel(load_config("configs/paper_multi_market.yaml"))
    head = model.refresh()
    model.portfolio()["equity_now"], [p["symbol"] for p in model.positions()]
    model.changes(head - 10)  # the ten newest rows, as one-line events
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sqlite3
import threading
from collections import OrderedDict, defaultdict, deque
from pathlib import Path
from urllib.parse import quote

import numpy as np

from mmats.console.curves import Curves, downsample, points
from mmats.console.rows import (
    CONFIG_FIELDS,
    FILL_FIELDS,
    LEVELS,
    NS_PER_MS,
    OPERATOR_FIELDS,
    ORDER_FIELDS,
    RISK_FIELDS,
    SIGNAL_FIELDS,
    STATE_TEXT,
    config_log,
    event_of,
    fill_of,
    log_entry,
    ms,
    number,
    operator_log,
    order_of,
    plain,
    risk_log,
    signal_view,
)
from mmats.live import kill as killswitch
from mmats.live.closes import book_id
from mmats.live.config import RunnerConfig
from mmats.live.control import FAILURES_TO_HALT
from mmats.live.operator import UNSETTLED
from mmats.live.portfolio import BOOK_DTYPE, scopes
from mmats.live.sleeves import sleeves
from mmats.types import STATE_DTYPE, TradingState
from mmats.units import DAY_NS

FILLS_KEPT = 5000  # the newest fills (the app asks for at most 5000)
MARKERS_KEPT = 5000  # fills per symbol, for the market chart
FINAL_ORDERS_KEPT = 2000  # settled orders (every unsettled one is kept)
LOGS_KEPT = 5000
SIGNALS_KEPT = 20  # per model
LEVELS_KEPT = 2000  # stop / take-profit points per sleeve and per source
CONTROLS = ("pause", "resume", "kill")  # the operator actions that set a model's state
_BOOK_TEXT = json.dumps(np.lib.format.dtype_to_descr(BOOK_DTYPE))
_STATE_ROW = np.dtype([("ts_ns", np.int64), ("state", f"S{STATE_DTYPE.itemsize}")])


class ReadModel:
    """A runner's journal, read-only, as the dashboard's views want it.

    ``max_points`` caps each equity curve :meth:`portfolio` returns (the curves are kept
    at full resolution; see :func:`mmats.console.curves.downsample`). ``rows_read``
    counts the journal rows :meth:`refresh` has read, so a caller (or a test) can see
    that a refresh reads only the new ones."""

    def __init__(self, config: RunnerConfig, *, max_points: int = 2000):
        if max_points < 4:
            raise ValueError(f"max_points must be at least 4, got {max_points}")
        self.config = config
        self.path = Path(config.journal)
        self.max_points = int(max_points)
        self.rows_read = 0
        self.problem: str | None = None  # why the journal could not be read, if it could not
        self._sleeves = sleeves(config, 1.0)
        self._sleeve = {s.id: s for s in self._sleeves}
        self._book_ids = [book_id(scope) for scope in scopes(config, self._sleeves)]
        self._lock = threading.RLock()
        self._db: sqlite3.Connection | None = None
        self._file: tuple[int, int] | None = None  # (device, inode) of the file connected
        self._reset()

    # -- following the journal -----------------------------------------------------------
    def _reset(self) -> None:
        """Forget everything read: the journal is new, replaced or rewound."""
        groups = {"global": list(self._sleeve)}
        for market in self.config.markets:
            groups[f"market:{market.name}"] = [s.id for s in self._sleeves
                                               if s.market == market.name]
        for model in self.config.models:
            groups[f"model:{model.id}"] = [s.id for s in self._sleeves if s.model_id == model.id]
        self._journal_id: str | None = None
        self._head = 0
        self._curves = Curves(groups)
        self._states: dict[str, np.ndarray] = {}  # sleeve id -> newest state (1 record)
        self._books: dict[str, np.ndarray] = {}  # book id -> its scope's newest book
        self._state_levels = defaultdict(lambda: deque(maxlen=LEVELS_KEPT))  # by sleeve
        self._last_levels: dict[str, tuple[float, float]] = {}
        self._signal_levels = defaultdict(lambda: deque(maxlen=LEVELS_KEPT))  # by symbol
        # rows are kept as read (tuples of the *_FIELDS columns) and shaped when shown
        self._signals = defaultdict(lambda: deque(maxlen=SIGNALS_KEPT))  # by model
        self._fills: deque[tuple] = deque(maxlen=FILLS_KEPT)
        self._markers = defaultdict(lambda: deque(maxlen=MARKERS_KEPT))  # by symbol
        self._pending: dict[str, tuple] = {}  # client order id -> newest row, unsettled
        self._settled: OrderedDict[str, tuple] = OrderedDict()  # the same, settled
        self._logs: deque[dict] = deque(maxlen=LOGS_KEPT)
        self._controls: dict[str, tuple[int, str]] = {}  # target -> (seq, newest control)
        self._portfolio: tuple[tuple, dict] | None = None

    def refresh(self) -> int:
        """Read the rows journaled since the last refresh; returns the head seq (0 while
        the journal does not exist). A journal that cannot be read leaves the answers as
        they were and says why in ``problem`` (and in :meth:`overview`)."""
        with self._lock:
            try:
                db = self._connection()
                if db is None:
                    return self._head
                db.execute("BEGIN")  # one snapshot for every table
                try:
                    self._read_new(db)
                finally:
                    db.execute("COMMIT")  # never hold a read open: the runner checkpoints
                self.problem = None
            except sqlite3.Error as error:
                self.problem = f"journal {self.path} cannot be read: {error}"
                self._disconnect()
                self._reset()  # the next refresh reads it again from the start
            return self._head

    def _connection(self) -> sqlite3.Connection | None:
        """The read-only connection to the journal file, made anew when the file appeared
        or was replaced (and the answers reset when it is another journal)."""
        try:
            stat = os.stat(self.path)
        except OSError:  # not there (yet, or any more)
            if self._db is not None or self._head:
                self._disconnect()
                self._reset()
            return None
        identity = (stat.st_dev, stat.st_ino)
        if self._db is not None and identity == self._file:
            return self._db
        self._disconnect()
        db = sqlite3.connect(f"file:{quote(str(self.path.resolve()))}?mode=ro", uri=True,
                             timeout=5.0, isolation_level=None, check_same_thread=False)
        try:
            tables = {row[0] for row in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
            if "chain" not in tables:  # being created: try again at the next refresh
                db.close()
                return None
            journal_id = None
            if "meta" in tables:
                row = db.execute("SELECT value FROM meta WHERE name = 'journal_id'").fetchone()
                journal_id = row[0] if row else None
            # layout 1 journals (before signing) lack config_snapshots.user
            self._snapshot_users = "user" in {row[1] for row in db.execute(
                "PRAGMA table_info(config_snapshots)")}
        except BaseException:
            db.close()
            raise
        if journal_id is None or journal_id != self._journal_id:
            self._reset()
        self._db, self._file, self._journal_id = db, identity, journal_id
        return db

    def _disconnect(self) -> None:
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
        self._db, self._file = None, None

    def _read_new(self, db: sqlite3.Connection) -> None:
        head = db.execute("SELECT MAX(seq) FROM chain").fetchone()[0] or 0
        if head < self._head:  # rewound (restored from a backup): read it all again
            journal_id = self._journal_id
            self._reset()
            self._journal_id = journal_id
        if head == self._head:
            return
        for read in (self._read_states, self._read_signals,
                     self._read_orders, self._read_fills, self._read_risk_events,
                     self._read_operator_actions, self._read_config_snapshots):
            read(db, self._head, head)  # each a range of the seq key: nothing older is read
        self._head = head

    def _fetch(self, db, query: str, *params) -> list[tuple]:
        rows = db.execute(query, params).fetchall()
        self.rows_read += len(rows)
        return rows

    def _select(self, db, table: str, columns: str, after: int, head: int) -> list[tuple]:
        return self._fetch(db, f"SELECT {columns} FROM {table} WHERE seq > ? AND seq <= ? "
                               "ORDER BY seq", after, head)

    def _read_states(self, db, after: int, head: int) -> None:
        """Each configured sleeve's new states (by the journal's ``states_sleeve`` index),
        decoded in one go: its curve, its newest state and where its resting stop and
        take-profit levels moved. Of each scope's book, the newest only."""
        for sleeve in self._sleeves:
            cursor = db.execute(
                "SELECT ts_ns, state FROM sleeve_states WHERE sleeve_id = ? AND dtype = ? "
                "AND length(state) = ? AND seq > ? AND seq <= ? ORDER BY seq",
                (sleeve.id, STATE_TEXT, STATE_DTYPE.itemsize, after, head))
            rows = np.fromiter(cursor, dtype=_STATE_ROW)  # no Python object per row kept
            self.rows_read += len(rows)
            if not len(rows):
                continue
            records = np.ascontiguousarray(rows["state"]).view(STATE_DTYPE)
            times = rows["ts_ns"]
            self._curves.extend(sleeve.id, times, records["equity"])
            self._states[sleeve.id] = records[-1:].copy()
            self._track_levels(sleeve.id, times, records)
        for book in self._book_ids:
            rows = self._fetch(
                db, "SELECT state FROM sleeve_states WHERE sleeve_id = ? AND dtype = ? AND "
                "length(state) = ? AND seq > ? AND seq <= ? ORDER BY seq DESC LIMIT 1",
                book, _BOOK_TEXT, BOOK_DTYPE.itemsize, after, head)
            if rows:
                self._books[book] = np.frombuffer(rows[0][0], dtype=BOOK_DTYPE).copy()

    def _track_levels(self, sleeve_id: str, times, records) -> None:
        """The points where a sleeve's resting levels (the kernel's ``stop_price`` and
        ``take_profit_price``) changed, None where one was lifted."""
        stop, take = records["stop_price"], records["take_profit_price"]
        before = self._last_levels.get(sleeve_id, (math.nan, math.nan))
        changed = np.zeros(len(times), dtype=bool)
        for levels, previous in ((stop, before[0]), (take, before[1])):
            shifted = np.concatenate([[previous], levels[:-1]])
            same = (levels == shifted) | (np.isnan(levels) & np.isnan(shifted))
            changed |= ~same
        sleeve = self._sleeve[sleeve_id]
        for index in np.flatnonzero(changed):
            self._state_levels[sleeve_id].append({
                "ts_ms": int(times[index]) // NS_PER_MS, "model_id": sleeve.model_id,
                "stop_loss": number(stop[index]), "take_profit": number(take[index]),
                "source": "state"})
        self._last_levels[sleeve_id] = (float(stop[-1]), float(take[-1]))

    def _read_signals(self, db, after: int, head: int) -> None:
        """The newest signals of each model (read newest first, so the first load stops
        after ``SIGNALS_KEPT`` of each) and every signal that asked for a stop or a
        take-profit level."""
        columns = ", ".join(SIGNAL_FIELDS)
        for model in self.config.models:
            rows = self._fetch(db, f"SELECT {columns} FROM signals WHERE model_id = ? AND "
                                   "seq > ? AND seq <= ? ORDER BY seq DESC LIMIT ?",
                               model.id, after, head, SIGNALS_KEPT)
            self._signals[model.id].extend(reversed(rows))
        for ts_ns, model_id, symbol, stop, take in self._fetch(
                db, "SELECT ts_ns, model_id, symbol, stop_loss, take_profit FROM signals "
                "WHERE seq > ? AND seq <= ? AND (stop_loss IS NOT NULL OR take_profit IS NOT "
                "NULL) ORDER BY seq", after, head):
            self._signal_levels[symbol].append({
                "ts_ms": ts_ns // NS_PER_MS, "model_id": model_id, "stop_loss": number(stop),
                "take_profit": number(take), "source": "signal"})

    def _read_orders(self, db, after: int, head: int) -> None:
        """The newest row of each client order: unsettled ones in ``_pending``, the rest in
        ``_settled`` (the newest ``FINAL_ORDERS_KEPT``)."""
        cid, status = ORDER_FIELDS.index("client_order_id"), ORDER_FIELDS.index("broker_status")
        for row in self._select(db, "orders", ", ".join(ORDER_FIELDS), after, head):
            self._pending.pop(row[cid], None)
            self._settled.pop(row[cid], None)
            if row[status] in UNSETTLED:
                self._pending[row[cid]] = row
            else:
                self._settled[row[cid]] = row
        while len(self._settled) > FINAL_ORDERS_KEPT:
            self._settled.popitem(last=False)

    def _read_fills(self, db, after: int, head: int) -> None:
        symbol = FILL_FIELDS.index("symbol")
        for row in self._select(db, "fills", ", ".join(FILL_FIELDS), after, head):
            self._fills.append(row)
            self._markers[row[symbol]].append(row)

    def _read_risk_events(self, db, after: int, head: int) -> None:
        for row in self._select(db, "risk_events", ", ".join(RISK_FIELDS), after, head):
            self._logs.append(risk_log(dict(zip(RISK_FIELDS, row, strict=True))))

    def _read_operator_actions(self, db, after: int, head: int) -> None:
        for row in self._select(db, "operator_actions", ", ".join(OPERATOR_FIELDS), after,
                                head):
            entry = operator_log(dict(zip(OPERATOR_FIELDS, row, strict=True)))
            self._logs.append(entry)
            if entry["kind"] in CONTROLS:
                self._controls[entry["scope"]] = (entry["seq"], entry["kind"])

    def _read_config_snapshots(self, db, after: int, head: int) -> None:
        fields = CONFIG_FIELDS if self._snapshot_users else CONFIG_FIELDS[:-1]
        names = [field.split(" AS ")[-1] for field in fields]
        for row in self._select(db, "config_snapshots", ", ".join(fields), after, head):
            self._logs.append(config_log(dict(zip(names, row, strict=True))))

    # -- the live feed ---------------------------------------------------------------------
    def changes(self, after_seq: int, limit: int = 500) -> list[dict]:
        """The rows after ``after_seq`` (up to the head of the last refresh, at most
        ``limit``), oldest first, as compact events: ``{"seq", "table", "ts_ms",
        "summary"}`` plus the row's key fields (see :func:`event_of`)."""
        with self._lock:
            db, head = self._db, self._head
            if db is None or after_seq >= head or limit <= 0:
                return []
            try:
                db.execute("BEGIN")
                try:
                    chain = db.execute(
                        "SELECT seq, table_name FROM chain WHERE seq > ? AND seq <= ? "
                        "ORDER BY seq LIMIT ?", (int(after_seq), head, int(limit))).fetchall()
                    rows: dict[str, dict[int, dict]] = {}
                    if chain:
                        low, high = chain[0][0], chain[-1][0]
                        for table in {name for _, name in chain}:
                            cursor = db.execute(f"SELECT * FROM {table} WHERE seq >= ? AND "
                                                "seq <= ?", (low, high))
                            names = [column[0] for column in cursor.description]
                            rows[table] = {row[0]: dict(zip(names, row, strict=True))
                                           for row in cursor}
                finally:
                    db.execute("COMMIT")
            except sqlite3.Error:
                return []
            return [event_of(table, rows[table][seq], self._sleeve)
                    for seq, table in chain if seq in rows.get(table, {})]

    # -- the views -------------------------------------------------------------------------
    def overview(self) -> dict:
        """``{"mode", "environment", "journal", "journal_id", "head_seq", "kill_switch":
        None | {"user", "reason", "ts_ms"}, "markets", "models", "sleeves",
        "last_bar_ts_ms", "problem"}``."""
        with self._lock:
            request = killswitch.read_request(self.path)
            last_bar = self._newest_bar_ns()
            return {
                "mode": self.config.mode, "environment": self.config.environment,
                "journal": str(self.path), "journal_id": self._journal_id,
                "head_seq": self._head,
                "kill_switch": None if request is None else {
                    "user": request.get("user"), "reason": request.get("reason"),
                    "ts_ms": ms(request.get("ts_ns"))},
                "markets": [m.name for m in self.config.markets],
                "models": [m.id for m in self.config.models],
                "sleeves": len(self._sleeves),
                "last_bar_ts_ms": ms(last_bar), "problem": self.problem}

    def _newest_bar_ns(self) -> int | None:
        """The open time of the newest bar any sleeve has processed (its state says)."""
        bars = [int(state[0]["last_bar_ts_ns"]) for state in self._states.values()]
        return max((bar for bar in bars if bar >= 0), default=None)

    def portfolio(self) -> dict:
        """Equity curves (each at most ``max_points`` points ``[ts_ms, equity]``), P&L and
        drawdown: ``{"equity": {"global": [...], "markets": {name: [...]}, "models":
        {id: [...]}}, "pnl_today", "pnl_total", "equity_now", "equity_start",
        "day_start_equity", "drawdown_pct", "max_drawdown_pct", "drawdown_limit_pct",
        "daily_loss_pct", "daily_loss_limit_pct"}``. P&L today is measured from the
        equity at the start of the UTC day of the newest bar; drawdown from the global
        curve's running peak; the limits are the configuration's global ones (None: no
        limit)."""
        with self._lock:
            key = (self._curves.version, self._head)
            if self._portfolio is None or self._portfolio[0] != key:
                self._portfolio = (key, self._compute_portfolio())
            answer = self._portfolio[1]
            return {**answer, "equity": {
                "global": list(answer["equity"]["global"]),
                "markets": dict(answer["equity"]["markets"]),
                "models": dict(answer["equity"]["models"])}}

    def _compute_portfolio(self) -> dict:
        limits = self.config.global_risk

        def drawn(group):
            return points(*downsample(*self._curves.series(group), self.max_points))

        answer = {"equity": {
            "global": drawn("global"),
            "markets": {m.name: drawn(f"market:{m.name}") for m in self.config.markets},
            "models": {m.id: drawn(f"model:{m.id}") for m in self.config.models}},
            "pnl_today": 0.0, "pnl_total": 0.0, "equity_now": None, "equity_start": None,
            "day_start_equity": None, "drawdown_pct": 0.0, "max_drawdown_pct": 0.0,
            "drawdown_limit_pct": limits.max_drawdown_pct, "daily_loss_pct": 0.0,
            "daily_loss_limit_pct": limits.max_daily_loss_pct}
        times, values = self._curves.series("global")
        if not len(values):
            return answer
        # now: the newest states (as `status` and a replay's final equity add them up); the
        # curve's last point may be an older state stamped later (see mmats.console.curves)
        now = float(sum(state[0]["equity"] for state in self._states.values()))
        start = float(values[0])
        newest = self._newest_bar_ns()
        newest = int(times[-1]) if newest is None else newest
        before_day = int(np.searchsorted(times, newest // DAY_NS * DAY_NS, side="left")) - 1
        day_start = float(values[before_day]) if before_day >= 0 else start
        peaks = np.maximum.accumulate(values)
        with np.errstate(divide="ignore", invalid="ignore"):
            drawdowns = np.where(peaks > 0, 100.0 * (peaks - values) / peaks, 0.0)
        peak = max(float(peaks[-1]), now)
        answer.update({
            "pnl_today": now - day_start, "pnl_total": now - start, "equity_now": now,
            "equity_start": start, "day_start_equity": day_start,
            "drawdown_pct": 100.0 * (peak - now) / peak if peak > 0 else 0.0,
            "max_drawdown_pct": float(drawdowns.max()),
            "daily_loss_pct": max(0.0, 100.0 * (day_start - now) / day_start)
            if day_start > 0 else 0.0})
        return answer

    def positions(self) -> list[dict]:
        """Open positions, one per sleeve holding one: ``{"sleeve", "model_id", "market",
        "symbol", "qty" (signed), "side", "entry_price", "mark", "unrealised_pnl",
        "equity", "stop_loss", "take_profit", "trading_state", "last_bar_ts_ms"}``.

        The entry is the state's average entry price (the kernel keeps it while a position
        is open), the mark its last close; the stops are the state's resting levels, else
        the newest resting protective orders at the venue."""
        with self._lock:
            result = []
            for sleeve in self._sleeves:
                state = self._states.get(sleeve.id)
                if state is None or state[0]["position"] == 0.0:
                    continue
                record = state[0]
                qty = float(record["position"])
                entry = number(record["avg_price"]) if record["avg_price"] > 0 else None
                mark = number(record["last_close"])
                stop, take = number(record["stop_price"]), number(record["take_profit_price"])
                if stop is None and take is None:
                    stop, take = self._resting_orders(sleeve)
                result.append({
                    "sleeve": sleeve.id, "model_id": sleeve.model_id, "market": sleeve.market,
                    "symbol": sleeve.symbol, "qty": qty, "side": "long" if qty > 0 else "short",
                    "entry_price": entry, "mark": mark,
                    "unrealised_pnl": None if entry is None or mark is None
                    else number(qty * (mark - entry)),
                    "equity": number(record["equity"]), "stop_loss": stop, "take_profit": take,
                    "trading_state": self._state_label(sleeve, record),
                    "last_bar_ts_ms": ms(int(record["last_bar_ts_ns"]))})
            return result

    def _resting_orders(self, sleeve) -> tuple[float | None, float | None]:
        """The levels of the sleeve's protective orders resting at the venue, newest last."""
        levels = {"stop_loss": None, "take_profit": None}
        for order in sorted(map(order_of, self._pending.values()), key=lambda o: o["seq"]):
            if order["model_id"] == sleeve.model_id and order["symbol"] == sleeve.symbol \
                    and order["kind"] in levels and order["status"] == "open":
                levels[order["kind"]] = order["price"]
        return levels["stop_loss"], levels["take_profit"]

    def orders(self, limit: int = 200) -> dict:
        """``{"pending": [...], "recent": [...]}``: the newest row of each client order,
        unsettled ones (journal status in :data:`mmats.live.operator.UNSETTLED`: SENDING,
        PLACING, UNKNOWN, UNSENT, open, partially_filled) and the ``limit`` newest settled
        ones (filled, canceled, rejected, expired, PAPER, abandoned, missing, NOT_SENT_...),
        each newest first; rows as :func:`order_view`."""
        with self._lock:
            pending = sorted(self._pending.values(), key=lambda row: row[0], reverse=True)
            recent = list(self._settled.values())[::-1][:max(0, int(limit))]
            return {"pending": [order_of(row) for row in pending],
                    "recent": [order_of(row) for row in recent]}

    def fills(self, limit: int = 500) -> list[dict]:
        """The ``limit`` newest fills (at most ``FILLS_KEPT``), newest first, as
        :func:`fill_view`."""
        with self._lock:
            newest = list(self._fills)[::-1][:max(0, int(limit))]
            return [fill_of(row) for row in newest]

    def strategies(self) -> list[dict]:
        """One per configured model: ``{"id", "strategy", "market", "symbols", "params",
        "allocation", "sleeves": [{"id", "symbol", "state", "position", "equity",
        "last_bar_ts_ms"}], "signals": [the newest 20, newest first: {"seq", "ts_ms",
        "symbol", "action", "qty", "limit_price", "stop_loss", "take_profit",
        "time_in_force", "confidence", "meta"}]}``; a sleeve's ``state`` is ACTIVE,
        REDUCING, HALTED or PAUSED (halted by an operator's pause), None before its first
        bar."""
        with self._lock:
            result = []
            for model in self.config.models:
                rows = []
                for sleeve in (s for s in self._sleeves if s.model_id == model.id):
                    state = self._states.get(sleeve.id)
                    record = None if state is None else state[0]
                    rows.append({
                        "id": sleeve.id, "symbol": sleeve.symbol,
                        "state": None if record is None else self._state_label(sleeve, record),
                        "position": None if record is None else float(record["position"]),
                        "equity": None if record is None else number(record["equity"]),
                        "last_bar_ts_ms": None if record is None
                        else ms(int(record["last_bar_ts_ns"]))})
                signals = [signal_view(dict(zip(SIGNAL_FIELDS, row, strict=True)))
                           for row in reversed(self._signals.get(model.id, ()))]
                result.append({
                    "id": model.id, "strategy": model.strategy, "market": model.market,
                    "symbols": list(model.symbols), "params": plain(model.params),
                    "allocation": model.allocation, "sleeves": rows, "signals": signals})
            return result

    def _state_label(self, sleeve, record) -> str:
        """The trading state's name; PAUSED when HALTED and the newest control of the
        model (its own or of all models) is an operator's pause."""
        state = TradingState(int(record["trading_state"])).name
        if state != "HALTED":
            return state
        newest = max((self._controls[t] for t in (sleeve.model_id, "all") if t in self._controls),
                     default=None)
        return "PAUSED" if newest is not None and newest[1] == "pause" else state

    def logs(self, *, kinds: list[str] | None = None, level: str | None = None,
             text: str | None = None, limit: int = 500) -> list[dict]:
        """Risk events, operator actions and configuration snapshots (the newest
        ``LOGS_KEPT``), and the runner's side files (the tick-failure count and the kill
        request, when present, first), newest first: ``{"seq", "ts_ms", "source" ("risk",
        "operator", "config", "runner"), "level", "kind", "scope", "message", "user"}``.

        ``kinds`` keeps entries whose source or kind is listed; ``level`` keeps that level
        and worse (INFO < WARNING < CRITICAL); ``text`` keeps those whose message, kind,
        scope or user contains it (case-insensitive)."""
        wanted = {k.lower() for k in kinds} if kinds else None
        floor = LEVELS.index(level.upper()) if level and level.upper() in LEVELS else 0
        needle = text.lower() if text else None
        result = []
        with self._lock:
            entries = [*self._side_files(), *reversed(self._logs)]
            for entry in entries:
                if len(result) >= limit:
                    break
                if wanted is not None and entry["source"] not in wanted \
                        and entry["kind"].lower() not in wanted:
                    continue
                if floor and LEVELS.index(entry["level"]) < floor:
                    continue
                if needle is not None and not any(
                        needle in (entry[name] or "").lower()
                        for name in ("message", "kind", "scope", "user")):
                    continue
                result.append(dict(entry))
        return result

    def _side_files(self) -> list[dict]:
        """The runner's files beside the journal, as log entries: the count of ticks that
        failed in a row (``<journal>.failures``) and the kill request in force."""
        entries = []
        failures = self.path.with_name(self.path.name + ".failures")
        with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
            data = json.loads(failures.read_text(encoding="utf-8"))
            count = int(data["count"])
            entries.append(log_entry(None, int(failures.stat().st_mtime_ns), "runner",
                                "CRITICAL" if count >= FAILURES_TO_HALT else "WARNING",
                                "tick_failures", "runner",
                                f"{count} tick(s) in a row failed (the {FAILURES_TO_HALT}th "
                                f"kills trading); last: {data.get('last_error')}", None))
        request = killswitch.read_request(self.path)
        if request is not None:
            orders = len(request.get("orders") or [])
            entries.append(log_entry(None, request.get("ts_ns"), "runner", "CRITICAL",
                                "kill_request", "all",
                                f"kill switch on: {request.get('reason') or 'no reason given'}"
                                f" ({orders} flattening order(s))", request.get("user")))
        return entries

    def fill_markers(self, symbol: str) -> list[dict]:
        """Each kept fill of ``symbol``, in journal order, for the market chart: ``{"seq",
        "ts_ms", "side", "price", "qty", "model_id", "reason"}`` (reason: signal,
        stop_loss, take_profit or risk)."""
        with self._lock:
            return [{name: fill[name] for name in
                     ("seq", "ts_ms", "side", "price", "qty", "model_id", "reason")}
                    for fill in map(fill_of, self._markers.get(symbol, ()))]

    def stop_levels(self, symbol: str) -> list[dict]:
        """Where the resting stop-loss and take-profit levels of ``symbol``'s sleeves were
        set, moved or lifted, oldest first: ``{"ts_ms", "model_id", "stop_loss",
        "take_profit", "source"}``. Source ``state``: the kernel's resting levels (a point
        each time one changes; None once lifted: draw them as steps) — in operator mode
        the protective orders at the venue rest at these very levels
        (:class:`~mmats.live.protect.Protection` places them from the state), so they add
        no point of their own; ``signal``: the levels a decision asked for."""
        with self._lock:
            found = [point for sleeve in self._sleeves if sleeve.symbol == symbol
                     for point in self._state_levels.get(sleeve.id, ())]
            found += self._signal_levels.get(symbol, ())
            return [dict(point) for point in sorted(found, key=lambda p: p["ts_ms"])]

    def latest_states(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Copies of each sleeve's newest state (sleeve id -> 1-element ``STATE_DTYPE``
        array, as the runner's ``states``) and of each scope's newest book (its journal id,
        :func:`mmats.live.closes.book_id`, e.g. ``"__book__:global"`` -> 1-element
        ``BOOK_DTYPE`` array), as :func:`mmats.console.risk_view.risk_usage` takes them."""
        with self._lock:
            return ({sid: state.copy() for sid, state in self._states.items()},
                    {book: record.copy() for book, record in self._books.items()})

    def close(self) -> None:
        with self._lock:
            self._disconnect()
