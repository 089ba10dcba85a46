"""HTTP limits of `roost serve`, below the routes: what a client may make the server hold, and for how long.

- `Guard` (ASGI middleware, outermost): the body limit holds for chunked bodies too (bytes are counted while they
  stream in; 413), the whole body must arrive within `body_timeout` (408), a loopback server without an API key
  answers only loopback `Host` values (DNS rebinding: 421), and every JSON body is checked once for invalid
  Unicode (lone surrogates such as "\\ud800", invalid UTF-8) and excessive nesting, so no route ever sees them (400).
- `protocol()` (uvicorn's h11 protocol, subclassed): request headers must be complete within `header_timeout`
  (slow-header clients are disconnected), and at most `max_connections` connections are open at once (more are
  answered 503 and closed).

    uvicorn.Config(app, host=..., port=..., **uvicorn_options(cfg))   # what `roost serve` runs
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from roost.serve.errors import _error

LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1", "[::1]"}
MAX_JSON_DEPTH = 64
BUSY = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nRetry-After: 1\r\nConnection: close\r\n\r\n"


def _host_name(value: str) -> str:
    if value.startswith("["):  # [::1]:8000
        return value[: value.find("]") + 1] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def bad_text(value: Any, path: str = "", depth: int = 0) -> str | None:
    """The JSON path of the first string (or key) that is not valid Unicode, or of a too-deep nesting."""
    if depth > MAX_JSON_DEPTH:
        return f"{path or 'body'}: nested deeper than {MAX_JSON_DEPTH} levels"
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return f"{path or 'body'}: not valid Unicode (a lone surrogate such as \\ud800)"
        return None
    if isinstance(value, list):
        for i, v in enumerate(value):
            if (err := bad_text(v, f"{path}[{i}]", depth + 1)) is not None:
                return err
    elif isinstance(value, dict):
        for k, v in value.items():
            sub = f"{path}.{k}" if path else str(k)
            if (err := bad_text(k, path, depth + 1)) is not None or (err := bad_text(v, sub, depth + 1)) is not None:
                return err
    return None


class Guard:
    """ASGI middleware: body size and time budgets, the loopback Host rule, and Unicode/nesting checks on JSON."""

    def __init__(
        self, app: Any, max_body_bytes: int, body_timeout: float, loopback_only: bool, check_json: bool = True
    ):
        self.app, self.max_body, self.body_timeout = app, max_body_bytes, body_timeout
        self.loopback_only, self.check_json = loopback_only, check_json

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        if self.loopback_only and _host_name(headers.get("host", "").lower()) not in LOOPBACK_HOSTS:
            msg = "this server listens on loopback without an API key and answers only Host: localhost/127.0.0.1"
            return await _error(421, msg, code="host_not_allowed")(scope, receive, send)
        body, err = await self._read_body(receive)
        if err is not None:
            return await err(scope, receive, send)
        if body and self.check_json:  # whatever the content type says: FastAPI may parse it as JSON anyway
            try:
                problem = bad_text(json.loads(body))
            except UnicodeDecodeError as e:
                problem = f"body: not valid UTF-8 at byte {e.start}"
            except RecursionError:
                problem = f"body: nested deeper than {MAX_JSON_DEPTH} levels"
            except ValueError:
                problem = None  # not JSON: the route answers that in its own words
            if problem is not None:
                return await _error(400, problem, code="invalid_value")(scope, receive, send)
        await self.app(scope, _replay(body, receive), send)

    async def _read_body(self, receive: Any) -> tuple[bytes, Any]:
        """The whole body, counted as it streams (chunked or not), within the size and time budgets."""
        chunks, size = [], 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.body_timeout
        while True:
            try:
                msg = await asyncio.wait_for(receive(), timeout=max(0.0, deadline - loop.time()))
            except TimeoutError:
                return b"", _error(408, f"the request body did not arrive within {self.body_timeout:g} s",
                                   code="body_timeout", headers={"Connection": "close"})  # fmt: skip
            if msg["type"] == "http.disconnect":
                return b"", _error(400, "the client went away", code="disconnected")
            size += len(msg.get("body", b""))
            if size > self.max_body:
                return b"", _error(413, f"request body over {self.max_body} bytes", code="body_too_large",
                                   headers={"Connection": "close"})  # fmt: skip
            chunks.append(msg.get("body", b""))
            if not msg.get("more_body", False):
                return b"".join(chunks), None


def _replay(body: bytes, receive: Any) -> Any:
    sent = False

    async def again() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: the disconnect, when it comes

    return again


def protocol(header_timeout: float, max_connections: int) -> type[H11Protocol]:
    """uvicorn's h11 protocol with a header deadline and a connection cap."""

    class Protocol(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                transport.write(BUSY)
                transport.close()
                return
            self._arm()

        def _arm(self) -> None:
            if self._header_timer is None:
                self._header_timer = self.loop.call_later(header_timeout, self._expire)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _expire(self) -> None:
            self._header_timer = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.transport.close()  # the request's headers did not complete in time

        def data_received(self, data: bytes) -> None:
            if self.conn.their_state is h11.IDLE:
                self._arm()
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE:
                self._disarm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return Protocol


def uvicorn_options(header_timeout: float = 10.0, max_connections: int = 256) -> dict[str, Any]:
    """Keyword arguments for uvicorn.Config that apply these limits."""
    return {"http": protocol(header_timeout, max_connections), "timeout_keep_alive": 5, "log_level": "warning"}
