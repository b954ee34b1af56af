"""Credentials inside URLs are masked wherever a URL is shown: journal snapshots of the
configuration, notifications (bodies and delivery failures), error messages."""

from __future__ import annotations

import json

import pytest

from mmats.live import notify as notify_module
from mmats.live.config import parse_config
from mmats.live.notify import notify
from mmats.redact import redact_url, redact_urls

SECRETS = ("pa55word", "t0ken", "k3y", "s1g")


@pytest.mark.parametrize("url, shown", [
    ("https://user:pa55word@proxy.example.com:8443/api?x=1",
     "https://***@proxy.example.com:8443/api?x=1"),
    ("https://hooks.example.com/post?chat=42&token=t0ken",
     "https://hooks.example.com/post?chat=42&token=***"),
    ("http://127.0.0.1:9/v3?apiKey=k3y&signature=s1g&limit=5",
     "http://127.0.0.1:9/v3?apiKey=***&signature=***&limit=5"),
    ("https://app.example.com/cb#access_token=t0ken&state=ok",
     "https://app.example.com/cb#access_token=***&state=ok"),
    ("https://alice@example.com", "https://***@example.com"),
    ("tgram://123456:t0ken/987", "tgram://***"),
    ("file:///var/log/mmats/notes.log", "file:///var/log/mmats/notes.log"),
    ("https://api.binance.com/api/v3", "https://api.binance.com/api/v3"),
    ("console", "console"),
])
def test_redact_url(url, shown):
    assert redact_url(url) == shown


def test_redact_urls_in_free_text():
    text = ("ccxt.NetworkError: binance GET https://u:pa55word@api.example.com/x?key=k3y "
            "failed; retry 'https://ok.example.com/y?token=t0ken'")
    masked = redact_urls(text)
    assert not any(secret in masked for secret in SECRETS)
    assert "https://***@api.example.com/x?key=***" in masked
    assert "'https://ok.example.com/y?token=***'" in masked
    assert redact_urls("no url here: token=abc") == "no url here: token=abc"


def _mapping(**extra):
    return {
        "mode": "paper",
        "markets": {"crypto": {"type": "crypto", "feed": "binance", "execution": "paper",
                               "symbols": ["ETH/BTC"], "timeframe": "5m"}},
        "models": [{"id": "a", "strategy": "ema_cross", "market": "crypto"}],
        **extra,
    }


def test_snapshot_masks_venue_and_notification_credentials():
    config = parse_config(_mapping(
        venues={"binance": {"base_url": "https://user:pa55word@proxy.example.com/b?token=t0ken"}},
        notifications=["console", "https://hooks.example.com/in?key=k3y&room=7",
                       "tgram://123456:t0ken/987"]))
    snapshot = config.snapshot()
    assert not any(secret in snapshot for secret in SECRETS), snapshot
    data = json.loads(snapshot)
    assert data["venues"][0]["base_url"] == "https://***@proxy.example.com/b?token=***"
    assert data["notifications"] == ["console", "https://hooks.example.com/in?key=***&room=7",
                                     "tgram://***"]
    assert config.venues[0].base_url.endswith("token=t0ken")  # the adapter still gets it


def test_notifications_mask_urls_in_title_body_and_failures(tmp_path, capsys, monkeypatch):
    log = tmp_path / "notes.log"
    body = "order failed: POST https://u:pa55word@api.example.com/o?signature=s1g -> 500"
    assert notify(["console", f"file://{log}"], "MMATS https://x/?token=t0ken", body) == []
    shown = capsys.readouterr().out + log.read_text()
    assert "https://***@api.example.com/o?signature=***" in shown
    assert not any(secret in shown for secret in SECRETS), shown

    def broken(url, title, body, tag=""):
        raise RuntimeError(f"could not reach https://bot:t0ken@hooks.example.com/{url}")

    monkeypatch.setattr(notify_module, "_send", broken)
    failures = notify(["json://me:pa55word@hooks.example.com/x"], "t", "b")
    assert len(failures) == 1 and "https://***@hooks.example.com" in failures[0]
    assert not any(secret in failures[0] for secret in SECRETS), failures


def test_logs_and_command_line_errors_mask_credentials_in_urls(capsys):
    import logging

    from mmats.cli import fail
    from mmats.errors import ConfigError
    from mmats.secrets import RedactingFilter

    record = logging.LogRecord("mmats", logging.ERROR, __file__, 1,
                               "venue https://%s:%s@venue.example/v3 failed",
                               ("alice", "hunter2"), None)
    RedactingFilter({}).filter(record)
    assert "hunter2" not in record.getMessage() and "venue.example" in record.getMessage()
    assert fail(ConfigError("cannot reach https://bob:s3cr3t@proxy.example/api")) == 2
    err = capsys.readouterr().err
    assert "s3cr3t" not in err and "proxy.example" in err
