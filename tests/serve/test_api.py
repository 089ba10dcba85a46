"""The OpenAI-compatible API through the official `openai` client against a real uvicorn on 127.0.0.1: models,
completions, chat, streaming with usage, stop, seeds, n, logprobs, compose/reply, errors, 429, auth, metrics."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

import httpx
import openai
import pytest

from tests.serve.conftest import Server, serve


@pytest.fixture(scope="module")
def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


def test_models_and_health(client: openai.OpenAI, server: Server) -> None:
    models = client.models.list()
    assert [m.id for m in models.data] == ["tiny"]
    assert httpx.get(f"{server.url}/health").json()["status"] == "ok"


def test_completion_and_chat(client: openai.OpenAI) -> None:
    r = client.completions.create(model="tiny", prompt="hello #world", max_tokens=12, temperature=0)
    assert r.choices[0].finish_reason in ("length", "stop") and r.usage.completion_tokens <= 12
    assert r.model_extra["ai_generated"] is True and len(r.model_extra["model_sha256"]) == 64
    c = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=10, temperature=0
    )
    assert c.choices[0].message.role == "assistant" and c.usage.prompt_tokens > 3
    assert (
        c.choices[0].message.content
        == client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=10, temperature=0
        )
        .choices[0]
        .message.content
    )


def test_streaming_matches_and_ends_with_usage(client: openai.OpenAI) -> None:
    full = (
        client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "tell me"}], max_tokens=20, temperature=0
        )
        .choices[0]
        .message.content
    )
    chunks = list(
        client.chat.completions.create(
            model="tiny",
            messages=[{"role": "user", "content": "tell me"}],
            max_tokens=20,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens >= 1
    assert any(c.choices and c.choices[0].finish_reason for c in chunks)
    assert all("\ufffd" not in (c.choices[0].delta.content or "") for c in chunks if c.choices)


def test_stop_seed_n_logprobs(client: openai.OpenAI) -> None:
    base = client.completions.create(model="tiny", prompt="the", max_tokens=40, temperature=0).choices[0].text
    assert len(base) > 10
    stop = base[6:9]
    cut = client.completions.create(model="tiny", prompt="the", max_tokens=40, temperature=0, stop=[stop])
    assert cut.choices[0].text == base[: base.index(stop)] and cut.choices[0].finish_reason == "stop"
    a = client.completions.create(model="tiny", prompt="the", max_tokens=15, temperature=1.0, seed=7)
    b = client.completions.create(model="tiny", prompt="the", max_tokens=15, temperature=1.0, seed=7)
    c = client.completions.create(model="tiny", prompt="the", max_tokens=15, temperature=1.0, seed=8)
    assert a.choices[0].text == b.choices[0].text != c.choices[0].text
    two = client.completions.create(model="tiny", prompt="the", max_tokens=8, n=2, seed=1, logprobs=2)
    assert [ch.index for ch in two.choices] == [0, 1]
    lp = two.choices[0].logprobs
    assert lp.token_logprobs and all(x <= 0 for x in lp.token_logprobs) and all(len(t) == 2 for t in lp.top_logprobs)
    chat = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "x"}], max_tokens=5, logprobs=True, top_logprobs=3
    )
    assert len(chat.choices[0].logprobs.content[0].top_logprobs) == 3


@pytest.mark.parametrize(
    "body,status,code",
    [
        ({"model": "nope", "prompt": "x"}, 404, "model_not_found"),
        ({"model": "tiny", "prompt": "x", "max_tokens": 600}, 400, "context_length_exceeded"),
        ({"model": "tiny", "prompt": "x", "max_tokens": -1}, 400, "invalid_value"),
        ({"model": "tiny", "prompt": "x", "temperature": "hot"}, 400, "invalid_value"),
        ({"model": "tiny", "prompt": "x", "top_p": 0}, 400, "invalid_value"),
        ({"model": "tiny", "prompt": [999999]}, 400, "invalid_value"),
        ({"model": "tiny"}, 400, "invalid_value"),
        ({"model": "tiny", "prompt": "x", "n": 1000}, 400, "invalid_value"),
    ],
)
def test_bad_requests_are_4xx_in_openai_shape(server: Server, body: dict, status: int, code: str) -> None:
    r = httpx.post(f"{server.url}/v1/completions", json=body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["code"] == code and err["message"]


def test_malformed_and_huge_bodies(server: Server, client: openai.OpenAI) -> None:
    r = httpx.post(
        f"{server.url}/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    r = httpx.post(
        f"{server.url}/v1/chat/completions", content=b"x" * (2 << 20), headers={"content-type": "application/json"}
    )
    assert r.status_code == 413 and "body" in r.json()["error"]["message"]
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "x"}])
    assert "does not exist" in str(e.value)


def test_compose_and_reply(server: Server, store_db: Path) -> None:
    r = httpx.post(f"{server.url}/v1/compose", json={"topic": "rain", "n": 3, "max_chars": 60, "seed": 1}, timeout=120)
    assert r.status_code == 200, r.text
    j = r.json()
    assert j["ai_generated"] is True and len(j["model_sha256"]) == 64
    assert len(j["candidates"]) + sum(j["dropped"].values()) >= 3
    for c in j["candidates"]:
        assert c["chars"] == len(c["text"]) <= 60 and c["ai_generated"] is True
    import sqlite3

    post_id = sqlite3.connect(store_db).execute("SELECT id FROM posts LIMIT 1").fetchone()[0]
    r = httpx.post(f"{server.url}/v1/reply", json={"post_id": post_id, "n": 2, "seed": 2}, timeout=120)
    assert r.status_code == 200 and all(c["chars"] <= 280 for c in r.json()["candidates"])
    r = httpx.post(f"{server.url}/v1/reply", json={"post_id": "x:nope"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "post_not_found"
    r = httpx.post(f"{server.url}/v1/reply", json={})
    assert r.status_code == 400


def test_metrics_exposed(server: Server, client: openai.OpenAI) -> None:
    client.completions.create(model="tiny", prompt="a", max_tokens=3)
    text = httpx.get(f"{server.url}/metrics").text
    for name in (
        "roost_requests_total",
        "roost_request_seconds_bucket",
        "roost_time_to_first_token_seconds",
        "roost_generated_tokens_total",
        "roost_queue_depth",
        "roost_kv_cache_usage",
    ):
        assert name in text
    assert 'route="/v1/completions",status="200"' in text


def test_queue_full_is_429_with_retry_after(model_dir: Path) -> None:
    srv, engine, _ = serve(model_dir, engine_kw={"max_batch": 1, "max_queue": 1})
    try:
        results: list[int] = []

        def call() -> None:
            r = httpx.post(
                f"{srv.url}/v1/completions",
                json={"model": "tiny", "prompt": "x", "max_tokens": 200, "temperature": 0.0, "stop_token_ids": []},
                timeout=120,
            )
            results.append(r.status_code)
            if r.status_code == 429:
                assert r.headers["retry-after"] == "1" and r.json()["error"]["type"] == "rate_limit_error"

        threads = [threading.Thread(target=call) for _ in range(5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert 429 in results and 200 in results and all(s in (200, 429) for s in results)
    finally:
        srv.stop()
        engine.shutdown()


def test_disconnect_cancels_generation(model_dir: Path) -> None:
    srv, engine, _ = serve(model_dir)
    try:
        with httpx.stream(
            "POST",
            f"{srv.url}/v1/chat/completions",
            json={
                "model": "tiny",
                "messages": [{"role": "user", "content": "go"}],
                "max_tokens": 400,
                "stream": True,
                "stop_token_ids": [],
                "temperature": 1.0,
            },
            timeout=60,
        ) as r:
            for line in r.iter_lines():
                if line.startswith("data: {"):
                    break
        import time

        deadline = time.time() + 10
        while engine.active() and time.time() < deadline:
            time.sleep(0.05)
        assert engine.active() == 0  # stopped long before 400 tokens
    finally:
        srv.stop()
        engine.shutdown()


def test_api_key_required_when_set(model_dir: Path) -> None:
    srv, engine, _ = serve(model_dir, api_key="s3cret")
    try:
        assert httpx.get(f"{srv.url}/v1/models").status_code == 401
        ok = openai.OpenAI(base_url=f"{srv.url}/v1", api_key="s3cret", max_retries=0)
        assert ok.models.list().data[0].id == "tiny"
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{srv.url}/v1", api_key="wrong", max_retries=0).models.list()
    finally:
        srv.stop()
        engine.shutdown()


def test_shutdown_answers_503(model_dir: Path) -> None:
    srv, engine, app = serve(model_dir)
    try:
        app.state.closing = True
        r = httpx.post(f"{srv.url}/v1/completions", json={"model": "tiny", "prompt": "x"})
        assert r.status_code == 503 and r.json()["error"]["code"] == "shutting_down"
    finally:
        srv.stop()
        engine.shutdown()


def test_openapi_spec_from_schemas(server: Server) -> None:
    spec = httpx.get(f"{server.url}/openapi.json").json()
    assert {"/v1/completions", "/v1/chat/completions", "/v1/compose", "/v1/reply", "/v1/models"} <= set(spec["paths"])
    assert "ComposeRequest" in json.dumps(spec)


def test_in_process_with_the_async_client(model_dir: Path) -> None:
    """The same app in process: the async OpenAI client over httpx's ASGI transport (no socket)."""
    import asyncio

    from roost.serve.app import ServeConfig, build_app
    from tests.serve.conftest import make_engine

    engine = make_engine(model_dir)
    app = build_app(engine, "tiny", "0" * 64, ServeConfig())

    async def go() -> tuple[list[str], str | None]:
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost")
        client = openai.AsyncOpenAI(base_url="http://localhost/v1", api_key="x", http_client=http, max_retries=0)
        ids = [m.id async for m in client.models.list()]
        r = await client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=5
        )
        await http.aclose()
        return ids, r.choices[0].finish_reason

    try:
        ids, reason = asyncio.run(go())
        assert ids == ["tiny"] and reason in ("stop", "length")
    finally:
        engine.shutdown()


def test_chat_template_is_the_models_own() -> None:
    from roost.infer.chat import ChatTemplate

    smol = (
        "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
        "{{ '<|im_start|>system\\nYou are SmolLM<|im_end|>\\n' }}{% endif %}"
        "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    )
    out = ChatTemplate(smol).render([{"role": "user", "content": "hi"}])
    assert (
        out == "<|im_start|>system\nYou are SmolLM<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    )
    assert ChatTemplate(None).render([{"role": "user", "content": "hi"}]).startswith("<|im_start|>user\nhi")
    strict = ChatTemplate("{% if messages[0]['role'] != 'user' %}{{ raise_exception('user first') }}{% endif %}x")
    with pytest.raises(ValueError, match="user first"):
        strict.render([{"role": "assistant", "content": "a"}])


def test_serve_refuses_public_bind_without_key(tmp_path: Path) -> None:
    from tests.conftest import run_roost

    p = run_roost("--home", str(tmp_path), "serve", "whatever", "--host", "0.0.0.0", check=False)
    assert p.returncode == 2 and "without an API key" in p.stderr and "Traceback" not in p.stderr


def test_cli_compose_and_reply(model_dir: Path, store_db: Path, tmp_path: Path) -> None:
    import shutil

    from tests.conftest import run_roost

    shutil.copyfile(store_db, tmp_path / "corpus.db")
    out = run_roost(
        "--home", str(tmp_path), "compose", "rain", "-m", str(model_dir), "-n", "2", "--seed", "1", "--max-chars", "80"
    ).stdout
    assert "ai_generated: true · model tiny" in out and "dropped:" in out
    post_id = sqlite3.connect(store_db).execute("SELECT id FROM posts LIMIT 1").fetchone()[0]
    out = run_roost("--home", str(tmp_path), "reply", post_id, "-m", str(model_dir), "-n", "1", "--seed", "2").stdout
    assert "reply to:" in out and "ai_generated: true" in out
    bad = run_roost("--home", str(tmp_path), "reply", "x:does-not-exist", "-m", str(model_dir), check=False)
    assert bad.returncode == 1 and "no post 'x:does-not-exist'" in bad.stderr
