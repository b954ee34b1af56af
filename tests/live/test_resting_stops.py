"""Protective stops resting at the paper venue (operator mode): an entry's stop-loss and
take-profit rest at the venue with the kernel's levels, follow the kernel when it moves
them, are cancelled on exit and by the kill, and a venue-side stop fill (while no tick
runs) is booked as the kernel's own stop fill — with the operator replay still equal to
the backtest.

The strategy is scripted in the candles' volume column (last digit: 1 flat, 2 half
long, 3 long, 0 keep), its stop and take-profit a fixed percentage of the close."""

import sqlite3
import textwrap

import numpy as np
import pandas as pd
import pytest

from mmats.backtest import backtest
from mmats.brokers.paper import PaperBroker
from mmats.brokers.replay import ReplayFeed
from mmats.live import control
from mmats.live.config import parse_config
from mmats.live.journal import Journal
from mmats.live.replay import replay
from mmats.live.tick import run_tick
from mmats.types import FillReason, TradingState

SCRIPTED = textwrap.dedent('''
    """Exposure scripted by the last digit of the volume; percentage stops."""
    import numpy as np
    from numba import njit

    PARAMS = {"stop_pct": [1.0], "take_pct": [0.0, 2.0]}
    DEFAULTS = {"stop_pct": 1.0, "take_pct": 2.0}


    def warmup(stop_pct, take_pct):
        return 1


    @njit(cache=False)
    def signal(open, high, low, close, volume, stop_pct, take_pct):
        n = close.shape[0]
        exposure = np.full(n, np.nan)
        stop = np.full(n, np.nan)
        take = np.full(n, np.nan)
        for i in range(n):
            code = int(round(volume[i])) % 10
            if code == 1:
                exposure[i] = 0.0
            elif code == 2:
                exposure[i] = 0.5
            elif code == 3:
                exposure[i] = 1.0
            stop[i] = close[i] * stop_pct / 100.0
            if take_pct > 0:
                take[i] = close[i] * take_pct / 100.0
        return exposure, stop, take
''')
SLEEVE = "scripted:ETH/BTC"


def strategy_file(tmp_path):
    path = tmp_path / "scripted.py"
    path.write_text(SCRIPTED)
    return path


def config_for(tmp_path, take_pct=2.0):
    return parse_config({
        "mode": "operator",
        "markets": {"crypto": {"type": "crypto", "feed": "bittrex", "execution": "paper",
                               "symbols": ["ETH/BTC"], "timeframe": "5m"}},
        "models": [{"id": "scripted", "strategy": str(strategy_file(tmp_path)),
                    "market": "crypto", "params": {"stop_pct": 1.0, "take_pct": take_pct},
                    "costs": {"fee_bps": 10}}],
        "journal": str(tmp_path / "journal.sqlite"),
        "data_root": str(tmp_path / "data"),
        "notifications": [f"file://{tmp_path / 'notes.log'}"],
    })


def scripted_candles(closes, codes, spread=0.001):
    """Chained bars (each opens at the previous close) through ``closes``, the volume's
    last digit carrying ``codes``."""
    close = np.asarray(closes, dtype=float)
    open_ = np.concatenate([[close[0]], close[:-1]])
    return pd.DataFrame({
        "ts": pd.date_range("2024-01-01", periods=len(close), freq="5min", tz="UTC"),
        "open": open_, "high": np.maximum(open_, close) * (1 + spread),
        "low": np.minimum(open_, close) * (1 - spread), "close": close,
        "volume": 100.0 + np.asarray(codes, dtype=float)})


def random_scripted(bars=400, seed=5):
    """A random walk, entering half, adding to full, reducing and leaving on a 16-bar cycle:
    stops, take-profits, moved stops and reductions all happen."""
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.004, bars)))
    cycle = {0: 2, 3: 3, 7: 2, 11: 1}
    codes = [cycle.get(i % 16, 0) for i in range(bars)]
    return scripted_candles(close, codes, spread=0.002)


class Rig:
    """One tick per chosen bar close against the paper venue."""

    def __init__(self, tmp_path, candles, take_pct=2.0):
        self.config = config_for(tmp_path, take_pct)
        self.feed = ReplayFeed({"ETH/BTC": candles}, "5m")
        self.closes = self.feed.close_times("ETH/BTC")
        self.now = 0
        self.venue = PaperBroker(tmp_path / "venue.sqlite", self.feed, "5m", cash=10_000,
                                 fee_bps=10, symbols=["ETH/BTC"], clock=lambda: self.now)

    def tick(self, index):
        self.now = int(self.closes[index])
        with Journal(self.config.journal) as journal:
            return run_tick(self.config, {"crypto": self.feed}, journal, self.now,
                            mode="operator", brokers={"crypto": self.venue})

    def state(self):
        with Journal(self.config.journal) as journal:
            return journal.load_state(SLEEVE)[0]

    def rows(self, table, where="", params=()):
        with Journal(self.config.journal) as journal:
            return journal.rows(table, where, params)

    def legs(self):
        """The protective legs resting at the venue, by type."""
        return {o["type"]: o for o in self.venue.open_orders()
                if o.get("type") in ("stop_loss", "take_profit")}


def test_operator_replay_with_resting_stops_equals_the_backtest(tmp_path):
    candles = random_scripted()
    config = config_for(tmp_path)
    result = replay(config, {"ETH/BTC": candles}, tmp_path / "journal.sqlite",
                    mode="operator")
    expected = backtest(str(strategy_file(tmp_path)), candles,
                        params={"stop_pct": 1.0, "take_pct": 2.0}, fee_bps=10)
    reasons = set(expected.fills["reason"].tolist())
    assert {int(FillReason.STOP_LOSS), int(FillReason.TAKE_PROFIT)} <= reasons
    np.testing.assert_allclose(result.equity.iloc[:, 0].to_numpy(),
                               expected.equity.to_numpy(), rtol=1e-9)
    fills = result.fills
    for column in ("bar", "side", "reason"):
        np.testing.assert_array_equal(fills[column], expected.fills[column])
    for column in ("qty", "price", "fee"):
        np.testing.assert_allclose(fills[column], expected.fills[column], rtol=1e-9)
    assert result.trades == expected.metrics["trades"]
    venue = sqlite3.connect(tmp_path / "journal.crypto.paper.sqlite")
    log = venue.execute("SELECT client_order_id, filled_qty, avg_price FROM orders "
                        "WHERE status = 'filled' ORDER BY seq").fetchall()
    resting = venue.execute("SELECT COUNT(*) FROM stops WHERE status = 'open'").fetchone()[0]
    venue.close()
    with Journal(tmp_path / "journal.sqlite") as journal:
        journaled = journal.rows("fills")
        assert journal.verify().ok
    assert [r[0] for r in log] == [f["client_order_id"] for f in journaled]
    assert [r[1] for r in log] == pytest.approx([f["qty"] for f in journaled], rel=1e-12)
    held = float(result.states[SLEEVE][0]["position"])
    assert resting == (2 if held else 0)


def rising_then(drop_to, bars_up=6):
    """Flat at 100 for 3 bars, enter long at the 3rd close, drift up, then ``drop_to``."""
    closes = [100.0] * 3 + [100.0 + 0.1 * i for i in range(1, bars_up + 1)] + [drop_to] * 3
    codes = [1, 1, 3] + [0] * (len(closes) - 3)
    return scripted_candles(closes, codes, spread=0.0005)


def test_an_entry_rests_a_stop_and_take_profit_with_the_kernels_levels(tmp_path):
    rig = Rig(tmp_path, rising_then(100.5))
    for index in range(3):
        rig.tick(index)
    state = rig.state()
    assert state["position"] > 0
    legs = rig.legs()
    assert set(legs) == {"stop_loss", "take_profit"}
    assert legs["stop_loss"]["stop_price"] == state["stop_price"]
    assert legs["take_profit"]["stop_price"] == state["take_profit_price"]
    assert legs["stop_loss"]["side"] == "sell"
    assert legs["stop_loss"]["qty"] == pytest.approx(float(state["position"]), rel=1e-12)
    assert all(cid.startswith("mm") for cid in
               (legs["stop_loss"]["client_order_id"], legs["take_profit"]["client_order_id"]))
    rig.tick(3)  # the next tick neither cancels them as strays nor waits on them
    assert rig.legs() == legs
    kinds = [e["kind"] for e in rig.rows("risk_events")]
    assert "stray_order_cancelled" not in kinds


def test_a_stop_the_kernel_moves_is_replaced_at_the_venue(tmp_path):
    closes = [100.0] * 3 + [101.0, 102.0, 102.5, 103.0]
    codes = [1, 1, 2, 0, 3, 0, 0]  # half long, then add to full: the stop moves up
    rig = Rig(tmp_path, scripted_candles(closes, codes, spread=0.0005), take_pct=0)
    for index in range(4):
        rig.tick(index)
    first = rig.legs()
    assert set(first) == {"stop_loss"}
    assert first["stop_loss"]["stop_price"] == pytest.approx(100.0 * 0.99)
    rig.tick(4)
    second = rig.legs()
    state = rig.state()
    assert second["stop_loss"]["stop_price"] == state["stop_price"] == pytest.approx(
        102.0 * 0.99)
    assert second["stop_loss"]["qty"] == pytest.approx(float(state["position"]), rel=1e-12)
    assert second["stop_loss"]["client_order_id"] != first["stop_loss"]["client_order_id"]
    old = rig.venue.lookup(first["stop_loss"]["client_order_id"], "ETH/BTC")
    assert old["status"] == "canceled"


def test_an_exit_cancels_the_protective_orders(tmp_path):
    closes = [100.0] * 3 + [100.2, 100.4, 100.5, 100.5]
    codes = [1, 1, 3, 0, 1, 0, 0]
    rig = Rig(tmp_path, scripted_candles(closes, codes, spread=0.0005))
    for index in range(4):
        rig.tick(index)
    legs = rig.legs()
    assert len(legs) == 2
    rig.tick(4)  # flat decided: the legs go first, then the market sell
    assert rig.legs() == {}
    assert rig.state()["position"] == 0.0
    assert rig.venue.positions() == {}
    for leg in legs.values():
        assert rig.venue.lookup(leg["client_order_id"], "ETH/BTC")["status"] == "canceled"
    sells = [f for f in rig.rows("fills") if f["side"] == -1]
    assert len(sells) == 1 and sells[0]["reason"] == int(FillReason.SIGNAL)


def test_a_stop_filled_while_no_tick_ran_is_booked_as_the_kernels_stop_fill(tmp_path):
    candles = rising_then(97.0)  # 97 is below the 1 % stop of an entry at 100
    rig = Rig(tmp_path, candles)
    for index in range(3):
        rig.tick(index)
    stop = float(rig.state()["stop_price"])
    qty = float(rig.state()["position"])
    # the runner is down for the drift and the drop; it comes back at the last close
    rig.tick(len(candles) - 1)
    state = rig.state()
    assert state["position"] == 0.0 and rig.venue.positions() == {}
    fills = rig.rows("fills")
    assert [f["reason"] for f in fills] == [int(FillReason.SIGNAL),
                                           int(FillReason.STOP_LOSS)]
    stop_fill = fills[-1]
    venue_order = rig.venue.lookup(stop_fill["client_order_id"], "ETH/BTC")
    assert venue_order["type"] == "stop_loss" and venue_order["status"] == "filled"
    assert stop_fill["price"] == venue_order["avg_price"]
    assert stop_fill["qty"] == pytest.approx(qty, rel=1e-12)
    assert stop_fill["fee"] == pytest.approx(venue_order["fee"], rel=1e-12)
    # the drop gapped through the stop at an open: filled there, as the kernel would
    drop = candles.index[candles["close"] == 97.0][0]
    assert stop_fill["price"] == pytest.approx(min(stop, candles["open"].iloc[drop]))
    assert stop_fill["bar"] == 3  # booked before the bars it missed: the first unseen one
    assert state["n_trades"] == 1 and np.isnan(state["stop_price"])
    # no double exit: the venue's log holds the entry and the stop, nothing else
    log = rig.venue.orders()
    assert [o["client_order_id"] for o in log] == [f["client_order_id"] for f in fills]
    assert rig.legs() == {}
    assert rig.venue.lookup(
        [f for f in rig.rows("orders") if f["reason"] == int(FillReason.TAKE_PROFIT)][-1]
        ["client_order_id"], "ETH/BTC")["status"] == "canceled"
    assert state["cash"] == pytest.approx(rig.venue.balances()["BTC"], rel=1e-12)


def test_the_kill_cancels_resting_stops_and_flattens(tmp_path):
    rig = Rig(tmp_path, rising_then(100.5))
    for index in range(4):
        rig.tick(index)
    assert len(rig.legs()) == 2
    outcome = control.kill(rig.config, mode="operator", brokers={"crypto": rig.venue},
                           reason="test")
    assert outcome.sleeves == [SLEEVE] and not outcome.deferred
    assert rig.venue.open_orders() == [] and rig.venue.positions() == {}
    state = rig.state()
    assert state["trading_state"] == int(TradingState.HALTED) and state["position"] == 0.0
    orders = len(rig.venue.orders())
    for index in range(4, 9):
        rig.tick(index)
    assert len(rig.venue.orders()) == orders and rig.venue.open_orders() == []
    with Journal(rig.config.journal) as journal:
        assert journal.verify().ok
