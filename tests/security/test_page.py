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


def test_a_keyed_server_page_asks_for_the_key_and_sends_it(model_dir: Path) -> None:  # noqa: F811
    """With an API key, `/` still loads without it (the only route besides /health), shows a password box, keeps
    the key in the tab's sessionStorage and sends it as a Bearer header: chat fails with the server's 401 message
    before the key is given and streams after. Runs in real Chromium under the page's CSP."""
    import shutil

    from playwright.sync_api import sync_playwright

    from roost.data import tokenizer as toklib
    from roost.infer.upstream import UpstreamEngine
    from roost.serve.app import ServeConfig, build_app
    from tests.security.fake_upstream import Hostile
    from tests.serve.test_web import FLAGS

    chromium = shutil.which("chromium")
    assert chromium, "Debian chromium is required (apt-get install chromium); `make test` installs it"
    tok = toklib.load(model_dir / "tokenizer.json")
    up = Hostile(tok.token_to_id(toklib.EOS))
    engine = UpstreamEngine([up.url], tok, {tok.token_to_id(toklib.EOS)}, 512, "tiny")
    srv = Server(build_app(engine, "tiny", "0" * 64, ServeConfig(api_key="s3cret-key")))
    try:
        assert httpx.get(f"{srv.url}/metrics", timeout=10).status_code == 401
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=FLAGS)
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(srv.url + "/")
            assert page.is_visible("#key") and page.get_attribute("#key", "type") == "password"
            page.fill("#chat-in", "hello")
            page.press("#chat-in", "Enter")
            page.wait_for_selector("#chatlog .bot .err", timeout=20_000)
            assert "API key" in page.inner_text("#chatlog .bot")
            page.fill("#key", "s3cret-key")
            page.press("#key", "Enter")
            assert page.evaluate("sessionStorage.getItem('roost-api-key')") == "s3cret-key"
            with page.expect_request("**/v1/chat/completions") as sent:
                page.fill("#chat-in", "hello again")
                page.press("#chat-in", "Enter")
            assert sent.value.headers.get("authorization") == "Bearer s3cret-key"
            page.wait_for_selector("#chatlog .bot .label", timeout=20_000)  # the streamed reply, labelled
            assert not errors, errors
            browser.close()
    finally:
        srv.stop()
        engine.shutdown()
        up.stop()
