"""The engine: continuous batching gives the same text as one-at-a-time, seeds, stops, UTF-8-safe streaming,
queue cap, context errors, cancellation; sampling filters; int8 quantisation stays close."""

from __future__ import annotations

import queue
import threading
from pathlib import Path

import pytest
import torch

from roost.infer.engine import Event, QueueFull
from roost.infer.sampling import RequestSampler, SamplingParams
from roost.workspace import Workspace
from tests.serve.conftest import make_engine

PROMPTS = ["hello there", "#rain in the city", "@bob what do you think", "12345 numbers", "ok", "naïve café 東京"]


def _ids(engine, text: str) -> list[int]:  # type: ignore[no-untyped-def]
    return engine.tok.encode(text, add_special_tokens=False).ids


def test_batched_equals_sequential(model_dir: Path) -> None:
    eng = make_engine(model_dir, max_batch=4)
    try:
        p = SamplingParams(max_tokens=24, temperature=0, ignore_eos=True)
        alone = [eng.complete(_ids(eng, t), p)[0] for t in PROMPTS]
        got: list[str | None] = [None] * len(PROMPTS)

        def run(i: int) -> None:
            got[i] = eng.complete(_ids(eng, PROMPTS[i]), SamplingParams(max_tokens=24, temperature=0, ignore_eos=True))[
                0
            ]

        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(PROMPTS))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert got == alone
        assert eng.stats["decode_tokens"] > eng.stats["decode_steps"]  # requests really shared decode steps
    finally:
        eng.shutdown()


def test_seed_stop_and_streaming_utf8(model_dir: Path) -> None:
    eng = make_engine(model_dir)
    try:
        ids = _ids(eng, "the")
        a = eng.complete(ids, SamplingParams(max_tokens=30, temperature=1.0, seed=11, ignore_eos=True))[0]
        assert a == eng.complete(ids, SamplingParams(max_tokens=30, temperature=1.0, seed=11, ignore_eos=True))[0]
        q: queue.Queue[Event] = queue.Queue()
        eng.submit(ids, SamplingParams(max_tokens=80, temperature=1.0, seed=3, ignore_eos=True), q.put)
        deltas, final = [], None
        while final is None:
            ev = q.get(timeout=60)
            if ev.kind == "done":
                final = ev
            deltas.append(ev.text)
        text = "".join(deltas)
        assert text == eng.complete(ids, SamplingParams(max_tokens=80, temperature=1.0, seed=3, ignore_eos=True))[0]
        stop = text[4:7]
        cut, ev = eng.complete(
            ids, SamplingParams(max_tokens=80, temperature=1.0, seed=3, ignore_eos=True, stop=[stop])
        )
        assert cut == text[: text.index(stop)] and ev.finish_reason == "stop"
    finally:
        eng.shutdown()


def test_limits_and_cancel(model_dir: Path) -> None:
    eng = make_engine(model_dir, max_batch=1, max_queue=1)
    try:
        with pytest.raises(ValueError, match="context length"):
            eng.submit([1] * 500, SamplingParams(max_tokens=100), lambda e: None)
        with pytest.raises(ValueError, match="token ids"):
            eng.submit([10**6], SamplingParams(max_tokens=1), lambda e: None)
        events: queue.Queue[Event] = queue.Queue()
        long = eng.submit([5, 6], SamplingParams(max_tokens=400, ignore_eos=True), events.put)
        import time

        while eng.active() == 0:  # wait until it runs, so the next one waits in the queue
            time.sleep(0.001)
        eng.submit([5, 6], SamplingParams(max_tokens=5, ignore_eos=True), lambda e: None)  # waits
        with pytest.raises(QueueFull):
            eng.submit([5, 6], SamplingParams(max_tokens=5), lambda e: None)
        long.cancel()
        while (ev := events.get(timeout=30)).kind != "done":
            pass
        assert ev.finish_reason == "cancelled" and ev.usage and ev.usage["completion_tokens"] < 400
    finally:
        eng.shutdown()


def test_sampling_filters() -> None:
    logits = torch.tensor([5.0, 4.0, 1.0, 0.5, -3.0])
    picks = set()
    for seed in range(200):
        s = RequestSampler(SamplingParams(temperature=1.0, top_k=2, seed=seed), 5, torch.device("cpu"))
        picks.add(s(logits)[0])
    assert picks == {0, 1}
    picks = {
        RequestSampler(SamplingParams(temperature=1.0, min_p=0.5, seed=k), 5, torch.device("cpu"))(logits)[0]
        for k in range(200)
    }
    assert picks == {0}  # p(1) = e^-1·p(0) ≈ 0.37·p(0) < 0.5·p(0): only token 0 survives min_p 0.5
    s = RequestSampler(SamplingParams(temperature=0, repetition_penalty=10.0, logprobs=2), 5, torch.device("cpu"))
    first, lp, top = s(logits)
    assert first == 0 and lp == pytest.approx(float(logits.log_softmax(-1)[0])) and [t for t, _ in top] == [0, 1]
    assert s(logits)[0] == 1  # token 0 is now penalised
    with pytest.raises(ValueError):
        SamplingParams(top_p=0).check()


def test_int8_weights_stay_close(model_dir: Path) -> None:
    from roost.infer.quant import quantize_int8
    from roost.model.convert import load_model_dir

    m, _ = load_model_dir(model_dir)
    x = torch.randint(0, 1000, (1, 32))
    with torch.no_grad():
        ref = m.eval()(x).float()
        q = quantize_int8(m.to(torch.bfloat16))(x).float()
    assert (q - ref).abs().max().item() < 0.05 * ref.abs().max().item()


@pytest.mark.slow
def test_streamed_emoji_never_split_with_smollm2(tmp_path: Path) -> None:
    """A real model that writes emoji: no streamed piece may hold half a character (U+FFFD)."""
    from roost.data.tokenizer import load
    from roost.infer.engine import Engine
    from roost.model.convert import load_model_dir
    from roost.model.imports import import_model

    d, _ = import_model(Workspace(tmp_path), "smollm2", "s")
    m, _ = load_model_dir(d)
    tok = load(d / "tokenizer.json")
    eng = Engine(m, tok, {tok.token_to_id("<|im_end|>")}, max_batch=2, max_seq=512, dtype=torch.bfloat16)
    try:
        prompt = "<|im_start|>user\nWrite a cheerful post full of emoji 🎉🌟 about a sunny day<|im_end|>\n<|im_start|>assistant\n"
        ids = tok.encode(prompt, add_special_tokens=False).ids
        pieces: list[str] = []
        for seed in (1, 2, 3):
            q: queue.Queue[Event] = queue.Queue()
            eng.submit(ids, SamplingParams(max_tokens=60, temperature=0.8, seed=seed), q.put)
            while (ev := q.get(timeout=120)).kind != "done":
                pieces.append(ev.text)
            pieces.append(ev.text)
        text = "".join(pieces)
        assert any(ord(c) > 0xFFFF for c in text)  # emoji (4-byte UTF-8) were streamed
        assert all("\ufffd" not in p for p in pieces)
    finally:
        eng.shutdown()


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(temperature=1e-300),
        SamplingParams(temperature=1e-30, repetition_penalty=1e-300),
        SamplingParams(temperature=0, repetition_penalty=1e-300),
        SamplingParams(temperature=1e-20, top_p=1e-12, min_p=1.0),
    ],
)
def test_extreme_sampling_params_pick_a_token_not_nan(params: SamplingParams) -> None:
    """Values a client may send (found by schemathesis: a tiny temperature made softmax NaN and failed the whole
    batch): the sampler still returns the best token, never raises."""
    torch.manual_seed(0)
    logits = torch.randn(50) * 5 - 20  # all negative: a tiny temperature sends every logit to -inf
    s = RequestSampler(params, 50, torch.device("cpu"))
    s.observe([3, 7])
    tok, _, _ = s(logits)
    if params.repetition_penalty == 1.0:
        assert tok == int(logits.argmax())
    assert 0 <= tok < 50
