"""The search side of `roost serve`: `POST /v1/search`, `POST /v1/posts` (real-time ingest), `DELETE
/v1/posts/{id}` (forget), `POST /v1/ask` (grounded answers, streamed like chat).

`roost serve` (no model) serves these alone; `roost serve MODEL` adds answers, query expansion and generation.
`curl localhost:8000/v1/posts -d '{"posts": [{"id": "1", "author": "ann", "text": "tram strike today",
"created_at": "2024-05-01T09:00:00Z"}]}'` answers once the post is searchable; `curl localhost:8000/v1/search
-d '{"query": "tram strike"}'` finds it.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

from roost.config import CorpusConfig, SearchConfig
from roost.context import Roost
from roost.corpus.ingest import LiveIngest
from roost.corpus.post import Post, RecordError, parse_iso_date
from roost.erasure import ErasureReport, erase
from roost.errors import RoostError
from roost.infer.chat import ChatTemplate
from roost.infer.engine import QueueFull
from roost.infer.protocol import GenerationEngine
from roost.registry import SearchKind
from roost.search.answer import AnswerConfig, ask_events
from roost.search.backend import SearchBackend
from roost.search.embedded import SearchIndex
from roost.search.expand import expand_query
from roost.search.live import LiveIndexer
from roost.serve.errors import ApiError, queue_full
from roost.serve.http import client_gone
from roost.serve.schemas import (
    AskRequest,
    AskResponse,
    PostsRequest,
    PostsResponse,
    SearchHit,
    SearchRequest,
    SearchResponse,
)


@dataclass
class SearchService:
    index: SearchBackend
    indexer: LiveIndexer
    ingest: LiveIngest
    cfg: SearchConfig
    ctx: Roost

    @classmethod
    def open(cls, ctx: Roost, corpus_cfg: CorpusConfig | None = None, cfg: SearchConfig | None = None) -> SearchService:
        """The server's search: the configured index (an empty embedded one is made, and fills as posts arrive),
        caught up, with its live indexer running, and the live ingest. Settings default to the context's."""
        from roost.search.backend import index_exists, open_search

        cfg = cfg or ctx.settings.search
        ctx = ctx.with_settings(search=cfg)
        if ctx.search_kind is SearchKind.EMBEDDED and not index_exists(ctx):
            SearchIndex.create(ctx, cfg.vectors)
        index = open_search(ctx)
        index.embedder  # noqa: B018 — load MiniLM now, not on the first request
        index.catch_up()
        ingest = LiveIngest(ctx.store, corpus_cfg or ctx.settings.corpus)
        return cls(index, LiveIndexer(index).start(), ingest, cfg, ctx)

    def close(self) -> None:
        self.indexer.stop()
        self.ingest.close()


def _post(p: Any) -> Post:
    """API posts live in their own namespace: `id` "123" and "x:123" become "api:123" and "api:x:123", so a client
    can never claim (and so hide) an importer's id."""
    pid = p.id if p.id.startswith("api:") else f"api:{p.id}"
    reply = None if p.reply_to is None else p.reply_to if ":" in p.reply_to else f"api:{p.reply_to}"
    return Post(pid, p.author, parse_iso_date(p.created_at, "created_at"), p.text, "api", lang=p.lang, reply_to=reply)


def add_search_routes(
    app: FastAPI, svc: SearchService, engine: GenerationEngine | None, template: ChatTemplate, prov: dict[str, Any]
) -> None:
    """The search routes over `svc`; `engine` (None: search only) answers `/v1/ask` and expands queries."""
    routes = SearchRoutes(svc, engine, template, prov)

    @app.post("/v1/search", response_model=SearchResponse)
    async def search(req: SearchRequest) -> SearchResponse:
        return await search_posts(routes, req)

    @app.post("/v1/posts", response_model=PostsResponse)
    async def add_posts(req: PostsRequest) -> PostsResponse:
        return await ingest_posts(svc, req)

    @app.delete("/v1/posts/{post_id:path}")
    async def forget_post(post_id: str) -> dict[str, Any]:
        return await forget(svc, post_id)

    @app.post("/v1/ask", response_model=AskResponse)
    async def ask(req: AskRequest, request: Request) -> Any:
        return await answer(routes, req, request)


@dataclass
class SearchRoutes:
    """What the search routes share: the search service, and the served model when there is one."""

    svc: SearchService
    engine: GenerationEngine | None
    template: ChatTemplate
    prov: dict[str, Any]

    def need_engine(self, what: str) -> GenerationEngine:
        if self.engine is None:
            raise ApiError(
                400,
                f"{what} needs a model: this server serves search only (start `roost serve MODEL`)",
                code="model_not_loaded",
            )
        return self.engine


def _bad_query(e: RoostError) -> ApiError:
    return ApiError(400, str(e), param="query", code="invalid_query")


async def search_posts(routes: SearchRoutes, req: SearchRequest) -> SearchResponse:
    """`POST /v1/search`: parse, expand with the model when asked (hybrid mode), search."""
    from roost.search.query import parse

    expand = routes.svc.cfg.expand if req.expand is None else req.expand
    terms: list[str] = []
    try:
        q = parse(req.query)
        if expand and req.mode == "hybrid":
            eng = routes.need_engine("query expansion")
            terms = await asyncio.to_thread(expand_query, eng, routes.template, q.text)
        hits = await asyncio.to_thread(routes.svc.index.search, q, req.mode, req.k, req.recency, terms or None)
    except RoostError as e:
        raise _bad_query(e) from None
    except QueueFull as e:
        raise ApiError(429, f"server busy: {e}", "rate_limit_error", code="queue_full") from None
    return SearchResponse(
        query=req.query, mode=req.mode, expanded_terms=terms, data=[SearchHit(**h.to_json()) for h in hits]
    )


async def ingest_posts(svc: SearchService, req: PostsRequest) -> PostsResponse:
    """`POST /v1/posts`: the good posts stored (and searchable once indexed, waited for when asked), the bad ones
    listed with why."""
    t0 = time.perf_counter()
    posts, rejected, index_of = [], [], {}
    for i, p in enumerate(req.posts):
        try:
            posts.append(_post(p))
            index_of[posts[-1].id] = i
        except RecordError as e:
            rejected.append({"index": i, "id": p.id, "field": e.field, "message": e.message})
    report, bad = await asyncio.to_thread(svc.ingest.add, posts, "request")
    for b in bad:
        pid = b.record.removeprefix("id ")
        rejected.append({"index": index_of.get(pid), "id": pid, "field": b.field, "message": b.message})
    searchable = await asyncio.to_thread(svc.indexer.flush, 5.0) if req.wait and report.stored else False
    return PostsResponse(
        stored=report.stored,
        already=report.already,
        forgotten=report.forgotten,
        duplicates=report.duplicates + report.near_duplicates,
        rejected=rejected,
        searchable=bool(searchable),
        seconds=round(time.perf_counter() - t0, 4),
    )


async def forget(svc: SearchService, post_id: str) -> dict[str, Any]:
    """`DELETE /v1/posts/{id}`: the one erasure cascade, with this server's store and index."""
    if not 0 < len(post_id) <= 4096 or not post_id.strip() or "\x00" in post_id:
        raise ApiError(400, "post id must be 1..4096 characters, not blank", param="post_id", code="invalid_value")
    if ":" not in post_id:  # a bare id is an API post's, as POST /v1/posts stored it
        post_id = f"api:{post_id}"

    def run() -> ErasureReport:
        with svc.ingest.lock:
            rep = erase(svc.ctx, post_ids=[post_id], store=svc.ingest.store, index=svc.index)
        svc.ingest.forgotten()  # and this server's dedup state
        return rep

    rep = await asyncio.to_thread(run)
    return {**rep.to_json(), "object": "post.deleted", "id": post_id, "deleted": rep.posts > 0, "tombstoned": True}


async def answer(routes: SearchRoutes, req: AskRequest, request: Request) -> Any:
    """`POST /v1/ask`: a grounded answer with its cited posts, streamed as `ask.chunk` events or whole."""
    if req.model is not None and req.model != routes.prov.get("model"):
        raise ApiError(404, f"model {req.model!r} does not exist", param="model", code="model_not_found")
    eng = routes.need_engine("/v1/ask")
    cfg = AnswerConfig(posts=req.posts, min_similarity=routes.svc.cfg.min_similarity)
    gone = client_gone(request.scope)  # a client that leaves cancels the generation (and its upstream calls)
    stop = None if gone is None else gone.is_set
    gen = ask_events(eng, routes.template, routes.svc.index, req.question, cfg, routes.prov, req.query, stop=stop)
    events = _threaded(gen)
    try:
        first = await anext(events)  # search errors and a full queue surface as 4xx before any output
    except RoostError as e:
        raise _bad_query(e) from None
    except QueueFull as e:
        raise queue_full(e) from None
    except ValueError as e:
        raise ApiError(400, str(e), code="context_length_exceeded") from None
    if req.stream:

        async def chunks() -> AsyncIterator[str]:
            yield f"data: {json.dumps({'object': 'ask.chunk', **first})}\n\n"
            async for ev in events:
                yield f"data: {json.dumps({'object': 'ask.chunk', **ev})}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(chunks(), media_type="text/event-stream")
    posts, final = first.get("posts", []), first
    async for ev in events:
        if ev["type"] == "answer":
            final = ev
    final = {k: v for k, v in final.items() if k != "type"}
    return AskResponse(**final, retrieved_posts=posts)


async def _threaded(gen: Iterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    """Run a blocking generator in a thread; its items (and its exception) come out here."""
    loop = asyncio.get_running_loop()
    q: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    def work() -> None:
        try:
            for item in gen:
                loop.call_soon_threadsafe(q.put_nowait, ("item", item))
            loop.call_soon_threadsafe(q.put_nowait, ("end", None))
        except BaseException as e:  # noqa: BLE001 — re-raised in the event loop
            loop.call_soon_threadsafe(q.put_nowait, ("error", e))

    threading.Thread(target=work, daemon=True, name="roost-ask").start()
    while True:
        kind, value = await q.get()
        if kind == "end":
            return
        if kind == "error":
            raise value
        yield value
