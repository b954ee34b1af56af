"""Sweeps, walk-forward folds and Monte Carlo batches on a Dask cluster.

A run that outgrows one machine is cut into batches (combinations of a grid, the folds of
a walk-forward, runs of a Monte Carlo) and each batch becomes one ``dask.distributed``
task. The tasks run the very functions the local run calls (the sweep's fused kernel
through :func:`mmats.backtest._sweep_market`, a fold's sweep and choice,
:func:`mmats.nb.montecarlo.simulate_paths`), so a batch's figures are those the local run
computes for the same rows, bit for bit; the batches are put back by their index, so the
row order is the local one too.

What every worker needs (the candles, the returns) is sent once, as the result of a task
of its own that the batches depend on: each worker fetches it once from a peer, not with
every batch. If the worker holding it dies, the scheduler computes it again from the task
(data scattered with ``client.scatter`` would be lost with that worker once Dask's memory
manager has dropped the other copies). A worker that dies mid-run loses its tasks to the
scheduler, which runs them again on another worker; results are kept by batch index and
a second answer for the same batch is ignored, so nothing is counted twice.

Kernel threads: a worker runs one kernel call at a time, on as many numba threads as it
has Dask threads (``dask worker --nthreads 8`` = eight cores for the kernel). ``local:N``
starts N single-threaded worker processes: N cores.

Example::

    from mmats.backtest import sweep
    table = sweep("ema_cross", candles, grid, cluster="tcp://10.0.0.5:8786").table
    table = sweep("ema_cross", candles, grid, cluster="local:2").table  # two processes here
"""

from __future__ import annotations

import contextlib
import functools
import math
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from mmats.errors import ConfigError, MMATSError

CONNECT_TIMEOUT_S = 10.0
TASKS_PER_THREAD = 4  # batches per kernel thread: the last ones balance a slow worker
RETRIES = 2  # a task that raised (e.g. a worker's file system hiccup) runs again
# written so that error output, which masks URLs, still shows it
SPEC_HELP = ("give a running scheduler's address as `dask scheduler` prints it (tcp:// then "
             "HOST:8786), or local:N for N worker processes here")


class ClusterError(MMATSError):
    """The Dask cluster could not be started, reached or kept: the message names it."""


@contextlib.contextmanager
def connect(cluster: Any, *, timeout_s: float = CONNECT_TIMEOUT_S) -> Iterator[Any]:
    """A ``distributed.Client`` for ``cluster`` for the duration of the ``with`` block.

    ``cluster`` is ``None`` (yields None: run locally), a ``Client`` (used as is, left
    open), ``"local:N"`` (a ``LocalCluster`` of N single-threaded worker processes on
    127.0.0.1, closed at the end) or a scheduler address such as
    ``"tcp://10.0.0.5:8786"`` (connected, the client closed at the end). Raises
    :class:`ClusterError` naming the spec or address and what failed.

    >>> with connect("local:2") as client:                     # doctest: +SKIP
    ...     sweep("ema_cross", candles, cluster=client)
    """
    if cluster is None or not isinstance(cluster, str):
        yield cluster
        return
    spec = cluster.strip()
    if spec.startswith("local:"):
        with _local_cluster(spec) as client:
            yield client
        return
    if "://" not in spec:
        raise ClusterError(f"cluster {spec!r} is not a cluster: {SPEC_HELP}")
    client = _client(spec, timeout_s)
    try:
        yield client
    finally:
        client.close()


@contextlib.contextmanager
def _local_cluster(spec: str):
    count = spec.partition(":")[2]
    if not count.isdigit() or int(count) < 1:
        raise ClusterError(f"cluster {spec!r}: local:N needs a number of workers >= 1, "
                           "e.g. local:2")
    from distributed import Client, LocalCluster

    try:
        local = LocalCluster(n_workers=int(count), threads_per_worker=1, processes=True,
                             host="127.0.0.1", dashboard_address=None, silence_logs=50)
    except Exception as error:  # a port, a process limit, a memory limit
        raise ClusterError(f"cluster {spec!r}: the local workers did not start "
                           f"({type(error).__name__}: {error}); a script that starts them "
                           "must run under `if __name__ == \"__main__\":`") from None
    try:
        with Client(local) as client:
            yield client
    finally:
        local.close()


def _client(address: str, timeout_s: float):
    from distributed import Client

    where = _where(address)
    try:
        return Client(address, timeout=timeout_s)
    except (OSError, TimeoutError) as error:
        timed_out = isinstance(error, TimeoutError) or "Timed out" in str(error)
        reason = "" if timed_out else f" ({type(error).__name__}: {error})"
        raise ClusterError(f"cannot reach the Dask scheduler at {where} within "
                           f"{timeout_s:g} s{reason}: is `dask scheduler` running there "
                           "and its port open to this machine?") from None
    except ValueError as error:  # an unknown protocol or malformed address
        raise ClusterError(f"cluster {where} is not a scheduler address ({error}): "
                           f"{SPEC_HELP}") from None


def map_batches(cluster: Any, function: Callable, rows: Sequence, shared: tuple = (), *,
                batches: int | None = None, progress: bool = False,
                label: str = "cluster") -> list:
    """``[function(batch, *shared) for batch in split(rows)]``, the batches run as tasks
    on ``cluster``, the results in batch order.

    ``rows`` (a list or an array, split along its first axis into ``batches`` contiguous
    batches; default :data:`TASKS_PER_THREAD` per worker thread) are sent with their task;
    ``shared`` arguments are sent once (see the module's docstring). ``function`` must be
    importable on the workers (a module-level function of an installed package). A task
    whose worker dies is run again elsewhere; a batch answered twice counts once.
    """
    with connect(cluster) as client:
        count = batches or default_batches(client, len(rows))
        split = [rows[block[0]:block[-1] + 1]
                 for block in np.array_split(np.arange(len(rows)), min(count, len(rows)))]
        return _run(client, function, split, shared, progress, label)


def default_batches(client, n_rows: int) -> int:
    """:data:`TASKS_PER_THREAD` batches per worker thread of ``client``'s cluster."""
    threads = sum(client.nthreads().values()) or 1
    return max(1, min(n_rows, TASKS_PER_THREAD * threads))


def _run(client, function, split, shared, progress, label) -> list:
    from distributed import as_completed
    from tqdm.auto import tqdm

    address = client.scheduler.address
    run_id = uuid.uuid4().hex[:12]
    futures, shared_futures, where = [], [], {}
    try:
        shared_futures = [_hold(client, value, f"mmats-data-{run_id}-{index}")
                          for index, value in enumerate(shared)]
        for index, batch in enumerate(split):
            key = f"mmats-{label.replace(' ', '_')}-{run_id}-{index}"
            futures.append(client.submit(_call, function, batch, *shared_futures, key=key,
                                         retries=RETRIES, pure=False))
            where[key] = index
        results: dict[int, Any] = {}
        with tqdm(total=len(futures), disable=not progress, desc=label, unit="task",
                  leave=False) as bar:
            for future in as_completed(futures):
                index = where[future.key]
                if index in results:  # an answer for a batch already counted
                    continue
                results[index] = _result(future, address)
                bar.update(1)
        return [results[index] for index in range(len(split))]
    except OSError as error:  # the scheduler went away mid-run
        raise ClusterError(f"lost the Dask scheduler at {_where(address)}: "
                           f"{type(error).__name__}") from None
    finally:  # nothing of this run stays on the cluster, also after an error
        client.cancel(futures + shared_futures)


def _hold(client, value, key: str):
    """A future of ``value``: a task returning it, which the scheduler can run again."""
    import warnings

    with warnings.catch_warnings():  # the candles are meant to travel in this task
        warnings.filterwarnings("ignore", message="Sending large graph", category=UserWarning)
        return client.submit(_identity, value, key=key, pure=False)


def _identity(value):
    return value


def _result(future, address):
    from distributed import KilledWorker

    try:
        return future.result()
    except KilledWorker:
        raise ClusterError(f"batch {future.key} killed every worker that ran it on "
                           f"{_where(address)}; it may run out of memory: use more batches "
                           "(chunks=) or bigger workers") from None


def _where(address: str) -> str:
    """``tcp://10.0.0.5:8786`` as ``10.0.0.5:8786 (tcp)``: error output masks URL hosts."""
    scheme, _, host = address.partition("://")
    return f"{host} ({scheme})" if host else address


_kernel_lock = threading.Lock()


def _call(function, batch, *shared):
    """Run one batch on a worker: one kernel at a time per process (a numba parallel
    kernel may not be entered from two threads at once), on the worker's thread count."""
    import numba
    from distributed import get_worker

    threads = max(1, min(get_worker().state.nthreads, numba.config.NUMBA_NUM_THREADS))
    with _kernel_lock:
        numba.set_num_threads(threads)
        return function(batch, *shared)


# --------------------------------------------------------------------------- sweeps
# This module sits below mmats.backtest and mmats.validate (they import it), so what it
# runs of theirs comes in as a function argument: pickled by reference, as importable on
# a worker as here.


def sweep_market(client, run: Callable, strategy, prices, combos, config, cash, progress,
                 chunks, sample_bars, equity) -> np.ndarray:
    """What ``run`` (:func:`mmats.backtest._sweep_market`) returns and writes into
    ``equity``, the combinations cut into ``chunks`` batches (default
    :func:`default_batches`), each computed by ``run`` on one of ``client``'s workers."""
    reference = _reference(strategy)
    parts = map_batches(client, functools.partial(_sweep_batch, run), combos,
                        (reference, prices, config, float(cash), sample_bars),
                        batches=chunks, progress=progress, label=f"sweep {strategy.name}")
    equity[:] = np.concatenate([part[1] for part in parts]).reshape(equity.shape)
    return np.concatenate([part[0] for part in parts])


def _sweep_batch(run, combos, reference, prices, config, cash, sample_bars):
    equity = np.full((len(combos), sample_bars.shape[0]), np.nan)
    values = run(strategy=worker_strategy(reference), prices=prices, combos=combos,
                 config=config, cash=cash, progress=False, chunks=None,
                 sample_bars=sample_bars, equity=equity)
    return values, equity


def worker_strategy(reference: tuple[str, str, str]):
    """The strategy of ``reference`` (path, name, source hash) as a worker loads it: from
    the same path, else by name from the worker's own strategy folders (an install in
    another prefix); a worker that finds another source (another version) is refused."""
    from pathlib import Path

    from mmats.strategy import load_strategy

    path, name, source_hash = reference
    strategy = load_strategy(path if Path(path).is_file() else name)
    if strategy.source_hash != source_hash:
        raise ConfigError(f"strategy {name!r} on this worker ({strategy.path}) is not the "
                          f"source the run started with (hash {strategy.source_hash}, "
                          f"expected {source_hash}): give the workers the same strategy files")
    return strategy


def _reference(strategy) -> tuple[str, str, str]:
    return (str(strategy.path), strategy.name, strategy.source_hash)


# --------------------------------------------------------------------------- walk-forward


def map_folds(cluster, optimise: Callable, strategy, prices, folds, *,
              progress: bool = False, **options) -> list:
    """``[optimise(strategy, prices, fold, **options) for fold in folds]``, one task per
    fold, the candles sent once: walk-forward's in-sample halves, which depend on nothing
    but their own window (``optimise`` is
    :func:`~mmats.validate.walkforward.optimise_fold`)."""
    reference = _reference(strategy)
    parts = map_batches(cluster, functools.partial(_fold_batch, optimise), list(folds),
                        (reference, prices, options), batches=len(folds),
                        progress=progress, label=f"walk-forward {strategy.name}")
    return [choice for part in parts for choice in part]


def _fold_batch(optimise, folds, reference, prices, options):
    strategy = worker_strategy(reference)
    return [optimise(strategy, prices, fold, **options) for fold in folds]


def sizing(bars: int, combos: int, workers: int, per_core_bar_combos_s: float,
           threads_per_worker: int = 1) -> dict:
    """A sizing note for a sweep of ``combos`` × ``bars`` on ``workers`` workers, from a
    measured single-core throughput: data each worker holds, batch size, expected time.

    >>> sizing(1_000_000, 100_000, 100, 150e6)["batch_combos"]
    250
    """
    threads = workers * threads_per_worker
    batches = max(1, min(combos, TASKS_PER_THREAD * threads))
    per_batch = math.ceil(combos / batches)
    throughput = per_core_bar_combos_s * threads
    return {
        "workers": workers,
        "threads": threads,
        "data_per_worker_mb": bars * 6 * 8 / 1e6,  # ts, day... six float64/int64 columns
        "batches": batches,
        "batch_combos": per_batch,
        "batch_seconds": bars * per_batch / per_core_bar_combos_s,
        "expected_bar_combos_s": throughput,
        "expected_seconds": bars * combos / throughput,
    }
