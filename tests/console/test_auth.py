"""Sessions, the session cookie's settings, the CSRF check and the login throttle
(mmats.console.auth), with a clock the tests move; and, in Debian's chromium, that a Secure
cookie is kept over http://127.0.0.1 and http://localhost but not over http to another
host name."""

from __future__ import annotations

import http.server
import shutil
import threading

import pytest
from starlette.responses import Response

from mmats.console.auth import LoginThrottle, Sessions, check_csrf, cookie_settings
from mmats.console.users import User

from .conftest import CHROMIUM, CHROMIUM_ARGS

ALICE = User("alice", "operator", "stamp-a")
RITA = User("rita", "viewer", "stamp-r")
HOST = "127.0.0.1:8050"
ORIGIN = "http://127.0.0.1:8050"


class Clock:
    """Seconds that pass only when a test says so."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


# -- sessions ---------------------------------------------------------------------------------


def test_a_session_holds_its_user_role_and_token(clock):
    sessions = Sessions(clock=clock)
    session_id, csrf = sessions.create(ALICE)
    other_id, other_csrf = sessions.create(ALICE)
    assert len({session_id, csrf, other_id, other_csrf}) == 4
    assert min(map(len, (session_id, csrf))) >= 43  # 32 random bytes, URL-safe base64
    session = sessions.get(session_id)
    assert (session.user, session.role, session.csrf, session.can_act) == (
        "alice", "operator", csrf, True)
    assert (session.created, session.last_seen) == (clock.now, clock.now)
    assert sessions.get(sessions.create(RITA)[0]).can_act is False
    for unknown in (None, "", "x" * 43, session_id + "x", 7):
        assert sessions.get(unknown) is None
    assert len(sessions) == 3


def test_an_idle_session_expires_and_use_keeps_it_alive(clock):
    sessions = Sessions(idle_s=30 * 60, clock=clock)
    session_id, _ = sessions.create(ALICE)
    for _ in range(3):  # used every 29 minutes: stays
        clock.advance(29 * 60)
        assert sessions.get(session_id).last_seen == clock.now
    clock.advance(30 * 60)
    assert sessions.get(session_id) is None
    clock.advance(-60 * 60)  # gone for good, even if the clock were to step back
    assert sessions.get(session_id) is None
    assert len(sessions) == 0


def test_a_session_ends_at_its_lifetime_however_busy(clock):
    sessions = Sessions(idle_s=30 * 60, lifetime_s=12 * 3600, clock=clock)
    session_id, _ = sessions.create(ALICE)
    for _ in range(12 * 6 - 1):
        clock.advance(10 * 60)
        assert sessions.get(session_id) is not None
    clock.advance(10 * 60)  # exactly 12 h after the login
    assert sessions.get(session_id) is None


def test_the_defaults_are_30_minutes_idle_and_12_hours(clock):
    sessions = Sessions(clock=clock)
    assert (sessions.idle_s, sessions.lifetime_s) == (1800, 43200)
    session_id, _ = sessions.create(ALICE)
    clock.advance(1799)
    assert sessions.get(session_id) is not None
    clock.advance(1800)
    assert sessions.get(session_id) is None


def test_ending_sessions(clock):
    sessions = Sessions(clock=clock)
    alice_1, _ = sessions.create(ALICE)
    alice_2, _ = sessions.create(ALICE)
    rita, _ = sessions.create(RITA)
    assert sessions.end(alice_1) is True and sessions.end(alice_1) is False
    assert sessions.get(alice_1) is None and sessions.get(alice_2) is not None
    assert sessions.end_user("alice") == 1
    assert sessions.get(alice_2) is None and sessions.get(rita) is not None
    assert sessions.end(None) is False


def test_keep_only_ends_the_sessions_of_changed_accounts(clock):
    sessions = Sessions(clock=clock)
    alice, _ = sessions.create(ALICE)
    rita, _ = sessions.create(RITA)
    bob, _ = sessions.create(User("bob", "viewer", "stamp-b"))
    # alice's password changed (new stamp), rita became an operator, bob is unchanged
    now = [User("alice", "operator", "stamp-a2"), User("rita", "operator", "stamp-r"),
           User("bob", "viewer", "stamp-b")]
    assert sessions.keep_only(now) == 2
    assert sessions.get(alice) is None and sessions.get(rita) is None
    assert sessions.get(bob) is not None
    assert sessions.keep_only([]) == 1


def test_sessions_are_bounded(clock):
    sessions = Sessions(max_sessions=3, clock=clock)
    ids = [sessions.create(ALICE)[0] for _ in range(3)]
    clock.advance(1)
    assert sessions.get(ids[0]) is not None  # used: now the most recent
    newest, _ = sessions.create(RITA)
    assert len(sessions) == 3
    assert sessions.get(ids[1]) is None  # the least recently used went
    assert all(sessions.get(i) is not None for i in (ids[0], ids[2], newest))


def test_sessions_from_many_threads():
    sessions = Sessions(max_sessions=10_000)
    made, errors = [], []

    def work():
        try:
            for _ in range(200):
                session_id, csrf = sessions.create(ALICE)
                assert sessions.get(session_id).csrf == csrf
                made.append(session_id)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(set(made)) == 1600 == len(sessions)


def test_bad_settings_are_refused():
    for settings in ({"idle_s": 0}, {"lifetime_s": -1}, {"max_sessions": 0}):
        with pytest.raises(ValueError):
            Sessions(**settings)
    with pytest.raises(ValueError):
        LoginThrottle(max_failures=0)


# -- the cookie -------------------------------------------------------------------------------


def test_cookie_settings_through_starlette():
    assert cookie_settings() == cookie_settings(True)
    response = Response()
    response.set_cookie("mmats_session", "abc", **cookie_settings())
    header = response.headers["set-cookie"]
    assert header.startswith("mmats_session=abc;")
    assert {"HttpOnly", "Path=/", "SameSite=strict", "Secure"} <= {
        part.strip() for part in header.split(";")}
    assert "expires" not in header.lower() and "max-age" not in header.lower()
    response = Response()
    response.set_cookie("mmats_session", "abc", **cookie_settings(secure=False))
    assert "secure" not in response.headers["set-cookie"].lower()


class _CookieServer(http.server.BaseHTTPRequestHandler):
    """``/set`` answers with the session cookie as the dashboard sets it; every path
    answers with the Cookie header it received."""

    set_cookie = ""

    def do_GET(self):
        body = (self.headers.get("Cookie") or "").encode()
        self.send_response(200)
        if self.path == "/set":
            self.send_header("Set-Cookie", self.set_cookie)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.mark.skipif(not shutil.which("chromium"), reason="Debian's chromium is not installed")
def test_chromium_keeps_a_secure_cookie_over_http_only_for_loopback():
    """The Secure default is safe to use on http://127.0.0.1: Chromium treats loopback as
    a trustworthy origin. The control: the same cookie over http to another name (which
    resolves to 127.0.0.1 too) is dropped, so the Secure flag does take effect."""
    from playwright.sync_api import sync_playwright

    response = Response()
    response.set_cookie("mmats_session", "probe", **cookie_settings())
    _CookieServer.set_cookie = response.headers["set-cookie"]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _CookieServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    kept = {}
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM,
                args=[*CHROMIUM_ARGS, "--host-resolver-rules=MAP dashboard.test 127.0.0.1"])
            try:
                for host in ("127.0.0.1", "localhost", "dashboard.test"):
                    context = browser.new_context()
                    page = context.new_page()
                    page.goto(f"http://{host}:{port}/set")
                    sent = page.goto(f"http://{host}:{port}/again").text()
                    kept[host] = (sent, [(c["name"], c["secure"], c["httpOnly"], c["sameSite"])
                                         for c in context.cookies()])
                    context.close()
            finally:
                browser.close()
    finally:
        server.shutdown()
        server.server_close()
    stored = [("mmats_session", True, True, "Strict")]
    assert kept["127.0.0.1"] == ("mmats_session=probe", stored)
    assert kept["localhost"] == ("mmats_session=probe", stored)
    assert kept["dashboard.test"] == ("", [])


# -- CSRF -------------------------------------------------------------------------------------


@pytest.fixture
def session(clock):
    sessions = Sessions(clock=clock)
    return sessions.get(sessions.create(ALICE)[0])


def test_the_right_token_from_our_own_origin_passes(session):
    assert check_csrf(session, session.csrf, ORIGIN, HOST) is None
    assert check_csrf(session, session.csrf, ORIGIN + "/risk?x=1", HOST) is None  # a Referer
    assert check_csrf(session, session.csrf, "HTTP://127.0.0.1:8050", HOST) is None
    assert check_csrf(session, session.csrf, "http://[::1]:8050", "[::1]:8050") is None
    assert check_csrf(session, session.csrf, "https://dash.example", "dash.example") is None
    assert check_csrf(session, session.csrf, "https://dash.example",
                      "dash.example:443") is None
    assert check_csrf(session, session.csrf, "http://localhost:8050", "LOCALHOST:8050") is None


@pytest.mark.parametrize("token, origin, host, reason", [
    (None, ORIGIN, HOST, "no CSRF token"),
    ("", ORIGIN, HOST, "no CSRF token"),
    ("forged", ORIGIN, HOST, "wrong CSRF token"),
    ("ünïcode", ORIGIN, HOST, "wrong CSRF token"),
    (True, None, HOST, "no Origin or Referer"),
    (True, "", HOST, "no Origin or Referer"),
    (True, "null", HOST, "opaque origin"),
    (True, "https://evil.example", HOST, "foreign origin https://evil.example"),
    (True, "http://127.0.0.1:9999", HOST, "foreign origin"),
    (True, "http://127.0.0.1.evil.example:8050", HOST, "foreign origin"),
    (True, "http://localhost:8050", HOST, "foreign origin"),
    (True, "http://dash.example", "dash.example:443", "foreign origin"),
    (True, ORIGIN, None, "foreign origin"),
    (True, ORIGIN, "127.0.0.1:notaport", "foreign origin"),
    (True, "ftp://127.0.0.1:8050", HOST, "unreadable origin"),
    (True, "127.0.0.1:8050", HOST, "unreadable origin"),
])
def test_a_wrong_token_or_a_foreign_origin_is_refused(session, token, origin, host, reason):
    token = session.csrf if token is True else token
    refused = check_csrf(session, token, origin, host)
    assert refused is not None and reason in refused


def test_another_sessions_token_or_no_session_is_refused(clock, session):
    sessions = Sessions(clock=clock)
    other = sessions.get(sessions.create(ALICE)[0])
    assert check_csrf(session, other.csrf, ORIGIN, HOST) == "wrong CSRF token"
    assert check_csrf(None, session.csrf, ORIGIN, HOST) == "no session"


def test_a_proxys_public_origin_can_be_allowed(session):
    public = "https://dash.example.org"
    assert "foreign origin" in check_csrf(session, session.csrf, public, HOST)
    assert check_csrf(session, session.csrf, public, HOST, allowed_origins=[public]) is None
    assert check_csrf(session, session.csrf, public + ":443/x", HOST,
                      allowed_origins=[public]) is None
    assert "foreign origin" in check_csrf(session, session.csrf, "http://dash.example.org",
                                          HOST, allowed_origins=[public])


# -- the login throttle -----------------------------------------------------------------------


def test_an_address_is_blocked_after_five_failures_whatever_the_names(clock):
    throttle = LoginThrottle(clock=clock)
    for number in range(5):
        assert throttle.blocked("10.0.0.1", f"user{number}") == 0.0
        throttle.failed("10.0.0.1", f"user{number}")
        clock.advance(10)
    assert throttle.blocked("10.0.0.1", "someone-else") == pytest.approx(300 - 50)
    assert throttle.blocked("10.0.0.2", "someone-else") == 0.0
    clock.advance(249)
    assert throttle.blocked("10.0.0.1", "x") == pytest.approx(1)
    clock.advance(1)  # the first failure left the window: one more try
    assert throttle.blocked("10.0.0.1", "x") == 0.0
    throttle.failed("10.0.0.1", "x")
    assert throttle.blocked("10.0.0.1", "x") == pytest.approx(10)


def test_a_name_is_blocked_after_five_failures_from_any_addresses(clock):
    throttle = LoginThrottle(clock=clock)
    for number in range(5):
        throttle.failed(f"10.0.0.{number}", "Alice")
    assert throttle.blocked("192.168.1.9", "alice") == pytest.approx(300)
    assert throttle.blocked("192.168.1.9", "bob") == 0.0
    clock.advance(300)
    assert throttle.blocked("192.168.1.9", "alice") == 0.0


def test_a_success_clears_the_names_failures_but_not_the_addresss(clock):
    throttle = LoginThrottle(max_failures=3, clock=clock)
    for address in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
        throttle.failed(address, "alice")
    assert throttle.blocked("10.0.0.9", "alice") > 0
    throttle.succeeded("10.0.0.9", "alice")
    assert throttle.blocked("10.0.0.9", "alice") == 0.0
    for name in ("a", "b", "c"):
        throttle.failed("10.0.0.7", name)
    throttle.succeeded("10.0.0.7", "mine")
    assert throttle.blocked("10.0.0.7", "mine") > 0


def test_an_ipv6_64_counts_as_one_address(clock):
    throttle = LoginThrottle(max_failures=2, clock=clock)
    throttle.failed("2001:db8:1:2::1", "a")
    throttle.failed("2001:db8:1:2:ffff::9", "b")
    assert throttle.blocked("2001:db8:1:2::77", "c") > 0
    assert throttle.blocked("2001:db8:1:3::1", "c") == 0.0
    throttle.failed("::ffff:10.0.0.1", "d")  # an IPv4 client on a dual-stack socket
    throttle.failed("10.0.0.1", "e")
    assert throttle.blocked("10.0.0.1", "f") > 0


def test_the_throttle_forgets_old_failures_and_stays_bounded(clock):
    throttle = LoginThrottle(max_keys=100, clock=clock)
    for number in range(1000):
        throttle.failed(f"10.1.{number // 256}.{number % 256}", f"name{number}")
    assert len(throttle) == 100
    clock.advance(300)
    throttle.failed("10.9.9.9", "last")
    assert len(throttle) == 2
    clock.advance(300)
    assert throttle.blocked("10.9.9.9", "last") == 0.0 and len(throttle) == 0


def test_the_throttle_from_many_threads(clock):
    throttle = LoginThrottle(max_failures=1000, clock=clock)

    def work(number):
        for _ in range(100):
            throttle.failed("10.0.0.1", f"name{number}")
            throttle.blocked("10.0.0.1", f"name{number}")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert throttle.blocked("10.0.0.1", "x") == 0.0  # 800 of 1000
    for _ in range(200):
        throttle.failed("10.0.0.1", "x")
    assert throttle.blocked("10.0.0.1", "y") == pytest.approx(300)
