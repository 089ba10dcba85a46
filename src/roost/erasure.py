"""The one erasure cascade: `roost forget --author A --post ID`, `DELETE /v1/posts/{id}` and any later path call
`erase()`, so a forgotten post is gone the same way whoever asks.

    from roost.erasure import erase
    report = erase(Roost.at("roost-home"), authors=["alice"], post_ids=["x:123"])

In order: the store deletes the posts — and every repost by another user that carries one of them (`RT @them: …`,
an Announce of their status) — and tombstones the ids and authors as keyed hashes (SQLite `secure_delete`
overwrites the freed pages; the WAL is checkpointed and truncated so the text is not left in `corpus.db-wal`);
in shard sets holding the posts their tokens are overwritten in place and the sets marked stale
(roost.data.erase); the keyword index is rewritten without them and the vector index compacted (the bytes are gone
from the files, not only hidden) — by this process, or, while a `roost serve` holds the index, by that server's
live indexer within a second (it follows the store's `erased` log and also drops the posts from its dedup state
and leak guard); finally the report names the tokenizers, runs and models whose provenance includes the erased
posts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from roost.context import Roost
from roost.corpus.backend import PostStore, open_store
from roost.corpus.post import author_key
from roost.errors import UsageError
from roost.search.backend import SearchBackend, index_exists, open_search
from roost.search.keyword import IndexBusy


@dataclass
class ErasureReport:
    """What one erasure removed, and what was trained on the removed posts."""

    posts: int = 0
    ids: list[str] = field(default_factory=list)
    reposts: int = 0  # of those, reposts by other users that carried an erased post
    authors: int = 0
    post_ids: int = 0
    wal_truncated: bool = False
    pending: list[str] = field(default_factory=list)  # PostgreSQL tables whose rewrite is still owed (retried later)
    index: str = "none"  # "removed" | "server" (a running server drops them) | "pending" (hidden; bytes later) | "none"
    index_removed: int = 0  # posts the search index held and dropped (counted by the index, not assumed)
    stale_shards: list[str] = field(default_factory=list)  # sets that held the posts (their tokens overwritten)
    shard_problems: list[str] = field(default_factory=list)  # sets that could not be read or written: "set: why"
    unmatched: list[str] = field(default_factory=list)  # authors with no post in the store (tombstoned anyway)
    tokenizers: list[str] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def erase(
    ctx: Roost,
    authors: list[str] | None = None,
    post_ids: list[str] | None = None,
    store: PostStore | None = None,
    index: SearchBackend | None = None,
) -> ErasureReport:
    """Forget these authors and posts everywhere. `store`/`index`: a running server's own (it holds the index);
    otherwise they are opened here, from the context (its store, its configured search backend)."""
    ws = ctx.ws
    authors, post_ids = list(authors or []), list(post_ids or [])
    for what, values in (("author", authors), ("post id", post_ids)):
        for v in values:
            if not v.strip() or "\x00" in v or (what == "author" and not author_key(v)):
                raise UsageError(f"forget: an empty {what} (or one with a NUL byte) names nothing")
            if any("\ud800" <= c <= "\udfff" for c in v):
                raise UsageError(f"forget: the {what} {v.encode('utf-8', 'backslashreplace').decode()!r} is not valid "
                                 "Unicode (an invalid byte or lone surrogate); no post or author can have it")  # fmt: skip
    own = store is None
    st = store or open_store(ctx.store, readonly=True)
    try:
        before = st.erasure_cursor()
        n = st.forget(authors, post_ids)
        truncated = st.checkpoint()
        rep = ErasureReport(n["posts"], n["ids"], n["reposts"], n["authors"], n["post_ids"], truncated,
                            st.erase_pending(), unmatched=n["unmatched"])  # fmt: skip
        if ws.shards.is_dir():  # the posts' tokens, and those of any erasure a set missed (roost.data.erase)
            from roost.data.erase import Erasures, redact

            rep.stale_shards, rep.shard_problems = redact(
                ws.shards, rep.ids, Erasures(before, st.erasure_cursor(), st.existing)
            )
    finally:
        if own:
            st.close()
    rep.index, rep.index_removed = _erase_from_index(ctx, index)
    if rep.index == "pending":
        rep.pending = sorted({*rep.pending, "search_docs"})
    _trained_on(ctx, rep)
    return rep


def _erase_from_index(ctx: Roost, index: SearchBackend | None) -> tuple[str, int]:
    """How the search index took the erasure, and how many of the posts it held and dropped."""
    own = index is None
    if own:
        if not index_exists(ctx):
            return "none", 0
        try:  # applies the new erasures: keyword rewrite + vector compaction (embedded), or the shared tables
            index = open_search(ctx, embedder=False)
        except IndexBusy:
            return "server", 0
    assert index is not None
    try:
        _, removed = index.catch_up()
        index.save()
        return ("pending" if index.rewrite_pending else "removed"), removed
    except IndexBusy:
        return "server", 0
    finally:
        if own:
            index.close()


def _trained_on(ctx: Roost, rep: ErasureReport) -> None:
    """Tokenizers, runs and models built from the store or from a stale shard set: their provenance includes
    the erased posts (a model is not un-trained by deleting its data; it has to be retrained)."""
    if not rep.posts:
        return
    ws = ctx.ws
    stale = {str(ws.shard_dir(s)) for s in rep.stale_shards}
    if ws.tokenizers.is_dir():
        rep.tokenizers = sorted(d.name for d in ws.tokenizers.iterdir() if (d / "tokenizer.json").is_file())
    if ws.runs.is_dir():
        for d in sorted(ws.runs.iterdir()):
            train = _json(d / "config.json").get("train", {})
            if train.get("sft") or train.get("shards") in rep.stale_shards:
                rep.runs.append(d.name)
    if ws.models.is_dir():
        for d in sorted(ws.models.iterdir()):
            meta = _json(d / "roost.json")
            if meta.get("shards") in stale or meta.get("corpus") in (str(ctx.store), ctx.describe_store()):
                rep.models.append(d.name)


def _json(path: Any) -> dict[str, Any]:
    try:
        out = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return out if isinstance(out, dict) else {}
