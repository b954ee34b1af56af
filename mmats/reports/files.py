"""Atomic file writes for reports: a reader sees the old file or the whole new one."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from mmats.files import atomic_path as durable_path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """:func:`mmats.files.atomic_path` for a report: parent folders are created and the
    file is readable by others (0644 less the umask).

    Example::

        with atomic_path("reports/x.html") as temporary:
            temporary.write_text("<html></html>")
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with durable_path(path, mode=0o644) as temporary:
        yield temporary


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; return the path."""
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")
    return Path(path)
