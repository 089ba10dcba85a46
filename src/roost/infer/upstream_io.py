"""Bounded reads from an upstream server and its URL shown without credentials: what `roost serve --upstream`
(`roost.infer.upstream`, `roost.infer.loading`) uses for every byte it takes from an upstream.

    async with client.stream("POST", url, json=body, headers=IDENTITY) as r:
        check_encoding(r)
        async for line in sse_lines(r.aiter_raw(), budget=...): ...   # raises UpstreamError past a cap
    body = await read_capped(r, MAX_ERROR_BODY)                       # at most that many bytes, then stop
    shown = redact_url("http://user:token@host:8000")                 # "http://***@host:8000"

Every read is of raw bytes (no decompression: roost asks for `Accept-Encoding: identity` and refuses any other
encoding), in the transport's chunks (at most 64 KiB each), and checked against its cap *before* it is kept: a
line that never ends is cut when the partial line passes `MAX_LINE`, not when it completes.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

MAX_LINE = 1 << 20  # bytes in one SSE line from an upstream, complete or still growing
MAX_ERROR_BODY = 4096  # bytes of an upstream's error answer read before it is cut
MAX_CARD_BYTES = 1 << 16  # bytes of an upstream's /v1/models answer
IDENTITY = {"Accept-Encoding": "identity"}  # no compressed answers: a small body cannot inflate past a cap


class UpstreamError(Exception):
    """An upstream answered with an error status, or broke the protocol or a budget (status 502)."""

    def __init__(self, status: int, body: str):
        super().__init__(f"HTTP {status}: {body[:300]}")
        self.status = status


def check_encoding(r: Any) -> None:
    """Refuse a compressed answer before reading it (roost asked for identity)."""
    enc = r.headers.get("content-encoding", "").strip().lower()
    if enc not in ("", "identity"):
        raise UpstreamError(502, f"a compressed answer (Content-Encoding: {enc[:40]}); roost asks for identity")


async def read_capped(r: Any, limit: int) -> bytes:
    """At most `limit` bytes of the answer's raw body; the rest is never read (the connection is dropped)."""
    out = bytearray()
    async for chunk in r.aiter_raw():
        out += chunk[: limit - len(out)]
        if len(out) >= limit:
            break
    return bytes(out)


def read_capped_sync(r: Any, limit: int) -> tuple[bytes, bool]:
    """The synchronous `read_capped`, and whether the body went past `limit`."""
    out = bytearray()
    for chunk in r.iter_raw():
        out += chunk[: limit + 1 - len(out)]
        if len(out) > limit:
            return bytes(out[:limit]), True
    return bytes(out), False


def _split(buf: bytearray, max_line: int) -> Iterator[bytes]:
    """Complete lines in `buf` (removed from it; "\\r\\n" or "\\n" endings), checked against `max_line`; what stays
    in `buf` is the partial last line, checked too."""
    start = 0
    while (end := buf.find(b"\n", start)) >= 0:
        if end - start > max_line + 1:
            raise UpstreamError(502, f"an SSE line over {max_line} bytes")
        yield bytes(buf[start:end]).rstrip(b"\r")
        start = end + 1
    del buf[:start]
    if len(buf) > max_line:
        raise UpstreamError(502, f"an SSE line over {max_line} bytes (still growing)")


async def sse_lines(chunks: AsyncIterator[bytes], budget: int, max_line: int = MAX_LINE) -> AsyncIterator[bytes]:
    """The lines of a raw byte stream, each at most `max_line` bytes, the whole stream at most `budget` bytes."""
    buf, total = bytearray(), 0
    async for chunk in chunks:
        total += len(chunk)
        if total > budget:
            raise UpstreamError(502, f"the stream went past its budget of {budget} bytes")
        buf += chunk
        for line in _split(buf, max_line):
            yield line
    if buf:
        yield bytes(buf)


_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)(.*@)", re.S)  # up to the last "@": a password may hold "/"


def redact_url(url: str) -> str:
    """`url` with its user info (user, password, token) shown as ***; the scheme, host, port and path stay (an
    "@" in a path or query hides what precedes it too: never too little)."""
    return _USERINFO.sub(r"\1***@", url, count=1)


def url_secrets(url: str) -> list[str]:
    """The credentials in `url`: its user info and the password in it (a user info without ":" is a token)."""
    m = _USERINFO.match(url)
    if not m:
        return []
    info = m.group(2)[:-1]
    parts = {info, info.partition(":")[2]} - {""}
    return sorted(parts, key=len, reverse=True)


def scrub(text: str, urls: list[str]) -> str:
    """`text` (an error message) with every credential of `urls` replaced by ***."""
    for url in urls:
        text = text.replace(url, redact_url(url))
        for secret in url_secrets(url):
            if len(secret) >= 4:
                text = text.replace(secret, "***")
    return text
