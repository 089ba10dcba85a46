"""Build and run `roost serve` from its arguments, outside the CLI (as vLLM builds its engine from args):

from roost.serve.launch import ServeConfig, build, run
server = build(Roost.at(home), ServeConfig(model="smollm2", port=8000), say=print)
run(server)   # HTTP in a thread, the engine in this one; SIGTERM/SIGINT drain and save the search index
"""

from __future__ import annotations

import ipaddress
import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from roost.context import Roost
from roost.errors import UsageError
from roost.serve.config import ServeConfig
from roost.workspace import Workspace

if TYPE_CHECKING:
    from roost.infer.loading import LoadedModel
    from roost.infer.protocol import GenerationEngine
    from roost.serve.search_api import SearchService
    from roost.serve.vllm import VllmFleet


@dataclass
class Server:
    """A built server: the ASGI app, its engine (None: search only) and search service (None: generation only)."""

    app: Any
    engine: GenerationEngine | None
    search: SearchService | None
    host: str
    port: int
    name: str | None
    cfg: ServeConfig
    fleet: VllmFleet | None = None  # vLLM replicas roost started (stopped with the server)


def check(args: ServeConfig) -> str | None:
    """Refuse bad arguments before anything loads; returns the API key in force (flag or $ROOST_API_KEY)."""
    from roost.probe import choose

    key = args.api_key or os.environ.get("ROOST_API_KEY") or None
    try:
        loopback = ipaddress.ip_address(args.host).is_loopback
    except ValueError:
        loopback = args.host == "localhost"
    if not loopback and not key:
        raise UsageError(f"refusing to bind {args.host} without an API key: pass --api-key or set ROOST_API_KEY")
    choose("decode", args.dtype)  # a bad --dtype is refused even when no model uses it
    if args.max_batch < 1 or args.max_queue < 0 or not 1 <= args.port <= 65535:
        raise UsageError("--max-batch >= 1, --max-queue >= 0, --port in 1..65535")
    if not (args.header_timeout > 0 and args.body_timeout > 0 and args.max_connections >= 1):
        raise UsageError("--header-timeout and --body-timeout > 0 s, --max-connections >= 1")
    return key


def build(ctx: Roost, args: ServeConfig, say: Callable[[str], None]) -> Server:
    """Load the model and open the search index as asked (the context's `[corpus]` and `[search]` settings); `say`
    prints progress lines."""
    from roost.corpus.backend import store_exists
    from roost.infer.guard import LeakGuard
    from roost.infer.loading import load_engine
    from roost.probe import choose
    from roost.serve.app import build_app

    cfg = replace(args, api_key=check(args))  # the key in force: the flag's or $ROOST_API_KEY
    db = ctx.store
    have_store = store_exists(db)
    if cfg.model is None and (cfg.no_search or not have_store):
        raise UsageError("nothing to serve: give a model, or ingest posts first to serve search alone")
    loaded: LoadedModel | None = None
    fleet = None
    if cfg.model is not None and (cfg.upstreams or cfg.vllm):
        loaded, fleet = _upstream_engine(ctx.ws, cfg, say)
    elif cfg.model is not None:
        loaded = load_engine(
            ctx.ws, cfg.model, cfg.max_batch, cfg.max_queue, cfg.max_seq, cfg.dtype, cfg.quant, start=False, say=say
        )
    search = None
    if not cfg.no_search and have_store:
        from roost.serve.search_api import SearchService

        emb = choose("embed", ctx.settings.search.embed_dtype).line()
        say(f"opening the search index (catching up with the store)… embeddings: {emb}")
        search = SearchService.open(ctx)
    engine = loaded.engine if loaded else None
    name, sha, template = (loaded.name, loaded.sha256, loaded.template) if loaded else (None, None, None)
    guard = LeakGuard(db) if have_store and engine is not None else None
    app = build_app(engine, name, sha, cfg, guard, db if have_store else None, template, search)
    return Server(app, engine, search, cfg.host, cfg.port, name, cfg, fleet)


def _upstream_engine(
    ws: Workspace, args: ServeConfig, say: Callable[[str], None]
) -> tuple[LoadedModel, VllmFleet | None]:
    """Generation by upstream replicas: the ones given, plus `--vllm N` started here on the model folder."""
    from roost.infer.loading import load_upstream
    from roost.model.imports import resolve_model
    from roost.probe import choose

    if args.quant:
        raise UsageError("--quant applies to roost's own engine; an upstream quantises on its side")
    urls, fleet = list(args.upstreams), None
    if args.vllm:
        from roost.serve.vllm import VllmFleet

        path = resolve_model(ws, args.model or "")
        dtype = "bfloat16" if choose("decode", args.dtype).dtype == "bf16" else "float32"
        say(f"starting {args.vllm} vLLM replica(s) on {path} ({dtype}; logs in {ws.logs})…")
        fleet = VllmFleet.start(path, path.name, args.vllm, dtype, args.max_seq, args.vllm_python, log_dir=ws.logs)
        urls += fleet.urls
    try:
        loaded = load_upstream(
            ws, args.model or "", urls, args.max_seq, max_queue=args.max_queue + 64 * len(urls),
            pin=args.upstream_sha256, say=say, own=fleet.urls if fleet is not None else (),
        )  # fmt: skip
    except BaseException:
        if fleet is not None:
            fleet.stop()
        raise
    return loaded, fleet


def hints(server: Server) -> list[str]:
    """What to open or run against this server."""
    base = f"http://{server.host}:{server.port}"
    what = " + ".join(x for x in (server.name, "search" if server.search else None) if x)
    out = [f"serving {what} on {base}/  (OpenAI base_url {base}/v1)"]
    if server.name:
        out.append(
            f"try: curl {base}/v1/chat/completions -H 'Content-Type: application/json' "
            f'-d \'{{"model": "{server.name}", "messages": [{{"role": "user", "content": "hi"}}]}}\''
        )
    if server.search:
        out.append(f"try: curl {base}/v1/search -H 'Content-Type: application/json' -d '{{\"query\": \"coffee\"}}'")
    return out


def run(server: Server) -> None:
    """Serve until SIGTERM/SIGINT: HTTP in a thread; this thread runs the engine (torch's warm OpenMP team lives
    here) or, with no model, waits. On a signal, new requests get 503, running ones finish, the index is saved."""
    import uvicorn

    from roost.serve.http import uvicorn_options

    limits = uvicorn_options(server.cfg.header_timeout, server.cfg.max_connections, server.cfg.write_timeout)
    http = uvicorn.Server(uvicorn.Config(server.app, host=server.host, port=server.port, **limits))
    engine = server.engine

    def stop(*_: object) -> None:
        server.app.state.closing = True
        http.should_exit = True
        if engine is not None:
            engine.shutdown(drain_timeout=0)

    web = threading.Thread(target=http.run, daemon=True, name="roost-http")
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        web.start()
        if engine is not None:
            engine.run()
        else:
            while web.is_alive() and not http.should_exit:
                web.join(timeout=0.5)
        web.join(timeout=10)
    finally:
        if server.search is not None:
            server.search.close()
        if server.fleet is not None:
            server.fleet.stop()
