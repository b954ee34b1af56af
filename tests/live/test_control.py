"""Ticks from the candle store (as cron runs them) and the operator's controls."""

import dataclasses
import json
import subprocess

import numpy as np
import pytest

from mmats.data import CandleStore, load
from mmats.live import control
from mmats.live.config import parse_config
from mmats.live.journal import Journal
from mmats.live.portfolio import BOOK_DTYPE
from mmats.live.replay import replay
from mmats.types import TradingState

FIVE_MINUTES = 300_000_000_000


@pytest.fixture
def setup(tmp_path):
    candles = load("bittrex:ETH/BTC:5m").iloc[:400].reset_index(drop=True)
    store = CandleStore(tmp_path / "data")
    store.write("bittrex", "ETH/BTC", "5m", candles.iloc[:250])
    config = parse_config({
        "mode": "paper",
        "markets": {"crypto": {"type": "crypto", "feed": "bittrex", "execution": "paper",
                               "symbols": ["ETH/BTC"], "timeframe": "5m"}},
        "models": [{"id": "ema", "strategy": "ema_cross", "market": "crypto",
                    "params": {"fast": 5, "slow": 20}, "costs": {"fee_bps": 10}}],
        "notifications": [f"file://{tmp_path / 'notes.log'}"],
        "journal": str(tmp_path / "journal.sqlite"),
        "data_root": str(tmp_path / "data"),
    })
    return config, store, candles, tmp_path


def close_of(candles, bar):
    return candles["ts"].iloc[bar].value + FIVE_MINUTES


def test_cron_ticks_from_the_store_equal_a_replay(setup):
    config, store, candles, tmp_path = setup
    # the store holds 250 bars; the clock is mid-way through bar 249: it is still forming
    first = control.tick_once(config, now_ns=close_of(candles, 248) + 1)
    assert first.bars == 249
    store.write("bittrex", "ETH/BTC", "5m", candles.iloc[240:400])  # the fetcher appends
    second = control.tick_once(config, now_ns=close_of(candles, 399))
    assert second.bars == 151
    clean = replay(config, {"ETH/BTC": candles}, tmp_path / "clean.sqlite")
    with Journal(config.journal) as journal:
        assert journal.load_state("ema:ETH/BTC").tobytes() == clean.states["ema:ETH/BTC"].tobytes()
        assert len(journal.rows("config_snapshots")) == 1  # unchanged config: one snapshot
        assert journal.verify().ok
        # only the decisions at each tick's newest bar (248, then 399) are notified
        newest = {candles["ts"].iloc[248].value, candles["ts"].iloc[399].value}
        fresh = [r for r in journal.rows("signals")
                 if r["action"] != "HOLD" and r["ts_ns"] in newest]
    notes_file = tmp_path / "notes.log"
    notes = notes_file.read_text() if notes_file.exists() else ""
    assert notes.count("MMATS paper signal") == len(fresh)
    for row in fresh:
        assert f"ema ETH/BTC: {row['action']}" in notes


def test_kill_flattens_at_the_next_open_and_blocks_until_resume(setup):
    config, store, candles, tmp_path = setup
    store.write("bittrex", "ETH/BTC", "5m", candles)
    with_position = None
    for bar in range(30, 400):
        control.tick_once(config, now_ns=close_of(candles, bar))
        if control.status(config)["ema:ETH/BTC"]["position"] > 0:
            with_position = bar
            break
    assert with_position is not None
    assert control.kill(config, reason="test").sleeves == ["ema:ETH/BTC"]
    status = control.status(config)["ema:ETH/BTC"]
    assert status["trading_state"] == "HALTED" and status["position"] > 0
    control.tick_once(config, now_ns=close_of(candles, 399))
    status = control.status(config)["ema:ETH/BTC"]
    assert status["position"] == 0 and status["trading_state"] == "HALTED"
    with Journal(config.journal) as journal:
        fills = journal.fills_frame()
        # the flatten filled at the open of the first bar after the kill, as a risk order
        assert fills["bar"].iloc[-1] == with_position + 1
        assert fills["reason"].iloc[-1] == 3  # FillReason.RISK
        assert [r["action"] for r in journal.rows("operator_actions")] == ["kill"]
        assert journal.rows("risk_events")[0]["kind"] == "kill_switch"
        positions = [np.frombuffer(r["state"], dtype=journal_state_dtype())[0]["position"]
                     for r in journal.rows("sleeve_states", "sleeve_id = ?", ("ema:ETH/BTC",))]
    assert max(positions[-(399 - with_position):]) == 0  # nothing opened while halted
    control.resume_models(config)
    assert control.status(config)["ema:ETH/BTC"]["trading_state"] == "ACTIVE"


def journal_state_dtype():
    from mmats.types import STATE_DTYPE

    return STATE_DTYPE


def test_pause_and_errors(setup):
    config, store, candles, _ = setup
    control.tick_once(config, now_ns=close_of(candles, 100))
    assert control.pause(config, "ema") == ["ema:ETH/BTC"]
    assert control.status(config)["ema:ETH/BTC"]["trading_state"] == TradingState.HALTED.name
    with pytest.raises(Exception, match="no model 'nope'"):
        control.pause(config, "nope")
    with control.runner_lock(config.lock):
        with pytest.raises(control.RunnerBusy, match="another runner tick"):
            control.tick_once(config, now_ns=close_of(candles, 120))


@pytest.mark.slow
def test_script_once_status_kill(setup, repo, python):
    config, store, candles, tmp_path = setup
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps({
        "mode": "advisory",
        "markets": {"crypto": {"type": "crypto", "feed": "bittrex", "execution": "paper",
                               "symbols": ["ETH/BTC"], "timeframe": "5m"}},
        "models": [{"id": "ema", "strategy": "ema_cross", "market": "crypto",
                    "params": {"fast": 5, "slow": 20}}],
        "journal": "j.sqlite", "data_root": "data"}))
    run = lambda *args: subprocess.run(  # noqa: E731
        [python, repo / "scripts/live.py", "--config", path, *args], capture_output=True,
        text=True, timeout=300, cwd=repo)
    once = run("--once")
    assert once.returncode == 0, once.stderr
    assert "250 new bar(s)" in once.stdout  # the clock is now: every stored bar has closed
    with Journal(tmp_path / "j.sqlite") as journal:  # only the newest decision is news
        fresh = [r for r in journal.rows("signals") if r["action"] != "HOLD"
                 and r["ts_ns"] == candles["ts"].iloc[249].value]
    assert once.stdout.count("[MMATS advisory signal]") == len(fresh)
    for row in fresh:
        assert f"[MMATS advisory signal] ema ETH/BTC: {row['action']}" in once.stdout
    status = json.loads(run("status").stdout)
    assert status["ema:ETH/BTC"]["last_bar_ts_ns"] == candles["ts"].iloc[249].value
    assert run("kill", "--reason", "drill").returncode == 0
    assert json.loads(run("status").stdout)["ema:ETH/BTC"]["trading_state"] == "HALTED"
    # execution: paper rehearses operator mode; this journal's advisory position was never
    # held at the (paper) venue: the mismatch pauses the sleeve and nothing is sent
    operator = run("--mode", "operator")
    assert operator.returncode == 1, operator.stderr
    assert "reconcile mismatch" in operator.stdout and "venue holds 0" in operator.stdout
    assert "0 new bar(s)" in operator.stdout and "0 order(s) sent" in operator.stdout
    assert run("bogus").returncode == 2
    real = json.loads(path.read_text())
    real["markets"]["crypto"]["execution"] = "binance"
    path.write_text(json.dumps(real))
    refused = run("--mode", "operator", "--i-understand-live-trading")
    assert refused.returncode == 2 and "environment: prod" in refused.stderr


def test_stale_data_halts_with_a_notification(setup):
    config, store, candles, tmp_path = setup
    control.tick_once(config, now_ns=close_of(candles, 200))
    assert control.status(config)["ema:ETH/BTC"]["trading_state"] == "ACTIVE"
    # the store stops at bar 249; four bars later the feed counts as dead (limit 3)
    control.tick_once(config, now_ns=close_of(candles, 249) + 4 * FIVE_MINUTES)
    assert control.status(config)["ema:ETH/BTC"]["trading_state"] == "HALTED"
    with Journal(config.journal) as journal:
        assert [e["kind"] for e in journal.rows("risk_events")] == ["stale_data"]
    assert "stale data" in (tmp_path / "notes.log").read_text()


def test_close_symbol_flattens_without_halting(setup):
    config, store, candles, _ = setup
    store.write("bittrex", "ETH/BTC", "5m", candles)
    for bar in range(30, 400):
        control.tick_once(config, now_ns=close_of(candles, bar))
        if control.status(config)["ema:ETH/BTC"]["position"] > 0:
            break
    assert control.close_symbol(config, "ETH/BTC") == ["ema:ETH/BTC"]
    control.tick_once(config, now_ns=close_of(candles, bar + 1))
    status = control.status(config)["ema:ETH/BTC"]
    assert status["position"] == 0 and status["trading_state"] == "ACTIVE"
    with Journal(config.journal) as journal:
        assert journal.fills_frame()["bar"].iloc[-1] == bar + 1
        assert journal.rows("operator_actions")[-1]["target"] == "ETH/BTC"
    with pytest.raises(Exception, match="no market trades 'BTC/USD'"):
        control.close_symbol(config, "BTC/USD")


def test_resume_after_a_global_drawdown_halt_measures_from_here(setup):
    config, store, candles, tmp_path = setup
    store.write("bittrex", "ETH/BTC", "5m", candles)
    config = dataclasses.replace(config, global_risk=dataclasses.replace(
        config.global_risk, max_drawdown_pct=0.3))
    for bar in range(30, 400):
        control.tick_once(config, now_ns=close_of(candles, bar))
        with Journal(config.journal) as journal:
            book = journal.load_state("__book__:global", BOOK_DTYPE)
        if book[0]["halted"]:
            break
    assert book[0]["halted"] and control.status(config)["ema:ETH/BTC"]["trading_state"] \
        == "HALTED"
    control.resume_models(config)
    with Journal(config.journal) as journal:
        book = journal.load_state("__book__:global", BOOK_DTYPE)[0]
        equity = journal.load_state("ema:ETH/BTC")[0]["equity"]
    assert book["halted"] == 0 and book["equity_peak"] == equity
    assert control.status(config)["ema:ETH/BTC"]["trading_state"] == "ACTIVE"


def test_a_first_tick_notifies_only_the_newest_decision(setup):
    """A fresh journal's first tick warms up on 250 bars of history: every decision is
    journaled, but only the one at the newest bar is news."""
    config, store, candles, tmp_path = setup
    report = control.tick_once(config, now_ns=close_of(candles, 249))
    assert report.bars == 250 and len(report.signals) > 5  # history held many decisions
    with Journal(config.journal) as journal:
        journaled = [r for r in journal.rows("signals") if r["action"] != "HOLD"]
    assert len(journaled) == len(report.signals)
    newest = candles["ts"].iloc[249].value
    notes = (tmp_path / "notes.log").read_text() if (tmp_path / "notes.log").exists() else ""
    notified = [line for line in notes.splitlines() if "signal" in line]
    expected = [s for s in report.signals if s["ts_ns"] == newest]
    assert len(notified) == len(expected) <= 1


def test_ticks_anchor_the_journal_where_the_configuration_says(setup):
    config, store, candles, tmp_path = setup
    anchored = dataclasses.replace(config, anchor_path=tmp_path / "offsite" / "j.anchor")
    (tmp_path / "offsite").mkdir()
    control.tick_once(anchored, now_ns=close_of(candles, 120))
    control.pause(anchored, "ema")
    assert (tmp_path / "offsite" / "j.anchor").stat().st_size > 0
    assert not (tmp_path / "journal.sqlite.anchor").exists()
    with Journal(config.journal, anchor=tmp_path / "offsite" / "j.anchor") as journal:
        report = journal.verify()
        assert report.ok and report.anchor_head_seq == report.head_seq
        assert journal.rows("operator_actions")[-1]["user"] not in ("", "operator")


def test_two_configurations_on_one_journal_never_tick_at_once(setup):
    config, store, candles, tmp_path = setup
    other = parse_config({
        "mode": "advisory",
        "markets": {"crypto": {"type": "crypto", "feed": "bittrex", "execution": "paper",
                               "symbols": ["ETH/BTC"], "timeframe": "5m"}},
        "models": [{"id": "ema", "strategy": "ema_cross", "market": "crypto"}],
        "journal": str(config.journal), "data_root": str(tmp_path / "data"),
    }, source="other.yaml", base_dir="/")
    with control.runner_lock(config.lock):
        with pytest.raises(control.RunnerBusy):
            control.tick_once(other, now_ns=close_of(candles, 120))


def test_status_shows_the_kill_in_force_until_resume(setup):
    config, store, candles, _ = setup
    control.tick_once(config, now_ns=close_of(candles, 120))
    assert control.status(config)["kill_switch"] is None
    control.kill(config, reason="drill")
    kill = control.status(config)["kill_switch"]
    assert kill["reason"] == "drill" and kill["user"]
    with pytest.raises(Exception, match="kill switch is on"):
        control.resume_models(config, "ema")
    control.resume_models(config)
    assert control.status(config)["kill_switch"] is None
    assert control.status(config)["ema:ETH/BTC"]["trading_state"] == "ACTIVE"


def test_the_loop_ticks_after_each_close_and_halts_once_on_an_unexpected_error(setup):
    """scripts/live.py --loop is control.run_loop: it sleeps until the next bar closes
    (plus a settling moment), and on an error no fail-safe handles it kills, notifies
    once and re-raises instead of crash-looping."""
    config, store, candles, tmp_path = setup
    store.write("bittrex", "ETH/BTC", "5m", candles)
    waits = []
    now = 1_700_000_100_000_000_000  # exactly a 5-minute close
    assert control.run_loop(config, ticks=2, sleep=waits.append, clock=lambda: now) == 2
    assert waits == [(FIVE_MINUTES + control.LOOP_SETTLE_NS) / 1e9]  # none after the last
    assert not control.status(config)["kill_switch"]
    notes = tmp_path / "notes.log"
    before = notes.read_text() if notes.exists() else ""

    store.path("bittrex", "ETH/BTC", "5m").write_bytes(b"not parquet")  # a broken store
    with pytest.raises(Exception, match="could not read"):
        control.run_loop(config, sleep=waits.append, clock=lambda: now)
    kill = control.status(config)["kill_switch"]
    assert kill["user"] == "runner" and "runner stopped: unhandled" in kill["reason"]
    assert control.status(config)["ema:ETH/BTC"]["trading_state"] == "HALTED"
    added = notes.read_text()[len(before):]
    assert added.count("runner stopped") == 1 and added.count("MMATS kill") == 1
