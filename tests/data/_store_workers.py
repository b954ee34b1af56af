"""Code run in real child processes by test_store.py (killed with SIGKILL, or racing)."""

import numpy as np

from mmats.data.schema import candles_from_arrays
from mmats.data.store import CandleStore

T0_NS = 1_500_000_000 * 10**9  # 2017-07-14 02:40 UTC, on the minute grid
STEP_NS = 60 * 10**9
KEY = ("test", "SYN/USD", "1m")


def frame(first: int, count: int):
    """Bars first .. first+count-1 of a deterministic 1m series."""
    i = np.arange(first, first + count)
    close = 100.0 + np.sin(i / 50.0) + (i % 7) * 0.01
    return candles_from_arrays(T0_NS + i * STEP_NS, {
        "open": close, "high": close + 0.5, "low": close - 0.5, "close": close,
        "volume": 1.0 + i % 13,
    })


def append_forever(root: str, first: int, chunk: int, started) -> None:
    """Append chunk after chunk (each write rewrites the whole file) until killed."""
    store = CandleStore(root)
    started.set()
    k = 0
    while True:
        store.write(*KEY, frame(first + k * chunk, chunk), source="crash test")
        k += 1


def write_chunks(root: str, chunks: list[int], chunk: int) -> None:
    store = CandleStore(root)
    for c in chunks:
        store.write(*KEY, frame(c * chunk, chunk), source=f"chunk {c}")
