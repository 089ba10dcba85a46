"""Erasure by name, second hostile pass (issue 24, findings 1, 6 and 7), on both backends through the real CLI.

The attacks and what they did before the fix:
1. 305 posts, 5 by `Jürgen Groß`; `roost forget --author "Jürgen Groß"` printed "removed 5 post(s) from the search
   index", yet tantivy still held 305 documents and the vectors file 305 vectors (tombstones kept `casefold()`,
   the keyword index `lower()`: `ß`, final `Σ` and ligatures differ). → every hard spelling below is forgotten
   from the store, the keyword index (no deleted-but-unmerged document, document count = live posts), the vectors
   (count = live posts) and every file; the CLI reports what the index really dropped.
2. Posts by `Jürgen` in NFD survived `forget --author Jürgen` (NFC) and could be ingested again. → one
   normalisation (NFKC_Casefold, `author_key`) everywhere; re-ingest of any spelling stores nothing.
3. The tombstones kept each forgotten author's name in clear text. → keyed hashes only; the name's bytes are in no
   file (SQLite) or relation file (PostgreSQL); stores written before are migrated (clear keys hashed, purged).
4. After `forget --author gridlock_gus`, other users' `RT @gridlock_gus: …` posts kept the erased text (and a
   Mastodon Announce of a forgotten author's status kept the pointer). → such reposts are erased with them, and a
   repost arriving in a later ingest is dropped; a quote post keeps its author's own words (docs/security.md).
5. An erased post stayed decodable in stale shards after `DELETE /v1/posts/{id}` (tests/test_erasure.py) → its
   tokens are overwritten in place by every erasure path (roost.data.erase).
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import unicodedata
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from roost.corpus.post import author_key
from roost.corpus.sqlite import Store
from roost.demo.writers import Draft, synthetic_drafts, write_mastodon_outbox, write_x_archive
from roost.search.keyword import KeywordIndex
from roost.search.vectors import VectorIndex
from tests.conftest import Cli, pg_relation_files

T0 = datetime(2024, 3, 1, tzinfo=UTC)
NFD = lambda s: unicodedata.normalize("NFD", s)  # noqa: E731

# (the spelling the posts carry, the spelling `roost forget` is given, a spelling a later export carries)
HARD = [
    ("Jürgen Groß", "JÜRGEN GROSS", NFD("jürgen gross")),  # ß = ss, and NFD
    ("ΟΔΥΣΣΕΥΣ", "οδυσσευς", "Οδυσσευσ"),  # final sigma
    ("ﬁona_ﬂy", "FIONA_FLY", "fiona_fly"),  # ligatures fi, fl
    (NFD("Zoë Ångström"), "ZOË ÅNGSTRÖM", "zoë ångström"),  # decomposed posts, composed request
    ("İpek", "i̇pek", "İPEK"),  # dotted capital I folds to i + combining dot
    ("Ǆemal", "ǆemal", "ǅemal"),  # titlecase digraph
    ("Ａｎｎａ＿ｗ", "anna_w", "ANNA_W"),  # fullwidth forms
    ("\u212aarl_kelvin", "KARL_KELVIN", "karl_kelvin"),  # KELVIN SIGN is K
    ("Straßburg", "STRASSBURG", "strassburg"),
    ("Øyvind", NFD("øyvind"), "ØYVIND"),
    (
        "g\u200bristle\u00adwort\ufe0f",
        "@GRISTLEWORT ",
        " gristlewort\u2060",
    ),  # zero-width space, soft hyphen, VS16, word joiner, @
    ("\u202epaulozinho\u200d", "Paulozinho", "PAULOZINHO\u200b"),  # bidi override, zero-width joiner
]


def _marker(i: int, j: int) -> str:
    return f"Vrexlomark{i}q{j}"


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def _hard_posts(spelling: int, start: int) -> list[dict]:
    return [
        {
            "id": f"p{start + 10 * i + j}",
            "author": case[spelling],
            "created_at": (T0 + timedelta(hours=i, minutes=j)).isoformat(),
            "text": f"{_marker(i, j)} notes on the harbour lights, tide tables and a late ferry, take {j}",
        }
        for i, case in enumerate(HARD)
        for j in range(2)
    ]


def _exports(root: Path) -> list[Path]:
    """Base posts by others; two posts per hard name; gridlock_gus's X archive and another user's retweets of it;
    a Mastodon author and another account's Announce of one of their statuses; a quote of gus by a third user."""
    gus = [Draft(f"77{i}", f"Gridlockmarker{i} the bypass is jammed again near exit {i}", T0 + timedelta(days=1, minutes=i))
           for i in range(3)]  # fmt: skip
    rts = [Draft(f"88{i}", f"RT @gridlock_gus: {d.text}", T0 + timedelta(days=2, minutes=i), repost_of="gridlock_gus")
           for i, d in enumerate(gus[:2])]  # fmt: skip
    quote = Draft("991", "Totally agree with this one, my own words here", T0 + timedelta(days=3),
                  extra={"quoted_status_id_str": "770", "is_quote_status": True})  # fmt: skip
    carriers = [  # another network's export: the words of gus's posts under other names
        {"id": "c1", "author": "mira", "created_at": T0.isoformat(), "repost_of": "@gridlock_gus", "text": gus[2].text},
        {
            "id": "c2",
            "author": "mira",
            "created_at": T0.isoformat(),
            "text": f"so true RT @gridlock_gus: {gus[0].text}",
        },
        {"id": "c3", "author": "mira", "created_at": T0.isoformat(), "text": f"rt @Gridlock_Gus {gus[1].text}"},
        {"id": "c4", "author": "mira", "created_at": T0.isoformat(), "text": "my own words about the bypass"},
    ]
    toot = Draft("501", "Tootmarker the ferry runs late on sundays", T0 + timedelta(days=1))
    boost = Draft("601", "", T0 + timedelta(days=2), repost_of="https://x.social/users/gus2/statuses/501")
    return [
        write_x_archive(root / "base", "user0", "5", synthetic_drafts(60, seed=3)),
        _jsonl(root / "hard.jsonl", _hard_posts(0, 0)),
        write_x_archive(root / "x1", "gridlock_gus", "77", gus),
        write_x_archive(root / "commuter", "commuter", "88", rts + [quote]),
        write_mastodon_outbox(root / "m1", "https://x.social/users/gus2", [toot]),
        write_mastodon_outbox(root / "booster", "https://x.social/users/booster", [boost]),
        _jsonl(root / "other.jsonl", carriers),
    ]


FORGET = [case[1] for case in HARD] + ["gridlock_gus", "GUS2@x.social", "@nobody_posted_this"]
CARRIED = {"x:880", "x:881", "mastodon:https://x.social/users/booster/statuses/601/activity", "generic:c1",
           "generic:c2", "generic:c3"}  # fmt: skip
NAMES = [v for case in HARD for v in (*case, author_key(case[0]))] + ["gridlock_gus", "gus2"]
MARKERS = [_marker(i, j) for i in range(len(HARD)) for j in range(2)] + ["Gridlockmarker", "Tootmarker"]


def _files(home: Path) -> bytes:
    return b"\n".join(p.read_bytes() for p in sorted(home.rglob("*")) if p.is_file() and "exports" not in p.parts)


def _needles() -> list[bytes]:
    out = set()
    for v in NAMES + MARKERS:
        for form in (v, unicodedata.normalize("NFC", v), NFD(v), v.lower(), v.casefold()):
            out.add(form.encode())
    return sorted(out)


def _hits(cli: Cli, query: str) -> list[dict]:
    """The hits `roost search QUERY --json` prints (one JSON object each)."""
    out, dec, i, hits = (
        cli("search", query, "--json", "-k", "50", "--mode", "keyword").output,
        json.JSONDecoder(),
        0,
        [],
    )
    while (i := out.find("{", i)) >= 0:
        obj, i = dec.raw_decode(out, i)
        hits.append(obj)
    return hits


def _index_counts(cli: Cli) -> tuple[int, int, int]:
    """(documents in the keyword index, vectors, searchable posts in the store) — or the PostgreSQL table's."""
    live = cli.sql("SELECT count(*) FROM posts WHERE repost_of IS NULL")[0][0]
    if cli.store is not None:
        docs = cli.sql("SELECT count(*) FROM search_docs")[0][0]
        return docs, docs, live
    kw = KeywordIndex(cli.home / "index/tantivy")
    segments = json.loads((cli.home / "index/tantivy/meta.json").read_text())["segments"]
    assert all(not (s["deletes"] or {}).get("num_deleted_docs") for s in segments), segments
    return kw.num_docs(), len(VectorIndex(cli.home / "index/vectors")), live


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    """A SQLite home with the exports ingested and indexed (copied by each test that starts from it)."""
    root = tmp_path_factory.mktemp("names")
    exports = _exports(root / "exports")
    cli = Cli(root / "home")
    cli("ingest", *map(str, exports))
    cli("index", "-q")
    return cli.home, exports


def _start(cli: Cli, built: tuple[Path, list[Path]]) -> list[Path]:
    if cli.store is None:
        shutil.copytree(built[0], cli.home, dirs_exist_ok=True)
    else:
        cli("ingest", *map(str, built[1]))
        cli("index", "-q")
    return built[1]


def test_forget_every_spelling_everywhere_on_both_backends(
    tmp_path: Path, store_cli: Cli, built: tuple[Path, list[Path]]
) -> None:
    cli = store_cli
    exports = _start(cli, built)
    before = cli.posts()
    assert {author_key(r["author"]) for r in before.values()} >= {author_key(c[0]) for c in HARD}
    # from: holds with any spelling (the same key as erasure)
    hits = _hits(cli, "from:STRASSBURG")
    assert len(hits) == 2 and all(h["author"] == "Straßburg" for h in hits)
    docs, vecs, live = _index_counts(cli)
    assert docs == vecs == live

    out = " ".join(cli("forget", *[f"--author={a}" for a in FORGET]).output.split())
    after = cli.posts()
    gone = set(before) - set(after)
    assert (
        gone == {i for i, r in before.items() if author_key(r["author"]) in {author_key(a) for a in FORGET}} | CARRIED
    )
    assert len(gone) == 2 * len(HARD) + 3 + 1 + len(CARRIED), sorted(gone)
    assert "x:991" in after and "generic:c4" in after  # a quote, and mira's own words, are kept
    assert f"forgot {len(gone)} post(s)" in out and f"{len(CARRIED)} repost(s) by other users" in out
    assert "no post by '@nobody_posted_this'" in out
    searchable = len([i for i in gone if not before[i]["repost_of"]])
    assert f"removed {searchable} post(s) from the search index" in out, out
    docs, vecs, live = _index_counts(cli)
    assert docs == vecs == live == len([r for r in after.values() if not r["repost_of"]])

    blob = _files(cli.home) + (b"" if cli.store is None else pg_relation_files(cli.store))
    for needle in _needles():
        assert needle not in blob, f"{needle!r} is still in a file after the erasure"
    keys = [k for (k,) in cli.sql("SELECT key FROM tombstones")]
    assert len(keys) == len(FORGET) and all(len(k) == 64 for k in keys)

    # nothing comes back: the same exports, and every third spelling and a new retweet in later exports
    later = _jsonl(tmp_path / "later" / "hard.jsonl", _hard_posts(2, 1000))
    rt = write_x_archive(tmp_path / "later" / "rt", "newcomer", "99",
                         [Draft("9901", "RT @GRIDLOCK_GUS: the bypass again", T0 + timedelta(days=5),
                                repost_of="GRIDLOCK_GUS")])  # fmt: skip
    carried = _jsonl(tmp_path / "later" / "c.jsonl", [{"id": "c9", "author": "zed", "created_at": T0.isoformat(),
                                                       "repost_of": "@gridlock_gus", "text": "Gridlockmarker9"}])  # fmt: skip
    again = " ".join(cli("ingest", *map(str, exports), str(later), str(rt), str(carried)).output.split())
    assert set(cli.posts()) == set(after), again
    assert _hits(cli, "from:STRAẞBURG") == []


@given(st.text(max_size=24))
def test_author_key_is_one_closed_normalisation(s: str) -> None:
    k = author_key(s)
    assert author_key(k) == k  # idempotent: a key is its own key
    for form in ("NFC", "NFD", "NFKC", "NFKD"):
        assert author_key(unicodedata.normalize(form, s)) == k  # every normal form of a name is one name
    assert author_key(s.casefold()) == k and author_key(s.upper().casefold()) == author_key(s.upper())


def _v2_store(path: Path) -> None:
    """Turn a fresh store into what roost wrote before (schema 2): clear-text tombstones, no erasure log."""
    with Store(path) as s:
        s.db.execute("DELETE FROM tombstones")
        s.db.execute("INSERT INTO tombstones VALUES ('author', 'jürgen gross', '2024-01-01T00:00:00Z')")
        s.db.execute("INSERT INTO tombstones VALUES ('post', 'mastodon:https://x.social/users/olga/statuses/9', 'x')")
        # what v2's rules missed: posts by a decomposed spelling, and other users' retweets
        s.db.execute("INSERT INTO tombstones VALUES ('author', 'zoë ångström', '2024-01-01T00:00:00Z')")
        s.db.execute("INSERT INTO tombstones VALUES ('author', 'gridlock_gus', '2024-01-01T00:00:00Z')")
        s.db.execute("DROP TABLE erased")
        s.db.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
        s.db.execute("DELETE FROM meta WHERE key = 'tomb_secret'")
        s.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def test_an_older_sqlite_home_is_migrated_and_its_index_rebuilt(cli: Cli, built: tuple[Path, list[Path]]) -> None:
    exports = _start(cli, built)
    db = cli.home / "corpus.db"
    # the old bug's leftovers: rows erased from the store while the index (keyed by lower()) kept them
    con = sqlite3.connect(db)
    con.execute("DELETE FROM posts WHERE author = 'Jürgen Groß'")
    con.commit()
    con.close()
    _v2_store(db)
    meta = json.loads((cli.home / "index/meta.json").read_text())
    for k in ("keys", "erased"):
        meta.pop(k)
    (cli.home / "index/meta.json").write_text(json.dumps({**meta, "tomb_rowid": 1}))
    assert b"olga" in db.read_bytes()  # the check below can fail

    assert cli.posts("author = 'gridlock_gus'")  # v2 left them (the check below can fail)
    cli("ingest", *map(str, exports))  # opens (and migrates) the store: the forgotten author stays forgotten
    left = cli.posts()
    assert not [r for r in left.values() if author_key(r["author"]) in {"jürgen gross", "zoë ångström", "gridlock_gus"}]
    assert not CARRIED - {"mastodon:https://x.social/users/booster/statuses/601/activity"} & set(left)
    assert all(len(k) == 64 for (k,) in cli.sql("SELECT key FROM tombstones"))
    for f in (db, db.with_name("corpus.db-wal")):
        assert not f.exists() or (b"olga" not in f.read_bytes() and b"j\xc3\xbcrgen gross" not in f.read_bytes())
    cli("index", "-q")  # catches up: rewritten with today's keys, the leftovers dropped
    docs, vecs, live = _index_counts(cli)
    assert docs == vecs == live
    assert json.loads((cli.home / "index/meta.json").read_text())["keys"] == 2
    assert len(_hits(cli, "from:ΟΔΥΣΣΕΥΣ")) == 2 and _hits(cli, "from:ZOË_ÅNGSTRÖM") == []


def test_an_older_postgres_store_is_migrated(tmp_path: Path, pg_url: str) -> None:
    from roost.config import CorpusConfig
    from roost.corpus.ingest import ingest
    from roost.corpus.postgres import PgStore

    ingest([_jsonl(tmp_path / "hard.jsonl", _hard_posts(0, 0))], pg_url, CorpusConfig(workers=1), show_progress=False)
    with psycopg.connect(pg_url, autocommit=True) as con:  # back to migration 4: clear-text tombstones
        con.execute("DROP TABLE store_secret, erased")
        con.execute("DELETE FROM schema_migrations WHERE version = 5")
        con.execute("UPDATE posts SET author_key = lower(author)")  # as 0004's writers computed it, near enough
        for key in ("olgaklartext", "zoë ångström"):  # the second: v4 missed its decomposed posts
            con.execute("INSERT INTO tombstones (kind, key, forgotten_at) VALUES ('author', %s, 'x')", (key,))
        assert con.execute("SELECT count(*) FROM posts WHERE author = %s", (HARD[3][0],)).fetchone() == (2,)
    assert b"olgaklartext" in pg_relation_files(pg_url)
    with PgStore(pg_url) as s:  # migrates: hashes, erases again by today's rules, rewrites the tombstones table
        assert s.dead([], ["OlgaKlartext"]) == (set(), {"OlgaKlartext"})
        assert s.erase_pending() == []
    assert b"olgaklartext" not in pg_relation_files(pg_url)
    with psycopg.connect(pg_url) as con:
        assert con.execute("SELECT count(*) FROM posts WHERE author = %s", (HARD[3][0],)).fetchone() == (0,)
    with psycopg.connect(pg_url) as con:
        assert [len(k) for (k,) in con.execute("SELECT key FROM tombstones")] == [64, 64]


def test_a_store_copied_into_another_home_keeps_refusing_what_it_forgot(tmp_path: Path, cli: Cli) -> None:
    """The tombstone key lives with the store: a restored or copied corpus.db (without the home's .roost/) still
    refuses what it forgot, and deleting the home's secret never makes erasure impossible."""
    cli("ingest", str(_jsonl(tmp_path / "a.jsonl", _hard_posts(0, 0))))
    cli("forget", "--author", "Straßburg")
    other = Cli(tmp_path / "other")
    other.home.mkdir()
    (other.home / "corpus.db").write_bytes((cli.home / "corpus.db").read_bytes())
    assert "forgotten" in other("ingest", str(tmp_path / "a.jsonl")).output
    assert not other.posts("author = 'Straßburg'")
    assert "forgot 2 post(s)" in other("forget", "--author", "STRASSBURG", "--author", "ǅEMAL").output


@pytest.mark.parametrize("kind", ["x", "mastodon"])
def test_reposts_name_whose_post_they_carry(kind: str) -> None:
    from roost.corpus.post import reposted_authors as by

    if kind == "x":
        assert by("@Gus") == ["Gus"] and by("x:1", "RT @gus_2: hi") == ["gus_2"] and by(None, "rt @gus hi") == ["gus"]
        assert by(None, "so true RT @a: x MT @b: y") == ["a", "b"] and by(None, "paRT @gus") == []
        assert by("x:1", "RT @" + "a" * 50_000) == []  # bounded: no handle that long, no backtracking
    else:
        assert by("mastodon:https://x.social/users/gus2/statuses/1") == ["gus2@x.social"]
        assert by("mastodon:https://x.social/@gus2/1") == ["gus2@x.social"]
        assert by("bsky:at://did:plc:abc/app.bsky.feed.post/1") == ["did:plc:abc"]
