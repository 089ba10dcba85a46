"""A bounded schemathesis run over the generated OpenAPI spec against a real server: no input may cause a 5xx.

(Driven through schemathesis' strategies and hypothesis directly; its pytest plugin does not load under this
pytest version.)"""

from __future__ import annotations

from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.serve.conftest import serve


def _bound(case: schemathesis.Case) -> None:
    """Cap the work one generated request may ask for, so the run stays short."""
    if isinstance(case.body, dict):
        for key, cap in (("max_tokens", 8), ("max_completion_tokens", 8), ("n", 2), ("max_chars", 40)):
            if isinstance(case.body.get(key), int) and not isinstance(case.body.get(key), bool):
                case.body[key] = min(case.body[key], cap)


def test_no_5xx_anywhere_in_the_spec(model_dir: Path, store_db: Path) -> None:  # noqa: F811
    srv, engine, _ = serve(model_dir, store_db, engine_kw={"max_batch": 4, "max_queue": 64})
    try:
        schema = schemathesis.openapi.from_url(f"{srv.url}/openapi.json")
        seen: list[str] = []
        for result in schema.get_all_operations():
            op = result.ok()

            @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)
            @given(case=op.as_strategy())
            def check(case: schemathesis.Case) -> None:
                _bound(case)
                response = case.call(timeout=120)
                assert response.status_code < 500, (
                    f"{case.method} {case.path} → {response.status_code}: "
                    f"{response.text[:300]} (body {case.body!r:.300})"
                )

            check()
            seen.append(f"{op.method.upper()} {op.path}")
        assert {"POST /v1/completions", "POST /v1/chat/completions", "POST /v1/compose", "POST /v1/reply"} <= set(seen)
    finally:
        srv.stop()
        engine.shutdown()
