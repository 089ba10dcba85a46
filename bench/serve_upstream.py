"""roost's engine vs vLLM (CPU build) vs roost over vLLM, in one run on SmolLM2-135M-Instruct: 1, 8 and 32
concurrent streaming chat clients (tokens/s, TTFT p50/p99), and the latency roost's layer adds in front of vLLM
(one-token requests, p50/p99 of the difference). Needs `make vllm`.

`python -m bench.serve_upstream [--tokens 24] [--requests 16] [--dtype auto]`  (results go in docs/benchmarks.md)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from bench.serve_load import level, start
from roost.probe import choose
from roost.serve.vllm import VllmFleet


def one_token_latency(url: str, n: int) -> list[float]:
    """Wall time of n sequential one-token chat requests (not streamed)."""
    body = {"model": "smollm2", "messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 1}
    out = []
    with httpx.Client(timeout=120) as c:
        for _ in range(n):
            t0 = time.perf_counter()
            r = c.post(f"{url}/v1/chat/completions", json=body)
            r.raise_for_status()
            out.append(time.perf_counter() - t0)
    return out


def pct(xs: list[float], q: int) -> float:
    return statistics.quantiles(xs, n=100)[q - 1] if len(xs) > 1 else xs[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=24)
    ap.add_argument("--requests", type=int, default=16)
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--probes", type=int, default=40, help="one-token requests for the overhead measurement")
    args = ap.parse_args()
    console = Console()
    dtype = choose("decode", args.dtype).dtype
    vdtype = "bfloat16" if dtype == "bf16" else "float32"
    rows: dict[str, dict[int, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        subprocess.run([str(Path(sys.executable).with_name("roost")), "--home", str(home), "import", "smollm2"],
                       check=True, capture_output=True)  # fmt: skip
        fleet = VllmFleet.start(home / "models/smollm2", "smollm2", 1, vdtype, 2048, log_dir=home / "logs")
        procs = []
        try:
            own, own_url = start(home, ["--max-batch", "32", "--max-queue", "64", "--dtype", dtype])
            procs.append(own)
            sha = json.loads((home / "models/smollm2/roost.json").read_text())["model_sha256"]
            over, over_url = start(home, ["--upstream", fleet.urls[0], "--upstream-sha256", sha, "--max-queue", "64"])
            procs.append(over)
            targets = {"roost engine": own_url, "vLLM direct": fleet.urls[0], "roost over vLLM": over_url}
            for name, url in targets.items():
                asyncio.run(level(url, 2, 2, 4))  # warm-up
                n1 = max(4, args.requests // 4)
                rows[name] = {c: asyncio.run(level(url, c, n1 if c == 1 else args.requests, args.tokens))
                              for c in (1, 8, 32)}  # fmt: skip
            direct = one_token_latency(fleet.urls[0], args.probes)
            through = one_token_latency(over_url, args.probes)
        finally:
            for p in procs:
                p.terminate()
                p.wait(timeout=30)
            fleet.stop()
    t = Table(title=f"SmolLM2-135M {dtype}, streaming chat, ≤ {args.tokens} tokens — {platform.machine()}, "
                    f"{os.cpu_count()} cores")  # fmt: skip
    for col in ("backend", "clients", "ok", "tokens/s", "vs roost engine", "TTFT p50", "TTFT p99"):
        t.add_column(col, justify="right")
    for name, by in rows.items():
        for c, r in by.items():
            base = rows["roost engine"][c]["tps"] or float("nan")
            t.add_row(name, str(c), str(int(r["ok"])), f"{r['tps']:.1f}", f"{r['tps'] / base:.2f}×",
                      f"{r['p50'] * 1e3:.0f} ms", f"{r['p99'] * 1e3:.0f} ms")  # fmt: skip
    console.print(t)
    d50, t50 = statistics.median(direct), statistics.median(through)
    console.print(
        f"one-token chat request, {args.probes} sequential: vLLM direct p50 {d50 * 1e3:.1f} ms, through roost "
        f"p50 {t50 * 1e3:.1f} ms → roost's layer adds {(t50 - d50) * 1e3:.1f} ms p50 "
        f"(p99 {pct(direct, 99) * 1e3:.1f} vs {pct(through, 99) * 1e3:.1f} ms)"
    )


if __name__ == "__main__":
    main()
