"""Risk-reducing controls are never refused for want of --i-understand-live-trading: on a
prod operator configuration whose venue is real, `status`, `pause`, `close` and `kill`
run without the flag; `resume` (trading again) and a tick still need it. Nothing here
reaches the real venue: the controls that touch it are given a paper venue in process."""

import subprocess

import yaml

from mmats.brokers.paper import PaperBroker
from mmats.brokers.replay import ReplayFeed
from mmats.data import CandleStore, load
from mmats.live import control
from mmats.live.config import load_config
from mmats.live.kill import is_killed

FIVE_MINUTES = 300_000_000_000


def _prod_config(tmp_path):
    path = tmp_path / "live.yaml"
    path.write_text(yaml.safe_dump({
        "mode": "operator", "environment": "prod",
        "venues": {"binance": {"exchange": "binance"}},  # the real endpoint
        "markets": {"crypto": {"type": "crypto", "feed": "bittrex", "execution": "binance",
                               "symbols": ["ETH/BTC"], "timeframe": "5m"}},
        "models": [{"id": "ema", "strategy": "ema_cross", "market": "crypto",
                    "params": {"fast": 5, "slow": 20}}],
        "journal": "journal.sqlite", "data_root": "data",
        "notifications": [f"file://{tmp_path / 'notes.log'}"]}))
    return path


def test_status_pause_close_run_without_the_flag_and_resume_needs_it(tmp_path, repo, python):
    path = _prod_config(tmp_path)
    run = lambda *args: subprocess.run(  # noqa: E731
        [python, repo / "scripts/live.py", "--config", path, *args], capture_output=True,
        text=True, timeout=300, cwd=repo)
    for command in (["status"], ["pause", "ema"], ["close", "ETH/BTC"]):
        done = run(*command)
        assert done.returncode == 0, (command, done.stderr)
        assert "i_understand_live_trading" not in done.stderr
    for command in (["resume"], ["--once"]):
        refused = run(*command)
        assert refused.returncode == 2, (command, refused.stdout, refused.stderr)
        assert "i_understand_live_trading" in refused.stderr
        assert "Traceback" not in refused.stderr


def test_kill_on_a_real_venue_config_needs_no_flag(tmp_path):
    config = load_config(_prod_config(tmp_path))
    candles = load("bittrex:ETH/BTC:5m").iloc[:120].reset_index(drop=True)
    CandleStore(config.data_root).write("bittrex", "ETH/BTC", "5m", candles)
    now = candles["ts"].iloc[-1].value + FIVE_MINUTES
    venue = PaperBroker(tmp_path / "venue.sqlite", ReplayFeed({"ETH/BTC": candles}, "5m"),
                        "5m", cash=10_000, symbols=["ETH/BTC"], clock=lambda: now)
    venue.send({"client_order_id": "mm" + "p" * 30, "symbol": "ETH/BTC", "side": "buy",
                "qty": 1.0, "type": "market"})
    outcome = control.kill(config, reason="drill", brokers={"crypto": venue})
    assert outcome.acted_at_venues and outcome.problems == []
    assert venue.positions() == {} and is_killed(config.journal)
