"""Shared by the mmats.ta tests: the bundled sample candles as float64 arrays, and the
comparison rule (relative 1e-9, with an absolute floor of 1e-12 of the quantity's own
scale so values near zero, like a slope or an oscillator crossing 0, compare sensibly)."""

from types import SimpleNamespace

import numpy as np
from kernel_runs import load_sample

# crypto (two 5m pairs priced in BTC, one with gaps; one in ETH), forex, stocks
SAMPLES = {
    "eth_btc_5m": "bittrex/ETH_BTC_5m.parquet",
    "ada_btc_5m": "bittrex/ADA_BTC_5m.parquet",
    "xrp_eth_5m": "binance/XRP_ETH_5m.parquet",
    "eur_usd_1h": "fx/EUR_USD_1h.parquet",
    "goog_1d": "nasdaq/GOOG_1d.parquet",
}

RTOL = 1e-9
FLOOR = 1e-12


def load_bars(name):
    frame = load_sample(SAMPLES[name])
    columns = {k: frame[k].to_numpy(dtype=np.float64, copy=True)
               for k in ("open", "high", "low", "close", "volume")}
    columns["ts_ns"] = frame["ts"].dt.as_unit("ns").astype("int64").to_numpy()
    columns["name"] = name
    return SimpleNamespace(**columns)


def first_finite(values):
    finite = np.flatnonzero(np.isfinite(values))
    return int(finite[0]) if finite.size else len(values)


def assert_close(mine, expected, scale, label):
    """Equal where ``expected`` is finite, within ``RTOL`` relative or ``FLOOR * scale``."""
    mine = np.asarray(mine, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert mine.shape == expected.shape, label
    where = np.isfinite(expected)
    assert np.isfinite(mine[where]).all(), f"{label}: NaN where the reference has a value"
    error = np.abs(mine[where] - expected[where])
    allowed = RTOL * np.abs(expected[where]) + FLOOR * scale
    worst = int(np.argmax(error - allowed)) if error.size else 0
    assert (error <= allowed).all(), (
        f"{label}: {int((error > allowed).sum())} values differ; worst at bar "
        f"{np.flatnonzero(where)[worst]}: {mine[where][worst]!r} vs {expected[where][worst]!r}")
