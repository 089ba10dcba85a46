"""Search over the post store: `roost index` builds the keyword (tantivy) and vector (usearch) indexes under
<home>/index/; `roost search "query" [--mode keyword|semantic|hybrid]` ranks posts.

Hybrid = reciprocal rank fusion (k = 60) of the keyword and vector rankings, optionally with a recency boost.
Filters (from:, since:, lang:, …) apply inside both indexes; when a filter leaves few posts (≤ 5 % of the index, or
≤ 20,000), semantic search is exact over exactly those posts instead of approximate-then-filtered, so filtered
recall does not collapse. Every result is checked against the store before it is returned: a forgotten post (its
row deleted, its id tombstoned) is never shown even if an index still holds it.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from roost.errors import RoostError
from roost.search.keyword import KeywordIndex
from roost.search.query import Query, parse
from roost.search.vectors import VectorIndex

RRF_K = 60


@dataclass
class Hit:
    id: str
    author: str
    created_at: str
    text: str
    score: float
    keyword_rank: int | None = None
    semantic_rank: int | None = None

    def to_json(self) -> dict[str, Any]:
        return self.__dict__.copy()


class SearchIndex:
    def __init__(self, home: Path, embedder: Any | None = None):
        self.dir = home / "index"
        self.db = home / "corpus.db"
        if not (self.dir / "meta.json").is_file():
            raise RoostError(f"{self.dir}: no search index; run `roost index` first")
        self.meta = json.loads((self.dir / "meta.json").read_text())
        self.keyword = KeywordIndex(self.dir / "tantivy")
        self.vectors = VectorIndex(self.dir / "vectors")
        self._embedder = embedder

    @property
    def embedder(self) -> Any:
        if not self._embedder:
            from roost.search.embed import Embedder

            self._embedder = Embedder()
        return self._embedder

    # -- building ------------------------------------------------------------------------------------------------------
    @staticmethod
    def build(
        home: Path, embedder: Any | None = None, on_batch: Callable[[int, int], None] | None = None, batch: int = 2048
    ) -> dict[str, Any]:
        db = home / "corpus.db"
        if not db.is_file():
            raise RoostError(f"{db}: no post store; `roost ingest` exports first")
        if embedder is None:
            from roost.search.embed import Embedder

            embedder = Embedder()
        d = home / "index"
        d.mkdir(parents=True, exist_ok=True)
        kw = KeywordIndex(d / "tantivy", create=True)
        vec_dir = d / "vectors"
        for f in ("vectors.usearch", "keys.npy", "vecs.npy"):
            (vec_dir / f).unlink(missing_ok=True)
        vec = VectorIndex(vec_dir)
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        total = con.execute("SELECT count(*) FROM posts WHERE repost_of IS NULL").fetchone()[0]
        cur = con.execute(
            "SELECT rowid, id, author, created_at, text, lang, reply_to, mentions FROM posts "
            "WHERE repost_of IS NULL ORDER BY rowid"
        )
        done, max_rowid, t0 = 0, 0, time.perf_counter()
        while rows := cur.fetchmany(batch):
            kw.add(rows)
            vec.add(np.array([r[0] for r in rows], dtype=np.int64), embedder.encode([r[4] for r in rows]))
            done += len(rows)
            max_rowid = rows[-1][0]
            if on_batch:
                on_batch(done, total)
        con.close()
        kw.commit()
        vec.save()
        meta = {
            "posts": done,
            "max_rowid": max_rowid,
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "seconds": round(time.perf_counter() - t0, 2),
            "embedding": "all-MiniLM-L6-v2",
        }
        (d / "meta.json").write_text(json.dumps(meta, indent=1))
        return meta

    def forget(self, post_ids: list[str], rowids: list[int]) -> None:
        """Remove posts from both indexes now (the store's tombstones already hide them from results)."""
        self.keyword.delete(post_ids)
        self.keyword.commit()
        self.vectors.remove(rowids)
        self.vectors.save()

    # -- searching -----------------------------------------------------------------------------------------------------
    def _semantic(self, q: Query, k: int) -> list[tuple[int, float]]:
        if not q.text.strip():
            return []
        v = self.embedder.encode([q.text])[0]
        if q.has_filters():
            n = max(1, len(self.vectors.keys))
            allowed = self.keyword.filter_rowids(q, cap=max(20_000, n // 20))
            if allowed is not None:  # narrow filter: exact search over exactly the allowed posts
                return self.vectors.exact(v, k, among=allowed)
            over = self.vectors.search(v, k * 10)
            ok = set(self.keyword.filter_rowids(q, cap=n) or [])
            hits = [h for h in over if h[0] in ok][:k]
            return hits if len(hits) >= k else self.vectors.exact(v, k, among=list(ok))
        return self.vectors.search(v, k)

    def search(self, query: str | Query, mode: str = "hybrid", k: int = 10, recency: float = 0.0) -> list[Hit]:
        q = parse(query) if isinstance(query, str) else query
        if mode not in ("keyword", "semantic", "hybrid"):
            raise RoostError(f"--mode must be keyword, semantic or hybrid, got {mode!r}")
        depth = max(k * 5, 50)
        kw = self.keyword.search(q, depth) if mode != "semantic" else []
        sem = self._semantic(q, depth) if mode != "keyword" else []
        if mode == "semantic" and not q.text.strip():
            kw = self.keyword.search(q, depth)  # filters only: nothing to embed
        scores: dict[int, float] = {}
        kw_rank = {rowid: i + 1 for i, (_, rowid, _) in enumerate(kw)}
        sem_rank = {rowid: i + 1 for i, (rowid, _) in enumerate(sem)}
        if mode == "keyword" or (mode == "semantic" and not sem):
            scores = {rowid: s for _, rowid, s in kw}
        elif mode == "semantic":
            scores = {rowid: s for rowid, s in sem}
        else:
            for ranks in (kw_rank, sem_rank):
                for rowid, r in ranks.items():
                    scores[rowid] = scores.get(rowid, 0.0) + 1.0 / (RRF_K + r)
        return self._rows(scores, kw_rank, sem_rank, k, recency)

    def _rows(
        self, scores: dict[int, float], kw_rank: dict[int, int], sem_rank: dict[int, int], k: int, recency: float
    ) -> list[Hit]:
        if not scores:
            return []
        con = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)
        try:
            rowids = list(scores)
            found = {}
            for s in range(0, len(rowids), 500):
                part = rowids[s : s + 500]
                found.update(
                    {
                        r[0]: r[1:]
                        for r in con.execute(
                            f"SELECT rowid, id, author, created_at, text FROM posts WHERE rowid IN ({','.join('?' * len(part))})",
                            part,
                        )
                    }
                )
            # only the tombstones of these candidates, not the whole table, on every query
            keys = list({k for row in found.values() for k in (row[0], row[1])})
            gone: set[tuple[str, str]] = set()
            for s0 in range(0, len(keys), 500):
                part = keys[s0 : s0 + 500]
                gone.update(
                    con.execute(
                        f"SELECT kind, key FROM tombstones WHERE key IN ({','.join('?' * len(part))})", part
                    ).fetchall()
                )
        finally:
            con.close()
        hits = []
        now = time.time()
        for rowid, score in scores.items():
            row = found.get(rowid)
            if row is None or ("post", row[0]) in gone or ("author", row[1]) in gone:
                continue  # forgotten: never returned, whatever the index still holds
            if recency:
                from datetime import datetime

                age_days = (now - datetime.fromisoformat(row[2].replace("Z", "+00:00")).timestamp()) / 86400
                score *= 1.0 + recency / (1.0 + max(age_days, 0.0) / 30.0)
            hits.append(Hit(row[0], row[1], row[2], row[3], score, kw_rank.get(rowid), sem_rank.get(rowid)))
        hits.sort(key=lambda h: -h.score)
        return hits[:k]
