"""A hostile OpenAI-compatible upstream for the security tests: a real FastAPI app on a real uvicorn on 127.0.0.1,
whose behaviour per endpoint is switched by the test while it runs (`Hostile.modes`).

    up = Hostile(eos=2)                 # serving on up.url; up.modes["completions"] = "endless_line"; up.stop()

Every endless answer stops on its own after `BIG` bytes (so an unfixed roost fails its test instead of eating
the machine) and records, in `gone`, that its client closed the connection.
"""

from __future__ import annotations

import asyncio
import json
import threading
import zlib
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from tests.serve.conftest import Server

BIG = 300 << 20  # bytes an endless answer sends at most
PIECE = b"x" * (1 << 16)


def _chunk(ids: list[int], text: str, reason: str | None = None) -> bytes:
    choice = {"index": 0, "text": text, "token_ids": ids, "finish_reason": reason, "logprobs": None}
    return b"data: " + json.dumps({"choices": [choice]}).encode() + b"\n\n"


def _bomb() -> bytes:
    """A gzip stream of one SSE line of BIG bytes without a newline (about 300 KB compressed)."""
    z = zlib.compressobj(1, zlib.DEFLATED, 31)
    out = [z.compress(b"data: ")]
    block = b"x" * (1 << 20)
    out += [z.compress(block) for _ in range(BIG >> 20)]
    return b"".join(out) + z.flush()


class Hostile:
    """The fake upstream and its switches (see the module docstring for the modes)."""

    def __init__(self, eos: int, root: str = "/nowhere", max_model_len: int = 4096, per_chunk: int = 1):
        self.eos, self.root, self.max_model_len, self.per_chunk = eos, root, max_model_len, per_chunk
        self.modes = {"completions": "good", "health": "ok", "models": "ok"}
        self.gone = threading.Event()  # set when a client closed a streamed answer before its end
        self.auth: set[str] = set()  # Authorization headers received
        self.calls = 0  # completion requests received
        self._bomb: bytes | None = None
        self.server = Server(self._app())
        self.url = self.server.url

    def stop(self) -> None:
        self.server.stop()

    def _endless(self, head: bytes, limit: int = BIG, piece: bytes = PIECE) -> AsyncIterator[bytes]:
        async def gen() -> AsyncIterator[bytes]:
            try:
                yield head
                for _ in range(limit // len(piece)):
                    yield piece
                    await asyncio.sleep(0)
            except BaseException:
                self.gone.set()
                raise

        return gen()

    def _stream(self, mode: str, body: dict[str, Any]) -> AsyncIterator[bytes]:
        async def gen() -> AsyncIterator[bytes]:
            try:
                if mode in ("slow", "crawl"):  # a valid token every 20 ms (crawl: 250 ms), for ten minutes
                    for _ in range(30_000):
                        yield _chunk([7], "a")
                        await asyncio.sleep(0.02 if mode == "slow" else 0.25)
                elif mode == "text_only":  # text without token ids, never a finish reason
                    line = _chunk([], "y" * 100)
                    for _ in range(BIG // len(line)):
                        yield line
                        await asyncio.sleep(0)
                elif mode == "surrogate":
                    yield b'data: {"choices": [{"index": 0, "text": "ok \\ud800", "token_ids": [5]}]}\n\n'
                    yield _chunk([self.eos], "", "stop")
                elif mode == "nan_logprobs":  # NaN is not JSON: a client's strict parser would fail
                    yield b'data: {"choices": [{"index": 0, "text": "x", "token_ids": [5], "logprobs": '
                    yield b'{"token_logprobs": [NaN], "top_logprobs": [{"token_id:5": NaN}]}}]}\n\n'
                    yield _chunk([self.eos], "", "stop")
                elif mode == "bool_ids":  # true is not a token id
                    yield b'data: {"choices": [{"index": 0, "text": "x", "token_ids": [true, 5]}]}\n\n'
                    yield _chunk([self.eos], "", "stop")
                elif mode == "long_logprobs":  # 300,000 logprobs for one token (a 0.9 MB line)
                    lp = {"token_logprobs": [0] * 300_000, "top_logprobs": []}
                    yield b"data: " + json.dumps({"choices": [{"index": 0, "text": "x", "token_ids": [5],
                                                              "logprobs": lp}]}).encode() + b"\n\n"  # fmt: skip
                    yield _chunk([self.eos], "", "stop")
                elif mode == "firehose":  # max_tokens tokens as fast as possible, per_chunk a chunk, 250 bytes each
                    for _ in range(int(body.get("max_tokens") or 16) // self.per_chunk):
                        yield _chunk([6] * self.per_chunk, "w" * 250 * self.per_chunk)
                    yield _chunk([self.eos], "", "stop")
                else:  # good: three tokens and the stop token
                    for n in range(3):
                        yield _chunk([5 + n], "x")
                    yield _chunk([self.eos], "", "stop")
                yield b"data: [DONE]\n\n"
            except BaseException:
                self.gone.set()
                raise

        return gen()

    def _app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/health")
        async def health(request: Request) -> Response:
            self.auth.add(request.headers.get("authorization", ""))
            if self.modes["health"] == "endless":
                return StreamingResponse(self._endless(b"{"), media_type="application/json")
            return JSONResponse({"ok": "yes"})

        @app.get("/v1/models")
        async def models() -> Response:
            if self.modes["models"] == "endless":
                return StreamingResponse(self._endless(b'{"data": ["'), media_type="application/json")
            return JSONResponse({"data": [{"id": "tiny", "root": self.root, "max_model_len": self.max_model_len}]})

        @app.post("/v1/completions")
        async def completions(request: Request) -> Response:
            self.auth.add(request.headers.get("authorization", ""))
            self.calls += 1
            body = await request.json()
            mode = self.modes["completions"]
            if mode == "endless_line":
                return StreamingResponse(self._endless(b"data: "), media_type="text/event-stream")
            if mode == "endless_error":
                return StreamingResponse(self._endless(b"upstream trouble: "), status_code=500)
            if mode == "fail":
                return JSONResponse({"error": "down"}, status_code=503)
            if mode == "gzip":
                self._bomb = self._bomb or _bomb()
                return Response(self._bomb, media_type="text/event-stream", headers={"Content-Encoding": "gzip"})
            return StreamingResponse(self._stream(mode, body), media_type="text/event-stream")

        return app
