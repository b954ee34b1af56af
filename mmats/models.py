"""Installing and managing model packages (F2; the format is :mod:`mmats.packages`).

``add`` checks a package before anything of the models folder changes: the zip and the
manifest (:func:`mmats.packages.read_package`: tampered, malformed or unsafe packages
are refused), the strategy contract, the lookahead check on the bundled sample (the
defaults in full, the grid's corners lighter, as before a sweep) and a numba compile
(a backtest of the defaults on the sample). Only then is the version moved into place
(one rename) and made active in the registry (one atomic write). A refused package
changes nothing.

A runner names a package by its id like any strategy (``strategy: trend_filter``); the
active version is what the next tick loads (the configuration snapshot the tick
journals records each model's version and source hash, so the journal says which
version decided each signal). ``activate`` switches back to an older version
(a rollback), ``disable`` stops it being loaded (a runner that uses it then fails its
tick loudly rather than trading a model the operator switched off), ``remove`` deletes.
"""

from __future__ import annotations

import shutil
import time
import uuid
from pathlib import Path

from mmats.errors import MMATSError
from mmats.packages import (
    PackageError,
    find_package,
    locked,
    models_dir,
    read_package,
    read_registry,
    write_registry,
)

SAMPLE = "bittrex:ETH/BTC:5m"  # the bundled candles every package is checked on


def add(path: str | Path, *, root: Path | None = None, sample: str = SAMPLE,
        activate: bool = True) -> dict:
    """Check and install a package zip; returns what was installed (``id``, ``version``,
    ``active``, ``checked``). Adding the very same version again changes nothing."""
    from mmats.strategy import _find

    package = read_package(path)
    manifest = package.manifest
    if _find(manifest.id) is not None:
        raise PackageError(f"{path}: id {manifest.id!r} is already a strategy in the "
                           "strategy folders; give the package another id")
    root = models_dir() if root is None else Path(root)
    with locked(root) as registry:
        entry = registry.models.get(manifest.id, {})
        known = entry.get("versions", {}).get(manifest.version)
        if known is not None:
            if known["sha256"] != manifest.sha256:
                raise PackageError(f"{path}: {manifest.id} {manifest.version} is installed "
                                   "with other contents; give the package a new version")
            return {"id": manifest.id, "version": manifest.version,
                    "active": entry.get("active"), "checked": [], "unchanged": True}
        staging = root / f".staging-{uuid.uuid4().hex}"
        staging.mkdir(parents=True)
        try:
            (staging / "model.py").write_bytes(package.model)
            (staging / "manifest.toml").write_bytes(package.manifest_text)
            checked = _check(staging / "model.py", sample, str(path))
            target = root / manifest.id / manifest.version
            if target.exists():  # left by an add that died before the registry was written
                shutil.rmtree(target)
            target.parent.mkdir(exist_ok=True)
            staging.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        versions = dict(entry.get("versions", {}))
        versions[manifest.version] = {
            "sha256": manifest.sha256, "author": manifest.author,
            "installed": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "description": manifest.description}
        active = manifest.version if activate or "active" not in entry else entry["active"]
        registry.models[manifest.id] = {"active": active,
                                        "enabled": entry.get("enabled", True),
                                        "versions": versions}
        write_registry(registry)
    return {"id": manifest.id, "version": manifest.version, "active": active,
            "checked": checked, "unchanged": False}


def _check(model_py: Path, sample: str, where: str) -> list[str]:
    """The contract, the lookahead check and a compile of a staged package; a failure is
    a :class:`PackageError` naming the package."""
    from mmats.backtest import (
        backtest,
        lookahead_samples,
        market,
        require_no_lookahead,
        with_inputs,
    )
    from mmats.strategy import _load_installed

    try:
        strategy = _load_installed(model_py)
        prices = with_inputs(market(sample), strategy)
        combos, _ = strategy.combinations()
        if not combos:
            raise PackageError(f"{where}: the manifest's grid leaves no valid combination")
        for params in lookahead_samples(strategy, combos):
            require_no_lookahead(strategy, prices, params)
        backtest(strategy, prices, params=strategy.defaults, check_lookahead_bias=False)
    except PackageError:
        raise
    except MMATSError as error:
        raise PackageError(f"{where} refused: {error}") from None
    return ["manifest", "sha256", "contract", f"lookahead ({sample})", "compiled"]


def list_models(root: Path | None = None) -> list[dict]:
    """Every installed package: id, active version, enabled, versions, author."""
    registry = read_registry(root)
    rows = []
    for model_id, entry in sorted(registry.models.items()):
        versions = entry.get("versions", {})
        active = entry.get("active")
        rows.append({"id": model_id, "active": active, "enabled": entry.get("enabled", True),
                     "versions": sorted(versions),
                     "author": versions.get(active, {}).get("author", "")})
    return rows


def set_enabled(model_id: str, enabled: bool, *, root: Path | None = None) -> dict:
    with locked(root) as registry:
        entry = registry.entry(model_id)
        entry["enabled"] = enabled
        write_registry(registry)
    return {"id": model_id, "enabled": enabled}


def activate(model_id: str, version: str, *, root: Path | None = None) -> dict:
    """Make an installed ``version`` the active one (a rollback, or a roll forward)."""
    with locked(root) as registry:
        entry = registry.entry(model_id)
        if version not in entry.get("versions", {}):
            raise PackageError(f"{model_id} has no installed version {version!r}; installed: "
                               f"{', '.join(sorted(entry.get('versions', {})))}")
        entry["active"] = version
        write_registry(registry)
    return {"id": model_id, "active": version}


def remove(model_id: str, version: str | None = None, *, root: Path | None = None) -> dict:
    """Remove a package (every version), or one version that is not the active one."""
    with locked(root) as registry:
        entry = registry.entry(model_id)
        folder = registry.root / model_id
        if version is None:
            del registry.models[model_id]
            write_registry(registry)
            shutil.rmtree(folder, ignore_errors=True)
            return {"id": model_id, "removed": "all"}
        if version not in entry.get("versions", {}):
            raise PackageError(f"{model_id} has no installed version {version!r}")
        if version == entry.get("active"):
            raise PackageError(f"{model_id} {version} is the active version; activate another "
                               f"one first, or remove {model_id} entirely")
        del entry["versions"][version]
        write_registry(registry)
        shutil.rmtree(folder / version, ignore_errors=True)
    return {"id": model_id, "removed": version}


__all__ = ["add", "list_models", "set_enabled", "activate", "remove", "find_package"]
