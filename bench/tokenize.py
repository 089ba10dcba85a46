"""Tokenising throughput: the whole `roost tokenize` pipeline (SQLite snapshot read, split, encode, memmap
writes, document index, manifest with sha256) next to bare HF `tokenizers` on the same texts, same run.

`python -m bench.tokenize [--posts 1000000] [--vocab-size 32768]`  (results go in docs/benchmarks.md)
Runs on the demo corpus (real text through `roost ingest`) and on N generated posts.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import sqlite3
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench.stores import demo_store, generated_store
from roost.config import ShardConfig, TokenizerConfig
from roost.corpus.rows import TRAINING_WHERE
from roost.data import shards, tokenizer


def _build_child(db: Path, tok: Path, out: Path, q: mp.Queue) -> None:  # type: ignore[type-arg]
    t = time.perf_counter()
    m = shards.build(db, tok, out, ShardConfig()).manifest
    # VmHWM: this process's own peak (ru_maxrss would carry the parent's peak over fork + exec)
    hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
    q.put((time.perf_counter() - t, sum(s["tokens"] for s in m["splits"].values()), hwm / 1024))


def measure(name: str, db: Path, root: Path, vocab: int, console: Console) -> list[tuple[str, ...]]:
    t = time.perf_counter()
    tok_path = tokenizer.train(db, root / f"tok-{name}", TokenizerConfig(vocab_size=vocab))
    console.print(f"{name}: trained a {vocab:,}-token BPE in {time.perf_counter() - t:.1f} s")
    # roost tokenize, in its own process so its peak memory is its own
    q: mp.Queue = mp.get_context("spawn").Queue()  # type: ignore[type-arg]
    p = mp.get_context("spawn").Process(target=_build_child, args=(db, tok_path, root / f"shards-{name}", q))
    p.start()
    secs, n_tokens, rss = q.get()
    p.join()
    # the peers: the same texts, already in memory, through encode_batch and encode_batch_fast
    con = sqlite3.connect(db)
    texts = [r[0] for r in con.execute(f"SELECT text_scrubbed FROM posts WHERE {TRAINING_WHERE} ORDER BY rowid")]
    con.close()
    tok = tokenizer.load(tok_path)
    peers = []
    for api in ("encode_batch", "encode_batch_fast"):
        fn = getattr(tok, api)
        t = time.perf_counter()
        n = 0
        for i in range(0, len(texts), 4096):
            n += sum(len(e.ids) for e in fn(texts[i : i + 4096], add_special_tokens=False))
        peers.append((api, time.perf_counter() - t, n + len(texts)))  # + one separator per post, as in shards
    rows = []
    for api, s, n in peers:
        rows.append(
            (
                name,
                f"bare tokenizers {api} (texts in RAM)",
                f"{len(texts):,}",
                f"{n:,}",
                f"{s:.2f}",
                f"{n / s:,.0f}",
                "",
                "",
            )
        )
    for api, s, _ in peers:
        rows.append(
            (name, f"roost tokenize ÷ {api}", "", "", "", "", f"{(n_tokens / secs) / (peers[0][2] / s):.2f}×", "")
        )
    rows.insert(
        len(peers),
        (
            name,
            "roost tokenize (read, split, encode, write, hash)",
            f"{len(texts):,}",
            f"{n_tokens:,}",
            f"{secs:.2f}",
            f"{n_tokens / secs:,.0f}",
            "",
            f"{rss:,.0f} MiB",
        ),
    )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--posts", type=int, default=1_000_000)
    ap.add_argument("--vocab-size", type=int, default=32_768)
    args = ap.parse_args()
    console = Console()
    rows: list[tuple[str, ...]] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "demo").mkdir()
        rows += measure("demo corpus", demo_store(root / "demo"), root / "demo", args.vocab_size, console)
        if args.posts:
            (root / "gen").mkdir()
            t = time.perf_counter()
            db = generated_store(root / "gen", args.posts)
            console.print(f"generated {args.posts:,} posts in {time.perf_counter() - t:.1f} s")
            rows += measure(f"{args.posts:,} generated", db, root / "gen", args.vocab_size, console)
    table = Table(title=f"tokenize — {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    for col in ("corpus", "pipeline", "posts", "tokens", "seconds", "tokens/s", "roost ÷ peer", "peak RSS"):
        table.add_column(col, justify="left" if col in ("corpus", "pipeline") else "right")
    for r in rows:
        table.add_row(*r)
    console.print(table)


if __name__ == "__main__":
    main()
