"""Search at scale against SQLite FTS5 over the same generated posts, in the same run: index throughput, query
p50/p99 and QPS (keyword, and hybrid with the query embedding included), and post → searchable latency.

`python -m bench.search [--posts 1000000] [--vector-posts 100000] [--queries 300]`  (results in docs/benchmarks.md)

The keyword side (tantivy vs FTS5) indexes all --posts. Embedding is the slow part on 2 CPU cores (~400 posts/s),
so the vector index holds the first --vector-posts (hybrid queries search all posts by keyword and those by
vector); pass --vector-posts equal to --posts for the full run (about 45 minutes per million here).
Quality (hybrid vs BM25 nDCG@10) is measured by `roost eval search`, not here.
"""

from __future__ import annotations

import argparse
import platform
import random
import shutil
import sqlite3
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from bench.stores import generated_store
from roost.config import CorpusConfig, SearchConfig
from roost.context import Roost
from roost.corpus.post import Post
from roost.search.embedded import SearchIndex
from roost.search.keyword import KeywordIndex
from roost.search.query import parse
from roost.search.vectors import VectorIndex

console = Console()


def pct(xs: list[float], p: float) -> float:
    return float(np.percentile(np.array(xs), p)) if xs else float("nan")


def fts5_build(db: Path, out: Path) -> float:
    t0 = time.perf_counter()
    con = sqlite3.connect(out)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("CREATE VIRTUAL TABLE fts USING fts5(text, author UNINDEXED, tokenize='unicode61 remove_diacritics 2')")
    src = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    cur = src.execute("SELECT rowid, text, author FROM posts WHERE repost_of IS NULL ORDER BY rowid")
    with con:
        while rows := cur.fetchmany(10_000):
            con.executemany("INSERT INTO fts (rowid, text, author) VALUES (?, ?, ?)", rows)
    src.close()
    con.close()
    return time.perf_counter() - t0


def fts5_query(con: sqlite3.Connection, words: list[str]) -> list[int]:
    q = " AND ".join('"' + w.replace('"', "") + '"' for w in words)
    return [r[0] for r in con.execute("SELECT rowid FROM fts WHERE fts MATCH ? ORDER BY rank LIMIT 10", (q,))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--posts", type=int, default=1_000_000)
    ap.add_argument("--vector-posts", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--fresh", type=int, default=30, help="posts sent one at a time for the freshness test")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="roost-bench-search-"))
    try:
        run(root, args)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run(root: Path, args: argparse.Namespace) -> None:
    console.print(f"generating {args.posts:,} posts …")
    db = generated_store(root, args.posts)
    n = sqlite3.connect(db).execute("SELECT count(*) FROM posts WHERE repost_of IS NULL").fetchone()[0]
    rng = random.Random(1)
    texts = [r[0] for r in sqlite3.connect(db).execute("SELECT text FROM posts ORDER BY random() LIMIT 2000")]
    word_lists = []
    for t in rng.sample(texts, min(args.queries, len(texts))):
        ws = [w for w in t.split() if w.isalpha() and len(w) > 3]
        if len(ws) >= 2:
            word_lists.append(rng.sample(ws, 2))

    # -- index throughput ----------------------------------------------------------------------------------------
    console.print("tantivy keyword index …")
    kw_dir = root / "index" / "tantivy"
    t0 = time.perf_counter()
    kw = KeywordIndex(kw_dir, create=True)
    src = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    cur = src.execute(
        "SELECT rowid, id, author, created_at, text, lang, reply_to, mentions FROM posts "
        "WHERE repost_of IS NULL ORDER BY rowid"
    )
    while rows := cur.fetchmany(10_000):
        kw.add(rows)
    kw.commit()
    t_kw = time.perf_counter() - t0
    console.print("SQLite FTS5 …")
    t_fts = fts5_build(db, root / "fts.db")

    console.print(f"embedding {args.vector_posts:,} posts (MiniLM, bf16) …")
    from roost.search.hybrid import Embedder

    emb = Embedder()
    vec = VectorIndex(root / "index" / "vectors", dtype="f32")
    m = min(args.vector_posts, n)
    t0 = time.perf_counter()
    t_embed = 0.0
    cur = src.execute("SELECT rowid, text FROM posts WHERE repost_of IS NULL ORDER BY rowid LIMIT ?", (m,))
    while rows := cur.fetchmany(4096):
        t1 = time.perf_counter()
        v = emb.encode([r[1] for r in rows])
        t_embed += time.perf_counter() - t1
        vec.add(np.array([r[0] for r in rows], dtype=np.int64), v)
    t_vec = time.perf_counter() - t0
    vec.save()
    max_rowid = src.execute("SELECT max(rowid) FROM posts").fetchone()[0]
    src.close()
    import json

    (root / "index" / "meta.json").write_text(
        json.dumps({"posts": len(vec), "max_rowid": max_rowid, "erased": 0, "keys": 2, "vectors": "f32"})
    )

    # -- queries ---------------------------------------------------------------------------------------------------
    idx = SearchIndex(Roost.at(root), embedder=emb, cfg=SearchConfig())
    fts = sqlite3.connect(root / "fts.db")
    for words in word_lists[:20]:  # warm both
        idx.search(parse(" ".join(words)), "keyword", 10)
        fts5_query(fts, words)
    lat: dict[str, list[float]] = {"roost keyword": [], "FTS5 keyword": [], "roost hybrid": []}
    agree = []
    for words in word_lists:
        t0 = time.perf_counter()
        a = idx.search(parse(" ".join(words)), "keyword", 10)
        lat["roost keyword"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        b = fts5_query(fts, words)
        lat["FTS5 keyword"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        idx.search(parse(" ".join(words)), "hybrid", 10)
        lat["roost hybrid"].append(time.perf_counter() - t0)
        if b:
            ids = {
                r[0]
                for r in sqlite3.connect(db).execute(
                    f"SELECT id FROM posts WHERE rowid IN ({','.join('?' * len(b))})", b
                )
            }
            agree.append(len(ids & {h.id for h in a}) / len(ids))

    # -- freshness ---------------------------------------------------------------------------------------------------
    from roost.corpus.ingest import LiveIngest
    from roost.search.live import LiveIndexer

    idx.keyword = KeywordIndex(kw_dir)
    live_ing = LiveIngest(db, CorpusConfig(workers=1))
    live = LiveIndexer(SearchIndex(Roost.at(root), embedder=emb, cfg=SearchConfig(refresh_ms=50))).start()
    fresh, fresh_fts = [], []
    fcon = sqlite3.connect(root / "fts.db")
    for i in range(args.fresh):
        word = f"zyzzyva{i}"
        t0 = time.perf_counter()
        live_ing.add([Post(f"api:fresh{i}", "bench", datetime.now(UTC), f"Fresh post {word} about trams", "api")])
        live.flush()
        hits = live.index.search(parse(word), "keyword", 1)
        fresh.append(time.perf_counter() - t0)
        assert hits and hits[0].id == f"api:fresh{i}", "a fresh post was not found"
        t0 = time.perf_counter()
        with fcon:
            fcon.execute("INSERT INTO fts (rowid, text, author) VALUES (?, ?, ?)", (10**9 + i, f"fresh {word}", "b"))
        assert fts5_query(fcon, [word])
        fresh_fts.append(time.perf_counter() - t0)
    live.stop()
    live_ing.close()

    # -- table -------------------------------------------------------------------------------------------------------
    t = Table(
        title=f"search: {n:,} posts ({m:,} with vectors), {len(word_lists)} two-word queries, "
        f"{platform.machine()} {platform.system()}"
    )
    for c in ("measure", "roost", "SQLite FTS5", "roost / FTS5"):
        t.add_column(c, justify="right" if c != "measure" else "left")
    t.add_row("keyword index, posts/s", f"{n / t_kw:,.0f}", f"{n / t_fts:,.0f}", f"{t_fts / t_kw:.2f}×")
    t.add_row("vectors (embed + HNSW), posts/s", f"{m / t_vec:,.0f} (embed {m / t_embed:,.0f})", "—", "—")
    for name, p in (("p50", 50), ("p99", 99)):
        r, f = pct(lat["roost keyword"], p) * 1e3, pct(lat["FTS5 keyword"], p) * 1e3
        t.add_row(
            f"keyword query {name}, ms",
            f"{r:.2f}",
            f"{f:.2f}",
            f"{f / r:.2f}× faster" if r < f else f"{r / f:.2f}× slower",
        )
    qps_r, qps_f = 1 / statistics.mean(lat["roost keyword"]), 1 / statistics.mean(lat["FTS5 keyword"])
    t.add_row("keyword QPS (1 thread)", f"{qps_r:,.0f}", f"{qps_f:,.0f}", f"{qps_r / qps_f:.2f}×")
    for name, p in (("p50", 50), ("p99", 99)):
        t.add_row(f"hybrid query {name}, ms (embedding incl.)", f"{pct(lat['roost hybrid'], p) * 1e3:.2f}", "—", "—")
    t.add_row("hybrid QPS (1 thread)", f"{1 / statistics.mean(lat['roost hybrid']):,.0f}", "—", "—")
    t.add_row(
        "post → searchable p50 / max, ms",
        f"{pct(fresh, 50) * 1e3:.1f} / {max(fresh) * 1e3:.1f}",
        f"{pct(fresh_fts, 50) * 1e3:.1f} / {max(fresh_fts) * 1e3:.1f}",
        "—",
    )
    t.add_row("top-10 overlap with FTS5 (same AND query)", f"{statistics.mean(agree):.2f}", "1.00", "—")
    console.print(t)
    console.print(
        "roost's post → searchable runs the whole ingest pipeline (clean, dedup, PII, language, store) and "
        "embeds the post; FTS5's is a bare INSERT + COMMIT of the text."
    )


if __name__ == "__main__":
    main()
