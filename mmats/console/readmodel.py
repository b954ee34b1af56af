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
from mmats.live import kill as killswitch
from mmats.live.closes import book_id
from mmats.live.config import RunnerConfig
from mmats.live.control import FAILURES_TO_HALT
from mmats.live.operator import UNSETTLED
from mmats.live.portfolio import BOOK_DTYPE, Scope
from mmats.live.sleeves import sleeves
from mmats.types import STATE_DTYPE, FillReason, TradingState
from mmats.units import DAY_NS

NS_PER_MS = 1_000_000
FILLS_KEPT = 5000  # the newest fills (the app asks for at most 5000)
MARKERS_KEPT = 5000  # fills per symbol, for the market chart
FINAL_ORDERS_KEPT = 2000  # settled orders (every unsettled one is kept)
LOGS_KEPT = 5000
SIGNALS_KEPT = 20  # per model
LEVELS_KEPT = 2000  # stop / take-profit points per sleeve and per source
LEVELS = ("INFO", "WARNING", "CRITICAL")
CONTROLS = ("pause", "resume", "kill")  # the operator actions that set a model's state
BOOK_PREFIX = book_id(Scope("", None, []))  # "__book__:"
_STATE_TEXT = json.dumps(np.lib.format.dtype_to_descr(STATE_DTYPE))  # as Journal stores it
_BOOK_TEXT = json.dumps(np.lib.format.dtype_to_descr(BOOK_DTYPE))
_PROTECTIVE = {int(FillReason.STOP_LOSS): "stop_loss", int(FillReason.TAKE_PROFIT): "take_profit"}


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
        self._books: dict[str, np.ndarray] = {}  # scope name -> newest book (1 record)
        self._state_levels = defaultdict(lambda: deque(maxlen=LEVELS_KEPT))  # by sleeve
        self._last_levels: dict[str, tuple[float, float]] = {}
        self._order_levels = defaultdict(lambda: deque(maxlen=LEVELS_KEPT))  # by symbol
        self._signal_levels = defaultdict(lambda: deque(maxlen=LEVELS_KEPT))  # by symbol
        self._last_bar_ns: int | None = None
        self._signals = defaultdict(lambda: deque(maxlen=SIGNALS_KEPT))  # by model, raw rows
        self._fills: deque[dict] = deque(maxlen=FILLS_KEPT)
        self._markers = defaultdict(lambda: deque(maxlen=MARKERS_KEPT))  # by symbol
        self._pending: dict[str, dict] = {}  # client order id -> newest row, unsettled
        self._settled: OrderedDict[str, dict] = OrderedDict()  # the same, settled, oldest first
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
        after = self._head
        tables = {row[0] for row in db.execute(
            "SELECT DISTINCT table_name FROM chain WHERE seq > ? AND seq <= ?", (after, head))}
        for table, read in self._readers():
            if table in tables:
                read(db, after, head)
        self._head = head

    def _readers(self):
        return (("sleeve_states", self._read_states), ("ticks", self._read_ticks),
                ("signals", self._read_signals), ("orders", self._read_orders),
                ("fills", self._read_fills), ("risk_events", self._read_risk_events),
                ("operator_actions", self._read_operator_actions),
                ("config_snapshots", self._read_config_snapshots))

    def _select(self, db, table: str, columns: str, after: int, head: int) -> list[tuple]:
        rows = db.execute(f"SELECT {columns} FROM {table} WHERE seq > ? AND seq <= ? "
                          "ORDER BY seq", (after, head)).fetchall()
        self.rows_read += len(rows)
        return rows

    def _read_states(self, db, after: int, head: int) -> None:
        """Each sleeve's new states, decoded in one go per sleeve: its curve, its newest
        state and where its resting stop and take-profit levels moved; the scopes' books."""
        new = defaultdict(lambda: ([], []))
        for ts_ns, sleeve_id, dtype, blob in self._select(
                db, "sleeve_states", "ts_ns, sleeve_id, dtype, state", after, head):
            if sleeve_id in self._sleeve and dtype == _STATE_TEXT \
                    and len(blob) == STATE_DTYPE.itemsize:
                times, blobs = new[sleeve_id]
                times.append(ts_ns)
                blobs.append(blob)
            elif sleeve_id.startswith(BOOK_PREFIX) and dtype == _BOOK_TEXT \
                    and len(blob) == BOOK_DTYPE.itemsize:
                self._books[sleeve_id[len(BOOK_PREFIX):]] = np.frombuffer(
                    blob, dtype=BOOK_DTYPE).copy()
        for sleeve_id, (times, blobs) in new.items():
            records = np.frombuffer(b"".join(blobs), dtype=STATE_DTYPE)
            times = np.asarray(times, dtype=np.int64)
            self._curves.extend(sleeve_id, times, records["equity"])
            self._states[sleeve_id] = records[-1:].copy()
            self._track_levels(sleeve_id, times, records)

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
                "stop_loss": _number(stop[index]), "take_profit": _number(take[index]),
                "source": "state"})
        self._last_levels[sleeve_id] = (float(stop[-1]), float(take[-1]))

    def _read_ticks(self, db, after: int, head: int) -> None:
        count, newest = db.execute(
            "SELECT COUNT(*), MAX(bar_ts_ns) FROM ticks WHERE seq > ? AND seq <= ?",
            (after, head)).fetchone()
        self.rows_read += count
        if newest is not None:
            self._last_bar_ns = max(newest, self._last_bar_ns or newest)

    def _read_signals(self, db, after: int, head: int) -> None:
        for row in self._select(db, "signals", "*", after, head):
            signal = _Row(row, _SIGNAL_COLUMNS)
            self._signals[signal["model_id"]].append(row)  # parsed when shown
            if signal["stop_loss"] is not None or signal["take_profit"] is not None:
                self._signal_levels[signal["symbol"]].append({
                    "ts_ms": signal["ts_ns"] // NS_PER_MS, "model_id": signal["model_id"],
                    "stop_loss": _number(signal["stop_loss"]),
                    "take_profit": _number(signal["take_profit"]), "source": "signal"})

    def _read_orders(self, db, after: int, head: int) -> None:
        """The newest row of each client order: unsettled ones in ``_pending``, the rest in
        ``_settled`` (the newest ``FINAL_ORDERS_KEPT``). A protective leg that comes to
        rest at the venue is a stop level on the chart."""
        for row in self._select(db, "orders", "*", after, head):
            order = order_view(dict(zip(_ORDER_COLUMNS, row, strict=True)))
            cid = order["client_order_id"]
            before = self._pending.pop(cid, None)
            self._settled.pop(cid, None)
            if order["status"] in UNSETTLED:
                self._pending[cid] = order
            else:
                self._settled[cid] = order
                while len(self._settled) > FINAL_ORDERS_KEPT:
                    self._settled.popitem(last=False)
            if order["kind"] != "market" and order["status"] == "open" \
                    and (before is None or before["status"] != "open"):
                self._order_levels[order["symbol"]].append({
                    "ts_ms": order["ts_ms"], "model_id": order["model_id"],
                    "stop_loss": order["price"] if order["kind"] == "stop_loss" else None,
                    "take_profit": order["price"] if order["kind"] == "take_profit" else None,
                    "source": "order"})

    def _read_fills(self, db, after: int, head: int) -> None:
        for row in self._select(db, "fills", "*", after, head):
            fill = fill_view(dict(zip(_FILL_COLUMNS, row, strict=True)))
            self._fills.append(fill)
            self._markers[fill["symbol"]].append(fill)

    def _read_risk_events(self, db, after: int, head: int) -> None:
        for row in self._select(db, "risk_events", "*", after, head):
            self._logs.append(risk_log(dict(zip(_RISK_COLUMNS, row, strict=True))))

    def _read_operator_actions(self, db, after: int, head: int) -> None:
        for row in self._select(db, "operator_actions", "*", after, head):
            entry = operator_log(dict(zip(_OPERATOR_COLUMNS, row, strict=True)))
            self._logs.append(entry)
            if entry["kind"] in CONTROLS:
                self._controls[entry["scope"]] = (entry["seq"], entry["kind"])

    def _read_config_snapshots(self, db, after: int, head: int) -> None:
        for row in self._select(db, "config_snapshots", "*", after, head):
            names = _CONFIG_COLUMNS if len(row) == len(_CONFIG_COLUMNS) else _CONFIG_COLUMNS_1
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
            last_bar = self._last_bar_ns
            if last_bar is None:
                bars = [int(s[0]["last_bar_ts_ns"]) for s in self._states.values()]
                last_bar = max((b for b in bars if b >= 0), default=None)
            return {
                "mode": self.config.mode, "environment": self.config.environment,
                "journal": str(self.path), "journal_id": self._journal_id,
                "head_seq": self._head,
                "kill_switch": None if request is None else {
                    "user": request.get("user"), "reason": request.get("reason"),
                    "ts_ms": _ms(request.get("ts_ns"))},
                "markets": [m.name for m in self.config.markets],
                "models": [m.id for m in self.config.models],
                "sleeves": len(self._sleeves),
                "last_bar_ts_ms": _ms(last_bar), "problem": self.problem}

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
            key = (self._curves.version, self._head, self._last_bar_ns)
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
        newest = self._last_bar_ns if self._last_bar_ns is not None else int(times[-1])
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
                entry = _number(record["avg_price"]) if record["avg_price"] > 0 else None
                mark = _number(record["last_close"])
                stop, take = _number(record["stop_price"]), _number(record["take_profit_price"])
                if stop is None and take is None:
                    stop, take = self._resting_orders(sleeve)
                result.append({
                    "sleeve": sleeve.id, "model_id": sleeve.model_id, "market": sleeve.market,
                    "symbol": sleeve.symbol, "qty": qty, "side": "long" if qty > 0 else "short",
                    "entry_price": entry, "mark": mark,
                    "unrealised_pnl": None if entry is None or mark is None
                    else _number(qty * (mark - entry)),
                    "equity": _number(record["equity"]), "stop_loss": stop, "take_profit": take,
                    "trading_state": self._state_label(sleeve, record),
                    "last_bar_ts_ms": _ms(int(record["last_bar_ts_ns"]))})
            return result

    def _resting_orders(self, sleeve) -> tuple[float | None, float | None]:
        levels = {"stop_loss": None, "take_profit": None}
        for order in sorted(self._pending.values(), key=lambda o: o["seq"]):
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
            pending = sorted(self._pending.values(), key=lambda o: o["seq"], reverse=True)
            recent = list(self._settled.values())[::-1][:max(0, int(limit))]
            return {"pending": [dict(o) for o in pending], "recent": [dict(o) for o in recent]}

    def fills(self, limit: int = 500) -> list[dict]:
        """The ``limit`` newest fills (at most ``FILLS_KEPT``), newest first, as
        :func:`fill_view`."""
        with self._lock:
            newest = list(self._fills)[::-1][:max(0, int(limit))]
            return [dict(fill) for fill in newest]

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
                        "equity": None if record is None else _number(record["equity"]),
                        "last_bar_ts_ms": None if record is None
                        else _ms(int(record["last_bar_ts_ns"]))})
                signals = [signal_view(_Row(row, _SIGNAL_COLUMNS))
                           for row in reversed(self._signals.get(model.id, ()))]
                result.append({
                    "id": model.id, "strategy": model.strategy, "market": model.market,
                    "symbols": list(model.symbols), "params": _plain(model.params),
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
            entries.append(_log(None, int(failures.stat().st_mtime_ns), "runner",
                                "CRITICAL" if count >= FAILURES_TO_HALT else "WARNING",
                                "tick_failures", "runner",
                                f"{count} tick(s) in a row failed (the {FAILURES_TO_HALT}th "
                                f"kills trading); last: {data.get('last_error')}", None))
        request = killswitch.read_request(self.path)
        if request is not None:
            orders = len(request.get("orders") or [])
            entries.append(_log(None, request.get("ts_ns"), "runner", "CRITICAL",
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
                    for fill in self._markers.get(symbol, ())]

    def stop_levels(self, symbol: str) -> list[dict]:
        """Where the resting stop-loss and take-profit levels of ``symbol``'s sleeves were
        set, moved or lifted, oldest first: ``{"ts_ms", "model_id", "stop_loss",
        "take_profit", "source"}``. Source ``state``: the kernel's resting levels (a point
        each time one changes; None once lifted: draw them as steps); ``order``: a
        protective order coming to rest at the venue (operator mode); ``signal``: the
        levels a decision asked for."""
        with self._lock:
            found = [point for sleeve in self._sleeves if sleeve.symbol == symbol
                     for point in self._state_levels.get(sleeve.id, ())]
            found += self._order_levels.get(symbol, ())
            found += self._signal_levels.get(symbol, ())
            return [dict(point) for point in sorted(found, key=lambda p: p["ts_ms"])]

    def latest_states(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Copies of each sleeve's newest state (sleeve id -> 1-element ``STATE_DTYPE``
        array, as the runner's ``states``) and of each scope's newest book (``"global"`` or
        ``"market:<name>"`` -> 1-element ``BOOK_DTYPE`` array), for the risk view."""
        with self._lock:
            return ({sid: state.copy() for sid, state in self._states.items()},
                    {scope: book.copy() for scope, book in self._books.items()})

    def close(self) -> None:
        with self._lock:
            self._disconnect()


# -- rows as answers ---------------------------------------------------------------------
_SIGNAL_COLUMNS = ("seq", "ts_ns", "model_id", "symbol", "action", "qty", "limit_price",
                   "stop_loss", "take_profit", "time_in_force", "confidence", "meta",
                   "prev_hash", "hash")
_ORDER_COLUMNS = ("seq", "ts_ns", "model_id", "symbol", "client_order_id", "broker_status",
                  "order_id", "decision_ts_ns", "bar", "order_ts_ns", "target_exposure",
                  "requested_qty", "filled_qty", "price", "status", "reason", "prev_hash",
                  "hash")
_FILL_COLUMNS = ("seq", "ts_ns", "model_id", "symbol", "client_order_id", "order_id", "bar",
                 "fill_ts_ns", "side", "qty", "price", "fee", "slippage", "reason",
                 "position_after", "cash_after", "realized_pnl", "prev_hash", "hash")
_RISK_COLUMNS = ("seq", "ts_ns", "level", "scope", "kind", "message", "data", "prev_hash",
                 "hash")
_OPERATOR_COLUMNS = ("seq", "ts_ns", "action", "target", "user", "reason", "prev_hash", "hash")
_CONFIG_COLUMNS = ("seq", "ts_ns", "format", "text", "user", "prev_hash", "hash")
_CONFIG_COLUMNS_1 = ("seq", "ts_ns", "format", "text", "prev_hash", "hash")  # layout 1


class _Row:
    """A row tuple read by column name (cheaper than a dict for rows mostly not shown)."""

    __slots__ = ("_row", "_names")

    def __init__(self, row, names):
        self._row, self._names = row, names

    def __getitem__(self, name):
        return self._row[self._names.index(name)]


def _number(value) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _ms(ts_ns) -> int | None:
    if ts_ns is None or int(ts_ns) < 0:
        return None
    return int(ts_ns) // NS_PER_MS


def _plain(value):
    """A JSON-ready copy (numpy scalars as Python numbers, NaN as None)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _reason(code) -> str | None:
    try:
        return FillReason(int(code)).name.lower()
    except (TypeError, ValueError):
        return None


def _event_time(row: dict, column: str) -> int:
    """A record's own time (when it filled, its bar) where it has one, else the row's:
    a paper replay journals its rows at the wall clock but its fills at their bars."""
    value = row.get(column)
    return value if value is not None and value > 0 else row["ts_ns"]


def fill_view(row: dict) -> dict:
    """A ``fills`` row as the dashboard shows it: ``{"seq", "ts_ms" (the fill's time),
    "model_id", "symbol", "client_order_id", "order_id", "side" ("buy"/"sell"), "qty",
    "price", "fee", "slippage", "reason" (signal, stop_loss, take_profit, risk),
    "position_after", "realized_pnl"}``."""
    return {"seq": row["seq"], "ts_ms": _event_time(row, "fill_ts_ns") // NS_PER_MS,
            "model_id": row["model_id"], "symbol": row["symbol"],
            "client_order_id": row["client_order_id"], "order_id": row["order_id"],
            "side": "buy" if (row["side"] or 0) > 0 else "sell", "qty": _number(row["qty"]),
            "price": _number(row["price"]), "fee": _number(row["fee"]),
            "slippage": _number(row["slippage"]), "reason": _reason(row["reason"]),
            "position_after": _number(row["position_after"]),
            "realized_pnl": _number(row["realized_pnl"])}


def order_view(row: dict) -> dict:
    """An ``orders`` row: ``{"seq", "ts_ms" (the record's time, else the row's),
    "decision_ts_ms", "model_id", "symbol", "client_order_id", "status" (the journal's
    broker status), "kind" ("market", or "stop_loss"/"take_profit" for a protective leg),
    "side", "qty", "filled_qty", "price", "target_exposure", "order_id", "reason"}``."""
    requested = row["requested_qty"] or 0.0
    order_id = row["order_id"]
    kind = _PROTECTIVE.get(row["reason"], "market") if order_id is not None and order_id < 0 \
        else "market"
    return {"seq": row["seq"], "ts_ms": _event_time(row, "order_ts_ns") // NS_PER_MS,
            "decision_ts_ms": _ms(row["decision_ts_ns"]) if row["decision_ts_ns"] else None,
            "model_id": row["model_id"], "symbol": row["symbol"],
            "client_order_id": row["client_order_id"], "status": row["broker_status"],
            "kind": kind, "side": "buy" if requested > 0 else "sell" if requested < 0 else None,
            "qty": abs(float(requested)), "filled_qty": abs(_number(row["filled_qty"]) or 0.0),
            "price": _number(row["price"]), "target_exposure": _number(row["target_exposure"]),
            "order_id": order_id, "reason": _reason(row["reason"])}


def signal_view(row) -> dict:
    """A ``signals`` row with its ``meta`` parsed (the gate-by-gate reasons, when the
    runner journals them, are there: ``meta.gates``, ``meta.decision``, ``meta.reason``)."""
    try:
        meta = json.loads(row["meta"]) if row["meta"] else None
    except ValueError:
        meta = {"unreadable": row["meta"]}
    return {"seq": row["seq"], "ts_ms": row["ts_ns"] // NS_PER_MS, "model_id": row["model_id"],
            "symbol": row["symbol"], "action": row["action"], "qty": _number(row["qty"]),
            "limit_price": _number(row["limit_price"]), "stop_loss": _number(row["stop_loss"]),
            "take_profit": _number(row["take_profit"]), "time_in_force": row["time_in_force"],
            "confidence": _number(row["confidence"]), "meta": _plain(meta)}


def _log(seq, ts_ns, source, level, kind, scope, message, user) -> dict:
    return {"seq": seq, "ts_ms": _ms(ts_ns), "source": source,
            "level": level if level in LEVELS else "INFO", "kind": kind or "", "scope": scope,
            "message": message or "", "user": user}


def risk_log(row: dict) -> dict:
    return _log(row["seq"], row["ts_ns"], "risk", row["level"], row["kind"], row["scope"],
                row["message"], None)


def operator_log(row: dict) -> dict:
    action = row["action"]
    level = "CRITICAL" if action == "kill" else "WARNING" if action in (
        "pause", "close", "login_failed", "manual_order") else "INFO"
    reason = f": {row['reason']}" if row["reason"] else ""
    return _log(row["seq"], row["ts_ns"], "operator", level, action, row["target"],
                f"{action} {row['target']} by {row['user']}{reason}", row["user"])


def config_log(row: dict) -> dict:
    user = row.get("user")
    return _log(row["seq"], row["ts_ns"], "config", "INFO", "config_snapshot", "config",
                f"configuration in force ({row['format']}, {len(row['text'] or '')} characters)"
                + (f", by {user}" if user else ""), user)


def event_of(table: str, row: dict, configured: dict) -> dict:
    """One journal row as an event of the live feed: ``{"seq", "table", "ts_ms",
    "summary": one line}`` and the row's key fields — fills: those of :func:`fill_view`;
    orders: of :func:`order_view`; signals: model_id, symbol, action, qty, stop_loss,
    take_profit, confidence; risk events and operator actions: those of the log entry
    (level, kind, scope, user; ``action`` for an operator action); ticks: symbol,
    timeframe, close; sleeve states: sleeve, model_id, symbol, position, equity,
    trading_state (a scope's book: sleeve only)."""
    base = {"seq": row["seq"], "table": table, "ts_ms": row["ts_ns"] // NS_PER_MS}
    if table == "fills":
        fill = fill_view(row)
        return {**base, **fill, "summary": f"fill {fill['model_id']} {fill['symbol']}: "
                f"{fill['side']} {fill['qty']:.6g} @ {fill['price']:.8g} ({fill['reason']})"}
    if table == "orders":
        order = order_view(row)
        return {**base, **order, "summary": f"order {order['model_id']} {order['symbol']}: "
                f"{order['side'] or '-'} {order['qty']:.6g} {order['kind']} {order['status']}"}
    if table == "signals":
        signal = signal_view(row)
        levels = "".join(f" {name} {signal[name]:.8g}" for name in ("stop_loss", "take_profit")
                         if signal[name] is not None)
        return {**base, **{k: signal[k] for k in ("model_id", "symbol", "action", "qty",
                                                  "stop_loss", "take_profit", "confidence")},
                "summary": f"signal {signal['model_id']} {signal['symbol']}: "
                           f"{signal['action']} {signal['qty']:.6g}{levels}"}
    if table in ("risk_events", "operator_actions", "config_snapshots"):
        entry = {"risk_events": risk_log, "operator_actions": operator_log,
                 "config_snapshots": config_log}[table](row)
        extra = {"action": entry["kind"]} if table == "operator_actions" else {}
        return {**base, **{k: entry[k] for k in ("level", "kind", "scope", "user")}, **extra,
                "summary": f"{entry['source']} {entry['level']} {entry['kind']}: "
                           f"{entry['message']}"}
    if table == "ticks":
        return {**base, "ts_ms": row["bar_ts_ns"] // NS_PER_MS, "symbol": row["symbol"],
                "timeframe": row["timeframe"], "close": _number(row["close"]),
                "summary": f"bar {row['symbol']} {row['timeframe']} close {row['close']:.8g}"}
    if table == "sleeve_states":
        return {**base, **_state_event(row, configured)}
    return {**base, "summary": table}


def _state_event(row: dict, configured: dict) -> dict:
    sleeve_id = row["sleeve_id"]
    sleeve = configured.get(sleeve_id)
    if sleeve is None or row["dtype"] != _STATE_TEXT or len(row["state"]) != STATE_DTYPE.itemsize:
        return {"sleeve": sleeve_id, "summary": f"state {sleeve_id}"}
    record = np.frombuffer(row["state"], dtype=STATE_DTYPE)[0]
    state = TradingState(int(record["trading_state"])).name
    return {"sleeve": sleeve_id, "model_id": sleeve.model_id, "symbol": sleeve.symbol,
            "position": float(record["position"]), "equity": _number(record["equity"]),
            "trading_state": state,
            "summary": f"state {sleeve_id}: equity {float(record['equity']):.2f}, position "
                       f"{float(record['position']):.6g}, {state}"}
