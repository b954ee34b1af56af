"""Loading strategies and holding them to their contract.

A strategy is a module (a ``.py`` file in your ``strategies/`` folder, or a zip holding ``model.py``
and ``manifest.toml``) with:

- ``signal(open, high, low, close, volume, **params)``: a numba (or numpy) function
  returning a float64 array of target exposure in [-1, 1], one value per bar (NaN keeps
  the position), or a tuple ``(exposure, stop_distance[, take_profit_distance])`` whose
  extra arrays are price distances from the entry (> 0, NaN for none);
- ``PARAMS``: the default search grid, ``{name: [values...]}``;
- ``DEFAULTS``: one parameter set;
- ``warmup(**params)`` (or a constant ``WARMUP``): bars needed before the output means
  anything;
- optionally ``valid(**params)``: False for combinations a sweep should skip.

Parameters are checked where every path meets (config load, ``backtest``, ``sweep``, the
command line): each value must be a finite number of the parameter's type (int when
every value in ``PARAMS`` and ``DEFAULTS`` is an int) and sign (> 0 when all of them are
positive, >= 0 when none is negative: a window cannot be 0 or -15); a single parameter
set must also pass ``valid()``. A sweep skips the grid combinations ``valid()`` rejects.

Example::

    strategy = load_strategy("ema_cross")
    output = strategy.run(arrays, {"fast": 10, "slow": 50})
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import itertools
import math
import numbers
import os
import sys
import tomllib
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from mmats.errors import ConfigError, StrategyError
from mmats.files import atomic_path

SHIPPED = Path(__file__).resolve().parent / "strategies"  # ema_cross, rsi_reversion, ...
PRICE_ARGS = ("open", "high", "low", "close", "volume")


@dataclass(frozen=True)
class SignalOutput:
    """A strategy's validated output over a history."""

    exposure: np.ndarray
    stop_distance: np.ndarray | None = None
    take_profit_distance: np.ndarray | None = None
    confidence: np.ndarray | None = None  # in [0, 1] (NaN: none said), when declared


@dataclass(frozen=True)
class Strategy:
    """A loaded strategy: its signal function, parameter grid and source identity."""

    name: str
    path: Path
    module: ModuleType
    signal: Any
    param_names: tuple[str, ...]
    param_types: dict[str, type]
    grid: dict[str, list]
    defaults: dict[str, Any]
    source_hash: str
    param_signs: dict[str, str] = field(default_factory=dict)  # positive, non-negative, any
    version: str = ""  # an installed model package's version (mmats.packages); else ""
    inputs: tuple[str, ...] = ()  # extra input arrays signal takes after the prices
    input_specs: dict = field(default_factory=dict)  # INPUTS as declared (mmats.data.extras)
    outputs: tuple[str, ...] = ()  # OUTPUTS as declared; () = (exposure[, stop[, take]])

    @property
    def is_numba(self) -> bool:
        return hasattr(self.signal, "py_func")

    def resolve_params(self, params: dict | None = None) -> dict[str, Any]:
        """DEFAULTS overlaid with ``params``, each checked by :meth:`param_value`, the set
        checked by the strategy's ``valid()``.

        Unknown names, a bad value or a set ``valid()`` rejects raise
        :class:`ConfigError` naming the parameter and value.

        >>> load_strategy("ema_cross").resolve_params({"fast": 0})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        mmats.errors.ConfigError: parameter 'fast' of strategy 'ema_cross' must be > 0 ...
        """
        params = dict(params or {})
        unknown = sorted(set(params) - set(self.param_names))
        if unknown:
            raise ConfigError(
                f"strategy {self.name!r} has no parameter {', '.join(map(repr, unknown))}; "
                f"its parameters are {', '.join(self.param_names)}"
            )
        merged = {**self.defaults, **params}
        resolved = {name: self.param_value(name, merged[name]) for name in self.param_names}
        if not self.is_valid(resolved):
            given = ", ".join(f"{name}={resolved[name]!r}" for name in self.param_names)
            raise ConfigError(f"strategy {self.name!r} rejects {given}: its valid() returns "
                              "False for this combination")
        return resolved

    def param_value(self, name: str, value):
        """``value`` as parameter ``name`` takes it: a finite number of its type (int
        parameters refuse 2.5) and sign (see the module docstring), else
        :class:`ConfigError` naming both."""
        kind = self.param_types[name]
        where = f"parameter {name!r} of strategy {self.name!r}"
        if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real | str):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where} must be a number, got {value!r}") from None
        if not math.isfinite(number):
            raise ConfigError(f"{where} must be a finite number, got {value!r}")
        sign = self.param_signs.get(name, "any")
        if (sign == "positive" and not number > 0) or (sign == "non-negative" and number < 0):
            bound = "> 0" if sign == "positive" else ">= 0"
            raise ConfigError(f"{where} must be {bound} (every value of its PARAMS and "
                              f"DEFAULTS is), got {value!r}")
        if kind is int:
            if number != int(number):
                raise ConfigError(f"{where} takes whole numbers, got {value!r}")
            return int(number)
        return number

    def warmup(self, params: dict | None = None) -> int:
        """Bars the strategy needs before its output is meaningful."""
        params = self.resolve_params(params)
        hook = getattr(self.module, "warmup", None)
        if callable(hook):
            return int(hook(**params))
        return int(getattr(self.module, "WARMUP", 0))

    def lookback(self, params: dict | None = None) -> int:
        """Bars of history the live runner feeds the strategy: enough that the value at the
        last bar equals the full-history value (checked by the lookahead check)."""
        return max(10 * self.warmup(params), 200)

    def is_valid(self, params: dict) -> bool:
        hook = getattr(self.module, "valid", None)
        return bool(hook(**params)) if callable(hook) else True

    def grid_axes(self, grid: dict | None = None) -> dict[str, list]:
        """Each parameter's checked values in ``grid`` (default ``PARAMS``), in the
        strategy's parameter order; names missing from ``grid`` take their DEFAULTS value."""
        grid = dict(self.grid if grid is None else grid)
        unknown = sorted(set(grid) - set(self.param_names))
        if unknown:
            raise ConfigError(
                f"grid names {', '.join(map(repr, unknown))} are not parameters of "
                f"strategy {self.name!r} ({', '.join(self.param_names)})"
            )
        axes = {}
        for name in self.param_names:
            values = grid.get(name, [self.defaults[name]])
            if not isinstance(values, list | tuple | range | np.ndarray):
                values = [values]
            if len(values) == 0:
                raise ConfigError(f"grid for parameter {name!r} is empty")
            axes[name] = [self.param_value(name, value) for value in values]
        return axes

    def combinations(self, grid: dict | None = None) -> tuple[list[dict], int]:
        """All parameter sets of ``grid`` (default ``PARAMS``) the strategy accepts.

        Returns ``(valid combinations, number skipped as invalid)``. Names missing from
        ``grid`` take their DEFAULTS value.
        """
        valid, skipped = [], 0
        for combo in itertools.product(*self.grid_axes(grid).values()):
            params = dict(zip(self.param_names, combo, strict=True))
            if self.is_valid(params):
                valid.append(params)
            else:
                skipped += 1
        return valid, skipped

    def run(self, arrays: dict[str, np.ndarray], params: dict | None = None) -> SignalOutput:
        """Call ``signal`` on price arrays and check its output against the contract."""
        return self.run_resolved(arrays, self.resolve_params(params))

    def run_resolved(self, arrays: dict[str, np.ndarray], params: dict) -> SignalOutput:
        """:meth:`run` with ``params`` as :meth:`resolve_params` returned them: the live
        tick resolves a sleeve's parameters once and runs the strategy on every close's
        window. The output is checked as :meth:`run` checks it, the same errors included."""
        prices = [np.ascontiguousarray(arrays[name], dtype=np.float64) for name in PRICE_ARGS]
        if self.inputs:
            prices += self._extra_arrays(arrays, prices[0].shape[0])
        try:
            raw = self.signal(*prices, **params)
        except StrategyError:
            raise
        except Exception as error:
            raise StrategyError(
                f"strategy {self.name!r} ({self.path}) failed with params {params}: "
                f"{type(error).__name__}: {error}"
            ) from error
        if self.outputs:
            return validate_named_output(self.name, self.outputs, raw, prices[0].shape[0])
        return validate_output(self.name, raw, prices[0].shape[0])

    def _extra_arrays(self, arrays: dict, n_bars: int) -> list[np.ndarray]:
        missing = [name for name in self.inputs if name not in arrays]
        if missing:
            raise StrategyError(
                f"strategy {self.name!r} reads the extra input {missing[0]!r} "
                f"({self.input_specs.get(missing[0])}), which was not given: build the "
                "arrays with backtest()/sweep() (or mmats.data.extras) from candles that "
                "say their venue and symbol, or pass extra_data=")
        extras = [np.ascontiguousarray(arrays[name], dtype=np.float64) for name in self.inputs]
        for name, values in zip(self.inputs, extras, strict=True):
            if values.shape != (n_bars,):
                raise StrategyError(f"strategy {self.name!r}: the extra input {name!r} has "
                                    f"shape {values.shape}; expected ({n_bars},)")
        return extras


def validate_output(name: str, raw, n_bars: int) -> SignalOutput:
    """Check length, dtype and range of a signal's output; raise StrategyError if broken."""
    parts = raw if isinstance(raw, tuple) else (raw,)
    if _well_formed(parts, n_bars):  # the usual case, in a few array reductions
        return SignalOutput(*parts)
    parts = list(parts)  # something is off: find it, and say what
    if not 1 <= len(parts) <= 3:
        raise StrategyError(
            f"strategy {name!r} returned a tuple of {len(parts)} items; expected exposure, "
            "optionally followed by stop_distance and take_profit_distance"
        )
    labels = ("exposure", "stop_distance", "take_profit_distance")
    checked = []
    for label, part in zip(labels, parts, strict=False):
        if not isinstance(part, np.ndarray):
            raise StrategyError(
                f"strategy {name!r}: {label} must be a numpy array, got {type(part).__name__}"
            )
        if part.dtype != np.float64:
            raise StrategyError(
                f"strategy {name!r}: {label} has dtype {part.dtype}; it must be float64"
            )
        if part.ndim != 1 or part.shape[0] != n_bars:
            raise StrategyError(
                f"strategy {name!r}: {label} has shape {part.shape}; expected ({n_bars},), "
                "one value per bar"
            )
        checked.append(part)
    exposure = checked[0]
    outside = np.flatnonzero(~np.isnan(exposure) & ((exposure < -1.0) | (exposure > 1.0)))
    if outside.size:
        first = outside[0]
        raise StrategyError(
            f"strategy {name!r}: exposure {float(exposure[first])!r} at bar {first} is outside "
            f"[-1, 1] ({outside.size} bars in all)"
        )
    for label, part in zip(labels[1:], checked[1:], strict=False):
        bad = np.flatnonzero(~np.isnan(part) & ~(part > 0.0))
        if bad.size:
            raise StrategyError(
                f"strategy {name!r}: {label} {float(part[bad[0]])!r} at bar {bad[0]} must be > 0 "
                f"or NaN ({bad.size} bars in all)"
            )
    return SignalOutput(*checked)


def _well_formed(parts: tuple, n_bars: int) -> bool:
    """Whether :func:`validate_output` would accept ``parts`` as they are: 1 to 3 float64
    arrays of ``n_bars`` values, exposure within [-1, 1] and the distances > 0 (NaN allowed
    everywhere). A cheap sufficient test (``fmax``/``fmin`` pass over NaN without a
    temporary array); False sends the output through the full check, which names the fault."""
    if not 1 <= len(parts) <= 3:
        return False
    for part in parts:
        if type(part) is not np.ndarray or part.dtype != np.float64 or part.ndim != 1 \
                or part.shape[0] != n_bars:
            return False
    if n_bars == 0:
        return True
    exposure = parts[0]
    if np.fmax.reduce(exposure) > 1.0 or np.fmin.reduce(exposure) < -1.0:
        return False
    return not any(np.fmin.reduce(part) <= 0.0 for part in parts[1:])


OUTPUT_NAMES = ("exposure", "stop_distance", "take_profit_distance", "confidence")


def validate_named_output(name: str, outputs: tuple[str, ...], raw, n_bars: int
                          ) -> SignalOutput:
    """Check the output of a strategy that declares ``OUTPUTS`` (its tuple's names, in
    order): each a float64 array of ``n_bars`` values, exposure in [-1, 1], distances
    > 0, confidence in [0, 1] (NaN allowed everywhere)."""
    parts = raw if isinstance(raw, tuple) else (raw,)
    if len(parts) != len(outputs):
        raise StrategyError(f"strategy {name!r} returned {len(parts)} array(s); its OUTPUTS "
                            f"declare {len(outputs)}: {', '.join(outputs)}")
    named = dict(zip(outputs, parts, strict=True))
    checked = validate_output(name, tuple(named[key] for key in OUTPUT_NAMES[:3]
                                          if key in named), n_bars)
    confidence = named.get("confidence")
    if confidence is not None:
        if not isinstance(confidence, np.ndarray) or confidence.dtype != np.float64 \
                or confidence.shape != (n_bars,):
            raise StrategyError(f"strategy {name!r}: confidence must be a float64 array of "
                                f"{n_bars} values, one per bar")
        bad = np.flatnonzero(~np.isnan(confidence) & ((confidence < 0.0) | (confidence > 1.0)))
        if bad.size:
            raise StrategyError(
                f"strategy {name!r}: confidence {float(confidence[bad[0]])!r} at bar "
                f"{bad[0]} is outside [0, 1] ({bad.size} bars in all)")
    return SignalOutput(checked.exposure, checked.stop_distance if "stop_distance" in named
                        else None, named.get("take_profit_distance") if
                        "take_profit_distance" in named else None, confidence)


def strategy_dirs() -> list[Path]:
    """Where names are looked up, first match wins: the folders in $MMATS_STRATEGIES (an
    os.pathsep list), the working directory's ``strategies/``, then the strategies that
    ship with MMATS (package data, so a name such as ``ema_cross`` works from any folder)."""
    dirs = [Path(p) for p in os.environ.get("MMATS_STRATEGIES", "").split(os.pathsep) if p]
    dirs += [Path.cwd() / "strategies", SHIPPED]
    unique = []
    for directory in dirs:
        if directory.resolve() not in [d.resolve() for d in unique]:
            unique.append(directory)
    return unique


def available_strategies() -> list[str]:
    """Names found in the strategy folders, and the enabled installed model packages."""
    from mmats.packages import PackageError, read_registry

    names = set()
    for directory in strategy_dirs():
        if directory.is_dir():
            names.update(p.stem for p in directory.glob("*.py") if not p.stem.startswith("_"))
            names.update(p.stem for p in directory.glob("*.zip"))
    try:
        names.update(i for i, e in read_registry().models.items() if e.get("enabled", True))
    except PackageError:  # an unreadable registry is reported where a package is loaded
        pass
    return sorted(names)


def load_strategy(name_or_path: str | os.PathLike) -> Strategy:
    """Load a strategy by name (looked up in the strategy folders) or by file path.

    >>> load_strategy("ema_cross").defaults
    {'fast': 10, 'slow': 50}
    """
    if isinstance(name_or_path, Strategy):
        return name_or_path
    path = _find(str(name_or_path))
    if path is None:  # not in the strategy folders: an installed model package?
        from mmats.packages import find_package

        package = find_package(str(name_or_path))
        if package is None:
            known = ", ".join(available_strategies()) or "none"
            raise StrategyError(
                f"no strategy named {name_or_path!r} in "
                f"{', '.join(str(d) for d in strategy_dirs())} nor among the installed "
                f"model packages; available: {known}")
        return _load_installed(package)
    if path.suffix == ".zip":
        return _load_zip(path)
    if path.suffix != ".py":
        raise StrategyError(f"{path}: a strategy is a .py file or a .zip with model.py")
    return _load_module(path, path.stem)


def _find(name: str) -> Path | None:
    """The file of a strategy path or name in the strategy folders; None for a name
    found in none of them."""
    candidate = Path(name).expanduser()
    if candidate.suffix in (".py", ".zip") or os.sep in name or "/" in name:
        if not candidate.is_file():
            raise StrategyError(f"strategy file {candidate} does not exist")
        return candidate.resolve()
    for directory in strategy_dirs():
        for suffix in (".py", ".zip"):
            path = directory / f"{name}{suffix}"
            if path.is_file():
                return path.resolve()
    return None


def _load_zip(path: Path) -> Strategy:
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()[:16]
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        for required in ("model.py", "manifest.toml"):
            if required not in names:
                raise StrategyError(f"{path}: the zip must hold {required} at its top level")
        manifest_text = archive.read("manifest.toml").decode()
        source = archive.read("model.py")
    try:
        manifest = tomllib.loads(manifest_text)
    except tomllib.TOMLDecodeError as error:
        raise StrategyError(f"{path}: manifest.toml is not valid TOML: {error}") from None
    name = str(manifest.get("name") or path.stem)
    target = cache_dir() / "models" / f"{_safe(name)}_{digest}" / "model.py"
    if not target.is_file() or target.read_bytes() != source:
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as temporary:  # a unique temp: two processes may race
            temporary.write_bytes(source)
    return _load_module(target, name, origin=path)


def _load_installed(model_py: Path) -> Strategy:
    """The active version of an installed model package (checked against its manifest
    again: a file edited in the models folder is refused)."""
    from mmats.packages import installed_manifest, prepare_module

    manifest = installed_manifest(model_py)
    # the manifest shapes the module (entry point, grid): a module per manifest too
    tag = hashlib.sha256((model_py.parent / "manifest.toml").read_bytes()).hexdigest()[:8]
    strategy = _load_module(model_py, f"{manifest.id}_{manifest.version}_{tag}",
                            prepare=lambda module: prepare_module(module, manifest,
                                                                  str(model_py)))
    return replace(strategy, name=manifest.id, version=manifest.version)


def _load_module(path: Path, name: str, origin: Path | None = None,
                 prepare=None) -> Strategy:
    source = path.read_bytes()
    digest = hashlib.sha256(source).hexdigest()[:16]
    module_name = f"mmats_strategies.{_safe(name)}_{digest}"
    module = sys.modules.get(module_name)
    if module is None:
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
            if prepare is not None:
                prepare(module)
        except StrategyError:
            del sys.modules[module_name]
            raise
        except Exception as error:
            del sys.modules[module_name]
            raise StrategyError(
                f"strategy {origin or path} failed to import: {type(error).__name__}: {error}"
            ) from error
    return _describe(module, name, origin or path, digest)


def _describe(module: ModuleType, name: str, path: Path, digest: str) -> Strategy:
    signal = getattr(module, "signal", None)
    if not callable(signal):
        raise StrategyError(f"strategy {path} has no signal(open, high, low, close, volume, ...)")
    python_function = getattr(signal, "py_func", signal)
    arguments = list(inspect.signature(python_function).parameters)
    if tuple(arguments[:5]) != PRICE_ARGS:
        raise StrategyError(
            f"strategy {path}: signal must start with (open, high, low, close, volume), "
            f"found ({', '.join(arguments[:5])})"
        )
    inputs, input_specs = _declared_inputs(module, path, arguments)
    outputs = _declared_outputs(module, path)
    param_names = tuple(arguments[5 + len(inputs):])
    grid = getattr(module, "PARAMS", None)
    defaults = getattr(module, "DEFAULTS", None)
    if not isinstance(grid, dict) or not isinstance(defaults, dict):
        raise StrategyError(f"strategy {path} must define PARAMS and DEFAULTS dicts")
    for label, mapping in (("PARAMS", grid), ("DEFAULTS", defaults)):
        if set(mapping) != set(param_names):
            missing = sorted(set(param_names) - set(mapping))
            extra = sorted(set(mapping) - set(param_names))
            raise StrategyError(
                f"strategy {path}: {label} keys must match signal's parameters "
                f"{list(param_names)}; missing {missing}, unknown {extra}"
            )
    grid = {key: list(grid[key]) for key in param_names}
    param_types, param_signs = {}, {}
    for key in param_names:
        values = grid[key] + [defaults[key]]
        whole = all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in values)
        param_types[key] = int if whole else float
        numeric = [float(v) for v in values if isinstance(v, numbers.Real)]
        lowest = min(numeric) if len(numeric) == len(values) else -math.inf
        param_signs[key] = ("positive" if lowest > 0 else "non-negative" if lowest >= 0
                            else "any")
    strategy = Strategy(
        name=name,
        path=Path(path),
        module=module,
        signal=signal,
        param_names=param_names,
        param_types=param_types,
        grid=grid,
        defaults={key: defaults[key] for key in param_names},
        source_hash=digest,
        param_signs=param_signs,
        inputs=inputs,
        input_specs=input_specs,
        outputs=outputs,
    )
    try:
        strategy.resolve_params()
    except ConfigError as error:
        raise StrategyError(f"strategy {path}: its DEFAULTS are refused: {error}") from None
    return strategy


def _declared_inputs(module: ModuleType, path, arguments: list[str]
                     ) -> tuple[tuple[str, ...], dict]:
    """The names of ``INPUTS`` (the arrays ``signal`` takes after the prices, in that
    order). What each means is checked where its array is built (:mod:`mmats.data.extras`)."""
    declared = getattr(module, "INPUTS", None)
    if declared is None:
        return (), {}
    if not isinstance(declared, dict) or not all(isinstance(k, str) for k in declared):
        raise StrategyError(f"strategy {path}: INPUTS must be a dict {{name: {{...}}}}")
    names = tuple(declared)
    if tuple(arguments[5:5 + len(names)]) != names:
        raise StrategyError(
            f"strategy {path}: signal must take its INPUTS right after the prices, in order: "
            f"(open, high, low, close, volume, {', '.join(names)}, ...), found "
            f"({', '.join(arguments[:5 + len(names)])})")
    return names, dict(declared)


def _declared_outputs(module: ModuleType, path) -> tuple[str, ...]:
    """``OUTPUTS``: the names of the arrays ``signal`` returns, exposure first."""
    declared = getattr(module, "OUTPUTS", None)
    if declared is None:
        return ()
    names = tuple(declared) if isinstance(declared, list | tuple) else None
    if not names or names[0] != "exposure" or len(set(names)) != len(names) or \
            any(name not in OUTPUT_NAMES for name in names):
        raise StrategyError(f"strategy {path}: OUTPUTS must name exposure first, then any "
                            f"of {', '.join(OUTPUT_NAMES[1:])} once each; found {declared!r}")
    return names


def cache_dir() -> Path:
    """Where MMATS keeps generated kernels and unpacked models ($MMATS_CACHE_DIR)."""
    root = os.environ.get("MMATS_CACHE_DIR") or Path.home() / ".cache" / "mmats"
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in name)
