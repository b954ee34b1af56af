"""Durable atomic writes: a reader, or a process started after a crash or a power cut,
sees the old file or the whole new one, never a part."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterable
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


@contextlib.contextmanager
def restored_on_error(paths: Iterable[Path]):
    """Keep the current version of each of ``paths`` while the block runs; if it raises,
    put every file back as it was (removing the ones that did not exist), then re-raise.

    Several durable writes become all-or-nothing::

        with restored_on_error([a, b]):
            write_durably(a, ...)
            write_durably(b, ...)   # fails: a is its old self again

    Each kept version is a hard link ``.{name}.{pid}.keep`` beside the file (free, since
    :func:`write_durably` replaces a file by rename and never changes it in place), or a
    copy where links are not allowed. A hard kill inside the block leaves the new files
    and the ``.keep`` links behind; nothing reads the links, delete them at leisure.
    """
    kept: dict[Path, Path | None] = {}
    try:
        for path in dict.fromkeys(Path(p) for p in paths):
            keep = None
            if path.exists():
                keep = path.parent / f".{path.name}.{os.getpid()}.keep"
                with contextlib.suppress(FileNotFoundError):
                    keep.unlink()
                try:
                    os.link(path, keep)
                except OSError:
                    shutil.copy2(path, keep)
            kept[path] = keep
        yield
    except BaseException:
        for path, keep in kept.items():
            if keep is None:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            else:
                os.replace(keep, path)
            fsync_folder(path.parent)
        raise
    else:
        for keep in kept.values():
            if keep is not None:
                with contextlib.suppress(FileNotFoundError):
                    keep.unlink()
