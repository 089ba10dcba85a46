"""Load on a real `roost serve` (SmolLM2-135M-Instruct, loopback): 1, 8 and 32 concurrent streaming clients,
aggregate tokens/s against the same requests run one after another, time to first token p50/p99, and what
happens beyond the queue cap (429 + Retry-After). Bounded: a fixed number of requests, each ≤ --tokens tokens.

`python -m bench.serve_load [--tokens 32] [--requests 32] [--quant int8]`  (results go in docs/benchmarks.md)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

TOPICS = ["rain", "coffee", "cats", "the sea", "trains", "snow", "music", "bread", "autumn", "bikes", "tea", "maps"]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(home: Path, extra: list[str]) -> tuple[subprocess.Popen[bytes], str]:
    port = _port()
    exe = Path(sys.executable).with_name("roost")
    proc = subprocess.Popen(
        [str(exe), "--home", str(home), "serve", "smollm2", "--port", str(port), *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"server did not start: {proc.stderr.read().decode() if proc.stderr else ''}")


async def one(client: httpx.AsyncClient, url: str, i: int, tokens: int) -> tuple[int, float | None, int]:
    body = {
        "model": "smollm2",
        "messages": [{"role": "user", "content": f"Write a post about {TOPICS[i % len(TOPICS)]}"}],
        "max_tokens": tokens,
        "temperature": 0.8,
        "seed": i,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    t0 = time.perf_counter()
    ttft, n = None, 0
    async with client.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=600) as r:
        if r.status_code != 200:
            await r.aread()
            return r.status_code, None, 0
        async for line in r.aiter_lines():
            if not line.startswith("data: {"):
                continue
            j = json.loads(line[6:])
            if j["choices"] and j["choices"][0]["delta"].get("content") and ttft is None:
                ttft = time.perf_counter() - t0
            if j.get("usage"):
                n = j["usage"]["completion_tokens"]
    return 200, ttft, n


async def level(url: str, clients: int, requests: int, tokens: int) -> dict[str, float]:
    sem = asyncio.Semaphore(clients)
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=clients + 4)) as client:

        async def task(i: int) -> tuple[int, float | None, int]:
            async with sem:
                return await one(client, url, i, tokens)

        t0 = time.perf_counter()
        res = await asyncio.gather(*(task(i) for i in range(requests)))
        wall = time.perf_counter() - t0
    ttfts = sorted(t for s, t, _ in res if t is not None)
    toks = sum(n for _, _, n in res)
    q = statistics.quantiles(ttfts, n=100) if len(ttfts) > 1 else ttfts * 99
    return {
        "ok": sum(s == 200 for s, _, _ in res),
        "429": sum(s == 429 for s, _, _ in res),
        "tokens": toks,
        "wall": wall,
        "tps": toks / wall,
        "p50": statistics.median(ttfts) if ttfts else float("nan"),
        "p99": q[98] if ttfts else float("nan"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--quant", default=None)
    args = ap.parse_args()
    console = Console()
    extra = ["--quant", args.quant] if args.quant else []
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        subprocess.run(
            [str(Path(sys.executable).with_name("roost")), "--home", str(home), "import", "smollm2"],
            check=True,
            capture_output=True,
        )
        proc, url = start(home, ["--max-batch", "32", "--max-queue", "64", *extra])
        try:
            asyncio.run(level(url, 2, 2, 4))  # warm-up
            rows = {
                c: asyncio.run(level(url, c, args.requests if c > 1 else max(8, args.requests // 4), args.tokens))
                for c in (1, 8, 32)
            }
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        proc, url = start(home, ["--max-batch", "4", "--max-queue", "4", *extra])
        try:
            capped = asyncio.run(level(url, 32, 32, args.tokens))
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    seq = rows[1]["tps"]
    t = Table(
        title=f"roost serve, SmolLM2-135M{' int8' if args.quant else ' bf16'}, streaming chat, ≤ {args.tokens} "
        f"tokens each — {platform.machine()}, {os.cpu_count()} cores"
    )
    for col in (
        "clients",
        "requests ok",
        "429",
        "tokens",
        "seconds",
        "tokens/s",
        "× sequential",
        "TTFT p50",
        "TTFT p99",
    ):
        t.add_column(col, justify="right")
    for c, r in rows.items():
        t.add_row(
            str(c),
            str(r["ok"]),
            str(r["429"]),
            str(r["tokens"]),
            f"{r['wall']:.1f}",
            f"{r['tps']:.1f}",
            f"{r['tps'] / seq:.2f}×",
            f"{r['p50'] * 1e3:.0f} ms",
            f"{r['p99'] * 1e3:.0f} ms",
        )
    r = capped
    t.add_row(
        "32 (batch 4, queue cap 4)",
        str(r["ok"]),
        str(r["429"]),
        str(r["tokens"]),
        f"{r['wall']:.1f}",
        f"{r['tps']:.1f}",
        f"{r['tps'] / seq:.2f}×",
        f"{r['p50'] * 1e3:.0f} ms",
        f"{r['p99'] * 1e3:.0f} ms",
    )
    console.print(t)


if __name__ == "__main__":
    main()
