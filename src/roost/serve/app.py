"""The HTTP server of `roost serve models/NAME`: OpenAI-compatible completions and chat (with SSE streaming),
compose/reply suggestions, health, Prometheus metrics, and the web page at `/`.

`roost serve demo --port 8000` then `curl localhost:8000/v1/chat/completions -d '{"model": "demo", "messages":
[{"role": "user", "content": "hi"}]}'`; any OpenAI client works with base_url http://127.0.0.1:8000/v1.
Every error a client can cause is a 4xx in OpenAI's shape {"error": {"message", "type", "param", "code"}};
a full queue is 429 with Retry-After; a server shutting down answers 503. With an API key, every route but the
page itself (`/`, which asks for the key) and `/health` needs it: the API, `/metrics`, `/openapi.json`, `/docs`.
"""

from __future__ import annotations

import hmac
import html
import ipaddress
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from roost.infer.chat import ChatTemplate
from roost.infer.engine import EngineStopped, Unavailable
from roost.infer.guard import LeakGuard
from roost.infer.protocol import GenerationEngine
from roost.serve.config import ServeConfig
from roost.serve.errors import ApiError, _error
from roost.serve.http import Guard
from roost.serve.metrics import Metrics
from roost.serve.schemas import ErrorResponse, ModelCard, ModelList

__all__ = ["ServeConfig", "build_app", "csp", "render_page"]

WEB = Path(__file__).parent / "web" / "index.html"
OPEN_ROUTES = frozenset({"/", "/health"})  # answered without the API key (the page, and liveness for probes)


if TYPE_CHECKING:
    from roost.serve.search_api import SearchService


def build_app(
    engine: GenerationEngine | None,
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
    template = chat_template or ChatTemplate(None)
    app.add_middleware(
        Guard,
        max_body_bytes=cfg.max_body_bytes,
        body_timeout=cfg.body_timeout,
        loopback_only=_is_loopback(cfg.host) and not cfg.api_key,
    )
    _add_error_handlers(app)
    _add_access(app, cfg.api_key, metrics)
    page_html = render_page(model_name, model_sha256, engine is not None, search is not None, bool(cfg.api_key))
    _add_page_routes(app, page_html, engine, model_name, search, metrics)
    _add_model_routes(app, engine, model_name, prov["model_sha256"])
    if engine is not None and model_name is not None:
        from roost.serve.completions_api import add_completion_routes
        from roost.serve.generate_api import Generation
        from roost.serve.suggest_api import add_suggest_routes

        gen = Generation(engine, model_name, prov["model_sha256"], template, metrics, guard, store_db)
        add_completion_routes(app, gen)
        add_suggest_routes(app, gen)
    if search is not None:
        from roost.serve.search_api import add_search_routes

        add_search_routes(app, search, engine, template, prov)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    """Every error in OpenAI's shape; a client's is a 4xx, a stopping or backend-less engine's a 503."""

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


def _add_access(app: FastAPI, api_key: str | None, metrics: Metrics) -> None:
    """The API key on every route but OPEN_ROUTES, 503 for the API while closing, and per-route request metrics."""
    want_key = f"Bearer {api_key}".encode() if api_key else b""

    def key_ok(header: str) -> bool:  # constant time: the comparison does not leak how much of a key matched
        return hmac.compare_digest(header.encode("utf-8", "surrogateescape"), want_key)

    @app.middleware("http")
    async def guard_requests(request: Request, call_next: Any) -> Response:
        route = request.url.path
        t0 = time.perf_counter()
        resp: Response
        if api_key and route not in OPEN_ROUTES and not key_ok(request.headers.get("authorization", "")):
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


def _add_page_routes(
    app: FastAPI,
    page_html: str,
    engine: GenerationEngine | None,
    model_name: str | None,
    search: SearchService | None,
    metrics: Metrics,
) -> None:
    """The web page (`/`), liveness (`/health`) and Prometheus metrics (`/metrics`)."""
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


def _add_model_routes(app: FastAPI, engine: GenerationEngine | None, model_name: str | None, sha256: str) -> None:
    """`GET /v1/models`: the served model's card (none when serving search only)."""
    created = int(time.time())

    @app.get("/v1/models", response_model=ModelList)
    async def models() -> ModelList:
        if engine is None or model_name is None:
            return ModelList(data=[])
        card = ModelCard(id=model_name, created=created, model_sha256=sha256, context_length=engine.max_seq)
        return ModelList(data=[card])


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
