"""Durable atomic writes: a reader, or a process started after a crash or a power cut,
sees the old file or the whole new one, never a part."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

try:  # POSIX; elsewhere writes are still atomic but not serialised between processes.
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, prefix: str | None = None,
                mode: int = 0o666) -> Iterator[Path]:
    """Yield a new, empty temp file beside ``path`` to write; when the block ends without
    an error, fsync it, rename it over ``path`` and fsync the folder. On any error the
    temp file is removed and ``path`` is as it was.

    The temp file is ``{prefix}{pid}.{random}.tmp`` (``prefix`` defaults to
    ``.{name}.``), created exclusively with ``mode`` less the umask, so two processes
    writing the same file never share one. This is the one atomic write of MMATS; the
    candle store, the journal's exports, the reports, the secrets file and the generated
    kernels all go through it.

    Example::

        with atomic_path(Path("reports/x.html")) as temporary:
            temporary.write_text("<html></html>")
    """
    path = Path(path)
    prefix = f".{path.name}." if prefix is None else prefix
    temp = path.parent / f"{prefix}{os.getpid()}.{os.urandom(4).hex()}.tmp"
    os.close(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode))
    try:
        yield temp
        fd = os.open(temp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise
    fsync_folder(path.parent)


def write_durably(path: Path, write: Callable, *, prefix: str | None = None,
                  mode: int = 0o666) -> None:
    """Call ``write(handle)`` on a binary handle to an :func:`atomic_path` temp file of
    ``path``; the whole new file replaces ``path``, or nothing changes."""
    with atomic_path(path, prefix=prefix, mode=mode) as temp, open(temp, "wb") as handle:
        write(handle)


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


@contextlib.contextmanager
def sibling_lock(path: Path, refuse: Callable[[OSError], Exception]):
    """Hold an exclusive lock on ``.<name>.lock`` beside ``path`` (its folder made, mode
    0700; the lock file 0600) for the block, so writers in other processes wait their
    turn. A lock that cannot be made (a file where the folder should be, no permission)
    raises ``refuse(error)``, the caller's own error naming the file."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = None if fcntl is None else os.open(path.parent / f".{path.name}.lock",
                                                os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as error:
        raise refuse(error) from None
    if fd is None:  # pragma: no cover
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
