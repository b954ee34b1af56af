"""Model packages: a checked install (manifest, SHA-256, contract, lookahead, compile), a
refused package changes nothing, versions switch and roll back, a disabled or edited
package is not loaded, the command line, and a runner taking up the new version at its
next tick with the version journaled."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from mmats import backtest
from mmats.models import activate, add, list_models, remove, set_enabled
from mmats.packages import PackageError, read_registry
from mmats.strategy import load_strategy

MMATS = str(Path(sys.executable).parent / "mmats")

MODEL = '''
import numpy as np
from numba import njit


@njit(cache=True)
def crossing(open, high, low, close, volume, fast, slow):
    n = close.shape[0]
    out = np.full(n, np.nan)
    a = 2.0 / (fast + 1.0)
    b = 2.0 / (slow + 1.0)
    f = close[0]
    s = close[0]
    for i in range(n):
        f = a * close[i] + (1.0 - a) * f
        s = b * close[i] + (1.0 - b) * s
        if i >= slow:
            out[i] = {long} if f > s else 0.0
    return out
'''

CHEAT = '''
import numpy as np


def crossing(open, high, low, close, volume, fast, slow):
    out = np.zeros(close.shape[0])
    out[:-1] = np.where(close[1:] > close[:-1], 1.0, 0.0)  # tomorrow's close
    return out
'''


def manifest(model: bytes, **changes) -> str:
    fields = {"id": '"trend_pkg"', "version": '"1.0.0"', "entry_point": '"crossing"',
              "author": '"Test Author"', "sha256": f'"{hashlib.sha256(model).hexdigest()}"',
              "warmup": "60", **changes}
    lines = [f"{key} = {value}" for key, value in fields.items() if value is not None]
    return "\n".join(lines) + "\n\n[params]\nfast = [5, 10]\nslow = [40, 60]\n\n" \
        "[defaults]\nfast = 10\nslow = 40\n"


def package(folder: Path, name: str = "pkg.zip", model: str | None = None,
            extra: dict | None = None, manifest_text: str | None = None, **changes) -> Path:
    source = (model or MODEL.format(long="1.0")).encode()
    path = folder / name
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("model.py", source)
        archive.writestr("manifest.toml", manifest_text or manifest(source, **changes))
        for entry, text in (extra or {}).items():
            archive.writestr(entry, text)
    return path


@pytest.fixture
def models(tmp_path, monkeypatch):
    root = tmp_path / "models"
    monkeypatch.setenv("MMATS_MODELS", str(root))
    return root


def test_a_package_is_checked_installed_and_loaded_by_its_id(tmp_path, models):
    done = add(package(tmp_path))
    assert done["id"] == "trend_pkg" and done["active"] == "1.0.0"
    assert done["checked"][-2:] == ["lookahead (bittrex:ETH/BTC:5m)", "compiled"]
    strategy = load_strategy("trend_pkg")
    assert strategy.version == "1.0.0" and strategy.defaults == {"fast": 10, "slow": 40}
    assert strategy.grid == {"fast": [5, 10], "slow": [40, 60]}
    assert strategy.warmup() == 60
    result = backtest("trend_pkg", "bittrex:ETH/BTC:5m")
    assert result.metrics["trades"] > 0
    assert list_models() == [{"id": "trend_pkg", "active": "1.0.0", "enabled": True,
                              "versions": ["1.0.0"], "author": "Test Author"}]
    assert add(package(tmp_path))["unchanged"]  # the same version again: nothing changes
    from mmats.strategy import available_strategies

    assert {"trend_pkg", "ema_cross"} <= set(available_strategies())


HOURLY = '''
import numpy as np
from numba import njit


@njit(cache=True)
def hourly(open, high, low, close, volume, hour_close, hours):
    out = np.zeros(close.shape[0])
    for i in range(12 * hours, close.shape[0]):
        if hour_close[i] > hour_close[i - 12 * hours]:
            out[i] = 1.0
    return out
'''


def _hourly_package(folder: Path, timeframe: str) -> Path:
    source = HOURLY.encode()
    text = (f'id = "hourly_pkg"\nversion = "1.0.0"\nentry_point = "hourly"\n'
            f'author = "Test Author"\nsha256 = "{hashlib.sha256(source).hexdigest()}"\n'
            f'warmup = 96\n\n[params]\nhours = [2, 4]\n\n[defaults]\nhours = 2\n\n'
            f'[inputs.hour_close]\ntimeframe = "{timeframe}"\n')
    return package(folder, "hourly.zip", model=HOURLY, manifest_text=text)


def test_a_package_with_an_extra_input_is_checked_and_fed_it(tmp_path, models):
    done = add(_hourly_package(tmp_path, "1h"))
    assert done["id"] == "hourly_pkg"
    strategy = load_strategy("hourly_pkg")
    assert strategy.inputs == ("hour_close",)
    assert backtest("hourly_pkg", "bittrex:ETH/BTC:5m").metrics["trades"] > 0
    remove("hourly_pkg")
    with pytest.raises(PackageError, match="timeframe '1hour' is not understood"):
        add(_hourly_package(tmp_path, "1hour"))
    assert read_registry(models).models == {} and not (models / "hourly_pkg").exists()


def _nothing_installed(models: Path) -> None:
    assert read_registry(models).models == {}
    leftovers = [p for p in models.rglob("*") if p.name not in (".lock",)] \
        if models.exists() else []
    assert leftovers == []


@pytest.mark.parametrize(("kwargs", "reason"), [
    ({"sha256": '"' + "0" * 64 + '"'}, "model.py does not match the manifest's sha256"),
    ({"version": '"one"'}, "manifest key 'version' must be a version such as 1.2.0"),
    ({"id": '"Trend-Pkg"'}, "manifest key 'id' must be lower-case letters"),
    ({"author": None}, "manifest.toml lacks author"),
    ({"licence": '"MIT"'}, "unknown key 'licence'"),
    ({"warmup": "-1"}, "manifest key 'warmup' must be a whole number of bars >= 0"),
    ({"inputs": '["BTC/USDT@1h"]'}, "manifest key 'inputs' must be a table of tables"),
    ({"inputs": '{ h = { timeframe = "1h" } }'}, "must take its INPUTS right after the"),
    ({"entry_point": '"missing_function"'}, "has no function 'missing_function'"),
    ({"extra": {"../evil.py": "x"}}, "unexpected entry '../evil.py'"),
    ({"extra": {"data.csv": "x"}}, "unexpected entry 'data.csv'"),
    ({"manifest_text": "id = [unclosed"}, "manifest.toml is not valid TOML"),
    ({"model": CHEAT}, "lookahead"),
    ({"model": "import nothing_at_all\n"}, "failed to import"),
])
def test_a_bad_or_tampered_package_is_refused_and_changes_nothing(tmp_path, models, kwargs,
                                                                 reason):
    with pytest.raises(PackageError) as refused:
        add(package(tmp_path, **kwargs))
    assert reason in str(refused.value), str(refused.value)
    _nothing_installed(models)


def test_a_zip_edited_after_signing_is_refused(tmp_path, models):
    path = package(tmp_path)
    with zipfile.ZipFile(path) as archive:
        manifest_text = archive.read("manifest.toml")
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("model.py", MODEL.format(long="-1.0"))  # flipped after signing
        archive.writestr("manifest.toml", manifest_text)
    with pytest.raises(PackageError, match="changed after it was made"):
        add(path)
    _nothing_installed(models)


def test_versions_switch_roll_back_disable_and_remove(tmp_path, models):
    add(package(tmp_path, "v1.zip"))
    first = load_strategy("trend_pkg")
    add(package(tmp_path, "v2.zip", model=MODEL.format(long="0.5"), version='"1.1.0"'))
    second = load_strategy("trend_pkg")
    assert (second.version, first.version) == ("1.1.0", "1.0.0")
    assert second.source_hash != first.source_hash
    arrays = {k: np.linspace(1, 2, 300) for k in ("open", "high", "low", "close", "volume")}
    assert np.nanmax(second.run(arrays).exposure) == 0.5
    activate("trend_pkg", "1.0.0")
    assert load_strategy("trend_pkg").version == "1.0.0"
    with pytest.raises(PackageError, match="no installed version '9.9.9'"):
        activate("trend_pkg", "9.9.9")
    with pytest.raises(PackageError, match="is the active version"):
        remove("trend_pkg", "1.0.0")
    remove("trend_pkg", "1.1.0")
    assert not (models / "trend_pkg" / "1.1.0").exists()
    assert list_models()[0]["versions"] == ["1.0.0"]
    set_enabled("trend_pkg", False)
    with pytest.raises(PackageError, match="is disabled"):
        load_strategy("trend_pkg")
    set_enabled("trend_pkg", True)
    assert load_strategy("trend_pkg").version == "1.0.0"
    remove("trend_pkg")
    assert list_models() == [] and not (models / "trend_pkg").exists()


def test_an_installed_file_edited_in_the_models_folder_is_refused(tmp_path, models):
    add(package(tmp_path))
    installed = models / "trend_pkg" / "1.0.0" / "model.py"
    installed.write_text(installed.read_text().replace("1.0 if f > s", "-1.0 if f > s"))
    with pytest.raises(PackageError, match="was changed after it was installed"):
        load_strategy("trend_pkg")


def test_a_package_may_not_take_a_strategys_name(tmp_path, models):
    with pytest.raises(PackageError, match="already a strategy"):
        add(package(tmp_path, id='"ema_cross"'))
    _nothing_installed(models)


def _cli(*args, models: Path):
    return subprocess.run([MMATS, "models", *args], capture_output=True, text=True,
                          env={**os.environ, "MMATS_MODELS": str(models)}, timeout=300)


def test_the_command_line(tmp_path, models):
    done = _cli("add", str(package(tmp_path)), "--json", models=models)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["version"] == "1.0.0"
    listed = subprocess.run([sys.executable, "scripts/models.py", "list", "--json"],
                            capture_output=True, text=True, timeout=120,
                            cwd=Path(__file__).resolve().parent.parent,
                            env={**os.environ, "MMATS_MODELS": str(models)})
    assert listed.returncode == 0 and json.loads(listed.stdout)[0]["id"] == "trend_pkg"
    bad = _cli("add", str(package(tmp_path, "bad.zip", sha256='"' + "1" * 64 + '"')),
               models=models)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.startswith("error: ") and "does not match" in bad.stderr
    missing = _cli("activate", "nothing", "1.0.0", models=models)
    assert missing.returncode == 2 and "no model package 'nothing'" in missing.stderr


def test_a_runner_takes_up_a_new_version_at_its_next_tick_and_journals_it(tmp_path, models):
    """A configuration names the package by id; after 1.1.0 is added, the next tick's
    configuration snapshot says 1.1.0, and the serve loop's refresh uses it."""
    import yaml

    from mmats.live.config import load_config, refresh_models
    from mmats.live.control import tick_once
    from mmats.live.journal import Journal

    add(package(tmp_path, "v1.zip"))
    sample = Path(load_strategy("ema_cross").path).parent.parent / "data" / "sample"
    config_path = tmp_path / "runner.yaml"
    config_path.write_text(yaml.safe_dump({
        "mode": "paper", "environment": "dev",
        "markets": {"crypto": {"type": "crypto", "feed": "bittrex", "execution": "paper",
                               "symbols": ["ETH/BTC"], "timeframe": "5m"}},
        "models": [{"id": "trend", "strategy": "trend_pkg", "market": "crypto",
                    "params": {"fast": 5, "slow": 40}}],
        "notifications": ["console"], "journal": str(tmp_path / "journal.sqlite"),
        "data_root": str(sample)}))
    config = load_config(config_path)
    assert config.models[0].strategy_version == "1.0.0"
    tick_once(config, now_ns=_ns("2018-01-20"))
    add(package(tmp_path, "v2.zip", model=MODEL.format(long="0.5"), version='"1.1.0"'))
    refreshed = refresh_models(config)
    assert refreshed.models[0].strategy_version == "1.1.0"
    tick_once(refreshed, now_ns=_ns("2018-01-21"))
    with Journal(config.journal) as journal:
        snapshot = json.loads(journal.last_config_snapshot()["text"])
    assert snapshot["models"][0]["strategy_version"] == "1.1.0"
    set_enabled("trend_pkg", False)
    with pytest.raises(PackageError, match="disabled"):
        refresh_models(refreshed)


def _ns(text: str) -> int:
    import pandas as pd

    return pd.Timestamp(text, tz="UTC").value
