"""MMATS works outside a clone: a wheel built from the source, installed (not editable)
into a fresh virtual environment, runs `mmats walkforward --json` from an empty folder on
the sample data it carries, and finds a user's strategy in that folder's strategies/.

The tests run offline, so the new environment cannot download numpy, numba and the rest:
it sees this environment's installed packages through a .pth file (a path entry, which
Python does not scan for further .pth files, so this environment's editable install of
MMATS stays invisible), and the wheel goes in with --no-deps. The test checks that the
mmats it runs is the installed wheel's, not the source tree's.
"""

import json
import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# top-level folders of a working copy that are not part of the source
NOT_SOURCE = {".git", ".venv", "build", "dist", "reports", "data", "journal", "live",
              ".pytest_cache", ".ruff_cache", ".hypothesis", ".mmats_cache"}

pytestmark = pytest.mark.slow


def run(*args, cwd, env=None, timeout=900):
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=timeout)
    assert done.returncode == 0, (args, done.stdout[-2000:], done.stderr[-4000:])
    return done


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from a copy of the source (the build writes build/ and egg-info)."""
    folder = tmp_path_factory.mktemp("wheel")
    source = folder / "source"

    def ignore(directory, names):
        top = Path(directory) == REPO
        return [n for n in names if (top and n in NOT_SOURCE) or n == "__pycache__"
                or n.endswith(".egg-info")]

    shutil.copytree(REPO, source, ignore=ignore)
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
        "-w", folder / "dist", source, cwd=folder)
    (built,) = (folder / "dist").glob("mmats-*.whl")
    return built


def test_the_wheel_carries_the_strategies_the_sample_and_the_command(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(archive.read(n).decode() for n in names
                            if n.endswith(".dist-info/entry_points.txt"))
    for strategy in ("ema_cross", "rsi_reversion", "donchian_breakout"):
        assert f"mmats/strategies/{strategy}.py" in names
    for sample in ("bittrex/ETH_BTC_5m.parquet", "bittrex/ADA_BTC_5m.parquet",
                   "binance/XRP_ETH_5m.parquet", "fx/EUR_USD_1h.parquet",
                   "nasdaq/GOOG_1d.parquet", "README.md"):  # README: the data's licences
        assert f"mmats/data/sample/{sample}" in names
    assert "mmats/cli/main.py" in names and "mmats/cli/walkforward.py" in names
    assert "mmats = mmats.cli.main:main" in entry_points
    assert not any(n.startswith(("tests/", "scripts/", "strategies/")) for n in names)


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """A new virtual environment holding the wheel; returns its bin/ folder."""
    venv = tmp_path_factory.mktemp("venv") / "env"
    run(sys.executable, "-m", "venv", venv, cwd=venv.parent)
    python = venv / "bin" / "python"
    purelib = run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])",
                  cwd=venv.parent).stdout.strip()
    here = [p for p in site.getsitepackages() if Path(p).is_dir()]
    (Path(purelib) / "_mmats_test_dependencies.pth").write_text("\n".join(here) + "\n")
    run(python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", wheel,
        cwd=venv.parent)
    return venv / "bin"


def clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "MMATS_DATA_ROOT", "MMATS_STRATEGIES", "VIRTUAL_ENV")}
    return {**env, **extra}


def test_mmats_walkforward_runs_from_an_empty_folder(installed, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    where = run(installed / "python", "-c", "import mmats; print(mmats.__file__)", cwd=empty,
                env=clean_env()).stdout.strip()
    assert Path(where).is_relative_to(installed.parent), where  # the wheel's, not the clone's
    done = run(installed / "mmats", "walkforward", "--json", cwd=empty, env=clean_env())
    summary = json.loads(done.stdout)
    assert summary["strategy"] == "ema_cross"
    assert summary["data_quality"]["bars"] == 5760  # the shipped bittrex:ETH/BTC:5m
    assert summary["folds"] and summary["verdict"]
    for path in summary["reports"].values():  # relative to the folder it ran in
        assert not Path(path).is_absolute() and (empty / path).is_file(), path
        assert (empty / path).resolve().is_relative_to(empty.resolve())
    assert (empty / "reports").is_dir()


def test_a_user_strategy_is_found_in_the_working_folder(installed, tmp_path):
    """./strategies/ first, then $MMATS_STRATEGIES' folders, then the shipped ones."""
    work = tmp_path / "work"
    (work / "strategies").mkdir(parents=True)
    shipped = (REPO / "mmats" / "strategies" / "ema_cross.py").read_text()
    (work / "strategies" / "my_cross.py").write_text(shipped.replace(
        'DEFAULTS = {"fast": 10, "slow": 50}', 'DEFAULTS = {"fast": 12, "slow": 40}'))
    done = run(installed / "mmats", "backtest", "--strategy", "my_cross", "--json", cwd=work,
               env=clean_env())
    assert json.loads(done.stdout)["params"] == {"fast": 12, "slow": 40}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = run(installed / "mmats", "backtest", "--strategy", "my_cross", "--json",
               cwd=elsewhere, env=clean_env(MMATS_STRATEGIES=str(work / "strategies")))
    assert json.loads(done.stdout)["strategy"] == "my_cross"
    missing = subprocess.run([installed / "mmats", "backtest", "--strategy", "my_cross"],
                             capture_output=True, text=True, cwd=elsewhere, env=clean_env(),
                             timeout=300)
    assert missing.returncode == 2 and "no strategy named 'my_cross'" in missing.stderr
