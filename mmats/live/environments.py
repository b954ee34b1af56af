"""Environments that really separate: a ``dev``, ``test`` or ``prod`` configuration has its
own journal, anchor, candle store and keys, and never uses another environment's.

What carries each environment's mark, and where it is checked:

- **The journal** records the environment it was created for in its ``meta`` table
  (:class:`~mmats.live.journal.Journal`'s ``environment=``); opening it for another
  environment is refused. A journal made before environments were recorded is adopted
  once, by the first configuration that opens it to write: the environment goes into its
  meta and an ``adopt_environment`` operator action into its chain, where it shows.
- **The anchor** holds the id of the journal whose heads it keeps; a journal opened for an
  environment refuses an anchor that holds another journal's heads (:func:`check_anchor`),
  so a ``dev`` journal can never write into a ``prod`` journal's anchor, whatever
  ``journal_anchor:`` says.
- **The candle store** carries a ``MMATS_ENVIRONMENT`` file at its root, written by the
  first runner that opens the store (:func:`claim_data_root`); a configuration of another
  environment is refused. The bundled sample data (``mmats/data/sample``, package data) is
  never marked: ``dev`` and ``test`` may read it, ``prod`` never trades on it. Another
  unmarked store that cannot be marked (read-only) is read as it is by ``dev`` and
  ``test``, and refused to ``prod``, which trades only on a store marked ``prod``.
- **Keys** have a namespace per environment in the secrets store and in the environment
  variables (:mod:`mmats.secrets`, :func:`mmats.brokers.connect.credentials`).
- **Notifications and status** name the environment (:mod:`mmats.live.notify`,
  :func:`mmats.live.control.status`).

The runner's door to the journal, anchor and store is
:func:`mmats.live.wiring.open_journal`: every tick, control and chat command goes through it.

Example::

    claim_data_root(Path("data"), "prod")      # marks an unmarked store, else checks it
    check_data_root(Path("data"), "dev")       # EnvironmentMismatch: the store is prod's
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from mmats.errors import ConfigError, DataError
from mmats.files import fsync_folder
from mmats.secrets import ENVIRONMENTS

MARKER = "MMATS_ENVIRONMENT"  # the candle store's mark: a file holding its environment
ADOPT_ACTION = "adopt_environment"  # the operator action journaled when a journal is adopted
_ANCHOR_TAIL_BYTES = 64 * 1024  # an anchor's newest lines; the file grows by one per commit


class EnvironmentMismatch(ConfigError):
    """A configuration of one environment was pointed at a journal, anchor or candle store
    of another; nothing of the other environment was touched."""


def check_environment(environment: str, what: str = "environment") -> str:
    """``environment`` if it is one of :data:`ENVIRONMENTS`, else :class:`ConfigError`."""
    if environment not in ENVIRONMENTS:
        raise ConfigError(f"{what} {environment!r} is not one of {', '.join(ENVIRONMENTS)}")
    return environment


# -- the journal and its anchor ----------------------------------------------------------------


def journal_mismatch(journal: Path, recorded: str, wanted: str) -> EnvironmentMismatch:
    """The refusal to open a journal of environment ``recorded`` for ``wanted``."""
    return EnvironmentMismatch(
        f"journal {journal} belongs to environment {recorded!r}, but this configuration's "
        f"environment is {wanted!r}: a {wanted} configuration never uses a {recorded} "
        f"journal. Point journal: at a journal of its own (a new path starts one), or use "
        f"the {recorded} configuration")


def anchor_owner(anchor: Path) -> str | None:
    """The id of the journal whose heads ``anchor`` holds (its newest line's ``journal=``),
    or None for a missing or empty file. Reads the file's tail only."""
    try:
        with open(anchor, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - _ANCHOR_TAIL_BYTES))
            tail = handle.read().decode("ascii", errors="replace")
    except FileNotFoundError:
        return None
    except OSError as error:
        raise ConfigError(f"anchor {anchor} is unreadable: {error}") from None
    for line in reversed(tail.splitlines()):
        for part in line.split():
            if part.startswith("journal="):
                return part.removeprefix("journal=")
    return None


def check_anchor(anchor: Path, journal: Path, journal_id: str | None,
                 environment: str) -> None:
    """Refuse an anchor that holds another journal's heads (``journal_id`` None: the
    journal does not exist yet, so any head in the anchor is another's)."""
    owner = anchor_owner(anchor)
    if owner is None or owner == journal_id:
        return
    raise EnvironmentMismatch(
        f"journal {journal} ({environment}): its anchor {anchor} holds the heads of another "
        f"journal (id {owner}), perhaps one of another environment; a journal is anchored "
        "only in its own anchor file. Point journal_anchor: at a file of its own (or remove "
        "the key: the anchor then lives beside the journal); if that other journal was "
        "retired, move its anchor aside")


# -- the candle store --------------------------------------------------------------------------


def bundled_sample() -> Path:
    """The sample candles shipped inside the package (read-only package data)."""
    import mmats.data

    return Path(mmats.data.__file__).resolve().parent / "sample"


def is_bundled_sample(root: Path) -> bool:
    """Whether ``root`` is the bundled sample data or a folder inside it."""
    return Path(root).resolve().is_relative_to(bundled_sample())


def data_root_environment(root: Path) -> str | None:
    """The environment a candle store is marked with, or None when unmarked."""
    if Path(root).exists() and not Path(root).is_dir():  # the store's own wording
        raise DataError(f"{root}: the candle store root is a file, not a folder; point "
                        "--root, MMATS_DATA_ROOT or data_root at a folder")
    marker = Path(root) / MARKER
    try:
        text = marker.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"candle store {root}: its marker {marker} is unreadable: "
                          f"{error}") from None
    if text not in ENVIRONMENTS:
        raise ConfigError(f"candle store {root}: its marker {marker} says {text[:20]!r}, not "
                          f"one of {', '.join(ENVIRONMENTS)}; write the store's environment "
                          "into it, or delete it to let the next runner mark the store")
    return text


def check_data_root(root: Path, environment: str) -> None:
    """Refuse a store marked for another environment, and the bundled sample data to
    ``prod``; writes nothing (an unmarked store is marked by :func:`claim_data_root`)."""
    root = Path(root)
    if environment == "prod" and is_bundled_sample(root):
        raise EnvironmentMismatch(
            f"data_root {root} is the bundled sample data, which a prod configuration never "
            "trades on; point data_root: at a candle store of its own")
    recorded = data_root_environment(root)
    if recorded is not None and recorded != environment:
        raise EnvironmentMismatch(
            f"data_root {root} is the candle store of environment {recorded!r} (its marker "
            f"{root / MARKER} says so), but this configuration's environment is "
            f"{environment!r}: a {environment} configuration never trades on a {recorded} "
            f"store. Point data_root: at a store of its own (a new folder is marked "
            f"{environment} by the first tick)")


def claim_data_root(root: Path, environment: str) -> str | None:
    """Check the store (:func:`check_data_root`) and mark it with ``environment`` when it
    is unmarked; returns the store's environment, None for an unmarked store that stays
    so (the bundled sample data, or a read-only store of a dev or test configuration).
    A prod configuration is refused a store it cannot mark."""
    root = Path(root)
    check_data_root(root, environment)
    if is_bundled_sample(root):
        return None
    recorded = data_root_environment(root)
    if recorded is not None:
        return recorded
    try:
        _mark(root, environment)
    except OSError as error:
        if environment == "prod":
            raise EnvironmentMismatch(
                f"data_root {root} is not marked as a prod candle store and cannot be marked "
                f"({error}); a prod configuration trades only on a store marked prod: make "
                f"the folder writable, or write 'prod' into {root / MARKER}") from None
        return None
    check_data_root(root, environment)  # another runner may have marked it meanwhile
    return data_root_environment(root)


def _mark(root: Path, environment: str) -> None:
    """Write the marker, never over one: a runner of another environment marking the
    store at the same moment wins or loses whole (a hard link is made only if absent)."""
    root.mkdir(parents=True, exist_ok=True)
    temp = root / f".{MARKER}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    try:
        with open(temp, "w", encoding="ascii") as handle:
            handle.write(environment + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(temp, root / MARKER)
    finally:
        with contextlib.suppress(OSError):
            temp.unlink()
    fsync_folder(root)
