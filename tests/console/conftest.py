"""The operator console's fixtures: a paper replay of the multi-market example, dashboard
accounts, a dashboard started as a user starts it (``mmats dashboard``, a subprocess), and
Debian's chromium driven by Playwright (no browser download)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "mmats" / "data" / "sample"
MMATS = str(Path(sys.executable).with_name("mmats"))
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# At 250 bars of each market every one of the four sleeves holds a position.
REPLAY_BARS = 250
PASSWORDS = {"alice": "alice-operator-pw-1", "rita": "rita-viewer-pw-12"}
# Without the background-networking flags, Chromium keeps trying to reach Google's hosts,
# which this offline machine refuses.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]


def write_config(folder: Path) -> Path:
    """configs/paper_multi_market.yaml with its journal in ``folder`` and the shipped
    sample candles as its store."""
    text = (REPO / "configs" / "paper_multi_market.yaml").read_text()
    lines = []
    for line in text.splitlines():
        if line.startswith("journal:"):
            line = "journal: journal/paper.sqlite"
        elif line.startswith("data_root:"):
            line = f"data_root: {SAMPLE}"
        lines.append(line)
    (folder / "journal").mkdir(parents=True, exist_ok=True)
    path = folder / "paper.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def run(*args, stdin: str | None = None, env: dict | None = None, cwd=None, timeout=300):
    return subprocess.run([MMATS, *args], input=stdin, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=cwd, timeout=timeout)


@pytest.fixture(scope="session")
def replayed(tmp_path_factory) -> Path:
    """A folder holding the example configuration and the journal of its paper replay
    through the operator path (the paper venue: real orders' path, no money), built once;
    tests that change it work on a copy (:func:`copy_of`)."""
    folder = tmp_path_factory.mktemp("replayed")
    config = write_config(folder)
    done = run("live", "--config", str(config), "--replay", "--mode", "operator",
               "--journal", str(folder / "journal" / "paper.sqlite"),
               "--bars", str(REPLAY_BARS), "--json")
    assert done.returncode == 0, done.stderr
    reports = folder / "reports"
    reports.mkdir()
    (reports / "walkforward_example.html").write_text(
        "<!doctype html><title>Walk-forward</title><h1 id='report-title'>Walk-forward "
        "report</h1><p>out-of-sample Sharpe 1.1</p>")
    return folder


def copy_of(folder: Path, into: Path) -> Path:
    shutil.copytree(folder, into, dirs_exist_ok=True)
    return into


@pytest.fixture(scope="session")
def users_file(tmp_path_factory) -> Path:
    """Two accounts made with the command a user runs: an operator and a viewer."""
    path = tmp_path_factory.mktemp("users") / "dashboard_users.json"
    env = {"MMATS_USERS_FILE": str(path)}
    for name, role in (("alice", "operator"), ("rita", "viewer")):
        done = run("dashboard", "user", "add", name, "--role", role, "--password-stdin",
                   stdin=PASSWORDS[name] + "\n", env=env)
        assert done.returncode == 0, done.stderr
    return path


class Dashboard:
    """``mmats dashboard`` in a subprocess, on a free port; ``url`` once it listens."""

    def __init__(self, folder: Path, users: Path, *extra: str):
        self.folder = folder
        self.config = folder / "paper.yaml"
        self.journal = folder / "journal" / "paper.sqlite"
        env = {**os.environ, "MMATS_USERS_FILE": str(users)}
        self.process = subprocess.Popen(
            [MMATS, "dashboard", "--config", str(self.config), "--port", "0", "--json",
             "--mode", "operator", "--reports", str(folder / "reports"), *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        line = self.process.stdout.readline()
        if not line:
            raise AssertionError(f"the dashboard did not start: {self.process.stderr.read()}")
        self.url = json.loads(line)["url"]

    def stop(self) -> str:
        self.process.terminate()
        try:
            _, errors = self.process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            _, errors = self.process.communicate()
        return errors


@pytest.fixture(scope="module")
def dashboard(replayed, users_file, tmp_path_factory):
    """A dashboard over its own copy of the replay (the tests here act on it)."""
    folder = copy_of(replayed, tmp_path_factory.mktemp("console"))
    server = Dashboard(folder, users_file)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def browser():
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


def log_in(browser, url: str, name: str):
    """A new browser context (its own cookies) logged in as ``name``; returns its page."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.goto(url + "/")
    page.fill("#username", name)
    page.fill("#password", PASSWORDS[name])
    page.click("#login-button")
    page.wait_for_selector("body[data-drawn]")
    return page


def screenshot_dir(tmp_path_factory) -> Path:
    """Where the tests save each view's picture: $MMATS_SCREENSHOTS (the README's come
    from a run with it set to docs/screenshots), else a temporary folder."""
    chosen = os.environ.get("MMATS_SCREENSHOTS")
    path = Path(chosen) if chosen else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path
