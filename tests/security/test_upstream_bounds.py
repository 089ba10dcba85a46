"""What a hostile upstream can make `roost serve --upstream` hold, and the secrets that never leave it (issue 24).

One real `roost serve` process (the console script, with a canary password in its `--upstream` URL and a canary
`--api-key`) in front of one real hostile upstream on 127.0.0.1 (`tests/security/fake_upstream.py`) whose
behaviour each test switches. Each case must end within 10 s and grow the server's peak RSS (VmHWM, reset before
the case through /proc/PID/clear_refs) by at most 64 MiB.

Attacks and outcomes:
- an SSE line that never ends (300 MB, no newline) -> cut at `MAX_LINE` while it grows: 503, the upstream failed
- an error status with a 300 MB body -> only `MAX_ERROR_BODY` bytes are read: 503
- a gzip-compressed stream (300 MB inflated from 300 KB) -> roost asks for identity and refuses any other
  Content-Encoding before reading: 503
- text chunks without token ids, forever, to `max_tokens: 5` -> each counts as a token and text is capped at
  `MAX_TOKEN_BYTES` per token: the stream ends with finish_reason "length"
- endless `/health` and `/v1/models` bodies -> the health check reads the status only, the card at most
  `MAX_CARD_BYTES`; the replica stays out of rotation
- a client that leaves a completion (streaming or not) or a compose request -> its upstream requests are closed
  within seconds
- a lone surrogate in the upstream's text -> an upstream failure (503), never a 500
- the canary password and key -> in no banner line, log line, file of the home, error, or answer of any route;
  every route but `/` and `/health` (so `/metrics`, `/openapi.json`, `/docs` too) answers 401 without the key
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from roost.context import Roost as Context
from roost.data import tokenizer as toklib
from tests.conftest import run_roost
from tests.data.conftest import store_db, tok_path  # noqa: F401
from tests.security.fake_upstream import Hostile
from tests.serve.conftest import model_dir  # noqa: F401

PASSWORD = "pw-canary-7f3a9c0d"
KEY = "key-canary-51be02aa"
CANARIES = (PASSWORD, KEY)
MIB = 1 << 20
BUDGET_RSS = 64 * MIB
BUDGET_S = 10.0


def _status(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} for {pid}")


def _clean(text: str) -> None:
    flat = "".join(text.split())  # a wrapped line still shows a canary
    for c in CANARIES:
        assert c not in text and c not in flat, f"a secret leaked: {text[:300]!r}"


class Roost:
    """`roost serve` in its own process, its output in files."""

    def __init__(self, home: Path, model: Path, upstream: str, tmp: Path):
        from roost.serve.vllm import free_port

        self.port, self.home = free_port(), home
        self.base = f"http://127.0.0.1:{self.port}"
        sha = json.loads((model / "roost.json").read_text())["model_sha256"]
        exe = Path(sys.executable).with_name("roost")
        argv = [str(exe), "--home", str(home), "serve", str(model), "--port", str(self.port),
                "--upstream", upstream, "--upstream-sha256", sha, "--api-key", KEY]  # fmt: skip
        self.out, self.err = tmp / "stdout.txt", tmp / "stderr.txt"
        with self.out.open("w") as o, self.err.open("w") as e:
            self.proc = subprocess.Popen(argv, stdout=o, stderr=e, env={**os.environ, "COLUMNS": "100"})
        deadline = time.monotonic() + 90
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.base}/health", timeout=2).status_code == 200:
                    break
            assert self.proc.poll() is None and time.monotonic() < deadline, self.err.read_text()[-2000:]
            time.sleep(0.3)

    def call(self, method: str, path: str, key: bool = True, **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {KEY}"} if key else {}
        if isinstance(kw.get("json"), dict) and kw["json"]:
            kw["json"] = {"model": "tiny", **kw["json"]}
        r = httpx.request(method, self.base + path, headers=headers, timeout=kw.pop("timeout", 20), **kw)
        _clean(r.text)
        _clean(str(r.headers))
        return r

    def stop(self) -> tuple[str, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.out.read_text(), self.err.read_text()


@pytest.fixture(scope="module")
def up(model_dir: Path) -> Iterator[Hostile]:  # noqa: F811
    h = Hostile(eos=toklib.load(model_dir / "tokenizer.json").token_to_id(toklib.EOS))
    yield h
    h.stop()


def _with_password(url: str) -> str:
    return url.replace("http://", f"http://roost:{PASSWORD}@")


@pytest.fixture(scope="module")
def roost(up: Hostile, model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Roost]:  # noqa: F811
    tmp = tmp_path_factory.mktemp("bounds")
    posts = [{"id": f"r{i}", "author": f"u{i}", "created_at": f"2024-05-0{i + 1}T08:00:00Z",
              "text": f"Rain again today, the {w} is soaked and everyone carries umbrellas"}
             for i, w in enumerate(["street", "park", "market", "station"])]  # fmt: skip
    (tmp / "rain.jsonl").write_text("".join(json.dumps(p) + "\n" for p in posts))
    run_roost("--home", str(tmp / "home"), "ingest", str(tmp / "rain.jsonl"))
    run_roost("--home", str(tmp / "home"), "index", "-q")  # so /v1/ask has posts to cite
    r = Roost(tmp / "home", model_dir, _with_password(up.url), tmp)
    yield r
    r.stop()


def _ready(roost: Roost, up: Hostile) -> None:
    """Every switch back to normal, and the replica back in rotation."""
    up.modes.update(completions="good", health="ok", models="ok")
    deadline = time.monotonic() + 20
    while roost.call("POST", "/v1/completions", json={"prompt": [1, 2], "max_tokens": 2}).status_code != 200:
        assert time.monotonic() < deadline, "the upstream did not come back into rotation"
        time.sleep(0.2)
    up.gone.clear()


@contextlib.contextmanager
def bounded(roost: Roost, up: Hostile) -> Iterator[None]:
    _ready(roost, up)
    pid = roost.proc.pid
    before = _status(pid, "VmRSS")
    with open(f"/proc/{pid}/clear_refs", "w") as fh:
        fh.write("5")  # resets VmHWM to the current RSS
    t0 = time.monotonic()
    yield
    took = time.monotonic() - t0
    grew = _status(pid, "VmHWM") - before
    assert grew <= BUDGET_RSS, f"the server's peak RSS grew by {grew / MIB:.0f} MiB"
    assert took < BUDGET_S, f"the case took {took:.1f} s"


@pytest.mark.parametrize("mode", ["endless_line", "endless_error", "gzip"])
def test_endless_or_compressed_upstream_bodies_are_cut_before_they_are_buffered(
    roost: Roost, up: Hostile, mode: str
) -> None:
    with bounded(roost, up):
        up.modes["completions"] = mode
        r = roost.call("POST", "/v1/completions", json={"prompt": [1, 2, 3], "max_tokens": 5})
        assert r.status_code == 503 and r.json()["error"]["code"] == "no_upstream", r.text[:300]


def test_text_without_token_ids_counts_against_max_tokens(roost: Roost, up: Hostile) -> None:
    from roost.infer.upstream import MAX_TOKEN_BYTES

    with bounded(roost, up):
        up.modes["completions"] = "text_only"
        text, reasons = "", []
        body = {"model": "tiny", "prompt": [1, 2, 3], "max_tokens": 5, "stream": True}
        headers = {"Authorization": f"Bearer {KEY}"}
        deadline = time.monotonic() + BUDGET_S
        with httpx.stream("POST", f"{roost.base}/v1/completions", json=body, headers=headers, timeout=20) as r:
            assert r.status_code == 200
            for line in r.iter_lines():
                assert time.monotonic() < deadline, f"still streaming after {len(text)} characters"
                if line.startswith("data: {"):
                    for c in json.loads(line[6:])["choices"]:
                        text += c["text"]
                        reasons.append(c["finish_reason"])
        assert reasons[-1] == "length" and len(text.encode()) <= 5 * MAX_TOKEN_BYTES, (len(text), reasons[-3:])


def test_endless_health_and_card_bodies_are_never_buffered(roost: Roost, up: Hostile) -> None:
    with bounded(roost, up):
        up.modes["completions"] = "fail"
        assert roost.call("POST", "/v1/completions", json={"prompt": [1, 2], "max_tokens": 2}).status_code == 503
        up.modes.update(health="endless", models="endless")  # the replica must prove its card to come back
        time.sleep(4)  # four rounds of health checks
        up.modes["completions"] = "good"
        assert roost.call("POST", "/v1/completions", json={"prompt": [1, 2], "max_tokens": 2}).status_code == 503


@pytest.mark.parametrize(
    ("path", "stream"),
    [("/v1/completions", False), ("/v1/completions", True), ("/v1/compose", False), ("/v1/ask", False),
     ("/v1/ask", True)],
)  # fmt: skip
def test_a_client_that_leaves_stops_its_upstream_request(roost: Roost, up: Hostile, path: str, stream: bool) -> None:
    with bounded(roost, up):
        # /v1/ask's answers are short (a few dozen tokens): at 250 ms a token they outlast its client by seconds
        up.modes["completions"] = "crawl" if path == "/v1/ask" else "slow"
        body: dict[str, Any] = {"model": "tiny", "prompt": [1, 2, 3], "max_tokens": 1500, "stream": stream}
        if path == "/v1/compose":
            body = {"model": "tiny", "topic": "rain", "n": 2, "max_chars": 5000}
        if path == "/v1/ask":
            body = {"question": "what do people say about the rain?", "stream": stream}
        headers = {"Authorization": f"Bearer {KEY}"}
        if stream:
            with httpx.stream("POST", f"{roost.base}{path}", json=body, headers=headers, timeout=20) as r:
                next(r.iter_lines())
        else:
            with pytest.raises(httpx.ReadTimeout):
                httpx.post(f"{roost.base}{path}", json=body, headers=headers, timeout=1.0)
        assert up.gone.wait(3), "the upstream request outlived its client by 3 s"


@pytest.mark.parametrize("stream", [False, True])
def test_a_lone_surrogate_from_an_upstream_is_an_upstream_failure(roost: Roost, up: Hostile, stream: bool) -> None:
    with bounded(roost, up):
        up.modes["completions"] = "surrogate"
        for path, body in (
            ("/v1/completions", {"prompt": [1, 2, 3], "max_tokens": 5}),
            ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}),
        ):
            r = roost.call("POST", path, json={**body, "stream": stream})
            assert r.status_code == 503 and "\\ud800" not in r.text, (path, r.status_code, r.text[:300])


@pytest.mark.parametrize("mode", ["nan_logprobs", "bool_ids", "long_logprobs"])
def test_upstream_logprobs_and_ids_are_checked(roost: Roost, up: Hostile, mode: str) -> None:
    """NaN logprobs reached clients as the literal NaN (invalid JSON), `true` passed as a token id, and 500,000
    logprobs for one token were all turned into entries before being cut (+133 MiB at 500,000)."""
    with bounded(roost, up):
        up.modes["completions"] = mode
        for stream in (False, True):
            body = {"prompt": [1, 2, 3], "max_tokens": 5, "logprobs": 1, "stream": stream}
            r = roost.call("POST", "/v1/completions", json=body)
            assert "NaN" not in r.text, r.text[:300]
            if mode == "long_logprobs" and not stream:
                assert r.status_code == 200 and len(r.json()["choices"][0]["logprobs"]["token_logprobs"]) == 1
            elif not stream:  # an upstream failure, as for any other broken chunk
                assert r.status_code == 503, (r.status_code, r.text[:300])


def _routes(model_dir: Path, upstream: str, home: Path) -> tuple[list[tuple[str, str]], list[str]]:  # noqa: F811
    """(method, path) of every route of the app `roost serve` builds with these arguments, and its banner."""
    from roost.serve.config import ServeConfig
    from roost.serve.launch import build, hints

    sha = json.loads((model_dir / "roost.json").read_text())["model_sha256"]
    said: list[str] = []
    args = ServeConfig(str(model_dir), upstreams=[upstream], upstream_sha256=sha, api_key=KEY, no_search=True)
    server = build(Context.at(home), args, say=said.append)
    try:
        out = [(m, re.sub(r"\{[^}]*\}", "x:1", r.path)) for r in server.app.routes for m in sorted(r.methods or ())]
    finally:
        server.engine.shutdown()
    return out, said + hints(server)


def test_secrets_never_leave_and_every_route_needs_the_key(
    roost: Roost,
    up: Hostile,
    model_dir: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Runs last: the server has been through every hostile case above (errors, failovers, metrics)."""
    from roost.infer.loading import served_card

    _ready(roost, up)
    routes, banner = _routes(model_dir, _with_password(up.url), tmp_path / "home")
    _clean("\n".join(banner))
    paths = {p for _, p in routes}
    assert {"/", "/health", "/metrics", "/openapi.json", "/docs", "/v1/completions"} <= paths
    for method, path in routes:
        body = {"json": {}} if method in ("POST", "PUT", "PATCH") else {}
        bare = roost.call(method, path, key=False, **body)
        assert (bare.status_code == 401) == (path not in ("/", "/health")), (method, path, bare.status_code)
        keyed = roost.call(method, path, **body)
        assert keyed.status_code != 401, (method, path)
    metrics = roost.call("GET", "/metrics").text
    assert "roost_upstream_requests" in metrics and "***@127.0.0.1" in metrics
    assert "Basic " in " ".join(up.auth)  # the credentials do reach the upstream itself
    with pytest.raises(Exception) as e:  # noqa: PT011
        served_card(f"http://roost:{PASSWORD}@127.0.0.1:9", "tiny", wait_s=0)
    _clean(str(e.value))
    out, err = roost.stop()
    _clean(out + err)
    assert "***@127.0.0.1" in err, err[-2000:]  # the banner names the upstream, without its password
    for f in roost.home.rglob("*"):
        if f.is_file():
            _clean(f.read_bytes().decode("utf-8", "replace"))
