"""Operator-console accounts: names, roles and scrypt password hashes, kept beside the
secrets and never in the configuration.

The file is ``$MMATS_USERS_FILE``, else ``dashboard_users.json`` in the folder of the
secrets file (``$XDG_CONFIG_HOME/mmats/``, default ``~/.config/mmats/``)::

    {"format": "mmats-users", "version": 1,
     "users": {"alice": {"role": "operator", "hash": "scrypt$32768$8$1$<salt>$<key>",
                         "created": "2025-01-02T03:04:05+00:00", "disabled": false}}}

It is written atomically (:func:`mmats.files.write_durably`: a reader sees the old file or
the new one), mode 0600, under an exclusive lock so two ``user add`` never lose each
other's account. A damaged file raises :class:`UsersError` naming it.

A password hash is self-describing, ``scrypt$n$r$p$salt$key`` (base64), so its cost can be
raised later without breaking stored accounts; each has its own random 16-byte salt, and
the cost read back is bounded before any work (a damaged entry must not hang a login).
:func:`authenticate` spends one scrypt derivation whatever happens — an unknown name, a
disabled account, a malformed name — so its time does not tell which names exist.

    add_user("alice", "operator", "correct horse battery")
    authenticate("alice", "correct horse battery")   # User(name='alice', role='operator')
    authenticate("alice", "wrong")                   # None
    list_users()      # [{'name': 'alice', 'role': 'operator', 'created': ..., 'disabled': False}]
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from mmats.errors import MMATSError
from mmats.files import sibling_lock, write_durably
from mmats.secrets import default_secrets_file

FILE_ENV = "MMATS_USERS_FILE"
FILE_NAME = "dashboard_users.json"
ROLES = ("viewer", "operator")
MIN_PASSWORD_CHARS = 12
MAX_PASSWORD_CHARS = 1024  # scrypt pre-hashes any length; this only bounds a silly request

_FORMAT = "mmats-users"
_VERSION = 1
_SCRYPT = {"n": 2**15, "r": 8, "p": 1}  # ~32 MiB and ~0.1 s, as the secrets file
_SALT_BYTES = 16
_KEY_BYTES = 32
# The cost of a stored hash is checked against these before deriving: n a power of two,
# at most 128 MiB of memory and 8x the default work.
_MIN_N, _MAX_N = 2**14, 2**20
_MAX_BYTES = 2**27
_MAX_WORK = 8 * _SCRYPT["n"] * _SCRYPT["r"] * _SCRYPT["p"]
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_ENTRY_KEYS = {"role", "hash", "created", "disabled"}

log = logging.getLogger(__name__)


class UsersError(MMATSError):
    """An account could not be added, changed or read; the message says which and why."""


@dataclass(frozen=True)
class User:
    """An authenticated account. ``stamp`` changes whenever the account's password or role
    does (it is a digest of the stored entry, not a secret), so a running dashboard can
    tell which of its sessions an account change outdated."""

    name: str
    role: str
    stamp: str = ""

    @property
    def can_act(self) -> bool:
        """Operators act (pause, close, kill, orders); viewers only read."""
        return self.role == "operator"


# -- public API ----------------------------------------------------------------------------


def users_file(path: str | os.PathLike | None = None) -> Path:
    """``path`` if given, else ``$MMATS_USERS_FILE``, else ``dashboard_users.json`` beside
    the secrets file.

    >>> users_file("/tmp/u.json")
    PosixPath('/tmp/u.json')
    """
    if path is not None:
        return Path(path).expanduser()
    if os.environ.get(FILE_ENV):
        return Path(os.environ[FILE_ENV]).expanduser()
    return default_secrets_file().parent / FILE_NAME


def add_user(name: str, role: str, password: str, *, path=None, replace: bool = False) -> User:
    """Create the account ``name`` (a new salt and hash); an existing name is refused
    unless ``replace``.

    >>> add_user("rita", "viewer", "a long passphrase", path=tmp / "u.json")  # doctest: +SKIP
    User(name='rita', role='viewer', stamp='...')
    """
    file = users_file(path)
    check_name(name)
    _check_role(role)
    check_password(password)
    encoded = hash_password(password)  # before the lock: the slow part holds nobody up
    with _locked(file):
        accounts = _read(file)
        if name in accounts and not replace:
            raise UsersError(f"{file}: an account {name!r} exists already; remove it first, "
                             "or change its password with 'user passwd'")
        accounts[name] = {"role": role, "hash": encoded, "created": _now(), "disabled": False}
        _write(file, accounts)
    return _user(name, accounts[name])


def remove_user(name: str, *, path=None) -> bool:
    """Forget the account ``name``; False if there was none."""
    file = users_file(path)
    check_name(name)
    with _locked(file):
        accounts = _read(file)
        if name not in accounts:
            return False
        del accounts[name]
        _write(file, accounts)
    return True


def set_password(name: str, password: str, *, path=None) -> User:
    """Give the existing account ``name`` a new password (and a new salt)."""
    file = users_file(path)
    check_name(name)
    check_password(password)
    encoded = hash_password(password)
    with _locked(file):
        accounts = _read(file)
        if name not in accounts:
            raise UsersError(f"{file}: there is no account {name!r}; add it with 'user add'")
        accounts[name] = {**accounts[name], "hash": encoded}
        _write(file, accounts)
    return _user(name, accounts[name])


def list_users(*, path=None) -> list[dict]:
    """The accounts, sorted by name: ``name``, ``role``, ``created``, ``disabled`` — never
    the hash. No file yet: an empty list."""
    accounts = _read(users_file(path))
    return [{"name": name, "role": entry["role"], "created": entry["created"],
             "disabled": entry["disabled"]} for name, entry in sorted(accounts.items())]


def active_users(*, path=None) -> list[User]:
    """The enabled accounts as :class:`User` (with their stamps), for a running dashboard
    to end the sessions of accounts removed, disabled or changed since (see
    :meth:`mmats.console.auth.Sessions.keep_only`)."""
    accounts = _read(users_file(path))
    return [_user(name, entry) for name, entry in sorted(accounts.items())
            if not entry["disabled"]]


def authenticate(name, password, *, path=None) -> User | None:
    """The account if ``password`` is its password and it is enabled, else None.

    Exactly one scrypt derivation is spent in every case (a dummy hash stands in for a
    missing account), so a caller cannot learn from the time which names exist. Input from
    a login form is taken as it comes: a malformed name or password is just a failure. A
    damaged accounts file raises :class:`UsersError`.
    """
    accounts = _read(users_file(path))
    entry = accounts.get(name) if isinstance(name, str) else None
    stored = entry["hash"] if entry is not None else _DUMMY_HASH
    if not isinstance(password, str) or len(password) > MAX_PASSWORD_CHARS:
        password = ""
    matches = verify_password(password, stored)
    if entry is None or entry["disabled"] or not matches:
        return None
    return _user(name, entry)


def hash_password(password: str) -> str:
    """``scrypt$n$r$p$salt$key`` of ``password`` with a new random salt.

    >>> hash_password("correct horse battery").startswith("scrypt$32768$8$1$")
    True
    """
    salt = os.urandom(_SALT_BYTES)
    params = (_SCRYPT["n"], _SCRYPT["r"], _SCRYPT["p"])
    key = _derive(password, salt, *params)
    return "$".join(["scrypt", *map(str, params), _b64(salt), _b64(key)])


def verify_password(password: str, encoded: str) -> bool:
    """Whether ``password`` derives the key in ``encoded`` (compared in constant time);
    :class:`UsersError` if ``encoded`` is not a hash this module writes."""
    salt, n, r, p, key = _parse_hash(encoded)
    return hmac.compare_digest(_derive(password, salt, n, r, p), key)


def check_name(name) -> str:
    """``name`` if it is a valid account name, else :class:`UsersError` saying the rule."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise UsersError(f"account name {name!r} is not valid: use 1 to 64 letters, digits, "
                         "'.', '_' or '-', starting with a letter or digit (e.g. 'alice')")
    return name


def check_password(password) -> str:
    """``password`` if it is long enough (and not absurdly long); never shows it."""
    if not isinstance(password, str) or len(password) < MIN_PASSWORD_CHARS:
        raise UsersError(f"the password is too short: use at least {MIN_PASSWORD_CHARS} "
                         "characters (a few unrelated words make a good one)")
    if len(password) > MAX_PASSWORD_CHARS:
        raise UsersError(f"the password is longer than {MAX_PASSWORD_CHARS} characters")
    return password


def file_signature(path=None) -> tuple[int, int, int] | None:
    """``(inode, size, mtime_ns)`` of the accounts file, None without one: a cheap way for
    a running dashboard to notice that ``user add/remove/passwd`` changed it."""
    try:
        stat = users_file(path).stat()
    except OSError:
        return None
    return (stat.st_ino, stat.st_size, stat.st_mtime_ns)


# -- hashing ---------------------------------------------------------------------------------


def _derive(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p,
                          maxmem=2 * _MAX_BYTES, dklen=_KEY_BYTES)


def _parse_hash(encoded) -> tuple[bytes, int, int, int, bytes]:
    """``(salt, n, r, p, key)``; the cost bounded before any derivation."""
    parts = encoded.split("$") if isinstance(encoded, str) else []
    try:
        if len(parts) != 6 or parts[0] != "scrypt":
            raise ValueError("not scrypt$n$r$p$salt$key")
        n, r, p = (int(part) for part in parts[1:4])
        salt = base64.b64decode(parts[4], validate=True)
        key = base64.b64decode(parts[5], validate=True)
    except ValueError:
        raise UsersError("a password hash is not of the form scrypt$n$r$p$salt$key") from None
    if not (_MIN_N <= n <= _MAX_N and n & (n - 1) == 0 and 1 <= r <= 32 and 1 <= p <= 16
            and 128 * n * r <= _MAX_BYTES and n * r * p <= _MAX_WORK):
        raise UsersError(f"a password hash has scrypt parameters out of range (n={n}, r={r}, "
                         f"p={p}; MMATS writes n={_SCRYPT['n']}, r={_SCRYPT['r']}, "
                         f"p={_SCRYPT['p']})")
    if len(salt) != _SALT_BYTES or len(key) != _KEY_BYTES:
        raise UsersError(f"a password hash does not hold a {_SALT_BYTES}-byte salt and a "
                         f"{_KEY_BYTES}-byte key")
    return salt, n, r, p, key


# Verified when the name has no account: the same cost as a real hash, matching nothing
# (its key is random bytes no password derives).
_DUMMY_HASH = "$".join(["scrypt", str(_SCRYPT["n"]), str(_SCRYPT["r"]), str(_SCRYPT["p"]),
                        base64.b64encode(os.urandom(_SALT_BYTES)).decode("ascii"),
                        base64.b64encode(os.urandom(_KEY_BYTES)).decode("ascii")])


# -- the file --------------------------------------------------------------------------------


def _read(file: Path) -> dict[str, dict]:
    """The accounts by name, each entry checked; {} when there is no file."""
    try:
        mode = file.stat().st_mode & 0o777
        raw = file.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise UsersError(f"{file}: cannot read the dashboard accounts: {exc.strerror or exc}; "
                         f"check its permissions, or point {FILE_ENV} elsewhere") from None
    if mode & 0o077:
        log.warning("%s is readable by others (mode %o); run: chmod 600 %s", file, mode, file)
    try:
        document = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise _damaged(file, "it is not JSON") from None
    if not isinstance(document, dict) or document.get("format") != _FORMAT:
        raise _damaged(file, f"it is not an MMATS accounts file (no \"format\": \"{_FORMAT}\")")
    if document.get("version") != _VERSION:
        raise UsersError(f"{file}: accounts file version {document.get('version')!r} is not "
                         f"{_VERSION}; upgrade MMATS to read it")
    accounts = document.get("users")
    if not isinstance(accounts, dict):
        raise _damaged(file, "\"users\" is not an object")
    for name, entry in accounts.items():
        problem = _entry_problem(name, entry)
        if problem:
            raise _damaged(file, f"account {name!r}: {problem}")
    return accounts


def _entry_problem(name, entry) -> str | None:
    if not _NAME_RE.fullmatch(name):
        return "the name is not valid"
    if not isinstance(entry, dict) or not _ENTRY_KEYS <= set(entry):
        return f"the entry must hold {', '.join(sorted(_ENTRY_KEYS))}"
    if entry["role"] not in ROLES:
        return f"role {entry['role']!r} is not one of {', '.join(ROLES)}"
    if not isinstance(entry["created"], str) or not isinstance(entry["disabled"], bool):
        return "\"created\" must be a string and \"disabled\" true or false"
    try:
        _parse_hash(entry["hash"])
    except UsersError as exc:
        return str(exc)
    return None


def _damaged(file: Path, what: str) -> UsersError:
    return UsersError(f"{file}: damaged dashboard accounts file: {what}. Restore it from a "
                      "backup, or move it aside and add the accounts again with "
                      "'mmats dashboard user add'")


def _write(file: Path, accounts: dict[str, dict]) -> None:
    document = {"format": _FORMAT, "version": _VERSION,
                "users": dict(sorted(accounts.items()))}
    data = json.dumps(document, indent=1).encode() + b"\n"
    try:
        write_durably(file, lambda handle: handle.write(data), mode=0o600)
    except OSError as exc:  # a full disk, a read-only folder: the old file is intact
        raise UsersError(f"{file}: cannot write it: {exc.strerror or exc}; nothing was "
                         "changed") from None


def _locked(file: Path):
    return sibling_lock(file, lambda exc: UsersError(
        f"{file}: cannot write here: {exc.strerror or exc}; point {FILE_ENV} at a file in a "
        "folder you can write"))


def _user(name: str, entry: dict) -> User:
    stamp = hashlib.sha256(f"{entry['role']}${entry['hash']}".encode()).hexdigest()[:16]
    return User(name=name, role=entry["role"], stamp=stamp)


def _check_role(role) -> str:
    if role not in ROLES:
        raise UsersError(f"role {role!r} is not valid: use {' or '.join(ROLES)} (a viewer "
                         "reads everything, an operator may also act)")
    return role


def _now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
