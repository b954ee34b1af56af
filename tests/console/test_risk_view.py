"""The Risk view's usage of every limit (mmats.console.risk_view), against a paper replay
of the multi-market example and against hand-built states at the exact thresholds; its
numbers are checked against what the runner's own limit functions do with the same
states."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest

from mmats.console.risk_view import WARN_AT, risk_usage, status_of
from mmats.data import load
from mmats.live.closes import book_id
from mmats.live.config import load_config, parse_config
from mmats.live.journal import Journal
from mmats.live.portfolio import (
    BOOK_DTYPE,
    apply_limits,
    blocks_new_exposure,
    new_book,
    scope_usage,
    scopes,
)
from mmats.live.sleeves import sleeves
from mmats.sleeve import new_state
from mmats.types import TradingState
from mmats.units import DAY_NS

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "mmats" / "data" / "sample"
DAY = 19_700  # a UTC day number for hand-built books
SYMBOLS = [f"S{i}/USD" for i in range(10)]


# --- a paper replay of configs/paper_multi_market.yaml ----------------------------------

@pytest.fixture(scope="module")
def replayed(tmp_path_factory):
    """The example configuration copied beside a journal, with the bundled sample candles
    as its store, replayed for 250 bars of each market; its journaled states and books."""
    from mmats.live.replay import replay

    folder = tmp_path_factory.mktemp("risk")
    text = (REPO / "configs" / "paper_multi_market.yaml").read_text()
    lines = []
    for line in text.splitlines():
        if line.startswith("journal:"):
            line = "journal: journal/paper.sqlite"
        elif line.startswith("data_root:"):
            line = f"data_root: {SAMPLE}"
        lines.append(line)
    (folder / "journal").mkdir()
    (folder / "paper.yaml").write_text("\n".join(lines) + "\n")
    config = load_config(folder / "paper.yaml")
    candles = {symbol: load(f"{market.feed}:{symbol}:{market.timeframe}",
                            root=config.data_root).iloc[:250]
               for market in config.markets for symbol in market.symbols}
    replay(config, candles, config.journal)
    all_sleeves = sleeves(config, 1.0)
    with Journal(config.journal) as journal:
        states = {s.id: journal.load_state(s.id) for s in all_sleeves}
        books = {book_id(scope): journal.load_state(book_id(scope), BOOK_DTYPE)
                 for scope in scopes(config, all_sleeves)}
    assert all(v is not None for v in [*states.values(), *books.values()])
    return config, states, books


def by_scope(usage) -> dict:
    return {level["scope"]: level for level in usage["levels"]}


def limit_of(level, name) -> dict:
    return next(item for item in level["limits"] if item["name"] == name)


def test_every_level_of_the_replay_in_hierarchy_order(replayed):
    config, states, books = replayed
    usage = risk_usage(config, states, books)
    json.dumps(usage, allow_nan=False)  # what the app sends: no NaN, no inf
    assert [(lv["level"], lv["scope"], lv["parent"]) for lv in usage["levels"]] == [
        ("global", "global", None),
        ("market", "market:crypto", "global"),
        ("strategy", "model:crypto_ema_cross", "market:crypto"),
        ("order", "sleeve:crypto_ema_cross:ETH/BTC", "model:crypto_ema_cross"),
        ("strategy", "model:crypto_donchian", "market:crypto"),
        ("order", "sleeve:crypto_donchian:ETH/BTC", "model:crypto_donchian"),
        ("market", "market:forex", "global"),
        ("strategy", "model:forex_rsi", "market:forex"),
        ("order", "sleeve:forex_rsi:EUR/USD", "model:forex_rsi"),
        ("market", "market:stocks", "global"),
        ("strategy", "model:stocks_ema_cross", "market:stocks"),
        ("order", "sleeve:stocks_ema_cross:GOOG", "model:stocks_ema_cross"),
    ]
    levels = by_scope(usage)
    assert [item["name"] for item in levels["global"]["limits"]] == [
        "daily_loss", "drawdown", "gross_leverage", "open_positions"]
    assert [item["name"] for item in levels["model:forex_rsi"]["limits"]] == [
        "daily_loss", "drawdown", "leverage"]
    assert [item["name"] for item in levels["sleeve:forex_rsi:EUR/USD"]["limits"]] == [
        "order_notional", "target_exposure"]
    for level in usage["levels"]:
        assert level["note"] is None and level["state"] in ("ACTIVE", "REDUCING", "HALTED")
        for item in level["limits"]:
            assert item["status"] in ("ok", "warn", "breach", "none")
            assert item["used"] is not None
    # the configured limits, with their units
    assert limit_of(levels["global"], "drawdown")["limit"] == 25.0
    assert limit_of(levels["market:crypto"], "daily_loss")["limit"] == 4.0
    assert limit_of(levels["market:crypto"], "drawdown") | {"used": None} == {
        "name": "drawdown", "used": None, "limit": None, "unit": "%", "ratio": None,
        "status": "none"}
    assert limit_of(levels["model:crypto_ema_cross"], "drawdown")["limit"] == 15.0
    assert limit_of(levels["model:forex_rsi"], "leverage")["limit"] == 2.0
    forex_order = limit_of(levels["sleeve:forex_rsi:EUR/USD"], "order_notional")
    assert (forex_order["limit"], forex_order["unit"]) == (10_000.0, "USD")
    assert limit_of(levels["sleeve:crypto_ema_cross:ETH/BTC"], "order_notional")["unit"] == "BTC"
    assert limit_of(levels["market:stocks"], "open_positions")["unit"] == "positions"


def test_replay_numbers_are_the_runners_own(replayed):
    """Each scope's figures are those apply_limits and blocks_new_exposure compute from
    the same states and book, and a breach is where they act."""
    config, states, books = replayed
    levels = by_scope(risk_usage(config, states, books))
    all_sleeves = sleeves(config, 1.0)
    for scope in scopes(config, all_sleeves):
        level = levels[scope.name]
        book = books[book_id(scope)][0]
        equity = sum(float(states[i][0]["equity"]) for i in scope.sleeve_ids)
        assert level["equity"] == pytest.approx(equity, rel=1e-12)
        gross = sum(abs(states[i][0]["position"] * states[i][0]["last_close"])
                    for i in scope.sleeve_ids)
        assert limit_of(level, "gross_leverage")["used"] == pytest.approx(gross / equity)
        peak = max(float(book["equity_peak"]), equity)
        assert limit_of(level, "drawdown")["used"] == pytest.approx(
            100 * (peak - equity) / peak)
        loss = 100 * (book["day_start_equity"] - equity) / book["day_start_equity"]
        assert limit_of(level, "daily_loss")["used"] == pytest.approx(max(loss, 0.0))
        held = sum(1 for i in scope.sleeve_ids if states[i][0]["position"] != 0
                   or (not math.isnan(states[i][0]["target"]) and states[i][0]["target"]))
        assert limit_of(level, "open_positions")["used"] == held
        # the runner's own functions, on copies, at a close of the book's day
        scope.book = books[book_id(scope)].copy()
        mine = {i: states[i].copy() for i in scope.sleeve_ids}
        events = {kind for kind, *_ in apply_limits(scope, mine, int(book["day"]) * DAY_NS)}
        for name, kind in (("daily_loss", "max_daily_loss"), ("drawdown", "max_drawdown")):
            if limit_of(level, name)["status"] != "breach":
                assert kind not in events, (scope.name, name)
        assert scope.book["equity_peak"][0] == pytest.approx(peak)
        probe = new_state(1.0)
        probe[0]["equity"] = 0.0  # weighs nothing in the scope's equity
        flat = {**mine, "probe": probe}
        scope.sleeve_ids.append("probe")  # a flat sleeve asking for its first position
        blocked = blocks_new_exposure([scope], "probe", flat)
        scope.sleeve_ids.remove("probe")
        vetoes = [limit_of(level, name)["status"] == "breach"
                  for name in ("gross_leverage", "open_positions")]
        assert blocked == any(vetoes), scope.name


def test_no_data_yet_without_states_or_books(replayed):
    config, states, books = replayed
    usage = risk_usage(config, {}, {})
    for level in usage["levels"]:
        assert level["note"] == "no data yet" and level["state"] is None
        for item in level["limits"]:
            assert item["used"] is None and item["ratio"] is None
            assert item["status"] == "no_data"
    # states journaled but no book yet (a first tick in progress): the book's limits wait
    levels = by_scope(risk_usage(config, states, {}))
    assert "no data yet" in levels["global"]["note"]
    assert limit_of(levels["global"], "drawdown")["status"] == "no_data"
    assert limit_of(levels["global"], "gross_leverage")["used"] is not None
    assert levels["model:forex_rsi"]["note"] is None
    # one sleeve missing: its market and the global scope wait, the others do not
    partial = {k: v for k, v in states.items() if k != "forex_rsi:EUR/USD"}
    levels = by_scope(risk_usage(config, partial, books))
    assert levels["market:forex"]["note"] == "no data yet"
    assert levels["global"]["note"] == "no data yet"
    assert levels["sleeve:forex_rsi:EUR/USD"]["note"] == "no data yet"
    assert levels["market:crypto"]["note"] is None


# --- hand-built states at the thresholds ------------------------------------------------

@pytest.fixture(scope="module")
def config():
    """One market of ten symbols traded by one model: ten sleeves under the global scope
    (limits: daily loss 10 %, drawdown 20 %, 10 positions, leverage 2) and a market scope
    with no limits; the model's own: daily loss 10 %, drawdown 20 %, leverage 2 and an
    order cap of 1000."""
    return parse_config({
        "mode": "paper",
        "risk": {"max_daily_loss": "10%", "max_drawdown": "20%", "max_pos": 10,
                 "leverage": 2},
        "markets": {"crypto": {"type": "crypto", "feed": "x", "symbols": SYMBOLS,
                               "timeframe": "1h"}},
        "models": [{"id": "m", "strategy": "ema_cross", "market": "crypto",
                    "risk": {"max_daily_loss": "10%", "max_drawdown": "20%", "leverage": 2,
                             "max_order_notional": 1000}}],
    }, source="hand.yaml")


def hand_states(cash=10.0) -> dict:
    states = {f"m:{symbol}": new_state(cash) for symbol in SYMBOLS}
    for state in states.values():
        state[0]["last_close"] = 1.0
        state[0]["day"] = DAY
    return states


def hand_books(equity=100.0, **fields) -> dict:
    book = new_book(equity)
    book["day"] = DAY
    for key, value in fields.items():
        book[key] = value
    return {"__book__:global": book, "__book__:market:crypto": new_book(equity)}


def set_equity(record, equity) -> None:
    record["cash"] = record["equity"] = equity


def hold(record, position, close, equity) -> None:
    """A position worth ``position × close`` in a sleeve of ``equity``."""
    record["position"], record["last_close"] = position, close
    record["cash"] = equity - position * close
    record["equity"] = equity


@pytest.mark.parametrize("equity, status", [(93.01, "ok"), (93.0, "warn"), (90.01, "warn"),
                                            (90.0, "breach"), (80.0, "breach")])
def test_global_daily_loss_at_the_thresholds(config, equity, status):
    states = hand_states()
    set_equity(states["m:S0/USD"][0], equity - 90.0)  # the other nine hold 10 each
    item = limit_of(by_scope(risk_usage(config, states, hand_books()))["global"], "daily_loss")
    assert item["used"] == pytest.approx(100.0 - equity)
    assert item["status"] == status
    assert item["ratio"] == pytest.approx((100.0 - equity) / 10.0)


@pytest.mark.parametrize("equity, status", [(172.01, "ok"), (172.0, "warn"), (160.01, "warn"),
                                            (160.0, "breach")])
def test_global_drawdown_at_the_thresholds(config, equity, status):
    states = hand_states(cash=20.0)
    set_equity(states["m:S0/USD"][0], equity - 180.0)
    books = hand_books(200.0, day_start_equity=equity)  # no daily loss in the way
    level = by_scope(risk_usage(config, states, books))["global"]
    assert limit_of(level, "drawdown")["status"] == status
    assert limit_of(level, "drawdown")["used"] == pytest.approx(100 * (200 - equity) / 200)
    assert level["state"] == "ACTIVE"


@pytest.mark.parametrize("value, status", [(139.0, "ok"), (140.0, "warn"), (199.0, "warn"),
                                           (200.0, "breach"), (250.0, "breach")])
def test_global_gross_leverage_at_the_thresholds(config, value, status):
    states = hand_states()
    hold(states["m:S0/USD"][0], 2.0, value / 2.0, 10.0)  # equity stays 100
    item = limit_of(by_scope(risk_usage(config, states, hand_books()))["global"],
                    "gross_leverage")
    assert (item["used"], item["unit"], item["status"]) == (value / 100.0, "x", status)


@pytest.mark.parametrize("held, pending, status", [(6, 0, "ok"), (7, 0, "warn"),
                                                   (6, 1, "warn"), (9, 0, "warn"),
                                                   (9, 1, "breach"), (10, 0, "breach")])
def test_open_positions_count_pending_targets(config, held, pending, status):
    states = hand_states()
    records = [states[f"m:{symbol}"][0] for symbol in SYMBOLS]
    for record in records[:held]:
        hold(record, 0.5, 1.0, 10.0)
    for record in records[held:held + pending]:
        record["target"] = 0.5  # an entry waiting for the next open
    item = limit_of(by_scope(risk_usage(config, states, hand_books()))["global"],
                    "open_positions")
    assert (item["used"], item["limit"], item["status"]) == (held + pending, 10.0, status)


def test_a_halted_scope_is_a_drawdown_breach_and_a_tripped_day_a_loss_breach(config):
    states = hand_states()
    halted = by_scope(risk_usage(config, states, hand_books(halted=1)))["global"]
    assert halted["state"] == "HALTED"
    assert limit_of(halted, "drawdown")["used"] == 0.0  # recovered, yet still held by it
    assert limit_of(halted, "drawdown")["status"] == "breach"
    tripped = by_scope(risk_usage(config, states, hand_books(loss_tripped_day=DAY)))["global"]
    assert tripped["state"] == "REDUCING"
    assert limit_of(tripped, "daily_loss")["status"] == "breach"
    yesterday = by_scope(risk_usage(config, states,
                                    hand_books(loss_tripped_day=DAY - 1)))["global"]
    assert yesterday["state"] == "ACTIVE"
    assert limit_of(yesterday, "daily_loss")["status"] == "ok"


def test_breach_is_where_apply_limits_acts(config):
    """Over a sweep of equities, a daily-loss or drawdown breach shown is exactly a risk
    event of apply_limits on the same states and book (copies; the view changes nothing)."""
    all_sleeves = sleeves(config, 1.0)
    for equity in np.linspace(150.0, 200.0, 201):
        states = hand_states(cash=20.0)
        set_equity(states["m:S0/USD"][0], float(equity) - 180.0)
        books = hand_books(200.0, day_start_equity=185.0)
        before = {k: v.tobytes() for k, v in [*states.items(), *books.items()]}
        level = by_scope(risk_usage(config, states, books))["global"]
        assert {k: v.tobytes() for k, v in [*states.items(), *books.items()]} == before
        scope = scopes(config, all_sleeves)[0]
        scope.book = copy.deepcopy(books["__book__:global"])
        events = {kind for kind, *_ in apply_limits(scope, copy.deepcopy(states), DAY * DAY_NS)}
        assert ("max_drawdown" in events) == (limit_of(level, "drawdown")["status"] == "breach")
        if "max_drawdown" not in events:  # a halted scope checks no daily loss
            assert ("max_daily_loss" in events) == (
                limit_of(level, "daily_loss")["status"] == "breach")


def test_scope_usage_of_portfolio_is_what_the_view_shows(config):
    states = hand_states()
    hold(states["m:S3/USD"][0], 1.0, 30.0, 10.0)
    scope = scopes(config, sleeves(config, 1.0))[0]
    scope.book = hand_books()["__book__:global"]
    usage = scope_usage(scope, states)
    level = by_scope(risk_usage(config, states, hand_books()))["global"]
    for name in ("daily_loss", "drawdown", "gross_leverage", "open_positions"):
        assert limit_of(level, name)["used"] == pytest.approx(max(usage[name]["used"], 0.0))
        assert (limit_of(level, name)["status"] == "breach") == usage[name]["reached"]


def test_strategy_level_shows_the_worst_sleeve(config):
    states = hand_states()
    states["m:S4/USD"][0]["equity_peak"] = 10.0 / 0.84  # 16 % below its peak: warn
    states["m:S6/USD"][0]["equity_peak"] = 10.0 / 0.9   # 10 %: ok
    states["m:S2/USD"][0]["trading_state"] = int(TradingState.REDUCING)
    level = by_scope(risk_usage(config, states, hand_books()))["model:m"]
    drawdown = limit_of(level, "drawdown")
    assert (drawdown["sleeve"], drawdown["status"]) == ("m:S4/USD", "warn")
    assert drawdown["used"] == pytest.approx(16.0)
    assert level["state"] == "REDUCING"
    states["m:S5/USD"][0]["equity_peak"] = 12.5  # 20 %: the kernel halts at this
    states["m:S5/USD"][0]["trading_state"] = int(TradingState.HALTED)
    level = by_scope(risk_usage(config, states, hand_books()))["model:m"]
    assert (limit_of(level, "drawdown")["sleeve"], limit_of(level, "drawdown")["status"]) == (
        "m:S5/USD", "breach")
    assert level["state"] == "HALTED"


@pytest.mark.parametrize("value, status", [(13.9, "ok"), (14.0, "warn"), (20.0, "warn"),
                                           (20.1, "breach")])
def test_sleeve_leverage_cap_is_breached_only_past_it(config, value, status):
    """Targets are clipped to the cap: a sleeve at 2x with a cap of 2 is full, not in
    breach; the kernel cuts back only a position price pushed past it."""
    states = hand_states()
    hold(states["m:S1/USD"][0], 1.0, value, 10.0)
    level = by_scope(risk_usage(config, states, hand_books()))["model:m"]
    item = limit_of(level, "leverage")
    assert (item["sleeve"], item["status"]) == ("m:S1/USD", status)
    assert item["used"] == pytest.approx(value / 10.0)


@pytest.mark.parametrize("position, target, notional, status", [
    (0.0, 0.69, 690.0, "ok"), (0.0, 0.7, 700.0, "warn"), (0.0, 1.0, 1000.0, "warn"),
    (0.0, 1.5, 1500.0, "breach"), (100.0, 0.0, 1000.0, "warn"), (100.0, 1.75, 750.0, "warn"),
    (100.0, -0.2, 1200.0, "breach")])
def test_order_level_is_the_pending_trade_against_the_order_cap(config, position, target,
                                                                 notional, status):
    states = hand_states(cash=1000.0)
    hold(states["m:S0/USD"][0], position, 10.0, 1000.0)
    states["m:S0/USD"][0]["target"] = target
    level = by_scope(risk_usage(config, states, hand_books(10_000.0)))["sleeve:m:S0/USD"]
    item = limit_of(level, "order_notional")
    assert (item["limit"], item["unit"], item["status"]) == (1000.0, "USD", status)
    assert item["used"] == pytest.approx(notional)
    assert limit_of(level, "target_exposure")["used"] == pytest.approx(abs(target))
    assert level["parent"] == "model:m" and level["symbol"] == "S0/USD"


def test_no_pending_order_uses_nothing(config):
    level = by_scope(risk_usage(config, hand_states(), hand_books()))["sleeve:m:S9/USD"]
    assert [(i["name"], i["used"], i["status"]) for i in level["limits"]] == [
        ("order_notional", 0.0, "ok"), ("target_exposure", 0.0, "ok")]


def test_status_rule():
    assert WARN_AT == 0.7
    assert status_of(6.999, 10.0, False) == "ok"
    assert status_of(7.0, 10.0, False) == "warn"
    assert status_of(12.0, 10.0, False) == "warn"  # only the runner's verdict is a breach
    assert status_of(1.0, 10.0, True) == "breach"  # held by it though recovered
    assert status_of(3.0, None, False) == "none"
    assert status_of(None, 10.0, False) == "no_data"
