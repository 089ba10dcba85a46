"""HTTP limits on a real server (uvicorn on 127.0.0.1 with roost's protocol and Guard): chunked bodies cannot pass
the body limit, slow headers and slow bodies are cut off, connections are capped, clients that stop reading lose
their connection after the write timeout (so they cannot hold every slot), a loopback server answers only loopback
Host values (parsed strictly: `[::1]evil.com` and `localhost:evil.com` are not loopback) unless it has a key, and
invalid Unicode in any field of any route is a 400 in OpenAI's shape."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.data.conftest import store_db, tok_path  # noqa: F401
from tests.serve.conftest import model_dir, serve  # noqa: F401

LIMITS = {"max_body_bytes": 1 << 20, "header_timeout": 1.0, "body_timeout": 1.5, "max_connections": 24}


@pytest.fixture(scope="module")
def srv(model_dir: Path, store_db: Path) -> Iterator[Any]:  # noqa: F811
    s, engine, app = serve(model_dir, store_db, **LIMITS)
    yield s, app
    s.stop()
    engine.shutdown()


def _connect(port: int) -> socket.socket:
    c = socket.create_connection(("127.0.0.1", port), timeout=10)
    return c


def _response(c: socket.socket, timeout: float = 10) -> bytes:
    c.settimeout(timeout)
    out = b""
    try:
        while b"\r\n\r\n" not in out or len(out) < 12:
            chunk = c.recv(65536)
            if not chunk:
                break
            out += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    return out


def test_chunked_body_over_the_limit_is_refused_while_streaming(srv: Any) -> None:
    s, _ = srv
    c = _connect(s.port)
    c.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
              b"Transfer-Encoding: chunked\r\n\r\n")  # fmt: skip
    chunk = b"x" * 65536
    sent = 0
    try:
        for _ in range(200):  # up to 13 MB; the server must answer long before
            c.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            sent += len(chunk)
    except (BrokenPipeError, ConnectionResetError):
        pass
    head = _response(c)
    c.close()
    assert head.startswith(b"HTTP/1.1 413"), head[:200]
    assert b"body_too_large" in head or sent <= 4 << 20


def test_slow_body_and_slow_headers_are_cut_off(srv: Any) -> None:
    s, _ = srv
    c = _connect(s.port)
    c.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
              b"Content-Length: 100\r\n\r\n{\"model\"")  # fmt: skip
    t0 = time.monotonic()
    head = _response(c, timeout=10)
    assert head.startswith(b"HTTP/1.1 408"), head[:200]
    assert time.monotonic() - t0 < 6
    c.close()
    c = _connect(s.port)
    c.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # headers never finish
    t0 = time.monotonic()
    assert _response(c, timeout=10) == b""  # closed by the server
    assert time.monotonic() - t0 < 6
    c.close()


def test_many_slow_connections_are_capped_and_closed(srv: Any) -> None:
    s, _ = srv
    socks = []
    for _ in range(60):
        c = _connect(s.port)
        c.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 50\r\n\r\n{")
        socks.append(c)
    t0 = time.monotonic()
    got = {i: b"" for i in range(len(socks))}
    closed: set[int] = set()
    while len(closed) < len(socks) and time.monotonic() - t0 < LIMITS["body_timeout"] + 5:
        for i, c in enumerate(socks):
            if i in closed:
                continue
            c.settimeout(0.01)
            try:
                data = c.recv(65536)
            except TimeoutError:
                continue
            except ConnectionResetError:
                data = b""
            if data:
                got[i] += data
            else:
                closed.add(i)
    for c in socks:
        c.close()
    assert len(closed) == len(socks)  # nobody holds a connection open with a slow body
    busy = [i for i, d in got.items() if d.startswith(b"HTTP/1.1 503")]
    timed_out = [i for i, d in got.items() if d.startswith(b"HTTP/1.1 408")]
    assert len(busy) >= 60 - LIMITS["max_connections"] and len(busy) + len(timed_out) == 60, got
    assert httpx.get(f"{s.url}/health", timeout=10).status_code == 200  # and the server still serves


def test_loopback_server_answers_only_loopback_hosts(srv: Any, model_dir: Path) -> None:  # noqa: F811
    s, _ = srv
    r = httpx.get(f"{s.url}/v1/models", headers={"Host": "evil.example"}, timeout=10)
    assert r.status_code == 421 and r.json()["error"]["code"] == "host_not_allowed"
    r = httpx.get(f"{s.url}/", headers={"Host": "attacker.test:8000"}, timeout=10)
    assert r.status_code == 421
    for host in ("localhost", f"127.0.0.1:{s.port}", f"localhost:{s.port}", "[::1]:80"):
        assert httpx.get(f"{s.url}/v1/models", headers={"Host": host}, timeout=10).status_code == 200, host
    keyed, engine, _ = serve(model_dir, None, api_key="k3y")
    try:  # with a key, any Host may be used, but the key is required (and compared in constant time)
        h = {"Host": "roost.example"}
        assert httpx.get(f"{keyed.url}/v1/models", headers=h, timeout=10).status_code == 401
        h["Authorization"] = "Bearer k3y"
        assert httpx.get(f"{keyed.url}/v1/models", headers=h, timeout=10).status_code == 200
        h["Authorization"] = "Bearer k3x"
        assert httpx.get(f"{keyed.url}/v1/models", headers=h, timeout=10).status_code == 401
    finally:
        keyed.stop()
        engine.shutdown()


@pytest.mark.parametrize(
    "host",
    ["[::1]evil.com", "localhost:evil.com", "[::1]:80evil", "127.0.0.1:80:80", "localhost:", "[::1", "::1",
     "localhost:123456", "localhost.evil.com", "127.0.0.1.evil.com:80", "localhost@evil.com", "127.0.0.1:+80"],
)  # fmt: skip
def test_host_is_parsed_strictly(srv: Any, host: str) -> None:
    s, _ = srv
    r = httpx.get(f"{s.url}/v1/models", headers={"Host": host}, timeout=10)
    assert r.status_code in (400, 421), (host, r.status_code)


def test_clients_that_stop_reading_lose_their_slot(model_dir: Path) -> None:  # noqa: F811
    """Four clients with a tiny receive buffer ask for long answers (two streamed, two whole; 6 MB each, more than
    the kernel's socket buffers take, about 2 MB on loopback) and never read: once their writes make no progress
    for the write timeout, their connections are closed, and a new client of a server capped at four connections
    is served."""
    from roost.data import tokenizer as toklib
    from roost.infer.upstream import UpstreamEngine
    from roost.serve.app import ServeConfig, build_app
    from tests.security.fake_upstream import Hostile
    from tests.serve.conftest import Server

    tok = toklib.load(model_dir / "tokenizer.json")
    eos = tok.token_to_id(toklib.EOS)
    up = Hostile(eos, per_chunk=10)
    up.modes["completions"] = "firehose"
    engine = UpstreamEngine([up.url], tok, {eos}, 4096, "tiny")
    app = build_app(engine, "tiny", "0" * 64, ServeConfig(max_connections=4))
    srv = Server(app, header_timeout=2.0, max_connections=4, write_timeout=2.0)
    stuck = []
    try:
        for stream in (True, False, True, False):
            c = socket.socket()
            c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
            c.connect(("127.0.0.1", srv.port))
            body = json.dumps(
                {"model": "tiny", "prompt": [1, 2, 3], "max_tokens": 3000, "n": 8, "stream": stream}
            ).encode()
            c.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                      b"Content-Length: %d\r\n\r\n%s" % (len(body), body))  # fmt: skip
            stuck.append(c)
        busy, deadline = False, time.monotonic() + 30
        while up.calls < 4 or engine.active() or engine.queue_depth():  # until generation is over
            busy = busy or httpx.get(f"{srv.url}/health", timeout=5).status_code == 503
            assert time.monotonic() < deadline, "generation did not end"
            time.sleep(0.05)
        t0 = time.monotonic()
        while (code := httpx.get(f"{srv.url}/health", timeout=5).status_code) == 503:
            busy = True
            assert time.monotonic() - t0 < 10, "the stuck clients still hold every slot 10 s after generation ended"
            time.sleep(0.2)
        assert busy and code == 200  # the four held every slot, then lost them
    finally:
        for c in stuck:
            c.close()
        srv.stop()
        engine.shutdown()
        up.stop()


def _properties(spec: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    if "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return list(schema.get("properties", {}))


def test_invalid_unicode_in_any_field_of_any_route_is_a_400(srv: Any) -> None:
    s, app = srv
    spec = app.openapi()
    tried = 0
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            if body is None:
                continue
            for prop in _properties(spec, body):
                for value in ("\ud800", ["\udfff"], {"x": "a\ud83d"}, [{"role": "user", "content": "\ud800"}]):
                    raw = json.dumps({prop: value})  # ensure_ascii: the lone surrogate travels as \\ud800
                    r = httpx.request(method.upper(), f"{s.url}{path}", content=raw,
                                      headers={"Content-Type": "application/json"}, timeout=30)  # fmt: skip
                    assert r.status_code == 400, (path, prop, value, r.status_code, r.text[:200])
                    err = r.json()["error"]
                    assert prop in err["message"] and err["type"] == "invalid_request_error", err
                    tried += 1
            r = httpx.request(method.upper(), f"{s.url}{path}", content=b'{"model": "\xff\xfe"}',
                              headers={"Content-Type": "application/json"}, timeout=30)  # fmt: skip
            assert r.status_code == 400 and "UTF-8" in r.json()["error"]["message"], (path, r.text[:200])
    assert tried >= 40
    bad = '{"model": "tiny", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi \\ud800"}]}]}'
    for ctype in ("application/JSON", "text/plain", "application/x-www-form-urlencoded", ""):
        r = httpx.post(f"{s.url}/v1/chat/completions", content=bad, headers={"Content-Type": ctype}, timeout=30)
        assert r.status_code == 400, (ctype, r.status_code, r.text[:200])  # whatever the content type claims
