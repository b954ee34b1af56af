"""Every journaled signal tells, gate by gate, how the strategy's value became an order or
did not (``meta``: value, gates, decision, reason), by the kernel's own functions: a
sized decision's exposure is the state's target, a vetoed one set none, and a veto by a
full book names its scope and limit."""

import json
from pathlib import Path

import numpy as np
import pytest

from mmats.data import load
from mmats.live.config import load_config
from mmats.live.gates import explain
from mmats.live.journal import Journal
from mmats.live.portfolio import blocking_limit, blocks_new_exposure, scopes
from mmats.live.replay import replay
from mmats.live.sleeves import sleeves
from mmats.sleeve import new_state
from mmats.types import STATE_DTYPE, FillReason, TradingState

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "mmats" / "data" / "sample"
SIGNAL = int(FillReason.SIGNAL)


def write_config(folder: Path, *changes: tuple[str, str]) -> Path:
    """configs/paper_multi_market.yaml with its journal in ``folder``, the bundled sample
    candles as its store and each ``(old, new)`` text change made (each must apply)."""
    text = (REPO / "configs" / "paper_multi_market.yaml").read_text()
    for old, new in changes:
        assert old in text, old
        text = text.replace(old, new)
    lines = []
    for line in text.splitlines():
        if line.startswith("journal:"):
            line = f"journal: {folder / 'journal.sqlite'}"
        elif line.startswith("data_root:"):
            line = f"data_root: {SAMPLE}"
        lines.append(line)
    path = folder / "paper.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def candles_of(config, bars: int) -> dict:
    return {symbol: load(f"{market.feed}:{symbol}:{market.timeframe}",
                         root=config.data_root).iloc[:bars].reset_index(drop=True)
            for market in config.markets for symbol in market.symbols}


@pytest.fixture(scope="module")
def capped(tmp_path_factory):
    """A paper replay of the example with the crypto market's max_open_positions at 1:
    its two models on ETH/BTC compete for one position. Returns (config, signal rows
    with their meta parsed, the state journaled with each signal)."""
    folder = tmp_path_factory.mktemp("capped")
    config = load_config(write_config(folder, ("max_pos: 2,", "max_pos: 1,")))
    replay(config, candles_of(config, 300), config.journal)
    with Journal(config.journal) as journal:
        signals = journal.rows("signals")
        states = {(row["sleeve_id"], row["ts_ns"]):
                  np.frombuffer(row["state"], dtype=STATE_DTYPE)[0]
                  for row in journal.rows("sleeve_states")
                  if not row["sleeve_id"].startswith("__book__")}  # the scopes' books
    for row in signals:
        row["meta"] = json.loads(row["meta"])
    return config, signals, states


def state_of(states, row):
    return states[(f"{row['model_id']}:{row['symbol']}", row["ts_ns"])]


def set_by_the_signal(state, row) -> bool:
    return state["target_ts_ns"] == row["ts_ns"] and state["target_reason"] == SIGNAL \
        and not np.isnan(state["target"])


def test_a_vetoed_entry_names_the_full_book(capped):
    config, signals, states = capped
    vetoed = [r for r in signals if r["meta"]["decision"] == "vetoed"
              and r["meta"]["vetoed_by"] == "upper_limits"]
    assert vetoed, "the capped book never vetoed an entry: the test has nothing to check"
    for row in vetoed:
        meta = row["meta"]
        assert row["model_id"] in ("crypto_ema_cross", "crypto_donchian")
        assert "market:crypto max_open_positions (1/1 open)" in meta["reason"]
        upper = next(g for g in meta["gates"] if g["gate"] == "upper_limits")
        assert upper["blocked_by"] == "market:crypto max_open_positions (1/1 open)"
        assert meta["gates"][-1] == {"gate": "trading_state", "state": "REDUCING",
                                     "from": meta["gates"][2]["to"], "to": None}
        assert not set_by_the_signal(state_of(states, row), row)  # nothing was ordered
        assert state_of(states, row)["position"] == 0.0
        # the other crypto model holds the one position the market allows
        other = "crypto_donchian" if row["model_id"] == "crypto_ema_cross" \
            else "crypto_ema_cross"
        held = states[(f"{other}:ETH/BTC", row["ts_ns"])]
        assert held["position"] != 0.0 or (not np.isnan(held["target"])
                                           and held["target"] != 0.0)


def test_every_decision_is_what_the_kernel_did(capped):
    config, signals, states = capped
    kinds = {"hold": 0, "sized": 0, "vetoed": 0}
    for row in signals:
        meta, state = row["meta"], state_of(states, row)
        kinds[meta["decision"]] += 1
        assert isinstance(meta["reason"], str) and meta["reason"]
        assert meta["gates"][0]["gate"] == "signal"
        assert len(json.dumps(meta)) < 1000  # short: one line on a screen
        if meta["decision"] == "sized":
            final = meta["gates"][-1]
            assert final["gate"] == "trading_state"
            assert set_by_the_signal(state, row)
            assert state["target"] == final["to"] == meta["target_exposure"]
            assert meta["target_by"] == "signal"
            sizing = meta["gates"][1]
            assert sizing["exposure"] == meta["value"] * sizing["scale"]
        else:
            assert not set_by_the_signal(state, row)
        if meta["decision"] == "hold":
            assert meta["value"] is None or meta["value"] == state["last_signal"]
        if meta["decision"] == "vetoed":
            assert meta["vetoed_by"] in {g["gate"] for g in meta["gates"]}
    assert all(kinds.values()), kinds  # each kind of decision was met


def test_the_explanation_changes_nothing_and_follows_each_gate(capped):
    config = capped[0]
    by_id = {s.id: s for s in sleeves(config, 10_000.0)}
    ema, rsi = by_id["crypto_ema_cross:ETH/BTC"], by_id["forex_rsi:EUR/USD"]
    state = new_state(5_000.0)
    state[0]["last_close"], state[0]["bars"] = 0.09, 10
    before = state.tobytes()
    blocking = ("market:crypto", "max_open_positions", "1/1 open")
    vetoed = explain(state, ema.cfg[0], 1.0, blocking)
    assert state.tobytes() == before  # the REDUCING probe is a copy
    assert vetoed["decision"] == "vetoed" and vetoed["vetoed_by"] == "upper_limits"
    assert explain(state, ema.cfg[0], 1.0, None)["decision"] == "sized"
    assert explain(state, ema.cfg[0], float("nan"), None)["gates"] == [
        {"gate": "signal", "result": "no opinion (NaN)"}]
    clipped = explain(state, ema.cfg[0], 3.0, None)  # the crypto sleeve's leverage is 1
    assert clipped["gates"][2] == {"gate": "clip", "limit": "max_leverage 1", "from": 3.0,
                                   "to": 1.0}
    # volatility targeting cannot size before the closes have moved
    cannot = explain(state, rsi.cfg[0], 1.0, None)
    assert cannot["vetoed_by"] == "sizing" and "volatility" in cannot["reason"]
    assert explain(state, rsi.cfg[0], 0.0, None)["decision"] == "sized"  # flat needs none
    state[0]["trading_state"] = int(TradingState.HALTED)
    halted = explain(state, ema.cfg[0], 1.0, None)
    assert halted["vetoed_by"] == "trading_state" and "HALTED" in halted["reason"]
    state[0]["position"] = 10_000.0
    flat = explain(state, ema.cfg[0], 1.0, None)  # a halted sleeve may only go flat
    assert flat["decision"] == "sized" and flat["gates"][-1]["to"] == 0.0
    assert "only to flat" in flat["reason"]
    assert json.dumps([vetoed, clipped, cannot, halted, flat])  # JSON as it is


def test_blocking_limit_names_the_first_scope_and_limit(capped):
    config = capped[0]  # crypto: max_open_positions 1, leverage 1; global: leverage 2
    all_sleeves = sleeves(config, 10_000.0)
    states = {s.id: new_state(s.cash) for s in all_sleeves}  # crypto 6000 + 4000, 10000 each
    for state in states.values():
        state[0]["last_close"] = 1.0
    found = scopes(config, all_sleeves)
    of = {s.id: [b for b in found if s.id in b.sleeve_ids] for s in all_sleeves}
    ema, donchian = "crypto_ema_cross:ETH/BTC", "crypto_donchian:ETH/BTC"

    def limit(sleeve_id):
        result = blocking_limit(of[sleeve_id], sleeve_id, states)
        assert blocks_new_exposure(of[sleeve_id], sleeve_id, states) == (result is not None)
        return result

    assert limit(donchian) is None
    states[ema][0]["position"] = 1_000.0
    assert limit(donchian) == ("market:crypto", "max_open_positions", "1/1 open")
    assert limit(ema) is None  # a sleeve holding a position is not counted out
    assert limit("forex_rsi:EUR/USD") is None  # another market's book
    states[donchian][0]["position"] = 1.0
    states[ema][0]["position"] = 12_000.0  # 12001 held against the market's 10000
    assert limit(donchian) == ("market:crypto", "max_leverage", "gross 1.2x >= 1x equity")
    states[ema][0]["position"] = 70_000.0  # 70001 against 2 x 30000 of the whole run
    assert limit(donchian) == ("global", "max_leverage", "gross 2.333x >= 2x equity")
