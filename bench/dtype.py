"""The figures behind roost's dtype table (`roost/probe.py`): each workload in fp32 and in bf16 on this CPU, in the
same run, with the ratio and the dtype the probe picks for this machine's class.

`python -m bench.dtype [--train-steps 4] [--texts 256] [--tokens 64]`  (results go in docs/benchmarks.md)

train: the small preset (~3 M parameters), batch 16 × 256, forward + backward + AdamW, bf16 autocast vs fp32.
embed: all-MiniLM-L6-v2 over N short posts, bf16 weights vs fp32.
decode: batch-1 greedy decode of SmolLM2-135M-Instruct in roost's engine, bf16 weights vs fp32.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from roost.model.config import load_preset
from roost.model.llama import Llama
from roost.probe import choose, classify, probe
from roost.train.build import build_optimizer
from roost.workspace import Workspace


def _timed(fn: Callable[[], object], reps: int) -> float:
    fn()  # warm-up
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t) / reps


def train_rate(dtype: str, steps: int) -> float:
    """Tokens/s of a training step of the small preset."""
    cfg = load_preset("small")
    torch.manual_seed(0)
    m = Llama(cfg)
    m.init_weights(0)
    m.train()
    opt = build_optimizer(m, "adamw", 1e-4, 0.1)
    x = torch.randint(0, cfg.vocab_size, (16, 256))

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16"):
            loss = m(x, torch.roll(x, -1, 1))
        loss.backward()
        opt.step()
        opt.zero_grad()

    return 16 * 256 / _timed(step, steps)


def embed_rate(dtype: str, n: int) -> float:
    """Texts/s of MiniLM embeddings."""
    from roost.search.hybrid import Embedder

    texts = [f"post number {i}: the tram was late again this morning, #commute {i % 7}" for i in range(n)]
    e = Embedder(dtype=dtype)
    return n / _timed(lambda: e.encode(texts), 1)


def decode_rate(dtype: str, tokens: int, model_dir: Path) -> float:
    from bench.decode import roost_rate

    return roost_rate(model_dir, tokens, torch.bfloat16 if dtype == "bf16" else None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-steps", type=int, default=4)
    ap.add_argument("--texts", type=int, default=256)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--only", default="train,embed,decode")
    args = ap.parse_args()
    console = Console()
    hw = probe()
    console.print(hw.flags_line())
    only = args.only.split(",")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = None
        if "decode" in only:
            from roost.model.imports import import_model

            model_dir, _ = import_model(Workspace(Path(tmp)), "smollm2", "smollm2")
        for w, unit, fn in (
            ("train", "tokens/s", lambda d: train_rate(d, args.train_steps)),
            ("embed", "texts/s", lambda d: embed_rate(d, args.texts)),
            ("decode", "tokens/s", lambda d: decode_rate(d, args.tokens, model_dir)),  # type: ignore[arg-type]
        ):
            if w not in only:
                continue
            r = {d: fn(d) for d in ("fp32", "bf16")}
            pick = choose(w, hw=hw).dtype
            best = max(r, key=lambda d: r[d])
            rows.append((w, unit, r["fp32"], r["bf16"], pick, "yes" if pick == best else "NO"))
    t = Table(title=f"fp32 vs bf16 on this CPU (class {classify(hw)}, torch {torch.__version__})")
    for col in ("workload", "unit", "fp32", "bf16", "bf16 ÷ fp32", "probe picks", "the faster?"):
        t.add_column(col, justify="left" if col in ("workload", "unit") else "right")
    for w, unit, a, b, pick, ok in rows:
        t.add_row(w, unit, f"{a:,.1f}", f"{b:,.1f}", f"{b / a:.2f}×", pick, ok)
    console.print(t)


if __name__ == "__main__":
    main()
