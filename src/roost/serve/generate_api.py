"""The generation routes of `roost serve MODEL`: OpenAI-compatible `/v1/completions` and `/v1/chat/completions`
(with SSE streaming and log-probabilities) and roost's `/v1/compose` and `/v1/reply`.

Added to the app by `roost.serve.app.build_app` when a model is served; errors are `ApiError`s (OpenAI's shape).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

from roost.infer.chat import ChatTemplate
from roost.infer.compose import COMPOSE_SYSTEM, REPLY_SYSTEM, ComposeConfig, Stopped, chat_prompt, suggest
from roost.infer.engine import Engine, Event, QueueFull, check_done
from roost.infer.guard import LeakGuard
from roost.infer.sampling import SamplingParams
from roost.serve.errors import ApiError
from roost.serve.http import client_gone
from roost.serve.schemas import (
    ChatRequest,
    CompletionRequest,
    ComposeRequest,
    ReplyRequest,
    SuggestResponse,
)

DISCONNECT_EVERY = 0.5  # seconds a generation waits for an event before it looks whether its client left


def add_generation_routes(
    app: FastAPI,
    engine: Engine,
    metrics: Any,
    model_name: str,
    model_sha256: str,
    guard: LeakGuard | None,
    store_db: Path | str | None,
    chat_template: ChatTemplate | None,
) -> None:
    prov = {"model": model_name, "model_sha256": model_sha256}

    # -- helpers -------------------------------------------------------------------------------------------------------
    def check_model(name: str | None) -> None:
        if name is not None and name != model_name:
            raise ApiError(
                404,
                f"model {name!r} does not exist; this server serves {model_name!r}",
                param="model",
                code="model_not_found",
            )

    def params_of(req: CompletionRequest | ChatRequest, max_tokens: int | None, logprobs: int | None) -> SamplingParams:
        stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
        p = SamplingParams(
            max_tokens=max_tokens or min(256, engine.max_seq // 2),
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

    def submit(ids: list[int], p: SamplingParams, q: asyncio.Queue[tuple[int, Event]], idx: int) -> Any:
        loop = asyncio.get_running_loop()
        try:
            return engine.submit(ids, p, lambda ev: loop.call_soon_threadsafe(q.put_nowait, (idx, ev)))
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
        ids_list: list[list[int]], p: SamplingParams, n: int, request: Request
    ) -> AsyncIterator[tuple[int, Event]]:
        """Submit n requests per prompt; yield (choice index, event) until all are done. A client that leaves is
        noticed at its next event or within DISCONNECT_EVERY seconds, and its requests are cancelled."""
        q: asyncio.Queue[tuple[int, Event]] = asyncio.Queue()
        reqs = []
        k = 0
        try:
            for ids in ids_list:
                for i in range(n):
                    reqs.append(submit(ids, p.nth(i), q, k))
                    k += 1
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
                    metrics.ttft.observe(time.perf_counter() - t0)
                    first = False
                if ev.kind == "done":
                    check_done(ev)  # no backend could serve it: 503, before anything was sent
                    done += 1
                    u = ev.usage or {}
                    metrics.tokens.inc(u.get("completion_tokens", 0))
                    dt = time.perf_counter() - t0
                    if dt > 0 and u.get("completion_tokens"):
                        metrics.tps.observe(u["completion_tokens"] / dt)
                yield idx, ev
        finally:
            for r in reqs:
                if not r.done:
                    r.cancel()

    def encode_prompt(prompt: str | list[str] | list[int]) -> list[list[int]]:
        if isinstance(prompt, str):
            return [engine.tok.encode(prompt, add_special_tokens=False).ids]
        if prompt and all(isinstance(x, int) for x in prompt):
            return [list(prompt)]  # type: ignore[arg-type]
        if not prompt:
            raise ApiError(400, "prompt is empty", param="prompt", code="invalid_value")
        return [engine.tok.encode(s, add_special_tokens=False).ids for s in prompt]  # type: ignore[union-attr]

    template = chat_template or ChatTemplate(None)

    def render_chat(req: ChatRequest) -> list[int]:
        msgs = []
        for m in req.messages:
            if isinstance(m.content, list):
                text = "".join(str(c.get("text", "")) for c in m.content if isinstance(c, dict))
            else:
                text = m.content or ""
            msgs.append({"role": "system" if m.role == "developer" else m.role, "content": text})
        try:
            prompt = template.render(msgs)
        except ValueError as e:
            raise ApiError(400, str(e), param="messages", code="invalid_value") from None
        return engine.tok.encode(prompt, add_special_tokens=False).ids

    def add_usage(usage: dict[str, int], ev: Event) -> None:
        for key in usage:
            usage[key] += (ev.usage or {}).get(key, 0)

    def stream_of(
        first: tuple[int, Event],
        gen: AsyncIterator[tuple[int, Event]],
        rid: str,
        obj: str,
        now: int,
        choice_of: Any,
        include_usage: bool,
    ) -> StreamingResponse:
        """SSE chunks, one per engine event, then a usage chunk when asked for, then [DONE]."""
        usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}

        async def events() -> AsyncIterator[tuple[int, Event]]:
            yield first
            async for item in gen:
                yield item

        async def chunks() -> AsyncIterator[str]:
            async for idx, ev in events():
                if ev.kind == "done":
                    add_usage(usage, ev)
                yield sse(envelope(rid, obj, now, [choice_of(idx, ev)], None))
            if include_usage:
                yield sse(envelope(rid, obj, now, [], usage))
            yield "data: [DONE]\n\n"

        return StreamingResponse(chunks(), media_type="text/event-stream")

    def envelope(rid: str, obj: str, now: int, choices: list[Any], usage: dict[str, int] | None) -> dict[str, Any]:
        return {
            "id": rid,
            "object": obj,
            "created": now,
            "model": model_name,
            "choices": choices,
            "usage": usage,
            "ai_generated": True,
            "model_sha256": model_sha256,
        }

    def sse(obj: dict[str, Any]) -> str:
        return f"data: {json.dumps(obj)}\n\n"

    # -- routes ----------------------------------------------------------------------------------------------------
    @app.post("/v1/completions")
    async def completions(req: CompletionRequest, request: Request) -> Any:
        check_model(req.model)
        prompts = encode_prompt(req.prompt)
        p = params_of(req, req.max_tokens, req.logprobs)
        rid, now = f"cmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        texts = {i: "" for i in range(len(prompts) * req.n)}
        reasons: dict[int, str | None] = {}
        lps: dict[int, list[dict[str, Any]]] = {i: [] for i in texts}
        usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}

        def lp_obj(items: list[dict[str, Any]]) -> dict[str, Any] | None:
            if req.logprobs is None:
                return None
            dec = engine.tok.decode
            return {
                "tokens": [dec([x["token_id"]]) for x in items],
                "token_logprobs": [x["logprob"] for x in items],
                "top_logprobs": [{dec([t]): lp for t, lp in x["top"]} for x in items],
                "text_offset": [],
            }

        gen = run(prompts, p, req.n, request)
        if req.stream:
            first = await anext(gen)  # errors (429, 400) surface before the stream starts

            def choice_of(idx: int, ev: Event) -> dict[str, Any]:
                lp = lp_obj(ev.logprobs) if ev.kind == "delta" else None
                return {"index": idx, "text": ev.text, "logprobs": lp, "finish_reason": ev.finish_reason}

            include = bool(req.stream_options and req.stream_options.include_usage)
            return stream_of(first, gen, rid, "text_completion", now, choice_of, include)
        async for idx, ev in gen:
            texts[idx] += ev.text
            if ev.kind == "delta":
                lps[idx].extend(ev.logprobs)
            else:
                reasons[idx] = ev.finish_reason
                add_usage(usage, ev)
        choices = [
            {
                "index": i,
                "text": (engine.tok.decode(prompts[i // req.n]) if req.echo else "") + texts[i],
                "logprobs": lp_obj(lps[i]),
                "finish_reason": reasons.get(i),
            }
            for i in sorted(texts)
        ]
        return envelope(rid, "text_completion", now, choices, usage)

    @app.post("/v1/chat/completions")
    async def chat(req: ChatRequest, request: Request) -> Any:
        check_model(req.model)
        ids = await asyncio.to_thread(render_chat, req)  # a model's template never holds the event loop
        want_lp = (req.top_logprobs or 0) if req.logprobs else None
        p = params_of(req, req.max_completion_tokens or req.max_tokens, want_lp)
        rid, now = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}

        def lp_content(items: list[dict[str, Any]]) -> dict[str, Any] | None:
            if not req.logprobs:
                return None
            dec = engine.tok.decode
            return {
                "content": [
                    {
                        "token": dec([x["token_id"]]),
                        "logprob": x["logprob"],
                        "bytes": list(dec([x["token_id"]]).encode()),
                        "top_logprobs": [
                            {"token": dec([t]), "logprob": lp, "bytes": list(dec([t]).encode())} for t, lp in x["top"]
                        ],
                    }
                    for x in items
                ]
            }

        gen = run([ids], p, req.n, request)
        if req.stream:
            first = await anext(gen)
            started: set[int] = set()

            def chat_choice(idx: int, ev: Event) -> dict[str, Any]:
                delta: dict[str, Any] = {}
                if idx not in started:  # the first chunk of each choice names the role
                    delta["role"] = "assistant"
                    started.add(idx)
                if ev.kind == "delta":
                    delta["content"] = ev.text
                lp = lp_content(ev.logprobs) if ev.kind == "delta" else None
                return {"index": idx, "delta": delta, "finish_reason": ev.finish_reason, "logprobs": lp}

            include = bool(req.stream_options and req.stream_options.include_usage)
            return stream_of(first, gen, rid, "chat.completion.chunk", now, chat_choice, include)
        texts: dict[int, str] = {}
        reasons: dict[int, str | None] = {}
        lps: dict[int, list[dict[str, Any]]] = {}
        async for idx, ev in gen:
            texts[idx] = texts.get(idx, "") + ev.text
            lps.setdefault(idx, []).extend(ev.logprobs if ev.kind == "delta" else [])
            if ev.kind == "done":
                reasons[idx] = ev.finish_reason
                add_usage(usage, ev)
        choices = [
            {
                "index": i,
                "message": {"role": "assistant", "content": texts[i]},
                "logprobs": lp_content(lps[i]),
                "finish_reason": reasons.get(i),
            }
            for i in sorted(texts)
        ]
        return envelope(rid, "chat.completion", now, choices, usage)

    async def suggestions(
        prompt: str, n: int, max_chars: int, temperature: float, seed: int | None, request: Request
    ) -> SuggestResponse:
        cfg_c = ComposeConfig.of(n, max_chars, temperature, seed)
        if guard is not None:
            guard.refresh()
        gone = client_gone(request.scope)
        try:
            out = await asyncio.to_thread(suggest, engine, prompt, cfg_c, guard, prov, gone.is_set if gone else None)
        except Stopped:
            raise ApiError(400, "the client went away", code="disconnected") from None
        except QueueFull as e:
            raise ApiError(
                429, f"server busy: {e}", "rate_limit_error", code="queue_full", headers={"Retry-After": "1"}
            ) from None
        except ValueError as e:
            raise ApiError(400, str(e), code="invalid_value") from None
        return SuggestResponse(candidates=out["candidates"], dropped=out["dropped"], **prov)

    async def prompt_of(system: str, user: str) -> str:
        try:
            return await asyncio.to_thread(chat_prompt, system, user, template)
        except ValueError as e:
            raise ApiError(400, str(e), param="model", code="chat_template_error") from None

    @app.post("/v1/compose", response_model=SuggestResponse)
    async def compose(req: ComposeRequest, request: Request) -> SuggestResponse:
        check_model(req.model)
        return await suggestions(
            await prompt_of(COMPOSE_SYSTEM, f"Write a post about: {req.topic}"),
            req.n,
            req.max_chars,
            req.temperature,
            req.seed,
            request,
        )

    @app.post("/v1/reply", response_model=SuggestResponse)
    async def reply(req: ReplyRequest, request: Request) -> SuggestResponse:
        check_model(req.model)
        text = req.text
        if req.post_id is not None:
            text = lookup_post(req.post_id)
        if not text:
            raise ApiError(400, "give post_id (a post in the store) or text", param="post_id", code="invalid_value")
        return await suggestions(
            await prompt_of(REPLY_SYSTEM, f"Reply to this post:\n{text}"),
            req.n,
            req.max_chars,
            req.temperature,
            req.seed,
            request,
        )

    def lookup_post(post_id: str) -> str:
        from roost.corpus.backend import open_reader, store_exists

        if store_db is None or not store_exists(store_db):
            raise ApiError(400, "this server has no post store; send text instead of post_id", param="post_id")
        with open_reader(store_db) as store:
            text = store.post_text(post_id)
        if text is None:
            raise ApiError(404, f"no post {post_id!r} in the store", param="post_id", code="post_not_found")
        return text
