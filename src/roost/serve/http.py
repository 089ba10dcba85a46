"""HTTP limits of `roost serve`, below the routes: what a client may make the server hold, and for how long.

- `Guard` (ASGI middleware, outermost): the body limit holds for chunked bodies too (bytes are counted while they
  stream in; 413), the whole body must arrive within `body_timeout` (408), a loopback server without an API key
  answers only loopback `Host` values (DNS rebinding: 421), and every JSON body is checked once for invalid
  Unicode (lone surrogates such as "\\ud800", invalid UTF-8) and excessive nesting, so no route ever sees them (400).
  Once the body is in, it watches the connection: `client_gone(scope)` is an event set the moment the client leaves
  (routes that generate stop on it, streaming or not).
- `protocol()` (uvicorn's h11 protocol, subclassed): request headers must be complete within `header_timeout`
  (slow-header clients are disconnected), at most `max_connections` connections are open at once (more are
  answered 503 and closed), and a connection whose answer makes no progress for `write_timeout` (WRITE_TIMEOUT,
  10 s: the client stopped reading) is aborted, so clients that never read cannot hold every slot.

    uvicorn.Config(app, host=..., port=..., **uvicorn_options(cfg))   # what `roost serve` runs
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from roost.serve.errors import _error

LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "[::1]"}
MAX_JSON_DEPTH = 64
GONE = "roost.client_gone"  # the scope key of the event `client_gone` returns
WRITE_TIMEOUT = 10.0  # seconds an answer may make no progress (the client reads nothing) before the connection ends
WATCH_EVERY = 0.5  # seconds between two looks at a connection that has unsent bytes
BUSY = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nRetry-After: 1\r\nConnection: close\r\n\r\n"
_HOST = re.compile(r"(\[[0-9a-f:.]+\]|[a-z0-9.-]+)(?::([0-9]{1,5}))?")


def _host_name(value: str) -> str | None:
    """The host of a Host header value (`name`, `name:port`, `[v6]`, `[v6]:port`; a port is 1-5 digits), lower
    case; None when the value is anything else (`[::1]evil.com`, `localhost:evil.com`, a bare `::1`)."""
    m = _HOST.fullmatch(value.lower())
    if m is None or (m.group(2) is not None and int(m.group(2)) > 65535):
        return None
    return m.group(1)


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
        if self.loopback_only and _host_name(headers.get("host", "")) not in LOOPBACK_HOSTS:
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
        gone = scope[GONE] = asyncio.Event()
        watcher = asyncio.create_task(_watch(receive, gone))
        try:
            await self.app(scope, _replay(body, gone), send)
        finally:
            watcher.cancel()

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


def client_gone(scope: Any) -> asyncio.Event | None:
    """Set when the request's client has left (None outside `Guard`)."""
    return scope.get(GONE)


async def _watch(receive: Any, gone: asyncio.Event) -> None:
    """After the body, the only message left is the disconnect: wait for it (one reader of the connection)."""
    while (await receive())["type"] != "http.disconnect":
        pass
    gone.set()


def _replay(body: bytes, gone: asyncio.Event) -> Any:
    sent = False

    async def again() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await gone.wait()  # after the body: the disconnect, when it comes
        return {"type": "http.disconnect"}

    return again


class _Counted:
    """The connection's transport, counting the bytes the server writes (sent = written - still buffered)."""

    def __init__(self, transport: asyncio.Transport, on_write: Any):
        self._t, self._on_write, self.written = transport, on_write, 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += len(data)
        self._t.write(data)
        self._on_write()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._t, name)


def protocol(header_timeout: float, max_connections: int, write_timeout: float = WRITE_TIMEOUT) -> type[H11Protocol]:
    """uvicorn's h11 protocol with a header deadline, a connection cap and a write deadline."""

    class Protocol(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None
        _watch: asyncio.TimerHandle | None = None
        _sent = 0
        _stalled_since = 0.0

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            self._raw = transport
            super().connection_made(_Counted(transport, self._watch_writes))  # type: ignore[arg-type]
            if len(self.connections) > max_connections:
                transport.write(BUSY)
                transport.close()
                return
            self._arm()

        # -- the write deadline: bytes waiting in the transport's buffer must keep leaving ------------------------
        def _watch_writes(self) -> None:
            if self._watch is None and self._raw.get_write_buffer_size() > 0 and not self._raw.is_closing():
                self._stalled_since = self.loop.time()
                self._watch = self.loop.call_later(WATCH_EVERY, self._look)

        def _look(self) -> None:
            self._watch = None
            buffered = self._raw.get_write_buffer_size()
            if buffered == 0:
                return
            sent = self.transport.written - buffered  # type: ignore[attr-defined]
            now = self.loop.time()
            if sent > self._sent:
                self._sent, self._stalled_since = sent, now
            elif now - self._stalled_since >= write_timeout:
                self._raw.abort()  # the client reads nothing: the slot is freed (close() would wait for it)
                return
            self._watch = self.loop.call_later(WATCH_EVERY, self._look)

        # -- the header deadline ----------------------------------------------------------------------------------
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
            if self._watch is not None:
                self._watch.cancel()
                self._watch = None
            super().connection_lost(exc)

    return Protocol


def uvicorn_options(
    header_timeout: float = 10.0, max_connections: int = 256, write_timeout: float = WRITE_TIMEOUT
) -> dict[str, Any]:
    """Keyword arguments for uvicorn.Config that apply these limits."""
    return {
        "http": protocol(header_timeout, max_connections, write_timeout),
        "timeout_keep_alive": 5,
        "log_level": "warning",
    }
