"""Generation from OpenAI-compatible upstream servers (vLLM replicas) behind roost's product layer: `UpstreamEngine`
has the in-process `Engine`'s interface (submit / complete / queue_depth / active / shutdown / run), so compose,
reply, the leak guard, `/v1/ask`, query expansion, labels, keys, metrics and error shapes work unchanged on it.

    roost serve smollm2 --upstream http://10.0.0.5:8000 --upstream http://10.0.0.6:8000
    engine = UpstreamEngine(["http://127.0.0.1:8001"], tok, eos_ids, max_seq=2048, served="smollm2")

roost tokenises (with the model folder's own tokenizer and chat template) and sends token ids, so prompts are
the same on both backends. The `Router` health-checks every upstream (`GET /health`), sends each request to the
healthy one with the fewest outstanding requests, and when an upstream fails — before the first token or in the
middle of a stream — continues the request on another replica from the tokens generated so far (the prompt plus
those tokens is a prefix the next replica's prefix cache serves cheaply), so a client sees one uninterrupted
stream. With no healthy upstream, `submit` raises `Unavailable` (503 + Retry-After). Streams pass through chunk by
chunk, without buffering.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from roost.infer.engine import Engine, EngineStopped, Event, QueueFull, Request, Unavailable, check_request
from roost.infer.sampling import SamplingParams

CHUNK_TIMEOUT = 60.0  # seconds an upstream may stay silent (before its first token, or between two chunks)
MAX_LINE = 1 << 20  # bytes in one SSE line from an upstream


class UpstreamError(Exception):
    """An upstream answered with an error status."""

    def __init__(self, status: int, body: str):
        super().__init__(f"HTTP {status}: {body[:300]}")
        self.status = status


@dataclass
class Upstream:
    """One replica and what the router knows of it."""

    url: str
    healthy: bool = True
    outstanding: int = 0
    served: int = 0
    failures: int = 0
    last_error: str = ""
    card: tuple[Any, Any] | None = None  # (served id, root) vouched for at start-up


class Router:
    """Least-outstanding-requests routing over healthy upstreams, with a health loop."""

    def __init__(self, urls: list[str], health_interval: float = 1.0):
        if not urls:
            raise ValueError("at least one upstream URL is needed")
        self.upstreams = [Upstream(u.rstrip("/")) for u in urls]
        self.health_interval = health_interval
        self._turn = 0

    def pick(self, exclude: set[str]) -> Upstream | None:
        """The healthy upstream with the fewest outstanding requests (round robin among equals), not in `exclude`;
        any untried one when none is marked healthy (its health may have come back)."""
        cands = [u for u in self.upstreams if u.healthy and u.url not in exclude]
        if not cands:
            return None
        self._turn += 1
        n = len(self.upstreams)
        return min(cands, key=lambda u: (u.outstanding, (self.upstreams.index(u) - self._turn) % n))

    def down(self, u: Upstream, why: str) -> None:
        u.healthy, u.last_error = False, why
        u.failures += 1

    def any_healthy(self) -> bool:
        return any(u.healthy for u in self.upstreams)

    async def health_loop(self, client: httpx.AsyncClient, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.gather(*(self._check(client, u) for u in self.upstreams))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.health_interval)

    async def _check(self, client: httpx.AsyncClient, u: Upstream) -> None:
        try:
            r = await client.get(f"{u.url}/health", timeout=2.0)
            ok = r.status_code == 200
            if ok and not u.healthy and u.card:  # coming back: it must still serve what was vouched for at start
                cards = (await client.get(f"{u.url}/v1/models", timeout=5.0)).json().get("data") or []
                ok = any(isinstance(c, dict) and (c.get("id"), c.get("root")) == u.card for c in cards)
                if not ok:
                    u.last_error = "came back serving another model than the one vouched for at start-up"
        except (httpx.HTTPError, ValueError, AttributeError) as e:
            ok, u.last_error = False, f"{type(e).__name__}"
        u.healthy = ok


def request_body(served: str, prompt: list[int], p: SamplingParams, eos: set[int], max_tokens: int) -> dict[str, Any]:
    """The upstream's /v1/completions body for these sampling params (token ids in, token ids back)."""
    stop_ids = sorted(set(p.stop_token_ids) | (set() if p.ignore_eos else eos))
    body: dict[str, Any] = {
        "model": served,
        "prompt": prompt,
        "max_tokens": max_tokens,
        "temperature": p.temperature,
        "top_p": p.top_p,
        "top_k": p.top_k if p.top_k > 0 else -1,
        "min_p": p.min_p,
        "repetition_penalty": p.repetition_penalty,
        "frequency_penalty": p.frequency_penalty,
        "presence_penalty": p.presence_penalty,
        "stop": p.stop,
        "stop_token_ids": stop_ids,
        "ignore_eos": p.ignore_eos,
        "skip_special_tokens": True,
        "stream": True,
        "stream_options": {"include_usage": True},
        "return_token_ids": True,
    }
    if p.seed is not None:
        body["seed"] = p.seed
    if p.logprobs is not None:
        body["logprobs"] = p.logprobs
        body["return_tokens_as_token_ids"] = True
    return body


def _logprobs(lp: dict[str, Any] | None, ids: list[int]) -> list[dict[str, Any]]:
    """vLLM's completion logprobs (tokens as "token_id:N") in the engine's shape."""
    if not lp:
        return []
    out = []
    for i, tok_lp in enumerate(lp.get("token_logprobs") or []):
        top = lp.get("top_logprobs") or []
        pairs = [(int(k.split(":", 1)[1]), v) for k, v in (top[i] or {}).items()] if i < len(top) else []
        out.append({"token_id": ids[i] if i < len(ids) else -1, "logprob": tok_lp, "top": pairs})
    return out


class UpstreamEngine:
    """The `Engine` interface over OpenAI-compatible upstream servers (see the module docstring)."""

    complete = Engine.complete

    def __init__(
        self,
        urls: list[str],
        tokenizer: Any,
        eos_ids: set[int],
        max_seq: int,
        served: str,
        max_queue: int = 256,
        health_interval: float = 1.0,
        chunk_timeout: float = CHUNK_TIMEOUT,
        on_upstream: Callable[[str, str, float | None], None] | None = None,
    ):
        self.tok, self.eos_ids, self.max_seq, self.served = tokenizer, eos_ids, max_seq, served
        self.vocab = tokenizer.get_vocab_size()
        self.router = Router(urls, health_interval)
        self.max_queue = max_queue
        self.chunk_timeout = chunk_timeout
        self.on_upstream = on_upstream  # (upstream url, outcome, time to first token or None) for metrics
        self.running = True
        self.waiting = 0  # submitted, no token yet
        self.streaming = 0
        self._count = threading.Lock()  # the counters move on the caller's thread and on the loop's
        self._stopped = threading.Event()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="roost-upstream")
        self._thread.start()
        self._stop = asyncio.Event()
        self.client = self._call(self._client())
        self._health = asyncio.run_coroutine_threadsafe(self.router.health_loop(self.client, self._stop), self.loop)

    async def _client(self) -> httpx.AsyncClient:
        self._stop = asyncio.Event()
        limits = httpx.Limits(max_connections=1024, max_keepalive_connections=256)
        # `read` bounds the wait for the first token and between chunks: a replica that goes silent is failed over
        timeout = httpx.Timeout(connect=3.0, read=self.chunk_timeout, write=30.0, pool=30.0)
        return httpx.AsyncClient(limits=limits, timeout=timeout)

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    # -- the Engine interface ------------------------------------------------------------------------------------
    def submit(self, prompt_ids: list[int], params: SamplingParams, emit: Callable[[Event], None]) -> Request:
        """Send a request upstream; raises ValueError (client error), QueueFull, Unavailable or EngineStopped."""
        check_request(prompt_ids, params, self.max_seq, self.vocab)
        if not self.running:
            raise EngineStopped("the server is shutting down")
        if not self.router.any_healthy():
            raise Unavailable("no healthy upstream")
        if self.waiting + self.streaming >= self.max_queue:
            raise QueueFull(f"{self.waiting + self.streaming} requests are outstanding (cap {self.max_queue})")
        req = Request(prompt_ids, params, emit)
        self._move(waiting=1)
        fut = asyncio.run_coroutine_threadsafe(self._serve(req), self.loop)

        def cancel() -> None:  # a client that went away stops the upstream request now, not at its next chunk
            req.cancelled = True
            self.loop.call_soon_threadsafe(fut.cancel)

        req.cancel = cancel  # type: ignore[method-assign]
        return req

    def queue_depth(self) -> int:
        return self.waiting

    def active(self) -> int:
        return self.streaming

    def kv_usage(self) -> float:
        return 0.0  # the upstreams' own metrics say this

    def run(self) -> None:
        """Block until `shutdown()` (the server's main thread waits here, as it drives the in-process engine)."""
        self._stopped.wait()

    def shutdown(self, drain_timeout: float = 10.0) -> None:
        self.running = False
        with contextlib.suppress(Exception):
            self.loop.call_soon_threadsafe(self._stop.set)
            self._health.result(timeout=drain_timeout)
        with contextlib.suppress(Exception):
            self._call(self.client.aclose())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._stopped.set()

    # -- one request ---------------------------------------------------------------------------------------------
    async def _serve(self, req: Request) -> None:
        tried: set[str] = set()
        streaming = False
        t0 = time.perf_counter()
        finish, error = "unavailable", ""
        try:
            while not req.cancelled:
                u = self.router.pick(tried)
                if u is None:
                    error = "no healthy upstream could serve the request"
                    finish = "unavailable" if not req.out_ids else "error"
                    break
                tried.add(u.url)
                u.outstanding += 1
                first = None
                try:
                    async for text, ids, lps, reason in self._stream(u, req):
                        ids, lps = ids[: max(0, req.params.max_tokens - len(req.out_ids))], lps[: len(ids)]
                        if first is None:
                            first = time.perf_counter() - t0
                            if not streaming:
                                streaming = True
                                self._move(waiting=-1, streaming=1)
                        req.out_ids.extend(ids)
                        if text or lps:
                            req.emit(Event("delta", text, token_ids=ids, logprobs=lps))
                        if reason is not None:
                            finish = reason if reason in ("stop", "length") else "stop"
                        if len(req.out_ids) >= req.params.max_tokens:
                            finish = "length"  # roost enforces max_tokens whatever the upstream sends
                            break
                        if req.cancelled:
                            break
                    u.served += 1
                    self._report(u.url, "ok", first)
                    finish = "cancelled" if req.cancelled else finish
                    error = ""
                    break
                except (httpx.HTTPError, UpstreamError, ValueError, TypeError, AttributeError, KeyError) as e:
                    if isinstance(e, UpstreamError) and 400 <= e.status < 500 and e.status not in (404, 408, 429):
                        finish, error = "error", str(e)  # the request itself is refused: no retry
                        self._report(u.url, "client_error", first)
                        break
                    self.router.down(u, f"{type(e).__name__}: {e}")
                    self._report(u.url, "failed", first)
                finally:
                    u.outstanding -= 1
        finally:
            self._move(streaming=-1) if streaming else self._move(waiting=-1)
            ev = Event("done", finish_reason=finish, usage=self._usage(req))
            if error:
                ev.logprobs = [{"error": error}]
            req.done = True
            req.emit(ev)

    def _move(self, waiting: int = 0, streaming: int = 0) -> None:
        with self._count:
            self.waiting += waiting
            self.streaming += streaming

    def _report(self, url: str, outcome: str, ttft: float | None) -> None:
        if self.on_upstream is not None:
            self.on_upstream(url, outcome, ttft)

    @staticmethod
    def _usage(req: Request) -> dict[str, int]:
        n, m = len(req.prompt_ids), len(req.out_ids)
        return {"prompt_tokens": n, "completion_tokens": m, "total_tokens": n + m}

    async def _stream(self, u: Upstream, req: Request) -> AsyncIterator[tuple[str, list[int], list[Any], str | None]]:
        """(text, token ids, logprobs, finish reason) per upstream chunk; continues after `req.out_ids`. A stream
        that ends without a finish reason, or sends anything malformed, is an upstream failure (the request then
        continues on another replica)."""
        p = req.params
        left = p.max_tokens - len(req.out_ids)
        if left <= 0:
            yield "", [], [], "length"
            return
        body = request_body(self.served, req.prompt_ids + req.out_ids, p, self.eos_ids, left)
        finished = False
        async with self.client.stream("POST", f"{u.url}/v1/completions", json=body) as r:
            if r.status_code != 200:
                raise UpstreamError(r.status_code, (await r.aread())[:2000].decode("utf-8", "replace"))
            async for line in r.aiter_lines():
                if len(line) > MAX_LINE:
                    raise UpstreamError(502, f"an SSE line over {MAX_LINE} bytes")
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if not isinstance(chunk, dict):
                    raise UpstreamError(502, "a chunk that is not a JSON object")
                if "error" in chunk and not chunk.get("choices"):
                    raise UpstreamError(502, json.dumps(chunk["error"])[:500])
                for c in chunk.get("choices") or []:
                    text, ids, lps, reason = self._choice(c, p)
                    finished = finished or reason is not None
                    yield text, ids, lps, reason
                if req.cancelled:
                    return
        if not finished:
            raise UpstreamError(502, "the stream ended without a finish reason")

    def _choice(self, c: Any, p: SamplingParams) -> tuple[str, list[int], list[Any], str | None]:
        """One streamed choice, checked: token ids in the vocabulary, text a string; the stop token and its logprob
        dropped together."""
        if not isinstance(c, dict):
            raise UpstreamError(502, "a choice that is not a JSON object")
        raw = c.get("token_ids") or []
        if not isinstance(raw, list) or not all(isinstance(t, int) and 0 <= t < self.vocab for t in raw):
            raise UpstreamError(502, "token ids outside the vocabulary")
        text = c.get("text") or ""
        if not isinstance(text, str):
            raise UpstreamError(502, "a text that is not a string")
        lps = _logprobs(c.get("logprobs"), raw)
        for lp in lps:  # the alternatives are decoded by the API: keep only ids of this vocabulary
            lp["top"] = [(t, v) for t, v in lp["top"] if 0 <= t < self.vocab and isinstance(v, int | float)]
        keep = [i for i, t in enumerate(raw) if not self._stop_token(t, p)]
        reason = c.get("finish_reason")
        return (
            text,
            [raw[i] for i in keep],
            [lps[i] for i in keep if i < len(lps)],
            None if reason is None else str(reason),
        )

    def _stop_token(self, t: int, p: SamplingParams) -> bool:
        """The token that ended the stream (EOS or a stop id): the in-process engine does not return it either."""
        return (t in self.eos_ids and not p.ignore_eos) or t in p.stop_token_ids
