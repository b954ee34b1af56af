"""Results in plain shapes: record arrays as DataFrames, numbers as JSON can hold them.

The backtest, the live journal, the validation summaries and the command line all hand
results out through these two functions, so they sit below all of them.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd


def records_frame(records: np.ndarray) -> pd.DataFrame:
    """A record array as a DataFrame, with ``*_ts_ns`` columns also as UTC timestamps.

    Example::

        records_frame(result.fills)  # one row per fill, ts_ns and ts
    """
    frame = pd.DataFrame.from_records(records) if len(records) else pd.DataFrame(
        {name: pd.Series(dtype=records.dtype[name]) for name in records.dtype.names})
    for name in list(frame.columns):
        if name.endswith("ts_ns"):
            frame[name.removesuffix("_ns") or "ts"] = pd.to_datetime(frame[name], utc=True)
    return frame


def json_safe(value):
    """Numbers as JSON can hold them: NaN and ±inf become null.

    Example::

        json_safe({"sharpe": np.float64("nan"), "trades": np.int64(3)})
        # {'sharpe': None, 'trades': 3}
    """
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        value = float(value)
        return value if math.isfinite(value) else None
    return value
