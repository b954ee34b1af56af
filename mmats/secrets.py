"""Venue API keys: kept in the OS keyring, or in an encrypted file where there is none.

Each venue holds a few named fields::

    set_secret("binance", {"api_key": "...", "secret": "..."})
    set_secret("oanda", {"token": "...", "account_id": "101-004-1234567-001"})
    get_secret("oanda")["token"]          # the plain string, for the adapter
    list_venues()                         # ['binance', 'oanda']
    delete_secret("binance")              # True if there was something to delete

Where they live:

- The OS keyring (``keyring`` library: macOS Keychain, Windows Credential Locker, Secret
  Service on a Linux desktop), service ``"mmats"``, one entry per venue holding the fields
  as JSON, plus an index entry (keyrings cannot list their entries).
- An encrypted file when ``MMATS_SECRETS_FILE`` names one, or when no keyring backend works
  (keyring reports its ``fail`` or ``null`` backend, as on a headless Linux server; or keyring
  is not installed). Default path: ``$XDG_CONFIG_HOME/mmats/secrets.enc`` (``~/.config``).
  AES-256-GCM with a key derived from a passphrase by scrypt: a random salt per file, a
  random 96-bit nonce per write, and the file's header (format version, scrypt parameters,
  salt) bound as associated data, so a changed header or ciphertext fails to decrypt.
  Written atomically (temp file, fsync, rename), mode 0600, under an exclusive lock.
  The passphrase comes from ``MMATS_SECRETS_PASSPHRASE`` or an interactive prompt.

A wrong passphrase raises :class:`WrongPassphraseError`; a damaged or altered file raises
:class:`SecretsFileCorruptError` ("damaged file"); both are :class:`SecretsError` and name
the file. The header's scrypt cost is bounded before any derivation, and a SHA-256 of the
header tells a changed salt or cost from a wrong passphrase.

Environments: every configuration names one (``environment: dev | test | prod``) and reads
only its own namespace of keys, so keys stored for ``prod`` are never read by a ``dev``
configuration, nor the reverse. ``dev`` is the namespace of the plain venue names, so
entries stored before environments existed count as ``dev`` only; ``test`` and ``prod``
entries are stored as ``test/<venue>`` and ``prod/<venue>`` (a venue name cannot hold
``/``, so the namespaces cannot meet)::

    set_secret("binance", {"api_key": "...", "secret": "..."}, environment="prod")
    get_secret("binance")                       # None: the dev namespace holds nothing
    list_environments()                         # {'dev': [], 'test': [], 'prod': ['binance']}

Keeping secrets out of output: :func:`get_secret` returns a :class:`SecretFields`, a dict
whose repr shows ``'***'`` for every value (the values themselves stay plain strings, since
venue SDKs need them); :func:`redact` masks known secret values in any text, and
:class:`RedactingFilter` does the same for every record a logging handler emits.
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import hmac
import json
import logging
import os
import re
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path

from mmats.errors import MMATSError
from mmats.files import sibling_lock, write_durably
from mmats.redact import MASK, redact, secret_values

SERVICE = "mmats"
FILE_ENV = "MMATS_SECRETS_FILE"
ENVIRONMENTS = ("dev", "test", "prod")  # a configuration's environment: its key namespace
DEFAULT_ENVIRONMENT = "dev"  # also the namespace of entries stored before environments
PASSPHRASE_ENV = "MMATS_SECRETS_PASSPHRASE"

_FORMAT = "mmats-secrets"
_VERSION = 1
_SCRYPT = {"n": 2**15, "r": 8, "p": 1}  # ~32 MiB and ~0.1 s per derivation
_KEY_BYTES = 32
_NONCE_BYTES = 12
_SALT_BYTES = 16
# A file's scrypt cost is checked against these before deriving (a damaged header must not
# hang or exhaust memory): n a power of two, at most 128 MiB and 8x the default work.
_SCRYPT_MIN_N, _SCRYPT_MAX_N = 2**14, 2**20
_SCRYPT_MAX_BYTES = 2**27
_SCRYPT_MAX_WORK = 8 * _SCRYPT["n"] * _SCRYPT["r"] * _SCRYPT["p"]
_HEADER = ("format", "version", "kdf", "n", "r", "p", "salt")
_INDEX = "__venues__"  # keyring entry listing the venues; venue names cannot start with "_"
_VENUE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_FIELD_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")

log = logging.getLogger(__name__)


class SecretsError(MMATSError):
    """Secrets could not be stored or read; the message says where and what to do."""


class WrongPassphraseError(SecretsError):
    """The passphrase does not open the secrets file."""


class SecretsFileCorruptError(SecretsError):
    """The secrets file is damaged or was altered: it fails its integrity check."""


class SecretFields(dict):
    """A venue's fields: a plain dict of str, except that its repr masks every value.

    >>> SecretFields({"api_key": "abc", "secret": "xyz"})
    SecretFields({'api_key': '***', 'secret': '***'})
    """

    def __repr__(self) -> str:
        return f"SecretFields({ {name: MASK for name in self}!r})"

    __str__ = __repr__


# -- public API ------------------------------------------------------------------------------


def set_secret(venue: str, fields: Mapping[str, str],
               environment: str = DEFAULT_ENVIRONMENT) -> None:
    """Store (or replace) the fields of ``venue`` in ``environment``'s namespace, e.g.
    ``{"api_key": ..., "secret": ...}``.

    >>> set_secret("binance", {"api_key": "k", "secret": "s"}, "prod")  # doctest: +SKIP
    """
    _backend().set(entry_name(venue, environment), _check_fields(venue, fields))


def get_secret(venue: str, environment: str = DEFAULT_ENVIRONMENT) -> SecretFields | None:
    """The fields stored for ``venue`` in ``environment``'s namespace, or None; no other
    namespace is ever read.

    >>> get_secret("oanda")                                       # doctest: +SKIP
    SecretFields({'token': '***', 'account_id': '***'})
    """
    fields = _backend().get(entry_name(venue, environment))
    return None if fields is None else SecretFields(fields)


def available_without_prompt() -> bool:
    """Whether :func:`get_secret` can answer without asking anyone: a working keyring, or
    the encrypted file with ``MMATS_SECRETS_PASSPHRASE`` set (cron has no terminal)."""
    return isinstance(_backend(), _Keyring) or bool(os.environ.get(PASSPHRASE_ENV))


def list_venues(environment: str = DEFAULT_ENVIRONMENT) -> list[str]:
    """The venues that have secrets stored in ``environment``'s namespace, sorted."""
    return list_environments()[_check_environment(environment)]


def list_fields(environment: str = DEFAULT_ENVIRONMENT) -> dict[str, list[str]]:
    """Each venue stored in ``environment``'s namespace with the names (never the values)
    of its fields, in one read."""
    _check_environment(environment)
    stored = _backend().all(lambda name: _split_entry(name)[0] == environment)
    by_venue = {_split_entry(name)[1]: sorted(fields) for name, fields in stored.items()}
    return {venue: by_venue[venue] for venue in sorted(by_venue)}


def list_environments() -> dict[str, list[str]]:
    """Every environment with the venues stored in its namespace (names only), sorted:
    ``{'dev': ['binance'], 'test': [], 'prod': ['binance']}``."""
    spaces: dict[str, list[str]] = {environment: [] for environment in ENVIRONMENTS}
    for name in _backend().venues():
        space, venue = _split_entry(name)
        if space in spaces:
            spaces[space].append(venue)
    return {space: sorted(venues) for space, venues in spaces.items()}


def delete_secret(venue: str, environment: str = DEFAULT_ENVIRONMENT) -> bool:
    """Forget ``venue``'s secrets in ``environment``'s namespace; False if there were
    none."""
    return _backend().delete(entry_name(venue, environment))


def entry_name(venue: str, environment: str = DEFAULT_ENVIRONMENT) -> str:
    """The store's entry for ``venue`` in ``environment``: the venue's name for ``dev``
    (which is why entries stored before environments count as ``dev``), else
    ``<environment>/<venue>``.

    >>> entry_name("binance"), entry_name("binance", "prod")
    ('binance', 'prod/binance')
    """
    venue, environment = _check_venue(venue), _check_environment(environment)
    return venue if environment == DEFAULT_ENVIRONMENT else f"{environment}/{venue}"


def describe_backend() -> str:
    """Where secrets are kept right now, e.g. ``'encrypted file /home/me/.config/...'``."""
    return _backend().description


def default_secrets_file() -> Path:
    """``$MMATS_SECRETS_FILE``, else ``$XDG_CONFIG_HOME/mmats/secrets.enc`` (``~/.config``)."""
    if os.environ.get(FILE_ENV):
        return Path(os.environ[FILE_ENV]).expanduser()
    config = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(config) / "mmats" / "secrets.enc"


class RedactingFilter(logging.Filter):
    """A logging filter that masks secret values in messages, arguments and tracebacks.

    Attach it to the handlers (a filter on a logger misses records of its child loggers)::

        handler.addFilter(RedactingFilter(get_secret("oanda")))
    """

    def __init__(self, secrets):
        super().__init__()
        self._values = secret_values(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self._redact(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self._redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self._redact(record.stack_info)
        return True

    def _redact(self, text: str) -> str:
        return redact(text, self._values)


def _check_venue(venue) -> str:
    if not isinstance(venue, str) or not _VENUE_RE.match(venue):
        raise SecretsError(f"venue name {venue!r} is not valid; use letters, digits, '.', '_' "
                           "or '-', starting with a letter or digit (e.g. 'binance', 'oanda')")
    return venue


def _check_environment(environment) -> str:
    if environment not in ENVIRONMENTS:
        raise SecretsError(f"environment {environment!r} is not one of "
                           f"{', '.join(ENVIRONMENTS)}")
    return environment


def _split_entry(name: str) -> tuple[str, str]:
    """``(environment, venue)`` of a stored entry's name (see :func:`entry_name`)."""
    space, slash, venue = name.partition("/")
    return (space, venue) if slash else (DEFAULT_ENVIRONMENT, name)


def _check_fields(venue: str, fields) -> dict[str, str]:
    if not isinstance(fields, Mapping) or not fields:
        raise SecretsError(f"{venue}: give the fields as a non-empty dict, e.g. "
                           "{'api_key': ..., 'secret': ...}")
    checked = {}
    for name, value in fields.items():
        if not isinstance(name, str) or not _FIELD_RE.match(name):
            raise SecretsError(f"{venue}: field name {name!r} is not valid; use e.g. api_key")
        if not isinstance(value, str) or not value:
            # Never show the value: it may be a secret with a wrong type.
            raise SecretsError(f"{venue}: field {name!r} must be a non-empty string")
        checked[name] = value
    return checked


# -- backends ---------------------------------------------------------------------------------


def _backend():
    """The encrypted file if ``MMATS_SECRETS_FILE`` is set or no keyring works, else the
    keyring."""
    if os.environ.get(FILE_ENV):
        return _EncryptedFile(default_secrets_file())
    try:
        import keyring
        from keyring.backends import chainer, fail, null
    except ImportError:
        return _EncryptedFile(default_secrets_file())
    ring = keyring.get_keyring()
    if isinstance(ring, (fail.Keyring, null.Keyring)) or (
            isinstance(ring, chainer.ChainerBackend) and not ring.backends):
        return _EncryptedFile(default_secrets_file())
    return _Keyring(ring)


class _Keyring:
    """One keyring entry per venue (JSON of the fields) and one index entry."""

    def __init__(self, ring):
        self.ring = ring
        self.description = f"OS keyring ({type(ring).__module__}.{type(ring).__name__})"

    def get(self, venue: str) -> dict[str, str] | None:
        text = self._call("read", self.ring.get_password, SERVICE, venue)
        if text is None:
            return None
        try:
            entry = json.loads(text)
            fields = entry["fields"]
            if entry.get("version") != _VERSION or not isinstance(fields, dict):
                raise ValueError
        except (ValueError, KeyError, TypeError):
            raise SecretsError(f"{self.description}: the entry {SERVICE}/{venue} was not written "
                               f"by MMATS; delete it and store it again") from None
        return fields

    def set(self, venue: str, fields: dict[str, str]) -> None:
        entry = json.dumps({"version": _VERSION, "fields": fields})
        self._call("write", self.ring.set_password, SERVICE, venue, entry)
        self._write_index(self.venues() | {venue})

    def delete(self, venue: str) -> bool:
        import keyring.errors

        try:
            self.ring.delete_password(SERVICE, venue)
            deleted = True
        except keyring.errors.PasswordDeleteError:
            deleted = False
        except keyring.errors.KeyringError as exc:
            raise self._error("delete", exc) from None
        self._write_index(self.venues() - {venue})
        return deleted

    def all(self, keep=lambda name: True) -> dict[str, dict[str, str]]:
        """The entries whose name ``keep`` accepts (the others are not read)."""
        stored = {venue: self.get(venue) for venue in self.venues() if keep(venue)}
        return {venue: fields for venue, fields in stored.items() if fields is not None}

    def venues(self) -> set[str]:
        text = self._call("read", self.ring.get_password, SERVICE, _INDEX)
        try:
            return set(json.loads(text)) if text else set()
        except (ValueError, TypeError):
            return set()

    def _write_index(self, venues: set[str]) -> None:
        self._call("write", self.ring.set_password, SERVICE, _INDEX, json.dumps(sorted(venues)))

    def _call(self, action, function, *args):
        import keyring.errors

        try:
            return function(*args)
        except keyring.errors.KeyringError as exc:
            raise self._error(action, exc) from None

    def _error(self, action: str, exc: Exception) -> SecretsError:
        return SecretsError(f"{self.description}: cannot {action} service {SERVICE!r}: "
                            f"{type(exc).__name__}: {exc}. Unlock the keyring, or set "
                            f"{FILE_ENV} to keep secrets in an encrypted file instead")


class _EncryptedFile:
    """All venues in one AES-GCM encrypted JSON document (see the module docstring)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.description = f"encrypted file {self.path}"

    def get(self, venue: str) -> dict[str, str] | None:
        if not self.path.exists():
            return None
        return self._read()[0].get(venue)

    def venues(self) -> set[str]:
        return set(self.all())

    def all(self, keep=lambda name: True) -> dict[str, dict[str, str]]:
        """The entries whose name ``keep`` accepts (one decryption, whatever is kept)."""
        stored = self._read()[0] if self.path.exists() else {}
        return {name: fields for name, fields in stored.items() if keep(name)}

    def set(self, venue: str, fields: dict[str, str]) -> None:
        with self._locked():
            if self.path.exists():
                venues, header, key = self._read()
            else:
                venues, header, key = {}, *self._new_key()
            venues[venue] = fields
            self._write(venues, header, key)

    def delete(self, venue: str) -> bool:
        if not self.path.exists():
            return False
        with self._locked():
            venues, header, key = self._read()
            if venue not in venues:
                return False
            del venues[venue]
            self._write(venues, header, key)
        return True

    # -- format ---------------------------------------------------------------------------

    def _new_key(self) -> tuple[dict, bytes]:
        passphrase = _passphrase(f"New passphrase for {self.path}: ", confirm=True)
        header = {"format": _FORMAT, "version": _VERSION, "kdf": "scrypt", **_SCRYPT,
                  "salt": _b64(os.urandom(_SALT_BYTES))}
        key, check = _derive(passphrase, header)
        return {**header, "check": _b64(check)}, key

    def _read(self) -> tuple[dict, dict, bytes]:
        """``(venues, header, key)``; the passphrase is asked for (or read) once."""
        aesgcm, invalid_tag, _ = _crypto()
        try:
            mode = self.path.stat().st_mode & 0o777
            raw = self.path.read_bytes()
        except OSError as exc:
            raise SecretsError(f"{self.path}: cannot read it: {exc}") from None
        if mode & 0o077:
            log.warning("%s is readable by others (mode %o); run: chmod 600 %s",
                        self.path, mode, self.path)
        document = self._parse(raw)
        header = {k: document[k] for k in _HEADER}
        passphrase = _passphrase(f"Passphrase for {self.path}: ")
        key, check = _derive(passphrase, header)
        if not hmac.compare_digest(check, self._bytes(document, "check")):
            raise WrongPassphraseError(
                f"{self.path}: wrong passphrase (the passphrase does not match the one this "
                f"file was written with; check {PASSPHRASE_ENV})")
        try:
            plain = aesgcm(key).decrypt(self._bytes(document, "nonce"),
                                        self._bytes(document, "ciphertext"), _aad(header))
            venues = json.loads(plain)["venues"]
            if not isinstance(venues, dict):
                raise ValueError
        except invalid_tag:
            raise SecretsFileCorruptError(
                f"{self.path}: the file fails its integrity check: it was altered or damaged "
                "after it was written. Restore it from a backup, or delete it and store the "
                "keys again") from None
        except (ValueError, KeyError, TypeError):
            raise SecretsFileCorruptError(f"{self.path}: decrypted content is not an MMATS "
                                          "secrets document") from None
        return venues, {**header, "check": document["check"]}, key

    def _parse(self, raw: bytes) -> dict:
        try:
            document = json.loads(raw)
            if not isinstance(document, dict) or document.get("format") != _FORMAT:
                raise ValueError
        except (ValueError, UnicodeDecodeError):
            raise SecretsFileCorruptError(
                f"{self.path}: not an MMATS secrets file (or damaged beyond reading); move it "
                f"aside or point {FILE_ENV} elsewhere") from None
        if document.get("version") != _VERSION:
            raise SecretsError(f"{self.path}: secrets file version {document.get('version')!r} "
                               f"is not {_VERSION}; upgrade MMATS to read it")
        missing = [k for k in ("kdf", "n", "r", "p", "salt", "check", "nonce", "ciphertext")
                   if k not in document]
        if missing or document["kdf"] != "scrypt" or not all(
                type(document[k]) is int for k in ("n", "r", "p")):
            raise SecretsFileCorruptError(f"{self.path}: damaged file: the header is damaged "
                                          f"({', '.join(missing) or 'kdf parameters'})")
        # Bounded before any derivation: a damaged cost must not hang or exhaust memory.
        n, r, p = document["n"], document["r"], document["p"]
        if not (_SCRYPT_MIN_N <= n <= _SCRYPT_MAX_N and n & (n - 1) == 0 and 1 <= r <= 32
                and 1 <= p <= 16 and 128 * n * r <= _SCRYPT_MAX_BYTES
                and n * r * p <= _SCRYPT_MAX_WORK):
            raise SecretsFileCorruptError(
                f"{self.path}: damaged file: scrypt parameters out of range (n={n}, r={r}, "
                f"p={p}; MMATS writes n={_SCRYPT['n']}, r={_SCRYPT['r']}, p={_SCRYPT['p']})")
        if len(self._bytes(document, "salt")) != _SALT_BYTES:
            raise SecretsFileCorruptError(f"{self.path}: damaged file: the salt is not "
                                          f"{_SALT_BYTES} bytes")
        if len(self._bytes(document, "check")) != _KEY_BYTES:
            raise SecretsFileCorruptError(f"{self.path}: damaged file: the key check is not "
                                          f"{_KEY_BYTES} bytes")
        header = {k: document[k] for k in _HEADER}
        digest = document.get("header_sha256")  # absent from files written before it
        if digest is not None and not hmac.compare_digest(str(digest), _digest(header)):
            raise SecretsFileCorruptError(
                f"{self.path}: damaged file: the header (salt or scrypt parameters) was "
                "changed after the file was written. Restore it from a backup, or delete it "
                "and store the keys again")
        return document

    def _bytes(self, document: dict, name: str) -> bytes:
        try:
            return base64.b64decode(document[name], validate=True)
        except (ValueError, TypeError):
            raise SecretsFileCorruptError(f"{self.path}: damaged file: the {name!r} field is "
                                          "damaged") from None

    def _write(self, venues: dict, header: dict, key: bytes) -> None:
        aesgcm, _, _ = _crypto()
        public = {k: v for k, v in header.items() if k != "check"}
        nonce = os.urandom(_NONCE_BYTES)
        ciphertext = aesgcm(key).encrypt(nonce, json.dumps({"venues": venues}).encode(),
                                         _aad(public))
        document = {**header, "header_sha256": _digest(public), "nonce": _b64(nonce),
                    "ciphertext": _b64(ciphertext)}
        try:
            _atomic_write(self.path, json.dumps(document, indent=1).encode() + b"\n")
        except OSError as exc:  # a full disk, a read-only folder: the old file is intact
            raise SecretsError(f"{self.path}: cannot write it: {exc}; nothing was "
                               "changed") from None

    def _locked(self):
        return sibling_lock(self.path, lambda exc: SecretsError(
            f"{self.path}: cannot write here: {exc}; point {FILE_ENV} at a file in a folder "
            "you can write"))


def _aad(header: dict) -> bytes:
    """The associated data: the header as canonical JSON (version, scrypt parameters, salt)."""
    return json.dumps(header, sort_keys=True, separators=(",", ":")).encode()


def _digest(header: dict) -> str:
    """SHA-256 of the header: tells a damaged header from a wrong passphrase (a changed
    salt or cost derives another key, which would otherwise look like a wrong passphrase)."""
    return hashlib.sha256(_aad(header)).hexdigest()


def _crypto():
    """``(AESGCM, InvalidTag, Scrypt)`` from ``cryptography`` (a live/dev extra)."""
    try:
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
    except ImportError:
        raise SecretsError("the encrypted secrets file needs the 'cryptography' package: "
                           "pip install 'mmats[live]'") from None
    return AESGCM, InvalidTag, Scrypt


def _derive(passphrase: str, header: dict) -> tuple[bytes, bytes]:
    """scrypt -> (AES key, key-check value); the check tells a wrong passphrase from damage."""
    scrypt = _crypto()[2]
    salt = base64.b64decode(header["salt"])
    material = scrypt(salt=salt, length=2 * _KEY_BYTES, n=header["n"], r=header["r"],
                      p=header["p"]).derive(passphrase.encode("utf-8"))
    return material[:_KEY_BYTES], material[_KEY_BYTES:]


def _passphrase(prompt: str, confirm: bool = False) -> str:
    passphrase = os.environ.get(PASSPHRASE_ENV)
    if passphrase is None:
        hint = f"set {PASSPHRASE_ENV}"
        passphrase = ask_hidden(prompt, hint)
        if confirm and ask_hidden("Repeat it: ", hint) != passphrase:
            raise SecretsError("the two passphrases differ; nothing was written")
    if not passphrase:
        raise SecretsError(f"the secrets passphrase is empty; set {PASSPHRASE_ENV} or type one")
    return passphrase


def ask_hidden(prompt: str, hint: str) -> str:
    """Ask on the terminal without echo; :class:`SecretsError` (ending with ``hint``) when
    there is no terminal or the user cancels.

    getpass would fall back to reading stdin with echo: refused instead, since stdin may be
    carrying the secret values themselves, and an echoed secret lands in logs.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error", getpass.GetPassWarning)
        try:
            return getpass.getpass(prompt, stream=sys.stderr)
        except (getpass.GetPassWarning, EOFError, OSError):
            raise SecretsError(f"no terminal to ask {prompt.strip().rstrip(':')!r} without "
                               f"echo; {hint}") from None
        except KeyboardInterrupt:
            raise SecretsError("cancelled; nothing was written") from None


def _atomic_write(path: Path, data: bytes) -> None:
    """Write a 0600 temp file beside ``path``, fsync it, rename it over ``path``, fsync the
    folder."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_durably(path, lambda handle: handle.write(data), prefix=f".{path.name}.", mode=0o600)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
