"""The dashboard's sessions, CSRF check and login throttle, free of any web framework.

The app calls these from its middleware: :class:`Sessions` keeps server-side sessions in
memory (a cookie carries only a random id; a restart logs everyone out, which is the safe
failure); :func:`cookie_settings` says how that cookie is set; :func:`check_csrf` decides
whether a mutating request may proceed; :class:`LoginThrottle` slows password guessing.

    sessions = Sessions()
    session_id, csrf = sessions.create(user)        # set the cookie, hand csrf to the page
    session = sessions.get(session_id)              # None: log in again
    check_csrf(session, request_token, origin, host)  # None: go ahead; else the reason

Every clock is injected (``clock=``, seconds, default :func:`time.monotonic`) so tests move
time instead of waiting for it.

Why a Secure cookie works over http://127.0.0.1: Chromium treats loopback origins
(127.0.0.1, [::1], localhost) as potentially trustworthy, and keeps and sends Secure cookies
to them over plain HTTP; tests/console/test_auth.py checks it in Debian's chromium, and
that the same cookie is dropped over http:// to any other host name. Other browsers may
differ: ``cookie_settings(secure=False)`` is the way out for one that drops it.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

IDLE_S = 30 * 60
LIFETIME_S = 12 * 3600
MAX_FAILURES = 5
WINDOW_S = 5 * 60
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class Session:
    """A logged-in browser: whose, its CSRF token, and when (clock readings, seconds) it
    was created and last used."""

    user: str
    role: str
    csrf: str
    created: float
    last_seen: float
    stamp: str = ""

    @property
    def can_act(self) -> bool:
        """Operators act; viewers only read."""
        return self.role == "operator"


class Sessions:
    """Server-side sessions in memory, safe to use from several threads.

    A session ends when it has not been used for ``idle_s`` seconds, ``lifetime_s`` after
    it was created whatever its use, on :meth:`end` (log out), or on :meth:`end_user` /
    :meth:`keep_only` (its account was changed or removed). At most ``max_sessions`` are
    kept; beyond that the least recently used one is dropped.

    >>> sessions = Sessions(idle_s=60, clock=lambda: 0.0)
    >>> session_id, csrf = sessions.create(User("alice", "operator"))   # doctest: +SKIP
    >>> sessions.get(session_id).user                                    # doctest: +SKIP
    'alice'
    """

    def __init__(self, *, idle_s: float = IDLE_S, lifetime_s: float = LIFETIME_S,
                 max_sessions: int = 1000, clock: Callable[[], float] = time.monotonic):
        if idle_s <= 0 or lifetime_s <= 0 or max_sessions < 1:
            raise ValueError("idle_s, lifetime_s and max_sessions must be positive")
        self.idle_s = idle_s
        self.lifetime_s = lifetime_s
        self.max_sessions = max_sessions
        self._clock = clock
        self._lock = threading.Lock()
        # Keyed by a digest of the id: a lookup's timing reveals nothing of a live id, and
        # the ids themselves are not kept in memory. Ordered by last use, oldest first.
        self._by_key: OrderedDict[bytes, Session] = OrderedDict()

    def create(self, user) -> tuple[str, str]:
        """A new session for ``user`` (anything with ``name`` and ``role``, e.g.
        :class:`mmats.console.users.User`): ``(session_id, csrf_token)``, each 32 random
        bytes, URL-safe. Always a new id: a session is never carried over a login."""
        session_id = secrets.token_urlsafe(32)
        now = self._clock()
        session = Session(user=user.name, role=user.role, csrf=secrets.token_urlsafe(32),
                          created=now, last_seen=now, stamp=getattr(user, "stamp", ""))
        with self._lock:
            self._prune(now)
            while len(self._by_key) >= self.max_sessions:
                self._by_key.popitem(last=False)
            self._by_key[_key(session_id)] = session
        return session_id, session.csrf

    def get(self, session_id) -> Session | None:
        """The live session of ``session_id`` (marked as used now), or None: unknown,
        ended or expired (an expired one is forgotten)."""
        if not isinstance(session_id, str) or not session_id:
            return None
        key = _key(session_id)
        now = self._clock()
        with self._lock:
            session = self._by_key.get(key)
            if session is None:
                return None
            if self._expired(session, now):
                del self._by_key[key]
                return None
            session = replace(session, last_seen=now)
            self._by_key[key] = session
            self._by_key.move_to_end(key)
            return session

    def end(self, session_id) -> bool:
        """Log out: forget the session; False if there was none."""
        if not isinstance(session_id, str) or not session_id:
            return False
        with self._lock:
            return self._by_key.pop(_key(session_id), None) is not None

    def end_user(self, name: str) -> int:
        """End every session of the account ``name`` (its password changed, it was
        removed); how many ended."""
        with self._lock:
            keys = [key for key, session in self._by_key.items() if session.user == name]
            for key in keys:
                del self._by_key[key]
        return len(keys)

    def keep_only(self, users: Iterable) -> int:
        """End the sessions whose account is not among ``users`` as it is now (same name,
        role and ``stamp``): removed, disabled, given another role or password since the
        login. Give it :func:`mmats.console.users.active_users` when the accounts file
        changed (``user remove`` runs in another process). How many ended."""
        current = {(user.name, user.role, getattr(user, "stamp", "")) for user in users}
        with self._lock:
            keys = [key for key, session in self._by_key.items()
                    if (session.user, session.role, session.stamp) not in current]
            for key in keys:
                del self._by_key[key]
        return len(keys)

    def __len__(self) -> int:
        """How many sessions are live now."""
        with self._lock:
            self._prune(self._clock())
            return len(self._by_key)

    def _expired(self, session: Session, now: float) -> bool:
        return (now - session.last_seen >= self.idle_s
                or now - session.created >= self.lifetime_s)

    def _prune(self, now: float) -> None:
        expired = [key for key, session in self._by_key.items()
                   if self._expired(session, now)]
        for key in expired:
            del self._by_key[key]


def cookie_settings(secure: bool = True) -> dict:
    """The keyword arguments of Starlette's ``response.set_cookie`` for the session cookie:
    HttpOnly (no script reads it), SameSite=Strict (no other site's page sends it), path
    ``/``, no expiry (it ends with the browser; the server ends the session sooner), and
    Secure unless ``secure`` is False.

    Secure is right even on http://127.0.0.1 and http://localhost: Chromium treats loopback
    as a trustworthy origin and keeps the cookie. Turn it off only for a browser that does
    not (it would drop the cookie and every login would seem to fail), and never when the
    dashboard is reached over the network (only a TLS proxy's https keeps it secret).

    >>> cookie_settings()
    {'httponly': True, 'samesite': 'strict', 'path': '/', 'secure': True}
    """
    return {"httponly": True, "samesite": "strict", "path": "/", "secure": bool(secure)}


def check_csrf(session, header_token, origin, host, *,
               allowed_origins: Iterable[str] = ()) -> str | None:
    """Whether a mutating request may proceed: None if so, else the reason it may not.

    Both must hold: ``header_token`` (the ``X-CSRF-Token`` header) is the session's token,
    and ``origin`` — the ``Origin`` header, or the ``Referer`` (a whole URL is fine) when
    there is no Origin — is the dashboard's own: the scheme's host and port are ``host``
    (the ``Host`` header), or it is one of ``allowed_origins`` (the public address of a TLS
    proxy that rewrites Host). A request with neither header is refused: every browser this
    dashboard supports sends Origin on a POST.

    >>> check_csrf(session, session.csrf, "http://127.0.0.1:8050", "127.0.0.1:8050")  # doctest: +SKIP
    >>> check_csrf(session, session.csrf, "https://evil.example", "127.0.0.1:8050")  # doctest: +SKIP
    'foreign origin https://evil.example'
    """
    if session is None:
        return "no session"
    if not header_token or not isinstance(header_token, str):
        return "no CSRF token (send the X-CSRF-Token header)"
    if not hmac.compare_digest(header_token.encode("utf-8", "surrogatepass"),
                               session.csrf.encode("utf-8")):
        return "wrong CSRF token"
    if not origin or not isinstance(origin, str):
        return "no Origin or Referer header"
    if origin.strip().lower() == "null":
        return "an opaque origin (null)"
    claimed = _origin_address(origin)
    if claimed is None:
        return f"unreadable origin {origin[:100]!r}"
    allowed = {_origin_address(other) for other in allowed_origins} - {None}
    if claimed in allowed or _same_host(claimed, host):
        return None
    return f"foreign origin {origin[:100]}"


class LoginThrottle:
    """At most ``max_failures`` failed logins per client address, and per account name, in
    any ``window_s`` seconds; beyond that :meth:`blocked` says how long to wait (for a 429
    with Retry-After). A success clears the name's failures (not the address's: one good
    account must not buy an address more guesses at others).

    Addresses are counted per IPv4 address and per IPv6 /64 (one machine often holds a
    whole /64). Behind a proxy every client has the proxy's address: the address counter
    then throttles everyone together, and the name counter still protects each account.
    Memory is bounded: counters older than the window are dropped as new failures come,
    and at most ``max_keys`` are kept (the oldest go first).

    >>> throttle = LoginThrottle(max_failures=2, window_s=60, clock=lambda: 0.0)
    >>> throttle.failed("10.0.0.1", "alice"); throttle.failed("10.0.0.1", "alice")
    >>> throttle.blocked("10.0.0.1", "bob")
    60.0
    """

    def __init__(self, *, max_failures: int = MAX_FAILURES, window_s: float = WINDOW_S,
                 max_keys: int = 10_000, clock: Callable[[], float] = time.monotonic):
        if max_failures < 1 or window_s <= 0 or max_keys < 2:
            raise ValueError("max_failures, window_s and max_keys must be positive")
        self.max_failures = max_failures
        self.window_s = window_s
        self.max_keys = max_keys
        self._clock = clock
        self._lock = threading.Lock()
        # key -> the times of its latest failures; ordered by latest failure, oldest first.
        self._failures: OrderedDict[tuple[str, str], deque[float]] = OrderedDict()

    def blocked(self, address, name) -> float:
        """Seconds until a login from ``address`` for ``name`` may be tried; 0.0 now."""
        now = self._clock()
        with self._lock:
            self._prune(now)
            return max(self._wait(key, now) for key in _keys(address, name))

    def failed(self, address, name) -> None:
        """Count a failed login from ``address`` for ``name``."""
        now = self._clock()
        with self._lock:
            self._prune(now)
            for key in _keys(address, name):
                times = self._failures.pop(key, None) or deque(maxlen=self.max_failures)
                times.append(now)
                self._failures[key] = times
            while len(self._failures) > self.max_keys:
                self._failures.popitem(last=False)

    def succeeded(self, address, name) -> None:
        """A login of ``name`` succeeded: forget that name's failures."""
        with self._lock:
            self._failures.pop(_keys(address, name)[1], None)

    def __len__(self) -> int:
        """How many addresses and names have failures counted."""
        with self._lock:
            return len(self._failures)

    def _wait(self, key, now: float) -> float:
        times = self._failures.get(key)
        if times is None or len(times) < self.max_failures:
            return 0.0
        # The oldest of the last max_failures failures leaving the window frees one try.
        return max(0.0, times[0] + self.window_s - now)

    def _prune(self, now: float) -> None:
        while self._failures:
            key, times = next(iter(self._failures.items()))
            if times[-1] + self.window_s > now:
                return
            del self._failures[key]


def _keys(address, name) -> tuple[tuple[str, str], tuple[str, str]]:
    """The address's counter and the name's (names fold case and are cut to 128
    characters: ``Alice`` and ``alice`` share one count)."""
    return ("address", _address_key(address)), ("name", str(name).casefold()[:128])


def _address_key(address) -> str:
    try:
        parsed = ipaddress.ip_address(str(address))
    except ValueError:
        return str(address)[:128]
    if parsed.version == 4:
        return str(parsed)
    if parsed.ipv4_mapped is not None:  # an IPv4 client on a dual-stack socket
        return str(parsed.ipv4_mapped)
    return str(ipaddress.ip_network(f"{parsed}/64", strict=False))


def _key(session_id: str) -> bytes:
    return hashlib.sha256(session_id.encode("utf-8", "surrogatepass")).digest()


def _origin_address(origin: str) -> tuple[str, str, int] | None:
    """``(scheme, host, port)`` of an http(s) origin or URL (the default port filled in),
    or None."""
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    return scheme, parts.hostname.lower(), port or _DEFAULT_PORTS[scheme]


def _same_host(claimed: tuple[str, str, int], host) -> bool:
    """Whether the origin ``claimed`` names the ``Host`` header's host and port (a Host
    without a port means the default port of the origin's scheme)."""
    if not host or not isinstance(host, str):
        return False
    try:
        parts = urlsplit(f"//{host.strip()}")
        port = parts.port
    except ValueError:
        return False
    scheme, hostname, claimed_port = claimed
    if not parts.hostname or parts.hostname.lower() != hostname:
        return False
    return (port or _DEFAULT_PORTS[scheme]) == claimed_port
