"""A hostile or broken upstream (a real HTTP server on 127.0.0.1 speaking OpenAI's completions protocol badly)
cannot break roost's upstream engine: the stop token's logprob never reaches the API, a silent upstream is failed
over within the chunk deadline, max_tokens holds whatever the upstream sends, a stream without a finish reason or
with ids outside the vocabulary is a failure that continues on a healthy replica, and a cancelled request frees
its slot at once. The supervisor that starts vLLM replicas ends their whole process group when roost dies."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.responses import StreamingResponse

from roost.data import tokenizer as toklib
from roost.infer.engine import Event, Unavailable, check_done
from roost.infer.sampling import SamplingParams
from roost.infer.upstream import UpstreamEngine
from roost.workspace import Workspace
from tests.data.conftest import store_db, tok_path  # noqa: F401
from tests.serve.conftest import Server, model_dir  # noqa: F401


def fake(mode: str, eos: int) -> FastAPI:
    app = FastAPI()

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"ok": "yes"}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"data": [{"id": "tiny", "root": "/nowhere", "max_model_len": 512}]}

    @app.post("/v1/completions")
    async def completions(body: dict[str, Any]) -> StreamingResponse:
        async def chunks() -> Any:
            def c(ids: list[int], reason: str | None = None, lp: Any = None) -> str:
                choice = {"index": 0, "text": "x" * len(ids), "token_ids": ids, "finish_reason": reason, "logprobs": lp}
                return "data: " + json.dumps({"choices": [choice]}) + "\n\n"

            if mode == "hang":
                await asyncio.sleep(3600)
            if mode == "bad_ids":
                yield c([5, -5])
                return
            n = 0
            while mode == "forever" or n < 3:
                n += 1
                lp = {"token_logprobs": [-0.1], "top_logprobs": [{f"token_id:{5 + n}": -0.1}]}
                yield c([5 + n], None, lp)
                await asyncio.sleep(0.001)
            if mode == "no_reason":
                return
            end = {"token_logprobs": [-0.2], "top_logprobs": [{f"token_id:{eos}": -0.2}]}
            yield c([eos], "stop", end)  # vLLM's last chunk: the stop token with its logprob
            yield "data: [DONE]\n\n"

        return StreamingResponse(chunks(), media_type="text/event-stream")

    return app


@pytest.fixture(scope="module")
def tok(model_dir: Path) -> Any:  # noqa: F811
    return toklib.load(model_dir / "tokenizer.json")


@pytest.fixture(scope="module")
def fakes(tok: Any) -> Iterator[dict[str, Server]]:
    eos = tok.token_to_id(toklib.EOS)
    servers = {m: Server(fake(m, eos)) for m in ("good", "hang", "forever", "no_reason", "bad_ids")}
    yield servers
    for s in servers.values():
        s.stop()


def _run(engine: UpstreamEngine, params: SamplingParams, cancel_after: float | None = None) -> tuple[Any, Event, float]:
    q: queue.Queue[Event] = queue.Queue()
    t0 = time.monotonic()
    req = engine.submit([1, 2, 3], params, q.put)
    if cancel_after is not None:
        time.sleep(cancel_after)
        req.cancel()
    while (ev := q.get(timeout=60)).kind != "done":
        pass
    return req, ev, time.monotonic() - t0


def _engine(tok: Any, *servers: Server, chunk_timeout: float = 60.0) -> UpstreamEngine:
    eos = {tok.token_to_id(toklib.EOS)}
    return UpstreamEngine([s.url for s in servers], tok, eos, 512, "tiny", chunk_timeout=chunk_timeout)


def test_stop_token_and_its_logprob_are_dropped_together(tok: Any, fakes: dict[str, Server]) -> None:
    eng = _engine(tok, fakes["good"])
    try:
        q: queue.Queue[Event] = queue.Queue()
        eng.submit([1, 2, 3], SamplingParams(max_tokens=10, temperature=0, logprobs=1), q.put)
        events = []
        while (ev := q.get(timeout=30)).kind != "done":
            events.append(ev)
        lps = [x for e in events for x in e.logprobs]
        assert (
            ev.finish_reason == "stop" and len(lps) == 3 and all(0 <= x["token_id"] < tok.get_vocab_size() for x in lps)
        )
    finally:
        eng.shutdown()


def test_silent_upstream_is_failed_over_and_frees_its_slot(tok: Any, fakes: dict[str, Server]) -> None:
    eng = _engine(tok, fakes["hang"], chunk_timeout=1.0)
    try:
        _, ev, took = _run(eng, SamplingParams(max_tokens=5, temperature=0))
        assert took < 10 and ev.finish_reason == "unavailable"
        with pytest.raises(Unavailable):
            check_done(ev)
        assert eng.queue_depth() == 0 and eng.active() == 0  # no slot held by the silent replica
    finally:
        eng.shutdown()


def test_max_tokens_holds_whatever_the_upstream_sends(tok: Any, fakes: dict[str, Server]) -> None:
    eng = _engine(tok, fakes["forever"])
    try:
        req, ev, _ = _run(eng, SamplingParams(max_tokens=20, temperature=0))
        assert len(req.out_ids) == 20 and ev.finish_reason == "length"
    finally:
        eng.shutdown()


@pytest.mark.parametrize("bad", ["no_reason", "bad_ids"])
def test_broken_stream_continues_on_a_healthy_replica(tok: Any, fakes: dict[str, Server], bad: str) -> None:
    eng = _engine(tok, fakes[bad], fakes["good"])
    try:
        for _ in range(3):  # whichever replica the router picks first, the request completes
            req, ev, _ = _run(eng, SamplingParams(max_tokens=10, temperature=0))
            assert ev.finish_reason == "stop" and all(0 <= t < tok.get_vocab_size() for t in req.out_ids)
    finally:
        eng.shutdown()


def test_cancel_stops_a_silent_upstream_request_at_once(tok: Any, fakes: dict[str, Server]) -> None:
    eng = _engine(tok, fakes["hang"])
    try:
        _, ev, took = _run(eng, SamplingParams(max_tokens=5, temperature=0), cancel_after=0.3)
        assert took < 5 and eng.queue_depth() == 0 and eng.active() == 0
    finally:
        eng.shutdown()


def test_supervisor_ends_the_replicas_process_group_when_roost_dies(tmp_path: Path) -> None:
    """The mechanism `roost serve --vllm` uses, with a stand-in for vLLM that spawns a grandchild (as vLLM spawns its
    engine core): SIGKILL the process that started it, and the whole group is gone."""
    from roost.serve import vllm

    pidfile = tmp_path / "grandchild.pid"
    standin = f"import subprocess, time; p = subprocess.Popen(['sleep', '600']); open({str(pidfile)!r}, 'w').write(str(p.pid)); time.sleep(600)"
    starter = (
        "import subprocess, sys, time; from roost.serve.vllm import SUPERVISOR, _die_with_parent; "
        f"subprocess.Popen([sys.executable, '-c', SUPERVISOR, sys.executable, '-c', {standin!r}], preexec_fn=_die_with_parent); "
        "time.sleep(600)"
    )
    roost = subprocess.Popen([sys.executable, "-c", starter])
    deadline = time.monotonic() + 30
    while not pidfile.is_file() or not pidfile.read_text():
        assert time.monotonic() < deadline
        time.sleep(0.1)
    grandchild = int(pidfile.read_text())
    os.kill(roost.pid, signal.SIGKILL)
    roost.wait()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            os.kill(grandchild, 0)
            with open(f"/proc/{grandchild}/stat") as fh:
                if fh.read().split()[2] == "Z":
                    break
        except (ProcessLookupError, FileNotFoundError):
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"the stand-in's child {grandchild} outlived roost")
    assert vllm.SUPERVISOR


def test_a_card_naming_the_served_folder_vouches_for_nothing(model_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    """An upstream roost did not start can name any folder as its card's `root`, the served one included: its
    text is labelled with the folder's sha256 only when the operator pins that sha256; a replica roost started on
    the folder itself (`--vllm`) is vouched for by its card."""
    from roost.errors import UsageError
    from roost.infer.loading import load_upstream
    from tests.security.fake_upstream import Hostile

    tok = toklib.load(model_dir / "tokenizer.json")
    up = Hostile(tok.token_to_id(toklib.EOS), root=str(model_dir))
    sha = json.loads((model_dir / "roost.json").read_text())["model_sha256"]
    try:
        with pytest.raises(UsageError, match="--upstream-sha256"):
            load_upstream(Workspace(tmp_path), str(model_dir), [up.url], wait_s=5)
        for kw in ({"pin": sha}, {"own": [up.url]}):
            loaded = load_upstream(Workspace(tmp_path), str(model_dir), [up.url], wait_s=5, **kw)
            loaded.engine.shutdown()
            assert loaded.sha256 == sha
    finally:
        up.stop()
