"""Search over a real store: analyser (tags, mentions, URLs, diacritics, CJK), X-style operators, modes, filtered
semantic recall, forget, and bad queries."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from roost.context import Roost
from roost.errors import UsageError
from roost.search.embedded import SearchIndex
from roost.search.query import parse
from tests.conftest import run_roost


@pytest.fixture(scope="module")
def home(search_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    h = tmp_path_factory.mktemp("search") / "home"
    shutil.copytree(search_home, h)
    return h


@pytest.fixture(scope="module")
def idx(home: Path) -> SearchIndex:
    return SearchIndex(Roost.at(home))


def _rows(home: Path, where: str) -> list[tuple[str, str, str]]:
    con = sqlite3.connect(home / "corpus.db")
    rows = con.execute(f"SELECT id, author, text FROM posts WHERE {where}").fetchall()
    con.close()
    return rows


def test_analyser_keeps_entities_and_folds(idx: SearchIndex, home: Path) -> None:
    for q, needle in (
        ("#denews", "#denews"),
        ("@friend_0", "@friend_0"),
        ("punktlich", "pünktlich"),
        ("東京", "東京"),
        ("https://example.org/3", "https://example.org/3"),
        ("Москве", "Москве"),
    ):
        hits = idx.search(q, "keyword", k=50)
        assert hits, q
        assert all(needle.lower() in h.text.lower() for h in hits), q


def test_operators(idx: SearchIndex, home: Path) -> None:
    hits = idx.search("from:user2", "keyword", k=1000)
    assert hits and {h.author for h in hits} == {"user2"}
    assert len(hits) == len(_rows(home, "author = 'user2' AND repost_of IS NULL"))
    de = idx.search("lang:de", "hybrid", k=1000)
    assert de and all("Berlin" in h.text for h in de)
    assert not [h for h in idx.search("Berlin -Kaffee", "keyword", k=100) if "Kaffee" in h.text]
    both = {h.id for h in idx.search("Berlin OR Москве", "keyword", k=100)}
    assert both == {h.id for h in idx.search("Berlin", "keyword", k=100)} | {
        h.id for h in idx.search("Москве", "keyword", k=100)
    }
    replies = idx.search("filter:replies", "keyword", k=1000)
    assert replies and len(replies) == len(_rows(home, "reply_to IS NOT NULL AND repost_of IS NULL"))
    assert not {h.id for h in replies} & {h.id for h in idx.search("-filter:replies", "keyword", k=5000)}
    since = idx.search("since:2024-03-01 until:2024-03-02", "keyword", k=1000)
    assert since and all(h.created_at.startswith("2024-03-01") for h in since)
    assert idx.search('"Straßenbahn kommt"', "keyword", k=5)


@pytest.mark.parametrize("junk", ["©", "\x19©\r", "¹\x1b", "§ ¶"])
def test_words_with_no_searchable_token_are_dropped(idx: SearchIndex, junk: str) -> None:
    """A word the analyser reduces to nothing matches nothing alone and is ignored beside real words (tantivy
    rejects `"©" AND "x"` outright; found by schemathesis as a 500)."""
    assert idx.search(junk, "keyword", k=10) == []
    berlin = [h.id for h in idx.search("Berlin", "keyword", k=100)]
    assert berlin and [h.id for h in idx.search(f"Berlin {junk}", "keyword", k=100)] == berlin
    assert [h.id for h in idx.search(f"Berlin -{junk.split()[0]}", "keyword", k=100)] == berlin
    assert len(idx.search(junk, "hybrid", k=5)) == 5  # the semantic side still answers


def test_modes_and_filtered_semantic_recall(idx: SearchIndex) -> None:
    for mode in ("keyword", "semantic", "hybrid"):
        hits = idx.search("Berlin Kaffee", mode, k=10)
        assert hits and all(a.score >= b.score for a, b in zip(hits, hits[1:], strict=False))
    narrow = parse("weather from:user0")
    got = [h.id for h in idx.search(narrow, "semantic", k=10)]
    v = idx.embedder.encode([narrow.text])[0]
    allowed = idx.keyword.filter_rowids(narrow, cap=10**6)
    exact = idx.vectors.exact(v, 10, among=allowed)
    con = sqlite3.connect(idx.db)
    want = [con.execute("SELECT id FROM posts WHERE rowid = ?", (r,)).fetchone()[0] for r, _ in exact]
    con.close()
    assert got == want  # recall 1.0 under a narrow filter


def test_forget_removes_from_results(home: Path, tmp_path: Path) -> None:
    h = tmp_path / "h"
    shutil.copytree(home, h)
    idx = SearchIndex(Roost.at(h))
    target = idx.search("#denews", "keyword", k=1)[0]
    run_roost("--home", str(h), "forget", "--post", target.id)
    idx2 = SearchIndex(Roost.at(h))
    for mode in ("keyword", "semantic", "hybrid"):
        assert target.id not in {x.id for x in idx2.search("#denews", mode, k=100)}
    assert target.id not in {pid for pid, _, _ in idx2.keyword.search(parse("#denews"), 100)}  # gone from the index


@pytest.mark.parametrize(
    "q,msg",
    [
        ("", "empty"),
        ("x" * 1001, "limit"),
        ('"open', "unbalanced"),
        ("since:2024-13-01 x", "YYYY-MM-DD"),
        ("filter:links x", "filter:replies"),
        ("from: x", "needs a value"),
        ("-onlyexcluded", "nothing to search"),
        ("lang:german x", "language code"),
    ],
)
def test_bad_queries(q: str, msg: str) -> None:
    with pytest.raises(UsageError, match=msg):
        parse(q)


def test_cli_search(home: Path) -> None:
    out = run_roost("--home", str(home), "search", "#denews", "--mode", "keyword", "-k", "3").stdout
    assert "#denews" in out
    bad = run_roost("--home", str(home), "search", "until:yesterday x", check=False)
    assert bad.returncode == 2 and "YYYY-MM-DD" in bad.stderr and "Traceback" not in bad.stderr


def test_search_index_is_a_backend(idx: SearchIndex) -> None:
    from roost.search.backend import SearchBackend

    assert isinstance(idx, SearchBackend)


def test_search_settings_in_roost_toml_are_honoured(search_home: Path, tmp_path: Path) -> None:
    """`[search] k` and `mode` in roost.toml hold unless a flag overrides them (CLI defaults do not win)."""
    from tests.search.conftest import copy_home

    home = copy_home(search_home, tmp_path / "h")
    (home / "roost.toml").write_text('[search]\nk = 3\nmode = "keyword"\n')
    out = run_roost("--home", str(home), "search", "rain", "--json").stdout
    assert out.count('"id"') == 3 and out.count('"semantic_rank": null') == 3  # k and mode from roost.toml
    flags = run_roost("--home", str(home), "search", "rain", "--json", "-k", "5", "--mode", "hybrid").stdout
    assert flags.count('"id"') == 5 and flags.count('"semantic_rank": null') < 5  # flags win over the file
