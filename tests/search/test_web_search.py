"""The page's search and ask boxes in real Chromium (Debian's, via Playwright) against a real server with the real
SmolLM2: results listed, the answer streamed with citations that jump to the cited post; a search-only server
hides the generation boxes."""

from __future__ import annotations

import os
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from roost.config import CorpusConfig, SearchConfig
from roost.context import Roost
from roost.demo.writers import Draft, write_x_archive
from roost.serve.app import ServeConfig, build_app
from roost.serve.search_api import SearchService
from roost.workspace import Workspace
from tests.conftest import run_roost
from tests.search.conftest import copy_home
from tests.serve.conftest import Server
from tests.serve.test_web import FLAGS

FERRY = [
    "The ferry to the island is cancelled today because of the storm.",
    "Storm warning: the island ferry service is suspended until Friday.",
    "Buses replace the island ferry while the storm lasts.",
]


@pytest.mark.slow
def test_page_search_and_ask(search_home: Path, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    from roost.infer.loading import load_engine

    chromium = shutil.which("chromium")
    assert chromium, "Debian chromium is required (apt-get install chromium); `make test` installs it"
    home = copy_home(search_home, tmp_path / "h")
    t = datetime(2024, 8, 1, tzinfo=UTC)
    drafts = [Draft(str(990000 + i), text, t + timedelta(hours=i)) for i, text in enumerate(FERRY)]
    run_roost("--home", str(home), "ingest", str(write_x_archive(tmp_path / "e", "harbour", "9", drafts)))
    run_roost("--home", str(home), "import", "smollm2")
    svc = SearchService.open(Roost.at(home), CorpusConfig(workers=1), SearchConfig())
    loaded = load_engine(Workspace(home), "smollm2", max_batch=4)
    engine = loaded.engine
    srv = Server(
        build_app(engine, loaded.name, loaded.sha256, ServeConfig(), None, home / "corpus.db", loaded.template, svc)
    )
    only = Server(build_app(None, None, None, ServeConfig(), search=svc))
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=FLAGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(srv.url + "/")
            page.fill("#q", "ferry storm")
            page.press("#q", "Enter")
            page.wait_for_selector("#search-out .hit", timeout=30_000)
            assert "ferry" in page.inner_text("#search-out .hit").lower()
            page.fill("#question", "Is the island ferry running during the storm?")
            page.click("#ask")
            page.wait_for_selector("#answer .label, #answer p", timeout=120_000)  # label: the stream has ended
            cites = page.query_selector_all("#answer a.cite")
            assert cites, page.inner_text("#answer")
            n = cites[0].get_attribute("data-cite")
            cited = page.query_selector(f"#post-{n}")
            assert cited is not None and "ferry" in cited.inner_text().lower()
            cites[0].click()
            assert "flash" in (cited.get_attribute("class") or "")
            assert page.evaluate("location.hash") == f"#post-{n}"
            shot = Path(os.environ.get("ROOST_SEARCH_SCREENSHOT", tmp_path / "web-search.png"))
            page.screenshot(path=str(shot), full_page=True)
            page.goto(only.url + "/")
            assert page.is_visible("#search-box") and not page.is_visible("#ask-box")
            assert not page.is_visible("#topic")
            # posts whose id, author and text are XSS payloads render as text: the DOM is built with textContent
            evil = {
                "id": 'e1" onmouseover="window.__pwned=1',
                "author": '<img src=x onerror="window.__pwned=2">',
                "text": '<img src=x onerror="window.__pwned=3"> zebrafinch <script>window.__pwned=4</script>',
                "created_at": "2024-09-01T00:00:00Z",
            }
            assert httpx.post(only.url + "/v1/posts", json={"posts": [evil]}, timeout=30).json()["stored"] == 1
            page.fill("#q", "zebrafinch")
            page.press("#q", "Enter")
            page.wait_for_selector("#search-out .hit", timeout=30_000)
            hit = page.query_selector("#search-out .hit")
            page.hover("#search-out .hit")
            assert page.evaluate("window.__pwned") is None
            assert "<script>" in hit.inner_text() and hit.query_selector("img, script") is None
            assert hit.get_attribute("data-id") == "api:" + evil["id"]
            browser.close()
    finally:
        srv.stop()
        only.stop()
        engine.shutdown()
        svc.close()
