"""Notifications: console and file by default, any apprise URL if apprise is installed.

Titles, bodies and failure reports pass through :func:`mmats.redact.redact_urls` first:
an exception text from a venue may quote a URL carrying a key (``https://user:pass@...``,
``?token=...``), and a notification channel is no place for it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from urllib.parse import urlparse

from mmats.errors import ConfigError
from mmats.redact import redact_url, redact_urls


def notify(urls, title: str, body: str) -> list[str]:
    """Send a message to every URL; return the ones that failed (never raises for a
    delivery failure, so a broken channel cannot stop a tick)."""
    failed = []
    title, body = redact_urls(title), redact_urls(body)
    for url in urls:
        try:
            _send(url, title, body)
        except Exception as error:  # noqa: BLE001 - a channel failure is reported, not fatal
            failed.append(redact_urls(f"{_scheme(url)}: {type(error).__name__}: {error}"))
    return failed


def _send(url: str, title: str, body: str) -> None:
    if url == "console":
        print(f"[{title}] {body}", file=sys.stdout, flush=True)
        return
    parsed = urlparse(url)
    if parsed.scheme == "file":
        path = Path(parsed.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as handle:
            handle.write(f"{title}\t{body}\n")
        return
    try:
        import apprise
    except ImportError:
        raise ConfigError(f"notification {_scheme(url)}:// needs the apprise package "
                          "(pip install apprise)") from None
    sender = apprise.Apprise()
    if not sender.add(url) or not sender.notify(title=title, body=body):
        raise RuntimeError("apprise could not deliver the message")


def _scheme(url: str) -> str:
    return url if url == "console" else urlparse(url).scheme or redact_url(url)
