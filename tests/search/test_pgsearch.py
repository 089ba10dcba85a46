"""The PostgreSQL + pgvector search backend (roost.search.pgsearch) on a real PostgreSQL 18 with pgvector: a small
corpus (generated posts, the operator test's posts and a few with hashtags, cashtags, URLs, accents and CJK)
ingested into a PostgreSQL store by the real importer, real MiniLM embeddings. Operators hold in every mode
(checked by the operator test's independent oracle), results agree with the embedded SearchIndex built from the
same exports, two replicas on one database see new and forgotten posts within a second."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest

from roost.config import CorpusConfig
from roost.context import Roost
from roost.corpus.backend import open_store
from roost.corpus.ingest import ingest
from roost.corpus.postgres import server as pgserver
from roost.demo.writers import Draft, synthetic_drafts, write_x_archive
from roost.search.backend import SearchBackend
from roost.search.embedded import SearchIndex
from roost.search.pgsearch import PgSearch
from tests.security.test_search_operators import NEGATED, POSTS, T0, RememberingEmbedder, _contains, _ops_of

MODES = ("keyword", "semantic", "hybrid")
SPECIAL = [  # (id, text, lang)
    ("1800000000000000001", "Buying more $TSLA today, details at https://example.com/stocks?id=42 #Investing @broker_bob", "en"),
    ("1800000000000000002", "Un café crème à Paris, très agréable #Déjeuner", "fr"),
    ("1800000000000000003", "今日は東京でとても良い天気です。友達と公園で散歩しました。", "ja"),
    ("1800000000000000004", "Die Straße in München ist heute gesperrt, Umleitung über Schwabing", "de"),
]  # fmt: skip
OPERATOR_QUERIES = [
    "lighthouses -zeppelins",
    "from:alice #infra",
    'from:alice "data center"',
    "seaside beacon #travel",
    'coffee -"data center"',
    "lighthouse -#travel",
    "to:alice",
    "racks filter:replies",
    "weekend -big",
    "lighthouses OR zeppelins -from:bob",
    *NEGATED,
]


def _exports(root: Path, n_synthetic: int = 270) -> list[Path]:
    ids = [str(1_700_000_000_000_000_000 + i) for i in range(len(POSTS))]
    by_author: dict[str, list[Draft]] = {}
    for i, (author, text, day, lang, parent) in enumerate(POSTS):
        reply = (ids[parent], POSTS[parent][0]) if parent is not None else (None, None)
        by_author.setdefault(author, []).append(
            Draft(ids[i], text, T0 + timedelta(days=day), reply[0], reply[1], lang=lang)
        )
    by_author["dora"] = [
        Draft(i, t, T0 + timedelta(days=2, hours=n), lang=lang) for n, (i, t, lang) in enumerate(SPECIAL)
    ]
    drafts = synthetic_drafts(n_synthetic, seed=11)
    for a in range(3):
        by_author[f"user{a}"] = drafts[a::3]
    return [write_x_archive(root / "exports" / a, a, str(300 + n), d) for n, (a, d) in enumerate(by_author.items())]  # fmt: skip


def _database(pg_server: str, name: str) -> str:
    pgserver.create_database(pg_server, name)
    return pg_server.replace("/postgres?", f"/{name}?", 1)


def _rows(url: str) -> dict[str, tuple]:
    with psycopg.connect(url) as con:
        sql = "SELECT id, author, created_at, text, lang, reply_to, mentions FROM posts"
        return {r[0]: r[1:] for r in con.execute(sql)}


@dataclass
class World:
    url: str
    pg: PgSearch
    emb: SearchIndex
    rows: dict[str, tuple]


@pytest.fixture(scope="module")
def embedder() -> RememberingEmbedder:
    return RememberingEmbedder()


@pytest.fixture(scope="module")
def world(pg_server: str, embedder: RememberingEmbedder, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("pgsearch")
    paths = _exports(root)
    url = _database(pg_server, f"pgsearch_world_{time.time_ns()}")
    ingest(paths, url, CorpusConfig(workers=1), show_progress=False)
    home = root / "home"
    home.mkdir()
    ingest(paths, home / "corpus.db", CorpusConfig(workers=1), show_progress=False)
    SearchIndex.build(Roost.at(home), embedder=embedder)
    pg = PgSearch(url, embedder=embedder)
    yield World(url, pg, SearchIndex(Roost.at(home), embedder=embedder), _rows(url))
    pg.close()


def test_catch_up_indexes_everything(world: World) -> None:
    pg = world.pg
    assert isinstance(pg, SearchBackend)
    added, _ = pg.catch_up()
    with psycopg.connect(world.url) as con:
        n = con.execute("SELECT count(*) FROM posts WHERE repost_of IS NULL").fetchone()[0]  # type: ignore[index]
        indexed = con.execute("SELECT count(*) FROM search_docs").fetchone()[0]  # type: ignore[index]
    assert 250 <= n <= len(world.rows) and indexed == n and added in (0, n)  # 0: an earlier test caught up already
    t0 = time.perf_counter()
    assert pg.catch_up() == (0, 0)  # nothing new: cheap (one query) and idempotent
    idle = time.perf_counter() - t0
    t0 = time.perf_counter()
    for mode in MODES:
        pg.search("lighthouse at night -from:bob", mode)
    print(
        f"\nno-op catch_up {idle * 1000:.1f} ms; keyword+semantic+hybrid search {(time.perf_counter() - t0) * 1000:.0f} ms"
    )
    assert idle < 0.5
    assert pg.stats()["posts"] == n


@pytest.mark.parametrize("q", OPERATOR_QUERIES)
def test_operators_hold_in_every_mode(world: World, q: str) -> None:
    world.pg.catch_up()
    ops = _ops_of(q)
    for mode in MODES:
        hits = world.pg.search(q, mode, k=20)
        # keyword search needs every free word ("seaside beacon #travel" has none): empty exactly when the embedded one is
        assert hits if mode != "keyword" else bool(hits) == bool(world.emb.search(q, mode, k=20)), (q, mode)
        for h in hits:
            bad = ops.violations(world.rows[h.id])
            assert not bad, f"{mode} {q!r} returned {h.text!r}, which breaks {bad}"
        if mode != "keyword":
            assert all(h.similarity is not None for h in hits if h.semantic_rank)
    # nothing more is dropped: semantic search with k above the corpus returns exactly what the oracle allows
    allowed = {pid for pid, row in world.rows.items() if not ops.violations(row)} - _reposts(world)
    assert {h.id for h in world.pg.search(q, "semantic", k=1000)} == allowed, q


def _reposts(world: World) -> set[str]:
    with psycopg.connect(world.url) as con:
        return {r[0] for r in con.execute("SELECT id FROM posts WHERE repost_of IS NOT NULL")}


def test_broad_filters_use_hnsw_with_the_same_results(world: World) -> None:
    """With exact search switched off (every filter counts as broad) the filtered HNSW scan returns the same posts."""
    world.pg.catch_up()
    broad = PgSearch(world.url, embedder=world.pg.embedder)
    broad.exact_limit = 0
    try:
        for q in ("lighthouse -#travel", "data center -to:alice", "#travel -lang:de", "coffee -since:2024-01-20"):
            a = [h.id for h in world.pg.search(q, "semantic", k=10)]
            b = [h.id for h in broad.search(q, "semantic", k=10)]
            assert a and set(a) == set(b), q
    finally:
        broad.close()


def test_expansion_terms_keep_the_operators(world: World) -> None:
    world.pg.catch_up()
    hits = world.pg.search("from:alice #infra", "hybrid", k=50, extra_terms=["cooling", "pager", "servers"])
    assert hits and all(_contains(h.text, "#infra") and h.author == "alice" for h in hits)


@pytest.mark.parametrize(
    "q,want",
    [
        ("$tsla", 1), ("$TSLA", 1), ("#investing", 1), ("#INVESTING", 1), ("@broker_bob", 1),
        ("https://example.com/stocks?id=42", 1), ("cafe", 2), ("café crème", 2), ("#dejeuner", 2),
        ("#Déjeuner", 2), ('"tres agreable"', 2), ("東京", 3), ("公園で散歩", 3), ('"東京で"', 3),
        ("strasse", 4), ("Straße münchen", 4), ("MUNCHEN", 4),
    ],
)  # fmt: skip
def test_entities_accents_and_cjk(world: World, q: str, want: int) -> None:
    world.pg.catch_up()
    hits = world.pg.search(q, "keyword", k=5)
    assert [h.id for h in hits] == ["x:" + SPECIAL[want - 1][0]], (q, [h.text for h in hits])
    # and the embedded index agrees
    assert [h.id for h in world.emb.search(q, "keyword", k=5)] == ["x:" + SPECIAL[want - 1][0]], q


def test_tsla_is_not_the_word_tsla(world: World) -> None:
    """A cashtag is one token, as in the embedded index: the bare word does not match it."""
    world.pg.catch_up()
    assert world.pg.search("tsla", "keyword") == world.emb.search("tsla", "keyword") == []


def _free_queries(world: World, n: int = 24) -> list[str]:
    words: dict[str, int] = {}
    for row in world.rows.values():
        for w in set(re.findall(r"[a-z]{5,}", row[2].lower())):
            words[w] = words.get(w, 0) + 1
    common = sorted((w for w, c in words.items() if 3 <= c <= 40), key=lambda w: (-words[w], w))
    singles = common[:n:2]
    pairs = [f"{a} {b}" for a, b in zip(common[1:n:4], common[3:n:4], strict=False)]
    ors = [f"{a} OR {b}" for a, b in zip(common[:8:2], common[1:8:2], strict=False)]
    ors += [" OR ".join(common[i : i + 3]) for i in range(0, 36, 3)]  # many matches: the ranking decides the top 10
    return singles + pairs + ors + ["lighthouse at night", "airships and zeppelins", "data center migration"]


def _overlap(a: list[str], b: list[str]) -> float:
    return len(set(a) & set(b)) / max(1, min(len(a), len(b))) if a or b else 1.0


def test_agrees_with_the_embedded_index(world: World) -> None:
    """Top-10 overlap with SearchIndex on the same exports. Semantic (same embedder, both near-exact on 300 posts)
    must be near-identical; keyword differs only by ranking function (ts_rank_cd vs BM25)."""
    world.pg.catch_up()
    queries = _free_queries(world) + OPERATOR_QUERIES
    means = {}
    for mode in MODES:
        laps = [
            _overlap([h.id for h in world.pg.search(q, mode, k=10)], [h.id for h in world.emb.search(q, mode, k=10)])
            for q in queries
        ]
        means[mode] = sum(laps) / len(laps)
    print(f"\ntop-10 overlap with SearchIndex over {len(queries)} queries: {means}")
    many = [q for q in queries if len(world.emb.search(q, "keyword", k=1000)) > 10]  # where the ranking decides
    laps = [
        _overlap(
            [h.id for h in world.pg.search(q, "keyword", k=10)], [h.id for h in world.emb.search(q, "keyword", k=10)]
        )
        for q in many
    ]
    print(
        f"keyword top-10 overlap over the {len(many)} queries with more than 10 matches: {sum(laps) / max(1, len(laps)):.3f}"
    )
    assert means["semantic"] >= 0.95, means
    assert means["keyword"] >= 0.6, means
    assert means["hybrid"] >= 0.6, means
    # and the match sets of keyword search agree exactly (only their order may differ)
    for q in queries:
        a = {h.id for h in world.pg.search(q, "keyword", k=1000)}
        b = {h.id for h in world.emb.search(q, "keyword", k=1000)}
        assert a == b, (q, a ^ b)


# -- replicas ---------------------------------------------------------------------------------------------------------
def test_replicas_share_new_and_forgotten_posts(pg_url: str, embedder: RememberingEmbedder, tmp_path: Path) -> None:
    ingest(_exports(tmp_path / "a", n_synthetic=30), pg_url, CorpusConfig(workers=1), show_progress=False)
    a, b = PgSearch(pg_url, embedder=embedder), PgSearch(pg_url, embedder=embedder)
    try:
        # both catch up at once: each post indexed exactly once between them
        got: list[tuple[int, int]] = []
        threads = [threading.Thread(target=lambda s=s: got.append(s.catch_up(batch=8))) for s in (a, b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        with psycopg.connect(pg_url) as con:
            n = con.execute("SELECT count(*) FROM posts WHERE repost_of IS NULL").fetchone()[0]  # type: ignore[index]
            assert con.execute("SELECT count(*) FROM search_docs").fetchone()[0] == n  # type: ignore[index]
        assert sum(x for x, _ in got) == n and a.catch_up() == b.catch_up() == (0, 0)

        # a post stored later (by "another replica": the importer) is searchable from both within a second
        new = Draft("1900000000000000001", "A quokka parade marched through Perth this morning #quokkas", T0)
        embedder.encode(["quokka parade"])  # the query's vector (warm the model outside the timed part)
        ingest([write_x_archive(tmp_path / "b" / "eve", "eve", "999", [new])], pg_url, CorpusConfig(workers=1),
               show_progress=False)  # fmt: skip
        nid = "x:" + new.id  # the store's id: network prefix + the network's id
        t0 = time.perf_counter()
        seen: dict[str, float] = {}

        def replica(name: str, s: PgSearch) -> None:
            while time.perf_counter() - t0 < 2.0:
                s.catch_up()
                if [h.id for h in s.search("quokka parade", "hybrid", k=3)][:1] == [nid]:
                    seen[name] = time.perf_counter() - t0
                    return
                time.sleep(0.02)

        threads = [threading.Thread(target=replica, args=x) for x in (("a", a), ("b", b))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        print(f"\nnew post searchable from both replicas after {seen}")
        assert set(seen) == {"a", "b"} and max(seen.values()) < 1.0, seen

        # forgotten: hidden at once (tombstone check on every hit), then erased from the shared tables
        with open_store(pg_url) as store:
            store.forget([], [nid])
        for s in (a, b):
            for mode in MODES:
                assert nid not in {h.id for h in s.search("quokka parade #quokkas", mode, k=10)}
        t0 = time.perf_counter()
        removed = [a.catch_up(), b.catch_up()]
        assert sorted(r for _, r in removed) == [0, 1] and time.perf_counter() - t0 < 1.0
        with psycopg.connect(pg_url) as con:
            assert con.execute("SELECT count(*) FROM search_docs WHERE id = %s", (nid,)).fetchone()[0] == 0  # type: ignore[index]
        for s in (a, b):
            assert not s.search("#quokkas", "keyword") and nid not in {h.id for h in s.search("quokka", "semantic")}

        # forgetting an author removes all of its posts from both
        with open_store(pg_url) as store:
            store.forget(["carol"], [])
        a.catch_up()
        for s in (a, b):
            assert s.search("lighthouse", "semantic", k=50) and "carol" not in {
                h.author for h in s.search("lighthouse", "hybrid", k=50)
            }
        assert b.catch_up() == (0, 0)
    finally:
        a.close()
        b.close()


def test_halfvec_index(pg_url: str, embedder: RememberingEmbedder, tmp_path: Path) -> None:
    """vectors="f16": halfvec column and HNSW index; results as with vector."""
    ingest(_exports(tmp_path, n_synthetic=30), pg_url, CorpusConfig(workers=1), show_progress=False)
    with PgSearch(pg_url, embedder=embedder, vectors="f16") as s:
        s.catch_up()
        assert s.stats()["vectors"] == "f16"
        hits = s.search("lighthouses -zeppelins", "semantic", k=5)
        assert hits and not [h for h in hits if _contains(h.text, "zeppelins")]
        assert hits[0].similarity is not None and 0.3 < hits[0].similarity <= 1.0
        with psycopg.connect(pg_url) as con:
            t = con.execute(
                "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'search_docs'::regclass AND attname = 'embedding'"
            ).fetchone()  # type: ignore[index]
        assert t == ("halfvec(384)",)
    with PgSearch(pg_url, embedder=embedder, vectors="f32") as again:
        assert again.vectors == "f16"  # an existing index keeps its type


def test_literals_survive_any_token(pg_url: str) -> None:
    """tsvector/tsquery literals built from tokens with quotes, backslashes and tsquery syntax in them (URLs keep
    every non-space character) round-trip exactly and match."""
    from roost.search import pgtext

    text = "see https://ex.com/a'b\\c&d|e!(f):*g<->h and it's done #ünïcode 東京タワー"
    toks = pgtext.tokens(text)
    assert "https://ex.com/a'b\\c&d|e!(f):*g<->h" in toks and "#unicode" in toks
    with psycopg.connect(pg_url) as con:
        lexemes = con.execute("SELECT tsvector_to_array(%s::tsvector)", (pgtext.tsvector(text),)).fetchone()[0]  # type: ignore[index]
        assert sorted(lexemes) == sorted(set(toks))
        for q in ("https://ex.com/a'b\\c&d|e!(f):*g<->h", "東京タワー", "#UNICODE", "it's"):
            tsq = pgtext.phrase(q)
            assert con.execute("SELECT %s::tsvector @@ %s::tsquery", (pgtext.tsvector(text), tsq)).fetchone() == (
                True,
            ), q


def test_tuned_fusion_is_kept_with_the_index_for_every_replica(world: World) -> None:
    """`roost eval search --tune` keeps the weights with the index (store_fusion): the embedded meta.json, or
    search_state, which every replica reads; [search] weights still win; None goes back to 1 : 1."""
    from roost.config import SearchConfig

    for index in (world.pg, world.emb):
        assert index.weights == (1.0, 1.0)
        index.store_fusion({"keyword": 2.0, "semantic": 0.5})
        try:
            other = (
                PgSearch(world.url, embedder=world.pg.embedder)
                if index is world.pg
                else SearchIndex(Roost.at(world.emb.dir.parent), embedder=world.emb.embedder)
            )
            assert other.weights == (2.0, 0.5)
            other.cfg = SearchConfig(keyword_weight=1.5)
            assert other.weights == (1.5, 0.5)
            index.store_fusion(None)
            assert index.weights == (1.0, 1.0)
            other.close()
        finally:
            index.store_fusion(None)
