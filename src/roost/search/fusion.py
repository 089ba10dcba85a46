"""The one ranking rule every search backend uses (`SearchIndex` embedded, `PgSearch` on PostgreSQL): keyword mode
ranks by the keyword score, semantic by cosine similarity, hybrid by reciprocal rank fusion of both lists (plus,
with LLM query expansion, a third keyword list of the extra words under the same operators at half weight).

    scores, kw_rank, sem_rank, sims = fuse(q, "hybrid", depth, keyword, semantic, (1.0, 1.0), 60, extra_terms)
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from roost.corpus.backend import PostReader
from roost.errors import UsageError
from roost.search.query import Query


@dataclass
class Hit:
    """One search result (the API's `SearchHit`)."""

    id: str
    author: str
    created_at: str
    text: str
    score: float
    keyword_rank: int | None = None
    semantic_rank: int | None = None
    similarity: float | None = None  # cosine of the query and post embeddings, when semantic search ran

    def to_json(self) -> dict[str, Any]:
        return self.__dict__.copy()


# keyword(query, depth, within) -> [(doc, score)] best first; semantic(query, depth) -> [(doc, similarity)]
Keyword = Callable[[Query, int, Query | None], list[tuple[int, float]]]
Semantic = Callable[[Query, int], list[tuple[int, float]]]


def tuned_weights(raw: Any, kw: float | None, sem: float | None) -> tuple[float, float]:
    """RRF weights: `[search]`'s (kw/sem, when set), else the tuned ones kept with the index (`raw`: a dict or its
    JSON), else 1 : 1. A kept value that is not a finite number in (0, 100] is ignored: a damaged meta.json or
    search_state row must not break searching."""
    import json
    import math

    tuned: dict[str, float] = {}
    try:
        got = json.loads(raw) if isinstance(raw, str | bytes) else raw
        if isinstance(got, dict):
            for name in ("keyword", "semantic"):
                v = got.get(name)
                if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and 0 < v <= 100:
                    tuned[name] = float(v)
    except ValueError:
        pass
    return (float(kw) if kw is not None else tuned.get("keyword", 1.0),
            float(sem) if sem is not None else tuned.get("semantic", 1.0))  # fmt: skip


def or_terms(terms: list[str]) -> list[str]:
    """Expansion words as one OR group (any of them may match)."""
    out: list[str] = []
    for t in terms:
        out += (["OR"] if out else []) + [t]
    return out


def fuse(
    q: Query,
    mode: str,
    depth: int,
    keyword: Keyword,
    semantic: Semantic,
    weights: tuple[float, float],
    rrf_k: int,
    extra_terms: list[str] | None = None,
) -> tuple[dict[int, float], dict[int, int], dict[int, int], dict[int, float]]:
    """(score by doc, keyword rank, semantic rank, similarity) for `mode`, with candidates `depth` deep."""
    if mode not in ("keyword", "semantic", "hybrid"):
        raise UsageError(f"--mode must be keyword, semantic or hybrid, got {mode!r}")
    kw = keyword(q, depth, None) if mode != "semantic" else []
    sem = semantic(q, depth) if mode != "keyword" else []
    if mode == "semantic" and not q.text.strip():
        kw = keyword(q, depth, None)  # filters only: nothing to embed
    kw_rank = {doc: i + 1 for i, (doc, _) in enumerate(kw)}
    sem_rank = {doc: i + 1 for i, (doc, _) in enumerate(sem)}
    sims = dict(sem)
    scores: dict[int, float] = {}
    if mode == "keyword" or (mode == "semantic" and not sem):
        scores = dict(kw)
    elif mode == "semantic":
        scores = dict(sem)
    else:
        w_kw, w_sem = weights
        lists = [(kw_rank, w_kw), (sem_rank, w_sem)]
        if extra_terms:
            ex = dataclasses.replace(q, terms=or_terms(extra_terms), phrases=[])
            more = keyword(ex, depth, q)  # other words, the same operators
            lists.append(({doc: i + 1 for i, (doc, _) in enumerate(more)}, 0.5 * w_kw))
        for ranks, w in lists:
            for doc, r in ranks.items():
                scores[doc] = scores.get(doc, 0.0) + w / (rrf_k + r)
    return scores, kw_rank, sem_rank, sims


# lookup(docs) -> {doc: (id, author, created_at, text)} for the posts still in the store and not tombstoned
Lookup = Callable[[list[int]], dict[int, tuple[str, str, str, str]]]


def hits(
    scores: dict[int, float],
    kw_rank: dict[int, int],
    sem_rank: dict[int, int],
    sims: dict[int, float],
    k: int,
    recency: float,
    lookup: Lookup,
) -> list[Hit]:
    """The best `k` live posts: only the best candidates are looked up (and checked against the tombstones), more
    when many were forgotten; `recency` boosts newer posts (1 + recency / (1 + age in days / 30))."""
    if not scores:
        return []
    order = sorted(scores, key=lambda d: -scores[d])  # stable: on a tie, the keyword list's order (fuse adds it first)
    take = max(k * 3, 30) if not recency else len(order)
    found = lookup(order[:take])
    while take < len(order) and sum(1 for d in order[:take] if d in found) < k:
        found.update(lookup(order[take : take * 2]))
        take *= 2
    out = []
    now = time.time()
    for doc in order[:take]:
        score, row = scores[doc], found.get(doc)
        if row is None:
            continue  # forgotten: never returned, whatever the index still holds
        if recency:
            age_days = (now - datetime.fromisoformat(row[2].replace("Z", "+00:00")).timestamp()) / 86400
            score *= 1.0 + recency / (1.0 + max(age_days, 0.0) / 30.0)
        out.append(Hit(row[0], row[1], row[2], row[3], score, kw_rank.get(doc), sem_rank.get(doc), sims.get(doc)))
    out.sort(key=lambda h: -h.score)
    return out[:k]


def live_posts(store: PostReader, rowids: list[int]) -> dict[int, tuple[str, str, str, str]]:
    """rowid → (id, author, created_at, text) of these posts that are still in the store and not tombstoned (the
    check every search backend makes on every hit it returns)."""
    found = store.posts_by_seq(rowids)
    ids, authors = store.dead([row[0] for row in found.values()], [row[1] for row in found.values()])
    return {r: row for r, row in found.items() if row[0] not in ids and row[1] not in authors}
