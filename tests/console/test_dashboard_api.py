"""The dashboard over real HTTP (httpx against ``mmats dashboard`` in a subprocess): no
anonymous access, the session cookie's flags, login throttling and journaling, the CSRF
rule, the security headers, the chart library served by the app itself, the reports folder kept
closed, the live stream following the journal, and the command's refusals."""

from __future__ import annotations

import json
import sqlite3

import httpx
import pytest

from .conftest import PASSWORDS, Dashboard, copy_of, run, write_config


def rows(path, table, where=""):
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute(
            f"SELECT * FROM {table} {'WHERE ' + where if where else ''} ORDER BY seq")]


def logged_in(url: str, name: str) -> httpx.Client:
    client = httpx.Client(base_url=url, timeout=10)
    answer = client.post("/login", data={"username": name, "password": PASSWORDS[name]},
                         headers={"Origin": url})
    assert answer.status_code == 303, answer.text
    # httpx keeps a Secure cookie for https only (a browser keeps it for loopback too):
    # carry it by hand
    session = answer.cookies["mmats_session"]
    client.cookies.clear()
    client.headers["Cookie"] = f"mmats_session={session}"
    return client


@pytest.fixture(scope="module")
def server(replayed, users_file, tmp_path_factory):
    folder = copy_of(replayed, tmp_path_factory.mktemp("api"))
    dashboard = Dashboard(folder, users_file)
    yield dashboard
    print(dashboard.stop())


def test_nothing_answers_without_a_session(server):
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for path in ("/api/portfolio", "/api/positions", "/api/logs", "/api/me",
                     "/api/stream"):
            assert client.get(path).status_code == 401, path
        page = client.get("/")
        assert page.status_code == 303 and page.headers["location"] == "/login"
        assert client.get("/reports/walkforward_example.html").status_code == 303
        assert client.post("/api/actions/kill", json={"confirm": "KILL"}).status_code == 401


def test_the_session_cookie_is_httponly_strict_and_secure(server):
    with httpx.Client(base_url=server.url, timeout=10) as client:
        answer = client.post("/login", data={"username": "alice",
                                             "password": PASSWORDS["alice"]},
                             headers={"Origin": server.url})
        cookie = answer.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "secure" in cookie
        assert "path=/" in cookie


def test_failed_logins_are_journaled_and_throttled(replayed, users_file, tmp_path):
    # its own dashboard: the throttle blocks this address for the others too
    server = Dashboard(copy_of(replayed, tmp_path / "throttled"), users_file)
    with httpx.Client(base_url=server.url, timeout=10) as client:
        statuses = [client.post("/login", data={"username": "alice", "password": "wrong"},
                                headers={"Origin": server.url}).status_code
                    for _ in range(7)]
        assert statuses[:5] == [401] * 5
        assert statuses[5:] == [429, 429]
        blocked = client.post("/login", data={"username": "alice",
                                              "password": PASSWORDS["alice"]},
                              headers={"Origin": server.url})
        assert blocked.status_code == 429 and int(blocked.headers["retry-after"]) > 0
    server.stop()
    failed = rows(server.journal, "operator_actions", "action = 'login_failed'")
    assert len(failed) == 5 and failed[-1]["user"] == "alice"


def test_every_mutating_request_needs_the_token_and_our_origin(server):
    client = logged_in(server.url, "rita")  # a viewer: refused before any action anyway
    operator = logged_in(server.url, "alice")
    csrf = operator.get("/api/me").json()["csrf"]
    for headers in ({}, {"X-CSRF-Token": csrf}, {"Origin": server.url},
                    {"X-CSRF-Token": "forged", "Origin": server.url},
                    {"X-CSRF-Token": csrf, "Origin": "http://evil.example"}):
        answer = operator.post("/api/actions/pause", headers=headers,
                               json={"model": "forex_rsi", "confirm": "forex_rsi"})
        assert answer.status_code == 403, (headers, answer.text)
    # the viewer's own token does not make it an operator
    viewer_csrf = client.get("/api/me").json()["csrf"]
    answer = client.post("/api/actions/pause", json={"model": "forex_rsi",
                                                     "confirm": "forex_rsi"},
                         headers={"X-CSRF-Token": viewer_csrf, "Origin": server.url})
    assert answer.status_code == 403
    # and an operator's request without the confirmation does nothing
    answer = operator.post("/api/actions/pause", json={"model": "forex_rsi"},
                           headers={"X-CSRF-Token": csrf, "Origin": server.url})
    assert answer.status_code == 400 and "confirm" in answer.json()["error"]
    assert not rows(server.journal, "operator_actions", "action = 'pause'")


def test_pages_carry_the_security_headers_and_the_charts_are_served_here(server):
    client = logged_in(server.url, "alice")
    page = client.get("/")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "SAMEORIGIN"
    assert page.headers["x-content-type-options"] == "nosniff"
    script = client.get("/static/charts.js")
    assert script.status_code == 200 and len(script.content) > 100_000
    assert b"Lightweight Charts" in script.content[:400]
    index = page.text
    assert "http://" not in index and "https://" not in index  # no CDN


def test_the_reports_folder_is_served_and_nothing_beside_it(server):
    client = logged_in(server.url, "alice")
    listed = client.get("/api/reports").json()
    assert [r["name"] for r in listed] == ["walkforward_example.html"]
    assert client.get(listed[0]["url"]).status_code == 200
    for path in ("/reports/../paper.yaml", "/reports/%2e%2e/paper.yaml",
                 "/reports/..%2fpaper.yaml", "/static/..%2fapp.py"):
        assert client.get(path).status_code == 404, path


def test_the_stream_follows_the_journal_by_sequence_number(server):
    client = logged_in(server.url, "alice")
    head = client.get("/api/overview").json()["head_seq"]
    assert head > 0
    csrf = client.get("/api/me").json()["csrf"]
    with httpx.Client(base_url=server.url, timeout=10,
                      headers={"Cookie": client.headers["Cookie"]}) as streamer, \
            streamer.stream("GET", f"/api/stream?after={head}") as stream:
        answer = client.post("/api/actions/close", json={"symbol": "GOOG", "confirm": "GOOG"},
                             headers={"X-CSRF-Token": csrf, "Origin": server.url})
        assert answer.status_code == 200, answer.text
        batches = []
        for line in stream.iter_lines():
            if line.startswith("data: ") and '"tables"' in line:
                batches.append(json.loads(line[6:]))
                if any(r.get("action") == "close" for b in batches for r in b["rows"]):
                    break
    events = [row for batch in batches for row in batch["rows"]]
    assert all(event["seq"] > head for event in events)
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)
    assert batches[-1]["tables"]["sleeve_states"] >= 1  # the state it changed, counted
    assert all(b["seq"] >= max((r["seq"] for r in b["rows"]), default=0) for b in batches)
    action = next((e for e in events if e.get("action") == "close"), None)
    assert action is not None, batches
    journaled = rows(server.journal, "operator_actions", "action = 'close'")
    assert action["seq"] == journaled[-1]["seq"] and action["user"] == "alice"


def test_listening_beyond_loopback_needs_the_flag_and_says_why(tmp_path, users_file):
    config = write_config(tmp_path)
    done = run("dashboard", "--config", str(config), "--host", "0.0.0.0",
               env={"MMATS_USERS_FILE": str(users_file)})
    assert done.returncode == 2
    assert "VPN" in done.stderr and "TLS proxy" in done.stderr and "--allow-remote" in done.stderr
    assert "Traceback" not in done.stderr


def test_without_an_account_the_dashboard_says_how_to_make_one(tmp_path):
    config = write_config(tmp_path)
    done = run("dashboard", "--config", str(config), "--port", "0",
               env={"MMATS_USERS_FILE": str(tmp_path / "none.json")})
    assert done.returncode == 1
    assert "mmats dashboard user add" in done.stderr


def test_a_missing_configuration_is_named(tmp_path, users_file):
    done = run("dashboard", "--config", str(tmp_path / "nope.yaml"),
               env={"MMATS_USERS_FILE": str(users_file)})
    assert done.returncode == 2 and "nope.yaml" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_bad_or_busy_port_is_one_plain_line(server, users_file):
    config = server.config
    env = {"MMATS_USERS_FILE": str(users_file)}
    for port, words in (("99999", "not a port"), ("http", "not a port number")):
        done = run("dashboard", "--config", str(config), "--port", port, env=env)
        assert done.returncode == 2 and words in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
    busy = server.url.rsplit(":", 1)[1]
    done = run("dashboard", "--config", str(config), "--port", busy, env=env)
    assert done.returncode == 2 and "Address already in use" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_login_is_not_journaled_into_another_environments_journal(replayed, users_file,
                                                                      tmp_path):
    """The replayed journal is dev's; a test-environment dashboard pointed at it logs its
    users in but writes no row into dev's journal."""
    folder = copy_of(replayed, tmp_path / "other_env")
    config = folder / "paper.yaml"
    text = config.read_text()
    assert "environment: dev\n" in text
    config.write_text(text.replace("environment: dev\n", "environment: test\n"))
    before = len(rows(folder / "journal" / "paper.sqlite", "operator_actions"))
    server = Dashboard(folder, users_file)
    try:
        logged_in(server.url, "alice")
        with httpx.Client(base_url=server.url, timeout=10) as client:
            client.post("/login", data={"username": "alice", "password": "wrong"},
                        headers={"Origin": server.url})
    finally:
        server.stop()
    assert len(rows(server.journal, "operator_actions")) == before
