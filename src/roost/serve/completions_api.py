"""The OpenAI-compatible generation routes of `roost serve MODEL`: `POST /v1/completions` and `POST
/v1/chat/completions`, with SSE streaming (and a final usage chunk when asked for), n choices and log-probabilities.

    curl localhost:8000/v1/chat/completions -d '{"model": "smollm2", "messages": [{"role": "user", "content": "hi"}]}'

Added by `roost.serve.app.build_app` over the served model's `Generation` (roost.serve.generate_api).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from fastapi import FastAPI, Request

from roost.infer.engine import Event
from roost.serve.errors import ApiError
from roost.serve.generate_api import Generation, add_usage, new_usage
from roost.serve.schemas import ChatRequest, CompletionRequest


def add_completion_routes(app: FastAPI, gen: Generation) -> None:
    @app.post("/v1/completions")
    async def completions(req: CompletionRequest, request: Request) -> Any:
        return await complete_text(gen, req, request)

    @app.post("/v1/chat/completions")
    async def chat(req: ChatRequest, request: Request) -> Any:
        return await complete_chat(gen, req, request)


# -- /v1/completions -------------------------------------------------------------------------------------------------
def encode_prompt(gen: Generation, prompt: str | list[str] | list[int]) -> list[list[int]]:
    if isinstance(prompt, str):
        return [gen.encode(prompt)]
    if prompt and all(isinstance(x, int) for x in prompt):
        return [list(prompt)]  # type: ignore[arg-type]
    if not prompt:
        raise ApiError(400, "prompt is empty", param="prompt", code="invalid_value")
    return [gen.encode(s) for s in prompt]  # type: ignore[arg-type]


def text_logprobs(gen: Generation, req: CompletionRequest, items: list[dict[str, Any]]) -> dict[str, Any] | None:
    if req.logprobs is None:
        return None
    dec = gen.engine.tok.decode
    return {
        "tokens": [dec([x["token_id"]]) for x in items],
        "token_logprobs": [x["logprob"] for x in items],
        "top_logprobs": [{dec([t]): lp for t, lp in x["top"]} for x in items],
        "text_offset": [],
    }


async def complete_text(gen: Generation, req: CompletionRequest, request: Request) -> Any:
    gen.check_model(req.model)
    prompts = encode_prompt(gen, req.prompt)
    p = gen.params_of(req, req.max_tokens, req.logprobs)
    rid, now = f"cmpl-{uuid.uuid4().hex[:24]}", int(time.time())
    events = gen.run(prompts, p, req.n, request)
    if req.stream:
        first = await anext(events)  # errors (429, 400) surface before the stream starts

        def choice_of(idx: int, ev: Event) -> dict[str, Any]:
            lp = text_logprobs(gen, req, ev.logprobs) if ev.kind == "delta" else None
            return {"index": idx, "text": ev.text, "logprobs": lp, "finish_reason": ev.finish_reason}

        include = bool(req.stream_options and req.stream_options.include_usage)
        return gen.stream(first, events, (rid, "text_completion", now), choice_of, include)
    texts = {i: "" for i in range(len(prompts) * req.n)}
    reasons: dict[int, str | None] = {}
    lps: dict[int, list[dict[str, Any]]] = {i: [] for i in texts}
    usage = new_usage()
    async for idx, ev in events:
        texts[idx] += ev.text
        if ev.kind == "delta":
            lps[idx].extend(ev.logprobs)
        else:
            reasons[idx] = ev.finish_reason
            add_usage(usage, ev)
    choices = [
        {
            "index": i,
            "text": (gen.engine.tok.decode(prompts[i // req.n]) if req.echo else "") + texts[i],
            "logprobs": text_logprobs(gen, req, lps[i]),
            "finish_reason": reasons.get(i),
        }
        for i in sorted(texts)
    ]
    return gen.envelope(rid, "text_completion", now, choices, usage)


# -- /v1/chat/completions --------------------------------------------------------------------------------------------
def render_chat(gen: Generation, req: ChatRequest) -> list[int]:
    """The conversation in the model's chat template, encoded (a 400 when the template rejects it)."""
    msgs = []
    for m in req.messages:
        if isinstance(m.content, list):
            text = "".join(str(c.get("text", "")) for c in m.content if isinstance(c, dict))
        else:
            text = m.content or ""
        msgs.append({"role": "system" if m.role == "developer" else m.role, "content": text})
    try:
        prompt = gen.template.render(msgs)
    except ValueError as e:
        raise ApiError(400, str(e), param="messages", code="invalid_value") from None
    return gen.encode(prompt)


def chat_logprobs(gen: Generation, req: ChatRequest, items: list[dict[str, Any]]) -> dict[str, Any] | None:
    if not req.logprobs:
        return None
    dec = gen.engine.tok.decode

    def entry(token_id: int, logprob: float) -> dict[str, Any]:
        return {"token": dec([token_id]), "logprob": logprob, "bytes": list(dec([token_id]).encode())}

    return {
        "content": [
            {**entry(x["token_id"], x["logprob"]), "top_logprobs": [entry(t, lp) for t, lp in x["top"]]} for x in items
        ]
    }


async def complete_chat(gen: Generation, req: ChatRequest, request: Request) -> Any:
    gen.check_model(req.model)
    ids = await asyncio.to_thread(render_chat, gen, req)  # a model's template never holds the event loop
    want_lp = (req.top_logprobs or 0) if req.logprobs else None
    p = gen.params_of(req, req.max_completion_tokens or req.max_tokens, want_lp)
    rid, now = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
    events = gen.run([ids], p, req.n, request)
    if req.stream:
        first = await anext(events)
        started: set[int] = set()

        def chat_choice(idx: int, ev: Event) -> dict[str, Any]:
            delta: dict[str, Any] = {}
            if idx not in started:  # the first chunk of each choice names the role
                delta["role"] = "assistant"
                started.add(idx)
            if ev.kind == "delta":
                delta["content"] = ev.text
            lp = chat_logprobs(gen, req, ev.logprobs) if ev.kind == "delta" else None
            return {"index": idx, "delta": delta, "finish_reason": ev.finish_reason, "logprobs": lp}

        include = bool(req.stream_options and req.stream_options.include_usage)
        return gen.stream(first, events, (rid, "chat.completion.chunk", now), chat_choice, include)
    texts: dict[int, str] = {}
    reasons: dict[int, str | None] = {}
    lps: dict[int, list[dict[str, Any]]] = {}
    usage = new_usage()
    async for idx, ev in events:
        texts[idx] = texts.get(idx, "") + ev.text
        lps.setdefault(idx, []).extend(ev.logprobs if ev.kind == "delta" else [])
        if ev.kind == "done":
            reasons[idx] = ev.finish_reason
            add_usage(usage, ev)
    choices = [
        {
            "index": i,
            "message": {"role": "assistant", "content": texts[i]},
            "logprobs": chat_logprobs(gen, req, lps[i]),
            "finish_reason": reasons.get(i),
        }
        for i in sorted(texts)
    ]
    return gen.envelope(rid, "chat.completion", now, choices, usage)
