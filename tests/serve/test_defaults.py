"""The sampling each route and verb uses when a client or user leaves the values out, pinned: `/v1/completions`,
`/v1/chat/completions`, `/v1/compose`, `/v1/reply`, `roost generate`, `roost compose`, `roost reply` — and the
prompt `roost generate` sends (its chat wrapping). What reaches the sampler is recorded where every generation
path meets it (`RequestSampler`), and the prompt where the model first runs (`Llama.forward`)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from roost.data import tokenizer as toklib
from roost.infer import sampling

# every field of the sampling parameters (what reaches `RequestSampler`), at its default
BASE = {
    "max_tokens": 128,
    "temperature": 1.0,
    "top_k": 0,
    "top_p": 1.0,
    "min_p": 0.0,
    "repetition_penalty": 1.0,
    "frequency_penalty": 0.0,
    "presence_penalty": 0.0,
    "stop": [],
    "stop_token_ids": [],
    "seed": None,
    "logprobs": None,
    "ignore_eos": False,
}
ROUTE = {**BASE, "max_tokens": 256}  # OpenAI routes: the request's defaults, max_tokens min(256, context / 2)
SUGGEST = {**BASE, "max_tokens": 140, "temperature": 0.9, "top_p": 0.95, "repetition_penalty": 1.1}  # 280 chars
GENERATE = {**BASE, "max_tokens": 60, "temperature": 0.8, "top_k": 50, "top_p": 0.95}


def test_route_defaults(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from roost.serve.app import ServeConfig, build_app
    from tests.serve.conftest import make_engine

    seen: list[dict[str, Any]] = []
    init = sampling.RequestSampler.__init__

    def record(self: Any, params: Any, *a: Any, **k: Any) -> None:
        seen.append(dataclasses.asdict(params))
        init(self, params, *a, **k)

    monkeypatch.setattr(sampling.RequestSampler, "__init__", record)
    engine = make_engine(model_dir)
    app = build_app(engine, "tiny", "0" * 64, ServeConfig())

    async def post(path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
        seen.clear()
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as c:
            r = await c.post(path, json=body, timeout=120)
        assert r.status_code == 200, r.text
        return list(seen)

    chat = [{"role": "user", "content": "hi"}]
    try:
        assert asyncio.run(post("/v1/completions", {"model": "tiny", "prompt": "hi"})) == [ROUTE]
        assert asyncio.run(post("/v1/chat/completions", {"model": "tiny", "messages": chat})) == [ROUTE]
        two = asyncio.run(post("/v1/chat/completions", {"model": "tiny", "messages": chat, "n": 2, "seed": 7}))
        assert two == [{**ROUTE, "seed": 7}, {**ROUTE, "seed": 8}]
        # compose and reply: n=3 candidates per round, seeds seed + 1000 × round + i
        got = asyncio.run(post("/v1/compose", {"topic": "rain"}))
        assert got[:3] == [SUGGEST] * 3 and all(p == SUGGEST for p in got)
        got = asyncio.run(post("/v1/compose", {"topic": "rain", "seed": 5, "max_chars": 40, "temperature": 0.5}))
        assert got[:3] == [{**SUGGEST, "max_tokens": 48, "temperature": 0.5, "seed": s} for s in (5, 6, 7)]
        assert all(p["seed"] - 5 in (0, 1, 2, 1000, 1001, 1002, 2000, 2001, 2002) for p in got)
        got = asyncio.run(post("/v1/reply", {"text": "what a rainy monday", "n": 1, "max_chars": 1000}))
        assert got[0] == {**SUGGEST, "max_tokens": 256}
    finally:
        engine.shutdown()


# the child runs the real `roost` entry point with the sampler and the model's first call recorded
RECORDER = """
import dataclasses, json, os, sys
from roost.infer import sampling
from roost.model import llama

_init, _fwd = sampling.RequestSampler.__init__, llama.Llama.forward

def _write(kind, value):
    with open(os.environ["ROOST_TEST_RECORD"], "a") as f:
        f.write(json.dumps([kind, value]) + "\\n")

def init(self, params, *a, **k):
    _write("params", dataclasses.asdict(params))
    _init(self, params, *a, **k)

def forward(self, x, *a, **k):
    if x.shape[1] > 1:  # a prefill: the prompt
        _write("prompt", x[0].tolist())
    return _fwd(self, x, *a, **k)

sampling.RequestSampler.__init__ = init
llama.Llama.forward = forward
import runpy
sys.argv = ["roost", *sys.argv[1:]]
runpy.run_module("roost", run_name="__main__")  # `python -m roost`: the command as a user runs it
"""


def run_recorded(tmp_path: Path, *args: str) -> tuple[list[dict[str, Any]], list[list[int]], str]:
    """Run `roost --home tmp_path/home ARGS...` in a child; (sampling params, prompts, stdout)."""
    rec = tmp_path / "record.jsonl"
    rec.unlink(missing_ok=True)
    env = {**os.environ, "ROOST_TEST_RECORD": str(rec), "COLUMNS": "200"}
    cmd = [sys.executable, "-c", RECORDER, "--home", str(tmp_path / "home"), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [json.loads(x) for x in rec.read_text().splitlines()] if rec.exists() else []
    return [v for k, v in lines if k == "params"], [v for k, v in lines if k == "prompt"], proc.stdout


def chatml(text: str) -> str:
    """One user turn in ChatML, no system turn: what roost's own tokenizer's chat template renders (and what
    `roost generate` sent every chat model before it used the model's own template)."""
    return f"<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n"


def test_generate_defaults_and_prompt(model_dir: Path, tmp_path: Path) -> None:
    tok = toklib.load(model_dir / "tokenizer.json")
    params, prompts, out = run_recorded(tmp_path, "generate", str(model_dir), "hi there", "--seed", "3")
    assert params == [{**GENERATE, "seed": 3}] and "ai_generated: true" in out
    assert prompts == [tok.encode(chatml("hi there"), add_special_tokens=False).ids]
    params, prompts, _ = run_recorded(
        tmp_path, "generate", str(model_dir), "hi there", "--raw", "--max-tokens", "5", "--temperature", "0"
    )
    assert params == [{**GENERATE, "max_tokens": 5, "temperature": 0.0}]
    assert prompts == [tok.encode("hi there", add_special_tokens=False).ids]


def test_compose_and_reply_verb_defaults(model_dir: Path, tmp_path: Path) -> None:
    params, _, _ = run_recorded(tmp_path, "compose", "rain", "-m", str(model_dir), "-n", "2", "--seed", "1")
    assert params[:2] == [{**SUGGEST, "seed": 1}, {**SUGGEST, "seed": 2}]
    params, _, _ = run_recorded(tmp_path, "reply", "what a rainy monday", "-m", str(model_dir), "-n", "1")
    assert params[0] == SUGGEST
    params, _, _ = run_recorded(tmp_path, "compose", "rain", "-m", str(model_dir), "-n", "1", "--max-chars", "60")
    assert params[0] == {**SUGGEST, "max_tokens": 48}


@pytest.mark.slow
def test_generate_prompt_for_smollm2_is_unchanged(tmp_path: Path) -> None:
    """SmolLM2's own template adds a default system turn; `roost generate` has always sent the user turn alone."""
    from roost.model.imports import import_model
    from roost.workspace import Workspace

    d, _ = import_model(Workspace(tmp_path / "home"), "smollm2", "smollm2")
    tok = toklib.load(d / "tokenizer.json")
    for chat in ("--chat", "--raw"):
        args = ("generate", "smollm2", "Write about snow", chat, "--max-tokens", "1", "--dtype", "fp32")
        _, prompts, _ = run_recorded(tmp_path, *args)
        want = chatml("Write about snow") if chat == "--chat" else "Write about snow"
        assert prompts == [tok.encode(want, add_special_tokens=False).ids]
