"""Loader throughput: batches/s of `TokenLoader` (seq 1024 × batch 32, shuffled, packed, from memmap shards) next to
the time one train step of roost's tiny model takes on the same batch, same run; and how long the trainer waits
for data when both run together (background prefetch).

`python -m bench.loader [--batches 300] [--steps 10]`  (results go in docs/benchmarks.md)
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from bench.stores import demo_store
from roost.config import ShardConfig, TokenizerConfig
from roost.data import shards, tokenizer
from roost.data.loader import TokenLoader
from roost.model.config import load_preset
from roost.model.llama import Llama

SEQ, BATCH = 1024, 32


def loader_rate(d: Path, n: int, prefetch: int, doc_ids: bool = False) -> float:
    ld = TokenLoader(d, seq_len=SEQ, batch_size=BATCH, prefetch=prefetch, doc_ids=doc_ids)
    it = iter(ld)
    next(it)
    t = time.perf_counter()
    for _ in range(n):
        next(it)
    return n / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, default=300)
    ap.add_argument("--steps", type=int, default=10)
    args = ap.parse_args()
    console = Console()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        db = demo_store(root)
        tok = tokenizer.train(db, root / "tok", TokenizerConfig(vocab_size=8192))
        d = root / "shards"
        m = shards.build(db, tok, d, ShardConfig()).manifest
        console.print(f"demo corpus: {m['splits']['train']['tokens']:,} training tokens")
        rates = {p: loader_rate(d, args.batches, p) for p in (0, 4)}
        rate_docs = loader_rate(d, args.batches, 4, doc_ids=True)
        # the tiny model's train step on the same batch shape
        cfg = load_preset("tiny", vocab_size=8192, max_seq_len=SEQ)
        model = Llama(cfg)
        model.init_weights(0)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        ld = TokenLoader(d, seq_len=SEQ, batch_size=BATCH, prefetch=4)
        it = iter(ld)
        waits, steps = [], []
        for i in range(args.steps + 1):
            t0 = time.perf_counter()
            x, y = next(it)
            t1 = time.perf_counter()
            loss = model(x, y)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            t2 = time.perf_counter()
            if i:  # the first step warms up
                waits.append(t1 - t0)
                steps.append(t2 - t1)
        step_s = sum(steps) / len(steps)
    table = Table(
        title=f"loader, seq {SEQ} × batch {BATCH} — {platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    for col in ("what", "batches/s", "ms per batch", "× tiny-model step rate"):
        table.add_column(col, justify="left" if col == "what" else "right")
    table.add_row(
        f"tiny model train step ({cfg.num_params() / 1e6:.2f} M params, fwd+bwd+AdamW)",
        f"{1 / step_s:.2f}",
        f"{step_s * 1e3:.1f}",
        "1.0×",
    )
    for p, r in rates.items():
        table.add_row(f"TokenLoader, prefetch {p}", f"{r:,.0f}", f"{1e3 / r:.2f}", f"{r * step_s:,.0f}×")
    table.add_row(
        "TokenLoader, prefetch 4, + document ids",
        f"{rate_docs:,.0f}",
        f"{1e3 / rate_docs:.2f}",
        f"{rate_docs * step_s:,.0f}×",
    )
    console.print(table)
    console.print(
        f"trainer waited for data {sum(waits) / len(waits) * 1e3:.3f} ms per step on average "
        f"(max {max(waits) * 1e3:.3f} ms) while stepping the tiny model"
    )


if __name__ == "__main__":
    main()
