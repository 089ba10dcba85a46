"""The web page in real Chromium (Debian's, driven by Playwright, headless): compose shows labelled candidates with
character counts; chat streams a reply. Writes a screenshot (docs/web.png is one of these)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.serve.conftest import serve

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]


@pytest.mark.slow
def test_page_compose_and_streamed_chat(model_dir: Path, store_db: Path, tmp_path: Path) -> None:  # noqa: F811
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    assert chromium, "Debian chromium is required (apt-get install chromium); `make test` installs it"
    srv, engine, _ = serve(model_dir, store_db)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=FLAGS)
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(srv.url + "/")
            assert "AI-generated" in page.inner_text("header")
            page.fill("#topic", "a rainy Monday")
            page.click("#compose")
            page.wait_for_selector("#compose-out .cand, #compose-out p", timeout=60_000)
            cands = page.query_selector_all("#compose-out .cand")
            for c in cands:
                label = c.query_selector(".label").inner_text()
                chars = int(c.query_selector(".chars").inner_text().split()[0])
                assert label.startswith("AI-generated · tiny · sha256") and chars <= 280
            page.fill("#chat-in", "hello there")
            page.press("#chat-in", "Enter")
            page.wait_for_selector("#chatlog .bot .label", timeout=60_000)  # the label comes after the stream ends
            reply = page.inner_text("#chatlog .bot")
            assert len(reply.split("AI-generated")[0].strip()) > 0
            shot = Path(os.environ.get("ROOST_SCREENSHOT", tmp_path / "web.png"))
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            browser.close()
    finally:
        srv.stop()
        engine.shutdown()
