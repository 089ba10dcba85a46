"""The interface every search backend implements, and the one place a backend is opened (docs/search.md,
"Backends"). `roost serve`, `roost ask`, `roost eval search` and the erasure cascade use only this protocol.

    index = open_search(ctx)            # the backend `[search] backend` names (roost.registry decides)
    index.catch_up(); index.search("lighthouse lang:en")

Two ship, both `HybridSearch` (roost.search.hybrid: one orchestration over a keyword source, a vector source and a
post lookup): `roost.search.embedded.SearchIndex` (tantivy + usearch under <home>/index, no server) and
`roost.search.pgsearch.PgSearch` (full-text search and pgvector in the PostgreSQL store's own database, so several
`roost serve` replicas share one index: `catch_up` on any of them makes new posts searchable, and forgotten ones
gone, on all).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from roost.context import Roost
from roost.registry import SearchKind, search_kind

if TYPE_CHECKING:
    from roost.config import SearchConfig
    from roost.search.hybrid import Hit
    from roost.search.query import Query


@runtime_checkable
class SearchBackend(Protocol):
    cfg: SearchConfig  # the [search] settings it runs with (fusion weights set here override the tuned ones)
    shared: bool  # the index lives in the store's database: every replica's catch_up serves all of them
    rewrite_pending: bool  # an erasure's rewrite of the index's files is still owed (retried; the posts are hidden)

    @property
    def embedder(self) -> Any:
        """The embedding model (loaded on first use)."""
        ...

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


def open_search(ctx: Roost, embedder: Any | None = None, cfg: SearchConfig | None = None) -> SearchBackend:
    """The search backend `[search] backend` names (roost.registry): "embedded" (`SearchIndex` in `<home>/index`,
    built by `roost index`) or "postgres" (`PgSearch` in the PostgreSQL store's own database, shared by every
    replica; it needs the store on PostgreSQL: `--store` / `[store] url`). `cfg`: other search settings than
    the context's."""
    cfg = cfg or ctx.settings.search
    return _OPEN[search_kind(cfg.backend, ctx.store)](ctx, embedder, cfg)


def _embedded(ctx: Roost, embedder: Any | None, cfg: SearchConfig) -> SearchBackend:
    from roost.search.embedded import SearchIndex

    return SearchIndex(ctx, embedder=embedder, cfg=cfg)


def _postgres(ctx: Roost, embedder: Any | None, cfg: SearchConfig) -> SearchBackend:
    from roost.search.pgsearch import PgSearch

    return PgSearch(str(ctx.store), embedder=embedder, cfg=cfg)


_OPEN = {SearchKind.EMBEDDED: _embedded, SearchKind.POSTGRES: _postgres}  # by the registry's kinds, never by name


def current_search(ctx: Roost, cfg: SearchConfig | None = None) -> SearchBackend:
    """`open_search`, caught up with the store (cheap when nothing changed) when the index lives in the store's
    database; the embedded index is as `roost index` (or a running server) left it."""
    index = open_search(ctx, cfg=cfg)
    if index.shared:
        index.catch_up()
    return index


def index_exists(ctx: Roost) -> bool:
    """Whether the configured index has been built (`roost index`, or a server made it)."""
    if search_kind(ctx.settings.search.backend, ctx.store) is SearchKind.POSTGRES:
        from roost.search.pgsearch import search_tables_exist

        return search_tables_exist(ctx.store)
    return (ctx.ws.index_dir / "meta.json").is_file()


def build_index(ctx: Roost, on_batch: Any = None, rebuild: bool = False) -> dict[str, Any]:
    """`roost index`: build or catch up the configured backend; {posts, added, removed, seconds, vectors, where}."""
    import time

    cfg = ctx.settings.search
    if search_kind(cfg.backend, ctx.store) is SearchKind.EMBEDDED:
        from roost.search.embedded import SearchIndex

        meta = SearchIndex.build(ctx, on_batch=on_batch, rebuild=rebuild)
        return {**meta, "where": str(ctx.ws.index_dir)}
    if rebuild:
        from roost.errors import UsageError

        raise UsageError("--rebuild/--vectors apply to the embedded index; the PostgreSQL index only catches up")
    t0 = time.perf_counter()
    index = open_search(ctx)
    try:
        added, removed = index.catch_up()
        posts = index.size()
    finally:
        index.close()
    return {"posts": posts, "added": added, "removed": removed, "seconds": time.perf_counter() - t0,
            "vectors": "pgvector", "where": "the store's PostgreSQL database"}  # fmt: skip


def keep_current(ctx: Roost) -> dict[str, Any] | None:
    """After an ingest: catch the configured index up with the new posts when it has been built (so `roost search`
    is current at once). None when there is no index yet; {"busy": True} when a running `roost serve` holds the
    embedded index (its live indexer adds them within a second); else `build_index`'s summary."""
    if not index_exists(ctx):
        return None
    from roost.search.keyword import IndexBusy

    try:
        return build_index(ctx)
    except IndexBusy:
        return {"busy": True}
