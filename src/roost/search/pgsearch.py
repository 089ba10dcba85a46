"""Search inside PostgreSQL: keyword search with full-text search, vectors in pgvector, in the same database as
the post store (roost.corpus.postgres). A `SearchBackend`, like the embedded `SearchIndex`.

    with PgSearch("postgresql://…", cfg=SearchConfig()) as s:   # `CREATE EXTENSION vector` must be allowed
        s.catch_up()                                             # index what the store holds
        s.search('lighthouse -from:bob lang:en', mode="hybrid")  # [Hit, …]

The index is two tables in the store's database, so every `roost serve` replica reading that database shares it:
`search_docs` (one row per searchable post: filter columns, a `tsvector` with a GIN index, a `vector(384)` —
or `halfvec(384)` with `vectors="f16"` — with an HNSW index, cosine) and `search_state` (the cursors: the last
store `seq` indexed and the last tombstone applied). `catch_up()` on any replica indexes what the store gained
and deletes what it tombstoned, under a transaction-scoped advisory lock (replicas calling it at once take turns;
the loser then finds nothing left to do), and commits: the rows are visible to every replica at once. A post
stored through any replica is searchable everywhere after the next `catch_up` (`roost serve` runs it every
`search.refresh_ms`); a forgotten post's row is deleted, the table vacuumed and its indexes rebuilt (REINDEX
CONCURRENTLY: HNSW and GIN pages otherwise keep a deleted entry's bytes until reused; WAL and backups follow the
server's retention, as for the store), and every hit is also checked against the store's tombstones before it is
returned.

Ranking. Keyword: `ts_rank_cd(tsv, query, 1)` — cover density (how many query tokens a post has and how close
together), divided by 1 + log(post length). Unlike tantivy's BM25 it has no inverse document frequency (a rare
word weighs no more than a common one; matters mostly for OR queries) and no term-frequency saturation; for short
posts the two mostly agree on which posts match and differ in order (tests/search/test_pgsearch.py measures the
overlap). Queries with filters only are ordered newest first. Semantic: cosine similarity of the MiniLM
embeddings. Hybrid: reciprocal rank fusion with `search.rrf_k` and the configured weights, plus the optional
recency boost, as in `SearchIndex` (both run roost.search.hybrid).

Operators hold in every mode: filters, #tags, @mentions, "phrases" and exclusions are SQL conditions in the
WHERE of both the keyword and the vector query (roost.search.pgtext). When they leave few posts (≤ 5 % of the
index or ≤ 20,000) the vector query is exact (a sequential cosine scan over exactly those posts, no HNSW); else
HNSW with `hnsw.iterative_scan = strict_order` (it keeps scanning the graph until enough posts pass the filter),
and exact over the allowed posts if that still comes back short.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime
from typing import Any

import numpy as np
import psycopg

from roost.config import SearchConfig
from roost.corpus.post import author_key
from roost.corpus.postgres import PgStore, connect, has_schema, owe_rewrite, pay_owed
from roost.errors import RoostError, UsageError
from roost.redact import redact
from roost.registry import StoreKind, store_kind
from roost.search import pgtext
from roost.search.fusion import live_posts
from roost.search.hybrid import HybridSearch
from roost.search.query import Query

KEYS_VERSION = 2  # as roost.search.keyword's: author_key, author_lc and mentions hold corpus.post.author_key
INDEX_LOCK = 0x726F6F7374_10  # advisory lock: one catch_up batch at a time across replicas (the store uses _01.._03)
DIM = 384
SCHEMA = """
CREATE TABLE IF NOT EXISTS search_state (
    id int PRIMARY KEY CHECK (id = 1),
    seq bigint NOT NULL,        -- the last store seq looked at (posts.seq)
    tomb_seq bigint NOT NULL,   -- the last erasure applied: the store's `erased` log (tombstones.seq before keys 2)
    docs bigint NOT NULL,       -- rows in search_docs
    vectors text NOT NULL       -- f32 (vector) or f16 (halfvec)
);
CREATE TABLE IF NOT EXISTS search_docs (
    seq bigint PRIMARY KEY,
    id text COLLATE "C" NOT NULL UNIQUE,
    author_key text NOT NULL,
    author_lc text NOT NULL,
    created timestamptz NOT NULL,
    lang text NOT NULL,
    is_reply boolean NOT NULL,
    mentions text[] NOT NULL,
    tsv tsvector NOT NULL,
    embedding {vtype}({dim}) NOT NULL
);
CREATE INDEX IF NOT EXISTS search_docs_tsv ON search_docs USING gin (tsv);
CREATE INDEX IF NOT EXISTS search_docs_hnsw ON search_docs USING hnsw (embedding {vtype}_cosine_ops);
CREATE INDEX IF NOT EXISTS search_docs_author_key ON search_docs (author_key);
CREATE INDEX IF NOT EXISTS search_docs_created ON search_docs (created);
ALTER TABLE search_state ADD COLUMN IF NOT EXISTS fusion text;  -- tuned RRF weights (JSON), shared by replicas
ALTER TABLE search_state ADD COLUMN IF NOT EXISTS keys int;  -- KEYS_VERSION of author_key/author_lc/mentions
ALTER TABLE search_docs ALTER COLUMN id SET STATISTICS 0, ALTER COLUMN author_key SET STATISTICS 0,
    ALTER COLUMN author_lc SET STATISTICS 0, ALTER COLUMN mentions SET STATISTICS 0, ALTER COLUMN tsv SET STATISTICS 0;
"""  # no statistics of people's words and names: pg_statistic is out of an erasure's reach (0003_no_content_stats)


def search_tables_exist(url: Any) -> bool:
    """Whether the store at `url` (a PostgreSQL URL) has the search tables (`roost index` or a server made them)."""
    if store_kind(url) is not StoreKind.POSTGRES:
        return False
    with connect(str(url)) as con:
        row = con.execute("SELECT to_regclass('search_state') IS NOT NULL").fetchone()
    return bool(row and row[0])


RETRY_S = 30.0  # how often a replica retries a search_docs rewrite an erasure still owes


class PgSearch(HybridSearch):
    exact_limit = 20_000  # the vector query is exact when ≤ this many posts (or ≤ 5 %) pass the operators
    shared = True  # the tables are in the store's database: any replica's catch_up serves every replica

    def __init__(self, url: str, embedder: Any | None = None, cfg: SearchConfig | None = None, vectors: str = "f32"):
        """Opens (and on first use creates) the search tables in the store at `url`. `vectors`: f32 (`vector`) or
        f16 (`halfvec`, half the size); it applies when the tables are created, an existing index keeps its own."""
        if vectors not in ("f32", "f16"):
            raise UsageError(f"vectors must be f32 or f16, got {vectors!r}")
        self.url = url
        super().__init__(cfg or SearchConfig(), embedder, keyword=self, vectors=self, posts=self)  # all three sources
        self._local = threading.local()  # one connection per thread (searches set transaction-local options)
        self._cons: list[psycopg.Connection[Any]] = []
        self._readers: list[Any] = []
        self._cons_lock = threading.Lock()
        con = self.con
        if not has_schema(con):
            raise RoostError(f"{redact(url)}: no post store here; run `roost ingest EXPORTS` first")
        PgStore(url).close()  # a store written by an older roost is migrated (and its erasures redone) first
        with con.transaction():
            con.execute("SELECT pg_advisory_xact_lock(%s)", (INDEX_LOCK,))  # replicas opening at once
            con.execute("CREATE EXTENSION IF NOT EXISTS vector")
            row = con.execute("SELECT to_regclass('search_state') IS NOT NULL").fetchone()
            if row and row[0]:
                got = con.execute("SELECT vectors FROM search_state WHERE id = 1").fetchone()
                vectors = got[0] if got else vectors
            vtype = "halfvec" if vectors == "f16" else "vector"
            for stmt in SCHEMA.format(vtype=vtype, dim=DIM).split(";"):
                if stmt.strip():
                    con.execute(stmt.encode())
            made = con.execute(
                "INSERT INTO search_state (id, seq, tomb_seq, docs, vectors, keys) VALUES (1, 0, %s, 0, %s, %s) "
                "ON CONFLICT (id) DO NOTHING",
                (self.store.erasure_cursor(), vectors, KEYS_VERSION),
            ).rowcount
            if not made and con.execute("SELECT keys FROM search_state").fetchone()[0] != KEYS_VERSION:  # type: ignore[index]
                self._migrate_keys(con)
        self.vectors = vectors
        self.rewrite_pending = False  # an erasure's rewrite of search_docs is still owed (erase_pending)
        self._next_rewrite = 0.0  # when to look at erase_pending again

    @property
    def con(self) -> psycopg.Connection[Any]:
        con: psycopg.Connection[Any] | None = getattr(self._local, "con", None)
        if con is None or con.closed:
            con = connect(self.url)
            self._local.con = con
            with self._cons_lock:
                self._cons.append(con)
        return con

    def size(self) -> int:
        """Posts in the index (all replicas share it)."""
        row = self.con.execute("SELECT docs FROM search_state WHERE id = 1").fetchone()
        return int(row[0]) if row else 0

    @property
    def store(self) -> Any:
        """This thread's read-only view of the post store (`roost.corpus.backend.open_reader`)."""
        reader = getattr(self._local, "store", None)
        if reader is None:
            from roost.corpus.backend import open_reader

            reader = self._local.store = open_reader(self.url)
            with self._cons_lock:
                self._readers.append(reader)
        return reader

    def close(self) -> None:
        with self._cons_lock:
            for reader in self._readers:
                reader.close()
            self._readers.clear()
            for con in self._cons:
                con.close()
            self._cons.clear()

    def __enter__(self) -> PgSearch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stored_fusion(self) -> Any:
        """The tuned weights kept in search_state (`roost eval search --tune`), shared by every replica."""
        row = self.con.execute("SELECT fusion FROM search_state").fetchone()
        return row[0] if row else None

    def store_fusion(self, weights: dict[str, float] | None) -> None:
        """Tuned fusion weights into search_state, for every replica (None: back to 1 : 1)."""
        import json

        value = json.dumps({"keyword": weights["keyword"], "semantic": weights["semantic"]}) if weights else None
        self.con.execute("UPDATE search_state SET fusion = %s WHERE id = 1", (value,))

    def _vec(self, v: np.ndarray) -> str:
        return "[" + ",".join(f"{x:.7g}" for x in np.asarray(v, dtype=np.float32)) + "]"

    @property
    def _vcast(self) -> str:
        return "halfvec" if self.vectors == "f16" else "vector"

    # -- keeping up with the store -----------------------------------------------------------------------------------
    def catch_up(self, batch: int = 512) -> tuple[int, int]:
        """Index posts stored since the last call (by any replica) and delete posts tombstoned since; (added,
        removed). Commits each batch: visible to every replica when it returns. Cheap when nothing changed."""
        con = self.con
        store = self.store  # the post store is read through its API only (its schema belongs to roost.corpus)
        state = con.execute("SELECT seq, tomb_seq FROM search_state WHERE id = 1").fetchone()
        caught_up = state is not None and store.max_seq() <= state[0] and store.erasure_cursor() <= state[1]
        if caught_up and time.monotonic() < self._next_rewrite:
            return 0, 0
        added = removed = 0
        while True:
            with con.transaction():
                con.execute("SELECT pg_advisory_xact_lock(%s)", (INDEX_LOCK,))  # other replicas wait here
                seq, tomb = con.execute("SELECT seq, tomb_seq FROM search_state WHERE id = 1").fetchone()  # type: ignore[misc]
                top = store.max_seq()
                rows: list[tuple[Any, ...]] = next(
                    iter(store.searchable_rows(after=seq, upto=top, batch=batch)), []
                )  # reposts excluded
                n = self._insert(rows) if rows else 0
                # erasures after the posts: one committed between the two reads is applied now
                tombs = store.erased_since(tomb)
                gone = 0
                if tombs:
                    seqs = [s for _, s in tombs]
                    gone = con.execute("DELETE FROM search_docs WHERE seq = ANY(%s::bigint[])", (seqs,)).rowcount
                    if gone:  # the rewrite is owed until done, by this replica or any other (erase_pending)
                        owe_rewrite(con, "search_docs")
                con.execute(
                    "UPDATE search_state SET seq = %s, tomb_seq = %s, docs = docs + %s - %s WHERE id = 1",
                    (rows[-1][0] if len(rows) == batch else top, tombs[-1][0] if tombs else tomb, n, gone),
                )
            added += n
            removed += gone
            if len(rows) < batch:
                break
        if removed or time.monotonic() >= self._next_rewrite:
            self._rewrite_owed(now=removed > 0)
        return added, removed

    def _migrate_keys(self, con: psycopg.Connection[Any]) -> None:
        """Tables written before KEYS_VERSION 2 (authors and mentions keyed by `lower()`, erasures followed by
        tombstone): every row's keys recomputed from the store, rows whose post is gone deleted (and the rewrite
        owed), the cursor moved to the store's erasure log. Inside the caller's transaction, under INDEX_LOCK."""
        import json

        upto = con.execute("SELECT seq FROM search_state WHERE id = 1").fetchone()[0]  # type: ignore[index]
        con.execute("CREATE TEMP TABLE live_keys (seq bigint PRIMARY KEY, akey text, ments text[]) ON COMMIT DROP")
        with con.cursor().copy("COPY live_keys FROM STDIN") as cp:
            for rows in self.store.searchable_rows(upto=upto):
                for r in rows:
                    ments = [author_key(str(m).lstrip("@")) for m in json.loads(r[7] or "[]")]
                    cp.write_row((r[0], author_key(r[2]), ments))
        con.execute("UPDATE search_docs d SET author_key = k.akey, author_lc = k.akey, mentions = k.ments "
                    "FROM live_keys k WHERE k.seq = d.seq")  # fmt: skip
        gone = con.execute("DELETE FROM search_docs d WHERE NOT EXISTS (SELECT 1 FROM live_keys k WHERE k.seq = d.seq)")
        if gone.rowcount:
            owe_rewrite(con, "search_docs")
        con.execute(
            "UPDATE search_state SET keys = %s, tomb_seq = %s, docs = (SELECT count(*) FROM search_docs) WHERE id = 1",
            (KEYS_VERSION, self.store.erasure_cursor()),
        )

    def _rewrite_owed(self, now: bool) -> None:
        """Do the rewrites erasures still owe (search_docs, and the store's tables when no erasure of the store's
        could: `roost.corpus.postgres.pay_owed`), so deleted rows' bytes leave the tables and their GIN and HNSW indexes. `now`:
        this call deleted rows (wait up to 10 s for older transactions); otherwise a retry that gives up at once
        and comes back in RETRY_S, so an old snapshot never makes every round stall searches."""
        left = pay_owed(self.con, wait_s=10.0 if now else 0.0)
        self.rewrite_pending, self._next_rewrite = "search_docs" in left, time.monotonic() + RETRY_S

    def _insert(self, rows: list[tuple[Any, ...]]) -> int:
        import json

        vecs = self.embedder.encode([r[4] for r in rows])
        params = []
        for (seq, pid, author, created, text, lang, reply_to, mentions), v in zip(rows, vecs, strict=True):
            akey = author_key(author)
            ments = [author_key(str(m).lstrip("@")) for m in json.loads(mentions or "[]")]
            when = datetime.fromisoformat(created.replace("Z", "+00:00"))
            params.append(
                (seq, pid, akey, akey, when, lang, reply_to is not None, ments, pgtext.tsvector(text), self._vec(v))
            )
        with self.con.cursor() as cur:
            cur.executemany(
                "INSERT INTO search_docs VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s::tsvector,"
                f" %s::{self._vcast}) ON CONFLICT DO NOTHING",
                params,
            )
            return max(cur.rowcount, 0)  # psycopg: the rows inserted by all of them (a conflict adds none)

    def save(self) -> None:
        """Nothing to do: the index lives in PostgreSQL and every `catch_up` batch is committed (durable and seen
        by every replica when it returns)."""

    def stats(self) -> dict[str, Any]:
        seq, tomb, docs, vectors = self.con.execute("SELECT seq, tomb_seq, docs, vectors FROM search_state").fetchone()  # type: ignore[misc]
        return {"posts": int(docs), "max_rowid": int(seq), "erased": int(tomb), "vectors": vectors}

    # -- the three sources of roost.search.hybrid ---------------------------------------------------------------------
    def ranked(self, q: Query, limit: int, within: Query | None = None) -> list[tuple[int, float]]:
        """(seq, score) best first: ts_rank_cd for a text query, newest first for filters only (`KeywordSource`)."""
        built = pgtext.keyword(q, within)
        if built is None:
            return []
        where, params, rank = built
        cond = " AND ".join(where) or "true"
        if rank is None:
            sql = f"SELECT seq, 1.0 FROM search_docs WHERE {cond} ORDER BY created DESC, seq DESC LIMIT %s"
            return [(int(s), float(r)) for s, r in self.con.execute(sql, (*params, limit))]
        sql = (
            "SELECT seq, ts_rank_cd(tsv, %s::tsquery, 1) AS r FROM search_docs"
            f" WHERE {cond} ORDER BY r DESC, seq LIMIT %s"
        )
        return [(int(s), float(r)) for s, r in self.con.execute(sql, (rank, *params, limit))]

    def nearest(self, q: Query, vec: np.ndarray, k: int) -> list[tuple[int, float]]:
        """(seq, cosine similarity) of the posts nearest `vec`, among the posts q's operators allow (`VectorSource`)."""
        v = self._vec(vec)
        where, params = pgtext.constraint(q)
        cond = " AND ".join(where) or "true"
        dist = f"embedding <=> %s::{self._vcast}"
        con = self.con
        with con.transaction():
            if where:
                docs = con.execute("SELECT docs FROM search_state WHERE id = 1").fetchone()
                cap = max(self.exact_limit, int(docs[0] if docs else 0) // 20)
                m = con.execute(
                    f"SELECT count(*) FROM (SELECT 1 FROM search_docs WHERE {cond} LIMIT %s) s", (*params, cap + 1)
                ).fetchone()
                if m and m[0] <= cap:  # few posts pass: exact over exactly those (`+ 0`: no index can order it)
                    return self._nearest(f"({dist}) + 0", cond, v, params, k)
            con.execute("SELECT set_config('hnsw.iterative_scan', 'strict_order', true)")
            con.execute("SELECT set_config('hnsw.ef_search', %s, true)", (str(min(1000, max(40, k))),))
            hits = self._nearest(dist, cond, v, params, k)
            if where and len(hits) < k:  # the graph scan gave up before k passed: exact over the allowed posts
                return self._nearest(f"({dist}) + 0", cond, v, params, k)
            return hits

    def _nearest(self, order: str, cond: str, v: str, params: list[Any], k: int) -> list[tuple[int, float]]:
        sql = (
            f"SELECT seq, 1 - (embedding <=> %s::{self._vcast}) FROM search_docs WHERE {cond} ORDER BY {order} LIMIT %s"
        )
        return [(int(s), float(sim)) for s, sim in self.con.execute(sql, (v, *params, v, k))]

    def live(self, seqs: list[int]) -> dict[int, tuple[str, str, str, str]]:
        """seq → (id, author, created_at, text) of those posts still in the store and not tombstoned (`PostLookup`)."""
        return {int(s): row for s, row in live_posts(self.store, list(seqs)).items()}
