"""The `mmats` command's one contract, checked on every subcommand as a user runs it (the
installed console script, in a subprocess): `--help` with examples and the exit codes,
`--json` that prints one JSON object, and exit 2 on a missing input file."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mmats.cli.main import COMMANDS

REPO = Path(__file__).resolve().parents[2]
MMATS = str(Path(sys.executable).parent / "mmats")  # the [project.scripts] entry point
ETH_FILE = REPO / "mmats" / "data" / "sample" / "bittrex" / "ETH_BTC_5m.parquet"
# subcommands with their own sub-subcommands: their --help is checked too
NESTED = {"journal": ["verify", "export"], "keys": ["set", "list", "delete"],
          "models": ["add", "list", "activate", "enable", "disable", "remove"]}


def mmats(*args, cwd, env=None, stdin=None):
    import os

    return subprocess.run([MMATS, *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          timeout=600, input=stdin, env={**os.environ, **(env or {})})


def test_the_console_script_lists_every_command(tmp_path):
    done = mmats("--help", cwd=tmp_path)
    assert done.returncode == 0
    for name in COMMANDS:
        assert f"  {name} " in done.stdout
    assert "exit codes: 0 ok; 1 the check or result says no; 2 usage or input error" \
        in done.stdout
    assert set(COMMANDS) == {"backtest", "sweep", "walkforward", "montecarlo",
                             "check-strategy", "import", "fetch", "check-data", "live",
                             "journal", "keys", "dashboard", "telegram", "warmup",
                             "models"}
    nothing = mmats(cwd=tmp_path)
    assert nothing.returncode == 2 and "usage: mmats COMMAND" in nothing.stderr
    unknown = mmats("backtset", cwd=tmp_path)
    assert unknown.returncode == 2 and "unknown command 'backtset'" in unknown.stderr
    assert "Traceback" not in unknown.stderr


@pytest.mark.parametrize("command", [*COMMANDS, *(f"{c} {s}" for c, subs in NESTED.items()
                                                  for s in subs)])
def test_every_help_has_examples_the_exit_codes_and_json(command, tmp_path):
    done = mmats(*command.split(), "--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    text = done.stdout
    top = command.split()[0]
    assert f"usage: mmats {command}" in text
    assert "examples:" in text and f"\n  mmats {top} " in text  # an example to copy
    assert "exit codes: 0 " in text and "; 2 usage or input error" in " ".join(text.split())
    if command not in NESTED:  # journal and keys: on each of their own commands
        assert "--json" in text


@pytest.mark.parametrize("script", sorted(set(COMMANDS.values())))
def test_the_scripts_are_the_same_program(script, python=sys.executable):
    """scripts/X.py still works, with no sys.path edit: the same main as `mmats X`."""
    source = (REPO / "scripts" / f"{script}.py").read_text()
    assert "sys.path" not in source and f"from mmats.cli.{script} import main" in source
    done = subprocess.run([python, REPO / "scripts" / f"{script}.py", "--help"],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0 and "exit codes:" in done.stdout


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    """The advisory example with absolute paths and a journal of its own."""
    folder = tmp_path_factory.mktemp("cli")
    text = (REPO / "configs" / "advisory_crypto.yaml").read_text()
    text = (text.replace("../mmats/", f"{REPO}/mmats/")
            .replace("../journal/advisory_crypto.sqlite", str(folder / "journal.sqlite")))
    path = folder / "advisory.yaml"
    path.write_text(text)
    return path


MISSING = "no_such_file.csv"


def missing_file_runs(config, folder):
    """Each command given one input file that is not there (fetch reads no file: its store
    root is a file instead)."""
    a_file = folder / "a_file"
    a_file.write_text("not a folder\n")
    data = ("--data", folder / MISSING)
    return {
        "backtest": data, "sweep": data, "walkforward": data, "montecarlo": data,
        "check-strategy": data, "check-data": data,
        "import": (folder / MISSING, "--data", "bittrex:ETH/BTC:5m", "--root", folder / "s"),
        "fetch": ("--data", "binance:BTC/USDT:1h", "--since", "2024-01-01",
                  "--root", a_file, "--base-url", "http://127.0.0.1:9"),
        "live": ("--config", folder / "no_such_config.yaml", "status"),
        "dashboard": ("--config", folder / "no_such_config.yaml", "--port", "0"),
        "telegram": ("--config", folder / "no_such_config.yaml", "--once"),
        "journal verify": ("--journal", folder / "no_such_journal.sqlite"),
        "journal export": ("--journal", folder / "no_such_journal.sqlite", "--output",
                           folder / "fills.csv"),
        "keys list": (),  # its file: a folder where the encrypted file should be
        "warmup": data,
        "models add": (folder / MISSING,),
    }


def test_a_missing_input_exits_2_everywhere(config, tmp_path):
    runs = missing_file_runs(config, tmp_path)
    assert {name.split()[0] for name in runs} == set(COMMANDS)
    for name, args in runs.items():
        env = {"MMATS_SECRETS_FILE": str(tmp_path)} if name == "keys list" else None
        done = mmats(*name.split(), *args, cwd=tmp_path, env=env)
        assert done.returncode == 2, (name, done.stdout, done.stderr)
        assert done.stderr.startswith("error: ") and "Traceback" not in done.stderr, name
        named = {"fetch": "a_file", "keys list": str(tmp_path), "live": "no_such_config",
                 "dashboard": "no_such_config", "telegram": "no_such_config",
                 "journal verify": "no_such_journal", "journal export": "no_such_journal"}
        assert named.get(name, MISSING) in done.stderr, (name, done.stderr)


def json_of(done):
    assert done.returncode in (0, 1), done.stderr
    return json.loads(done.stdout)  # one object, nothing else on stdout


def test_json_everywhere(config, tmp_path):
    """--json prints one JSON object on stdout, for every command that runs without a venue
    (fetch's --json against a local venue is in tests/venues/test_fetch.py)."""
    out = json_of(mmats("backtest", "--data", ETH_FILE, "--json", cwd=tmp_path))
    assert out["strategy"] == "ema_cross" and out["bars"] == 5760
    out = json_of(mmats("sweep", "--grid", "fast=5|10,slow=50", "--json", cwd=tmp_path))
    assert len(out["rows"]) == 2
    out = json_of(mmats("montecarlo", "--runs", "20", "--json", cwd=tmp_path))
    assert out["monte_carlo"]["runs"] == 20
    out = json_of(mmats("check-strategy", "--strategy", "rsi_reversion", "--cuts", "4",
                        "--block", "20", "--json", cwd=tmp_path))
    assert out["passed"] is True and out["strategy"] == "rsi_reversion"
    out = json_of(mmats("check-data", "--data", "bittrex:ADA/BTC:5m", "--json", cwd=tmp_path))
    assert out["missing_bars"] == 40

    csv = tmp_path / "eth.csv"
    import pandas as pd

    pd.read_parquet(ETH_FILE).iloc[:50].to_csv(csv, index=False)
    out = json_of(mmats("import", csv, "--data", "bittrex:ETH/BTC:5m", "--root",
                        tmp_path / "store", "--json", cwd=tmp_path))
    (report,) = out["reports"]
    assert (report["symbol"], report["rows_added"], report["written"]) == ("ETH/BTC", 50, True)

    tick = mmats("live", "--config", config, "--now", "2018-01-11T00:00", "--json",
                 cwd=tmp_path)
    out = json_of(tick)
    assert out["command"] == "tick" and out["bars"] > 0
    assert tick.returncode == (1 if out["alerts"] else 0)
    out = json_of(mmats("live", "--config", config, "pause", "RSI_REVERSION_14", "--json",
                        cwd=tmp_path))
    assert out == {"command": "pause", "sleeves": ["RSI_REVERSION_14:ETH/BTC"]}
    out = json_of(mmats("live", "--config", config, "status", "--json", cwd=tmp_path))
    assert out["RSI_REVERSION_14:ETH/BTC"]["trading_state"] == "HALTED"  # paused
    assert out["EMA_CROSS_15_60:ETH/BTC"]["trading_state"] != "HALTED"
    assert out["kill_switch"] is None
    journal = config.parent / "journal.sqlite"
    out = json_of(mmats("journal", "verify", "--journal", journal, "--json", cwd=tmp_path))
    assert out["ok"] is True
    out = json_of(mmats("journal", "export", "--journal", journal, "--output",
                        tmp_path / "fills.csv", "--json", cwd=tmp_path))
    assert out["output"] == str(tmp_path / "fills.csv") and (tmp_path / "fills.csv").is_file()

    secrets = {"MMATS_SECRETS_FILE": str(tmp_path / "secrets.enc")}
    out = json_of(mmats("keys", "set", "binance", "--stdin", "--json", cwd=tmp_path,
                        env=secrets, stdin="api_key=k\nsecret=s\n"))
    assert out["stored"] == "binance" and out["fields"] == ["api_key", "secret"]
    out = json_of(mmats("keys", "list", "--json", cwd=tmp_path, env=secrets))
    assert out["venues"] == {"binance": ["api_key", "secret"]}
    out = json_of(mmats("keys", "delete", "binance", "--json", cwd=tmp_path, env=secrets))
    assert out["deleted"] == "binance"
    again = mmats("keys", "delete", "binance", "--json", cwd=tmp_path, env=secrets)
    assert again.returncode == 1  # the result says no: nothing was stored


def test_one_data_address_for_every_command(tmp_path):
    """check-data, import and fetch take --data like the research commands; their old forms
    (a positional file, three positionals, three flags) still work and say the same."""
    new = mmats("check-data", "--data", "bittrex:ADA/BTC:5m", "--json", cwd=tmp_path)
    old = mmats("check-data", "bittrex:ADA/BTC:5m", "--json", cwd=tmp_path)
    assert new.returncode == old.returncode == 0 and json.loads(new.stdout) == \
        json.loads(old.stdout)
    both = mmats("check-data", "x.csv", "--data", "y.csv", cwd=tmp_path)
    assert both.returncode == 2 and "two data sources" in both.stderr
    neither = mmats("import", "x.csv", cwd=tmp_path)
    assert neither.returncode == 2 and "--data VENUE:SYMBOL:TIMEFRAME" in neither.stderr
    not_a_series = mmats("fetch", "--data", "eth.csv", "--since", "2024-01-01", cwd=tmp_path)
    assert not_a_series.returncode == 2 and "VENUE:SYMBOL:TIMEFRAME" in not_a_series.stderr
    # the store lists symbols as users type them
    unknown = mmats("backtest", "--data", "bittrex:XRP/BTC:5m", cwd=tmp_path)
    assert unknown.returncode == 2 and "bittrex:ADA/BTC:5m" in unknown.stderr
    assert "ADA_BTC:" not in unknown.stderr


def test_cost_options_take_their_defaults_from_the_one_model():
    """The command line passes only the settings a user gave; SleeveConfig fills in the
    rest, and each option's help states the model's own default."""
    import argparse
    import re

    from mmats.cli import COST_OPTIONS, add_cost_options, settings_from
    from mmats.sleeve import SleeveConfig

    model = SleeveConfig()
    for option, (field, _, text) in COST_OPTIONS.items():
        (stated,) = re.findall(r"\(default ([^)]*)\)", text)
        value = getattr(model, field)
        assert stated == (f"{value:g}" if isinstance(value, float) else str(value)), option
    parser = argparse.ArgumentParser()
    add_cost_options(parser)
    assert settings_from(parser.parse_args([])) == {}
    given = settings_from(parser.parse_args(["--fee-bps", "7", "--long-only"]))
    assert given == {"fee_bps": 7.0, "allow_short": False}
    research = argparse.ArgumentParser()
    add_cost_options(research, fee_bps=10.0)
    assert settings_from(research.parse_args([])) == {"fee_bps": 10.0}


def test_a_setting_the_model_refuses_is_a_usage_error(tmp_path):
    done = mmats("backtest", "--sizing", "martingale", cwd=tmp_path)
    assert done.returncode == 2 and "sizing 'martingale' is not allowed" in done.stderr
    done = mmats("backtest", "--fee-bps", "-3", cwd=tmp_path)
    assert done.returncode == 2 and "fee_bps" in done.stderr and "Traceback" not in done.stderr
