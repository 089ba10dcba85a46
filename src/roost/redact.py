"""Credentials out of what roost shows: a store URL's password is never printed, logged, written into a manifest or
returned in an error (docs/security.md). Used by the store registry, the PostgreSQL backend and the server.

    redact("postgresql://roost:s3cret@db/roost")                    # 'postgresql://***@db/roost'
    redact(url, "connection to ... password=s3cret failed")         # the message without the password
"""

from __future__ import annotations

import re
from urllib.parse import unquote

_PASSWORD_PARAM = re.compile(r"(password\s*=\s*)([^&\s]*)", re.IGNORECASE)
_QUOTED = re.compile(r'"[^"]*"|\'[^\']*\'')


def _userinfo(url: str) -> tuple[int, int] | None:
    """Where a URL's user info (user[:password]) is: from after '://' to its last '@' (a raw '@' or '/' in a
    password makes the URL ambiguous, so the widest reading is taken), or None."""
    start = url.find("://")
    at = url.rfind("@")
    return (start + 3, at) if start >= 0 and at > start else None


def _secrets(url: str) -> list[str]:
    """The password(s) a URL carries (in its user info or a password= parameter), raw and percent-decoded."""
    found = [m.group(2) for m in _PASSWORD_PARAM.finditer(url)]
    span = _userinfo(url)
    if span and ":" in url[span[0] : span[1]]:
        found.append(url[span[0] : span[1]].split(":", 1)[1])
    return [x for v in found if v for x in {v, unquote(v)} if len(x) >= 3]


def redact(url: str, text: str | None = None) -> str:
    """`text` (default: the URL itself) without the URL's credentials: the user info becomes ***, a password=
    parameter's value ***, the password itself *** wherever it appears; and when the URL carries a password, every
    double-quoted value in a driver's message (libpq quotes the fragment it could not parse) is dropped too.
    Never raises."""
    span = _userinfo(url)
    shown = url if span is None else url[: span[0]] + "***" + url[span[1] :]
    shown = _PASSWORD_PARAM.sub(r"\1***", shown)
    if text is None:
        return shown
    secrets = _secrets(url)
    out = text.replace(url, shown)
    if secrets:
        out = _QUOTED.sub(lambda m: m.group(0)[0] + "…" + m.group(0)[0], out)
    for secret in sorted(secrets, key=len, reverse=True):
        out = out.replace(secret, "***")
    return _PASSWORD_PARAM.sub(r"\1***", out)
