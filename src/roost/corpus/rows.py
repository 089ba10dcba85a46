"""The rows every store backend holds, named once: the post columns writers fill (`COLUMNS`), which posts are
training text (`TRAINING_WHERE`) and searchable (`SEARCHABLE`, `SEARCH_COLUMNS`), the reposts an erasure follows
(`CARRIERS`, `reposts_of`), and `roost corpus stats` (`summarize`, the same SQL on every backend).

    from roost.corpus.rows import COLUMNS, TRAINING_WHERE
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from roost.corpus.post import author_key, reposted_authors

COLUMNS = (
    "id",
    "author",
    "created_at",
    "text",
    "text_scrubbed",
    "lang",
    "reply_to",
    "quote_of",
    "repost_of",
    "hashtags",
    "mentions",
    "urls",
    "visibility",
    "source",
    "text_hash",
    "dup_of",
    "near_dup_of",
    "pii_hits",
    "run_id",
)
# Training text: one copy of each text, no reposts, nothing forgotten (forgotten rows are deleted).
TRAINING_WHERE = "dup_of IS NULL AND near_dup_of IS NULL AND repost_of IS NULL"


SEARCHABLE = "repost_of IS NULL"
SEARCH_COLUMNS = "seq, id, author, created_at, text, lang, reply_to, mentions"


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# the posts that may carry another's post: reposts, and texts with an `RT @` / `MT @` (LIKE is ASCII case-blind)
CARRIERS = "repost_of IS NOT NULL OR text LIKE '%rt @%' OR text LIKE '%mt @%'"


def reposts_of(rows: Iterable[tuple[Any, ...]], ids: set[str], authors: list[str]) -> list[tuple[Any, ...]]:
    """Those of (id, repost_of, text, …) rows that repost one of `ids` or carry a post by one of `authors`
    (`reposted_authors`): an erasure removes them with what they carry, on every backend."""
    keys = {author_key(a) for a in authors}
    return [r for r in rows if r[1] in ids or any(author_key(a) in keys for a in reposted_authors(r[1], r[2] or ""))]


def summarize(one: Any, rows: Any) -> dict[str, Any]:
    """`roost corpus stats` from two query callables (`one(sql)` → a value, `rows(sql)` → rows): the same SQL on
    every backend, so every backend reports the same figures."""
    runs = rows("SELECT status, report FROM ingest_runs")
    rejected = 0
    reasons: dict[str, int] = {}
    for _status, report in runs:
        if report:
            r = json.loads(report)
            rejected += r.get("rejected", 0)
            for k, v in r.get("rejected_reasons", {}).items():
                reasons[k] = reasons.get(k, 0) + v
    return {
        "posts": one("SELECT count(*) FROM posts"),
        "kept": one(f"SELECT count(*) FROM posts WHERE {TRAINING_WHERE}"),
        "duplicates": one("SELECT count(*) FROM posts WHERE dup_of IS NOT NULL"),
        "near_duplicates": one("SELECT count(*) FROM posts WHERE near_dup_of IS NOT NULL"),
        "reposts": one("SELECT count(*) FROM posts WHERE repost_of IS NOT NULL"),
        "replies": one("SELECT count(*) FROM posts WHERE reply_to IS NOT NULL"),
        "pii_posts": one("SELECT count(*) FROM posts WHERE pii_hits > 0"),
        "pii_hits": int(one("SELECT coalesce(sum(pii_hits), 0) FROM posts")),
        "authors": one("SELECT count(DISTINCT author) FROM posts"),
        "first": one("SELECT min(created_at) FROM posts"),
        "last": one("SELECT max(created_at) FROM posts"),
        "by_lang": dict(rows("SELECT lang, count(*) FROM posts GROUP BY lang ORDER BY 2 DESC, 1")),
        "by_source": dict(rows("SELECT source, count(*) FROM posts GROUP BY source ORDER BY 2 DESC, 1")),
        "tombstones": dict(rows("SELECT kind, count(*) FROM tombstones GROUP BY kind")),
        "runs": {s: sum(1 for st, _ in runs if st == s) for s in {st for st, _ in runs}},
        "rejected": rejected,
        "rejected_reasons": reasons,
    }
