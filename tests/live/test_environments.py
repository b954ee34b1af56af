"""Environments that really separate: a dev, test or prod configuration uses only its own
journal, anchor, candle store and keys, and names its environment in every notification
and in status. Real SQLite journals, candle stores and an encrypted secrets file in
tmp_path; the command lines run in process."""

import dataclasses
import io
import json
import logging
import os
import sys
from pathlib import Path

import pytest

from mmats.brokers.connect import credentials
from mmats.cli import keys as keys_cli
from mmats.cli import live as live_cli
from mmats.data import CandleStore, load
from mmats.errors import ConfigError
from mmats.live import control
from mmats.live.config import parse_config
from mmats.live.environments import (
    ADOPT_ACTION,
    MARKER,
    EnvironmentMismatch,
    bundled_sample,
    claim_data_root,
    data_root_environment,
)
from mmats.live.journal import Journal
from mmats.live.notify import Targets, notify
from mmats.live.wiring import check_environment, feeds_for, open_journal
from mmats.secrets import get_secret, list_environments, set_secret

FIVE_MINUTES = 300_000_000_000
DEV_KEYS = {"api_key": "dev-key-4f1c", "secret": "dev-secret-9a7e"}
PROD_KEYS = {"api_key": "prod-key-77b2", "secret": "prod-secret-03d5"}


@pytest.fixture(scope="module")
def candles():
    return load("bittrex:ETH/BTC:5m").iloc[:120].reset_index(drop=True)


def make_config(folder: Path, environment: str, *, journal: str = "journal.sqlite",
                data_root: str = "data", anchor: str | None = None, candles=None,
                source: str | None = None):
    """A paper configuration of ``environment`` whose files are in ``folder`` (a store
    holding ``candles`` when given)."""
    folder.mkdir(parents=True, exist_ok=True)
    if candles is not None:
        CandleStore(folder / data_root).write("bittrex", "ETH/BTC", "5m", candles)
    mapping = {
        "mode": "paper", "environment": environment,
        "markets": {"crypto": {"type": "crypto", "feed": "bittrex", "execution": "paper",
                               "symbols": ["ETH/BTC"], "timeframe": "5m"}},
        "models": [{"id": "ema", "strategy": "ema_cross", "market": "crypto",
                    "params": {"fast": 5, "slow": 20}}],
        "notifications": ["console", f"file://{folder / 'notes.log'}"],
        "journal": journal, "data_root": data_root,
        **({"journal_anchor": anchor} if anchor else {}),
    }
    return parse_config(mapping, source=source or f"{environment}.yaml", base_dir=folder)


def tick(config, candles, bar=100):
    return control.tick_once(config, now_ns=candles["ts"].iloc[bar].value + FIVE_MINUTES)


def snapshot_of(path: Path) -> bytes:
    return path.read_bytes() if path.exists() else b""


# -- the journal ------------------------------------------------------------------------------


@pytest.mark.parametrize("owner, intruder", [("prod", "dev"), ("prod", "test"),
                                             ("dev", "prod"), ("test", "prod")])
def test_a_journal_of_one_environment_is_refused_to_another(tmp_path, candles, owner,
                                                            intruder):
    mine = make_config(tmp_path / owner, owner, candles=candles)
    tick(mine, candles)
    with Journal(mine.journal, readonly=True) as journal:
        assert journal.environment == owner  # recorded at creation
        head = journal.head()
    # the intruder has its own store, but points journal: at the owner's journal
    other = make_config(tmp_path / intruder, intruder, journal=str(mine.journal),
                        candles=candles)
    check_environment(mine)
    for attempt in (lambda: tick(other, candles, 110), lambda: control.status(other),
                    lambda: control.pause(other, "ema"), lambda: open_journal(other),
                    lambda: check_environment(other)):
        with pytest.raises(EnvironmentMismatch) as refused:
            attempt()
        message = str(refused.value)
        assert message.startswith(f"{intruder}.yaml: journal {mine.journal} belongs to "
                                  f"environment {owner!r}")
        assert f"this configuration's environment is {intruder!r}" in message
        assert "Point journal: at a journal of its own" in message
    with Journal(mine.journal, readonly=True) as journal:
        assert journal.head() == head and journal.verify().ok  # nothing was written
    tick(mine, candles, 110)  # the owner goes on
    with pytest.raises(EnvironmentMismatch):
        Journal(mine.journal, readonly=True, environment=intruder)  # read-only too


def test_ticks_refused_for_their_environment_never_count_as_failures(tmp_path, candles):
    """A misconfigured dev cron pointed at prod's journal, refused tick after tick, must
    not be counted beside that journal: the third counted failure kills the runner."""
    from mmats.live import kill as killswitch

    prod = make_config(tmp_path / "prod", "prod", candles=candles)
    tick(prod, candles)
    dev = make_config(tmp_path / "dev", "dev", journal=str(prod.journal), candles=candles)
    for bar in (101, 102, 103, 104):
        with pytest.raises(EnvironmentMismatch):
            tick(dev, candles, bar)
    assert not control._failures_path(prod).exists()
    assert not killswitch.is_killed(prod.journal)
    assert control.status(prod)["ema:ETH/BTC"]["trading_state"] == "ACTIVE"


def test_a_journal_made_before_environments_is_adopted_once(tmp_path, candles):
    config = make_config(tmp_path, "test", candles=candles)
    with Journal(config.journal) as journal:  # as a runner before environments made it
        journal.append_operator_action("pause", "ema", "olga", "before environments")
        assert journal.environment is None
    with Journal(config.journal, readonly=True, environment="test") as journal:
        assert journal.environment is None  # a reader never writes: not adopted
    check_environment(config)  # nor does the check
    with Journal(config.journal, readonly=True) as journal:
        assert journal.environment is None and journal.head()[0] == 1
    assert control.status(config)["environment"] == "test"  # the first writer adopts it
    tick(config, candles)
    control.pause(config, "ema")
    with Journal(config.journal, readonly=True) as journal:
        assert journal.environment == "test"
        adopted = journal.rows("operator_actions", "action = ?", (ADOPT_ACTION,))
        assert [(row["target"], row["seq"]) for row in adopted] == [("test", 2)]
        assert journal.verify().ok  # the adoption is a row of the signed chain
    prod = make_config(tmp_path / "prod", "prod", journal=str(config.journal),
                       candles=candles)
    with pytest.raises(EnvironmentMismatch, match="belongs to environment 'test'"):
        control.status(prod)
    with Journal(config.journal, readonly=True) as journal:  # the refusal adopted nothing
        assert len(journal.rows("operator_actions", "action = ?", (ADOPT_ACTION,))) == 1


def test_an_unknown_environment_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ConfigError, match="environment 'staging' is not one of dev, test, "
                                          "prod"):
        Journal(tmp_path / "j.sqlite", environment="staging")
    assert not (tmp_path / "j.sqlite").exists()


# -- the anchor -------------------------------------------------------------------------------


def test_a_dev_journal_cannot_write_into_a_prod_journals_anchor(tmp_path, candles):
    prod = make_config(tmp_path / "prod", "prod", anchor="anchors/prod.anchor",
                       candles=candles)
    (tmp_path / "prod" / "anchors").mkdir()
    tick(prod, candles)
    anchor = prod.journal_anchor
    before = anchor.read_bytes()
    assert before  # the prod journal's heads
    # a new dev journal pointed at the prod anchor: refused before it is created
    dev = make_config(tmp_path / "dev", "dev", anchor=str(anchor), candles=candles)
    with pytest.raises(EnvironmentMismatch, match="holds the heads of another journal"):
        check_environment(dev)
    with pytest.raises(EnvironmentMismatch) as refused:
        tick(dev, candles)
    assert f"its anchor {anchor} holds the heads of another journal" in str(refused.value)
    assert "journal_anchor:" in str(refused.value)
    assert not dev.journal.exists() and anchor.read_bytes() == before
    # an existing dev journal whose configuration is changed to the prod anchor: refused
    own = dataclasses.replace(dev, anchor_path=None)
    tick(own, candles)
    with pytest.raises(EnvironmentMismatch, match="holds the heads of another journal"):
        control.status(dataclasses.replace(own, anchor_path=anchor))
    assert anchor.read_bytes() == before
    tick(prod, candles, 110)  # the prod journal still anchors there
    assert len(anchor.read_bytes()) > len(before)


# -- the candle store -------------------------------------------------------------------------


def test_the_store_is_marked_by_its_first_runner_and_refused_to_another_environment(
        tmp_path, candles):
    dev = make_config(tmp_path / "dev", "dev", candles=candles)
    assert data_root_environment(dev.data_root) is None
    tick(dev, candles)
    assert (dev.data_root / MARKER).read_text() == "dev\n"
    assert [key[0] for key in CandleStore(dev.data_root).keys()] == ["bittrex"]  # no venue
    # prod with its own journal, on the dev store: refused before its journal exists
    prod = make_config(tmp_path / "prod", "prod", data_root=str(dev.data_root))
    for attempt in (lambda: tick(prod, candles), lambda: feeds_for(prod),
                    lambda: control.status(prod), lambda: check_environment(prod)):
        with pytest.raises(EnvironmentMismatch) as refused:
            attempt()
        message = str(refused.value)
        assert message.startswith(f"prod.yaml: data_root {dev.data_root} is the candle store "
                                  "of environment 'dev'")
        assert "a prod configuration never trades on a dev store" in message
    assert not prod.journal.exists()
    assert (dev.data_root / MARKER).read_text() == "dev\n"
    (dev.data_root / MARKER).write_text("staging\n")
    with pytest.raises(ConfigError, match="its marker .* says 'staging'"):
        tick(dev, candles, 110)


def test_the_bundled_sample_serves_dev_and_test_unmarked_and_never_prod(tmp_path, candles):
    sample = bundled_sample()
    assert (sample / "bittrex").is_dir()
    for environment in ("dev", "test"):
        config = make_config(tmp_path / environment, environment, data_root=str(sample))
        tick(config, candles)
        assert control.status(config)["ema:ETH/BTC"] is not None
    assert not (sample / MARKER).exists()  # package data is never written
    prod = make_config(tmp_path / "prod", "prod", data_root=str(sample / "bittrex"))
    with pytest.raises(EnvironmentMismatch, match="is the bundled sample data, which a prod "
                                                  "configuration never trades on"):
        tick(prod, candles)
    assert not prod.journal.exists()


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc (Linux)")
def test_an_unmarkable_store_is_read_by_dev_and_refused_to_prod():
    # /proc/self: a folder in which no file can be made, even by root (unlike chmod)
    readonly = Path("/proc/self")
    assert claim_data_root(readonly, "dev") is None
    assert claim_data_root(readonly, "test") is None
    with pytest.raises(EnvironmentMismatch, match="is not marked as a prod candle store and "
                                                  "cannot be marked"):
        claim_data_root(readonly, "prod")


# -- keys -------------------------------------------------------------------------------------


@pytest.fixture
def vault(tmp_path, monkeypatch):
    """A throwaway encrypted secrets file and no venue keys in the environment."""
    monkeypatch.setenv("MMATS_SECRETS_FILE", str(tmp_path / "vault" / "secrets.enc"))
    monkeypatch.setenv("MMATS_SECRETS_PASSPHRASE", "environments")
    monkeypatch.delenv("MMATS_ENVIRONMENT", raising=False)
    for name in list(os.environ):
        if name.startswith("MMATS_") and name.endswith(("_API_KEY", "_SECRET", "_TOKEN",
                                                        "_ACCOUNT_ID", "_PASSWORD")):
            monkeypatch.delenv(name)
    return tmp_path / "vault" / "secrets.enc"


def test_stored_keys_are_read_only_by_their_own_environment(vault, caplog):
    set_secret("binance", PROD_KEYS, "prod")
    assert credentials("binance", "prod") == PROD_KEYS
    assert credentials("binance", "dev") == {} and credentials("binance", "test") == {}
    assert get_secret("binance") is None
    set_secret("binance", DEV_KEYS)  # no environment: dev's, as before environments
    assert credentials("binance", "dev") == DEV_KEYS
    assert credentials("binance", "prod") == PROD_KEYS
    assert list_environments() == {"dev": ["binance"], "test": [], "prod": ["binance"]}
    with caplog.at_level(logging.WARNING, logger="mmats.brokers.connect"):
        assert credentials("binance", "test") == {}  # never dev's or prod's
    assert "mmats keys set binance --env test" in caplog.text
    assert "dev in the secrets store" in caplog.text and "prod in the secrets store" in \
        caplog.text
    assert not any(value in caplog.text for value in (*DEV_KEYS.values(),
                                                      *PROD_KEYS.values()))
    # through a configuration: its venues read as its environment
    config = make_config(vault.parent / "cfg", "prod")
    venue = config.venue("binance")
    assert venue.environment == "prod"
    assert credentials(venue.name, venue.environment) == PROD_KEYS
    dev = dataclasses.replace(config, environment="dev")
    assert credentials(dev.venue("binance").name, dev.venue("binance").environment) == \
        DEV_KEYS


def test_environment_variables_carry_the_environment(vault, monkeypatch):
    # the names without an environment (as before environments) are dev's only
    monkeypatch.setenv("MMATS_BINANCE_API_KEY", DEV_KEYS["api_key"])
    monkeypatch.setenv("MMATS_BINANCE_SECRET", DEV_KEYS["secret"])
    assert credentials("binance", "dev") == DEV_KEYS
    assert credentials("binance", "prod") == {} and credentials("binance", "test") == {}
    monkeypatch.setenv("MMATS_PROD_BINANCE_API_KEY", PROD_KEYS["api_key"])
    monkeypatch.setenv("MMATS_PROD_BINANCE_SECRET", PROD_KEYS["secret"])
    assert credentials("binance", "prod") == PROD_KEYS
    assert credentials("binance", "dev") == DEV_KEYS and credentials("binance", "test") == {}
    monkeypatch.setenv("MMATS_DEV_BINANCE_API_KEY", "dev-named")
    assert credentials("binance", "dev") == {"api_key": "dev-named"}  # the named one first
    # a dev venue called prod-binance never reads MMATS_PROD_BINANCE_*: prod's binance keys
    assert credentials("prod-binance", "dev") == {}
    # OANDA's token and account
    monkeypatch.setenv("MMATS_PROD_OANDA_TOKEN", "prod-token-5e")
    monkeypatch.setenv("MMATS_PROD_OANDA_ACCOUNT_ID", "101-001-1-001")
    assert credentials("oanda", "prod") == {"token": "prod-token-5e",
                                            "account_id": "101-001-1-001"}
    assert credentials("oanda", "dev") == {} and credentials("oanda", "test") == {}


def test_mmats_keys_stores_per_environment_and_says_legacy_keys_are_dev(vault, monkeypatch,
                                                                         capsys):
    def keys(*args, stdin=""):
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        code = keys_cli.main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    lines = "".join(f"{name}={value}\n" for name, value in PROD_KEYS.items())
    code, out, _ = keys("set", "binance", "--env", "prod", "--stdin", "--json", stdin=lines)
    assert code == 0 and json.loads(out)["environment"] == "prod"
    code, out, err = keys("list", "--json")
    listed = json.loads(out)
    assert (listed["environment"], listed["venues"]) == ("dev", {})
    assert listed["other_environments"] == {"prod": ["binance"]}
    assert "stored before environments existed: they count as dev only" in listed["note"]
    code, out, err = keys("list", "--env", "prod")
    assert out.splitlines() == [f"1 venue(s) (environment prod) in encrypted file {vault}",
                                "  binance: api_key, secret"]
    assert err.startswith("note: environment prod; no other holds keys")
    code, out, err = keys("delete", "binance")  # dev holds nothing
    assert code == 1 and "nothing is stored for binance in" in err
    monkeypatch.setenv("MMATS_ENVIRONMENT", "prod")  # a shell of prod (mmats-env prod)
    code, out, err = keys("list", "--json")
    assert json.loads(out)["venues"] == {"binance": ["api_key", "secret"]}
    assert keys("list", "--env", "dev", "--json")[0] == 0
    monkeypatch.setenv("MMATS_ENVIRONMENT", "staging")
    code, out, err = keys("list")
    assert code == 2 and "MMATS_ENVIRONMENT='staging' is not one of dev, test, prod" in err
    monkeypatch.delenv("MMATS_ENVIRONMENT")
    code, out, err = keys("delete", "binance", "--env", "prod")
    assert code == 0 and out.startswith("deleted binance (environment prod) from")
    assert credentials("binance", "prod") == {}
    assert not any(value in out + err for value in PROD_KEYS.values())


# -- notifications and status -----------------------------------------------------------------


def test_every_notification_names_the_environment(tmp_path, candles, capsys):
    config = make_config(tmp_path, "test", candles=candles)
    notes = tmp_path / "notes.log"
    tick(config, candles)
    control.pause(config, "ema", user="olga", reason="drill")
    control.kill(config, user="olga", reason="drill")
    lines = notes.read_text().splitlines()
    assert lines and all(line.startswith("[test] MMATS ") for line in lines), lines
    assert any(line.startswith("[test] MMATS pause\tpause ema by olga") for line in lines)
    assert any(line.startswith("[test] MMATS kill\t") for line in lines)
    printed = capsys.readouterr().out
    assert "[test] [MMATS pause] pause ema by olga" in printed
    # the tag follows the configuration's environment, also through replace()
    prod = dataclasses.replace(config, environment="prod")
    assert prod.notifications == config.notifications  # the same URLs
    assert prod.notifications.environment == "prod"
    notify(prod.notifications, "MMATS drill", "nothing happened")
    assert notes.read_text().splitlines()[-1] == "[prod] MMATS drill\tnothing happened"
    assert notify(Targets([f"file://{notes}"]), "plain", "x") == []  # no environment: no tag
    assert notes.read_text().splitlines()[-1] == "plain\tx"


def test_status_shows_the_environment(tmp_path, candles, capsys):
    config = make_config(tmp_path, "test", candles=candles, source=str(tmp_path / "t.yaml"))
    (tmp_path / "t.yaml").write_text(json.dumps({
        "mode": "paper", "environment": "test",
        "markets": {"crypto": {"type": "crypto", "feed": "bittrex", "execution": "paper",
                               "symbols": ["ETH/BTC"], "timeframe": "5m"}},
        "models": [{"id": "ema", "strategy": "ema_cross", "market": "crypto",
                    "params": {"fast": 5, "slow": 20}}],
        "notifications": [f"file://{tmp_path / 'notes.log'}"],
        "journal": "journal.sqlite", "data_root": "data"}))
    tick(config, candles)
    status = control.status(config)
    assert status["environment"] == "test" and status["ema:ETH/BTC"]["trades"] >= 0
    for extra in ([], ["--json"]):
        assert live_cli.main(["--config", str(tmp_path / "t.yaml"), "status", *extra]) == 0
        shown = json.loads(capsys.readouterr().out)
        assert shown["environment"] == "test" and "ema:ETH/BTC" in shown
    (tmp_path / "p.yaml").write_text((tmp_path / "t.yaml").read_text().replace(
        '"environment": "test"', '"environment": "prod"'))
    assert live_cli.main(["--config", str(tmp_path / "p.yaml"), "status"]) == 2
    err = capsys.readouterr().err
    assert "data_root" in err and "environment 'test'" in err and "Traceback" not in err
