"""A strategy's extra inputs: other timeframes, symbols and venues beside its own bars.

A strategy declares them in a module-level ``INPUTS``; each becomes one more array
argument of ``signal``, after the five price arrays and in the order declared::

    INPUTS = {
        "trend_close": {"timeframe": "1h"},                    # own symbol, 1h closes
        "btc_close": {"symbol": "BTC/USDT"},                   # a market filter
        "btc_h4_volume": {"symbol": "BTC/USDT", "venue": "binance", "timeframe": "4h",
                          "field": "volume"},
    }

    @njit
    def signal(open, high, low, close, volume, trend_close, btc_close, btc_h4_volume,
               fast=10, slow=50): ...

Keys: ``field`` (``open``, ``high``, ``low``, ``close`` or ``volume``; default
``close``), ``timeframe``, ``symbol`` and ``venue`` (each defaults to the strategy's own).
Every array is aligned as-of to the strategy's bars (:mod:`mmats.data.align`): at bar
*i* it holds the last bar of that series that had closed by bar *i*'s close, NaN before
the first. The own symbol at a longer timeframe is built from the own bars (so it needs
no other data); another symbol or venue is read from the candle store, or given.

The strategy loader knows only the names (the arguments it passes); what each name
means, and building its array, is the data layer's (here), so the same arrays reach
the backtest, the sweep, the walk-forward, the lookahead check and the live tick.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from mmats.data.align import FIELDS, align_asof, higher_timeframe
from mmats.data.calendar import timeframe_ns
from mmats.errors import ConfigError, DataError

KEYS = ("field", "timeframe", "symbol", "venue")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class ExtraInput:
    """One declared input: ``name`` is the ``signal`` argument it fills."""

    name: str
    field: str = "close"
    timeframe: str | None = None
    symbol: str | None = None
    venue: str | None = None

    @property
    def own_symbol(self) -> bool:
        return self.symbol is None and self.venue is None

    def key(self, venue: str | None, symbol: str | None, timeframe: str) -> tuple:
        """``(venue, symbol, timeframe)`` of the series it reads, the own filled in."""
        return (self.venue or venue, self.symbol or symbol, self.timeframe or timeframe)

    def describe(self) -> str:
        where = ":".join(part for part in (self.venue, self.symbol, self.timeframe) if part)
        return f"{where or 'own'} {self.field}"


def parse_inputs(declared, where: str) -> tuple[ExtraInput, ...]:
    """A module's ``INPUTS`` as :class:`ExtraInput` s; ConfigError names the one at
    fault (``where`` names the strategy)."""
    if declared is None:
        return ()
    if not isinstance(declared, Mapping):
        raise ConfigError(f"{where}: INPUTS must be a dict {{name: {{...}}}}, not "
                          f"{type(declared).__name__}")
    inputs = []
    for name, spec in declared.items():
        label = f"{where}: INPUTS[{name!r}]"
        if not isinstance(name, str) or not _NAME.match(name):
            raise ConfigError(f"{label}: the name must be a Python identifier")
        if not isinstance(spec, Mapping):
            raise ConfigError(f"{label} must be a dict with keys among {', '.join(KEYS)}")
        unknown = sorted(set(spec) - set(KEYS))
        if unknown:
            raise ConfigError(f"{label}: unknown key {unknown[0]!r} (known: "
                              f"{', '.join(KEYS)})")
        for key, value in spec.items():
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(f"{label}.{key} must be a non-empty string, not {value!r}")
        extra = ExtraInput(name, spec.get("field", "close"), spec.get("timeframe"),
                           spec.get("symbol"), spec.get("venue"))
        if extra.field not in FIELDS:
            raise ConfigError(f"{label}.field must be one of {', '.join(FIELDS)}, not "
                              f"{extra.field!r}")
        if extra.timeframe is not None:
            try:
                timeframe_ns(extra.timeframe)
            except ConfigError as error:
                raise ConfigError(f"{label}.timeframe: {error}") from None
        if extra.own_symbol and extra.timeframe is None:
            raise ConfigError(f"{label} is the strategy's own {extra.field}: name a "
                              "timeframe, symbol or venue")
        inputs.append(extra)
    return tuple(inputs)


def series_needed(inputs, *, venue: str | None, symbol: str | None,
                  timeframe: str) -> list[tuple]:
    """The other series (``(venue, symbol, timeframe)``) the inputs read, in order."""
    keys = []
    for extra in inputs:
        if extra.own_symbol:
            continue
        key = extra.key(venue, symbol, timeframe)
        if key not in keys:
            keys.append(key)
    return keys


def spec_of(key: tuple) -> str:
    """A series key as the store spec ``VENUE:SYMBOL:TIMEFRAME``."""
    return ":".join(str(part) for part in key)


def extra_arrays(inputs, own: Mapping[str, np.ndarray], timeframe: str, *,
                 venue: str | None, symbol: str | None,
                 others: Mapping[tuple, Mapping[str, np.ndarray]] | None = None,
                 ) -> dict[str, np.ndarray]:
    """Each input's array aligned to the own bars.

    ``own`` holds ``ts`` (bar open, int64 ns) and the five value arrays; ``others`` maps
    each key of :func:`series_needed` to such arrays. A missing series raises DataError
    naming it.
    """
    bar_ns = timeframe_ns(timeframe)
    ts = np.asarray(own["ts"], dtype=np.int64)
    out: dict[str, np.ndarray] = {}
    derived: dict[str, dict[str, np.ndarray]] = {}
    for extra in inputs:
        if extra.own_symbol:
            tf = extra.timeframe
            if tf not in derived:
                try:
                    derived[tf] = higher_timeframe(ts, bar_ns, own, tf)
                except ConfigError as error:
                    raise ConfigError(f"extra input {extra.name!r}: {error}") from None
            out[extra.name] = derived[tf][extra.field]
            continue
        key = extra.key(venue, symbol, timeframe)
        series = (others or {}).get(key)
        if series is None:
            raise DataError(f"extra input {extra.name!r} reads {spec_of(key)}, which was "
                            "not given or found in the store")
        other_tf = timeframe_ns(key[2])
        if other_tf < bar_ns:
            raise ConfigError(f"extra input {extra.name!r}: {key[2]} bars are shorter than "
                              f"the strategy's own {timeframe}")
        out[extra.name] = align_asof(ts, bar_ns, series["ts"], other_tf,
                                     {extra.field: series[extra.field]})[extra.field]
    return out


def load_others(keys, loader: Callable | None = None, given: Mapping | None = None,
                ) -> dict[tuple, dict[str, np.ndarray]]:
    """Arrays of each series key: from ``given`` (spec or key -> candles) first, else
    from ``loader`` (default :func:`mmats.data.load`, the store and the samples)."""
    import pandas as pd

    if loader is None:
        from mmats.data import load as loader
    given = {(_key_of(k) if isinstance(k, str) else k): v for k, v in (given or {}).items()}
    out = {}
    for key in keys:
        candles = given.get(key)
        if candles is None:
            candles = loader(spec_of(key))
        frame = candles.reset_index() if "ts" not in candles.columns else candles
        ts = pd.to_datetime(frame["ts"], utc=True).dt.as_unit("ns").astype("int64")
        out[key] = {"ts": ts.to_numpy(), **{f: frame[f].to_numpy(np.float64)
                                            for f in FIELDS}}
    return out


def _key_of(spec: str) -> tuple:
    parts = spec.split(":")
    if len(parts) != 3 or not all(parts):
        raise ConfigError(f"extra data {spec!r}: name it VENUE:SYMBOL:TIMEFRAME")
    return tuple(parts)
