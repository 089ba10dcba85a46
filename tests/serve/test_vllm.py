"""roost over real vLLM (the CPU build, in its own environment `.venv-vllm` from `make vllm`, as separate
processes on 127.0.0.1): greedy token ids and chat templates equal roost's own engine for SmolLM2, a
roost-trained model and a LoRA-merged fine-tune; `roost serve --upstream` puts chat, compose, reply, ask, labels and
metrics on two replicas; killing one replica under load leaves every request completed or a clean 503."""

from __future__ import annotations

import json
import queue
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from roost.infer.loading import load_engine, load_upstream, text_side
from roost.infer.sampling import SamplingParams
from roost.serve.vllm import VllmFleet, free_port
from roost.workspace import Workspace
from tests.conftest import run_roost

CONVERSATIONS = [
    [{"role": "user", "content": "Write a short post about the first snow of the year."}],
    [{"role": "system", "content": "You reply briefly."}, {"role": "user", "content": "What is a lighthouse for?"}],
    [{"role": "user", "content": "List three things to do on a rainy Sunday."}],
]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SmolLM2 imported, a small demo corpus ingested and indexed (for reply-by-id and ask)."""
    h = tmp_path_factory.mktemp("vllm") / "home"
    run_roost("--home", str(h), "import", "smollm2")
    run_roost("--home", str(h), "demo-corpus", "--posts", "400")
    run_roost("--home", str(h), "ingest", "-q", str(h / "exports"))
    run_roost("--home", str(h), "index")
    return h


@pytest.fixture(scope="module")
def fleet(home: Path) -> Iterator[VllmFleet]:
    f = VllmFleet.start(home / "models/smollm2", "smollm2", n=2, dtype="float32", max_model_len=1024,
                        log_dir=home / "logs")  # fmt: skip
    yield f
    f.stop()


def _ours(home: Path, model: str, prompts: list[list[int]], n: int = 24) -> list[list[int]]:
    """Greedy token ids from roost's in-process engine in fp32."""
    engine = load_engine(Workspace(home), model, max_batch=1, dtype="fp32").engine
    out = []
    try:
        for ids in prompts:
            q: queue.Queue[Any] = queue.Queue()
            req = engine.submit(ids, SamplingParams(max_tokens=n, temperature=0.0), q.put)
            while q.get(timeout=300).kind != "done":
                pass
            out.append(list(req.out_ids))
    finally:
        engine.shutdown()
    return out


def _theirs(url: str, served: str, prompts: list[list[int]], eos: set[int], n: int = 24) -> list[list[int]]:
    """Greedy token ids from a vLLM server, asked directly (the stop token itself is not part of the output)."""
    out = []
    for ids in prompts:
        body = {"model": served, "prompt": ids, "max_tokens": n, "temperature": 0.0, "return_token_ids": True,
                "stop_token_ids": sorted(eos)}  # fmt: skip
        r = httpx.post(f"{url}/v1/completions", json=body, timeout=300).json()
        toks = r["choices"][0]["token_ids"]
        out.append(toks[:-1] if toks and toks[-1] in eos else toks)
    return out


def _prompts(home: Path, model: str) -> tuple[list[list[int]], set[int], Any, Any]:
    tok, eos, tpl = text_side(home / "models" / model)
    return [tok.encode(tpl.render(c), add_special_tokens=False).ids for c in CONVERSATIONS], eos, tok, tpl


def _sha(home: Path, model: str) -> str:
    return str(json.loads((home / "models" / model / "roost.json").read_text())["model_sha256"])


def _check_parity(home: Path, model: str, url: str) -> None:
    prompts, eos, _, tpl = _prompts(home, model)
    ours = _ours(home, model, prompts)
    theirs = _theirs(url, model, prompts, eos)
    assert all(len(x) > 0 for x in ours)
    assert ours == theirs  # token ids, not just text
    up = load_upstream(Workspace(home), model, [url], pin=_sha(home, model)).engine  # roost did not start it: pinned
    try:
        via = []
        for ids in prompts:
            q: queue.Queue[Any] = queue.Queue()
            req = up.submit(ids, SamplingParams(max_tokens=24, temperature=0.0), q.put)
            while q.get(timeout=300).kind != "done":
                pass
            via.append(list(req.out_ids))
    finally:
        up.shutdown()
    assert via == ours  # and the same through roost's upstream engine
    for conv, ids in zip(CONVERSATIONS, prompts, strict=True):  # the chat template renders the same
        r = httpx.post(f"{url}/tokenize", json={"model": model, "messages": conv, "add_generation_prompt": True},
                       timeout=60).json()  # fmt: skip
        assert r["tokens"] == ids, (tpl.origin, conv)


def test_smollm2_greedy_and_chat_template_parity(home: Path, fleet: VllmFleet) -> None:
    _check_parity(home, "smollm2", fleet.urls[0])


def test_trained_and_lora_merged_models_run_on_vllm_unchanged(home: Path) -> None:
    h = str(home)
    run_roost("--home", h, "tokenizer", "train", "--vocab-size", "2048")
    run_roost("--home", h, "tokenize", "--val-fraction", "0.05")
    common = ["--seq-len", "64", "--batch-size", "2", "--dtype", "fp32", "--eval-every", "100", "-q"]
    run_roost("--home", h, "train", "--name", "d2", "--depth", "2", "--steps", "3", *common)
    run_roost("--home", h, "train", "--name", "voice", "--init", "smollm2", "--sft", "--lora-rank", "8",
              "--steps", "2", "--warmup", "0", *common)  # fmt: skip
    for model in ("d2", "voice"):
        f = VllmFleet.start(home / "models" / model, model, n=1, dtype="float32", max_model_len=512,
                            log_dir=home / "logs")  # fmt: skip
        try:
            _check_parity(home, model, f.urls[0])
        finally:
            f.stop()


def test_roost_over_two_replicas_then_one_is_killed_under_load(home: Path, fleet: VllmFleet) -> None:
    port = free_port()
    exe = Path(sys.executable).with_name("roost")
    argv = [str(exe), "--home", str(home), "serve", "smollm2", "--port", str(port), "--max-seq", "1024",
            "--upstream", fleet.urls[0], "--upstream", fleet.urls[1], "--upstream-sha256", _sha(home, "smollm2")]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read() if proc.stdout else ""
            time.sleep(1)
        _product_layer(home, base)
        _kill_under_load(base, fleet)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _product_layer(home: Path, base: str) -> None:
    sha = json.loads((home / "models/smollm2/roost.json").read_text())["model_sha256"]
    client = openai.OpenAI(base_url=f"{base}/v1", api_key="x", max_retries=0)
    chat = client.chat.completions.create(model="smollm2", messages=CONVERSATIONS[0], max_tokens=16, temperature=0)
    assert chat.choices[0].message.content and chat.model_extra["model_sha256"] == sha
    stream = client.chat.completions.create(model="smollm2", messages=CONVERSATIONS[1], max_tokens=12, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    comp = httpx.post(f"{base}/v1/compose", json={"topic": "the first snow", "n": 2, "max_chars": 120, "seed": 1},
                      timeout=300).json()  # fmt: skip
    assert comp["candidates"] and all(c["ai_generated"] and c["model_sha256"] == sha for c in comp["candidates"])
    assert all(len(c["text"]) <= 120 for c in comp["candidates"])
    pid = (
        sqlite3.connect(home / "corpus.db").execute("SELECT id FROM posts WHERE reply_to IS NULL LIMIT 1").fetchone()[0]
    )
    rep = httpx.post(f"{base}/v1/reply", json={"post_id": pid, "n": 1, "max_chars": 100}, timeout=300).json()
    assert rep["candidates"][0]["model"] == "smollm2"
    ask = httpx.post(f"{base}/v1/ask", json={"question": "what do people say about the weather?", "posts": 3},
                     timeout=300).json()  # fmt: skip
    assert "answer" in ask and ask.get("model_sha256", sha) == sha
    metrics = httpx.get(f"{base}/metrics", timeout=10).text
    for url in ("upstream=", 'outcome="ok"', "roost_upstream_healthy", "roost_upstream_outstanding"):
        assert url in metrics


def _kill_under_load(base: str, fleet: VllmFleet) -> None:
    results: list[tuple[int, dict[str, Any]]] = []
    body = {"model": "smollm2", "messages": CONVERSATIONS[2], "max_tokens": 48, "temperature": 0.7}

    def one() -> None:
        r = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=600)
        results.append((r.status_code, r.json()))

    threads = [threading.Thread(target=one) for _ in range(12)]
    for t in threads:
        t.start()
    time.sleep(2.0)
    fleet.kill(0)
    for t in threads:
        t.join(timeout=600)
    assert len(results) == 12
    for status, out in results:
        if status == 200:
            assert out["choices"][0]["finish_reason"] in ("stop", "length") and out["choices"][0]["message"]["content"]
        else:
            assert status == 503 and {"message", "type", "code"} <= set(out["error"]), out
    assert sum(s == 200 for s, _ in results) >= 6  # the other replica carried the load
    time.sleep(3)
    metrics = httpx.get(f"{base}/metrics", timeout=10).text
    assert f'roost_upstream_healthy{{upstream="{fleet.urls[0]}"}} 0.0' in metrics
    after = httpx.post(f"{base}/v1/chat/completions", json={**body, "max_tokens": 8}, timeout=300)
    assert after.status_code == 200  # new requests go to the live replica
    fleet.kill(1)
    time.sleep(3)
    none = httpx.post(f"{base}/v1/chat/completions", json={**body, "max_tokens": 8}, timeout=300)
    assert none.status_code == 503 and none.headers.get("retry-after"), none.text  # no replica left: clean 503
    assert none.json()["error"]["code"] == "no_upstream"
