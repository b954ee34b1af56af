"""The dashboard's read model against real journals: paper and operator replays of the
multi-market example, the operator's controls, and the journal appearing, growing and
being replaced under it."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import mmats
from mmats.console.curves import Curves, downsample
from mmats.console.readmodel import ReadModel
from mmats.data import load
from mmats.live import control
from mmats.live.closes import book_id
from mmats.live.config import load_config
from mmats.live.journal import Journal
from mmats.live.operator import UNSETTLED
from mmats.live.portfolio import BOOK_DTYPE, scopes
from mmats.live.replay import replay
from mmats.live.sleeves import sleeves
from mmats.units import DAY_NS

REPO = Path(__file__).resolve().parents[2]
SAMPLE = Path(mmats.__file__).parent / "data" / "sample"
BARS = 150  # of each market: every sleeve trades and the global curve has a drawdown
MS = 1_000_000


def example_config(folder: Path, global_risk: str | None = None):
    """configs/paper_multi_market.yaml in ``folder``, its journal beside it (relative: a
    copied folder reads its own copy) and the shipped sample candles as its store."""
    text = (REPO / "configs" / "paper_multi_market.yaml").read_text()
    text = re.sub(r"^journal:.*$", "journal: journal.sqlite", text, flags=re.M)
    text = re.sub(r"^data_root:.*$", f"data_root: {SAMPLE}", text, flags=re.M)
    if global_risk is not None:
        text = re.sub(r"^  max_drawdown_pct: .*$", f"  max_drawdown_pct: {global_risk}", text,
                      flags=re.M)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "paper.yaml").write_text(text)
    return load_config(folder / "paper.yaml")


def history(config, bars: int) -> dict[str, pd.DataFrame]:
    return {symbol: load(f"{market.feed}:{symbol}:{market.timeframe}",
                         root=config.data_root).iloc[:bars]
            for market in config.markets for symbol in market.symbols}


def replayed(folder: Path, mode: str, bars: int = BARS, global_risk: str | None = None):
    config = example_config(folder, global_risk)
    return config, replay(config, history(config, bars), config.journal, mode=mode)


def copied(source: Path, into: Path):
    shutil.copytree(source, into)
    return load_config(into / "paper.yaml")


@pytest.fixture(scope="module")
def paper(tmp_path_factory):
    folder = tmp_path_factory.mktemp("paper")
    config, result = replayed(folder, "paper")
    return folder, result


@pytest.fixture(scope="module")
def operator(tmp_path_factory):
    folder = tmp_path_factory.mktemp("operator")
    config, result = replayed(folder, "operator")
    return folder, result


def loaded(config, **options) -> ReadModel:
    model = ReadModel(config, **options)
    model.refresh()
    return model


def carried_sum(frame: pd.DataFrame) -> pd.Series:
    """Sleeves' equity summed at every time: each carried forward, and back before its
    first point (its starting cash)."""
    return frame.sort_index().ffill().bfill().sum(axis=1)


def as_series(points) -> pd.Series:
    return pd.Series([v for _, v in points],
                     index=pd.to_datetime([t for t, _ in points], unit="ms", utc=True))


def head_of(path: Path) -> int:
    with Journal(path, readonly=True) as journal:
        return journal.head()[0]


# -- the equity curves -------------------------------------------------------------------
@pytest.mark.parametrize("run", ["paper", "operator"])
def test_equity_curves_equal_the_replays_own(run, request, tmp_path):
    folder, result = request.getfixturevalue(run)
    config = copied(folder, tmp_path / "copy")
    model = loaded(config, max_points=100_000)
    answer = model.portfolio()
    equity = result.equity
    for model_config in config.models:  # one sleeve each in the example
        sleeve = f"{model_config.id}:{model_config.symbols[0]}"
        mine = as_series(answer["equity"]["models"][model_config.id])
        theirs = equity[sleeve].dropna()
        assert len(mine) == len(theirs) >= BARS  # operator mode: and after the last order
        assert (mine.index == theirs.index).all()
        np.testing.assert_allclose(mine.to_numpy(), theirs.to_numpy(), rtol=0, atol=1e-9)
    for market in config.markets:
        columns = [f"{m.id}:{m.symbols[0]}" for m in config.models if m.market == market.name]
        mine = as_series(answer["equity"]["markets"][market.name])
        theirs = carried_sum(equity[columns]).loc[mine.index]
        np.testing.assert_allclose(mine.to_numpy(), theirs.to_numpy(), rtol=0, atol=1e-9)
    mine = as_series(answer["equity"]["global"])
    theirs = carried_sum(equity)
    assert (mine.index == theirs.index).all()
    np.testing.assert_allclose(mine.to_numpy(), theirs.to_numpy(), rtol=0, atol=1e-9)

    assert answer["equity_now"] == pytest.approx(result.final_equity, abs=1e-9)
    assert answer["equity_start"] == pytest.approx(30_000.0)  # three accounts of 10,000
    assert answer["pnl_total"] == pytest.approx(result.final_equity - 30_000.0, abs=1e-9)
    newest_bar = max(frame["ts"].iloc[-1].value for frame in history(config, BARS).values())
    day_start = theirs[theirs.index < pd.Timestamp(newest_bar // DAY_NS * DAY_NS, tz="UTC")]
    assert answer["pnl_today"] == pytest.approx(result.final_equity - day_start.iloc[-1],
                                                abs=1e-9)
    peak = theirs.cummax()
    assert answer["drawdown_pct"] == pytest.approx(100 * (peak.iloc[-1] - theirs.iloc[-1])
                                                   / peak.iloc[-1], abs=1e-9)
    assert answer["max_drawdown_pct"] == pytest.approx((100 * (peak - theirs) / peak).max())
    assert answer["drawdown_limit_pct"] == 25.0 and answer["daily_loss_limit_pct"] == 5.0
    json.dumps(answer, allow_nan=False)


def test_downsampled_curves_keep_exact_points_the_extremes_and_the_last(paper, tmp_path):
    folder, result = paper
    config = copied(folder, tmp_path / "copy")
    full = loaded(config, max_points=100_000).portfolio()["equity"]
    drawn = loaded(config, max_points=40).portfolio()["equity"]
    curves = [(full["global"], drawn["global"])]
    curves += [(full["markets"][name], drawn["markets"][name]) for name in full["markets"]]
    for whole, few in curves:
        assert len(whole) > 40 >= len(few)
        exact = dict(map(tuple, whole))
        assert all(exact[t] == v for t, v in few)  # every point kept is a real one
        assert [t for t, _ in few] == sorted({t for t, _ in few})
        assert few[-1] == whole[-1]
        values = [v for _, v in few]
        assert min(values) == min(v for _, v in whole)
        assert max(values) == max(v for _, v in whole)


def test_downsample_keeps_every_buckets_extremes():
    rng = np.random.default_rng(3)
    ts = np.arange(10_000, dtype=np.int64) * 60 * 10**9
    values = 1000 + np.cumsum(rng.normal(0, 1, 10_000))
    values[3333], values[7777] = -1e6, 1e6  # a crash and a spike inside buckets
    kept_ts, kept = downsample(ts, values, 101)
    assert len(kept) <= 101 and (np.diff(kept_ts) > 0).all()
    assert kept.min() == -1e6 and kept.max() == 1e6
    assert kept_ts[-1] == ts[-1] and kept[-1] == values[-1]
    np.testing.assert_array_equal(values[np.searchsorted(ts, kept_ts)], kept)
    small_ts, small = downsample(ts[:50], values[:50], 101)
    assert (small == values[:50]).all() and (small_ts == ts[:50]).all()


def test_curves_sum_carried_values_and_keep_time_in_order():
    curves = Curves({"g": ["a", "b"]})
    curves.extend("a", np.array([0, 60]), np.array([100.0, 101.0]))
    curves.extend("b", np.array([30]), np.array([50.0]))
    times, values = curves.series("g")
    assert times.tolist() == [0, 30, 60] and values.tolist() == [150.0, 150.0, 151.0]
    # a second state at the same time replaces the point (operator mode saves twice)
    curves.extend("a", np.array([60, 120, 120]), np.array([102.0, 99.0, 103.0]))
    assert curves.series("g")[1].tolist() == [150.0, 150.0, 152.0, 153.0]
    # a state stamped before the newest point (an order's state at the tick's clock,
    # then the next bar at its open time) goes where its time puts it: here b's first
    curves.extend("b", np.array([10]), np.array([55.0]))
    times, values = curves.series("g")
    assert times.tolist() == [0, 10, 30, 60, 120]
    assert values.tolist() == [155.0, 155.0, 150.0, 152.0, 153.0]
    curves.extend("a", np.array([90, 60]), np.array([7.0, 8.0]))  # into the middle
    values = curves.series("g")[1]
    assert values.tolist() == [155.0, 155.0, 150.0, 58.0, 57.0, 153.0]
    fresh = Curves({"g": ["a", "b"]})
    fresh.extend("a", curves.sleeves["a"].ts, curves.sleeves["a"].values)
    fresh.extend("b", curves.sleeves["b"].ts, curves.sleeves["b"].values)
    assert fresh.series("g")[1].tolist() == values.tolist()


# -- positions, orders, fills, strategies --------------------------------------------------
def test_positions_agree_with_the_runners_status(operator, tmp_path):
    folder, result = operator
    config = copied(folder, tmp_path / "copy")
    model = loaded(config)
    positions = {p["sleeve"]: p for p in model.positions()}
    status = control.status(config)
    held = {sid: s for sid, s in status.items()
            if sid not in ("kill_switch", "environment") and s["position"]}
    assert set(positions) == set(held) and positions
    for sleeve_id, row in positions.items():
        state = result.states[sleeve_id][0]
        assert row["qty"] == held[sleeve_id]["position"]
        assert row["equity"] == pytest.approx(held[sleeve_id]["equity"], abs=1e-9)
        assert row["trading_state"] == held[sleeve_id]["trading_state"]
        assert row["side"] == ("long" if row["qty"] > 0 else "short")
        assert row["entry_price"] == float(state["avg_price"]) > 0
        assert row["mark"] == float(state["last_close"])
        assert row["unrealised_pnl"] == pytest.approx(row["qty"] * (row["mark"]
                                                                     - row["entry_price"]))
        stop = float(state["stop_price"])
        assert row["stop_loss"] == (None if np.isnan(stop) else stop)
    json.dumps(model.positions(), allow_nan=False)


def test_latest_states_are_the_journals_newest(operator, tmp_path):
    folder, _ = operator
    config = copied(folder, tmp_path / "copy")
    states, books = loaded(config).latest_states()
    with Journal(config.journal, readonly=True) as journal:
        for sleeve in sleeves(config, 1.0):
            assert states[sleeve.id].tobytes() == journal.load_state(sleeve.id).tobytes()
        for scope in scopes(config, sleeves(config, 1.0)):
            newest = journal.load_state(book_id(scope), BOOK_DTYPE)
            assert books[book_id(scope)].tobytes() == newest.tobytes()
    assert len(books) == 1 + len(config.markets)


def test_orders_are_the_newest_row_of_each_client_order(operator, tmp_path):
    folder, result = operator
    config = copied(folder, tmp_path / "copy")
    model = loaded(config)
    with Journal(config.journal, readonly=True) as journal:
        rows = journal.rows("orders")
        fills = journal.rows("fills")
    newest = {}
    for row in rows:
        newest[row["client_order_id"]] = row
    answer = model.orders(limit=10_000)
    shown = answer["pending"] + answer["recent"]
    assert len(shown) == len({o["client_order_id"] for o in shown}) == len(newest)
    for order in shown:
        row = newest[order["client_order_id"]]
        assert (order["seq"], order["status"]) == (row["seq"], row["broker_status"])
        assert order["qty"] == abs(row["requested_qty"])
    assert all(o["status"] in UNSETTLED for o in answer["pending"])
    assert all(o["status"] not in UNSETTLED for o in answer["recent"])
    assert {o["status"] for o in answer["recent"]} >= {"filled", "rejected"}
    assert any(o["kind"] == "stop_loss" for o in shown)  # the venue's resting stops
    assert [o["seq"] for o in answer["recent"]] == sorted(
        (o["seq"] for o in answer["recent"]), reverse=True)
    assert len(model.orders(limit=3)["recent"]) == 3

    listed = model.fills(limit=10_000)
    assert [f["seq"] for f in listed] == [row["seq"] for row in reversed(fills)]
    assert len(result.fills) == len(listed)
    for fill, row in zip(listed, reversed(fills), strict=True):
        assert fill["side"] == ("buy" if row["side"] > 0 else "sell")
        assert (fill["qty"], fill["price"], fill["fee"]) == (row["qty"], row["price"],
                                                             row["fee"])
        assert fill["reason"] in ("signal", "stop_loss", "take_profit", "risk")
    assert [f["seq"] for f in model.fills(limit=2)] == [f["seq"] for f in listed[:2]]
    markers = model.fill_markers("ETH/BTC")
    assert len(markers) == sum(1 for row in fills if row["symbol"] == "ETH/BTC") > 0
    assert {m["side"] for m in markers} == {"buy", "sell"}
    assert model.fill_markers("NOPE/USD") == []
    stops = model.stop_levels("ETH/BTC")
    assert {s["source"] for s in stops} == {"state", "signal"}
    resting = [o for o in shown if o["kind"] == "stop_loss" and o["symbol"] == "ETH/BTC"]
    assert resting and all(  # the venue's protective legs rest at levels the states had
        any(s["stop_loss"] == o["price"] for s in stops if s["source"] == "state")
        for o in resting)
    assert all(s["stop_loss"] is None or s["stop_loss"] > 0 for s in stops)
    json.dumps([answer, listed, markers, stops], allow_nan=False)


def test_strategies_show_parameters_states_and_newest_signals(paper, tmp_path):
    folder, _ = paper
    config = copied(folder, tmp_path / "copy")
    model = loaded(config)
    with Journal(config.journal, readonly=True) as journal:
        signals = journal.rows("signals")
    strategies = {s["id"]: s for s in model.strategies()}
    assert list(strategies) == [m.id for m in config.models]
    donchian = strategies["crypto_donchian"]
    assert donchian["params"]["channel"] == 20 and donchian["allocation"] == 0.4
    assert donchian["market"] == "crypto" and donchian["symbols"] == ["ETH/BTC"]
    assert [s["state"] for s in donchian["sleeves"]] == ["ACTIVE"]
    newest = [row for row in signals if row["model_id"] == "crypto_donchian"][-20:][::-1]
    assert [s["seq"] for s in donchian["signals"]] == [row["seq"] for row in newest]
    assert donchian["signals"][0]["meta"] == json.loads(newest[0]["meta"])
    json.dumps(list(strategies.values()), allow_nan=False)


# -- the operator's controls and the risk limits -------------------------------------------
def test_a_paused_model_shows_paused_and_a_kill_halted(paper, tmp_path):
    folder, _ = paper
    config = copied(folder, tmp_path / "copy")
    model = loaded(config)
    head = model.refresh()
    control.pause(config, "forex_rsi", user="tester", reason="news")
    model.refresh()
    states = {s["id"]: s["sleeves"][0]["state"] for s in model.strategies()}
    assert states == {"crypto_ema_cross": "ACTIVE", "crypto_donchian": "ACTIVE",
                      "forex_rsi": "PAUSED", "stocks_ema_cross": "ACTIVE"}
    forex = [p for p in model.positions() if p["model_id"] == "forex_rsi"]
    assert all(p["trading_state"] == "PAUSED" for p in forex)
    action = [e for e in model.changes(head) if e["table"] == "operator_actions"]
    assert [(e["action"], e["user"], e["scope"]) for e in action] == [
        ("pause", "tester", "forex_rsi")]

    control.kill(config, user="tester", reason="drill", mode="paper")
    model.refresh()
    assert {s["sleeves"][0]["state"] for s in model.strategies()} == {"HALTED"}
    kill = model.overview()["kill_switch"]
    assert (kill["user"], kill["reason"]) == ("tester", "drill") and kill["ts_ms"] > 0
    runner = model.logs(kinds=["runner"])
    assert [(e["kind"], e["level"], e["user"]) for e in runner] == [
        ("kill_request", "CRITICAL", "tester")]

    control.resume_models(config, user="tester")
    model.refresh()
    assert {s["sleeves"][0]["state"] for s in model.strategies()} == {"ACTIVE"}
    assert model.overview()["kill_switch"] is None


def test_a_drawdown_halt_shows_halted_not_paused(tmp_path):
    config, _ = replayed(tmp_path / "tight", "paper", global_risk="1%")
    model = loaded(config)
    halts = model.logs(kinds=["max_drawdown"])
    assert halts and all(e["level"] == "CRITICAL" and e["source"] == "risk" for e in halts)
    assert halts[0]["scope"] == "global"
    states = {s["sleeves"][0]["id"]: s["sleeves"][0]["state"] for s in model.strategies()}
    status = control.status(config)
    assert states == {sid: status[sid]["trading_state"] for sid in states}
    # the halt came at a stocks close, before the other markets' first bars
    assert states["stocks_ema_cross:GOOG"] == "HALTED"
    assert model.portfolio()["drawdown_limit_pct"] == 1.0


def test_logs_filter_by_source_kind_level_and_text(operator, tmp_path):
    folder, _ = operator
    config = copied(folder, tmp_path / "copy")
    control.pause(config, "crypto_donchian", user="tester", reason="Checking THE feed")
    with Journal(config.journal) as journal:  # as a store tick does when the file changed
        journal.append_config_snapshot(config.snapshot(), user="tester")
    (tmp_path / "copy" / "journal.sqlite.failures").write_text(
        json.dumps({"count": 2, "last_error": "VenueUnavailable('down')"}))
    model = loaded(config)
    with Journal(config.journal, readonly=True) as journal:
        events = journal.rows("risk_events")
        journaled = len(events) + len(journal.rows("operator_actions")) + len(
            journal.rows("config_snapshots"))
    everything = model.logs(limit=10_000)
    assert len(everything) == journaled + 1  # and the failures file
    operator_entries = model.logs(kinds=["operator"])
    assert [(e["kind"], e["user"], e["scope"]) for e in operator_entries] == [
        ("pause", "tester", "crypto_donchian")]
    balances = model.logs(kinds=["venue_balances"], limit=10_000)
    assert len(balances) == sum(1 for e in events if e["kind"] == "venue_balances") > 0
    serious = model.logs(level="WARNING", limit=10_000)
    assert serious and {e["level"] for e in serious} <= {"WARNING", "CRITICAL"}
    assert any(e["kind"] == "order_rejected" for e in serious)
    assert len(model.logs(level="CRITICAL", limit=10_000)) < len(serious)
    snapshots = model.logs(kinds=["config"])
    assert [(e["kind"], e["user"], e["level"]) for e in snapshots] == [
        ("config_snapshot", "tester", "INFO")]
    assert f"{len(config.snapshot())} characters" in snapshots[0]["message"]
    found = model.logs(text="the FEED")
    assert [e["kind"] for e in found] == ["pause"]
    runner = model.logs(kinds=["runner"])
    assert [(e["kind"], e["level"]) for e in runner] == [("tick_failures", "WARNING")]
    assert "VenueUnavailable" in runner[0]["message"]
    assert [e["seq"] for e in everything[1:]] == sorted(
        (e["seq"] for e in everything[1:]), reverse=True)
    assert len(model.logs(limit=3)) == 3
    json.dumps(everything, allow_nan=False)


# -- following the sequence number ---------------------------------------------------------
def test_refresh_reads_only_the_rows_after_the_last_seen(tmp_path):
    config, _ = replayed(tmp_path / "run", "paper", bars=100)
    model = ReadModel(config)
    first = model.refresh()
    assert first == head_of(config.journal)
    read = model.rows_read
    assert 0 < read <= first
    assert model.refresh() == first and model.rows_read == read  # nothing new: nothing read
    result = replay(config, history(config, BARS), config.journal)  # more ticks
    second = model.refresh()
    assert second == head_of(config.journal) > first
    assert 0 < model.rows_read - read <= second - first  # of the new rows only

    fresh = loaded(config)
    assert model.portfolio() == fresh.portfolio()
    for name in ("positions", "strategies", "fills", "orders", "logs"):
        assert getattr(model, name)() == getattr(fresh, name)(), name
    curve = as_series(model.portfolio()["equity"]["global"])
    np.testing.assert_allclose(curve.to_numpy(), carried_sum(result.equity).to_numpy(),
                               rtol=0, atol=1e-9)


def test_the_journal_is_only_read(paper, tmp_path):
    folder, _ = paper
    config = copied(folder, tmp_path / "copy")
    before = hashlib.sha256(config.journal.read_bytes()).hexdigest()
    mtime = config.journal.stat().st_mtime_ns
    model = loaded(config)
    for view in (model.overview, model.portfolio, model.positions, model.orders,
                 model.fills, model.strategies, model.logs):
        view()
    model.changes(0)
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        model._db.execute("INSERT INTO meta (name, value) VALUES ('x', 'y')")
    model.refresh()
    assert hashlib.sha256(config.journal.read_bytes()).hexdigest() == before
    assert config.journal.stat().st_mtime_ns == mtime
    assert not config.lock.exists()  # the runner's lock was never taken
    with Journal(config.journal, readonly=True) as journal:
        assert journal.verify().ok


def test_changes_are_compact_events_in_seq_order(operator, tmp_path):
    folder, _ = operator
    config = copied(folder, tmp_path / "copy")
    model = loaded(config)
    head = model.overview()["head_seq"]
    with Journal(config.journal, readonly=True) as journal:
        chain = {row["seq"]: row["table_name"] for row in journal.rows("chain")}
    events = model.changes(head - 30, limit=10)
    assert [e["seq"] for e in events] == list(range(head - 29, head - 19))
    assert all(e["table"] == chain[e["seq"]] and e["summary"] for e in events)
    assert [e["seq"] for e in model.changes(0, limit=5)] == [1, 2, 3, 4, 5]
    assert model.changes(head) == []
    fill = model.fills(limit=1)[0]
    event = model.changes(fill["seq"] - 1, limit=1)[0]
    assert event["table"] == "fills" and event["seq"] == fill["seq"]
    assert (event["side"], event["qty"], event["price"], event["model_id"]) == (
        fill["side"], fill["qty"], fill["price"], fill["model_id"])
    assert fill["symbol"] in event["summary"]
    order = model.orders()["recent"][0]
    event = model.changes(order["seq"] - 1, limit=1)[0]
    assert (event["table"], event["status"]) == ("orders", order["status"])
    json.dumps(model.changes(0, limit=10_000), allow_nan=False)


def test_a_missing_journal_is_empty_until_it_appears_and_a_new_one_is_read_afresh(
        paper, operator, tmp_path):
    config = example_config(tmp_path / "watch")
    model = ReadModel(config)
    assert model.refresh() == 0 and not config.journal.exists()
    assert model.overview()["head_seq"] == 0 and model.overview()["last_bar_ts_ms"] is None
    empty = model.portfolio()
    assert empty["equity"]["global"] == [] and empty["equity_now"] is None
    assert set(empty["equity"]["markets"]) == {"crypto", "forex", "stocks"}
    assert model.positions() == [] and model.fills() == [] and model.logs() == []
    assert model.orders() == {"pending": [], "recent": []}
    assert all(s["signals"] == [] and s["sleeves"][0]["state"] is None
               for s in model.strategies())
    assert model.changes(0) == [] and model.fill_markers("ETH/BTC") == []
    json.dumps([model.overview(), empty, model.strategies()], allow_nan=False)

    shutil.copy(paper[0] / "journal.sqlite", config.journal)  # the runner starts
    paper_head = model.refresh()
    assert paper_head == head_of(config.journal)
    paper_rows = model.rows_read
    assert model.portfolio()["equity_now"] == pytest.approx(paper[1].final_equity, abs=1e-9)

    replacement = tmp_path / "other.sqlite"  # another journal moved into its place
    shutil.copy(operator[0] / "journal.sqlite", replacement)
    os.replace(replacement, config.journal)
    other_head = model.refresh()
    assert other_head == head_of(config.journal)
    fresh = loaded(config)
    assert model.rows_read - paper_rows == fresh.rows_read  # afresh, from its first row
    assert model.overview() == fresh.overview()
    assert model.portfolio() == fresh.portfolio()
    assert model.orders() == fresh.orders()
    assert model.portfolio()["equity_now"] == pytest.approx(operator[1].final_equity,
                                                            abs=1e-9)

    config.journal.unlink()  # gone again: empty again, no error
    assert model.refresh() == 0 and model.positions() == []
