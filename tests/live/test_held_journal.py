"""A journal held open from tick to tick (:class:`mmats.live.wiring.HeldJournal`, the
always-on service's): its ticks equal cron ticks, they see what other processes wrote
between them (a pause is never overwritten by a stale state), and a journal moved aside
or restored from a copy is let go of, never written to again."""

import os
import shutil

import pytest

from mmats.data import CandleStore, load
from mmats.live import control
from mmats.live.config import parse_config
from mmats.live.journal import Journal
from mmats.live.wiring import HeldJournal
from mmats.types import TradingState

FIVE_MINUTES = 300_000_000_000
SLEEVE = "ema:ETH/BTC"


def _config(folder, mode="paper"):
    return parse_config({
        "mode": mode,
        "markets": {"crypto": {"type": "crypto", "feed": "bittrex", "execution": "paper",
                               "symbols": ["ETH/BTC"], "timeframe": "5m"}},
        "models": [{"id": "ema", "strategy": "ema_cross", "market": "crypto",
                    "params": {"fast": 5, "slow": 20}, "costs": {"fee_bps": 10}}],
        "journal": str(folder / "journal.sqlite"),
        "data_root": str(folder / "data"),
    })


@pytest.fixture
def candles():
    return load("bittrex:ETH/BTC:5m").iloc[:300].reset_index(drop=True)


def _close(candles, bar):
    return candles["ts"].iloc[bar].value + FIVE_MINUTES


def _store(folder, candles):
    CandleStore(folder / "data").write("bittrex", "ETH/BTC", "5m", candles)


@pytest.mark.parametrize("mode", ["paper", "operator"])
def test_held_ticks_equal_cron_ticks_on_one_connection(tmp_path, candles, mode, monkeypatch):
    monkeypatch.setenv("MMATS_SECRETS_FILE", str(tmp_path / "secrets.enc"))
    monkeypatch.setenv("MMATS_SECRETS_PASSPHRASE", "held journal test")
    results, connections = {}, set()
    for way in ("cron", "held"):
        folder = tmp_path / way
        _store(folder, candles)
        config = _config(folder, mode)
        held = HeldJournal() if way == "held" else None
        for bar in range(60, 300):
            control.tick_once(config, now_ns=_close(candles, bar), held=held)
            if held is not None:
                connections.add(id(held.journal))
        if held is not None:
            held.close()
        with Journal(config.journal) as journal:
            report = journal.verify()
            assert report.ok and report.anchor_head_seq == report.head_seq, report.problems
            results[way] = (journal.load_state(SLEEVE).tobytes(),
                            [(r["ts_ns"], r["action"], r["qty"]) for r in journal.rows("signals")],
                            [(r["qty"], r["price"]) for r in journal.rows("fills")])
    assert len(connections) == 1  # one connection for all 240 ticks
    assert results["held"] == results["cron"]
    assert results["held"][2]  # it traded


def test_a_pause_written_between_held_ticks_is_obeyed(tmp_path, candles):
    _store(tmp_path, candles)
    config = _config(tmp_path)
    held = HeldJournal()
    for bar in range(60, 120):
        control.tick_once(config, now_ns=_close(candles, bar), held=held)
    control.pause(config, "ema", reason="test")  # another connection, under the lock
    for bar in range(120, 180):
        control.tick_once(config, now_ns=_close(candles, bar), held=held)
    with Journal(config.journal) as journal:
        state = journal.load_state(SLEEVE)[0]
    assert state["trading_state"] == int(TradingState.HALTED)
    assert state["last_bar_ts_ns"] == candles["ts"].iloc[179].value  # it kept ticking
    held.close()


@pytest.mark.parametrize("how", ["moved aside", "restored from a backup"])
def test_a_journal_replaced_between_ticks_is_let_go_of(tmp_path, candles, how):
    _store(tmp_path, candles)
    config = _config(tmp_path)
    backup = tmp_path / "backup"
    backup.mkdir()
    held = HeldJournal()
    for bar in range(60, 100):
        if bar == 80:  # a backup of the journal and its anchor, taken between ticks
            held.close()
            for path in (config.journal, config.journal_anchor):
                shutil.copy(path, backup / path.name)
        control.tick_once(config, now_ns=_close(candles, bar), held=held)
    first = held.journal
    if how == "moved aside":  # a new journal starts at the path
        aside = tmp_path / "aside"
        aside.mkdir()
        for path in tmp_path.glob("journal.sqlite*"):
            os.rename(path, aside / path.name)
    else:  # the backup put back: new files at the paths
        for path in (config.journal, config.journal_anchor):
            os.replace(shutil.copy(backup / path.name, tmp_path / "restoring"), path)
    control.tick_once(config, now_ns=_close(candles, 100), held=held)
    assert held.journal is not first and first._db is None  # let go of, a new one opened
    held.close()
    with Journal(config.journal, readonly=True) as journal:
        assert journal.verify().ok
        ticks = [row["bar_ts_ns"] for row in journal.rows("ticks")]
    assert candles["ts"].iloc[100].value in ticks  # the tick wrote to the file at the path
    if how == "moved aside":
        with Journal(aside / "journal.sqlite", readonly=True) as old:
            assert candles["ts"].iloc[100].value not in [
                row["bar_ts_ns"] for row in old.rows("ticks")]
