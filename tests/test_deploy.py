"""The deployment kit (deploy/): systemd units, install.sh, the image and compose file.

systemd cannot run here (no init of its own in this machine), so the units are checked
three ways: ``systemd-analyze verify`` over every unit, with the install prefix pointed at
a real ``mmats``; their settings read one by one; and, in the slow tests, their
``ExecStart=`` run as systemd would run it (the instance for ``%i``, ``Environment=``
then ``EnvironmentFile=``, ``$VAR`` split into words, the state and cache folders made,
the notify socket and ``$WATCHDOG_USEC`` given), on a prefix installed offline by the
image's own build stage replayed outside a container (its COPY lines, then its RUN of
``deploy/install.sh``). No container engine is needed: the Dockerfile and the compose
file are parsed, and their health checks run against real servers.
"""

import json
import os
import re
import shlex
import shutil
import signal
import site
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from mmats.live.health import HealthServer

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
UNITS = DEPLOY / "systemd"
SERVICES = ("mmats-runner@.service", "mmats-dashboard@.service", "mmats-tick@.service")
TIMER = "mmats-tick@.timer"
PREFIX = "/opt/mmats"
MMATS = Path(sys.executable).parent / "mmats"  # this environment's command
SECRET_NAME = re.compile(r"KEY|SECRET|TOKEN|PASSPHRASE|PASSWORD", re.I)
SECRET_VALUE = re.compile(r"(?<![\w/.-])[A-Za-z0-9_+=-]{32,}(?![\w/.-])")
# NAME=value or NAME: value anywhere in a line (Environment=A=b finds A=b too)
ASSIGNMENT = re.compile(r"(?<![\w.-])(?=([A-Za-z_][\w.-]*)\s*[=:]\s*(\"[^\"]*\"|'[^']*'|[^\s\"']*))")


# -- reading the files --------------------------------------------------------------------------


def unit(name: str) -> dict[str, list[tuple[str, str]]]:
    """A unit file as {section: [(key, value), ...]} in file order (comments dropped)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    for line in (UNITS / name).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), [])
            continue
        key, _, value = line.partition("=")
        current.append((key, value))
    return sections


def values(name: str, section: str, key: str) -> list[str]:
    return [v for k, v in unit(name).get(section, []) if k == key]


def one(name: str, section: str, key: str) -> str:
    (value,) = values(name, section, key)
    return value


def environment_of(name: str) -> dict[str, str]:
    """The unit's ``Environment=`` assignments, in order (later ones win)."""
    assignments = {}
    for value in values(name, "Service", "Environment"):
        for word in shlex.split(value):
            key, _, setting = word.partition("=")
            assignments[key] = setting
    return assignments


def dockerfile() -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (INSTRUCTION, arguments), continuations joined."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1])
            for line in lines if line and not line.startswith("#")]


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def default_in_help(command: list[str], option: str) -> int:
    """The default an option's help text gives, e.g. ``(8787; ...)`` or ``(default 8050;``."""
    text = subprocess.run([str(MMATS), *command, "--help"], capture_output=True, text=True,
                          check=True).stdout
    help_of = re.search(rf"^\s+{option}(?: [A-Z_]+)?\s+(.+?)(?=^\s+-|\Z)", text,
                        flags=re.M | re.S).group(1)
    return int(re.search(r"\((?:default )?(\d+)[;)]", help_of).group(1))


def secret_findings(text: str) -> list[str]:
    """Key-looking values in a deployment file: an assignment to a name that says key,
    secret, token, passphrase or password (other than empty, a ``$reference`` or a path),
    and any long random-looking token, even in a comment."""
    findings = [token for token in SECRET_VALUE.findall(text)
                if re.search(r"\d", token) and re.search(r"[A-Za-z]", token)]
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("#"):
            continue
        for name, value in ASSIGNMENT.findall(line):
            value = value.strip("\"'")
            if (SECRET_NAME.search(name) and re.search(r"[A-Za-z0-9]", value)
                    and not value.startswith(("$", "/", "./"))):  # a reference, a path
                findings.append(f"{name}={value}")
    return findings


# -- systemd units -------------------------------------------------------------------------------


def _verify(folder: Path) -> subprocess.CompletedProcess:
    """``systemd-analyze verify`` over the dev instance of every unit in ``folder``."""
    analyze = shutil.which("systemd-analyze") or "/usr/bin/systemd-analyze"
    instances = [str(folder / name.replace("@.", "@dev.")) for name in (*SERVICES, TIMER)]
    return subprocess.run([analyze, "verify", *instances], capture_output=True, text=True,
                          timeout=120)


def _units_with_prefix(folder: Path, venv: str) -> Path:
    folder.mkdir()
    for name in (*SERVICES, TIMER):
        text = (UNITS / name).read_text().replace(f"{PREFIX}/venv", venv)
        (folder / name).write_text(text)
    return folder


def test_systemd_analyze_verifies_every_unit_without_a_word(tmp_path):
    # ExecStart must name an executable: the units' /opt/mmats/venv becomes this
    # environment, whose bin/mmats is the command install.sh puts there. Nothing is
    # filtered from the output: a missing user (mmats) is not reported by verify.
    assert MMATS.is_file(), MMATS
    done = _verify(_units_with_prefix(tmp_path / "units", sys.prefix))
    assert done.returncode == 0 and not done.stdout.strip() and not done.stderr.strip(), (
        done.stdout, done.stderr)


def test_the_verify_harness_fails_a_broken_unit(tmp_path):
    folder = _units_with_prefix(tmp_path / "units", str(tmp_path / "no-such-venv"))
    done = _verify(folder)
    assert done.returncode != 0 and "is not executable" in done.stderr, done.stderr
    runner = folder / SERVICES[0]
    good = _units_with_prefix(tmp_path / "good", sys.prefix)
    runner.write_text((good / SERVICES[0]).read_text().replace("Type=notify", "Type=notfy"))
    for name in SERVICES[1:] + (TIMER,):
        (folder / name).write_text((good / name).read_text())
    done = _verify(folder)
    assert "Failed to parse service type" in done.stderr, done.stderr


def test_the_runner_unit_is_a_watched_notify_service():
    name = "mmats-runner@.service"
    assert one(name, "Service", "Type") == "notify"
    assert one(name, "Service", "NotifyAccess") == "main"
    assert one(name, "Service", "WatchdogSec") == "30"
    assert one(name, "Service", "Restart") in ("always", "on-failure")
    assert one(name, "Service", "RestartSec") == "2"
    assert one(name, "Service", "KillSignal") == "SIGTERM"
    # a catch-up tick must be able to commit after SIGTERM
    assert int(one(name, "Service", "TimeoutStopSec")) >= 60
    interval, burst = one(name, "Unit", "StartLimitIntervalSec"), one(name, "Unit",
                                                                          "StartLimitBurst")
    assert 60 <= int(interval) <= 600 and 3 <= int(burst) <= 10
    argv = shlex.split(one(name, "Service", "ExecStart"))
    assert argv[:5] == [f"{PREFIX}/venv/bin/mmats", "live", "--config",
                        "/etc/mmats/%i/config.yaml", "--serve"], argv
    assert "--once" not in argv and "--loop" not in argv


def test_every_service_runs_as_mmats_with_the_same_settings_and_hardening():
    hardening = {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
                 "PrivateTmp": "yes", "CapabilityBoundingSet": ""}
    shared = None
    for name in SERVICES:
        service = dict(unit(name)["Service"])
        assert service["User"] == service["Group"] == "mmats", name
        for key, value in hardening.items():
            assert service[key] == value, (name, key)
        assert "MemoryDenyWriteExecute" not in service, "numba writes executable memory"
        assert values(name, "Service", "EnvironmentFile") == ["-/etc/mmats/%i/mmats.env"]
        settings = {k: v for k, v in environment_of(name).items() if not k.endswith("ARGS")}
        keys = ("NoNewPrivileges", "ProtectSystem", "ProtectHome", "PrivateTmp",
                "PrivateDevices", "RestrictAddressFamilies", "RestrictNamespaces",
                "ProtectProc", "RemoveIPC", "SystemCallArchitectures", "UMask")
        mine = (settings, {key: service.get(key) for key in keys})
        assert shared is None or mine == shared, (name, mine, shared)
        shared = mine
    assert shared[0]["PYTHONUNBUFFERED"] == "1"  # journald sees each line as it is printed


def test_the_writable_folders_are_the_environments_own():
    for name in SERVICES:
        text = (UNITS / name).read_text()
        for path in re.findall(r"/var/(?:lib|cache)/mmats[^\s]*", text):
            assert re.match(r"/var/(lib|cache)/mmats/%i(/|$)", path), (name, path)
        for path in re.findall(r"/etc/mmats[^\s]*", text):
            assert path.startswith("/etc/mmats/%i/"), (name, path)
        assert all(re.match(rf"{PREFIX}(/|\)|$)", path) for path in
                   re.findall(r"/opt/[^\s]*", text)), name  # one install prefix
        state = " ".join(values(name, "Service", "StateDirectory")).split()
        assert "mmats/%i" in state and "mmats/%i/journal" in state, name
        writable = " ".join(values(name, "Service", "ReadWritePaths")).split()
        assert "/var/lib/mmats/%i/journal" in writable, name  # the dashboard journals too
        if name != "mmats-dashboard@.service":
            assert {"/var/lib/mmats/%i/data", "/var/lib/mmats/%i/reports"} <= set(writable)
    read_only = " ".join(values("mmats-dashboard@.service", "Service", "ReadOnlyPaths"))
    assert set(read_only.split()) == {"-/var/lib/mmats/%i/data", "-/var/lib/mmats/%i/reports"}


def test_the_timer_ticks_every_minute_and_catches_up():
    assert one(TIMER, "Timer", "Persistent") == "true"
    assert one(TIMER, "Timer", "AccuracySec") == "1s"
    calendar = one(TIMER, "Timer", "OnCalendar")
    # no Unit=: it starts the service of its own name, which must exist and be one tick
    assert not values(TIMER, "Timer", "Unit")
    tick = "mmats-tick@.service"
    assert one(tick, "Service", "Type") == "oneshot"
    assert shlex.split(one(tick, "Service", "ExecStart"))[:6] == [
        f"{PREFIX}/venv/bin/mmats", "live", "--config", "/etc/mmats/%i/config.yaml",
        "--once", "$MMATS_ARGS"]
    analyze = shutil.which("systemd-analyze") or "/usr/bin/systemd-analyze"
    done = subprocess.run([analyze, "calendar", "--iterations=3", calendar],
                          capture_output=True, text=True, check=True,
                          env={**os.environ, "TZ": "UTC"})
    elapses = re.findall(r"(?:Next elapse|Iter\. #\d+): \S+ (\S+ \d\d:\d\d:\d\d) UTC",
                         done.stdout)
    assert len(elapses) == 3, done.stdout
    stamps = [time.mktime(time.strptime(e, "%Y-%m-%d %H:%M:%S")) for e in elapses]
    assert [b - a for a, b in zip(stamps, stamps[1:], strict=False)] == [60, 60]
    assert all(e.endswith(":05") for e in elapses)  # a few seconds after each close


def test_no_deployment_file_holds_a_key():
    files = [*UNITS.iterdir(), *DEPLOY.glob("compose*.yaml"), DEPLOY / "Dockerfile",
             DEPLOY / "install.sh", DEPLOY / "mmats-env"]
    for path in files:
        assert secret_findings(path.read_text()) == [], path
    for name in SERVICES:  # not even empty: the passphrase belongs in the environment file
        assert not [k for k in environment_of(name)
                    if re.search(r"PASSPHRASE|TOKEN|PASSWORD|API_KEY|SECRET_KEY", k)], name


def test_the_key_finder_finds_keys():
    assert secret_findings("Environment=MMATS_BINANCE_API_KEY=abc") == [
        "MMATS_BINANCE_API_KEY=abc"]
    assert secret_findings('MMATS_SECRETS_PASSPHRASE="hunter2"')
    assert secret_findings("# old key: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822c")
    assert secret_findings("MMATS_SECRETS_PASSPHRASE: ${MMATS_SECRETS_PASSPHRASE:-}") == []
    assert secret_findings("#MMATS_SECRETS_PASSPHRASE=\"...\"") == []


# -- the image and compose -----------------------------------------------------------------------


def test_the_image_installs_with_the_script_ci_runs():
    instructions = dockerfile()
    stages = [args for op, args in instructions if op == "FROM"]
    assert stages and all(s.startswith("python:3.11-slim") for s in stages), stages
    copied = {}
    for op, args in instructions:
        if op == "COPY" and not args.startswith("--from"):
            *sources, target = args.split()
            for source in sources:
                copied[source] = target
    runs = [args for op, args in instructions if op == "RUN"]
    installs = [r for r in runs if "install.sh" in r]
    assert len(installs) == 1, runs
    script = shlex.split(installs[0])[0]
    # the RUN calls the very file deploy/install.sh, copied into the image
    assert "deploy/install.sh" in copied
    target = copied["deploy/install.sh"]
    assert script == (target + "install.sh" if target.endswith("/") else target), script
    assert shlex.split(installs[0])[1] == PREFIX
    ci = (REPO / ".ci" / "run").read_text()
    assert re.search(r"^[^#\n]*deploy/install\.sh", ci, flags=re.M), "CI runs install.sh too"
    # everything the build copies gets through the ignore file beside the Dockerfile
    allowed = {line[1:] for line in (DEPLOY / "Dockerfile.dockerignore").read_text()
               .splitlines() if line.startswith("!")}
    assert set(copied) <= allowed, set(copied) - allowed
    for source in copied:
        assert (REPO / source).exists(), source


def test_the_image_runs_the_runner_as_a_user_with_volumes():
    instructions = dockerfile()
    final = instructions[max(i for i, (op, _) in enumerate(instructions) if op == "FROM"):]
    ops = dict(final)
    assert ops["USER"] not in ("root", "0")
    assert f"--from=build {PREFIX} {PREFIX}" in [a for op, a in final if op == "COPY"]
    entry, command = json.loads(ops["ENTRYPOINT"]), json.loads(ops["CMD"])
    assert entry + command == ["mmats", "live", "--config", "/etc/mmats/config.yaml",
                               "--serve"]
    volumes = json.loads(ops["VOLUME"])
    for folder in ("data", "journal", "reports"):
        assert f"/var/lib/mmats/{folder}" in volumes
    assert ops["STOPSIGNAL"] == "SIGTERM"


def test_the_healthchecks_ask_the_ports_the_commands_listen_on():
    health = dict(dockerfile())["HEALTHCHECK"]
    command = json.loads(health.split(" CMD ", 1)[1])
    runner_port = default_in_help(["live"], "--health-port")
    dashboard_port = default_in_help(["dashboard"], "--port")
    assert f"http://127.0.0.1:{runner_port}/health" in command[-1], command
    services = compose()["services"]
    assert services["runner"]["healthcheck"]["test"] == ["CMD", *command]
    assert f"http://127.0.0.1:{dashboard_port}/login" in \
        services["dashboard"]["healthcheck"]["test"][-1]
    assert services["dashboard"]["ports"] == [f"127.0.0.1:${{MMATS_DASHBOARD_PORT:-"
                                              f"{dashboard_port}}}:{dashboard_port}"]


def _run_check(command: list[str], port: int) -> int:
    """A health check command of the image, pointed at ``port``."""
    argv = [sys.executable if word == "python" else re.sub(r":\d+/", f":{port}/", word)
            for word in command]
    return subprocess.run(argv, capture_output=True, timeout=30).returncode


def test_the_image_healthcheck_passes_ok_and_degraded_and_fails_down():
    command = json.loads(dict(dockerfile())["HEALTHCHECK"].split(" CMD ", 1)[1])
    answer = {"status": "ok"}
    server = HealthServer(lambda: dict(answer), port=0).start()
    try:
        assert _run_check(command, server.port) == 0
        answer["status"] = "degraded"
        assert _run_check(command, server.port) == 0
        answer["status"] = "down"
        assert _run_check(command, server.port) != 0
    finally:
        server.stop()
    assert _run_check(command, server.port) != 0  # nothing listening


def test_compose_runs_runner_and_dashboard_on_shared_volumes():
    document = compose()
    services = document["services"]
    assert set(services) == {"runner", "dashboard"}
    declared = set(document["volumes"])
    mounts = {}
    for name, service in services.items():
        assert service["restart"] in ("unless-stopped", "always"), name
        assert service["healthcheck"]["test"][0] == "CMD", name
        assert service["build"]["dockerfile"] == "deploy/Dockerfile"
        assert (DEPLOY / service["build"]["context"] / "deploy" / "Dockerfile").is_file()
        mounts[name] = {}
        for volume in service["volumes"]:
            source, target, mode = re.fullmatch(r"(\$\{[^}]*\}|[^:]+):([^:]+)(?::(\w+))?",
                                                volume).groups()
            mounts[name][target] = (source, [mode] if mode else [])
            assert source in declared or source.startswith("${MMATS_CONFIG"), volume
    runner, dashboard = mounts["runner"], mounts["dashboard"]
    for folder in ("data", "journal", "reports"):
        target = f"/var/lib/mmats/{folder}"
        assert runner[target] == (folder, []), folder
        assert dashboard[target][0] == folder
    # read-only where it only reads; the journal it writes (logins, actions, kills)
    assert dashboard["/var/lib/mmats/data"][1] == ["ro"]
    assert dashboard["/var/lib/mmats/reports"][1] == ["ro"]
    assert dashboard["/var/lib/mmats/journal"][1] == []
    assert runner["/etc/mmats/config.yaml"][1] == ["ro"]
    command = services["runner"]["command"]
    assert command == json.loads(dict(dockerfile())["CMD"])
    assert services["dashboard"]["command"][:3] == ["dashboard", "--config",
                                                    "/etc/mmats/config.yaml"]
    sample = yaml.safe_load((DEPLOY / "compose.sample.yaml").read_text())["services"]
    assert set(sample) == {"runner"}  # the rehearsal only adds a clock to the runner
    assert sample["runner"]["command"] == [*command, "--clock", "2018-01-20@60"]


# -- install.sh ---------------------------------------------------------------------------------


def test_the_scripts_parse():
    for script in (DEPLOY / "install.sh", DEPLOY / "mmats-env", REPO / ".ci" / "run"):
        done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert done.returncode == 0, (script, done.stderr)
        assert os.access(script, os.X_OK) or script.name == "run", script


def _fake_prefix(folder: Path, live_help: str) -> Path:
    """An install whose ``mmats live --help`` prints ``live_help`` and whose python is
    this environment's (which imports mmats from the source tree)."""
    bin_ = folder / "venv" / "bin"
    bin_.mkdir(parents=True)
    (bin_ / "mmats").write_text(f"#!/bin/sh\necho '{live_help}'\n")
    (bin_ / "mmats").chmod(0o755)
    (bin_ / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    (bin_ / "python").chmod(0o755)
    return folder


def test_the_smoke_check_refuses_a_runner_without_serve(tmp_path):
    done = subprocess.run([str(DEPLOY / "install.sh"), "--check",
                           str(_fake_prefix(tmp_path / "old", "usage: --once --loop"))],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "does not list --serve" in done.stderr, done.stderr


def test_the_smoke_check_refuses_mmats_from_a_source_tree(tmp_path):
    done = subprocess.run([str(DEPLOY / "install.sh"), "--check",
                           str(_fake_prefix(tmp_path / "clone", "usage: --serve"))],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "mmats is imported from" in done.stderr, done.stderr


# -- the slow part: install offline, then run each unit's command as systemd would ---------------


def _build_stage(root: Path) -> tuple[Path, list[str]]:
    """The image's build stage replayed under ``root``: each COPY of the first stage
    copies the same files from this tree to ``root`` + its target, and the RUN that
    calls install.sh comes back as argv with its paths under ``root`` too."""
    instructions = dockerfile()
    second = [i for i, (op, _) in enumerate(instructions) if op == "FROM"][1]
    argv = None
    for op, args in instructions[:second]:
        if op == "COPY":
            *sources, target = args.split()
            for source in sources:
                into = root / target.lstrip("/")
                into = into / Path(source).name if target.endswith("/") else into
                into.parent.mkdir(parents=True, exist_ok=True)
                if (REPO / source).is_dir():
                    shutil.copytree(REPO / source, into,
                                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
                else:
                    shutil.copy2(REPO / source, into)
        elif op == "RUN" and "install.sh" in args:
            argv = [str(root / word.lstrip("/")) if word.startswith("/") else word
                    for word in shlex.split(args)]
    return root / PREFIX.lstrip("/"), argv


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The image's build stage, run offline: its COPY lines copy the files they name (and
    only those) and its RUN runs ``deploy/install.sh /opt/mmats /src``, all under a
    temporary root. So that pip needs no index, the environment is made first, seeing
    this one's packages through a path entry (as tests/test_wheel.py does: Python does not
    scan it for .pth files, so this environment's editable MMATS stays invisible);
    install.sh keeps it, installs MMATS from the copied tree and runs its smoke check."""
    root = tmp_path_factory.mktemp("image")
    prefix, argv = _build_stage(root)
    # without pip of its own: pip and setuptools come from here too (the venv's bundled
    # setuptools is too old to build a wheel)
    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", prefix / "venv"],
                   check=True)
    (purelib,) = (prefix / "venv" / "lib").glob("python3*/site-packages")
    (purelib / "_outer_env.pth").write_text(site.getsitepackages()[0] + "\n")
    env = {**os.environ, "MMATS_PIP_OPTIONS": "--no-index --no-build-isolation"}
    done = subprocess.run(argv, capture_output=True, text=True, timeout=900, env=env,
                          cwd=tmp_path_factory.mktemp("cwd"))
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    assert f"installing MMATS from {root / 'src'} into {prefix}" in done.stdout
    assert "keeping the environment" in done.stdout
    assert "smoke check passed" in done.stdout
    return prefix


class Machine:
    """The folders a unit sees (/etc/mmats, /var/lib/mmats, /var/cache/mmats, the prefix),
    mapped into a temporary folder, and a runner of a unit's command as systemd runs it."""

    def __init__(self, root: Path, prefix: Path) -> None:
        self.root, self.prefix = root, prefix
        self.paths = {PREFIX: str(prefix), "/etc/mmats": str(root / "etc"),
                      "/var/lib/mmats": str(root / "state"),
                      "/var/cache/mmats": str(root / "cache")}

    def map(self, text: str, instance: str) -> str:
        text = text.replace("%i", instance)
        for unit_path, here in self.paths.items():
            text = text.replace(unit_path, here)
        return text

    def command(self, name: str, instance: str) -> tuple[list[str], dict, str]:
        """(argv, environment, working folder) of unit ``name`` for ``instance``."""
        env = {"PATH": os.environ["PATH"], "LANG": "C.UTF-8",
               "HOME": str(self.root / "state")}
        env.update({k: self.map(v, instance) for k, v in environment_of(name).items()})
        for file in values(name, "Service", "EnvironmentFile"):
            path = Path(self.map(file.lstrip("-"), instance))
            if path.exists() or not file.startswith("-"):
                for line in path.read_text().splitlines():
                    if line.strip() and not line.lstrip().startswith("#"):
                        key, _, value = line.partition("=")
                        env[key.strip()] = " ".join(shlex.split(value))
        for key in ("StateDirectory", "CacheDirectory"):
            base = self.root / ("state" if key == "StateDirectory" else "cache")
            for folder in " ".join(values(name, "Service", key)).split():
                (base / self.map(folder, instance).removeprefix("mmats/")).mkdir(
                    parents=True, exist_ok=True)
        argv = []
        for word in shlex.split(self.map(one(name, "Service", "ExecStart"), instance)):
            if word.startswith("$") and not word.startswith("${"):
                argv.extend(env.get(word[1:], "").split())  # systemd: "$VAR" is words
            else:
                argv.append(word)
        return argv, env, self.map(one(name, "Service", "WorkingDirectory"), instance)


class NotifySocket:
    """systemd's end of sd_notify: a datagram socket that keeps what it hears, and when."""

    def __init__(self) -> None:
        self.folder = tempfile.mkdtemp(prefix="sd-", dir="/tmp")  # AF_UNIX paths are short
        self.path = os.path.join(self.folder, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.heard: list[tuple[float, str]] = []
        self._running = True
        self._thread = threading.Thread(target=self._listen, daemon=True)
        self._thread.start()

    def _listen(self) -> None:
        while self._running:
            try:
                self.heard.append((time.monotonic(), self.sock.recv(4096).decode()))
            except (TimeoutError, OSError):
                continue

    def times(self, line: str) -> list[float]:
        return [at for at, message in self.heard if line in message.split("\n")]

    def close(self) -> None:
        self._running = False
        self._thread.join(2)
        self.sock.close()
        shutil.rmtree(self.folder)


def _wait(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def readme_commands() -> list[str]:
    """The shell lines of the README's section "Run it for real", continuations joined."""
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Run it for real\n", 1)[1].split("\n## ", 1)[0]
    lines = []
    for block in re.findall(r"```bash\n(.+?)\n\s*```", section, flags=re.S):
        lines += [line.strip() for line in re.sub(r"\\\n\s*", "", block).splitlines()]
    return lines


@pytest.fixture(scope="module")
def machine(installed, tmp_path_factory) -> Machine:
    """Environment dev set up by the README's own commands, its paths mapped: the sample
    paper configuration with its journal under /var/lib/mmats/dev and the install's
    sample candles, and the example environment file with the rehearsal clock; then the
    test's own lines at its end (later lines win): a passphrase, and ports chosen by the
    system, since other tests may hold 8787 and 8050."""
    machine = Machine(tmp_path_factory.mktemp("machine"), installed)
    etc = Path(machine.map("/etc/mmats/dev", "dev"))
    etc.mkdir(parents=True)
    shutil.copy(UNITS / "mmats.env.example", etc / "mmats.env")
    steps = [line for line in readme_commands() if line.startswith("sed ") and (
        "> /etc/mmats/dev/config.yaml" in line and "paper_multi_market" in line
        or "/etc/mmats/dev/mmats.env" in line and "--clock" in line)]
    assert len(steps) == 2, readme_commands()
    for step in steps:
        subprocess.run(["bash", "-c", machine.map(step, "dev")], cwd=REPO, check=True)
    assert 'MMATS_SERVE_ARGS="--clock 2018-01-20@60"' in (etc / "mmats.env").read_text()
    with open(etc / "mmats.env", "a") as settings:
        settings.write('MMATS_SECRETS_PASSPHRASE="the deploy test\'s own passphrase"\n'
                       'MMATS_SERVE_ARGS="--health-port 0 --clock 2018-01-11@60"\n'
                       'MMATS_DASHBOARD_ARGS="--port 0 --json"\n')
    return machine


@pytest.mark.slow
def test_install_sh_leaves_a_prefix_the_units_use(installed):
    assert (installed / "venv" / "bin" / "mmats").is_file()
    assert list((installed / "sample").glob("bittrex/*.parquet"))  # data_root of the sample
    assert os.access(installed / "bin" / "mmats-env", os.X_OK)


@pytest.mark.slow
def test_mmats_env_gives_the_units_environment(machine):
    argv, unit_env, _ = machine.command("mmats-runner@.service", "dev")
    fake = machine.root / "fake" / "bin"
    fake.mkdir(parents=True)
    shutil.copy(machine.prefix / "bin" / "mmats-env", fake / "mmats-env")
    (fake.parent / "venv" / "bin").mkdir(parents=True)
    printer = fake.parent / "venv" / "bin" / "mmats"
    printer.write_text(f"#!{sys.executable}\nimport json, os, sys\n"
                       "print(json.dumps({'argv': sys.argv[1:], 'env': dict(os.environ)}))\n")
    printer.chmod(0o755)
    env = {**os.environ, "MMATS_ETC": machine.paths["/etc/mmats"],
           "MMATS_STATE": machine.paths["/var/lib/mmats"],
           "MMATS_CACHE": machine.paths["/var/cache/mmats"]}
    done = subprocess.run([str(fake / "mmats-env"), "dev", "keys", "list"], env=env,
                          capture_output=True, text=True, check=True)
    seen = json.loads(done.stdout)
    assert seen["argv"] == ["keys", "list"]
    for key in ("PYTHONUNBUFFERED", "MMATS_SECRETS_FILE", "MMATS_CACHE_DIR", "NUMBA_CACHE_DIR",
                "MPLCONFIGDIR", "MMATS_SECRETS_PASSPHRASE", "MMATS_SERVE_ARGS",
                "MMATS_ENVIRONMENT"):
        assert seen["env"][key] == unit_env[key], key
    assert seen["env"]["MMATS_ENVIRONMENT"] == "dev"  # `keys set` stores this one's keys
    refused = subprocess.run([str(fake / "mmats-env"), "staging"], capture_output=True,
                             text=True)
    assert refused.returncode == 2 and "usage" in refused.stderr


@pytest.mark.slow
def test_the_runner_unit_serves_under_systemds_notify_protocol(machine):
    argv, env, cwd = machine.command("mmats-runner@.service", "dev")
    watchdog_s = int(one("mmats-runner@.service", "Service", "WatchdogSec"))
    notify = NotifySocket()
    env.update(NOTIFY_SOCKET=notify.path, WATCHDOG_USEC=str(watchdog_s * 1_000_000))
    process = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        first = process.stdout.readline()
        port = int(re.search(r"127\.0\.0\.1:(\d+)/health", first).group(1))
        _wait(lambda: notify.times("READY=1"), 120, "READY=1")

        def after_first_tick():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as a:
                    report = json.loads(a.read())
            except OSError:
                return None
            return report if report.get("ticks", 0) >= 2 else None

        report = _wait(after_first_tick, 600, "two ticks")
        assert report["status"] in ("ok", "degraded") and report["environment"] == "dev"
        assert report["last_tick"]["ok"] is True
        assert report["systemd"] == {"notify": True, "watchdog_s": float(watchdog_s)}
        journal = Path(machine.map("/var/lib/mmats/dev/journal", "dev"))
        assert (journal / "paper_multi_market.sqlite").is_file()
        # pinged well within the watchdog period, through the whole first tick
        pings = [notify.times("READY=1")[0], *notify.times("WATCHDOG=1")]
        assert max(b - a for a, b in zip(pings, pings[1:], strict=False)) < watchdog_s / 2, pings
        process.send_signal(signal.SIGTERM)
        timeout_s = int(one("mmats-runner@.service", "Service", "TimeoutStopSec"))
        output, _ = process.communicate(timeout=timeout_s)
        assert process.returncode == 0, output[-3000:]
        assert notify.times("STOPPING=1")
        assert "unsigned" not in output  # the passphrase came from the environment file
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        notify.close()


@pytest.mark.slow
def test_the_tick_unit_ticks_once(machine):
    argv, env, cwd = machine.command("mmats-tick@.service", "dev")
    argv.extend(["--now", "2018-01-11T06:00:00"])  # the sample's time, not today's
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
    # 1: a fail-safe acted (the stocks sample ends in 2013: stale), which the unit shows
    assert done.returncode in (0, 1), done.stderr[-3000:]
    assert "new bar(s)" in done.stdout, done.stdout[-2000:]


@pytest.mark.slow
def test_the_dashboard_unit_serves_its_login_page(machine):
    user = subprocess.run(
        [str(machine.prefix / "bin" / "mmats-env"), "dev", "dashboard", "user", "add", "me",
         "--role", "operator", "--password-stdin"],
        input="a long enough password\n", capture_output=True, text=True, timeout=120,
        env={**os.environ, "MMATS_ETC": machine.paths["/etc/mmats"],
             "MMATS_STATE": machine.paths["/var/lib/mmats"],
             "MMATS_CACHE": machine.paths["/var/cache/mmats"]})
    assert user.returncode == 0, user.stderr
    argv, env, cwd = machine.command("mmats-dashboard@.service", "dev")
    process = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        # found the account mmats-env made: the units and mmats-env agree on the folder
        url = json.loads(process.stdout.readline())["url"]
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        check = compose()["services"]["dashboard"]["healthcheck"]["test"][1:]
        assert _run_check(check, port) == 0
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=int(one("mmats-dashboard@.service", "Service",
                                     "TimeoutStopSec")))
        # uvicorn shuts down gracefully, then raises the signal again: systemd counts an
        # end by SIGTERM as clean (as it does exit 0), so a stop is not a failure
        assert process.returncode in (0, -signal.SIGTERM), process.stderr.read()[-2000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
