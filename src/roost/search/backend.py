"""The interface every search backend implements (docs/search.md, "Backends"). `SearchIndex` (tantivy + usearch,
embedded, no server) is the one that ships; an OpenSearch or Postgres + pgvector adapter implements the same four
methods, and `roost serve`, `roost ask` and `roost eval search` work unchanged on top of it.

`roost.search.pgsearch.PgSearch(url)` is the PostgreSQL one: full-text search (roost's analyser, ts_rank_cd) and
pgvector (HNSW, cosine, optional halfvec) in the store's own database, so several `roost serve` replicas share one
index (`catch_up` on any of them makes new posts searchable, and forgotten ones gone, on all).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from roost.search.hybrid import Hit
    from roost.search.query import Query


@runtime_checkable
class SearchBackend(Protocol):
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
