"""The web page: server values (the model's folder name) are HTML-escaped, and the page is sent with a strict
Content-Security-Policy whose script and style hashes are those of the page's own inline blocks (the Chromium
tests in tests/serve/test_web.py and tests/search/test_web_search.py run the page under it)."""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

import httpx

from tests.data.conftest import store_db, tok_path  # noqa: F401
from tests.serve.conftest import Server, make_engine, model_dir  # noqa: F401

EVIL = '"><img src=x onerror=alert(1)><script>alert(2)</script>'


def test_model_name_is_escaped_and_csp_is_strict(model_dir: Path) -> None:  # noqa: F811
    from roost.serve.app import ServeConfig, build_app

    engine = make_engine(model_dir)
    srv = Server(build_app(engine, EVIL, "0" * 64, ServeConfig()))
    try:
        r = httpx.get(f"{srv.url}/", timeout=10)
    finally:
        srv.stop()
        engine.shutdown()
    assert r.status_code == 200
    assert "<img src=x" not in r.text and "<script>alert(2)" not in r.text and "&lt;img src=x" in r.text
    policy = r.headers["content-security-policy"]
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy and "default-src 'none'" in policy
    scripts = re.findall(r"<script>(.*?)</script>", r.text, flags=re.S)
    assert len(scripts) == 1
    digest = base64.b64encode(hashlib.sha256(scripts[0].encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in policy  # only the page's own script may run
    assert r.headers["x-content-type-options"] == "nosniff" and "frame-ancestors 'none'" in policy
