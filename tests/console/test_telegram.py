"""The Telegram bot against a local Bot API server (tests/console/bot_api_server.py), through
python-telegram-bot itself, over the journal of a short paper replay of the multi-market
example: the commands, the allow-list, the /kill confirmation, errors, retries, the token
kept out of logs and replies, and `mmats telegram --once` as a user runs it."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mmats.console.telegram import BotError, TelegramControl
from mmats.data import load
from mmats.errors import ConfigError
from mmats.live import control
from mmats.live import kill as killswitch
from mmats.live.config import load_config
from mmats.live.journal import Journal
from mmats.live.replay import replay
from mmats.secrets import set_secret

from .bot_api_server import BotApiServer

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "mmats" / "data" / "sample"
MMATS = str(Path(sys.executable).with_name("mmats"))
TOKEN = "7040118842:AAH-mmats-test-token-Zq9xLw3vB8"
PASSPHRASE = "telegram tests passphrase"
ALICE, BOB, STRANGER = 5550001, -100777, 9990009  # alice and bob's group are allowed
REPLAY_BARS = 250  # every sleeve of the example holds a position by then
SLEEVES = ["crypto_ema_cross:ETH/BTC", "crypto_donchian:ETH/BTC", "forex_rsi:EUR/USD",
           "stocks_ema_cross:GOOG"]
FAST = {"backoff_s": (0.01, 0.05)}


def write_config(folder: Path, telegram: str) -> Path:
    """configs/paper_multi_market.yaml with its journal in ``folder``, the shipped sample
    candles as its store, and ``telegram`` (YAML) as its telegram: block."""
    lines = []
    for line in (REPO / "configs" / "paper_multi_market.yaml").read_text().splitlines():
        if line.startswith("journal:"):
            line = "journal: journal/paper.sqlite"
        elif line.startswith("data_root:"):
            line = f"data_root: {SAMPLE}"
        lines.append(line)
    (folder / "journal").mkdir(parents=True, exist_ok=True)
    path = folder / "paper.yaml"
    path.write_text("\n".join(lines) + f"\ntelegram: {telegram}\n")
    return path


@pytest.fixture(scope="module")
def vault(tmp_path_factory):
    """An encrypted secrets file holding the bot's token, as `mmats keys set telegram` would
    store it; the module's journals are signed with a key kept there too."""
    path = tmp_path_factory.mktemp("vault") / "secrets.enc"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MMATS_SECRETS_FILE", str(path))
        patch.setenv("MMATS_SECRETS_PASSPHRASE", PASSPHRASE)
        set_secret("telegram", {"token": TOKEN})
        yield path


@pytest.fixture(scope="module")
def replayed(vault, tmp_path_factory) -> Path:
    """A folder with the example configuration (chats alice and bob's group allowed) and
    the journal of a paper replay of its first bars; tests work on copies."""
    folder = tmp_path_factory.mktemp("replayed")
    config = load_config(write_config(folder, f"{{chat_ids: [{ALICE}, {BOB}], "
                                              "confirm_timeout_s: 60}"))
    candles = {symbol: load(f"{market.feed}:{symbol}:{market.timeframe}",
                            root=config.data_root).iloc[:REPLAY_BARS]
               for market in config.markets for symbol in market.symbols}
    replay(config, candles, config.journal, mode="paper")
    return folder


@pytest.fixture
def config(replayed, tmp_path):
    folder = shutil.copytree(replayed, tmp_path / "run")
    return load_config(folder / "paper.yaml")


@pytest.fixture
def server():
    with BotApiServer(TOKEN) as running:
        yield running


def bot(config, server, **options) -> TelegramControl:
    return TelegramControl(config, token=TOKEN, api_url=server.api_url,
                           **{**FAST, **options})


def ask(config, server, chat_id, *texts, username="alice", **options) -> list[str]:
    """Send ``texts`` from ``chat_id``, let a bot answer them once, return its replies to
    that chat."""
    before = len(server.replies_to(chat_id))
    for text in texts:
        server.push_message(chat_id, text, username=username)
    assert bot(config, server, **options).run_once() == len(texts)
    return server.replies_to(chat_id)[before:]


def actions(config) -> list[dict]:
    with Journal(config.journal, create=False, readonly=True) as journal:
        return journal.rows("operator_actions")


def states(config) -> dict:
    return {k: v["trading_state"] for k, v in control.status(config).items()
            if k not in ("kill_switch", "environment")}


def test_status_and_positions_answer_with_every_sleeve(config, server):
    status, positions = ask(config, server, ALICE, "/status", "/positions")
    now = control.status(config)
    assert "kill switch: off" in status
    for sleeve in SLEEVES:
        line = (f"{sleeve}: ACTIVE, equity {now[sleeve]['equity']:,.2f}, drawdown "
                f"{now[sleeve]['drawdown_pct']:.2f}%")
        assert line in status.splitlines()
    assert positions.startswith("4 open position(s):")
    with Journal(config.journal, create=False, readonly=True) as journal:
        for sleeve in SLEEVES:
            record = journal.load_state(sleeve)[0]
            assert record["position"] != 0
            line = (f"{sleeve}: {sleeve.split(':')[1]} qty {record['position']:.8g} last "
                    f"{record['last_close']:.8g} equity {record['equity']:,.2f}")
            assert line in positions.splitlines()
    assert actions(config) == []  # reading journals nothing


def test_pause_then_resume_a_model(config, server):
    assert set(states(config).values()) == {"ACTIVE"}
    (paused,) = ask(config, server, ALICE, "/pause crypto_ema_cross")
    assert paused.startswith("paused crypto_ema_cross: crypto_ema_cross:ETH/BTC")
    assert states(config) == {**dict.fromkeys(SLEEVES, "ACTIVE"),
                              "crypto_ema_cross:ETH/BTC": "HALTED"}
    (action,) = actions(config)
    assert (action["action"], action["target"], action["user"]) == \
        ("pause", "crypto_ema_cross", "telegram:alice")
    (status,) = ask(config, server, ALICE, "/status")
    assert "crypto_ema_cross:ETH/BTC: HALTED, equity" in status

    (resumed,) = ask(config, server, BOB, "/resume crypto_ema_cross", username="bob")
    assert resumed.startswith("resumed crypto_ema_cross")
    assert set(states(config).values()) == {"ACTIVE"}
    assert [(a["action"], a["user"]) for a in actions(config)] == \
        [("pause", "telegram:alice"), ("resume", "telegram:bob")]


def test_close_a_symbol(config, server):
    (reply,) = ask(config, server, ALICE, "/close ETH/BTC")
    assert reply.startswith("closing ETH/BTC: crypto_ema_cross:ETH/BTC, "
                            "crypto_donchian:ETH/BTC")
    (action,) = actions(config)
    assert (action["action"], action["target"], action["user"]) == \
        ("close", "ETH/BTC", "telegram:alice")
    with Journal(config.journal, create=False, readonly=True) as journal:
        for sleeve in SLEEVES[:2]:  # flat at the next open: a target of zero is pending
            assert journal.load_state(sleeve)[0]["target"] == 0
        assert journal.load_state("forex_rsi:EUR/USD")[0]["target"] != 0


def test_kill_needs_the_code_it_gave_to_that_chat(config, server):
    (asked,) = ask(config, server, ALICE, "/kill")
    code = re.search(r"/confirm (\d{4})$", asked).group(1)
    assert "within 60 s" in asked
    wrong = f"{(int(code) + 1) % 10000:04d}"
    (refused,) = ask(config, server, ALICE, f"/confirm {wrong}")
    (elsewhere,) = ask(config, server, BOB, f"/confirm {code}", username="bob")
    assert refused.startswith("wrong code; nothing done")
    assert elsewhere.startswith("nothing to confirm")
    assert killswitch.read_request(config.journal) is None and actions(config) == []
    assert set(states(config).values()) == {"ACTIVE"}

    # another bot process (the next cron run of --once) takes the code
    (killed,) = ask(config, server, ALICE, f"/confirm {code}")
    assert killed.startswith("KILL: halted 4 sleeve(s)")
    request = killswitch.read_request(config.journal)
    assert (request["user"], request["reason"]) == ("telegram:alice", "telegram")
    (action,) = actions(config)
    assert (action["action"], action["user"]) == ("kill", "telegram:alice")
    assert set(states(config).values()) == {"HALTED"}
    (again,) = ask(config, server, ALICE, f"/confirm {code}")  # spent
    assert again.startswith("nothing to confirm") and len(actions(config)) == 1


def test_an_expired_code_does_nothing(config, server):
    now = [time.time()]
    (asked,) = ask(config, server, ALICE, "/kill", clock=lambda: now[0],
                   confirm_timeout_s=30)
    code = re.search(r"/confirm (\d{4})$", asked).group(1)
    now[0] += 31
    (late,) = ask(config, server, ALICE, f"/confirm {code}", clock=lambda: now[0])
    assert late == "that code expired; nothing done. Send /kill again"
    assert killswitch.read_request(config.journal) is None and actions(config) == []


def test_a_chat_off_the_list_gets_nothing_and_is_journaled(config, server):
    for text in ("/kill", "/pause crypto_ema_cross", "/status"):
        server.push_message(STRANGER, text, username="mallory")
    server.push_message(ALICE, "/status")
    assert bot(config, server).run_once() == 4
    assert server.replies_to(STRANGER) == [] and len(server.replies_to(ALICE)) == 1
    assert set(states(config).values()) == {"ACTIVE"} and actions(config) == []
    with Journal(config.journal, create=False, readonly=True) as journal:
        (event,) = journal.risk_events("telegram_refused")  # once a minute per chat
    assert (event["level"], event["scope"]) == ("WARNING", "telegram")
    data = json.loads(event["data"])
    assert data["chat_id"] == STRANGER and str(STRANGER) in event["message"]
    assert (data["username"], data["text"]) == ("mallory", "/kill")


def test_mistakes_are_answered_and_the_next_command_still_runs(config, server):
    replies = ask(config, server, ALICE, "/pause no_such_model", "/close DOGE/USD",
                  "/frobnicate", "hello", "/pause", "/status")
    assert re.fullmatch(r"/pause: .*paper\.yaml: no model 'no_such_model'; models: "
                        r"crypto_ema_cross, .*", replies[0])
    assert replies[1].startswith("/close: no market trades 'DOGE/USD'; symbols: ETH/BTC")
    assert replies[2].startswith("unknown command /frobnicate.\nMMATS commands:")
    assert "/kill - emergency stop" in replies[3]
    assert replies[4].startswith("usage: /pause MODEL (models: crypto_ema_cross")
    assert replies[5].startswith("MMATS paper, 4 sleeve(s)")
    assert actions(config) == []


def test_a_command_sent_while_the_bot_was_down_is_not_carried_out(config, server):
    server.push_message(ALICE, "/pause crypto_ema_cross", date=time.time() - 3600)
    assert bot(config, server).run_once() == 1
    (reply,) = server.replies_to(ALICE)
    assert reply.startswith("not done: /pause was sent 60 min ago")
    assert actions(config) == [] and set(states(config).values()) == {"ACTIVE"}


# RetryAfter's own constructor warns that retry_after will become a timedelta
@pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")
def test_network_errors_are_retried_and_a_refused_token_is_said_plainly(config, server):
    server.fail_next(3)  # getMe three times, then the API is back
    server.fail_next(1, method="sendMessage")  # a gateway error on a reply...
    server.fail_next(1, 429, method="sendMessage", retry_after=1)  # ...then flood control
    assert ask(config, server, ALICE, "/status")[0].startswith("MMATS paper")
    assert server.calls == ["getMe"] * 4 + ["getUpdates"] + ["sendMessage"] * 3 + \
        ["getUpdates"]
    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        nowhere = f"http://127.0.0.1:{closed.getsockname()[1]}"
    with pytest.raises(BotError, match="did not answer getMe after 2 tries") as caught:
        TelegramControl(config, token=TOKEN, api_url=nowhere, **FAST).run_once(attempts=2)
    assert TOKEN not in str(caught.value)
    with pytest.raises(BotError, match="refused the Telegram token.*mmats keys set telegram"):
        TelegramControl(config, token="1:wrong", api_url=server.api_url).run_once()


def test_the_token_never_reaches_a_log_line_or_a_reply(config, server, caplog):
    caplog.set_level(logging.DEBUG)
    server.fail_next(1)
    ask(config, server, ALICE, "/status", "/positions", "/kill", "/confirm 0000", "/help")
    server.push_message(STRANGER, "/status")
    TelegramControl(config, token=TOKEN, api_url=server.api_url + "/bot").run_once()
    logged = "\n".join([r.getMessage() for r in caplog.records]
                       + [r.exc_text or "" for r in caplog.records])
    assert "/bot***/getUpdates" in logged  # httpx's line per request, its token masked
    assert "Telegram getMe failed" in logged and f"chat {STRANGER}" in logged
    assert TOKEN not in logged and TOKEN.split(":")[1] not in logged
    assert all(TOKEN not in m["text"] for m in server.sent)
    assert TOKEN not in repr(bot(config, server))


def test_bad_telegram_blocks_are_refused_with_the_key(tmp_path):
    for block, where in (("{chat_ids: [1], colour: red}", "telegram.colour: unknown key"),
                         ("{chat_ids: [1, '2']}", "telegram.chat_ids[1]: must be a chat id"),
                         ("{chat_ids: []}", "telegram.chat_ids: must be a non-empty list"),
                         ("{chat_ids: [1], confirm_timeout_s: 0}",
                          "telegram.confirm_timeout_s: must be a finite number >= 1"),
                         ("{chat_ids: [1], token: abc}", "telegram.token: looks like a secret")):
        with pytest.raises(ConfigError) as caught:
            load_config(write_config(tmp_path, block))
        assert f"paper.yaml: {where}" in str(caught.value)
    no_block = load_config(write_config(tmp_path, "null"))
    with pytest.raises(ConfigError, match="telegram: is missing"):
        TelegramControl.from_config(no_block)


def test_a_background_bot_answers_and_stops(config, server):
    running = bot(config, server, poll_timeout_s=20)
    running.start()
    try:
        server.push_message(ALICE, "/status")
        sent = server.wait_for_replies(1)
        assert sent and sent[0]["text"].startswith("MMATS paper")
        server.push_message(ALICE, "/pause forex_rsi")
        assert len(server.wait_for_replies(2)) == 2
    finally:
        running.stop()  # in the middle of a 20 s long poll
    assert not running.running and running.error is None
    assert [a["target"] for a in actions(config)] == ["forex_rsi"]


def mmats(*args, env=None, stdin=None):
    return subprocess.run([MMATS, *map(str, args)], capture_output=True, text=True,
                          input=stdin, timeout=300, env={**os.environ, **(env or {})})


def test_the_console_script_answers_once(config, server, vault, tmp_path):
    empty = {"MMATS_SECRETS_FILE": str(tmp_path / "empty.enc")}
    args = ("telegram", "--config", config.source, "--api-url", server.api_url, "--once")
    missing = mmats(*args, env=empty)
    assert missing.returncode == 2
    assert missing.stderr.startswith("error: no Telegram bot token") and \
        "mmats keys set telegram" in missing.stderr
    wrong = mmats("keys", "set", "telegram", "--stdin", stdin="token=1:wrong\n", env=empty)
    assert wrong.returncode == 0, wrong.stderr
    refused = mmats(*args, env=empty)
    assert refused.returncode == 1 and "refused the Telegram token" in refused.stderr

    # the module's secrets file (it holds the journal's signing key too)
    stored = mmats("keys", "set", "telegram", "--stdin", stdin=f"token={TOKEN}\n")
    assert stored.returncode == 0 and TOKEN not in stored.stdout + stored.stderr
    server.push_message(ALICE, "/pause stocks_ema_cross")
    server.push_message(ALICE, "/status")
    done = mmats(*args, "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"updates": 2, "bot": "mmats_test_bot", "mode": "paper"}
    assert TOKEN not in done.stdout + done.stderr
    paused, status = server.replies_to(ALICE)
    assert paused.startswith("paused stocks_ema_cross") and "GOOG: HALTED" in status
    assert [(a["action"], a["user"]) for a in actions(config)] == \
        [("pause", f"telegram:{ALICE}")]  # a user without a username: the chat id
    assert server.updates == []  # confirmed: the next run answers nothing twice
    again = mmats(*args)
    assert again.returncode == 0 and again.stdout.startswith("answered 0 message(s)")


def test_the_dashboard_answers_the_bot_in_its_own_process(config, server, vault, tmp_path):
    """``mmats dashboard --telegram``: the bot runs beside the web app, in one process."""
    from mmats.console.users import add_user

    users = tmp_path / "users.json"
    add_user("alice", "operator", "alice-operator-pw-1", path=users)
    process = subprocess.Popen(
        [MMATS, "dashboard", "--config", str(config.source), "--port", "0", "--json",
         "--telegram", "--telegram-api-url", server.api_url],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "MMATS_USERS_FILE": str(users)})
    try:
        assert json.loads(process.stdout.readline())["url"].startswith("http://127.0.0.1:")
        server.push_message(ALICE, "/pause forex_rsi")
        deadline = time.monotonic() + 20
        while not server.replies_to(ALICE) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert server.replies_to(ALICE)[0].startswith("paused forex_rsi")
        assert [(a["action"], a["target"]) for a in actions(config)] == \
            [("pause", "forex_rsi")]
    finally:
        process.terminate()
        process.wait(timeout=15)


def test_answering_once_works_inside_a_running_event_loop(config, server):
    """A notebook (or a browser driver) runs an event loop in the caller's thread:
    run_once must still answer there (asyncio.run alone refuses to)."""
    import asyncio

    server.push_message(ALICE, "/status")

    async def inside_a_loop():
        return bot(config, server).run_once()

    try:  # after the browser tests, Playwright's loop runs in this thread already
        asyncio.get_running_loop()
        answered = bot(config, server).run_once()
    except RuntimeError:
        answered = asyncio.run(inside_a_loop())
    assert answered == 1
    assert "GOOG" in server.replies_to(ALICE)[0]
