"""The interface every search backend implements (docs/search.md, "Backends"). `SearchIndex` (tantivy + usearch,
embedded, no server) is the one that ships; an OpenSearch or Postgres + pgvector adapter implements the same four
methods, and `roost serve`, `roost ask` and `roost eval search` work unchanged on top of it.

`roost.search.pgsearch.PgSearch(url)` is the PostgreSQL one: full-text search (roost's analyser, ts_rank_cd) and
pgvector (HNSW, cosine, optional halfvec) in the store's own database, so several `roost serve` replicas share one
index (`catch_up` on any of them makes new posts searchable, and forgotten ones gone, on all).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from roost.config import SearchConfig
    from roost.search.hybrid import Hit
    from roost.search.query import Query


@runtime_checkable
class SearchBackend(Protocol):
    cfg: SearchConfig  # the [search] settings it runs with (fusion weights set here override the tuned ones)

    def search(
        self,
        query: str | Query,
        mode: str | None = None,
        k: int | None = None,
        recency: float | None = None,
        extra_terms: list[str] | None = None,
    ) -> list[Hit]:
        """Ranked live posts for a parsed X-style query: filters applied inside the backend, tombstoned posts
        never returned, `Hit.similarity` set when a vector search ran (answers use it to decide to abstain)."""
        ...

    def catch_up(self) -> tuple[int, int]:
        """Index what the store gained and erase what it tombstoned since the last call; (added, removed). Erased
        posts leave the backend's files, not only its results (the erasure cascade, roost.erasure, relies on it).
        Must be cheap when nothing changed: `roost serve` calls it every `search.refresh_ms`."""
        ...

    def save(self) -> None:
        """Make the current state durable (a restart then catches up from it)."""
        ...

    def size(self) -> int:
        """Posts in the index."""
        ...

    def store_fusion(self, weights: dict[str, float] | None) -> None:
        """Keep tuned RRF weights ({"keyword": w, "semantic": w}; None: back to 1 : 1) with the index, where every
        later search (every replica's) uses them unless `[search]` sets its own."""
        ...

    def close(self) -> None:
        """Release what the backend holds (the keyword index's writer, database connections)."""
        ...


def open_search(home: Path, cfg: SearchConfig, embedder: Any | None = None) -> SearchBackend:
    """The search backend `cfg.backend` names: "embedded" (`SearchIndex` in `<home>/index`, built by `roost index`)
    or "postgres" (`PgSearch` in the PostgreSQL store's own database, shared by every replica; it needs the store on
    PostgreSQL: `--store` / `[store] url`)."""
    from roost.workspace import Workspace

    if cfg.backend == "postgres":
        from roost.corpus.backend import is_server
        from roost.errors import UsageError
        from roost.search.pgsearch import PgSearch

        store = Workspace(home).store
        if not is_server(store):
            raise UsageError("search.backend = postgres needs the post store on PostgreSQL (--store / [store] url)")
        return PgSearch(str(store), embedder=embedder, cfg=cfg)
    from roost.search.hybrid import SearchIndex

    return SearchIndex(home, embedder=embedder, cfg=cfg)


def current_search(home: Path, cfg: SearchConfig) -> SearchBackend:
    """`open_search`, caught up with the store when the index lives in PostgreSQL (cheap when nothing changed); the
    embedded index is as `roost index` (or a running server) left it."""
    index = open_search(home, cfg)
    if cfg.backend == "postgres":
        index.catch_up()
    return index


def build_index(home: Path, cfg: SearchConfig, on_batch: Any = None, rebuild: bool = False) -> dict[str, Any]:
    """`roost index`: build or catch up the configured backend; {posts, added, removed, seconds, vectors, where}."""
    import time

    from roost.workspace import Workspace

    if cfg.backend != "postgres":
        from roost.search.hybrid import SearchIndex

        meta = SearchIndex.build(home, on_batch=on_batch, cfg=cfg, rebuild=rebuild)
        return {**meta, "where": str(Workspace(home).index_dir)}
    if rebuild:
        from roost.errors import UsageError

        raise UsageError("--rebuild/--vectors apply to the embedded index; the PostgreSQL index only catches up")
    t0 = time.perf_counter()
    index = open_search(home, cfg)
    try:
        added, removed = index.catch_up()
        posts = index.size()
    finally:
        index.close()
    return {"posts": posts, "added": added, "removed": removed, "seconds": time.perf_counter() - t0,
            "vectors": "pgvector", "where": "the store's PostgreSQL database"}  # fmt: skip


def keep_current(home: Path, cfg: SearchConfig) -> dict[str, Any] | None:
    """After an ingest: catch the configured index up with the new posts when it has been built (so `roost search`
    is current at once). None when there is no index yet; {"busy": True} when a running `roost serve` holds the
    embedded index (its live indexer adds them within a second); else `build_index`'s summary."""
    from roost.workspace import Workspace

    if cfg.backend == "postgres":
        from roost.search.pgsearch import search_tables_exist

        if not search_tables_exist(Workspace(home).store):
            return None
        return build_index(home, cfg)
    if not (Workspace(home).index_dir / "meta.json").is_file():
        return None
    from roost.search.keyword import IndexBusy

    try:
        return build_index(home, cfg)
    except IndexBusy:
        return {"busy": True}
