"""Every script over a table of bad inputs: a plain error naming the input and a non-zero
exit code, never a Python traceback.

The cases run once, together (each subprocess pays the interpreter and the imports), and
each is then checked by its own test. Exit codes follow the one rule of every command: 2 for
a usage error or a bad input (bad data, an unreadable file, a damaged secrets file); 1 only
when a check says no (check_data.py finding problems in a file it could read).
"""

import gzip
import json
import os
import sqlite3
import subprocess
import sys
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "mmats" / "data" / "sample"
PASSPHRASE = "correct horse battery staple"


class Case(NamedTuple):
    id: str
    script: str
    args: tuple
    code: int          # expected exit code
    names: str         # the input the message's first line must name
    says: str          # and what it must say about it
    stream: str = "stderr"
    env: dict = {}


DAMAGED_SECRETS = {
    "salt_not_base64.enc": {"salt": "!!not base64!!"},
    "salt_short.enc": {"salt": "AAAA"},
    "salt_other.enc": {"salt": "AAAAAAAAAAAAAAAAAAAAAA=="},
    "n_tiny.enc": {"n": 2},
    "n_not_power_of_two.enc": {"n": 3 * 2**14},
    "n_huge.enc": {"n": 2**62},
    "r_huge.enc": {"r": 2**20},
    "p_huge.enc": {"p": 2**30},
    "n_text.enc": {"n": "32768"},
}
INPUTS = ("far.csv", "trunc.csv.gz", "corrupt.zip", "cut.zip", "cut.parquet", "afolder",
          "dir.csv", "root_file", "journal.sqlite", "config.yaml", "root_is_a_file.yaml",
          *DAMAGED_SECRETS)


def _csv_text(frame: pd.DataFrame) -> str:
    return frame.to_csv(index=False)


def make_inputs(folder: Path) -> dict[str, Path]:
    """The bad inputs, and a few good ones they are paired with."""
    eth = pd.read_parquet(SAMPLE / "bittrex" / "ETH_BTC_5m.parquet").iloc[:300]
    paths = {name: folder / name for name in INPUTS}
    far = eth.copy()
    far["ts"] = far["ts"].astype(str)
    far.loc[7, "ts"] = "3024-01-01 00:35:00+00:00"
    paths["far.csv"].write_text(_csv_text(far))
    packed = gzip.compress(_csv_text(eth).encode())
    paths["trunc.csv.gz"].write_bytes(packed[: len(packed) // 2])
    paths["corrupt.zip"].write_bytes(b"PK\x03\x04 this is not a zip archive at all" * 10)
    with zipfile.ZipFile(folder / "whole.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("DAT_ASCII_EURUSD_M1_2024.csv", "20240102 000000;1.1;1.2;1.0;1.1;0\n"
                         * 2000)
    whole = (folder / "whole.zip").read_bytes()
    paths["cut.zip"].write_bytes(whole[: len(whole) // 2])
    parquet = (SAMPLE / "bittrex" / "ETH_BTC_5m.parquet").read_bytes()
    paths["cut.parquet"].write_bytes(parquet[: len(parquet) // 2])
    paths["afolder"].mkdir()
    paths["dir.csv"].mkdir()
    paths["root_file"].write_text("a file where the store root should be\n")
    _journal_with_wrong_columns(paths["journal.sqlite"])
    paths["config.yaml"].write_text(
        (REPO / "configs" / "advisory_crypto.yaml").read_text()
        .replace("../mmats/strategies/", f"{REPO / 'mmats' / 'strategies'}/")
        .replace("../journal/advisory_crypto.sqlite", str(folder / "live" / "journal.sqlite"))
        .replace("../mmats/data/sample", str(SAMPLE)))
    paths["root_is_a_file.yaml"].write_text(
        paths["config.yaml"].read_text().replace(str(SAMPLE), str(paths["root_file"])))
    _damaged_secrets(folder)
    return paths


def _journal_with_wrong_columns(path: Path) -> None:
    """The journal's tables by name, each with columns the journal never writes."""
    from mmats.live.journal import TABLES

    db = sqlite3.connect(path)
    db.execute("CREATE TABLE chain (seq INTEGER PRIMARY KEY, what TEXT)")
    db.execute("INSERT INTO chain VALUES (1, 'x')")
    for table in TABLES:
        db.execute(f"CREATE TABLE {table} (seq INTEGER PRIMARY KEY, what TEXT)")
        db.execute(f"INSERT INTO {table} VALUES (1, 'x')")
    db.commit()
    db.close()


def _damaged_secrets(folder: Path) -> None:
    """A good secrets file, then copies with one header field damaged each."""
    good = folder / "secrets" / "good.enc"
    env = {**os.environ, "MMATS_SECRETS_FILE": str(good),
           "MMATS_SECRETS_PASSPHRASE": PASSPHRASE}
    subprocess.run([sys.executable, "-c", "from mmats import secrets; "
                    "secrets.set_secret('binance', {'api_key': 'k', 'secret': 's'})"],
                   env=env, cwd=REPO, check=True, capture_output=True)
    document = json.loads(good.read_text())
    for name, change in DAMAGED_SECRETS.items():
        path = folder / name
        path.write_text(json.dumps({**document, **change}))
        path.chmod(0o600)


def cases(p: dict[str, Path]) -> list[Case]:
    """The table: every script over the bad inputs it can be given."""
    store = ("--venue", "bittrex", "--symbol", "ETH/BTC", "--timeframe", "5m",
             "--root", p["afolder"] / "store")
    data_scripts = {"backtest.py": (), "sweep.py": (), "walkforward.py": (),
                    "montecarlo.py": (), "check_strategy.py": ("ema_cross",)}
    far = "outside the dates MMATS can hold"
    damaged = "damaged or truncated"
    folder = "is a folder, not a candle file"
    table = []
    for name, code_import, code_check, says_import, says_check in (
            ("far.csv", 2, 1, far, "unparseable timestamps (rows 8)"),
            ("trunc.csv.gz", 2, 2, damaged, damaged),
            ("corrupt.zip", 2, 2, "File is not a zip file", "unknown file type"),
            ("cut.zip", 2, 2, "File is not a zip file", "unknown file type")):
        path = p[name]
        table.append(Case(f"import-{name}", "import_data.py", (path, *store), code_import,
                          str(path), says_import))
        table.append(Case(f"check-{name}", "check_data.py", (path,), code_check,
                          str(path) if code_check == 2 else "problems:", says_check,
                          "stdout" if code_check == 1 else "stderr"))
    for name, says in (("far.csv", far), ("trunc.csv.gz", damaged), ("afolder", folder)):
        for script, head in data_scripts.items():
            table.append(Case(f"{script[:-3]}-data-{name}", script,
                              (*head, "--data", p[name]), 2, str(p[name]), says))
    table.append(Case("backtest-data-dir.csv", "backtest.py", ("--data", p["dir.csv"]), 2,
                      str(p["dir.csv"]), folder))  # the other scripts share load()
    root = "the candle store root is a file, not a folder"
    secrets_env = {"MMATS_SECRETS_PASSPHRASE": PASSPHRASE}
    table += [
        Case("check-cut.parquet", "check_data.py", (p["cut.parquet"],), 2, str(p["cut.parquet"]),
             damaged),
        Case("backtest-data-cut.parquet", "backtest.py", ("--data", p["cut.parquet"]), 2,
             str(p["cut.parquet"]), damaged),
        Case("live-replay-data-root-is-a-file", "live.py",
             ("--config", p["root_is_a_file.yaml"], "--replay"), 2, str(p["root_file"]), root),
        Case("live-tick-data-root-is-a-file", "live.py",
             ("--config", p["root_is_a_file.yaml"], "--now", "2018-01-12"), 2,
             str(p["root_file"]), root),
        Case("keys-file-in-a-file", "keys.py", ("set", "binance", "--stdin"), 2,
             str(p["root_file"] / "s.enc"), "cannot write here",
             env={**secrets_env, "MMATS_SECRETS_FILE": str(p["root_file"] / "s.enc")}),
        Case("keys-file-is-a-folder", "keys.py", ("list",), 2, str(p["afolder"]),
             "Is a directory", env={**secrets_env, "MMATS_SECRETS_FILE": str(p["afolder"])}),
        Case("backtest-trades-csv-a-folder", "backtest.py", ("--trades-csv", p["afolder"]), 2,
             str(p["afolder"]), "is a folder"),
        Case("backtest-fills-csv-in-a-file", "backtest.py",
             ("--fills-csv", p["root_file"] / "fills.csv"), 2, str(p["root_file"]),
             "is not a folder"),
        Case("walkforward-reports-a-file", "walkforward.py", ("--reports", p["root_file"]), 2,
             str(p["root_file"]), "is a file, not a folder"),
        Case("journal-not-a-database", "journal.py", ("verify", "--journal", p["root_file"]), 2,
             str(p["root_file"]), "unreadable"),
        Case("import-a-folder", "import_data.py", (p["afolder"], *store), 2,
             str(p["afolder"]), folder),
        Case("import-dir.csv", "import_data.py", (p["dir.csv"], *store), 2, str(p["dir.csv"]),
             folder),
        Case("check-a-folder", "check_data.py", (p["afolder"],), 2, str(p["afolder"]), folder),
        Case("import-root-is-a-file", "import_data.py",
             (SAMPLE / "bittrex" / "ETH_BTC_5m.parquet", "--venue", "bittrex", "--symbol",
              "ETH/BTC", "--timeframe", "5m", "--root", p["root_file"]), 2, str(p["root_file"]),
             root),
        Case("check-root-is-a-file", "check_data.py",
             ("bittrex:ETH/BTC:5m", "--root", p["root_file"]), 2, str(p["root_file"]), root),
        Case("backtest-root-is-a-file", "backtest.py",
             ("--data", "bittrex:ETH/BTC:5m", "--root", p["root_file"]), 2, str(p["root_file"]),
             root),
        Case("fetch-root-is-a-file", "fetch_data.py",
             ("binance", "BTC/USDT", "1h", "--since", "2024-01-01", "--root", p["root_file"],
              "--base-url", "http://127.0.0.1:9"), 2, str(p["root_file"]), root),
        Case("backtest-start-3024", "backtest.py", ("--start", "3024-01-01"), 2, "--start", far),
        Case("backtest-end-3024", "backtest.py", ("--end", "3024-01-01"), 2, "--end", far),
        Case("fetch-since-3024", "fetch_data.py",
             ("binance", "BTC/USDT", "1h", "--since", "3024-01-01"), 2, "--since", far),
        Case("fetch-until-3024", "fetch_data.py",
             ("binance", "BTC/USDT", "1h", "--since", "2024-01-01", "--until", "3024-01-01"),
             2, "--until", far),
        Case("backtest-strategy-a-folder", "backtest.py", ("--strategy", p["afolder"]), 2,
             str(p["afolder"]), "strategy"),
        Case("journal-a-folder", "journal.py", ("verify", "--journal", p["afolder"]), 2,
             str(p["afolder"]), "journal"),
        Case("journal-verify-wrong-columns", "journal.py",
             ("verify", "--journal", p["journal.sqlite"]), 2, str(p["journal.sqlite"]),
             "journal"),
        Case("journal-export-wrong-columns", "journal.py",
             ("export", "--journal", p["journal.sqlite"], "--output", p["afolder"] / "x.csv"),
             2, str(p["journal.sqlite"]), "journal"),
        Case("live-replay-a-folder", "live.py",
             ("--config", p["config.yaml"], "--replay", p["afolder"]), 2, str(p["afolder"]),
             folder),
    ]
    for now, says in (("-5", "out of range"), ("99999999999999999999999", "out of range"),
                      ("3024-01-01", "out of range"), ("soon", "neither an ISO time")):
        table.append(Case(f"live-now-{now[:8]}", "live.py",
                          ("--config", p["config.yaml"], "--now", now), 2, f"--now {now!r}",
                          says))
    for name in DAMAGED_SECRETS:
        table.append(Case(f"keys-{name[:-4]}", "keys.py", ("list",), 2, str(p[name]),
                          "damaged file",
                          env={"MMATS_SECRETS_FILE": str(p[name]),
                               "MMATS_SECRETS_PASSPHRASE": PASSPHRASE}))
    return table


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad_inputs")
    table = cases(make_inputs(folder))
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("MMATS_")}
    base_env.update(HOME=str(folder / "home"), XDG_CONFIG_HOME=str(folder / "config"))

    def run(case):
        command = [sys.executable, str(REPO / "scripts" / case.script), *map(str, case.args)]
        return case, subprocess.run(command, cwd=folder, env={**base_env, **case.env},
                                    input="api_key=k\nsecret=s\n", capture_output=True,
                                    text=True, timeout=120)

    with ThreadPoolExecutor(max_workers=4) as pool:
        return {case.id: (case, outcome) for case, outcome in pool.map(run, table)}


@pytest.mark.parametrize("case_id", [case.id for case in cases(
    {name: Path("/unused") / name for name in INPUTS})])
def test_a_bad_input_is_named_without_a_traceback(results, case_id):
    case, outcome = results[case_id]
    shown = f"exit {outcome.returncode}\nstdout:\n{outcome.stdout}\nstderr:\n{outcome.stderr}"
    assert "Traceback" not in outcome.stderr, shown
    assert outcome.returncode == case.code, shown
    text = outcome.stdout if case.stream == "stdout" else outcome.stderr
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines, shown
    # The input is named on the message's first line: the "error:" line (argparse's comes
    # after its usage lines, a warning may come before it), else the first line; rejected
    # rows and reports list the details on the lines after it.
    first = next((line for line in lines if line.startswith("error:") or ": error: " in line),
                 lines[0])
    assert case.names in (first if case.stream == "stderr" else text), shown
    assert case.says in text, shown


@pytest.mark.parametrize("value", ["10", True])
def test_a_setting_given_as_text_or_a_flag_is_named(eth_btc, value):
    """backtest(..., fee_bps="10") is a clear ConfigError naming the setting, not a
    TypeError from comparing text with a number deep inside the checks."""
    from mmats.backtest import backtest
    from mmats.errors import ConfigError

    with pytest.raises(ConfigError, match=r"fee_bps must be a number, got .* e\.g\. fee_bps="):
        backtest("ema_cross", eth_btc, fee_bps=value)


@pytest.mark.parametrize("entry", ["backtest", "sweep", "walk_forward", "run_research"])
@pytest.mark.parametrize("setting, value, says", [
    ("fee_bps", "10", r"^fee_bps must be a number, got '10' \(str\); e\.g\. fee_bps=0\.0"),
    ("max_leverage", True, r"^max_leverage must be a number, got True \(bool\)"),
    ("max_drawdown_pct", "25", r"^max_drawdown_pct '25' is not a percentage"),
    ("fees", 10, r"^unknown setting 'fees'; known settings: "),
])
def test_every_entry_point_checks_its_settings_with_the_one_model(eth_btc, entry, setting,
                                                                   value, says):
    """backtest, sweep, walk_forward and run_research (what the command line calls with its
    dict of settings) all check them through SleeveConfig, before any work."""
    import mmats
    from mmats.errors import ConfigError

    with pytest.raises(ConfigError, match=says):
        getattr(mmats, entry)("ema_cross", eth_btc, **{setting: value})
