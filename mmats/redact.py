"""Masking secrets in anything MMATS shows: log lines, notifications, journal snapshots of
the configuration, error messages.

:func:`redact` is the one helper: it masks *known* secret values (and their URL-encoded
forms) and credentials by their *position* in a URL (``https://user:pass@host``, query
or fragment parameters such as ``?token=...``, ``&api_key=...``), so it also covers
values it was never told. :func:`redact_url` and :func:`redact_urls` are its URL part,
for a URL shown on its own.

>>> redact("auth failed for s3cr3t at https://u:p@10.0.0.1/api", {"token": "s3cr3t"})
'auth failed for *** at https://***@10.0.0.1/api'

>>> redact_url("https://bot:s3cret@hooks.example.com/x?chat=1&token=abc")
'https://***@hooks.example.com/x?chat=1&token=***'
>>> redact_url("tgram://123456:AAbot-token/4242")
'tgram://***'
>>> redact_urls("POST https://u:p@10.0.0.1/api failed: 401")
'POST https://***@10.0.0.1/api failed: 401'
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterable, Mapping

MASK = "***"

# A URL inside free text: a scheme, ://, then anything up to whitespace, a quote or the
# next scheme:// (a URL quoted inside another is masked on its own).
_SCHEME = r"[A-Za-z][A-Za-z0-9+.\-]*://"
_URL_IN_TEXT = re.compile(_SCHEME + r"(?:(?!" + _SCHEME + r")[^\s'\"<>])+")
# Parameter names whose value is a credential (matched as substrings, case-insensitive).
_SECRET_NAME = re.compile(r"token|key|secret|pass|pwd|sig|auth|credential|session|bearer|jwt",
                          re.IGNORECASE)
_WEB_SCHEMES = ("http", "https", "ws", "wss", "file", "ftp", "ftps", "sftp")
_PARAMETER = re.compile(r"([^&;=?#]+)=([^&;#]*)")


def redact(text, secrets=None) -> str:
    """``text`` with every known secret value (and its URL-encoded form) and every
    credential inside a URL replaced by ``'***'``. ``secrets`` is a mapping (its values
    are used), one string, an iterable of strings and mappings, or None (URLs only).

    >>> redact("GET /v3/accounts?token=s3cr3t failed", {"token": "s3cr3t"})
    'GET /v3/accounts?token=*** failed'
    """
    text = str(text)
    for value in secret_values(secrets):
        text = text.replace(value, MASK)
    return redact_urls(text)


def secret_values(secrets) -> list[str]:
    """The strings :func:`redact` masks for ``secrets``: each value and its URL-encoded
    form, longest first (so a secret containing another is masked whole)."""
    if secrets is None:
        return []
    if isinstance(secrets, str):
        items = [secrets]
    elif isinstance(secrets, Mapping):
        items = list(secrets.values())
    elif isinstance(secrets, Iterable):
        items = []
        for item in secrets:
            items += list(item.values()) if isinstance(item, Mapping) else [item]
    else:
        raise TypeError(f"secrets must be a str, a mapping or an iterable, "
                        f"not {type(secrets).__name__}")
    values = set()
    for item in items:
        if item:
            values.add(str(item))
            values.add(urllib.parse.quote(str(item), safe=""))
    return sorted(values, key=len, reverse=True)


def redact_url(url: str) -> str:
    """``url`` with its user-info and the values of credential-like query and fragment
    parameters replaced by ``***``; scheme, host, port and path are kept (say where, not
    with what). Other schemes (apprise services: ``tgram://bottoken/chat``,
    ``discord://id/token``) keep only their scheme, since their host and path are the
    credential. Text that is not a ``scheme://`` URL is returned unchanged."""
    url = str(url)
    scheme, separator, rest = url.partition("://")
    if not separator:
        return url
    if scheme.lower() not in _WEB_SCHEMES:
        return f"{scheme}://{MASK}"
    end = len(rest)
    for stop in "/?#":
        index = rest.find(stop)
        if index != -1:
            end = min(end, index)
    authority, tail = rest[:end], rest[end:]
    if "@" in authority:
        authority = f"{MASK}@{authority.rpartition('@')[2]}"
    return f"{scheme}://{authority}{_mask_parameters(tail)}"


def redact_urls(text) -> str:
    """``text`` with :func:`redact_url` applied to every URL in it (error messages,
    notification bodies, log lines)."""
    return _URL_IN_TEXT.sub(lambda match: redact_url(match.group(0)), str(text))


def _mask_parameters(tail: str) -> str:
    path, mark, parameters = _split_parameters(tail)
    if not mark:
        return tail

    def mask(match: re.Match) -> str:
        name = match.group(1)
        return f"{name}={MASK}" if _SECRET_NAME.search(name) else match.group(0)

    return path + mark + _PARAMETER.sub(mask, parameters)


def _split_parameters(tail: str) -> tuple[str, str, str]:
    """``(path, "?" or "#", the rest)``: the part after the first ``?`` or ``#``."""
    positions = [index for index in (tail.find("?"), tail.find("#")) if index != -1]
    if not positions:
        return tail, "", ""
    first = min(positions)
    return tail[:first], tail[first], tail[first + 1:]
