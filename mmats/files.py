"""Durable atomic writes: a reader, or a process started after a crash or a power cut,
sees the old file or the whole new one, never a part."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path


def write_durably(path: Path, write: Callable, *, prefix: str, mode: int = 0o666) -> None:
    """Call ``write(handle)`` on a new temp file ``{prefix}{pid}.{random}.tmp`` beside
    ``path`` (created with ``mode``, less the umask), fsync it, rename it over ``path``
    and fsync the folder. On any error the temp file is removed and ``path`` is as it was.
    """
    temp = path.parent / f"{prefix}{os.getpid()}.{os.urandom(4).hex()}.tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise
    fsync_folder(path.parent)


def fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (where the OS lets a folder be opened)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
