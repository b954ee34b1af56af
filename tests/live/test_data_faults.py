"""Bad data cannot jam the safety checks: a bad bar that reached the store anyway (a
file written behind the store's back) is journaled as a data fault and skipped, the
stale-data halt still fires when no good bar follows, and a tick that fails the same way
again and again ends in a halt with one notification."""

import numpy as np

from mmats.data import CandleStore, load
from mmats.live import control
from mmats.live.config import parse_config
from mmats.live.journal import Journal
from mmats.live.kill import is_killed

FIVE_MINUTES = 300_000_000_000


def _setup(tmp_path):
    candles = load("bittrex:ETH/BTC:5m").iloc[:400].reset_index(drop=True)
    store = CandleStore(tmp_path / "data")
    store.write("bittrex", "ETH/BTC", "5m", candles.iloc[:250])
    config = parse_config({
        "mode": "paper",
        "markets": {"crypto": {"type": "crypto", "feed": "bittrex", "execution": "paper",
                               "symbols": ["ETH/BTC"], "timeframe": "5m"}},
        "models": [{"id": "ema", "strategy": "ema_cross", "market": "crypto",
                    "params": {"fast": 5, "slow": 20}}],
        "notifications": [f"file://{tmp_path / 'notes.log'}"],
        "journal": str(tmp_path / "journal.sqlite"), "data_root": str(tmp_path / "data"),
    })
    return config, store, candles


def _write_behind_the_stores_back(store, frame):
    path = store.path("bittrex", "ETH/BTC", "5m")
    frame.to_parquet(path, index=False)


def _close(candles, bar):
    return candles["ts"].iloc[bar].value + FIVE_MINUTES


def _events(config, kind):
    with Journal(config.journal) as journal:
        return [r for r in journal.rows("risk_events") if r["kind"] == kind]


def test_a_bad_bar_is_journaled_once_and_skipped(tmp_path):
    config, store, candles = _setup(tmp_path)
    control.tick_once(config, now_ns=_close(candles, 249))
    bad = candles.iloc[:261].copy()
    bad.loc[255, "high"] = np.inf
    _write_behind_the_stores_back(store, bad)
    report = control.tick_once(config, now_ns=_close(candles, 260))
    assert report.bars == 10  # 250..260 less the bad bar 255
    assert [title for title, _ in report.alerts] == ["MMATS data fault"]
    (fault,) = _events(config, "data_fault")
    assert "ETH/BTC" in fault["message"] and "high" in fault["message"]
    status = control.status(config)["ema:ETH/BTC"]
    assert status["last_bar_ts_ns"] == candles["ts"].iloc[260].value
    assert status["trading_state"] == "ACTIVE"
    # the bad bar in later trailing windows is not news again
    bad = candles.iloc[:263].copy()
    bad.loc[255, "high"] = np.inf
    _write_behind_the_stores_back(store, bad)
    again = control.tick_once(config, now_ns=_close(candles, 262))
    assert again.bars == 2 and again.alerts == []
    assert len(_events(config, "data_fault")) == 1


def test_a_bad_newest_bar_still_ends_in_the_stale_halt(tmp_path):
    config, store, candles = _setup(tmp_path)
    control.tick_once(config, now_ns=_close(candles, 249))
    bad = candles.iloc[:251].copy()
    bad.loc[250, "close"] = -1.0
    _write_behind_the_stores_back(store, bad)
    for bar in range(250, 255):  # the feed serves nothing good after bar 249
        control.tick_once(config, now_ns=_close(candles, bar))
    assert control.status(config)["ema:ETH/BTC"]["trading_state"] == "HALTED"
    assert len(_events(config, "stale_data")) == 1
    assert len(_events(config, "data_fault")) == 1


def test_a_tick_failing_again_and_again_halts_and_notifies_once(tmp_path):
    config, store, candles = _setup(tmp_path)
    control.tick_once(config, now_ns=_close(candles, 249))
    store.path("bittrex", "ETH/BTC", "5m").write_bytes(b"not a parquet file")
    failures = 0
    for bar in range(250, 256):
        try:
            control.tick_once(config, now_ns=_close(candles, bar))
        except Exception:  # noqa: BLE001 - the tick fails; the runner must not loop forever
            failures += 1
    assert failures == 6
    assert is_killed(config.journal)
    assert control.status(config)["ema:ETH/BTC"]["trading_state"] == "HALTED"
    notes = (tmp_path / "notes.log").read_text()
    assert notes.count("MMATS kill") == 1 and "3 ticks in a row failed" in notes
