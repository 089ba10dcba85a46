"""What every generation route of `roost serve MODEL` shares: `Generation` (the engine, the served model's name,
sha256 and chat template, metrics, the leak guard and the post store) and what the routes do with it — sampling
parameters from a request, submitting to the engine, waiting for events while watching the client, OpenAI's
response envelope and SSE streams.

The routes, by endpoint group: roost.serve.completions_api (`/v1/completions`, `/v1/chat/completions`) and
roost.serve.suggest_api (`/v1/compose`, `/v1/reply`), added by `roost.serve.app.build_app` when a model is
served; errors are `ApiError`s (OpenAI's shape).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import StreamingResponse

from roost.infer.chat import ChatTemplate
from roost.infer.engine import Event, QueueFull, check_done
from roost.infer.engine import Request as EngineRequest
from roost.infer.guard import LeakGuard
from roost.infer.protocol import GenerationEngine
from roost.infer.sampling import SamplingParams
from roost.serve.errors import ApiError
from roost.serve.http import client_gone
from roost.serve.metrics import Metrics
from roost.serve.schemas import ChatRequest, CompletionRequest

DISCONNECT_EVERY = 0.5  # seconds a generation waits for an event before it looks whether its client left

ChoiceOf = Callable[[int, Event], dict[str, Any]]  # (choice index, event) → one choice of a chunk


def new_usage() -> dict[str, int]:
    return {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}


def add_usage(usage: dict[str, int], ev: Event) -> None:
    for key in usage:
        usage[key] += (ev.usage or {}).get(key, 0)


def sse(obj: dict[str, Any]) -> str:
    return f"data: {json.dumps(obj)}\n\n"


@dataclass
class Generation:
    """The served model and what its routes share; passed explicitly to every generation route."""

    engine: GenerationEngine
    model_name: str
    model_sha256: str
    template: ChatTemplate
    metrics: Metrics
    guard: LeakGuard | None = None
    store_db: Path | str | None = None

    @property
    def prov(self) -> dict[str, str]:
        """The label every generated text carries."""
        return {"model": self.model_name, "model_sha256": self.model_sha256}

    def check_model(self, name: str | None) -> None:
        if name is not None and name != self.model_name:
            raise ApiError(
                404,
                f"model {name!r} does not exist; this server serves {self.model_name!r}",
                param="model",
                code="model_not_found",
            )

    def params_of(
        self, req: CompletionRequest | ChatRequest, max_tokens: int | None, logprobs: int | None
    ) -> SamplingParams:
        """The OpenAI routes' sampling: the request's values; max_tokens min(256, context / 2) when it has none."""
        stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
        p = SamplingParams(
            max_tokens=max_tokens or min(256, self.engine.max_seq // 2),
            temperature=req.temperature,
            top_k=req.top_k,
            top_p=req.top_p,
            min_p=req.min_p,
            repetition_penalty=req.repetition_penalty,
            frequency_penalty=req.frequency_penalty,
            presence_penalty=req.presence_penalty,
            stop=stop,
            stop_token_ids=list(req.stop_token_ids or []),
            seed=req.seed,
            logprobs=logprobs,
        )
        try:
            p.check()
        except ValueError as e:
            raise ApiError(400, str(e), code="invalid_value") from None
        return p

    def encode(self, text: str) -> list[int]:
        return self.engine.tok.encode(text, add_special_tokens=False).ids

    def submit(self, ids: list[int], p: SamplingParams, q: asyncio.Queue[tuple[int, Event]], idx: int) -> EngineRequest:
        loop = asyncio.get_running_loop()

        def emit(ev: Event) -> None:  # on the engine's thread
            loop.call_soon_threadsafe(q.put_nowait, (idx, ev))

        try:
            return self.engine.submit(ids, p, emit)
        except QueueFull as e:
            raise ApiError(
                429,
                f"server busy: {e}; retry shortly",
                "rate_limit_error",
                code="queue_full",
                headers={"Retry-After": "1"},
            ) from None
        except ValueError as e:
            code = "context_length_exceeded" if "context length" in str(e) else "invalid_value"
            raise ApiError(400, str(e), param="max_tokens" if code != "invalid_value" else None, code=code) from None

    async def run(
        self, ids_list: list[list[int]], p: SamplingParams, n: int, request: Request
    ) -> AsyncIterator[tuple[int, Event]]:
        """Submit n requests per prompt; yield (choice index, event) until all are done. A client that leaves is
        noticed at its next event or within DISCONNECT_EVERY seconds, and its requests are cancelled."""
        q: asyncio.Queue[tuple[int, Event]] = asyncio.Queue()
        reqs: list[EngineRequest] = []
        try:
            for ids in ids_list:
                for i in range(n):
                    reqs.append(self.submit(ids, p.nth(i), q, len(reqs)))
            t0, first, done = time.perf_counter(), True, 0
            gone = client_gone(request.scope)
            while done < len(reqs):
                try:
                    idx, ev = await asyncio.wait_for(q.get(), timeout=DISCONNECT_EVERY)
                except TimeoutError:
                    idx = -1
                if gone is not None:
                    left = gone.is_set()
                else:  # an app without Guard: Starlette's own check
                    left = idx < 0 and await request.is_disconnected()
                if left:
                    return  # the client left: the requests are cancelled below
                if idx < 0:
                    continue
                if first and ev.kind == "delta":
                    self.metrics.ttft.observe(time.perf_counter() - t0)
                    first = False
                if ev.kind == "done":
                    check_done(ev)  # no backend could serve it: 503, before anything was sent
                    done += 1
                    self._observe_done(ev, time.perf_counter() - t0)
                yield idx, ev
        finally:
            for r in reqs:
                if not r.done:
                    r.cancel()

    def _observe_done(self, ev: Event, dt: float) -> None:
        u = ev.usage or {}
        self.metrics.tokens.inc(u.get("completion_tokens", 0))
        if dt > 0 and u.get("completion_tokens"):
            self.metrics.tps.observe(u["completion_tokens"] / dt)

    def envelope(
        self, rid: str, obj: str, now: int, choices: list[Any], usage: dict[str, int] | None
    ) -> dict[str, Any]:
        return {
            "id": rid,
            "object": obj,
            "created": now,
            "model": self.model_name,
            "choices": choices,
            "usage": usage,
            "ai_generated": True,
            "model_sha256": self.model_sha256,
        }

    def stream(
        self,
        first: tuple[int, Event],
        gen: AsyncIterator[tuple[int, Event]],
        head: tuple[str, str, int],
        choice_of: ChoiceOf,
        include_usage: bool,
    ) -> StreamingResponse:
        """SSE chunks, one per engine event, then a usage chunk when asked for, then [DONE]; `head` is the
        response's (id, object, created)."""
        rid, obj, now = head
        usage = new_usage()

        async def events() -> AsyncIterator[tuple[int, Event]]:
            yield first
            async for item in gen:
                yield item

        async def chunks() -> AsyncIterator[str]:
            async for idx, ev in events():
                if ev.kind == "done":
                    add_usage(usage, ev)
                yield sse(self.envelope(rid, obj, now, [choice_of(idx, ev)], None))
            if include_usage:
                yield sse(self.envelope(rid, obj, now, [], usage))
            yield "data: [DONE]\n\n"

        return StreamingResponse(chunks(), media_type="text/event-stream")
