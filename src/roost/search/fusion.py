"""The one ranking rule every search backend uses (`SearchIndex` embedded, `PgSearch` on PostgreSQL): keyword mode
ranks by the keyword score, semantic by cosine similarity, hybrid by reciprocal rank fusion of both lists (plus,
with LLM query expansion, a third keyword list of the extra words under the same operators at half weight).

    scores, kw_rank, sem_rank, sims = fuse(q, "hybrid", depth, keyword, semantic, (1.0, 1.0), 60, extra_terms)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from roost.errors import UsageError
from roost.search.query import Query

# keyword(query, depth, within) -> [(doc, score)] best first; semantic(query, depth) -> [(doc, similarity)]
Keyword = Callable[[Query, int, Query | None], list[tuple[int, float]]]
Semantic = Callable[[Query, int], list[tuple[int, float]]]


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
