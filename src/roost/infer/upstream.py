"""Generation from OpenAI-compatible upstream servers (vLLM replicas) behind roost's product layer: `UpstreamEngine`
is a `GenerationEngine` (roost.infer.protocol) like the in-process `Engine`, so compose,
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

What an upstream can make roost hold is bounded (its answers are data; `roost.infer.upstream_io` reads them): an
SSE line at most `MAX_LINE` bytes (checked while it grows), a whole stream `MAX_LINE` + `STREAM_BYTES_PER_TOKEN`
per token asked for, an error body `MAX_ERROR_BODY` bytes, a model card `MAX_CARD_BYTES`, a health answer its
status line only (within `HEALTH_TIMEOUT`); compressed answers are refused. `max_tokens` counts every chunk with
text or ids (at least one token each) and allows at most `MAX_TOKEN_BYTES` of text per token. Text that is not
valid Unicode is an upstream failure. Upstream URLs are shown (metrics, messages) without their credentials.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import threading
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from roost.infer.engine import EngineStopped, Event, QueueFull, Request, Unavailable, check_request
from roost.infer.protocol import GenerationEngine, UpstreamHook
from roost.infer.sampling import SamplingParams
from roost.infer.upstream_io import (
    IDENTITY,
    MAX_CARD_BYTES,
    MAX_ERROR_BODY,
    MAX_LINE,
    UpstreamError,
    check_encoding,
    read_capped,
    redact_url,
    scrub,
    sse_lines,
)

__all__ = ["MAX_LINE", "MAX_TOKEN_BYTES", "Router", "UpstreamEngine", "UpstreamError", "fetch_cards"]

CHUNK_TIMEOUT = 60.0  # seconds an upstream may stay silent (before its first token, or between two chunks)
MAX_TOKEN_BYTES = 256  # bytes of text an upstream may send per token counted against max_tokens
STREAM_BYTES_PER_TOKEN = 16 << 10  # bytes of SSE (JSON, logprobs, keep-alives) per token asked for, plus MAX_LINE
HEALTH_TIMEOUT = 5.0  # seconds for one health check (its status line, and the card of a replica coming back)


async def fetch_cards(client: httpx.AsyncClient, url: str) -> list[Any]:
    """The upstream's model cards (`GET /v1/models`), read to at most MAX_CARD_BYTES."""
    async with client.stream("GET", f"{url}/v1/models", headers=IDENTITY, timeout=5.0) as r:
        check_encoding(r)
        raw = await read_capped(r, MAX_CARD_BYTES + 1)
    if len(raw) > MAX_CARD_BYTES:
        raise UpstreamError(502, f"a model list over {MAX_CARD_BYTES} bytes")
    cards = json.loads(raw).get("data") or []
    return cards if isinstance(cards, list) else []


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
    label: str = ""  # the URL as shown (metrics, messages): credentials redacted

    def __post_init__(self) -> None:
        self.label = redact_url(self.url)


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
        u.healthy, u.last_error = False, self.scrub(why)
        u.failures += 1

    def scrub(self, text: str) -> str:
        """`text` without any upstream's credentials."""
        return scrub(text, [u.url for u in self.upstreams])

    def any_healthy(self) -> bool:
        return any(u.healthy for u in self.upstreams)

    async def health_loop(self, client: httpx.AsyncClient, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.gather(*(self._check(client, u) for u in self.upstreams))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.health_interval)

    async def _check(self, client: httpx.AsyncClient, u: Upstream) -> None:
        try:
            async with asyncio.timeout(HEALTH_TIMEOUT):
                async with client.stream("GET", f"{u.url}/health", headers=IDENTITY, timeout=2.0) as r:
                    ok = r.status_code == 200  # the body is never read
                if ok and not u.healthy and u.card:  # coming back: it must still serve what was vouched for
                    cards = await fetch_cards(client, u.url)
                    ok = any(isinstance(c, dict) and (c.get("id"), c.get("root")) == u.card for c in cards)
                    if not ok:
                        u.last_error = "came back serving another model than the one vouched for at start-up"
        except (httpx.HTTPError, ValueError, AttributeError, UpstreamError, TimeoutError) as e:
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


@dataclass
class Tally:
    """What a request has received, counted against its `max_tokens` across replicas: a chunk with text or token
    ids counts max(ids, 1) tokens, and the text may total at most MAX_TOKEN_BYTES bytes per token allowed."""

    max_tokens: int
    tokens: int = 0
    text_bytes: int = 0

    def left(self) -> int:
        return self.max_tokens - self.tokens

    def take(self, text: str, ids: list[int], lps: list[Any]) -> tuple[str, list[int], list[Any], bool]:
        """The part of a chunk that fits, and whether the request is now full (finish "length")."""
        room = self.left()
        ids = ids[: max(0, room)]
        lps = lps[: len(ids)]
        n = max(len(ids), 1 if text else 0)
        if n > room:  # text without ids, and no token left for it
            text, n = "", len(ids)
        raw = text.encode("utf-8")
        allowed = self.max_tokens * MAX_TOKEN_BYTES - self.text_bytes
        cut = len(raw) > allowed
        if cut:
            text = raw[: max(0, allowed)].decode("utf-8", "ignore")
            raw = text.encode("utf-8")
        self.tokens += n
        self.text_bytes += len(raw)
        return text, ids, lps, cut or self.tokens >= self.max_tokens


def _finite(v: Any) -> bool:
    return type(v) in (int, float) and math.isfinite(v)


def _logprobs(lp: Any, ids: list[int], vocab: int) -> list[dict[str, Any]]:
    """vLLM's completion logprobs (tokens as "token_id:N") in the engine's shape, for these ids only (a longer list
    is not built). Each logprob must be a finite number (NaN would be invalid JSON to a client): anything else is
    an upstream failure; alternatives outside the vocabulary or not finite are dropped."""
    if not ids or not lp:
        return []
    if not isinstance(lp, dict) or not isinstance(lp.get("token_logprobs") or [], list):
        raise UpstreamError(502, "logprobs that are not in the completions shape")
    values = (lp.get("token_logprobs") or [])[: len(ids)]
    top = lp.get("top_logprobs") or []
    if not isinstance(top, list) or not all(_finite(v) for v in values):
        raise UpstreamError(502, "a logprob that is not a finite number")
    out = []
    for i, tok_lp in enumerate(values):
        pairs = []
        alts = top[i] if i < len(top) else None
        for k, v in alts.items() if isinstance(alts, dict) else ():
            tid = k.split(":", 1)[1] if isinstance(k, str) and k.startswith("token_id:") else ""
            if tid.isascii() and tid.isdigit() and int(tid) < vocab and _finite(v):
                pairs.append((int(tid), v))
        out.append({"token_id": ids[i], "logprob": tok_lp, "top": pairs})
    return out


class UpstreamEngine(GenerationEngine):
    """The `GenerationEngine` over OpenAI-compatible upstream servers (see the module docstring)."""

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
        on_upstream: UpstreamHook | None = None,
    ):
        self.tok, self.eos_ids, self.max_seq, self.served = tokenizer, eos_ids, max_seq, served
        self.vocab = tokenizer.get_vocab_size()
        self.router = Router(urls, health_interval)
        self.max_queue = max_queue
        self.max_batch = 1  # batching happens on the replicas
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

    # -- the GenerationEngine interface ----------------------------------------------------------------------------
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

    def upstreams(self) -> Sequence[Upstream]:
        return self.router.upstreams

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
        tally = Tally(req.params.max_tokens)
        state = {"streaming": False, "t0": time.perf_counter()}
        finish, error = "unavailable", ""
        try:
            while not req.cancelled:
                u = self.router.pick(tried)
                if u is None:
                    error = "no healthy upstream could serve the request"
                    finish = "unavailable" if not tally.tokens else "error"
                    break
                tried.add(u.url)
                u.outstanding += 1
                first: list[float] = []
                try:
                    finish = await self._relay(u, req, tally, state, first)
                    u.served += 1
                    self._report(u.label, "ok", first)
                    finish = "cancelled" if req.cancelled else finish
                    error = ""
                    break
                except (httpx.HTTPError, UpstreamError, ValueError, TypeError, AttributeError, KeyError) as e:
                    if isinstance(e, UpstreamError) and 400 <= e.status < 500 and e.status not in (404, 408, 429):
                        finish, error = "error", self.router.scrub(str(e))  # the request itself is refused: no retry
                        self._report(u.label, "client_error", first)
                        break
                    self.router.down(u, f"{type(e).__name__}: {e}")
                    self._report(u.label, "failed", first)
                finally:
                    u.outstanding -= 1
        finally:
            self._move(streaming=-1) if state["streaming"] else self._move(waiting=-1)
            ev = Event("done", finish_reason=finish, usage=self._usage(req, tally))
            if error:
                ev.logprobs = [{"error": error}]
            req.done = True
            req.emit(ev)

    async def _relay(self, u: Upstream, req: Request, tally: Tally, state: dict[str, Any], first: list[float]) -> str:
        """Pass one replica's chunks to the request, within its tally; the finish reason (raises on failure)."""
        finish = "stop"
        async with contextlib.aclosing(self._stream(u, req, tally)) as chunks:  # closed at once when left early
            async for text, ids, lps, reason in chunks:
                text, ids, lps, full = tally.take(text, ids, lps)
                if not first:
                    first.append(time.perf_counter() - state["t0"])
                    if not state["streaming"]:
                        state["streaming"] = True
                        self._move(waiting=-1, streaming=1)
                req.out_ids.extend(ids)
                if text or lps:
                    req.emit(Event("delta", text, token_ids=ids, logprobs=lps))
                if reason is not None:
                    finish = reason if reason in ("stop", "length") else "stop"
                if full:
                    return "length"  # roost enforces max_tokens whatever the upstream sends
                if req.cancelled:
                    break
        return finish

    def _move(self, waiting: int = 0, streaming: int = 0) -> None:
        with self._count:
            self.waiting += waiting
            self.streaming += streaming

    def _report(self, url: str, outcome: str, ttft: list[float]) -> None:
        if self.on_upstream is not None:
            self.on_upstream(url, outcome, ttft[0] if ttft else None)

    @staticmethod
    def _usage(req: Request, tally: Tally) -> dict[str, int]:
        n, m = len(req.prompt_ids), max(len(req.out_ids), tally.tokens)
        return {"prompt_tokens": n, "completion_tokens": m, "total_tokens": n + m}

    async def _stream(
        self, u: Upstream, req: Request, tally: Tally
    ) -> AsyncGenerator[tuple[str, list[int], list[Any], str | None], None]:
        """(text, token ids, logprobs, finish reason) per upstream chunk; continues after `req.out_ids`. A stream
        that ends without a finish reason, sends anything malformed or passes a budget is an upstream failure (the
        request then continues on another replica)."""
        p = req.params
        left = tally.left()
        if left <= 0:
            yield "", [], [], "length"
            return
        body = request_body(self.served, req.prompt_ids + req.out_ids, p, self.eos_ids, left)
        finished = False
        async with self.client.stream("POST", f"{u.url}/v1/completions", json=body, headers=IDENTITY) as r:
            if r.status_code != 200:
                raise UpstreamError(r.status_code, (await read_capped(r, MAX_ERROR_BODY)).decode("utf-8", "replace"))
            check_encoding(r)
            async for line in sse_lines(r.aiter_raw(), budget=MAX_LINE + left * STREAM_BYTES_PER_TOKEN):
                if not line.startswith(b"data: ") or line == b"data: [DONE]":
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
        """One streamed choice, checked: token ids in the vocabulary, text a valid Unicode string; the stop token
        and its logprob dropped together."""
        if not isinstance(c, dict):
            raise UpstreamError(502, "a choice that is not a JSON object")
        raw = c.get("token_ids") or []
        if not isinstance(raw, list) or not all(type(t) is int and 0 <= t < self.vocab for t in raw):
            raise UpstreamError(502, "token ids outside the vocabulary")
        text = c.get("text") or ""
        if not isinstance(text, str):
            raise UpstreamError(502, "a text that is not a string")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise UpstreamError(502, "a text that is not valid Unicode (a lone surrogate)") from None
        lps = _logprobs(c.get("logprobs"), raw, self.vocab) if p.logprobs is not None else []
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
