"""Signing and anchoring of the journal: rows cannot be forged, rewritten or cut off unnoticed.

The sha256 chain of :mod:`mmats.live.journal` catches an edited row, but whoever can write
the SQLite file can also append rows with valid hashes, recompute the chain from any row,
or delete the newest rows of both a table and the chain index. Two things close that:

- **Signatures.** Each row's chain hash is signed, ``sig`` = HMAC-SHA256(key, journal id,
  seq, table, hash), stored in the ``chain`` index. The key is kept in the secrets store
  (:mod:`mmats.secrets`, entry ``journal-signing``, field ``key``), created on first use,
  cached per process, and never written to the journal, the anchor, logs or messages.
- **The anchor.** After every commit the head is appended to a text file outside the
  SQLite file (``<journal>.anchor`` unless another path is given), one signed line each::

      seq=42 table=fills hash=<sha256 hex> time=2024-05-01T12:00:00.123456Z journal=<id> sig=<hex>

  (``sig=-`` in an unsigned journal's anchor). Deleting the newest rows, or restoring an
  older copy of the journal, leaves the anchor's head beyond the journal's. A line is
  written right after its commit and fsync'ed with it, or, in a live tick, with the
  tick's others once its orders are out (``Journal.anchor_sync_deferred``): a line is
  never written before its rows are durable, so the anchor is never ahead of an honest
  journal.

What :func:`check_seal` reports (besides the chain's ``edited``, ``deleted``,
``reordered`` and ``inserted``):

- ``forged``: a row whose signature is missing or wrong, that no signed anchor line
  reaches: appended without the key.
- ``rewritten``: a row whose signature is missing or wrong at or before a signed anchor
  line, or whose hash differs from the one the anchor recorded: signed history replaced.
- ``truncated``: the anchor's newest signed head is beyond the journal's head.
- ``anchor_forged``: an anchor line whose signature is wrong: written without the key.

and as warnings (``ok`` stays true; ``scripts/journal.py verify --strict`` fails on them):
``unsigned`` (nothing can prove a row genuine), ``anchor_missing``, ``anchor_behind`` (the
journal's head is newer than the anchor's: normal after a crash between a commit and its
anchor line, or a power cut before a tick's lines were fsync'ed, or the anchor's tail was
cut; the next commit anchors again),
``anchor_damaged`` (a line that does not parse, e.g. torn by a crash) and
``anchor_foreign`` (a line of another journal).

Limits: an anchor beside the journal can be cut by whoever can cut the journal, together
with it; keep it on other storage (another disk, a WORM mount) to close that. A journal
whose ``meta`` was rewritten to "unsigned" verifies as unsigned, a warning: require
signatures with ``--strict``.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from mmats.errors import MMATSError

SCHEME = "hmac-sha256"
KEY_ENTRY = "journal-signing"
KEY_FIELD = "key"
_KEY_BYTES = 32
_KEYS: dict[str, bytes] = {}  # secrets store description -> key, cached for the process

log = logging.getLogger(__name__)


class JournalError(MMATSError):
    """The journal file is unreadable, or a stored record does not fit what was asked.

    Defined here, below :mod:`mmats.live.journal` (which re-exports it), so that signing
    and the journal raise the same class; import it from ``mmats.live.journal``."""


@dataclass(frozen=True)
class Problem:
    """One finding of :meth:`Journal.verify`: where (table, seq), what kind, and why."""

    table: str
    seq: int
    kind: str  # see the module docstring and mmats.live.journal's
    detail: str

    def __str__(self) -> str:
        return f"{self.table} seq {self.seq}: {self.kind} — {self.detail}"


# -- the key ---------------------------------------------------------------------------------


def signing_key(journal: Path, *, create: bool) -> bytes:
    """The journal signing key from the secrets store; made and stored if ``create`` and the
    store has none. Cached per process and store, since reading an encrypted store costs a
    key derivation (~0.1 s) and a replay opens its journal once per tick.

    Raises :class:`JournalError` saying how to provide the key when the store cannot be read
    without a prompt (e.g. under cron), or holds no key and ``create`` is false.
    """
    from mmats import secrets

    where = secrets.describe_backend()
    if where in _KEYS:
        return _KEYS[where]
    if not secrets.available_without_prompt():
        raise JournalError(
            f"journal {journal}: its signing key (secrets entry {KEY_ENTRY!r}) is kept in the "
            f"{where}, which cannot be read without a prompt here: set "
            f"{secrets.PASSPHRASE_ENV} (and {secrets.FILE_ENV} if the store is not at its "
            "default path) in this process's environment, e.g. the cron job's, or unlock "
            "the OS keyring")
    try:
        fields = secrets.get_secret(KEY_ENTRY)
        if fields is None and create:
            secrets.set_secret(KEY_ENTRY, {KEY_FIELD: os.urandom(_KEY_BYTES).hex()})
            # read back: should two processes make the first key at once, both use the
            # one that was stored last
            fields = secrets.get_secret(KEY_ENTRY)
            log.info("created the journal signing key (id %s) in the %s",
                     key_id(_decode(fields, where)), where)
    except secrets.SecretsError as error:
        raise JournalError(f"journal {journal}: cannot read its signing key from the "
                           f"{where}: {error}") from None
    if fields is None:
        raise JournalError(
            f"journal {journal} is signed, but the {where} holds no signing key (entry "
            f"{KEY_ENTRY!r}): point {secrets.FILE_ENV} at the secrets store the journal was "
            "created with")
    key = _KEYS[where] = _decode(fields, where)
    return key


def key_for_new_journal(journal: Path, sign: bool | None, durable: bool) -> bytes | None:
    """The key to sign a new journal with, or None to create it unsigned: ``sign=True``
    requires one, ``sign=False`` and scratch journals (``durable=False``) go without, and
    by default a durable journal is signed when the store can be read without a prompt
    (and otherwise created unsigned, with a warning)."""
    from mmats import secrets

    if sign is False or (sign is None and not durable):
        return None
    if sign is None and not secrets.available_without_prompt():
        log.warning("journal %s is created unsigned: the secrets store (%s) cannot be read "
                    "without a prompt, so rows added by whoever can write the file cannot be "
                    "told from real ones; set %s to sign new journals", journal,
                    secrets.describe_backend(), secrets.PASSPHRASE_ENV)
        return None
    return signing_key(journal, create=True)


def journal_signer(journal: Path, journal_id: str, expected_key_id: str | None) -> Signer:
    """The signer of an existing signed journal; refuses a store holding another key."""
    signer = Signer(signing_key(journal, create=False), journal_id)
    if signer.key_id != expected_key_id:
        from mmats import secrets

        raise JournalError(
            f"journal {journal} was signed with key id {expected_key_id}, but the "
            f"{secrets.describe_backend()} holds key id {signer.key_id}: point "
            f"{secrets.FILE_ENV} at the secrets store the journal was created with")
    return signer


def _decode(fields, where: str) -> bytes:
    """The key bytes of a secrets entry; the message never shows the stored value."""
    try:
        key = bytes.fromhex(fields[KEY_FIELD])
        if len(key) != _KEY_BYTES:
            raise ValueError
    except (KeyError, TypeError, ValueError):
        raise JournalError(f"the secrets entry {KEY_ENTRY!r} in the {where} is not a "
                           f"{_KEY_BYTES}-byte hex key in field {KEY_FIELD!r}; it was not "
                           "written by MMATS") from None
    return key


def key_id(key: bytes) -> str:
    """A short public fingerprint of a key, recorded in the journal to tell keys apart."""
    return hashlib.sha256(b"mmats-journal-key-id\0" + key).hexdigest()[:16]


class Signer:
    """HMAC-SHA256 signatures of one journal's rows and anchor lines.

    >>> signer = Signer(bytes(32), "0123456789abcdef")
    >>> len(signer.row(1, "fills", "0" * 64))
    64
    >>> signer.row(1, "fills", "0" * 64) == hmac.digest(
    ...     bytes(32), b"row|0123456789abcdef|1|fills|" + b"0" * 64, "sha256").hex()
    True
    """

    def __init__(self, key: bytes, journal_id: str):
        self._key = key
        self.journal_id = journal_id
        self.key_id = key_id(key)
        # the key's HMAC state, made once and copied for each message: a one-shot HMAC
        # hashes the key's two padded blocks again every time (every row and anchor line
        # is signed)
        self._keyed = hmac.new(key, digestmod=hashlib.sha256)

    def __repr__(self) -> str:
        return f"Signer(key_id={self.key_id!r}, journal_id={self.journal_id!r})"

    def _sign(self, message: str) -> str:
        """HMAC-SHA256 of ``message`` under the key, in hex."""
        keyed = self._keyed.copy()
        keyed.update(message.encode("ascii"))
        return keyed.hexdigest()

    def row(self, seq: int, table: str, digest: str) -> str:
        return self._sign(f"row|{self.journal_id}|{seq}|{table}|{digest}")

    def anchor(self, seq: int, table: str, digest: str, time_text: str) -> str:
        return self._sign(f"anchor|{self.journal_id}|{seq}|{table}|{digest}|{time_text}")

    def row_ok(self, seq: int, table: str, digest: str, sig: str | None) -> bool:
        return sig is not None and hmac.compare_digest(sig, self.row(seq, table, digest))


# -- the anchor file -------------------------------------------------------------------------


@dataclass(frozen=True)
class AnchorLine:
    """One parsed line of an anchor file (``number`` counts from 1)."""

    number: int
    seq: int
    table: str
    digest: str
    time: str
    journal_id: str
    sig: str


class Anchor:
    """The append-only text file of a journal's signed heads, one line per commit.

    Opened at the first append (reading a journal creates no file), with ``O_APPEND`` and
    one ``write`` per line, so lines of two processes sharing a journal never interleave;
    fsync'ed after each line when the journal is durable, unless the append is told not
    to (``sync=False``): then at :meth:`sync` or :meth:`close`, once for all of them.
    """

    def __init__(self, path: Path, *, durable: bool):
        self.path = Path(path)
        self.durable = durable
        self._fd: int | None = None
        self._unsynced = False  # a line written since the last fsync
        self._second: tuple[int | None, str] = (None, "")  # a line's second, and as text

    def append(self, seq: int, table: str, digest: str, journal_id: str,
               signer: Signer | None, *, sync: bool = True) -> None:
        """Append the head ``(seq, table, digest)`` with the time and its signature;
        fsync'ed now, or (``sync=False``) at the next :meth:`sync`."""
        now_ns = time.time_ns()
        second = self._second
        if second[0] != now_ns // 10**9:  # the date and time to the second: once a second
            seconds = now_ns // 10**9
            second = self._second = (seconds, time.strftime("%Y-%m-%dT%H:%M:%S",
                                                            time.gmtime(seconds)))
        time_text = f"{second[1]}.{now_ns % 10**9 // 1000:06d}Z"
        sig = signer.anchor(seq, table, digest, time_text) if signer else "-"
        line = (f"seq={seq} table={table} hash={digest} time={time_text} "
                f"journal={journal_id} sig={sig}\n")
        if self._fd is None:
            self._fd = self._open()
        os.write(self._fd, line.encode("ascii"))
        self._unsynced = self.durable
        if sync:
            self.sync()

    def sync(self) -> None:
        """fsync the lines written since the last fsync (a durable anchor's)."""
        if self._unsynced and self._fd is not None:
            os.fsync(self._fd)
            self._unsynced = False

    def _open(self) -> int:
        created = not self.path.exists()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if created and self.durable:  # the new file's name must survive a power cut too
            folder = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)
        return fd

    def read(self) -> tuple[list[AnchorLine], list[tuple[int, str]]]:
        """``(lines, damaged)``; damaged lines as ``(number, first 80 characters)``."""
        lines, damaged = [], []
        with open(self.path, encoding="ascii", errors="replace") as handle:
            for number, text in enumerate(handle, 1):
                if not text.strip():
                    continue
                try:
                    fields = dict(part.split("=", 1) for part in text.split())
                    lines.append(AnchorLine(number, int(fields["seq"]), fields["table"],
                                            fields["hash"], fields["time"],
                                            fields["journal"], fields["sig"]))
                except (KeyError, ValueError):
                    damaged.append((number, text.strip()[:80]))
        return lines, damaged

    def close(self) -> None:
        if self._fd is not None:
            try:
                self.sync()
            finally:
                os.close(self._fd)
                self._fd = None


# -- verification ----------------------------------------------------------------------------


def check_seal(chain: dict[int, tuple[str, str, str | None]], head_seq: int,
               journal_id: str, signer: Signer | None, anchor: Anchor | None,
               ) -> tuple[list[Problem], list[Problem], int]:
    """Check row signatures and the anchor: ``(problems, warnings, anchored_head_seq)``.

    ``chain`` maps seq to (table, hash, sig) as the chain index holds them; ``head_seq``
    is the newest seq of the journal's rows; ``signer`` is None for an unsigned journal
    and ``anchor`` None where there is no anchor to check (an older layout).
    """
    problems: list[Problem] = []
    warnings: list[Problem] = []
    if signer is None:
        warnings.append(Problem("chain", 0, "unsigned", (
            "this journal was created without a signing key: a row appended or a chain "
            "recomputed by whoever can write the file cannot be told from a real one; a new "
            "journal opened with the secrets store readable (MMATS_SECRETS_PASSPHRASE) is "
            "signed")))
    lines = _anchor_lines(anchor, journal_id, signer, head_seq, problems, warnings)
    anchored = max(lines, key=lambda line: line.seq, default=None)
    anchored_seq = anchored.seq if anchored else 0
    _compare_with_anchor(chain, head_seq, lines, anchor, problems)
    if signer is not None:
        _check_signatures(chain, signer, anchored_seq, problems)
    if anchor is not None and lines and anchored_seq < head_seq:
        warnings.append(Problem("chain", anchored_seq + 1, "anchor_behind", (
            f"the newest head in the anchor {anchor.path} is seq {anchored_seq}, the "
            f"journal's is seq {head_seq}: normal after a crash between a commit and its "
            "anchor line, or the anchor's tail was cut; the next commit anchors the head")))
    return problems, warnings, anchored_seq


def _anchor_lines(anchor, journal_id, signer, head_seq, problems, warnings) -> list[AnchorLine]:
    """The anchor lines of this journal that can be trusted (signed ones, if signed)."""
    if anchor is None:
        return []
    if not anchor.path.is_file():
        if head_seq:
            warnings.append(Problem("chain", head_seq, "anchor_missing", (
                f"no anchor file {anchor.path}: deleting the newest rows of this journal "
                "cannot be detected; was the anchor moved, or its path changed?")))
        return []
    try:
        lines, damaged = anchor.read()
    except OSError as error:
        raise JournalError(f"anchor {anchor.path} is unreadable: {error}") from None
    for number, text in damaged:
        warnings.append(Problem("anchor", 0, "anchor_damaged",
                                f"line {number} of {anchor.path} does not parse: {text!r}"))
    trusted = []
    for line in lines:
        if line.journal_id != journal_id:
            warnings.append(Problem("anchor", line.seq, "anchor_foreign", (
                f"line {line.number} of {anchor.path} belongs to journal {line.journal_id}, "
                f"not {journal_id}; is the anchor path shared by two journals?")))
        elif signer is not None and not hmac.compare_digest(
                line.sig, signer.anchor(line.seq, line.table, line.digest, line.time)):
            problems.append(Problem("anchor", line.seq, "anchor_forged", (
                f"line {line.number} of {anchor.path} (head seq {line.seq}, {line.time}) "
                "has a wrong signature: it was written without the signing key")))
        else:
            trusted.append(line)
    return trusted


def _compare_with_anchor(chain, head_seq, lines, anchor, problems) -> None:
    """Anchored heads must still be in the journal, with the hash the anchor recorded."""
    differing = [line for line in lines if line.seq in chain and chain[line.seq][1] != line.digest]
    if differing:
        first = min(differing, key=lambda line: line.seq)
        more = f"; {len(differing) - 1} later anchored head(s) differ too" \
            if len(differing) > 1 else ""
        problems.append(Problem(chain[first.seq][0], first.seq, "rewritten", (
            f"the anchor {anchor.path} (line {first.number}, {first.time}) recorded hash "
            f"{first.digest[:12]}… for this row, the journal holds {chain[first.seq][1][:12]}…"
            f"{more}")))
    beyond = max((line for line in lines if line.seq > head_seq), key=lambda line: line.seq,
                 default=None)
    if beyond is not None:
        problems.append(Problem("chain", head_seq + 1, "truncated", (
            f"seq {head_seq + 1}..{beyond.seq} are missing: the anchor {anchor.path} (line "
            f"{beyond.number}, {beyond.time}) records head seq {beyond.seq} (a {beyond.table} "
            f"row), but the journal and its chain index end at seq {head_seq}; the newest "
            "rows were deleted, or an older copy of the journal was put back")))


def _check_signatures(chain, signer, anchored_seq, problems) -> None:
    """One problem per run of consecutive rows whose signature is missing or wrong."""
    run: list[int] = []
    for seq in sorted(chain):
        table, digest, sig = chain[seq]
        if not signer.row_ok(seq, table, digest, sig):
            if run and seq == run[-1] + 1:
                run.append(seq)
                continue
            _flush_run(run, chain, anchored_seq, problems)
            run = [seq]
    _flush_run(run, chain, anchored_seq, problems)


def _flush_run(run, chain, anchored_seq, problems) -> None:
    if not run:
        return
    first = run[0]
    table, _, sig = chain[first]
    what = "no signature" if sig is None else "a wrong signature"
    span = f" (and the {len(run) - 1} row(s) after it, up to seq {run[-1]})" \
        if len(run) > 1 else ""
    if first <= anchored_seq:
        problems.append(Problem(table, first, "rewritten", (
            f"{what}{span}, though the anchor vouches for the journal up to seq "
            f"{anchored_seq}: signed rows were replaced, e.g. a chain recomputed from here")))
    else:
        problems.append(Problem(table, first, "forged", (
            f"{what}{span}: appended without the signing key (the newest anchored head is "
            f"seq {anchored_seq})")))
