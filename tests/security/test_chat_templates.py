"""A model's chat template is hostile code: it renders in a sandboxed worker process with a time, memory and
output budget; a template that loops, builds a huge string or raises is a 400 naming the template, and the server
keeps answering `/health` while one renders."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest

from roost.infer.chat import RENDER_SECONDS, ChatTemplate
from tests.data.conftest import store_db, tok_path  # noqa: F401
from tests.serve.conftest import Server, make_engine, model_dir  # noqa: F401

MSGS = [{"role": "user", "content": "hi"}]
LOOP = "{% for a in range(100000) %}{% for b in range(100000) %}{{ '' }}{% endfor %}{% endfor %}x"
CASES = {
    "loop": (LOOP, "longer than"),
    "huge": ("{{ 'x' * 10**8 }}", "characters"),
    "huger": ("{{ 'x' * 10**10 }}", "MiB"),
    "range": ("{% for i in range(10**9) %}{% endfor %}", "failed"),
    "raise": ("{{ raise_exception('no system role') }}", "no system role"),
    "escape": ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "unsafe"),
    "bigerror": ("{{ raise_exception('A' * 250000000) }}", "AAAA"),
    "slowcompile": ("{{ ('a' * 200000000)|wordcount }}" * 30, "compile"),  # over the compile time or memory budget
    "nested": ("{% for a in messages %}" * 25 + "x" + "{% endfor %}" * 25, "does not compile"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_template_is_a_value_error_naming_it(case: str) -> None:
    source, words = CASES[case]
    t = ChatTemplate(source, origin=f"models/evil-{case}/tokenizer_config.json")
    t0 = time.monotonic()
    with pytest.raises(ValueError) as e:
        t.render(MSGS)
    assert f"evil-{case}" in str(e.value) and words in str(e.value), str(e.value)[:300]
    assert len(str(e.value)) < 1000  # an error's text is bounded, whatever the template raised
    assert time.monotonic() - t0 < RENDER_SECONDS + 15  # the worker's start-up included
    good = ChatTemplate("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}")
    assert good.render(MSGS) == "<user>hi"  # and templates still render after a worker was killed


def test_server_keeps_answering_while_a_template_spins(model_dir: Path) -> None:  # noqa: F811
    from roost.serve.app import ServeConfig, build_app

    engine = make_engine(model_dir)
    app = build_app(engine, "tiny", "0" * 64, ServeConfig(), None, None, ChatTemplate(LOOP, origin="evil/tpl"))
    srv = Server(app)
    try:
        body = {"model": "tiny", "messages": MSGS, "max_tokens": 2}
        out: dict[str, httpx.Response] = {}
        t = threading.Thread(
            target=lambda: out.setdefault("r", httpx.post(f"{srv.url}/v1/chat/completions", json=body, timeout=60))
        )
        t.start()
        time.sleep(0.3)
        worst = 0.0
        while t.is_alive():
            t0 = time.monotonic()
            assert httpx.get(f"{srv.url}/health", timeout=5).status_code == 200
            worst = max(worst, time.monotonic() - t0)
            time.sleep(0.1)
        t.join()
        r = out["r"]
        assert r.status_code == 400 and "evil/tpl" in r.json()["error"]["message"], r.text
        assert worst < 1.0  # /health never waited for the template
        r = httpx.post(f"{srv.url}/v1/compose", json={"topic": "snow", "n": 1, "max_chars": 40}, timeout=60)
        assert r.status_code == 400 and "evil/tpl" in r.json()["error"]["message"], r.text
    finally:
        srv.stop()
        engine.shutdown()


def test_named_template_list_and_bad_types() -> None:
    named = [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D{{ messages[0]['content'] }}"}]
    assert ChatTemplate(named).render(MSGS) == "Dhi"
    from roost.errors import RoostError

    with pytest.raises(RoostError):
        ChatTemplate({"not": "a template"})
