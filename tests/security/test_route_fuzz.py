"""Every route of a real server (generation + search + posts), fuzzed with Unicode edge cases — lone surrogates,
NUL, bidi controls, non-characters, astral planes — in every field, sent whole or as a chunked body: no answer is a
5xx, every 4xx is in OpenAI's error shape, and the server stays healthy. Bounded: a few dozen examples per route."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from roost.context import Roost
from tests.data.conftest import store_db, tok_path  # noqa: F401
from tests.search.conftest import search_home  # noqa: F401
from tests.serve.conftest import Server, make_engine, model_dir  # noqa: F401

EDGE = st.sampled_from(["\ud800", "\udfff", "\x00", "\u202e", "\ufeff", "\uffff", "\U0010ffff", "😀", "é", "#", "@"])
TEXT = st.lists(st.one_of(EDGE, st.text(max_size=8)), max_size=6).map("".join)
VALUE = st.one_of(TEXT, st.integers(-5, 300), st.none(), st.booleans(), st.lists(TEXT, max_size=3))


@pytest.fixture(scope="module")
def srv(model_dir: Path, search_home: Path) -> Iterator[tuple[Server, dict[str, Any]]]:  # noqa: F811
    from roost.config import CorpusConfig, SearchConfig
    from roost.serve.app import ServeConfig, build_app
    from roost.serve.search_api import SearchService

    engine = make_engine(model_dir, max_queue=64)
    svc = SearchService.open(Roost.at(search_home), CorpusConfig(), SearchConfig())
    app = build_app(engine, "tiny", "0" * 64, ServeConfig(), None, search_home / "corpus.db", None, svc)
    s = Server(app)
    yield s, app.openapi()
    s.stop()
    svc.close()
    engine.shutdown()


def _routes(spec: dict[str, Any]) -> list[tuple[str, str, list[str]]]:
    out = []
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            schema = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            if schema and "$ref" in schema:
                schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
            out.append((method.upper(), path, list((schema or {}).get("properties", {}))))
    return out


def _bounded(body: dict[str, Any]) -> dict[str, Any]:
    for key, cap in (("max_tokens", 4), ("max_completion_tokens", 4), ("n", 2), ("max_chars", 40), ("k", 5)):
        if isinstance(body.get(key), int) and not isinstance(body.get(key), bool):
            body[key] = min(body[key], cap)
    return body


def test_unicode_fuzz_of_every_route_whole_and_chunked(srv: tuple[Server, dict[str, Any]]) -> None:
    s, spec = srv
    routes = _routes(spec)
    assert {"/v1/chat/completions", "/v1/search", "/v1/posts", "/v1/ask"} <= {p for _, p, _ in routes}
    for method, path, props in routes:
        if "{" in path:  # path parameters: fuzz the value itself
            prefix = path.split("{")[0]
            path_strategy = TEXT.map(lambda t, p=prefix: p + quote(t.encode("utf-8", "surrogatepass"), safe=""))
        else:
            path_strategy = st.just(path)

        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(
            url=path_strategy,
            body=st.fixed_dictionaries({}, optional={p: VALUE for p in props}),
            chunked=st.booleans(),
            method=st.just(method),
        )
        def check(url: str, body: dict[str, Any], chunked: bool, method: str) -> None:
            raw = json.dumps(_bounded(body)).encode()
            content: Any = iter([raw[: len(raw) // 2], raw[len(raw) // 2 :]]) if chunked else raw
            kw: dict[str, Any] = {"headers": {"Content-Type": "application/json"}, "timeout": 120}
            if method in ("POST", "PUT", "PATCH", "DELETE"):
                kw["content"] = content
            r = httpx.request(method, f"{s.url}{url}", **kw)
            assert r.status_code < 500, (method, url, body, r.status_code, r.text[:300])
            if r.status_code >= 400:
                err = r.json()["error"]
                assert {"message", "type", "param", "code"} <= set(err), r.text[:300]

        check()
    assert httpx.get(f"{s.url}/health", timeout=10).json()["status"] == "ok"
