"""mmats.secrets and scripts/keys.py: keyring and encrypted-file backends, redaction."""

import base64
import json
import logging
import os
import stat
import subprocess
import sys
from pathlib import Path

import keyring
import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from keyring.backend import KeyringBackend
from keyring.backends import fail, null
from keyring.errors import KeyringError, PasswordDeleteError

from mmats import secrets
from mmats.secrets import (
    RedactingFilter,
    SecretFields,
    SecretsError,
    SecretsFileCorruptError,
    WrongPassphraseError,
    delete_secret,
    describe_backend,
    get_secret,
    list_fields,
    list_venues,
    redact,
    set_secret,
)

REPO = Path(__file__).resolve().parents[1]
PASSPHRASE = "correct horse battery staple"
BINANCE = {"api_key": "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A",
           "secret": "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"}
OANDA = {"token": "f2a8b4c1d6e3-0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b",
         "account_id": "101-004-1234567-001"}


class MemoryKeyring(KeyringBackend):
    """A real keyring backend that keeps its entries in a dict."""

    priority = 1

    def __init__(self):
        super().__init__()
        self.entries = {}

    def get_password(self, service, username):
        return self.entries.get((service, username))

    def set_password(self, service, username, password):
        self.entries[(service, username)] = password

    def delete_password(self, service, username):
        if (service, username) not in self.entries:
            raise PasswordDeleteError(f"no {service}/{username}")
        del self.entries[(service, username)]


class LockedKeyring(MemoryKeyring):
    """A keyring whose every call fails, as a locked desktop keyring does."""

    def get_password(self, service, username):
        raise KeyringError("Prompt dismissed")

    def set_password(self, service, username, password):
        raise KeyringError("Prompt dismissed")


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No test reads the user's keyring, home folder or environment."""
    for name in (secrets.FILE_ENV, secrets.PASSPHRASE_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    before = keyring.get_keyring()
    keyring.set_keyring(fail.Keyring())
    yield
    keyring.set_keyring(before)


@pytest.fixture
def secrets_file(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "vault" / "secrets.enc"
    monkeypatch.setenv(secrets.FILE_ENV, str(path))
    monkeypatch.setenv(secrets.PASSPHRASE_ENV, PASSPHRASE)
    return path


def all_values():
    return list(BINANCE.values()) + list(OANDA.values())


def shows_no_library_traceback(exc: BaseException) -> bool:
    """True when printing ``exc`` shows no chained exception (e.g. cryptography's InvalidTag)."""
    return exc.__cause__ is None and (exc.__context__ is None or exc.__suppress_context__)


# -- encrypted file -----------------------------------------------------------------------------


def test_encrypted_file_round_trip(secrets_file):
    assert list_venues() == [] and get_secret("binance") is None
    set_secret("binance", BINANCE)
    set_secret("oanda", OANDA)
    assert describe_backend() == f"encrypted file {secrets_file}"
    assert dict(get_secret("binance")) == BINANCE and dict(get_secret("oanda")) == OANDA
    assert list_venues() == ["binance", "oanda"]
    assert list_fields() == {"binance": ["api_key", "secret"], "oanda": ["account_id", "token"]}
    set_secret("binance", {"api_key": "new-key", "secret": "new-secret"})  # replaces
    assert get_secret("binance")["api_key"] == "new-key"
    assert delete_secret("binance") is True and delete_secret("binance") is False
    assert list_venues() == ["oanda"] and get_secret("binance") is None


def test_file_holds_no_plaintext_and_each_write_has_a_new_nonce(secrets_file):
    set_secret("oanda", OANDA)
    first = json.loads(secrets_file.read_bytes())
    set_secret("binance", BINANCE)
    raw = secrets_file.read_bytes()
    second = json.loads(raw)
    for text in all_values() + ["binance", "oanda", "api_key", "account_id", PASSPHRASE]:
        assert text.encode() not in raw
        assert base64.b64encode(text.encode()) not in raw
    assert second["salt"] == first["salt"]  # one salt per file
    assert second["nonce"] != first["nonce"] and len(base64.b64decode(second["nonce"])) == 12
    assert (second["format"], second["version"], second["kdf"]) == ("mmats-secrets", 1, "scrypt")


def test_file_format_binds_the_header_as_associated_data(secrets_file):
    """Decrypt the file with cryptography directly, as the docstring describes it: the key
    is scrypt(passphrase, salt)[:32] and the associated data the canonical header JSON; the
    same ciphertext under a header that claims another version does not decrypt."""
    set_secret("oanda", OANDA)
    document = json.loads(secrets_file.read_bytes())
    header = {k: document[k] for k in ("format", "version", "kdf", "n", "r", "p", "salt")}
    material = Scrypt(salt=base64.b64decode(header["salt"]), length=64, n=header["n"],
                      r=header["r"], p=header["p"]).derive(PASSPHRASE.encode())
    nonce, ciphertext = (base64.b64decode(document[k]) for k in ("nonce", "ciphertext"))

    def aad(h):
        return json.dumps(h, sort_keys=True, separators=(",", ":")).encode()

    plain = AESGCM(material[:32]).decrypt(nonce, ciphertext, aad(header))
    assert json.loads(plain) == {"venues": {"oanda": OANDA}}
    with pytest.raises(InvalidTag):
        AESGCM(material[:32]).decrypt(nonce, ciphertext, aad({**header, "version": 2}))


def test_file_and_folder_permissions(secrets_file):
    old = os.umask(0)  # even a permissive umask gives an owner-only file
    try:
        set_secret("oanda", OANDA)
    finally:
        os.umask(old)
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(secrets_file.parent.stat().st_mode) == 0o700
    leftovers = [p.name for p in secrets_file.parent.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


def test_wrong_passphrase_is_a_clear_error(secrets_file, monkeypatch):
    set_secret("oanda", OANDA)
    before = secrets_file.read_bytes()
    monkeypatch.setenv(secrets.PASSPHRASE_ENV, "Correct horse battery staple")
    for call in (lambda: get_secret("oanda"), list_venues,
                 lambda: set_secret("binance", BINANCE), lambda: delete_secret("oanda")):
        with pytest.raises(WrongPassphraseError) as caught:
            call()
        assert str(secrets_file) in str(caught.value) and "wrong passphrase" in str(caught.value)
        assert shows_no_library_traceback(caught.value)
    assert secrets_file.read_bytes() == before  # nothing rewritten


def test_tampered_or_damaged_file_is_detected(secrets_file):
    set_secret("oanda", OANDA)
    good = secrets_file.read_bytes()
    document = json.loads(good)

    def rewrite(**changes):
        secrets_file.write_text(json.dumps({**document, **changes}))

    ciphertext = bytearray(base64.b64decode(document["ciphertext"]))
    ciphertext[5] ^= 0x01  # one bit of the encrypted venues
    rewrite(ciphertext=base64.b64encode(bytes(ciphertext)).decode())
    with pytest.raises(SecretsFileCorruptError, match="fails its integrity check") as caught:
        get_secret("oanda")
    assert shows_no_library_traceback(caught.value)
    rewrite(nonce=base64.b64encode(b"\0" * 12).decode())
    with pytest.raises(SecretsFileCorruptError, match="integrity"):
        get_secret("oanda")
    rewrite(nonce="not base64!")
    with pytest.raises(SecretsFileCorruptError, match="'nonce' field is damaged"):
        get_secret("oanda")
    rewrite(version=2)
    with pytest.raises(SecretsError, match="version 2 is not 1"):
        get_secret("oanda")
    rewrite(n=2**30)
    with pytest.raises(SecretsFileCorruptError, match="out of range"):
        get_secret("oanda")
    secrets_file.write_bytes(good[: len(good) // 2])
    with pytest.raises(SecretsFileCorruptError, match="not an MMATS secrets file"):
        get_secret("oanda")
    secrets_file.write_bytes(good)
    assert dict(get_secret("oanda")) == OANDA


@pytest.mark.parametrize("changes, says", [
    ({"salt": "!!not base64!!"}, "'salt' field is damaged"),
    ({"salt": "AAAA"}, "salt is not 16 bytes"),
    ({"salt": base64.b64encode(b"\1" * 16).decode()}, "header (salt or scrypt parameters) was "
                                                       "changed"),
    ({"n": 2**14}, "header (salt or scrypt parameters) was changed"),
    ({"n": 2}, "out of range"),
    ({"n": 3 * 2**14}, "out of range"),
    ({"n": 2**62}, "out of range"),
    ({"r": 32, "n": 2**20}, "out of range"),
    ({"p": 2**30}, "out of range"),
    ({"n": True}, "the header is damaged"),
    ({"check": base64.b64encode(b"x").decode()}, "key check is not 32 bytes"),
])
def test_a_damaged_header_is_a_damaged_file_not_a_wrong_passphrase(secrets_file, monkeypatch,
                                                                   changes, says):
    """The scrypt cost is bounded before deriving (a huge one must not hang or eat memory),
    and a header changed within bounds is told from a wrong passphrase by its digest."""
    set_secret("oanda", OANDA)
    document = json.loads(secrets_file.read_text())
    secrets_file.write_text(json.dumps({**document, **changes}))
    derived = []
    monkeypatch.setattr(secrets, "_derive", lambda *args: derived.append(args))
    with pytest.raises(SecretsFileCorruptError) as caught:
        get_secret("oanda")
    message = str(caught.value)
    assert str(secrets_file) in message and "damaged file" in message and says in message
    assert "wrong passphrase" not in message and derived == []
    assert shows_no_library_traceback(caught.value)


def test_a_file_without_a_header_digest_still_opens(secrets_file):
    set_secret("oanda", OANDA)
    document = json.loads(secrets_file.read_text())
    del document["header_sha256"]
    secrets_file.write_text(json.dumps(document))
    assert dict(get_secret("oanda")) == OANDA


def test_passphrase_prompt_confirms_a_new_file(secrets_file, monkeypatch):
    monkeypatch.delenv(secrets.PASSPHRASE_ENV)
    answers = iter(["first", "second"])
    monkeypatch.setattr(secrets.getpass, "getpass", lambda prompt, stream=None: next(answers))
    with pytest.raises(SecretsError, match="two passphrases differ"):
        set_secret("oanda", OANDA)
    assert not secrets_file.exists()
    answers = iter(["same", "same", "same"])
    set_secret("oanda", OANDA)
    assert dict(get_secret("oanda")) == OANDA  # third answer: the prompt on reading


def test_headless_machine_falls_back_to_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv(secrets.PASSPHRASE_ENV, PASSPHRASE)
    for backend in (fail.Keyring(), null.Keyring()):
        keyring.set_keyring(backend)
        expected = tmp_path / "config" / "mmats" / "secrets.enc"
        assert describe_backend() == f"encrypted file {expected}"
    set_secret("oanda", OANDA)
    assert expected.is_file() and dict(get_secret("oanda")) == OANDA


# -- keyring ----------------------------------------------------------------------------------


def test_keyring_backend(tmp_path, monkeypatch):
    ring = MemoryKeyring()
    keyring.set_keyring(ring)
    assert describe_backend() == f"OS keyring ({__name__}.MemoryKeyring)"
    set_secret("binance", BINANCE)
    set_secret("oanda", OANDA)
    assert dict(get_secret("oanda")) == OANDA and list_venues() == ["binance", "oanda"]
    assert list_fields()["binance"] == ["api_key", "secret"]
    assert {service for service, _ in ring.entries} == {"mmats"}
    assert json.loads(ring.entries[("mmats", "oanda")]) == {"version": 1, "fields": OANDA}
    assert delete_secret("oanda") is True and delete_secret("oanda") is False
    assert list_venues() == ["binance"] and ("mmats", "oanda") not in ring.entries
    assert not list(tmp_path.rglob("secrets.enc"))  # no file fallback was used
    ring.entries[("mmats", "kraken")] = "hunter2"  # written by something else
    with pytest.raises(SecretsError, match="not written by MMATS") as caught:
        get_secret("kraken")
    assert "hunter2" not in str(caught.value)


def test_keyring_errors_say_what_to_do():
    keyring.set_keyring(LockedKeyring())
    with pytest.raises(SecretsError, match="Prompt dismissed.*MMATS_SECRETS_FILE"):
        set_secret("binance", BINANCE)
    with pytest.raises(SecretsError, match="cannot read"):
        get_secret("binance")


def test_names_and_values_are_checked_without_showing_values(secrets_file):
    for venue in ("", "../etc", "_hidden", "a/b", "x" * 65, None):
        with pytest.raises(SecretsError, match="venue name"):
            set_secret(venue, BINANCE)
    with pytest.raises(SecretsError, match="non-empty dict"):
        set_secret("binance", {})
    with pytest.raises(SecretsError, match="field name"):
        set_secret("binance", {"api key": "x"})
    with pytest.raises(SecretsError) as caught:
        set_secret("binance", {"api_key": 1234567890123, "secret": "s"})
    assert "1234567890123" not in str(caught.value)
    assert not secrets_file.exists()


# -- keeping secrets out of output ---------------------------------------------------------------


def test_secret_fields_repr_masks_values():
    fields = SecretFields(BINANCE)
    for text in (repr(fields), str(fields), f"{fields}", repr([fields])):
        assert BINANCE["secret"] not in text and "'secret': '***'" in text
    assert fields["secret"] == BINANCE["secret"] and dict(fields) == BINANCE


def test_redact():
    url_form = "a+b/c=d"
    text = (f"auth failed for {OANDA['token']} on {OANDA['account_id']}; "
            f"sig=a%2Bb%2Fc%3Dd raw={url_form}")
    out = redact(text, [OANDA, url_form])
    assert out == "auth failed for *** on ***; sig=*** raw=***"
    # A secret containing another is masked whole, not as a fragment.
    assert redact("key=abcdef", ["abc", "abcdef"]) == "key=***"
    assert redact("nothing here", {}) == "nothing here"
    with pytest.raises(TypeError):
        redact("x", 42)


def test_one_redaction_helper_masks_known_values_and_url_credentials():
    """mmats.redact.redact is the one helper: known values, and credentials by their place
    in a URL even when nobody said they were secret."""
    from mmats import redact as module

    text = f"401 from https://bot:pw@10.0.0.1/v3?chat=1&token=zz for {OANDA['token']}"
    expected = "401 from https://***@10.0.0.1/v3?chat=1&token=*** for ***"
    assert module.redact(text, OANDA) == expected
    assert redact(text, OANDA) == expected  # mmats.secrets.redact is the same function
    assert module.redact("https://u:p@host/x") == "https://***@host/x"


def test_redacting_filter_covers_messages_args_and_tracebacks():
    stream = []
    handler = logging.Handler()
    handler.emit = lambda record: stream.append(handler.format(record))
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.addFilter(RedactingFilter(BINANCE))
    logger = logging.getLogger("mmats.test_secrets.redaction")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("order rejected, key %s", BINANCE["api_key"])
        try:
            raise RuntimeError(f"signature with {BINANCE['secret']} rejected")
        except RuntimeError:
            logger.exception("request failed")
    finally:
        logger.removeHandler(handler)
    output = "\n".join(stream)
    assert "order rejected, key ***" in output and "RuntimeError: signature with ***" in output
    assert not any(value in output for value in BINANCE.values())


# -- scripts/keys.py ---------------------------------------------------------------------------


def run_keys(*args, env, stdin=""):
    command = [sys.executable, str(REPO / "scripts" / "keys.py"), *args]
    return subprocess.run(command, input=stdin, capture_output=True, text=True, env=env,
                           timeout=120)


@pytest.fixture
def script_env(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMATS_SECRETS")}
    env.update(HOME=str(tmp_path / "home"), XDG_CONFIG_HOME=str(tmp_path / "config"),
               PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring",
               MMATS_SECRETS_FILE=str(tmp_path / "vault" / "secrets.enc"),
               MMATS_SECRETS_PASSPHRASE=PASSPHRASE)
    return env


def test_keys_script_set_list_delete(tmp_path, script_env):
    path = Path(script_env["MMATS_SECRETS_FILE"])
    lines = "".join(f"{k}={v}\n" for k, v in BINANCE.items())
    results = [run_keys("set", "binance", "--stdin", env=script_env, stdin="# keys\n" + lines)]
    oanda = "".join(f"{k}={v}\n" for k, v in OANDA.items())
    results.append(run_keys("set", "oanda", "--stdin", "--fields", "token,account_id",
                            env=script_env, stdin=oanda))
    results.append(run_keys("list", env=script_env))
    results.append(run_keys("list", "--json", env=script_env))
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
    assert results[0].stdout == f"stored api_key, secret for binance in encrypted file {path}\n"
    assert results[2].stdout.splitlines() == [f"2 venue(s) in encrypted file {path}",
                                              "  binance: api_key, secret",
                                              "  oanda: account_id, token"]
    assert json.loads(results[3].stdout)["venues"] == {"binance": ["api_key", "secret"],
                                                       "oanda": ["account_id", "token"]}
    deleted = run_keys("delete", "binance", env=script_env)
    again = run_keys("delete", "binance", env=script_env)
    assert deleted.returncode == 0 and "deleted binance" in deleted.stdout
    assert again.returncode == 1 and "nothing is stored for binance" in again.stderr
    after = run_keys("list", env=script_env)
    assert after.stdout.splitlines()[1:] == ["  oanda: account_id, token"]
    printed = "".join(r.stdout + r.stderr for r in results + [deleted, again, after])
    raw = path.read_bytes()
    for value in all_values():
        assert value not in printed and value.encode() not in raw
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # What the script stored is what the library reads.
    os.environ[secrets.FILE_ENV], os.environ[secrets.PASSPHRASE_ENV] = str(path), PASSPHRASE
    try:
        assert dict(get_secret("oanda")) == OANDA
    finally:
        del os.environ[secrets.FILE_ENV], os.environ[secrets.PASSPHRASE_ENV]


def test_keys_script_errors_never_show_values(script_env):
    secret_line = f"secret {BINANCE['secret']}\n"  # no '=': a malformed line
    bad = run_keys("set", "binance", "--stdin", env=script_env,
                   stdin=f"api_key={BINANCE['api_key']}\n{secret_line}")
    assert bad.returncode == 2 and "stdin line 2 is not field=value" in bad.stderr
    mismatch = run_keys("set", "binance", "--stdin", "--fields", "api_key,secret",
                        env=script_env, stdin=f"api_key={BINANCE['api_key']}\n")
    assert mismatch.returncode == 2 and "missing: secret" in mismatch.stderr
    run_keys("set", "binance", "--stdin", env=script_env,
             stdin="".join(f"{k}={v}\n" for k, v in BINANCE.items()))
    wrong = run_keys("list", env={**script_env, "MMATS_SECRETS_PASSPHRASE": "guess"})
    assert wrong.returncode == 2 and "wrong passphrase" in wrong.stderr
    no_tty = run_keys("set", "oanda", env=script_env)  # no --stdin and no terminal
    assert no_tty.returncode == 2 and "--stdin" in no_tty.stderr
    no_passphrase = {k: v for k, v in script_env.items() if k != "MMATS_SECRETS_PASSPHRASE"}
    asked = run_keys("list", env=no_passphrase)
    assert asked.returncode == 2 and "set MMATS_SECRETS_PASSPHRASE" in asked.stderr
    for result in (bad, mismatch, wrong, no_tty, asked):
        assert "Traceback" not in result.stderr
        assert not any(value in result.stdout + result.stderr for value in all_values())


def test_keys_script_headless_default_file(tmp_path, script_env):
    env = {k: v for k, v in script_env.items() if k != "MMATS_SECRETS_FILE"}
    result = run_keys("set", "oanda", "--stdin", env=env,
                      stdin="".join(f"{k}={v}\n" for k, v in OANDA.items()))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "config" / "mmats" / "secrets.enc").is_file()


def test_no_script_shadows_a_stdlib_module():
    """``python scripts/x.py`` puts scripts/ first on sys.path, so a scripts/secrets.py would
    be imported as Python's ``secrets`` (numpy.random imports it): hence scripts/keys.py."""
    shadowing = [p.name for p in (REPO / "scripts").glob("*.py")
                 if p.stem in sys.stdlib_module_names]
    assert shadowing == []
    for script in ("backtest.py", "import_data.py", "keys.py"):
        result = subprocess.run([sys.executable, str(REPO / "scripts" / script), "--help"],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0 and "usage:" in result.stdout, result.stderr
