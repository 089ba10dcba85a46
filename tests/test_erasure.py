"""One erasure cascade, through every path: `roost forget` (no server), `DELETE /v1/posts/{id}` on a running server,
and `roost forget` from another process while a server runs. Afterwards the erased text is in none of the store
file, its WAL, the index files (keyword and vector bytes), the shard sets (or they are marked stale), nor in the
server's answers (search, duplicate reports); the report names what was trained on the posts."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pytest

from roost.config import CorpusConfig, SearchConfig
from roost.context import Roost
from roost.demo.writers import Draft, write_x_archive
from roost.serve.app import ServeConfig, build_app
from roost.serve.search_api import SearchService
from tests.conftest import run_roost
from tests.data.conftest import make_store
from tests.serve.conftest import Server

T0 = datetime(2024, 5, 1, tzinfo=UTC)
SECRETS = {
    "x:990000001": "Kwizzlebrack marmalade recipe from my grandmother, never shared before",
    "x:990000002": "Snorfleplatz is where I hid the spare key, please forget this",
}


def _bytes_under(home: Path) -> bytes:
    parts = []
    for p in sorted(home.rglob("*")):
        if p.is_file() and "exports" not in p.parts:
            parts.append(p.read_bytes())
    return b"\n".join(parts)


def _vector(home: Path, rowid: int) -> bytes:
    keys, vecs = np.load(home / "index/vectors/keys.npy"), np.load(home / "index/vectors/vecs.npy")
    return vecs[int(np.nonzero(keys == rowid)[0][0])].tobytes()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A real workspace: store (with two secret posts), tokenizer, shards, search index."""
    h = tmp_path / "home"
    base = make_store(tmp_path / "base", n=300, authors=3)
    h.mkdir()
    (h / "corpus.db").write_bytes(base.read_bytes())
    drafts = [Draft(pid.split(":")[1], t, T0 + timedelta(minutes=i)) for i, (pid, t) in enumerate(SECRETS.items())]
    run_roost("--home", str(h), "ingest", str(write_x_archive(tmp_path / "secret", "keeper", "7", drafts)))
    run_roost("--home", str(h), "tokenizer", "train", "--vocab-size", "600", "-q")
    run_roost("--home", str(h), "tokenize", "-q")
    run_roost("--home", str(h), "index", "-q")
    return h


@pytest.fixture
def server(home: Path) -> Iterator[tuple[Server, SearchService]]:
    svc = SearchService.open(Roost.at(home), CorpusConfig(workers=1), SearchConfig(refresh_ms=50))
    srv = Server(build_app(None, None, None, ServeConfig(), search=svc))
    yield srv, svc
    srv.stop()
    svc.close()


def _rowid(home: Path, pid: str) -> int:
    return sqlite3.connect(home / "corpus.db").execute("SELECT rowid FROM posts WHERE id = ?", (pid,)).fetchone()[0]


def _assert_gone(home: Path, text: str, vec: bytes) -> None:
    blob = _bytes_under(home)
    word = text.split()[0].encode()
    assert word not in blob, "the erased text is still in a file under the home"
    assert vec not in blob, "the erased post's embedding bytes are still in the vector index"
    # tantivy compresses its doc store, so the bytes check above cannot see into it: a deleted document stays in
    # its segment until a merge, which meta.json shows as "deletes"; after an erasure no segment may have any
    segments = json.loads((home / "index/tantivy/meta.json").read_text())["segments"]
    assert all(not (s["deletes"] or {}).get("num_deleted_docs") for s in segments), segments
    wal = home / "corpus.db-wal"
    assert not wal.exists() or word not in wal.read_bytes()


def test_cli_forget_erases_everywhere_and_reports_what_was_trained(home: Path) -> None:
    pid, text = "x:990000001", SECRETS["x:990000001"]
    vec = _vector(home, _rowid(home, pid))
    blob = _bytes_under(home)
    assert text.split()[0].encode() in blob and vec in blob  # present before: the checks below can fail
    run_roost("--home", str(home), "train", "--name", "r", "--preset", "tiny", "--steps", "1", "--seq-len", "64",
              "--batch-size", "2", "--dtype", "fp32", "-q")  # fmt: skip
    out = " ".join(run_roost("--home", str(home), "forget", "--post", pid).stdout.split())
    assert "forgot 1 post(s)" in out and "removed 1 post(s) from the search index" in out
    assert "shard set default held forgotten posts: their tokens overwritten in place, set marked stale" in out
    assert (
        "tokenizers built from these posts" in out
        and "runs built from these posts (retrain to be rid of them): r" in out
    )
    assert "models built from these posts (retrain to be rid of them): r" in out
    manifest = json.loads((home / "shards/default/manifest.json").read_text())
    assert manifest["stale"]["posts"] == 1 and manifest["stale"]["redacted"] is True
    shard_ids = (home / "shards/default/train.ids").read_text() + (home / "shards/default/val.ids").read_text()
    assert pid not in shard_ids  # overwritten in place at once: no need to wait for a rebuild
    _assert_gone(home, text, vec)
    assert "ok" in run_roost("--home", str(home), "shards", "verify", "default").stdout.lower()
    run_roost("--home", str(home), "tokenize", "--rebuild-stale", "-q")
    _assert_gone(home, text, vec)
    hits = run_roost("--home", str(home), "search", text, "--json").stdout
    assert pid not in hits


def test_delete_route_is_the_same_cascade(home: Path, server: tuple[Server, SearchService]) -> None:
    srv, _ = server
    pid, text = "x:990000002", SECRETS["x:990000002"]
    vec = _vector(home, _rowid(home, pid))
    r = httpx.delete(f"{srv.url}/v1/posts/{pid}", timeout=30)
    assert r.status_code == 200 and r.json()["deleted"] and r.json()["stale_shards"] == ["default"]
    assert json.loads((home / "shards/default/manifest.json").read_text())["stale"]["example"] == pid
    hits = httpx.post(f"{srv.url}/v1/search", json={"query": text, "k": 50}, timeout=30).json()["data"]
    assert pid not in {h["id"] for h in hits}
    # the running server forgot its dedup state too: the same text is a new original, not "duplicate of <pid>"
    again = {"id": "again-1", "author": "someone", "text": text, "created_at": "2024-06-01T00:00:00Z"}
    body = httpx.post(f"{srv.url}/v1/posts", json={"posts": [again]}, timeout=30).json()
    assert body["stored"] == 1 and body["duplicates"] == 0, body
    row = sqlite3.connect(home / "corpus.db").execute("SELECT dup_of, near_dup_of FROM posts WHERE id='api:again-1'")
    assert row.fetchone() == (None, None)
    httpx.delete(f"{srv.url}/v1/posts/api:again-1", timeout=30)
    run_roost("--home", str(home), "tokenize", "--rebuild-stale", "-q")
    srv_svc = server[1]
    srv_svc.index.save()
    _assert_gone(home, text, vec)


def test_forget_from_another_process_while_a_server_runs(home: Path, server: tuple[Server, SearchService]) -> None:
    srv, svc = server
    pid, text = "x:990000001", SECRETS["x:990000001"]
    vec = _vector(home, _rowid(home, pid))
    out = " ".join(run_roost("--home", str(home), "forget", "--author", "KEEPER").stdout.split())  # any case
    # whoever takes the keyword index's writer first erases the posts from the files: this process, or the
    # server's live indexer (then the CLI says so); the server follows the tombstones either way
    assert "forgot 2 post(s)" in out
    assert any(
        m in out
        for m in (
            "erases them from it within a second",  # the server held the index's writer
            "removed 2 post(s) from the search index",  # this process took it first
            "the search index holds none of them",  # the server's live indexer had already dropped them
        )
    ), out
    assert svc.indexer.flush(5.0)  # the server's live indexer has followed the tombstones
    hits = httpx.post(f"{srv.url}/v1/search", json={"query": text, "k": 50}, timeout=30).json()["data"]
    assert pid not in {h["id"] for h in hits}
    body = httpx.post(
        f"{srv.url}/v1/posts",
        json={"posts": [{"id": "copy", "author": "z", "text": text, "created_at": "2024-06-01T00:00:00Z"}]},
        timeout=30,
    ).json()
    assert body["stored"] == 1 and body["duplicates"] == 0, body  # not "duplicate of" the forgotten post
    httpx.delete(f"{srv.url}/v1/posts/api:copy", timeout=30)
    run_roost("--home", str(home), "tokenize", "--rebuild-stale", "-q")
    _assert_gone(home, text, vec)


def test_api_cannot_claim_an_importers_id(home: Path, server: tuple[Server, SearchService]) -> None:
    srv, _ = server
    fake = {"id": "x:990000001", "author": "mallory", "text": "I own this id now", "created_at": "2024-06-01T00:00:00Z"}
    body = httpx.post(f"{srv.url}/v1/posts", json={"posts": [fake]}, timeout=30).json()
    assert body["stored"] == 1
    con = sqlite3.connect(home / "corpus.db")
    assert con.execute("SELECT author FROM posts WHERE id = 'x:990000001'").fetchone() == ("keeper",)
    assert con.execute("SELECT author FROM posts WHERE id = 'api:x:990000001'").fetchone() == ("mallory",)


def test_delete_takes_ids_as_post_stored_them(home: Path, server: tuple[Server, SearchService]) -> None:
    srv, _ = server
    p = {
        "id": "r1",
        "author": "z",
        "text": "Quietly blooming cactus on the windowsill",
        "created_at": "2024-06-01T00:00:00Z",
    }
    assert httpx.post(f"{srv.url}/v1/posts", json={"posts": [p]}, timeout=30).json()["stored"] == 1
    r = httpx.delete(f"{srv.url}/v1/posts/r1", timeout=30)  # the bare id POST was given maps to api:r1
    assert r.status_code == 200 and r.json()["deleted"] and r.json()["id"] == "api:r1"
    for bad in ("%20", "%00"):
        r = httpx.delete(f"{srv.url}/v1/posts/{bad}", timeout=30)
        assert r.status_code == 400 and r.json()["error"]["param"] == "post_id"
