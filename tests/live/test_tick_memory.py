"""A cron tick loads only what a tick needs (issue 14: 10 models in one process <= 300 MB).

A fresh Python process, as cron starts one, parses a 10-model configuration and runs
operator-mode ticks against the paper venue over a candle store (a first tick that warms
up on the stored history, then ticks that each add a bar). Afterwards none of the
research-only libraries may be in ``sys.modules``: DuckDB (the store is read with
pyarrow), polars, matplotlib, quantstats, arch, the dashboard's and the cluster's
libraries, the venues' SDKs. SciPy may appear only as far as numba itself imports it (its
BLAS check); none of SciPy's research modules. The process's peak RSS is printed, never
asserted (``benchmarks/bench_runner.py`` measures it).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mmats.data import CandleStore, load

ROOT = Path(__file__).resolve().parents[2]
FIVE_MINUTES = 300_000_000_000

RESEARCH_ONLY = ["duckdb", "polars", "matplotlib", "quantstats", "arch", "statsmodels",
                 "sklearn", "vectorbt", "optuna", "plotly", "dask", "distributed",
                 "fastapi", "uvicorn", "starlette", "telegram", "ccxt", "oandapyV20",
                 "websockets", "playwright", "numexpr", "bottleneck", "IPython",
                 "jinja2", "PIL", "kaleido", "seaborn"]
SCIPY_RESEARCH = ["scipy.stats", "scipy.optimize", "scipy.signal", "scipy.interpolate",
                  "scipy.sparse", "scipy.special", "scipy.integrate", "scipy.spatial"]

CHILD = """
import json, re, sys
from mmats.live import control
from mmats.live.config import parse_config
config = parse_config(json.load(open({config!r})))
for now_ns in json.load(open({times!r})):
    control.tick_once(config, now_ns=now_ns, mode="operator")
status = open("/proc/self/status").read()
peak_kib = int(re.search(r"VmHWM:\\s+(\\d+)", status).group(1))
print(json.dumps({{"modules": sorted(sys.modules), "peak_kib": peak_kib}}))
"""


def ten_models(folder: Path) -> dict:
    strategies = [("ema_cross", {"fast": 5, "slow": 20}), ("rsi_reversion", {"period": 14}),
                  ("donchian_breakout", {"channel": 10})]
    models = []
    for index in range(10):
        strategy, params = strategies[index % 3]
        models.append({"id": f"m{index}", "strategy": strategy, "market": "crypto",
                       "allocation": 0.1, "params": params, "costs": {"fee_bps": 10}})
    return {"mode": "operator",
            "markets": {"crypto": {"type": "crypto", "feed": "bittrex",
                                   "execution": "paper", "symbols": ["ETH/BTC"],
                                   "timeframe": "5m"}},
            "models": models,
            "journal": str(folder / "journal.sqlite"),
            "data_root": str(folder / "data"),
            "notifications": [f"file://{folder / 'notes.log'}"]}


@pytest.fixture(scope="module")
def ticked(tmp_path_factory):
    """The modules and peak RSS of a fresh process that ran 20 operator ticks."""
    folder = tmp_path_factory.mktemp("tick_memory")
    candles = load("bittrex:ETH/BTC:5m").iloc[:300].reset_index(drop=True)
    CandleStore(folder / "data").write("bittrex", "ETH/BTC", "5m", candles)
    (folder / "config.json").write_text(json.dumps(ten_models(folder)))
    closes = [int(candles["ts"].iloc[bar].value) + FIVE_MINUTES for bar in range(279, 300)]
    (folder / "times.json").write_text(json.dumps(closes))
    env = {**os.environ, "PYTHONPATH": str(ROOT),
           "MMATS_SECRETS_FILE": str(folder / "secrets.enc"),
           "MMATS_SECRETS_PASSPHRASE": "test_tick_memory's own passphrase"}
    child = CHILD.format(config=str(folder / "config.json"), times=str(folder / "times.json"))
    out = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True,
                         cwd=folder, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.splitlines()[-1])
    print(f"peak RSS of the ticking process: {result['peak_kib'] * 1024 / 1e6:.0f} MB")
    journal_rows = subprocess.run(
        [sys.executable, "-c", "import sqlite3, sys; print(sqlite3.connect(sys.argv[1])"
         ".execute('select count(*) from signals').fetchone()[0])",
         str(folder / "journal.sqlite")], capture_output=True, text=True)
    assert int(journal_rows.stdout) >= 10 * 21, "the ticks did not decide every bar"
    return set(result["modules"])


def test_a_tick_imports_no_research_only_library(ticked):
    loaded = sorted(name for name in RESEARCH_ONLY if name in ticked)
    assert loaded == [], f"a tick imported {loaded}"


def test_scipy_only_as_far_as_numba_imports_it(ticked):
    loaded = sorted(name for name in SCIPY_RESEARCH if name in ticked)
    assert loaded == [], f"a tick imported {loaded}"


def test_the_tick_did_run_the_live_wing(ticked):
    """The check above means something only if the tick went through the whole path."""
    for module in ("mmats.live.tick", "mmats.brokers.paper", "mmats.brokers.store_feed",
                   "mmats.data.store", "pyarrow.parquet", "numba"):
        assert module in ticked, module
