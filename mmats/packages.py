"""Model packages (F2): a zip of ``model.py`` and ``manifest.toml``, installed once into a
models folder and found by its id like any strategy.

The manifest says what the package is and promises what ``model.py`` holds::

    id = "trend_filter"            # lower case, digits, _ ; the name configs use
    version = "1.2.0"
    entry_point = "signal"         # the function of model.py that is the signal
    author = "Jane Doe <jane@example.com>"
    sha256 = "9f2c..."             # of model.py: a package edited after signing is refused
    warmup = 60                    # bars (or a warmup(**params) function in model.py)


    [params]                       # the grid a sweep searches
    fast = [5, 10, 20]
    slow = [50, 100]

    [defaults]
    fast = 10
    slow = 50

    [inputs.hour_close]            # optional: extra inputs, as a strategy's INPUTS
    timeframe = "1h"

This module checks a package (:func:`read_package`: a bad or tampered one is refused
with the reason and nothing changes), keeps the registry of installed packages (which
version of each id is active, whether it is enabled) and loads the active version of an
id (:func:`find_package`, which :func:`mmats.strategy.load_strategy` asks after the
strategy folders). Installing — the lookahead check and the numba compile that come
first — is :mod:`mmats.models`.

The folder is ``$MMATS_MODELS``, else ``~/.local/share/mmats/models``. Its layout::

    registry.json              {"models": {id: {"active", "enabled", "versions": {...}}}}
    ID/VERSION/model.py
    ID/VERSION/manifest.toml
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import re
import tomllib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from mmats.errors import StrategyError
from mmats.files import atomic_path

ID_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
VERSION_RE = re.compile(r"^\d+\.\d+\.\d+(?:[-.+][0-9A-Za-z.]+)?$")
IDENTIFIER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
REQUIRED = ("id", "version", "entry_point", "author", "sha256", "params", "defaults")
KNOWN = {*REQUIRED, "warmup", "inputs", "description"}
OTHER_FILES = re.compile(r"^(README|LICENSE|LICENCE|CHANGELOG)(\.[A-Za-z]+)?$")
MAX_BYTES = 5 * 1024 * 1024  # a model is source code, not data
REGISTRY = "registry.json"


class PackageError(StrategyError):
    """A model package was refused, or an installed one cannot be used; nothing of the
    models folder was changed by the refusal."""


@dataclass(frozen=True)
class Manifest:
    id: str
    version: str
    entry_point: str
    author: str
    sha256: str
    params: dict[str, list]
    defaults: dict
    warmup: int | None = None
    inputs: dict = field(default_factory=dict)  # name -> spec, as a strategy's INPUTS
    description: str = ""


@dataclass(frozen=True)
class Package:
    """A checked package: its manifest and the bytes of ``model.py`` and the manifest."""

    manifest: Manifest
    model: bytes
    manifest_text: bytes
    source: Path


@dataclass
class Registry:
    """The registry of a models folder (see the module docstring)."""

    root: Path
    models: dict = field(default_factory=dict)

    def entry(self, model_id: str) -> dict:
        if model_id not in self.models:
            raise PackageError(f"no model package {model_id!r} is installed in {self.root}")
        return self.models[model_id]


def models_dir() -> Path:
    """The models folder: ``$MMATS_MODELS``, else ``~/.local/share/mmats/models``."""
    root = os.environ.get("MMATS_MODELS")
    if root:
        return Path(root).expanduser()
    data = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(data) / "mmats" / "models"


def read_package(path: str | os.PathLike) -> Package:
    """Open and check a package zip; :class:`PackageError` says what is wrong with it."""
    path = Path(path)
    where = str(path)
    if not path.is_file():
        raise PackageError(f"model package {where} does not exist")
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            _check_members(where, members)
            model = archive.read("model.py")
            manifest_text = archive.read("manifest.toml")
    except zipfile.BadZipFile:
        raise PackageError(f"model package {where} is not a zip file") from None
    manifest = parse_manifest(manifest_text, where)
    digest = hashlib.sha256(model).hexdigest()
    if digest != manifest.sha256:
        raise PackageError(f"{where}: model.py does not match the manifest's sha256 "
                           f"(manifest {manifest.sha256[:12]}..., model.py {digest[:12]}...): "
                           "the package was changed after it was made")
    return Package(manifest, model, manifest_text, path)


def _check_members(where: str, members: list[zipfile.ZipInfo]) -> None:
    names = [m.filename for m in members]
    for required in ("model.py", "manifest.toml"):
        if required not in names:
            raise PackageError(f"{where}: the zip must hold {required} at its top level")
    total = 0
    for member in members:
        name = member.filename
        if member.is_dir() or "/" in name or "\\" in name or name.startswith(".") or \
                not (name in ("model.py", "manifest.toml") or OTHER_FILES.match(name)):
            raise PackageError(f"{where}: unexpected entry {name!r} (a package holds "
                               "model.py, manifest.toml and optionally README/LICENSE, "
                               "all at its top level)")
        if (member.external_attr >> 16) & 0o170000 == 0o120000:
            raise PackageError(f"{where}: {name} is a symbolic link")
        total += member.file_size
    if names.count("model.py") > 1 or names.count("manifest.toml") > 1:
        raise PackageError(f"{where}: model.py or manifest.toml appears twice")
    if total > MAX_BYTES:
        raise PackageError(f"{where}: {total:,} bytes unpacked; a package holds at most "
                           f"{MAX_BYTES:,}")


def parse_manifest(text: bytes | str, where: str = "manifest.toml") -> Manifest:
    """The manifest's fields, checked; :class:`PackageError` names the key at fault."""
    try:
        data = tomllib.loads(text.decode("utf-8") if isinstance(text, bytes) else text)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise PackageError(f"{where}: manifest.toml is not valid TOML: {error}") from None
    missing = [key for key in REQUIRED if key not in data]
    if missing:
        raise PackageError(f"{where}: manifest.toml lacks {', '.join(missing)}")
    unknown = sorted(set(data) - KNOWN)
    if unknown:
        raise PackageError(f"{where}: manifest.toml has unknown key {unknown[0]!r} "
                           f"(known: {', '.join(sorted(KNOWN))})")

    def fail(key: str, message: str):
        raise PackageError(f"{where}: manifest key {key!r} {message}")

    for key, pattern, what in (("id", ID_RE, "lower-case letters, digits and _"),
                               ("version", VERSION_RE, "a version such as 1.2.0"),
                               ("entry_point", IDENTIFIER_RE, "a function name of model.py")):
        if not isinstance(data[key], str) or not pattern.match(data[key]):
            fail(key, f"must be {what}, not {data[key]!r}")
    if not isinstance(data["author"], str) or not data["author"].strip():
        fail("author", "must be a non-empty string")
    if not isinstance(data["sha256"], str) or not re.fullmatch(r"[0-9a-f]{64}", data["sha256"]):
        fail("sha256", "must be the 64 lower-case hex digits of model.py's SHA-256")
    params, defaults = data["params"], data["defaults"]
    if not isinstance(params, dict) or not params:
        fail("params", "must be a table of parameter -> list of values")
    if not isinstance(defaults, dict) or set(defaults) != set(params):
        fail("defaults", f"must give one value for each parameter of [params] "
                         f"({', '.join(params)})")
    for name, values in params.items():
        if not isinstance(values, list) or not values or not all(_number(v) for v in values):
            fail(f"params.{name}", "must be a non-empty list of numbers")
        if not _number(defaults[name]):
            fail(f"defaults.{name}", f"must be a number, not {defaults[name]!r}")
    warmup = data.get("warmup")
    if warmup is not None and (not isinstance(warmup, int) or isinstance(warmup, bool)
                               or warmup < 0):
        fail("warmup", f"must be a whole number of bars >= 0, not {warmup!r}")
    inputs = data.get("inputs", {})
    if not isinstance(inputs, dict) or not all(
            isinstance(spec, dict) and all(isinstance(v, str) for v in spec.values())
            for spec in inputs.values()):
        fail("inputs", "must be a table of tables, one per extra input: "
                       '[inputs.NAME] with timeframe, symbol, venue or field = "..."')
    description = data.get("description", "")
    if not isinstance(description, str):
        fail("description", "must be a string")
    return Manifest(data["id"], data["version"], data["entry_point"], data["author"].strip(),
                    data["sha256"], {k: list(v) for k, v in params.items()}, dict(defaults),
                    warmup, {k: dict(v) for k, v in inputs.items()}, description)


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and \
        math.isfinite(value)


# -- the registry -----------------------------------------------------------------------
def read_registry(root: Path | None = None) -> Registry:
    root = models_dir() if root is None else Path(root)
    path = root / REGISTRY
    if not path.is_file():
        return Registry(root)
    try:
        data = json.loads(path.read_text())
        models = data["models"]
        if not isinstance(models, dict):
            raise TypeError("models is not an object")
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise PackageError(f"the models registry {path} is unreadable ({error}); restore it "
                           "or remove the models folder and add the packages again") from None
    return Registry(root, models)


def write_registry(registry: Registry) -> None:
    """Write the registry atomically: a reader sees the old one or the new one."""
    registry.root.mkdir(parents=True, exist_ok=True)
    with atomic_path(registry.root / REGISTRY) as temporary:
        temporary.write_text(json.dumps({"models": registry.models}, indent=2,
                                        sort_keys=True) + "\n")


@contextlib.contextmanager
def locked(root: Path | None = None):
    """Hold the models folder's lock (one change at a time, across processes)."""
    root = models_dir() if root is None else Path(root)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield read_registry(root)
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def find_package(model_id: str, root: Path | None = None) -> Path | None:
    """The installed ``model.py`` of the active version of ``model_id``, or None when no
    such package is installed; :class:`PackageError` when it is disabled."""
    if not ID_RE.match(model_id):
        return None
    registry = read_registry(root)
    entry = registry.models.get(model_id)
    if entry is None:
        return None
    if not entry.get("enabled", True):
        raise PackageError(f"model package {model_id!r} is disabled (mmats models enable "
                           f"{model_id})")
    return registry.root / model_id / entry["active"] / "model.py"


def installed_manifest(model_py: Path) -> Manifest:
    """The manifest beside an installed ``model.py``, checked against it again (a file
    edited in the models folder after installation is refused)."""
    manifest = parse_manifest((model_py.parent / "manifest.toml").read_bytes(),
                              str(model_py.parent / "manifest.toml"))
    if hashlib.sha256(model_py.read_bytes()).hexdigest() != manifest.sha256:
        raise PackageError(f"{model_py} was changed after it was installed (its SHA-256 no "
                           "longer matches the manifest); add the package again")
    return manifest


def prepare_module(module, manifest: Manifest, where: str) -> None:
    """Give a package's module what the strategy contract reads (``signal``, ``PARAMS``,
    ``DEFAULTS``, ``WARMUP``) from its manifest; a module that defines them itself must
    agree with the manifest."""
    entry = getattr(module, manifest.entry_point, None)
    if not callable(entry):
        raise PackageError(f"{where}: model.py has no function {manifest.entry_point!r} "
                           "(the manifest's entry_point)")
    for name, value in (("PARAMS", manifest.params), ("DEFAULTS", manifest.defaults)):
        own = getattr(module, name, None)
        if own is not None and own != value:
            raise PackageError(f"{where}: model.py's {name} differ from the manifest's "
                               f"[{name.lower()}]")
        setattr(module, name, value)
    own_inputs = getattr(module, "INPUTS", None)
    if own_inputs is not None and own_inputs != manifest.inputs:
        raise PackageError(f"{where}: model.py's INPUTS differ from the manifest's [inputs]")
    if manifest.inputs:
        module.INPUTS = manifest.inputs
    if manifest.warmup is not None:
        module.WARMUP = manifest.warmup
    elif not callable(getattr(module, "warmup", None)):
        raise PackageError(f"{where}: give warmup in the manifest or a warmup(**params) "
                           "function in model.py")
    module.signal = entry
