"""A content-addressed cache of rendered report parts (chart PNGs, the tearsheet page,
the PDF's parts that do not say when the report was made).

Rendering is most of a walk-forward run's time (the quantstats tearsheet alone draws
fourteen SVG figures), and the same research rendered again gives the same pictures:
rerunning ``mmats walkforward`` on unchanged data and options should not redraw them.
A part is stored under a key that digests everything its bytes depend on: the inputs
(arrays, series, frames, text and numbers, hashed by value), the source of the modules
that draw it and the versions of the libraries that do. Anything else changing misses the
cache, so a hit is byte for byte what rendering would produce in this environment (up to
what the renderer itself randomises, e.g. the ids of an SVG).

The cache lives in ``$MMATS_CACHE_DIR/reports`` (``~/.cache/mmats/reports``); entries
are written atomically and the oldest are pruned past :data:`MAX_ENTRIES`. Losing it
costs only time. ``cache=False`` (``--no-cache``) renders everything afresh.

Example::

    key = digest("chart", charts.histogram, values, {"title": "runs"})
    png = cached(key, lambda: render_png(figure))
"""

from __future__ import annotations

import hashlib
import inspect
import os
from collections.abc import Callable
from functools import lru_cache
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd

from mmats.files import atomic_path

MAX_ENTRIES = 256  # a tearsheet is ~1.3 MB, a chart ~0.1 MB: at most a few hundred MB
LIBRARIES = ("matplotlib", "quantstats", "pandas", "numpy", "pillow")


def cache_folder() -> Path:
    """Where rendered parts are kept: ``$MMATS_CACHE_DIR/reports``."""
    root = os.environ.get("MMATS_CACHE_DIR") or Path.home() / ".cache" / "mmats"
    return Path(root) / "reports"


def digest(*parts) -> str:
    """A hex key of ``parts`` by value, with the libraries' versions and, for functions
    and modules among the parts, their source (so editing a chart invalidates it)."""
    h = hashlib.sha256()
    h.update(_environment().encode())
    for part in parts:
        _feed(h, part)
    return h.hexdigest()


def is_cached(key: str) -> bool:
    """Whether a part is stored under ``key`` (rendering it would then cost nothing)."""
    return (cache_folder() / key[:2] / key).is_file()


def cached(key: str, render: Callable[[], bytes], *, enabled: bool = True) -> bytes:
    """The bytes stored under ``key``, else ``render()``'s (then stored). A cache that
    cannot be read or written is skipped: it only saves time."""
    if not enabled:
        return render()
    path = cache_folder() / key[:2] / key
    try:
        data = path.read_bytes()
        os.utime(path)  # recently used: pruned last
        return data
    except OSError:
        pass
    data = render()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path, mode=0o644) as temporary:
            temporary.write_bytes(data)
        _prune(cache_folder())
    except OSError:
        pass
    return data


def _prune(folder: Path, keep: int = MAX_ENTRIES) -> None:
    entries = [p for p in folder.glob("??/*") if p.is_file() and not p.name.startswith(".")]
    if len(entries) <= keep:
        return
    entries.sort(key=lambda p: p.stat().st_mtime)
    for path in entries[:len(entries) - keep]:
        path.unlink(missing_ok=True)


@lru_cache(maxsize=1)
def _environment() -> str:
    versions = []
    for name in LIBRARIES:
        try:
            versions.append(f"{name}={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{name}=none")
    return ";".join(versions)


@lru_cache(maxsize=64)
def _source(thing) -> str:
    try:
        return inspect.getsource(inspect.getmodule(thing))
    except (OSError, TypeError):
        return getattr(thing, "__qualname__", repr(thing))


def _feed(h, value) -> None:
    """Hash ``value`` by content, tagged with its kind so different shapes never collide."""
    if isinstance(value, pd.DataFrame):
        h.update(b"frame")
        _feed(h, list(map(str, value.columns)))
        _feed(h, value.index)
        for column in value.columns:
            _feed(h, value[column].to_numpy())
    elif isinstance(value, pd.Series):
        h.update(b"series")
        _feed(h, str(value.name))
        _feed(h, value.index)
        _feed(h, value.to_numpy())
    elif isinstance(value, pd.Index):
        h.update(f"index:{value.dtype}:{value.name}".encode())
        _feed(h, value.asi8 if isinstance(value, pd.DatetimeIndex) else value.to_numpy())
    elif isinstance(value, np.ndarray):
        if value.dtype == object:
            _feed(h, [repr(v) for v in value.tolist()])
        else:
            h.update(f"array:{value.dtype.str}:{value.shape}".encode())
            h.update(np.ascontiguousarray(value).tobytes())
    elif isinstance(value, dict):
        h.update(b"dict")
        for key in sorted(value, key=repr):
            _feed(h, key)
            _feed(h, value[key])
    elif isinstance(value, list | tuple):
        h.update(f"seq:{len(value)}".encode())
        for item in value:
            _feed(h, item)
    elif callable(value) or inspect.ismodule(value):
        h.update(f"code:{getattr(value, '__qualname__', '')}".encode())
        h.update(_source(value).encode())
    else:
        h.update(f"{type(value).__name__}:{value!r}".encode())
