"""The numba portfolio backtest equals the runner's per-tick path, limits tripping.

Three references for :func:`mmats.live.replay.portfolio_backtest` (one numba loop over
every close, :func:`mmats.nb.portfolio.run_portfolio`):

- the Python stepping this module keeps as its oracle: the limit arithmetic as it was
  written in Python before it moved to numba (``_python_limits``, ``_python_blocking``),
  stepping the kernel's ``on_bar`` / ``on_signal`` close by close in the runner's order;
- the runner's own close (``Book.close``, as the tick calls it, journal's account of
  each decision included), stepped from Python one close at a time;
- the journaled replay (one tick per close, state through the journal).

On configurations where the daily loss, the drawdown, the full book and the leverage cap
all act, across two markets and two timeframes: equal fills, equity, states and risk
events, bit for bit.
"""

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from mmats.backtest import market as to_market
from mmats.data import load
from mmats.live.closes import by_close, sleeve_bar, value_at
from mmats.live.config import parse_config
from mmats.live.journal import Journal
from mmats.live.journal_layout import journal_records
from mmats.live.portfolio import apply_limits, blocking_limit, new_book, scopes
from mmats.live.replay import _portfolio_by_closes, portfolio_backtest, replay
from mmats.live.sleeves import sleeves
from mmats.nb.risk import halt
from mmats.nb.sim import on_bar, on_signal
from mmats.sleeve import new_state
from mmats.types import FILL_DTYPE, ORDER_DTYPE, TRADE_DTYPE, TradingState
from mmats.units import DAY_NS

ACTIVE, REDUCING = int(TradingState.ACTIVE), int(TradingState.REDUCING)


def config(global_risk=None, crypto_risk=None, forex_risk=None):
    return parse_config({
        "mode": "paper",
        "risk": global_risk or {},
        "markets": {
            "crypto": {"type": "crypto", "feed": "bittrex", "execution": "paper",
                       "symbols": ["ETH/BTC", "LTC/BTC"], "timeframe": "5m",
                       "risk": crypto_risk or {}},
            "forex": {"type": "forex", "feed": "fx", "execution": "paper",
                      "symbols": ["EUR/USD"], "timeframe": "1h", "risk": forex_risk or {}},
        },
        "models": [
            {"id": "ema", "strategy": "ema_cross", "market": "crypto", "allocation": 0.5,
             "params": {"fast": 5, "slow": 20}, "costs": {"fee_bps": 10}},
            {"id": "donchian", "strategy": "donchian_breakout", "market": "crypto",
             "allocation": 0.5, "params": {"channel": 10}, "costs": {"fee_bps": 10}},
            {"id": "rsi", "strategy": "rsi_reversion", "market": "forex",
             "params": {"period": 7, "lower": 35, "upper": 65, "short": 1},
             "costs": {"fee_bps": 1}},
        ],
    })


#: Each limit acts in at least one of these (the oracle's tallies prove it below).
TRIPPING = {
    "book_and_leverage": config({"max_open_positions": 2, "max_leverage": 0.6},
                                {"max_daily_loss": "0.2%"}),
    "drawdown_of_a_market": config({"max_daily_loss": "0.5%"}, {"max_open_positions": 1},
                                   {"max_drawdown": "0.2%"}),
    "global_drawdown": config({"max_drawdown": "1%", "max_leverage": 1.0},
                              {"max_daily_loss": "0.3%"}),
}


@pytest.fixture(scope="module")
def candles():
    eth = load("bittrex:ETH/BTC:5m").iloc[:1500].reset_index(drop=True)
    ltc = load("bittrex:LTC/BTC:5m").iloc[:1500].reset_index(drop=True)
    fx = load("fx:EUR_USD:1h")
    start, end = eth.ts.iloc[0] - pd.Timedelta("10D"), eth.ts.iloc[-1]
    fx = fx[(fx.ts >= start) & (fx.ts <= end)].reset_index(drop=True)
    return {"ETH/BTC": eth, "LTC/BTC": ltc, "EUR/USD": fx}


# --- the oracle: the limits as they were written in Python -----------------------------

def _equity(scope, states):
    return float(sum(states[i][0]["equity"] for i in scope.sleeve_ids))


def _python_limits(scope, states, ts_ns):
    book, limits = scope.book[0], scope.limits
    equity = _equity(scope, states)
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
    if book["halted"]:
        return events
    if limits.max_daily_loss_pct and book["day_start_equity"] > 0:
        loss = 100.0 * (book["day_start_equity"] - equity) / book["day_start_equity"]
        if loss >= limits.max_daily_loss_pct:
            for sleeve_id in scope.sleeve_ids:
                if states[sleeve_id][0]["trading_state"] == ACTIVE:
                    states[sleeve_id][0]["trading_state"] = REDUCING
            if book["loss_tripped_day"] != day:
                book["loss_tripped_day"] = day
                events.append(("max_daily_loss", f"{scope.name} daily loss {loss:.2f} % >= "
                               f"{limits.max_daily_loss_pct} %: no new exposure today",
                               {"equity": equity,
                                "day_start": float(book["day_start_equity"])}))
    return events


def _python_blocking(scopes_of_sleeve, sleeve_id, states):
    holding = states[sleeve_id][0]["position"] != 0.0
    for scope in scopes_of_sleeve:
        limits = scope.limits
        if limits.max_open_positions and not holding:
            count = sum(1 for i in scope.sleeve_ids if states[i][0]["position"] != 0.0 or (
                not np.isnan(states[i][0]["target"]) and states[i][0]["target"] != 0.0))
            if count >= limits.max_open_positions:
                return scope.name, "max_open_positions"
        if limits.max_leverage:
            equity = _equity(scope, states)
            gross = float(sum(abs(states[i][0]["position"] * states[i][0]["last_close"])
                              for i in scope.sleeve_ids if states[i][0]["position"] != 0.0))
            if equity <= 0 or gross >= limits.max_leverage * equity:
                return scope.name, "max_leverage"
    return None


def python_portfolio(config, candles, cash=10_000.0, *, check_entry_points=False):
    """``(fills, equity, states, events, tallies)`` of the Python stepping; ``tallies``
    counts the decisions each ``(scope, limit)`` vetoed. ``check_entry_points``: at every
    close and decision, the live Python entry points (:func:`apply_limits` on copies,
    :func:`blocking_limit`) must answer as the oracle."""
    all_sleeves = sleeves(config, cash)
    states = {s.id: new_state(s.cash) for s in all_sleeves}
    found = scopes(config, all_sleeves)
    for scope in found:
        scope.book = new_book(_equity(scope, states))
    scopes_of = {s.id: [b for b in found if s.id in b.sleeve_ids] for s in all_sleeves}
    records = (*np.zeros(2, FILL_DTYPE), np.zeros(1, ORDER_DTYPE)[0], *np.zeros(2, TRADE_DTYPE))
    outputs, bars = {}, []
    for order, sleeve in enumerate(all_sleeves):
        p = to_market(candles[sleeve.symbol], timeframe=sleeve.timeframe)
        outputs[sleeve.id] = sleeve.strategy.run(p.arrays, sleeve.params)
        bars += [sleeve_bar(order, sleeve, int(p.ts_ns[t]),
                            (p.open[t], p.high[t], p.low[t], p.close[t], p.volume[t]), t)
                 for t in range(len(p))]
    fills = {s.id: [] for s in all_sleeves}
    equity = {s.id: [] for s in all_sleeves}
    events, tallies = [], {}
    for group in by_close(bars):
        for bar in group:
            record = states[bar.sleeve.id][0]
            made, _, _ = on_bar(record, bar.sleeve.cfg[0], record["bars"], bar.open_ns,
                                bar.open_ns // DAY_NS, *bar.prices, *records)
            fills[bar.sleeve.id] += [records[i].copy() for i in range(made)]
        close_ns = group[0].open_ns
        for scope in found:
            if check_entry_points:
                copies = {i: states[i].copy() for i in scope.sleeve_ids}
                twin = replace(scope, book=scope.book.copy())
                theirs = apply_limits(twin, copies, close_ns)
            mine = _python_limits(scope, states, close_ns)
            events += [(scope.name, close_ns, *event) for event in mine]
            if check_entry_points:
                assert theirs == mine
                assert twin.book.tobytes() == scope.book.tobytes()
                assert all(copies[i].tobytes() == states[i].tobytes() for i in copies)
        for bar in group:
            record, cfg = states[bar.sleeve.id][0], bar.sleeve.cfg[0]
            blocking = _python_blocking(scopes_of[bar.sleeve.id], bar.sleeve.id, states)
            if check_entry_points:
                theirs = blocking_limit(scopes_of[bar.sleeve.id], bar.sleeve.id, states)
                assert (theirs[:2] if theirs else None) == blocking
            value, stop, take = value_at(outputs[bar.sleeve.id], bar.index)
            if blocking is None or record["trading_state"] != ACTIVE:
                on_signal(record, cfg, bar.open_ns, value, stop, take)
            else:
                tallies[blocking] = tallies.get(blocking, 0) + 1
                record["trading_state"] = REDUCING
                on_signal(record, cfg, bar.open_ns, value, stop, take)
                record["trading_state"] = ACTIVE
            equity[bar.sleeve.id].append(float(record["equity"]))
    fills = {sid: np.array(rows, dtype=FILL_DTYPE) for sid, rows in fills.items()}
    return fills, equity, states, events, tallies


def assert_same(result, fills, equity, states, events):
    """Bit for bit: fills, equity at every bar, final states, risk events."""
    assert set(result.states) == set(states)
    for sleeve_id, state in states.items():
        assert result.fills[sleeve_id].tobytes() == fills[sleeve_id].tobytes(), sleeve_id
        np.testing.assert_array_equal(result.equity[sleeve_id].dropna().to_numpy(),
                                      np.asarray(equity[sleeve_id]), err_msg=sleeve_id)
        assert result.states[sleeve_id].tobytes() == state.tobytes(), sleeve_id
    assert result.risk_events == events


# --- the tests ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(TRIPPING))
def test_numba_loop_equals_the_python_stepping(candles, name):
    fills, equity, states, events, _ = python_portfolio(TRIPPING[name], candles)
    assert_same(portfolio_backtest(TRIPPING[name], candles), fills, equity, states, events)


def test_every_limit_acts_in_the_configurations(candles):
    """The comparisons above mean something: each limit vetoes or trips somewhere."""
    acted = set()
    for cfg in TRIPPING.values():
        _, _, _, events, tallies = python_portfolio(cfg, candles)
        acted |= {(scope, kind) for scope, _, kind, _, _ in events}
        acted |= set(tallies)
    assert {("global", "max_open_positions"), ("global", "max_leverage"),
            ("market:crypto", "max_open_positions"), ("market:crypto", "max_daily_loss"),
            ("global", "max_daily_loss"), ("market:forex", "max_drawdown"),
            ("global", "max_drawdown")} <= acted


@pytest.mark.parametrize("name", sorted(TRIPPING))
def test_numba_loop_equals_the_runners_close(candles, name):
    """``Book.close`` stepped one close at a time, as the tick steps it."""
    expected = _portfolio_by_closes(TRIPPING[name], candles)
    result = portfolio_backtest(TRIPPING[name], candles)
    equity = {sid: expected.equity[sid].dropna().to_numpy() for sid in expected.states}
    assert_same(result, expected.fills, equity, expected.states, expected.risk_events)
    pd.testing.assert_frame_equal(result.equity, expected.equity)


def test_numba_loop_equals_the_journaled_replay(candles, tmp_path):
    """Two markets, two timeframes, a full book, the leverage cap and a market's daily
    loss acting: the journal holds the same fills, equity, states and risk events."""
    cfg = TRIPPING["book_and_leverage"]
    short = {"ETH/BTC": candles["ETH/BTC"].iloc[:400], "LTC/BTC": candles["LTC/BTC"].iloc[:400]}
    end = short["ETH/BTC"].ts.iloc[-1]
    short["EUR/USD"] = candles["EUR/USD"][candles["EUR/USD"].ts <= end]
    expected = portfolio_backtest(cfg, short)
    assert {kind for _, _, kind, _, _ in expected.risk_events} == {"max_daily_loss"}
    assert sum(len(f) for f in expected.fills.values()) > 20
    replayed = replay(cfg, short, tmp_path / "journal.sqlite")
    for sleeve_id, state in expected.states.items():
        assert replayed.states[sleeve_id].tobytes() == state.tobytes(), sleeve_id
        np.testing.assert_array_equal(replayed.equity[sleeve_id].dropna().to_numpy(),
                                      expected.equity[sleeve_id].dropna().to_numpy())
    with Journal(tmp_path / "journal.sqlite") as journal:
        rows = journal.rows("risk_events", "scope != ?", ("sleeve",))
        journaled = [(r["scope"], r["ts_ns"], r["kind"], r["message"], json.loads(r["data"]))
                     for r in rows if r["kind"] in ("max_daily_loss", "max_drawdown")]
        for sleeve in sleeves(cfg, 10_000.0):
            fills = journal_records(journal.rows("fills", "model_id = ? AND symbol = ?",
                                                 (sleeve.model_id, sleeve.symbol)),
                                    FILL_DTYPE, "fill")
            mine = expected.fills[sleeve.id]
            assert len(fills) == len(mine), sleeve.id
            for name in FILL_DTYPE.names:
                np.testing.assert_array_equal(fills[name], mine[name], err_msg=name)
    assert journaled == expected.risk_events


def test_python_entry_points_are_the_kernels_arithmetic(candles):
    """``apply_limits`` and ``blocking_limit`` (manual orders, the console) answer at every
    close and decision as the Python oracle, which the numba loop equals."""
    short = {symbol: frame.iloc[:600] for symbol, frame in candles.items()}
    for name in ("book_and_leverage", "drawdown_of_a_market"):
        _, _, _, events, tallies = python_portfolio(TRIPPING[name], short,
                                                    check_entry_points=True)
        assert events and tallies, name
