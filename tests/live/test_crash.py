"""Crash-only: kill -9 the runner at random moments during its ticks; a restart continues
from the journal with no duplicate order, no lost or broken row, and ends exactly where an
uninterrupted run ends."""

import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from mmats.data import load
from mmats.live.config import parse_config
from mmats.live.journal import Journal
from mmats.live.replay import replay

BARS = 3000  # long enough to time: the kills are spread over its run
CONFIG = {
    "mode": "paper",
    "markets": {"crypto": {"type": "crypto", "feed": "bittrex", "execution": "paper",
                           "symbols": ["ETH/BTC"], "timeframe": "5m"}},
    "models": [
        {"id": "ema", "strategy": "ema_cross", "market": "crypto", "allocation": 0.5,
         "params": {"fast": 5, "slow": 20}, "costs": {"fee_bps": 10}},
        {"id": "donchian", "strategy": "donchian_breakout", "market": "crypto",
         "allocation": 0.5, "params": {"channel": 10}, "costs": {"fee_bps": 10}},
    ],
}
CHILD = textwrap.dedent("""
    import sys
    from mmats.data import load
    from mmats.live.config import parse_config
    from mmats.live.replay import replay
    config = parse_config({config!r})
    candles = {{"ETH/BTC": load("bittrex:ETH/BTC:5m").iloc[:{bars}]}}
    print("ready", flush=True)
    replay(config, candles, sys.argv[1])
    print("done", flush=True)
""")


@pytest.mark.slow
def test_kill_9_during_ticks_then_restart(tmp_path):
    path = tmp_path / "crash.sqlite"
    child_source = CHILD.format(config=CONFIG, bars=BARS)
    killed_mid_run = _kill_repeatedly(path, child_source, 50, random.Random(11))
    assert killed_mid_run >= 40
    finished = subprocess.run([sys.executable, "-c", child_source, str(path)],
                              capture_output=True, text=True, timeout=900)
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.split()[-1] == "done"

    clean = replay(parse_config(CONFIG), {"ETH/BTC": load("bittrex:ETH/BTC:5m").iloc[:BARS]},
                   tmp_path / "clean.sqlite")
    with Journal(path) as journal:
        assert journal.verify().ok
        fills = journal.fills_frame()
        orders = journal.rows("orders")
        states = [r for r in journal.rows("sleeve_states")
                  if not r["sleeve_id"].startswith("__book__")]
        ticks = journal.rows("ticks")
    # every bar of every sleeve journaled exactly once: nothing lost, nothing twice
    assert len(states) == len(ticks) == 2 * BARS
    client_ids = [row["client_order_id"] for row in orders]
    assert len(client_ids) == len(set(client_ids))
    np.testing.assert_array_equal(fills["bar"].to_numpy(), clean.fills["bar"])
    np.testing.assert_allclose(fills["price"].to_numpy(), clean.fills["price"], rtol=1e-12)
    np.testing.assert_allclose(fills["qty"].to_numpy(), clean.fills["qty"], rtol=1e-12)
    with Journal(path) as journal:
        for sleeve_id, state in clean.states.items():
            assert journal.load_state(sleeve_id).tobytes() == state.tobytes()


def _kill_repeatedly(path, child_source, trials, rng) -> int:
    """Start the child, SIGKILL it at a random moment after it journals a new row, check
    the journal's chain; ``trials`` times. Returns how many kills landed mid-run.

    The moments are uniform over a window scaled to the child's own uninterrupted run
    (timed first, in a scratch journal beside ``path``): the kills let through about 60 %
    of the run in all, whatever the machine's speed (a fixed window let a faster runner
    finish before most kills landed)."""
    max_wait_s = 1.2 * _run_seconds(child_source, path.with_name("timing.sqlite")) / trials
    killed_mid_run = 0
    for _ in range(trials):
        before = _rows(path)
        child = subprocess.Popen([sys.executable, "-c", child_source, str(path)],
                                 stdout=subprocess.PIPE, text=True)
        assert child.stdout.readline().strip() == "ready"
        # kill while new bars are being journaled, not while the restart re-reads old ones
        while _rows(path) == before and child.poll() is None:
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, max_wait_s))
        child.send_signal(signal.SIGKILL)
        child.wait()
        killed_mid_run += child.returncode == -signal.SIGKILL
        child.stdout.close()
        with Journal(path) as journal:
            report = journal.verify()
            assert report.ok, report.problems
    return killed_mid_run


def _run_seconds(child_source, path) -> float:
    """How long the child takes from "ready" to "done", uninterrupted."""
    child = subprocess.Popen([sys.executable, "-c", child_source, str(path)],
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "ready"
    start = time.monotonic()
    assert child.stdout.readline().strip() == "done"
    seconds = time.monotonic() - start
    child.wait()
    child.stdout.close()
    return seconds


def _rows(path) -> int:
    """Rows in the journal, read through a separate connection (WAL lets it read)."""
    if not path.exists():
        return 0
    connection = sqlite3.connect(path, timeout=30)
    try:
        return connection.execute("SELECT count(*) FROM chain").fetchone()[0]
    except sqlite3.OperationalError:  # the schema is not there yet
        return 0
    finally:
        connection.close()


def test_restart_after_the_last_bar_does_nothing(tmp_path):
    config = parse_config(CONFIG)
    candles = {"ETH/BTC": load("bittrex:ETH/BTC:5m").iloc[:300]}
    first = replay(config, candles, tmp_path / "j.sqlite")
    again = replay(config, candles, tmp_path / "j.sqlite")
    assert again.final_equity == first.final_equity
    assert len(again.fills) == len(first.fills)
    with Journal(tmp_path / "j.sqlite") as journal:
        assert len(journal.rows("ticks")) == 2 * 300


# Long enough to time (the kills are spread over the run, see _kill_repeatedly).
OPERATOR_BARS = 800
OPERATOR_CHILD = CHILD.replace("replay(config, candles, sys.argv[1])",
                               "replay(config, candles, sys.argv[1], mode='operator')")


@pytest.mark.slow
def test_kill_9_in_operator_mode_never_doubles_an_order(tmp_path):
    """Operator mode against the paper venue: the venue's order log, the journal's fills
    and the positions after 30 kills and restarts equal an uninterrupted run's."""
    config = {**CONFIG, "mode": "operator"}
    path = tmp_path / "crash.sqlite"
    child_source = OPERATOR_CHILD.format(config=config, bars=OPERATOR_BARS)
    killed_mid_run = _kill_repeatedly(path, child_source, 30, random.Random(5))
    assert killed_mid_run >= 20
    finished = subprocess.run([sys.executable, "-c", child_source, str(path)],
                              capture_output=True, text=True, timeout=900)
    assert finished.returncode == 0, finished.stderr

    clean_path = tmp_path / "clean.sqlite"
    clean = replay(parse_config(config),
                   {"ETH/BTC": load("bittrex:ETH/BTC:5m").iloc[:OPERATOR_BARS]}, clean_path,
                   mode="operator")
    crashed_log, clean_log = _venue_log(tmp_path / "crash"), _venue_log(tmp_path / "clean")
    assert len(clean_log) > 10
    assert crashed_log == clean_log  # same orders, same ids, once each
    with Journal(path) as journal:
        assert journal.verify().ok
        fills = journal.fills_frame()
        ticks = journal.rows("ticks")
        states = {sleeve_id: journal.load_state(sleeve_id) for sleeve_id in clean.states}
    assert len(ticks) == 2 * OPERATOR_BARS
    np.testing.assert_array_equal(fills["bar"].to_numpy(), clean.fills["bar"])
    np.testing.assert_array_equal(fills["price"].to_numpy(), clean.fills["price"])
    np.testing.assert_array_equal(fills["qty"].to_numpy(), clean.fills["qty"])
    for sleeve_id, state in clean.states.items():
        for field in ("position", "cash", "equity", "n_trades"):
            assert states[sleeve_id][0][field] == state[0][field], (sleeve_id, field)


def _venue_log(stem):
    venue = sqlite3.connect(f"{stem}.crypto.paper.sqlite")
    try:
        return venue.execute("SELECT client_order_id, side, qty, filled_qty, avg_price, fee "
                             "FROM orders ORDER BY seq").fetchall()
    finally:
        venue.close()
