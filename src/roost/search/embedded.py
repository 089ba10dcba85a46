"""The embedded search backend: `roost index` builds (or catches up) the keyword (tantivy) and vector (usearch)
indexes under <home>/index/; `roost search "query" [--mode keyword|semantic|hybrid]` ranks posts.

Hybrid = weighted reciprocal rank fusion (k = 60) of the keyword and vector rankings, optionally with a recency
boost. Operators are hard constraints in every mode: filters (from:, since:, lang:, … and their negations
-from:, -to:, -lang:, which exclude), #tags, @mentions, "phrases" and -exclusions apply inside both indexes — the keyword index finds the posts that satisfy them all
(`KeywordIndex.constraint`) and semantic candidates come from those posts only, while free words keep ranking by
meaning. When the operators leave few posts (≤ 5 % of the index, or ≤ 20,000), semantic search is exact over
exactly those posts instead of approximate-then-filtered, so constrained recall does not collapse. Every result
is checked against the store before it is returned: a forgotten post (its row deleted, its id tombstoned) is
never shown even if an index still holds it.

`catch_up()` indexes posts the store gained and drops posts it tombstoned since the last call — `roost index`
runs it once, a running `roost serve` every `search.refresh_ms` (roost.search.live).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from roost.config import SearchConfig
from roost.context import Roost
from roost.corpus.backend import PostReader, open_reader, store_exists
from roost.errors import RoostError
from roost.search.hybrid import HybridSearch, StorePosts
from roost.search.keyword import KEYS_VERSION, KeywordIndex
from roost.search.query import Query
from roost.search.vectors import VectorIndex


class SearchIndex(HybridSearch):
    exact_limit = 20_000  # semantic search is exact over the allowed posts when ≤ this many (or ≤ 5 %) pass
    shared = False  # in this home's files; a running server's live indexer keeps it current
    rewrite_pending = False  # erasures rewrite the files at once

    def __init__(self, ctx: Roost, embedder: Any | None = None, cfg: SearchConfig | None = None):
        self.dir = ctx.ws.index_dir
        self.db = ctx.store
        if not (self.dir / "meta.json").is_file():
            raise RoostError(f"{self.dir}: no search index; run `roost index` first")
        self.meta = json.loads((self.dir / "meta.json").read_text())
        self.keyword = KeywordIndex(self.dir / "tantivy")
        self.vectors = VectorIndex(self.dir / "vectors")
        super().__init__(
            cfg or ctx.settings.search, embedder, keyword=self.keyword, vectors=self, posts=StorePosts(self.db)
        )
        self.write_lock = threading.Lock()
        self._rewritten = False  # the keyword index was rewritten and awaits its commit

    def stored_fusion(self) -> Any:
        return self.meta.get("fusion")

    # -- building and keeping up -------------------------------------------------------------------------------------
    @staticmethod
    def create(ctx: Roost, vectors: str = "f32") -> None:
        """An empty index (then `catch_up` fills it)."""
        if not store_exists(ctx.store):
            raise RoostError(f"{ctx.describe_store()}: no post store; `roost ingest` exports first")
        d = ctx.ws.index_dir
        d.mkdir(parents=True, exist_ok=True)
        KeywordIndex(d / "tantivy", create=True)
        for f in ("vectors.usearch", "keys.npy", "vecs.npy", "vectors.json"):
            (d / "vectors" / f).unlink(missing_ok=True)
        VectorIndex(d / "vectors", dtype=vectors).save()
        with open_reader(ctx.store) as store:
            erased = store.erasure_cursor()
        meta = {"posts": 0, "max_rowid": 0, "erased": erased, "keys": KEYS_VERSION, "embedding": "all-MiniLM-L6-v2",
                "vectors": vectors}  # fmt: skip
        write_json(d / "meta.json", meta)

    @staticmethod
    def build(
        ctx: Roost,
        embedder: Any | None = None,
        on_batch: Callable[[int, int], None] | None = None,
        cfg: SearchConfig | None = None,
        rebuild: bool = True,
    ) -> dict[str, Any]:
        """Index the whole store (`rebuild`) or only what changed since the last run; returns meta.json."""
        cfg = cfg or ctx.settings.search
        t0 = time.perf_counter()
        if rebuild or not (ctx.ws.index_dir / "meta.json").is_file():
            SearchIndex.create(ctx, cfg.vectors)
        idx = SearchIndex(ctx, embedder, cfg)
        added, removed = idx.catch_up(on_batch=on_batch, release=True)
        idx.save()
        idx.meta.update(
            built_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            seconds=round(time.perf_counter() - t0, 2),
            added=added,
            removed=removed,
        )
        write_json(idx.dir / "meta.json", idx.meta)
        return idx.meta

    def catch_up(
        self, on_batch: Callable[[int, int], None] | None = None, batch: int = 2048, release: bool = False
    ) -> tuple[int, int]:
        """Index posts added to the store since the last call and drop posts erased since; (added, removed).
        Commits, so both are visible to searches when it returns."""
        with self.write_lock, open_reader(self.db) as reader, reader.snapshot() as store:
            # one read snapshot for every query below: otherwise a post stored between the rows and the
            # max(seq) would be skipped for good (seen as a flaky test under load)
            removed = self._migrate_keys(store) if self.meta.get("keys") != KEYS_VERSION else 0
            removed += self._apply_erasures(store)
            last = int(self.meta.get("max_rowid", 0))
            todo = store.count_searchable_since(last)
            done = 0
            for rows in store.searchable_rows(after=last, batch=batch):
                self.keyword.add(rows, upsert=True)
                vecs = self.embedder.encode([r[4] for r in rows])
                self.vectors.add(np.array([r[0] for r in rows], dtype=np.int64), vecs)
                done += len(rows)
                self.meta["max_rowid"] = rows[-1][0]
                if on_batch:
                    on_batch(done, todo)
            self.meta["max_rowid"] = max(self.meta["max_rowid"], store.max_seq())  # reposts are not indexed
            if done or removed or release or self._rewritten:
                self.keyword.commit(release=release)
                self._rewritten = False
            self.meta["posts"] = len(self.vectors)
            return done, removed

    def _apply_erasures(self, store: PostReader) -> int:
        """Drop the posts erased since the last call (the store's `erased` log: their seqs are this index's rowids),
        for real: the keyword index is rewritten from the store (tantivy keeps a deleted document in its segment
        until a merge the Python binding cannot ask for) and the vectors are compacted. Returns how many were held."""
        rows = store.erased_since(int(self.meta.get("erased", 0)))
        if not rows:
            return 0
        seqs = [seq for _, seq in rows]
        held = self.keyword.holding(seqs)
        gone = self.vectors.remove(seqs)
        if held or gone:
            self._rewrite(store)
        self.meta["erased"] = rows[-1][0]
        return max(held, gone)

    def _rewrite(self, store: PostReader) -> None:
        """The keyword index rewritten from the store's rows up to `max_rowid`; the vectors compacted and saved."""
        self.keyword.rewrite(store.searchable_rows(upto=int(self.meta.get("max_rowid", 0))))
        self._rewritten = True
        self.vectors.compact()
        self.vectors.save()

    def _migrate_keys(self, store: PostReader) -> int:
        """An index written before KEYS_VERSION 2 (authors and mentions keyed by `str.lower()`): rewritten with
        today's keys, and every vector whose post is no longer in the store (an erasure the old keys missed)
        removed. No re-embedding. Returns how many stale posts were dropped."""
        upto = int(self.meta.get("max_rowid", 0))
        live: set[int] = set()
        for rows in store.searchable_rows(upto=upto):
            live.update(r[0] for r in rows)
        before = self.keyword.num_docs()
        stale = [int(k) for k in list(self.vectors.slot) if int(k) not in live]
        self.vectors.remove(stale)
        self._rewrite(store)
        self.meta.update(keys=KEYS_VERSION, erased=store.erasure_cursor())
        self.meta.pop("tomb_rowid", None)
        return max(len(stale), before - len(live))

    def size(self) -> int:
        return len(self.vectors)

    def close(self) -> None:
        """Let go of the keyword index's writer (another process may then write it)."""
        self.keyword.commit(release=True)

    def store_fusion(self, weights: dict[str, float] | None) -> None:
        """Tuned fusion weights into meta.json (None: back to 1 : 1)."""
        self.meta.pop("fusion", None)
        if weights:
            self.meta["fusion"] = {"keyword": weights["keyword"], "semantic": weights["semantic"]}
        write_json(self.dir / "meta.json", self.meta)

    def save(self) -> None:
        """Persist the vectors and meta.json (the keyword index is durable at each commit)."""
        with self.write_lock:
            self.vectors.save()
            self.meta["posts"] = len(self.vectors)
            write_json(self.dir / "meta.json", self.meta)

    # -- the vector source ------------------------------------------------------------------------------------------
    def nearest(self, q: Query, vec: np.ndarray, k: int) -> list[tuple[int, float]]:
        """(rowid, similarity) of the posts nearest `vec`, among the posts q's operators allow (`VectorSource`)."""
        allowed = self.keyword.constraint(q)
        if allowed is None:
            return self.vectors.search(vec, k)
        n = max(1, len(self.vectors))
        narrow = self.keyword.rowids(allowed, cap=max(self.exact_limit, n // 20))
        if narrow is not None:  # few posts pass: exact search over exactly those
            return self.vectors.exact(vec, k, among=narrow)
        over = self.vectors.search(vec, k * 10)
        ok = self.keyword.rowids_among(allowed, [r for r, _ in over])
        hits = [h for h in over if h[0] in ok][:k]
        if len(hits) >= k:
            return hits
        every = self.keyword.rowids(allowed, cap=max(n, self.keyword.num_docs()))
        return self.vectors.exact(vec, k, among=every or [])


def write_json(path: Path, obj: dict[str, Any]) -> None:
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=1))
    tmp.replace(path)
