"""What the tick's per-bar savings must not change: a strategy's bad output is refused
with the full check's error wherever it is in the window, a journal connection that
remembers the states it saved still sees another writer's (and a forger's) rows and
forgets a rolled-back save, and the kill switch's check made once per tick still sees a
request written after it was made."""

import sqlite3

import numpy as np
import pytest

from mmats.data import load
from mmats.errors import StrategyError
from mmats.live import kill
from mmats.live.config import parse_config
from mmats.live.journal import Journal, JournalError, row_hash
from mmats.live.replay import replay
from mmats.sleeve import new_state
from mmats.strategy import load_strategy, validate_output

T0 = 1_700_000_000_000_000_000
SLEEVE = "m0:ETH/BTC"


def _exposure(n=50, **at):
    values = np.full(n, np.nan)
    values[10:] = 0.5
    for index, value in at.items():
        values[int(index[1:])] = value
    return values


@pytest.mark.parametrize(("raw", "message"), [
    (_exposure(b3=1.5), r"exposure 1\.5 at bar 3 is outside \[-1, 1\] \(1 bars in all\)"),
    (_exposure(b3=-np.inf, b40=2.0), r"exposure -inf at bar 3 is outside .* \(2 bars in all\)"),
    ((_exposure(), np.r_[np.full(49, 0.1), 0.0]),
     r"stop_distance 0\.0 at bar 49 must be > 0 or NaN \(1 bars in all\)"),
    ((_exposure(), np.full(50, np.nan), np.r_[-1.0, np.full(49, np.nan)]),
     r"take_profit_distance -1\.0 at bar 0 must be > 0 or NaN"),
    (_exposure().astype(np.float32), r"exposure has dtype float32; it must be float64"),
    (_exposure()[:49], r"exposure has shape \(49,\); expected \(50,\)"),
    (list(_exposure()), r"exposure must be a numpy array, got list"),
    ((_exposure(),) * 4, r"returned a tuple of 4 items"),
])
def test_a_bad_output_is_refused_with_the_full_checks_error(raw, message):
    with pytest.raises(StrategyError, match=message):
        validate_output("s", raw, 50)


def test_a_good_output_comes_back_as_it_was_given():
    exposure, stop = _exposure(b20=-1.0, b21=1.0), np.r_[np.full(25, np.nan), np.full(25, 2.5)]
    output = validate_output("s", (exposure, stop), 50)
    assert output.exposure is exposure and output.stop_distance is stop
    assert output.take_profit_distance is None
    assert validate_output("s", np.empty(0), 0).exposure.shape == (0,)


BAD_EARLY = """
import numpy as np
PARAMS = {"n": [5]}
DEFAULTS = {"n": 5}
WARMUP = 5

def signal(open, high, low, close, volume, n):
    exposure = np.full(close.shape[0], 0.5)
    if close.shape[0] > 60:
        exposure[3] = 1.5  # out of range early in the window, fine at its last bar
    return exposure
"""


def test_a_tick_refuses_a_window_with_a_bad_value_before_its_last_bar(
        tmp_path, write_strategy):
    path = write_strategy("bad_early", BAD_EARLY)
    strategy = load_strategy(path)
    arrays = {name: np.full(80, 1.0) for name in ("open", "high", "low", "close", "volume")}
    with pytest.raises(StrategyError) as by_run:
        strategy.run(arrays, {"n": 5})
    with pytest.raises(StrategyError) as by_resolved:
        strategy.run_resolved(arrays, strategy.resolve_params({"n": 5}))
    assert str(by_resolved.value) == str(by_run.value)
    config = parse_config({
        "mode": "paper",
        "markets": {"crypto": {"type": "crypto", "feed": "bittrex", "execution": "paper",
                               "symbols": ["ETH/BTC"], "timeframe": "5m"}},
        "models": [{"id": "m0", "strategy": str(path), "market": "crypto", "allocation": 1.0}],
        "journal": str(tmp_path / "journal.sqlite"), "data_root": str(tmp_path / "data")})
    candles = load("bittrex:ETH/BTC:5m").iloc[:100].reset_index(drop=True)
    with pytest.raises(StrategyError, match=r"exposure 1\.5 at bar 3 is outside"):
        replay(config, {"ETH/BTC": candles}, tmp_path / "replay.sqlite")


def _state(bars):
    state = new_state(10_000.0)
    state["bars"] = bars
    return state


def test_a_connection_sees_the_states_another_one_saved(tmp_path):
    path = tmp_path / "journal.sqlite"
    with Journal(path) as ours, Journal(path) as theirs:
        with ours.transaction():
            ours.save_state(SLEEVE, _state(1), ts_ns=T0)
        assert ours.load_states([SLEEVE, "other"])[SLEEVE]["bars"][0] == 1  # known now
        theirs.save_state(SLEEVE, _state(2), ts_ns=T0 + 1)
        assert ours.load_state(SLEEVE)["bars"][0] == 2
        theirs.save_state("other", _state(7), ts_ns=T0 + 2)
        assert ours.load_state("other")["bars"][0] == 7
        with ours.transaction():
            ours.save_state(SLEEVE, _state(3), ts_ns=T0 + 3)
        assert theirs.load_state(SLEEVE)["bars"][0] == ours.load_state(SLEEVE)["bars"][0] == 3


def test_a_rolled_back_save_is_forgotten(tmp_path):
    with Journal(tmp_path / "journal.sqlite") as journal:
        with journal.transaction():
            journal.save_state(SLEEVE, _state(1), ts_ns=T0)
        journal.load_state(SLEEVE)
        with pytest.raises(RuntimeError), journal.transaction():
            journal.save_state(SLEEVE, _state(2), ts_ns=T0 + 1)
            raise RuntimeError("crash inside the close")
        assert journal.load_state(SLEEVE)["bars"][0] == 1
        loaded = journal.load_state(SLEEVE)
        loaded["bars"] = 99  # a caller's copy: changing it changes nothing kept
        assert journal.load_state(SLEEVE)["bars"][0] == 1


def test_many_closes_on_one_connection_load_what_a_fresh_one_loads(tmp_path):
    path = tmp_path / "journal.sqlite"
    with Journal(path) as journal:
        for step in range(30):
            assert journal.load_state(SLEEVE) is None or \
                journal.load_state(SLEEVE)["bars"][0] == step - 1
            with journal.transaction():
                journal.append_tick("ETH/BTC", T0 + step, 1.0, 1.0, 1.0, 1.0, 1.0, ts_ns=T0 + step)
                journal.save_state(SLEEVE, _state(step), ts_ns=T0 + step)
        kept = journal.load_states([SLEEVE, "never"])
    with Journal(path) as fresh:
        again = fresh.load_states([SLEEVE, "never"])
    assert kept[SLEEVE].tobytes() == again[SLEEVE].tobytes() and kept["never"] is again["never"]


def test_a_forged_state_appended_meanwhile_is_refused(tmp_path):
    path = tmp_path / "journal.sqlite"
    with Journal(path, sign=True) as journal:
        with journal.transaction():
            journal.save_state(SLEEVE, _state(1), ts_ns=T0)
        assert journal.load_state(SLEEVE)["bars"][0] == 1  # known to this connection
        db = sqlite3.connect(path)  # a forger without the key appends a richer state
        seq, prev_hash = db.execute(
            "SELECT seq, hash FROM chain ORDER BY seq DESC LIMIT 1").fetchone()
        dtype_text, blob = db.execute(
            "SELECT dtype, state FROM sleeve_states ORDER BY seq DESC LIMIT 1").fetchone()
        rich = np.frombuffer(blob, dtype=_state(0).dtype).copy()
        rich["cash"] = 1e9
        payload = {"sleeve_id": SLEEVE, "dtype": dtype_text, "state": rich.tobytes()}
        digest = row_hash("sleeve_states", seq + 1, T0 + 9, payload, prev_hash)
        db.execute("INSERT INTO sleeve_states (seq, ts_ns, sleeve_id, dtype, state, prev_hash, "
                   "hash) VALUES (?, ?, ?, ?, ?, ?, ?)",
                   (seq + 1, T0 + 9, *payload.values(), prev_hash, digest))
        db.execute("INSERT INTO chain (seq, table_name, hash, sig) VALUES (?, ?, ?, NULL)",
                   (seq + 1, "sleeve_states", digest))
        db.commit()
        db.close()
        with pytest.raises(JournalError, match=f"sleeve_states seq {seq + 1} .* signature"):
            journal.load_state(SLEEVE)


def test_the_kill_check_made_once_sees_a_later_request(tmp_path):
    path = tmp_path / "journal.sqlite"
    killed = kill.kill_check(path)
    assert not killed() and not kill.is_killed(path)
    kill.write_request(path, kill.new_request("tester", "test"))
    assert killed() and kill.is_killed(str(path))
    kill.clear_request(path)
    assert not killed()


@pytest.mark.parametrize("value", [
    "ETH/BTC", 'quote " and \\ backslash', "naïve €", "\x00\n\t", "", 0, -1, 2**70, 1.5,
    -0.0, 1e-300, 1.7976931348623157e308, 0.1 + 0.2, float("nan"), float("inf"),
    float("-inf"), None, b"\x00\xffstate", '{"a":1}'])
def test_a_rows_hash_text_is_the_canonical_encoders(value):
    from mmats.live.journal_layout import _CANONICAL, _flat_row_text

    payload = {"zeta": value, "alpha": 1.25, "model_id": "m0", "Upper": value}
    expected = _CANONICAL.encode({
        "table": "signals", "seq": 7, "ts_ns": T0, "prev_hash": "ab" * 32,
        "payload": {k: v.hex() if isinstance(v, bytes) else v for k, v in payload.items()}})
    assert _flat_row_text("signals", 7, T0, payload, "ab" * 32) == expected
    assert _flat_row_text("signals", 7, T0, {"x": np.float64(1.0)}, "ab") is None
