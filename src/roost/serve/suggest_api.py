"""roost's suggestion routes of `roost serve MODEL`: `POST /v1/compose` (posts on a topic) and `POST /v1/reply`
(replies to a post, by id from the store or by text) — N candidates within the character limit, near-duplicates
and copies of corpus posts dropped, each labelled AI-generated (roost.infer.compose.suggest).

    curl localhost:8000/v1/compose -d '{"topic": "the first snow of the year", "n": 3}'

Added by `roost.serve.app.build_app` over the served model's `Generation` (roost.serve.generate_api).
"""

from __future__ import annotations

import asyncio

from fastapi import FastAPI, Request

from roost.infer.compose import COMPOSE_SYSTEM, REPLY_SYSTEM, ComposeConfig, Stopped, chat_prompt, suggest
from roost.infer.engine import QueueFull
from roost.serve.errors import ApiError, queue_full
from roost.serve.generate_api import Generation
from roost.serve.http import client_gone
from roost.serve.schemas import ComposeRequest, ReplyRequest, SuggestResponse


def add_suggest_routes(app: FastAPI, gen: Generation) -> None:
    @app.post("/v1/compose", response_model=SuggestResponse)
    async def compose(req: ComposeRequest, request: Request) -> SuggestResponse:
        gen.check_model(req.model)
        prompt = await prompt_of(gen, COMPOSE_SYSTEM, f"Write a post about: {req.topic}")
        return await suggestions(
            gen, prompt, ComposeConfig.of(req.n, req.max_chars, req.temperature, req.seed), request
        )

    @app.post("/v1/reply", response_model=SuggestResponse)
    async def reply(req: ReplyRequest, request: Request) -> SuggestResponse:
        gen.check_model(req.model)
        text = req.text
        if req.post_id is not None:
            text = lookup_post(gen, req.post_id)
        if not text:
            raise ApiError(400, "give post_id (a post in the store) or text", param="post_id", code="invalid_value")
        prompt = await prompt_of(gen, REPLY_SYSTEM, f"Reply to this post:\n{text}")
        return await suggestions(
            gen, prompt, ComposeConfig.of(req.n, req.max_chars, req.temperature, req.seed), request
        )


async def prompt_of(gen: Generation, system: str, user: str) -> str:
    try:
        return await asyncio.to_thread(chat_prompt, system, user, gen.template)
    except ValueError as e:
        raise ApiError(400, str(e), param="model", code="chat_template_error") from None


async def suggestions(gen: Generation, prompt: str, cfg: ComposeConfig, request: Request) -> SuggestResponse:
    if gen.guard is not None:
        gen.guard.refresh()
    gone = client_gone(request.scope)
    stop = gone.is_set if gone else None
    try:
        out = await asyncio.to_thread(suggest, gen.engine, prompt, cfg, gen.guard, gen.prov, stop)
    except Stopped:
        raise ApiError(400, "the client went away", code="disconnected") from None
    except QueueFull as e:
        raise queue_full(e) from None
    except ValueError as e:
        raise ApiError(400, str(e), code="invalid_value") from None
    return SuggestResponse(
        candidates=out["candidates"], dropped=out["dropped"], model=gen.model_name, model_sha256=gen.model_sha256
    )


def lookup_post(gen: Generation, post_id: str) -> str:
    from roost.corpus.backend import open_reader, store_exists

    if gen.store_db is None or not store_exists(gen.store_db):
        raise ApiError(400, "this server has no post store; send text instead of post_id", param="post_id")
    with open_reader(gen.store_db) as store:
        text = store.post_text(post_id)
    if text is None:
        raise ApiError(404, f"no post {post_id!r} in the store", param="post_id", code="post_not_found")
    return text
