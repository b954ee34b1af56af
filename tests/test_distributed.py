"""Sweeps, walk-forward and Monte Carlo on a real Dask cluster: a LocalCluster of two
worker processes on 127.0.0.1. Every distributed result must equal the local run's bit for
bit, in the same order, also when a worker dies mid-run."""

import json
import os
import sys
import uuid

import cloudpickle
import numpy as np
import pandas as pd
import pytest
from distributed import WorkerPlugin

from mmats.backtest import sweep
from mmats.cli.main import main as mmats_main
from mmats.distributed import ClusterError, connect, map_batches, sizing, worker_strategy
from mmats.errors import ConfigError
from mmats.strategy import load_strategy
from mmats.validate.montecarlo import monte_carlo
from mmats.validate.walkforward import walk_forward

# the workers import mmats, not the tests: what the tests define travels by value
cloudpickle.register_pickle_by_value(sys.modules[__name__])

GRID = {"fast": [5, 10, 20], "slow": [30, 60, 100]}


@pytest.fixture(scope="module")
def client():
    with connect("local:2") as client:
        yield client


def assert_same_bits(local: pd.DataFrame, other: pd.DataFrame) -> None:
    """Equal tables: same columns, dtypes, index and the very same bytes in each column."""
    assert list(local.columns) == list(other.columns)
    assert local.index.equals(other.index)
    for column in local.columns:
        assert local[column].dtype == other[column].dtype, column
        mine, theirs = local[column].to_numpy(), other[column].to_numpy()
        if mine.dtype.kind in "biuf":
            assert mine.tobytes() == theirs.tobytes(), column
        else:  # names: objects, whose bytes would be addresses
            assert mine.tolist() == theirs.tolist(), column


def test_sweep_equals_the_local_sweep_bit_for_bit(client, eth_btc):
    data = {"ETH/BTC": eth_btc, "ETH/BTC head": eth_btc.iloc[:3000]}
    local = sweep("ema_cross", data, GRID, fee_bps=10, check_lookahead_bias=False,
                  period_returns="1d")
    distributed = sweep("ema_cross", data, GRID, fee_bps=10, check_lookahead_bias=False,
                        period_returns="1d", cluster=client, chunks=4)
    assert len(local.table) == 18
    assert_same_bits(local.table, distributed.table)
    assert_same_bits(local.returns, distributed.returns)
    assert distributed.bar_combinations == local.bar_combinations


def test_more_batches_than_combinations_and_a_numpy_strategy(client, eth_btc,
                                                             write_strategy):
    path = write_strategy("numpy_momentum", """
        import numpy as np
        PARAMS = {"lookback": [3, 12, 48]}
        DEFAULTS = {"lookback": 12}
        def signal(open, high, low, close, volume, lookback):
            out = np.full(close.shape[0], np.nan)
            out[lookback:] = np.sign(close[lookback:] - close[:-lookback])
            return out
    """)
    local = sweep(str(path), eth_btc, check_lookahead_bias=False)
    distributed = sweep(str(path), eth_btc, cluster=client, chunks=10,
                        check_lookahead_bias=False)
    assert_same_bits(local.table, distributed.table)


def test_walk_forward_equals_the_local_run(client, eth_btc):
    options = dict(folds=3, fee_bps=10, embargo=12, check_lookahead_bias=False)
    local = walk_forward("ema_cross", eth_btc, GRID, **options)
    distributed = walk_forward("ema_cross", eth_btc, GRID, cluster=client, **options)
    pd.testing.assert_frame_equal(local.folds, distributed.folds, check_exact=True)
    for mine, theirs in zip(local.in_sample, distributed.in_sample, strict=True):
        assert_same_bits(mine, theirs)
    assert local.equity.to_numpy().tobytes() == distributed.equity.to_numpy().tobytes()


@pytest.mark.parametrize("method", ["bootstrap", "block", "reshuffle"])
def test_monte_carlo_with_a_seed_equals_the_local_run(client, method):
    returns = np.random.default_rng(3).normal(0.0004, 0.01, 1500)
    data = {"trade_returns": returns[:200]} if method == "reshuffle" else {"returns": returns}
    local = monte_carlo(**data, method=method, runs=400, seed=11)
    distributed = monte_carlo(**data, method=method, runs=400, seed=11, cluster=client)
    for name in ("final_equity", "cagr", "max_drawdown", "longest_drawdown", "ruined"):
        assert getattr(local, name).tobytes() == getattr(distributed, name).tobytes(), name
    assert_same_bits(local.fan, distributed.fan)
    assert local.summary() == distributed.summary()


# --------------------------------------------------------------------------- a worker dies


class KillFirstExecution(WorkerPlugin):
    """Kills its worker process (as a crash or the OOM killer would) the first time any
    worker starts running a batch (a task whose key starts with ``prefix``), so that
    batch is in flight when its worker dies."""

    def __init__(self, marker, prefix):
        self.marker, self.prefix = str(marker), prefix

    def transition(self, key, start, finish, **kwargs):
        if finish != "executing" or not str(key).startswith(self.prefix):
            return
        try:
            descriptor = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.write(descriptor, str(key).encode())
        os.close(descriptor)
        os._exit(1)


@pytest.fixture
def killer(client, tmp_path):
    """Arms the plugin for the batches whose keys start with the prefix given; afterwards
    removes it and waits for the nanny's new worker."""
    marker, names = tmp_path / "killed", []

    def arm(prefix):
        names.append(f"kill-{uuid.uuid4().hex[:8]}")
        client.register_plugin(KillFirstExecution(marker, prefix), name=names[-1])
        return marker

    yield arm
    for name in names:
        client.unregister_worker_plugin(name)
    client.wait_for_workers(2, timeout=180)


def test_a_worker_killed_mid_sweep_changes_nothing(client, killer, eth_btc):
    killed = killer("mmats-sweep_ema_cross-")
    local = sweep("ema_cross", eth_btc, GRID, check_lookahead_bias=False,
                  period_returns="1d")
    distributed = sweep("ema_cross", eth_btc, GRID, check_lookahead_bias=False,
                        period_returns="1d", cluster=client, chunks=6)
    assert killed.read_text().startswith("mmats-sweep_ema_cross-")  # a batch's worker died
    assert_same_bits(local.table, distributed.table)  # same rows, none twice, none lost
    assert_same_bits(local.returns, distributed.returns)


def test_a_worker_killed_mid_monte_carlo_changes_nothing(client, killer):
    killed = killer("mmats-monte_carlo_(bootstrap)-")
    returns = np.random.default_rng(5).normal(0.0, 0.01, 800)
    local = monte_carlo(returns, runs=300, seed=2)
    distributed = monte_carlo(returns, runs=300, seed=2, cluster=client)
    assert killed.exists()
    assert local.final_equity.tobytes() == distributed.final_equity.tobytes()
    assert local.max_drawdown.tobytes() == distributed.max_drawdown.tobytes()


def _count_attempts(batch, folder):
    """A batch's task: records each attempt, and the first attempt at the batch holding
    row 5 kills its own worker process."""
    attempt = os.path.join(folder, f"batch-{batch[0]}-{uuid.uuid4().hex}")
    open(attempt, "w").close()
    if 5 in batch:
        try:
            os.close(os.open(os.path.join(folder, "died"), os.O_CREAT | os.O_EXCL))
            os._exit(1)
        except FileExistsError:
            pass
    return [row * row for row in batch]


def test_a_batch_whose_worker_died_runs_again_and_counts_once(client, tmp_path):
    rows = list(range(12))
    parts = map_batches(client, _count_attempts, rows, (str(tmp_path),), batches=4)
    client.wait_for_workers(2, timeout=180)
    assert [value for part in parts for value in part] == [row * row for row in rows]
    attempts = sorted(name.rsplit("-", 1)[0] for name in os.listdir(tmp_path)
                      if name.startswith("batch-"))
    assert (tmp_path / "died").exists()
    # batch [3, 4, 5] ran twice (the first attempt died with its worker); it counts once
    assert attempts.count("batch-3") == 2, attempts
    assert len(parts) == 4 and [part[0] for part in parts] == [0, 9, 36, 81]


# --------------------------------------------------------------------------- the CLI


def test_cli_sweep_on_local_2_prints_the_local_table(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    options = ["sweep", "--grid", "fast=5|10,slow=30|60", "--fee-bps", "10", "--json"]
    assert mmats_main(options) == 0
    local = json.loads(capsys.readouterr().out)
    assert mmats_main([*options, "--cluster", "local:2"]) == 0
    distributed = json.loads(capsys.readouterr().out)
    assert len(local["rows"]) == 4
    assert distributed["rows"] == local["rows"]


@pytest.mark.parametrize("spec, message", [
    ("tcp://127.0.0.1:9", "cannot reach the Dask scheduler at 127.0.0.1:9 (tcp) within"),
    ("local:none", "cluster 'local:none': local:N needs a number of workers >= 1"),
    ("10.0.0.5", "cluster '10.0.0.5' is not a cluster: give a running scheduler's address"),
])
def test_a_bad_cluster_is_one_line_naming_it(capsys, tmp_path, monkeypatch, spec, message):
    monkeypatch.chdir(tmp_path)
    code = mmats_main(["sweep", "--grid", "fast=5,slow=30", "--json", "--cluster", spec])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith(f"error: {message}")
    assert err.count("\n") == 1 and "Traceback" not in err
    with pytest.raises(ClusterError, match="not a cluster"):
        with connect("local"):
            pass


def test_the_sizing_note_follows_from_the_per_core_figure():
    note = sizing(1_000_000, 100_000, 100, 150e6)
    assert note["data_per_worker_mb"] == 48.0  # six 8-byte columns of 1M bars
    assert (note["batches"], note["batch_combos"]) == (400, 250)  # 4 per worker thread
    assert note["expected_bar_combos_s"] == 100 * 150e6
    assert note["expected_seconds"] == pytest.approx(1e11 / 1.5e10)
    assert sizing(1_000, 3, 100, 1e6)["batches"] == 3  # never more batches than rows


def test_a_worker_loads_the_same_strategy_source_or_refuses():
    ema = load_strategy("ema_cross")
    # another install prefix: not at the driver's path, found by name, same source
    moved = worker_strategy(("/elsewhere/strategies/ema_cross.py", "ema_cross",
                             ema.source_hash))
    assert moved.source_hash == ema.source_hash
    with pytest.raises(ConfigError, match="not the source the run started with"):
        worker_strategy((str(ema.path), "ema_cross", "0" * 16))
