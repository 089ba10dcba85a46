"""The one hybrid search every backend runs: it embeds the query, asks a keyword source and a vector source for
their rankings, fuses them (roost.search.fusion: one ranking rule) and returns only posts a post lookup says are
still in the store and not tombstoned. A backend supplies the three sources and keeps them current:

    class MyBackend(HybridSearch):                       # roost.search.embedded.SearchIndex, roost.search.pgsearch.PgSearch
        def __init__(self, cfg):
            super().__init__(cfg, None, keyword=..., vectors=..., posts=StorePosts(url))
    MyBackend(cfg).search('lighthouse -from:bob lang:en', mode="hybrid")   # [Hit, …]

Sources are small protocols, so a new backend (OpenSearch, a per-language analyser) implements one or two of
them and reuses the rest: `KeywordSource.ranked`, `VectorSource.nearest`, `PostLookup.live`.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from roost.config import SearchConfig
from roost.corpus.backend import open_reader
from roost.search.fusion import Hit, fuse, hits, live_posts, or_terms, tuned_weights
from roost.search.query import Query, parse

__all__ = ["Hit", "HybridSearch", "KeywordSource", "PostLookup", "StorePosts", "VectorSource", "or_terms"]


class KeywordSource(Protocol):
    def ranked(self, q: Query, depth: int, within: Query | None = None) -> list[tuple[int, float]]:
        """(doc, score) best first, `depth` deep: posts matching q's words and operators (and `within`'s operators:
        query expansion ranks other words under the same filters). Filters only: newest first."""
        ...


class VectorSource(Protocol):
    def nearest(self, q: Query, vec: np.ndarray, k: int) -> list[tuple[int, float]]:
        """(doc, cosine similarity) of the `k` posts nearest `vec` (q's free text, embedded) among the posts q's
        operators allow: operators are hard constraints in every mode."""
        ...


class PostLookup(Protocol):
    def live(self, docs: list[int]) -> dict[int, tuple[str, str, str, str]]:
        """doc → (id, author, created_at, text) of those posts still in the store and not tombstoned."""
        ...


class StorePosts:
    """A `PostLookup` over the post store at `url` (opened per call: searches run on many threads)."""

    def __init__(self, url: Any):
        self.url = url

    def live(self, docs: list[int]) -> dict[int, tuple[str, str, str, str]]:
        with open_reader(self.url) as store:
            return live_posts(store, docs)


class HybridSearch:
    """The search half of a `SearchBackend` (roost.search.backend): embedder, fusion weights, `search`."""

    def __init__(
        self,
        cfg: SearchConfig,
        embedder: Any | None,
        keyword: KeywordSource,
        vectors: VectorSource,
        posts: PostLookup,
    ):
        self.cfg = cfg
        self._embedder = embedder
        self.keyword_source, self.vector_source, self.post_lookup = keyword, vectors, posts

    @property
    def embedder(self) -> Any:
        """The embedding model (all-MiniLM-L6-v2, loaded on first use)."""
        if not self._embedder:
            from roost.search.embed import Embedder

            self._embedder = Embedder(dtype=self.cfg.embed_dtype)
        return self._embedder

    def stored_fusion(self) -> Any:
        """The tuned RRF weights kept with the index (`store_fusion`; a dict or its JSON), or None."""
        return None

    @property
    def weights(self) -> tuple[float, float]:
        """RRF weights: `[search]`'s, else the tuned ones kept with the index (`roost eval search --tune`), else 1:1."""
        kw, sem = self.cfg.keyword_weight, self.cfg.semantic_weight
        return tuned_weights(None if kw is not None and sem is not None else self.stored_fusion(), kw, sem)

    def search(
        self,
        query: str | Query,
        mode: str | None = None,
        k: int | None = None,
        recency: float | None = None,
        extra_terms: list[str] | None = None,
    ) -> list[Hit]:
        """Ranked live posts. `extra_terms` (from LLM query expansion) add a third, optional keyword ranking under the
        same operators."""
        q = parse(query) if isinstance(query, str) else query
        k = k or self.cfg.k
        recency = self.cfg.recency if recency is None else recency
        scores, kw_rank, sem_rank, sims = fuse(
            q, mode or self.cfg.mode, max(k * 5, 50), self.keyword_source.ranked, self._semantic, self.weights,
            self.cfg.rrf_k, extra_terms,
        )  # fmt: skip
        return hits(scores, kw_rank, sem_rank, sims, k, recency, self.post_lookup.live)

    def _semantic(self, q: Query, depth: int) -> list[tuple[int, float]]:
        if not q.text.strip():
            return []
        return self.vector_source.nearest(q, self.embedder.encode([q.text])[0], depth)
