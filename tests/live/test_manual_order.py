"""The operator's order ticket (:mod:`mmats.live.manual`) on real journals: paper replays
of the example configuration, an order through the same gates and journal as a model's,
filled at the next open in paper mode and at once at the paper venue in operator mode;
refused with the limit's name and numbers, changing nothing, journaled as
``order_refused``; and ``mmats live order``'s exit codes."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from mmats.cli.live import main as live_main
from mmats.data import load
from mmats.errors import ConfigError
from mmats.live import control
from mmats.live.config import load_config
from mmats.live.journal import Journal
from mmats.live.manual import manual_order
from mmats.live.replay import replay
from mmats.types import FillReason

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "mmats" / "data" / "sample"
BARS = 250  # at 250 bars of each market every sleeve holds a position
RISK = int(FillReason.RISK)
FOREX, CRYPTO = "forex_rsi:EUR/USD", "crypto_ema_cross:ETH/BTC"


def write_config(folder: Path, *changes: tuple[str, str]) -> Path:
    """configs/paper_multi_market.yaml with its journal beside it (a copied folder keeps
    working), the bundled sample candles as its store and each ``(old, new)`` change."""
    text = (REPO / "configs" / "paper_multi_market.yaml").read_text()
    for old, new in changes:
        assert old in text, old
        text = text.replace(old, new)
    lines = []
    for line in text.splitlines():
        if line.startswith("journal:"):
            line = "journal: journal.sqlite"
        elif line.startswith("data_root:"):
            line = f"data_root: {SAMPLE}"
        lines.append(line)
    path = folder / "paper.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def full_candles(config) -> dict:
    return {symbol: load(f"{market.feed}:{symbol}:{market.timeframe}", root=config.data_root)
            for market in config.markets for symbol in market.symbols}


def first(candles: dict, bars: int, **more) -> dict:
    """The first ``bars`` bars of each symbol; ``more`` gives a symbol (``EUR_USD``) more."""
    return {symbol: frame.iloc[:bars + more.get(symbol.replace("/", "_"), 0)]
            .reset_index(drop=True) for symbol, frame in candles.items()}


def replayed(tmp_path_factory, name, mode="paper", *changes) -> Path:
    folder = tmp_path_factory.mktemp(name)
    config = load_config(write_config(folder, *changes))
    replay(config, first(full_candles(config), BARS), config.journal, mode=mode)
    return folder


@pytest.fixture(scope="module")
def paper_replay(tmp_path_factory):
    return replayed(tmp_path_factory, "paper")


@pytest.fixture(scope="module")
def operator_replay(tmp_path_factory):
    return replayed(tmp_path_factory, "operator", "operator")


@pytest.fixture
def paper(paper_replay, tmp_path):
    """A copy of the paper replay's folder: (config, candles, the last tick's clock)."""
    shutil.copytree(paper_replay, tmp_path, dirs_exist_ok=True)
    config = load_config(tmp_path / "paper.yaml")
    candles = full_candles(config)
    return config, candles, last_tick(candles)


def last_tick(candles) -> int:
    """The replay's last tick: the close of the crypto market's last bar (the latest)."""
    return int(candles["ETH/BTC"]["ts"].iloc[BARS - 1].value + 300_000_000_000)


def states_bytes(config) -> dict:
    with Journal(config.journal) as journal:
        return {sleeve: journal.load_state(sleeve).tobytes()
                for sleeve in (FOREX, CRYPTO, "crypto_donchian:ETH/BTC",
                               "stocks_ema_cross:GOOG")}


def rows(config, table) -> list[dict]:
    with Journal(config.journal) as journal:
        return journal.rows(table)


def assert_refused(config, outcome, gate, *words):
    """Refused by ``gate``, its reason naming ``words``; journaled, nothing else."""
    assert not outcome.accepted and outcome.gate == gate, outcome
    assert outcome.gates[-1]["gate"] == gate and outcome.gates[-1]["refused"]
    for word in words:
        assert word in outcome.reason, (word, outcome.reason)
    action = rows(config, "operator_actions")[-1]
    assert action["action"] == "order_refused" and action["user"] == "alice"
    assert action["target"] == outcome.sleeve and outcome.reason in action["reason"]
    assert json.dumps(outcome.to_dict())  # the dashboard's JSON


def test_a_manual_buy_is_journaled_and_fills_at_the_next_open(paper):
    config, candles, now = paper
    with Journal(config.journal) as journal:
        before = journal.load_state(FOREX)[0].copy()
        head = journal.head()[0]
        opinions = [json.loads(r["meta"])["value"]
                    for r in journal.rows("signals", "model_id = 'forex_rsi'")]
    standing = [v for v in opinions if v is not None][-1]  # its newest opinion
    assert before["position"] < 0  # the model is short: a buy of 5000 reduces it
    outcome = manual_order(config, "forex_rsi", "EUR/USD", side="buy", quantity=5_000.0,
                           user="alice", reason="trim the short", now_ns=now)
    assert outcome.accepted, outcome.reason
    assert outcome.target_position == pytest.approx(before["position"] + 5_000, rel=1e-12)
    assert [g["gate"] for g in outcome.gates] == [
        "order", "upper_limits", "trading_state", "clip", "max_order_notional"]
    assert "fills at the next bar's open" in outcome.reason
    with Journal(config.journal) as journal:
        # the signal, the state and the operator action, in one transaction
        assert [r["table_name"] for r in journal.rows("chain", "seq > ?", (head,))] == [
            "signals", "sleeve_states", "operator_actions"]
        signal = journal.rows("signals")[-1]
        meta = json.loads(signal["meta"])
        state = journal.load_state(FOREX)[0]
        action = journal.rows("operator_actions")[-1]
    assert (signal["model_id"], signal["symbol"], signal["action"]) == (
        "forex_rsi", "EUR/USD", "BUY")
    assert signal["qty"] == pytest.approx(5_000.0, rel=1e-9)
    assert meta["manual"] and meta["user"] == "alice" and meta["decision"] == "sized"
    assert meta["target_exposure"] == state["target"] == outcome.target_exposure
    assert state["target_reason"] == RISK and state["target_ts_ns"] == now
    assert state["last_signal"] == standing  # the model waits for its value to change
    assert (action["action"], action["target"], action["user"]) == ("order", FOREX, "alice")
    assert "trim the short" in action["reason"]

    fills_before = len(rows(config, "fills"))
    replay(config, first(candles, BARS, EUR_USD=1), config.journal)  # the next tick
    fills = rows(config, "fills")[fills_before:]
    assert [(f["model_id"], f["bar"], f["side"], f["reason"]) for f in fills] == [
        ("forex_rsi", BARS, 1, RISK)]  # at the open of the next bar, as a model's order
    assert fills[0]["price"] == pytest.approx(candles["EUR/USD"]["open"].iloc[BARS],
                                              rel=1e-3)
    assert fills[0]["position_after"] == pytest.approx(before["position"] + 5_000, rel=0.01)
    with Journal(config.journal) as journal:
        after = journal.load_state(FOREX)[0]
    assert np.isnan(after["target"]) and after["position"] == fills[0]["position_after"]


def test_an_operator_mode_order_fills_at_once_at_the_paper_venue(operator_replay, tmp_path):
    shutil.copytree(operator_replay, tmp_path, dirs_exist_ok=True)
    config = load_config(tmp_path / "paper.yaml")
    now = last_tick(full_candles(config))
    with Journal(config.journal) as journal:
        held = float(journal.load_state(CRYPTO)[0]["position"])
        value = json.loads(journal.rows("signals", "model_id = 'crypto_ema_cross'")[-1]
                           ["meta"])["value"]
    assert held > 10_000 and value is not None
    outcome = manual_order(config, "crypto_ema_cross", "ETH/BTC", side="sell",
                           quantity=10_000.0, user="alice", mode="operator", now_ns=now)
    assert outcome.accepted, outcome.reason
    order = outcome.order
    assert order["status"] == "filled" and order["filled_qty"] == pytest.approx(10_000.0)
    with Journal(config.journal) as journal:
        fills = journal.fills_of_order(order["client_order_id"])
        statuses = [r["broker_status"]
                    for r in journal.orders_by_client_id(order["client_order_id"])]
        state = journal.load_state(CRYPTO)[0]
        actions = journal.rows("operator_actions")
    assert statuses == ["SENDING", "filled"]  # journaled before it went out
    assert len(fills) == 1 and fills[0]["side"] == -1 and fills[0]["reason"] == RISK
    assert fills[0]["price"] == pytest.approx(order["avg_price"])
    assert state["position"] == pytest.approx(held - 10_000.0, rel=1e-12)
    assert np.isnan(state["target"])  # sent: nothing left pending
    assert state["last_signal"] == value  # the model acts again when its value changes
    assert (actions[-1]["action"], actions[-1]["user"]) == ("order", "alice")


def test_refused_over_the_order_notional_cap_changing_nothing(paper):
    config, _, now = paper
    before, signals = states_bytes(config), len(rows(config, "signals"))
    outcome = manual_order(config, "forex_rsi", "EUR/USD", side="buy", exposure=1.5,
                           user="alice", now_ns=now)
    assert_refused(config, outcome, "max_order_notional", "max_order_notional 10,000.00",
                   "market:forex")
    notional = outcome.gates[-1]["notional"]
    assert notional > 10_000 and f"{notional:,.2f}" in outcome.reason
    assert states_bytes(config) == before and len(rows(config, "signals")) == signals


def test_refused_beyond_the_leverage_cap(paper):
    config, _, now = paper
    before = states_bytes(config)
    outcome = manual_order(config, "forex_rsi", "EUR/USD", side="buy", exposure=5,
                           user="alice", now_ns=now)
    assert_refused(config, outcome, "clip", "max_leverage 2", "target exposure 5")
    assert states_bytes(config) == before


def test_a_paused_model_may_only_reduce(paper):
    config, _, now = paper
    control.pause(config, "forex_rsi", user="alice")
    before = states_bytes(config)
    grow = manual_order(config, "forex_rsi", "EUR/USD", side="sell", quantity=1_000.0,
                        user="alice", now_ns=now)
    assert_refused(config, grow, "trading_state", "HALTED (paused)", "only reduce")
    assert states_bytes(config) == before
    reduce = manual_order(config, "forex_rsi", "EUR/USD", side="buy", quantity=1_000.0,
                          user="alice", now_ns=now)
    assert reduce.accepted, reduce.reason
    with Journal(config.journal) as journal:
        state = journal.load_state(FOREX)[0]
    assert state["trading_state"] == 2 and state["target"] == reduce.target_exposure


def test_refused_while_the_kill_switch_is_on(paper):
    config, _, now = paper
    control.kill(config, user="rita", reason="drill")
    before = states_bytes(config)
    outcome = manual_order(config, "forex_rsi", "EUR/USD", side="buy", quantity=1_000.0,
                           user="alice", now_ns=now)
    assert_refused(config, outcome, "kill_switch", "kill switch is on", "rita", "drill")
    assert states_bytes(config) == before


def test_refused_over_max_open_positions(tmp_path_factory):
    folder = replayed(tmp_path_factory, "capped", "paper", ("max_pos: 2,", "max_pos: 1,"))
    config = load_config(folder / "paper.yaml")
    ids = ("crypto_ema_cross", "crypto_donchian")
    with Journal(config.journal) as journal:
        held = {m: float(journal.load_state(f"{m}:ETH/BTC")[0]["position"]) for m in ids}
    flat = [m for m in ids if held[m] == 0.0]
    assert len(flat) == 1, held  # the crypto market's one position is the other model's
    before = states_bytes(config)
    outcome = manual_order(config, flat[0], "ETH/BTC", side="buy", exposure=0.5,
                           user="alice", now_ns=last_tick(full_candles(config)))
    assert_refused(config, outcome, "upper_limits",
                   "market:crypto max_open_positions (1/1 open)", "forbids new exposure")
    assert states_bytes(config) == before


def test_bad_requests_are_errors_naming_what_is_wrong(paper):
    config, _, now = paper
    before, actions = states_bytes(config), len(rows(config, "operator_actions"))
    cases = [
        (dict(model_id="nope", symbol="EUR/USD", quantity=1.0), "no model 'nope'"),
        (dict(model_id="forex_rsi", symbol="BTC/USD", quantity=1.0),
         "does not trade 'BTC/USD'"),
        (dict(model_id="forex_rsi", symbol="EUR/USD", quantity=1.0, exposure=0.5),
         "exactly one of quantity"),
        (dict(model_id="forex_rsi", symbol="EUR/USD"), "exactly one of quantity"),
        (dict(model_id="forex_rsi", symbol="EUR/USD", quantity=-1.0), "above 0"),
        (dict(model_id="forex_rsi", symbol="EUR/USD", quantity=1.0, mode="advisory"),
         "advisory mode"),
    ]
    for arguments, words in cases:
        with pytest.raises(ConfigError, match=words):
            manual_order(config, side="buy", user="alice", now_ns=now, **arguments)
    with pytest.raises(ConfigError, match="side must be buy or sell"):
        manual_order(config, "forex_rsi", "EUR/USD", side="hold", quantity=1.0,
                     user="alice")
    assert states_bytes(config) == before
    assert len(rows(config, "operator_actions")) == actions


def test_a_real_venue_without_the_flag_is_refused_as_a_tick_is(tmp_path):
    config = load_config(write_config(
        tmp_path, ("execution: paper\n    symbols: [ETH/BTC]",
                   "execution: binance\n    symbols: [ETH/BTC]")))
    with pytest.raises(ConfigError, match="environment: prod"):
        manual_order(config, "crypto_ema_cross", "ETH/BTC", side="buy", quantity=1.0,
                     user="alice", mode="operator")
    assert not config.journal.exists()  # refused before anything was opened


def test_the_order_command_and_its_exit_codes(paper, capsys):
    config, _, now = paper
    base = ["order", "--config", str(config.source), "--now", str(now), "--json"]

    def run(*args):
        code = live_main([*base, *args])
        return code, capsys.readouterr()

    code, out = run("--model", "forex_rsi", "--symbol", "EUR/USD", "--side", "buy",
                    "--exposure", "1.5")
    refused = json.loads(out.out)
    assert code == 1 and not refused["accepted"] and refused["gate"] == "max_order_notional"
    assert "max_order_notional" in refused["message"]
    code, out = run("--model", "forex_rsi", "--symbol", "EUR/USD", "--side", "buy",
                    "--quantity", "1000")
    assert code == 0 and json.loads(out.out)["accepted"]
    code, out = run("--model", "nope", "--symbol", "EUR/USD", "--side", "buy",
                    "--quantity", "1")
    assert code == 2 and "no model 'nope'" in out.err
    code, out = run("--model", "forex_rsi", "--symbol", "EUR/USD", "--side", "buy",
                    "--quantity", "1", "--exposure", "0.5")
    assert code == 2 and "exactly one of quantity" in out.err
    code, out = run("--model", "forex_rsi", "--symbol", "EUR/USD", "--quantity", "1")
    assert code == 2 and "order takes --model, --symbol, --side" in out.err
    with pytest.raises(SystemExit) as usage:
        run("--model", "forex_rsi", "--symbol", "EUR/USD", "--side", "hold")
    assert usage.value.code == 2 and "invalid choice: 'hold'" in capsys.readouterr().err
    code = live_main(["order", "--config", str(config.source), "--now", str(now),
                      "--model", "forex_rsi", "--symbol", "EUR/USD", "--side", "sell",
                      "--exposure", "5"])
    assert code == 1 and "refused: target exposure -5 is beyond" in capsys.readouterr().out
