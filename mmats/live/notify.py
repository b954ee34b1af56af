"""Notifications: console and file by default, any apprise URL if apprise is installed.

Every message names the environment it comes from (``[prod] MMATS kill``), so a prod alert
is never taken for a test one: a configuration's ``notifications`` are :class:`Targets`,
the URLs tagged with the configuration's environment, and :func:`notify` puts the tag in
front of every title (the console prints ``[prod] [MMATS kill] ...``, a file gets
``[prod] MMATS kill<TAB>...``, apprise channels the tagged title).

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


class Targets(tuple):
    """Notification URLs of one environment: a tuple of the URLs (equal to the plain
    tuple) that also knows ``environment``, which :func:`notify` shows in every message.

    >>> targets = Targets(["console"], "prod")
    >>> targets == ("console",), targets.environment
    (True, 'prod')
    """

    environment: str | None

    def __new__(cls, urls=(), environment: str | None = None):
        targets = super().__new__(cls, urls)
        targets.environment = environment
        return targets

    def __reduce__(self):
        return type(self), (tuple(self), self.environment)

    def __repr__(self) -> str:
        return f"Targets({tuple(self)!r}, environment={self.environment!r})"


def notify(urls, title: str, body: str, *, environment: str | None = None) -> list[str]:
    """Send a message to every URL; return the ones that failed (never raises for a
    delivery failure, so a broken channel cannot stop a tick). The message is tagged with
    ``environment``, by default the one of ``urls`` (a configuration's :class:`Targets`).

    >>> notify(Targets(["console"], "test"), "MMATS kill", "all halted")  # doctest: +SKIP
    [test] [MMATS kill] all halted
    """
    failed = []
    environment = environment or getattr(urls, "environment", None)
    tag = f"[{environment}] " if environment else ""
    title, body = redact_urls(title), redact_urls(body)
    for url in urls:
        try:
            _send(url, title, body, tag)
        except Exception as error:  # noqa: BLE001 - a channel failure is reported, not fatal
            failed.append(redact_urls(f"{_scheme(url)}: {type(error).__name__}: {error}"))
    return failed


def _send(url: str, title: str, body: str, tag: str = "") -> None:
    if url == "console":
        print(f"{tag}[{title}] {body}", file=sys.stdout, flush=True)
        return
    title = tag + title
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
