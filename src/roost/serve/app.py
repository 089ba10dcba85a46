"""The HTTP server of `roost serve models/NAME`: OpenAI-compatible completions and chat (with SSE streaming),
compose/reply suggestions, health, Prometheus metrics, and the web page at `/`.

`roost serve demo --port 8000` then `curl localhost:8000/v1/chat/completions -d '{"model": "demo", "messages":
[{"role": "user", "content": "hi"}]}'`; any OpenAI client works with base_url http://127.0.0.1:8000/v1.
Every error a client can cause is a 4xx in OpenAI's shape {"error": {"message", "type", "param", "code"}};
a full queue is 429 with Retry-After; a server shutting down answers 503. With an API key, every route but the
page itself (`/`, which asks for the key) and `/health` needs it: the API, `/metrics`, `/openapi.json`, `/docs`.
"""

from __future__ import annotations

import functools
import hmac
import html
import ipaddress
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from roost.infer.chat import ChatTemplate
from roost.infer.engine import Engine, EngineStopped, Unavailable
from roost.infer.guard import LeakGuard
from roost.serve.errors import ApiError, _error
from roost.serve.http import WRITE_TIMEOUT, Guard
from roost.serve.schemas import ErrorResponse, ModelCard, ModelList

WEB = Path(__file__).parent / "web" / "index.html"
OPEN_ROUTES = frozenset({"/", "/health"})  # answered without the API key (the page, and liveness for probes)


@dataclass
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    max_batch: int = 8
    max_queue: int = 32
    max_seq: int = 2048
    max_body_bytes: int = 1 << 20
    body_timeout: float = 30.0  # the whole request body must arrive within this (408)
    header_timeout: float = 10.0  # request headers must be complete within this (the connection is closed)
    max_connections: int = 256  # open connections; more are answered 503 and closed
    write_timeout: float = WRITE_TIMEOUT  # an answer making no progress this long ends its connection
    dtype: str = "auto"  # weights for decoding: auto (roost.probe's table, by CPU class), bf16 or fp32


if TYPE_CHECKING:
    from roost.serve.search_api import SearchService


class Metrics:
    def __init__(self, engine: Engine | None):
        self.registry = r = CollectorRegistry()
        self.requests = Counter("roost_requests", "HTTP requests", ["route", "status"], registry=r)
        self.latency = Histogram(
            "roost_request_seconds",
            "request latency",
            ["route"],
            registry=r,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )
        self.ttft = Histogram(
            "roost_time_to_first_token_seconds",
            "time to first token",
            registry=r,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10),
        )
        self.tokens = Counter("roost_generated_tokens", "generated tokens", registry=r)
        self.tps = Histogram(
            "roost_request_tokens_per_second",
            "decode tokens/s per request",
            registry=r,
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500),
        )
        if engine is not None:
            Gauge("roost_queue_depth", "requests waiting", registry=r).set_function(engine.queue_depth)
            Gauge("roost_running_requests", "requests in the running batch", registry=r).set_function(engine.active)
            Gauge("roost_kv_cache_usage", "share of KV cache positions in use", registry=r).set_function(
                engine.kv_usage
            )
        router = getattr(engine, "router", None)
        if router is not None:  # generation by upstream replicas: per-upstream series
            self._upstream_metrics(engine, router)

    def _upstream_metrics(self, engine: Any, router: Any) -> None:
        r = self.registry
        reqs = Counter("roost_upstream_requests", "requests sent to each upstream", ["upstream", "outcome"], registry=r)
        ttft = Histogram(
            "roost_upstream_time_to_first_token_seconds",
            "time to first token through each upstream",
            ["upstream"],
            registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10),
        )
        out = Gauge("roost_upstream_outstanding", "requests in flight at each upstream", ["upstream"], registry=r)
        up = Gauge("roost_upstream_healthy", "1 when the upstream passes its health check", ["upstream"], registry=r)
        for u in router.upstreams:  # labelled by the URL without its credentials
            out.labels(u.label).set_function(functools.partial(getattr, u, "outstanding"))
            up.labels(u.label).set_function(functools.partial(lambda x: float(x.healthy), u))

        def on_upstream(url: str, outcome: str, first: float | None) -> None:
            reqs.labels(url, outcome).inc()
            if first is not None:
                ttft.labels(url).observe(first)

        engine.on_upstream = on_upstream


def build_app(
    engine: Engine | None,
    model_name: str | None,
    model_sha256: str | None,
    cfg: ServeConfig,
    guard: LeakGuard | None = None,
    store_db: Path | str | None = None,
    chat_template: ChatTemplate | None = None,
    search: SearchService | None = None,
) -> FastAPI:
    """The app: generation routes when `engine` is given, search routes when `search` is, both when both are."""
    if engine is None and search is None:
        raise ValueError("build_app needs a model engine, a search service, or both")
    app = FastAPI(
        title="roost",
        version="0.1.0",
        description="OpenAI-compatible API for your network's own model.",
        responses={400: {"model": ErrorResponse}, 404: {"model": ErrorResponse}, 429: {"model": ErrorResponse}},
    )
    metrics = Metrics(engine)
    app.state.engine, app.state.closing = engine, False
    prov = {"model": model_name or "", "model_sha256": model_sha256 or ""}
    created = int(time.time())
    template = chat_template or ChatTemplate(None)

    want_key = f"Bearer {cfg.api_key}".encode() if cfg.api_key else b""

    def _key_ok(header: str) -> bool:  # constant time: the comparison does not leak how much of a key matched
        return hmac.compare_digest(header.encode("utf-8", "surrogateescape"), want_key)

    app.add_middleware(
        Guard,
        max_body_bytes=cfg.max_body_bytes,
        body_timeout=cfg.body_timeout,
        loopback_only=_is_loopback(cfg.host) and not cfg.api_key,
    )

    # -- errors in OpenAI's shape -----------------------------------------------------------------------------------
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, e: ApiError) -> JSONResponse:
        return _error(e.status, e.message, e.type, e.param, e.code, e.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, e: RequestValidationError) -> JSONResponse:
        first = e.errors()[0] if e.errors() else {}
        loc = [str(x) for x in first.get("loc", []) if x != "body"]
        msg = first.get("msg", "invalid request")
        if first.get("type") == "json_invalid":
            return _error(400, f"the body is not valid JSON: {msg}", code="invalid_json")
        return _error(400, f"{'.'.join(loc) or 'body'}: {msg}", param=".".join(loc) or None, code="invalid_value")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, e: StarletteHTTPException) -> JSONResponse:
        return _error(e.status_code, str(e.detail), "invalid_request_error" if e.status_code < 500 else "server_error")

    @app.exception_handler(EngineStopped)
    async def _stopped(_: Request, e: EngineStopped) -> JSONResponse:
        if isinstance(e, Unavailable):
            return _error(503, f"no backend can serve this now: {e}", "server_error", code="no_upstream",
                          headers={"Retry-After": "2"})  # fmt: skip
        return _error(503, "the server is shutting down", "server_error", code="shutting_down")

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, e: Exception) -> JSONResponse:
        return _error(500, f"internal error: {type(e).__name__}", "server_error")

    @app.middleware("http")
    async def guard_requests(request: Request, call_next: Any) -> Response:
        route = request.url.path
        t0 = time.perf_counter()
        resp: Response
        if cfg.api_key and route not in OPEN_ROUTES and not _key_ok(request.headers.get("authorization", "")):
            resp = _error(
                401,
                "missing or wrong API key (Authorization: Bearer …)",
                "authentication_error",
                code="invalid_api_key",
            )
        elif app.state.closing and route.startswith("/v1/"):
            resp = _error(
                503, "the server is shutting down", "server_error", code="shutting_down", headers={"Retry-After": "5"}
            )
        else:
            resp = await call_next(request)
        known = route if route in {r.path for r in app.routes} else "other"  # type: ignore[attr-defined]
        metrics.requests.labels(known, str(resp.status_code)).inc()
        metrics.latency.labels(known).observe(time.perf_counter() - t0)
        return resp

    # -- routes --------------------------------------------------------------------------------------------------------
    page_html = render_page(model_name, model_sha256, engine is not None, search is not None, bool(cfg.api_key))
    page_headers = {
        "Content-Security-Policy": csp(page_html),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
    }

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(page_html, headers=page_headers)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        out: dict[str, Any] = {"status": "shutting_down" if app.state.closing else "ok", "model": model_name}
        if engine is not None:
            out.update(queue_depth=engine.queue_depth(), running=engine.active())
        if search is not None:
            out["search"] = {"posts": search.index.size(), "indexer_error": search.indexer.error}
        return out

    @app.get("/metrics", include_in_schema=False)
    async def prom() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models", response_model=ModelList)
    async def models() -> ModelList:
        if engine is None or model_name is None:
            return ModelList(data=[])
        card = ModelCard(
            id=model_name, created=created, model_sha256=prov["model_sha256"], context_length=engine.max_seq
        )
        return ModelList(data=[card])

    if engine is not None and model_name is not None:
        from roost.serve.generate_api import add_generation_routes

        add_generation_routes(app, engine, metrics, model_name, prov["model_sha256"], guard, store_db, template)
    if search is not None:
        from roost.serve.search_api import add_search_routes

        add_search_routes(app, search, engine, template, prov, ApiError)
    return app


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def render_page(model_name: str | None, model_sha256: str | None, gen: bool, search: bool, keyed: bool = False) -> str:
    """The web page with its few server values filled in, each HTML-escaped (a model folder name is data)."""
    values = {
        "KEYED": "1" if keyed else "0",
        "MODEL": model_name or "none (search only)",
        "SHA": (model_sha256 or "-")[:12],
        "GEN": "1" if gen else "0",
        "ASK": "1" if search and gen else "0",
        "SEARCH": "1" if search else "0",
    }
    page = WEB.read_text()
    for k, v in values.items():
        page = page.replace("{{" + k + "}}", html.escape(v, quote=True))
    return page


def csp(page: str) -> str:
    """A strict Content-Security-Policy: only the page's own inline script and style (by hash), requests to this
    origin, no plugins, frames, forms or base-URI changes."""
    import base64
    import hashlib

    def hashes(tag: str) -> str:
        found = re.findall(rf"<{tag}>(.*?)</{tag}>", page, flags=re.S)
        return " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(x.encode()).digest()).decode()}'" for x in found)

    return (
        f"default-src 'none'; script-src {hashes('script')}; style-src {hashes('style')}; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
