"""Dashboard accounts (mmats.console.users) and their commands (mmats.console.user_cli):
salted scrypt hashes, the file's mode, atomicity and damage, the name, role and password
rules, the same work for an unknown name, and ``user add/list/passwd/remove`` run through
a real parser, the ``mmats`` entry point and a terminal."""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import io
import json
import os
import pty
import select
import subprocess
import sys
import termios
import threading
from pathlib import Path

import pytest

from mmats.console import user_cli, users
from mmats.console.users import UsersError

MMATS = str(Path(sys.executable).with_name("mmats"))
PASSWORD = "correct horse battery"


@pytest.fixture
def path(tmp_path) -> Path:
    return tmp_path / "config" / "mmats" / "dashboard_users.json"


def stored(path: Path) -> dict:
    return json.loads(path.read_text())["users"]


def rewrite(path: Path, change) -> None:
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document))


# -- hashing ----------------------------------------------------------------------------------


def test_hashes_are_salted_self_describing_and_verify(path):
    users.add_user("alice", "operator", PASSWORD, path=path)
    users.add_user("bob", "viewer", PASSWORD, path=path)
    hashes = {name: entry["hash"] for name, entry in stored(path).items()}
    assert hashes["alice"] != hashes["bob"]  # same password, another salt
    for encoded in hashes.values():
        kind, n, r, p, salt, key = encoded.split("$")
        assert (kind, int(n), int(r), int(p)) == ("scrypt", 2**15, 8, 1)
        assert len(users._parse_hash(encoded)[0]) == 16
        assert users.verify_password(PASSWORD, encoded)
        assert not users.verify_password(PASSWORD + "!", encoded)
    assert users.hash_password(PASSWORD) != users.hash_password(PASSWORD)


def test_authenticate_accepts_the_password_and_refuses_others(path):
    users.add_user("alice", "operator", PASSWORD, path=path)
    users.add_user("rita", "viewer", "rita-viewer-pw-12", path=path)
    alice = users.authenticate("alice", PASSWORD, path=path)
    assert (alice.name, alice.role, alice.can_act) == ("alice", "operator", True)
    rita = users.authenticate("rita", "rita-viewer-pw-12", path=path)
    assert (rita.role, rita.can_act) == ("viewer", False)
    for name, password in (("alice", "correct horse batter"), ("alice", ""),
                           ("ALICE", PASSWORD), ("rita", PASSWORD), ("nobody", PASSWORD),
                           (None, PASSWORD), ("alice", None), ("alice", PASSWORD * 100)):
        assert users.authenticate(name, password, path=path) is None


def test_a_disabled_account_cannot_log_in(path):
    users.add_user("alice", "operator", PASSWORD, path=path)
    rewrite(path, lambda document: document["users"]["alice"].update(disabled=True))
    assert users.authenticate("alice", PASSWORD, path=path) is None
    assert users.list_users(path=path)[0]["disabled"] is True
    assert users.active_users(path=path) == []


def test_every_verification_spends_one_scrypt_of_the_same_cost(path, monkeypatch):
    """Counted, not timed: an unknown or disabled name, a malformed one, a wrong or an
    absurd password all cost exactly what a right password does."""
    users.add_user("alice", "operator", PASSWORD, path=path)
    users.add_user("off", "viewer", PASSWORD, path=path)
    rewrite(path, lambda document: document["users"]["off"].update(disabled=True))
    calls = []
    real = hashlib.scrypt

    def counting(password, **kwargs):
        calls.append((kwargs["n"], kwargs["r"], kwargs["p"], len(kwargs["salt"])))
        return real(password, **kwargs)

    monkeypatch.setattr(hashlib, "scrypt", counting)
    attempts = [("alice", PASSWORD), ("alice", "wrong password!"), ("nobody", PASSWORD),
                ("off", PASSWORD), ("bad name", PASSWORD), (None, None), ("", ""),
                ("alice", "x" * 5000), ("n" * 500, PASSWORD)]
    for name, password in attempts:
        calls.clear()
        users.authenticate(name, password, path=path)
        assert calls == [(2**15, 8, 1, 16)], (name, calls)
    calls.clear()
    assert users.authenticate("nobody", PASSWORD, path=path.with_name("none.json")) is None
    assert calls == [(2**15, 8, 1, 16)]  # no file yet: the same work too


# -- the file ---------------------------------------------------------------------------------


def test_the_file_is_private_complete_and_leaves_no_temp_files(path):
    users.add_user("alice", "operator", PASSWORD, path=path)
    users.add_user("bob", "viewer", PASSWORD, path=path)
    users.set_password("bob", "another long one", path=path)
    assert users.remove_user("alice", path=path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    assert sorted(p.name for p in path.parent.iterdir()) == [
        ".dashboard_users.json.lock", "dashboard_users.json"]
    document = json.loads(path.read_text())
    assert (document["format"], document["version"]) == ("mmats-users", 1)
    assert set(document["users"]["bob"]) == {"role", "hash", "created", "disabled"}
    assert document["users"]["bob"]["created"].endswith("+00:00")


def test_a_world_readable_file_is_made_private_at_the_next_write(path, caplog):
    users.add_user("alice", "operator", PASSWORD, path=path)
    path.chmod(0o644)
    assert users.list_users(path=path)
    assert "chmod 600" in caplog.text
    users.add_user("bob", "viewer", PASSWORD, path=path)
    assert path.stat().st_mode & 0o777 == 0o600


def test_where_the_file_lives(tmp_path, monkeypatch):
    for name in (users.FILE_ENV, "MMATS_SECRETS_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert users.users_file() == tmp_path / "xdg" / "mmats" / "dashboard_users.json"
    monkeypatch.setenv("MMATS_SECRETS_FILE", str(tmp_path / "vault" / "secrets.enc"))
    assert users.users_file() == tmp_path / "vault" / "dashboard_users.json"
    monkeypatch.setenv(users.FILE_ENV, str(tmp_path / "mine.json"))
    assert users.users_file() == tmp_path / "mine.json"
    assert users.users_file(tmp_path / "given.json") == tmp_path / "given.json"
    users.add_user("alice", "viewer", PASSWORD)
    assert (tmp_path / "mine.json").is_file()


@pytest.mark.parametrize("content, says", [
    ("{not json", "not JSON"),
    ('{"format": "other", "users": {}}', "not an MMATS accounts file"),
    ('{"format": "mmats-users", "version": 1, "users": []}', '"users" is not an object'),
    ('{"format": "mmats-users", "version": 1, "users": {"a": {"role": "viewer"}}}',
     "account 'a': the entry must hold"),
    ('{"format": "mmats-users", "version": 1, "users": {"a": {"role": "admin", "hash": "x",'
     ' "created": "", "disabled": false}}}', "role 'admin'"),
    ('{"format": "mmats-users", "version": 1, "users": {"a": {"role": "viewer", "hash": '
     '"md5$abc", "created": "", "disabled": false}}}', "scrypt$n$r$p$salt$key"),
    ('{"format": "mmats-users", "version": 1, "users": {"a": {"role": "viewer", "hash": '
     '"scrypt$1073741824$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAA", "created": "", "disabled": '
     'false}}}', "out of range"),
])
def test_a_damaged_file_is_named(path, content, says):
    path.parent.mkdir(parents=True)
    path.write_text(content)
    for call in (lambda: users.list_users(path=path),
                 lambda: users.authenticate("a", PASSWORD, path=path),
                 lambda: users.add_user("b", "viewer", PASSWORD, path=path)):
        with pytest.raises(UsersError) as error:
            call()
        assert str(path) in str(error.value) and says in str(error.value)
        assert "damaged" in str(error.value)
    assert path.read_text() == content  # nothing was written over it


def test_a_newer_version_asks_for_an_upgrade(path):
    path.parent.mkdir(parents=True)
    path.write_text('{"format": "mmats-users", "version": 2, "users": {}}')
    with pytest.raises(UsersError, match="version 2 is not 1; upgrade MMATS"):
        users.list_users(path=path)


def test_concurrent_adds_all_survive(path):
    """Each add reads, changes and writes the file under the lock: none is lost."""
    errors = []

    def add(number):
        try:
            users.add_user(f"user{number}", "viewer", PASSWORD, path=path)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(number,)) for number in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert [user["name"] for user in users.list_users(path=path)] == [
        f"user{number}" for number in range(6)]


# -- rules ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a", "alice", "Risk.Manager_2", "x-y", "0", "a" * 64])
def test_good_names(path, name):
    assert users.check_name(name) == name


@pytest.mark.parametrize("name", ["", "-alice", ".alice", "_a", "a b", "a/b", "é", "a" * 65,
                                  "alice\n", None, 7])
def test_bad_names_are_refused_with_the_rule(path, name):
    with pytest.raises(UsersError, match="letters, digits"):
        users.add_user(name, "viewer", PASSWORD, path=path)
    assert not path.exists()


def test_roles_and_passwords_are_checked(path):
    with pytest.raises(UsersError, match="use viewer or operator"):
        users.add_user("alice", "admin", PASSWORD, path=path)
    with pytest.raises(UsersError, match="at least 12 characters") as error:
        users.add_user("alice", "viewer", "eleven-char", path=path)
    assert "eleven-char" not in str(error.value)
    with pytest.raises(UsersError, match="longer than 1024"):
        users.add_user("alice", "viewer", "x" * 1025, path=path)
    assert not path.exists()
    assert users.add_user("alice", "viewer", "twelve-chars", path=path).role == "viewer"


def test_an_existing_name_is_refused_unless_replaced(path):
    users.add_user("alice", "viewer", PASSWORD, path=path)
    with pytest.raises(UsersError, match="'alice' exists already"):
        users.add_user("alice", "operator", "another password", path=path)
    assert users.authenticate("alice", PASSWORD, path=path).role == "viewer"
    users.add_user("alice", "operator", "another password", path=path, replace=True)
    assert users.authenticate("alice", PASSWORD, path=path) is None
    assert users.authenticate("alice", "another password", path=path).role == "operator"


def test_set_password_remove_and_the_stamp(path):
    before = users.add_user("alice", "operator", PASSWORD, path=path)
    signature = users.file_signature(path)
    after = users.set_password("alice", "a brand new password", path=path)
    assert before.stamp and after.stamp != before.stamp
    assert users.file_signature(path) != signature
    assert users.authenticate("alice", PASSWORD, path=path) is None
    assert users.authenticate("alice", "a brand new password", path=path) == after
    assert users.active_users(path=path) == [after]
    with pytest.raises(UsersError, match="no account 'bob'"):
        users.set_password("bob", "a brand new password", path=path)
    assert users.remove_user("alice", path=path) is True
    assert users.remove_user("alice", path=path) is False
    assert users.list_users(path=path) == []
    assert users.file_signature(path.with_name("absent.json")) is None


def test_list_never_shows_a_hash(path):
    users.add_user("alice", "operator", PASSWORD, path=path)
    listed = users.list_users(path=path)
    assert listed == [{"name": "alice", "role": "operator",
                       "created": stored(path)["alice"]["created"], "disabled": False}]


# -- the commands -----------------------------------------------------------------------------


def command(argv, stdin="", *, path, monkeypatch, capsys) -> tuple[int, str, str]:
    """``mmats dashboard user ...`` called in this process, as the dashboard command does."""
    monkeypatch.setenv(users.FILE_ENV, str(path))
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = user_cli.main(argv, prog="mmats dashboard user")
    out, err = capsys.readouterr()
    return code, out, err


def test_user_add_list_passwd_remove(path, monkeypatch, capsys):
    run = lambda argv, stdin="": command(argv, stdin, path=path,  # noqa: E731
                                         monkeypatch=monkeypatch, capsys=capsys)
    assert run(["add", "alice", "--role", "operator", "--password-stdin"], PASSWORD + "\n")[0] == 0
    code, out, _ = run(["add", "rita", "--role", "viewer", "--password-stdin", "--json"],
                       "rita-viewer-pw-12\r\n")
    assert code == 0 and json.loads(out) == {"added": "rita", "role": "viewer",
                                             "file": str(path)}
    assert users.authenticate("rita", "rita-viewer-pw-12", path=path).role == "viewer"
    secrets_on_disk = [entry["hash"] for entry in stored(path).values()]

    code, out, _ = run(["list"])
    assert code == 0 and "2 account(s)" in out and "alice" in out and "viewer" in out
    code, out_json, _ = run(["list", "--json"])
    listed = json.loads(out_json)
    assert listed["file"] == str(path)
    assert [(u["name"], u["role"]) for u in listed["users"]] == [("alice", "operator"),
                                                                 ("rita", "viewer")]
    for text in (out, out_json):
        assert "scrypt" not in text and PASSWORD not in text
        for encoded in secrets_on_disk:
            for part in encoded.split("$")[4:]:
                assert part not in text

    assert run(["passwd", "rita", "--password-stdin"], "a new viewer password\n")[0] == 0
    assert users.authenticate("rita", "a new viewer password", path=path) is not None
    code, out, _ = run(["remove", "rita"])
    assert code == 0 and "removed rita" in out
    code, _, err = run(["remove", "rita"])
    assert code == 1 and err.startswith("error: there is no account 'rita'")
    assert [user["name"] for user in users.list_users(path=path)] == ["alice"]


@pytest.mark.parametrize("argv, stdin, says", [
    (["add", "alice", "--role", "viewer", "--password-stdin"], "short\n", "at least 12"),
    (["add", "alice", "--role", "viewer", "--password-stdin"], "", "exactly one line"),
    (["add", "alice", "--role", "viewer", "--password-stdin"], "one password\ntwo\n",
     "exactly one line"),
    (["add", "bad name", "--role", "viewer", "--password-stdin"], PASSWORD, "not valid"),
    (["add", "taken", "--role", "viewer", "--password-stdin"], PASSWORD, "--replace"),
    (["passwd", "nobody", "--password-stdin"], PASSWORD, "no account 'nobody'"),
    (["passwd", "taken"], "", "no terminal"),
])
def test_bad_input_is_one_line_and_exit_2(path, monkeypatch, capsys, argv, stdin, says):
    users.add_user("taken", "viewer", PASSWORD, path=path)
    before = path.read_bytes()
    code, out, err = command(argv, stdin, path=path, monkeypatch=monkeypatch, capsys=capsys)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and says in err
    assert "Traceback" not in err and PASSWORD not in err
    assert path.read_bytes() == before


def test_a_bad_role_is_a_usage_error(path, monkeypatch, capsys):
    with pytest.raises(SystemExit) as exit_:
        command(["add", "alice", "--role", "admin", "--password-stdin"], PASSWORD,
                path=path, monkeypatch=monkeypatch, capsys=capsys)
    assert exit_.value.code == 2
    assert "invalid choice: 'admin'" in capsys.readouterr().err


def test_the_commands_mount_under_another_parser(path, monkeypatch, capsys):
    """add_user_commands: how another command (``mmats dashboard``) can mount ``user``."""
    parser = argparse.ArgumentParser(prog="mmats dashboard")
    user = user_cli.add_user_commands(parser.add_subparsers(dest="command"))
    assert "--password-stdin" in user.epilog
    monkeypatch.setenv(users.FILE_ENV, str(path))
    monkeypatch.setattr(sys, "stdin", io.StringIO(PASSWORD + "\n"))
    args = parser.parse_args(["user", "add", "alice", "--role", "viewer", "--password-stdin"])
    assert user_cli.run_user_command(args) == 0
    assert user_cli.run_user_command(parser.parse_args(["user", "list", "--json"])) == 0
    out = capsys.readouterr().out
    assert json.loads(out.split("\n", 1)[1])["users"][0]["name"] == "alice"


def test_the_mmats_command_adds_an_account(path):
    env = {**os.environ, users.FILE_ENV: str(path)}
    done = subprocess.run([MMATS, "dashboard", "user", "add", "ci", "--role", "viewer",
                           "--password-stdin"], input=PASSWORD + "\n", capture_output=True,
                          text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert users.authenticate("ci", PASSWORD, path=path).name == "ci"
    done = subprocess.run([MMATS, "dashboard", "user", "passwd", "ci"], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "--password-stdin" in done.stderr


def at_a_terminal(argv, answers, path) -> tuple[int, bytes]:
    """Run ``mmats ...`` with a pseudo-terminal as its controlling terminal, answering
    each prompt (bytes before it, bytes to type) in turn; ``(exit code, what it showed)``."""
    master, slave = pty.openpty()

    def own_terminal():
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    process = subprocess.Popen([MMATS, *argv], stdin=slave, stdout=slave, stderr=slave,
                               preexec_fn=own_terminal,
                               env={**os.environ, users.FILE_ENV: str(path)})
    os.close(slave)
    shown = b""
    try:
        for prompt, typed in answers:
            while prompt not in shown:
                ready, _, _ = select.select([master], [], [], 30)
                assert ready, f"no prompt {prompt!r}: {shown!r}"
                shown += os.read(master, 1024)
            os.write(master, typed)
        code = process.wait(timeout=60)
        while select.select([master], [], [], 0.5)[0]:
            chunk = os.read(master, 1024)
            if not chunk:
                break
            shown += chunk
    except OSError:  # the terminal closed with the process
        code = process.wait(timeout=60)
    finally:
        os.close(master)
    return code, shown


def test_the_password_is_asked_twice_at_the_terminal_without_echo(path):
    typed = PASSWORD.encode() + b"\n"
    code, shown = at_a_terminal(["dashboard", "user", "add", "bob", "--role", "operator"],
                                [(b"Password for bob: ", typed), (b"Repeat it: ", typed)],
                                path)
    assert code == 0, shown
    assert b"added operator bob" in shown and PASSWORD.encode() not in shown
    assert users.authenticate("bob", PASSWORD, path=path).can_act

    code, shown = at_a_terminal(["dashboard", "user", "passwd", "bob"],
                                [(b"New password for bob: ", b"first new password\n"),
                                 (b"Repeat it: ", b"other new password\n")], path)
    assert code == 2 and b"the two passwords differ" in shown
    assert users.authenticate("bob", PASSWORD, path=path) is not None
