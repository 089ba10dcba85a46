"""The erasure cascade on the PostgreSQL backend (store and search in one real PostgreSQL 18 + pgvector):
`roost forget` and `DELETE /v1/posts/{id}` on a server both remove the post from the store's tables and the
search tables, from the bytes of every relation file of the database (heap, TOAST and indexes, after the
cascade's VACUUM + CHECKPOINT), from the shards (marked stale) and from every answer, and the report names what
was trained on it. The server's WAL and backups are outside this guarantee (docs/security.md)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg
import pytest

from roost.config import CorpusConfig, SearchConfig
from roost.context import Roost
from roost.demo.writers import Draft, synthetic_drafts, write_x_archive
from roost.serve.app import ServeConfig, build_app
from roost.serve.search_api import SearchService
from tests.conftest import Cli, pg_relation_files
from tests.serve.conftest import Server

T0 = datetime(2024, 5, 1, tzinfo=UTC)
SECRETS = {
    "x:990000001": "Kwizzlebrack marmalade recipe from my grandmother, never shared before",
    "x:990000002": "Snorfleplatz is where I hid the spare key, please forget this",
}


def _rows(url: str, sql: str) -> list[tuple]:
    with psycopg.connect(url) as con:
        return con.execute(sql).fetchall()


@pytest.fixture
def pg_home(tmp_path: Path, pg_url: str) -> Cli:
    """A workspace whose store and search live in PostgreSQL (roost.toml), with a tokenizer, shards and the
    search tables built, and two secret posts among 300 others."""
    cli = Cli(tmp_path / "home")
    cli.home.mkdir()
    (cli.home / "roost.toml").write_text(f'[store]\nurl = "{pg_url}"\n\n[search]\nbackend = "postgres"\n')
    base = synthetic_drafts(300, seed=7)
    drafts = [Draft(pid.split(":")[1], t, T0 + timedelta(minutes=i)) for i, (pid, t) in enumerate(SECRETS.items())]
    cli("ingest", str(write_x_archive(tmp_path / "base", "user0", "5", base)),
        str(write_x_archive(tmp_path / "secret", "keeper", "7", drafts)))  # fmt: skip
    cli("tokenizer", "train", "--vocab-size", "600", "-q")
    cli("tokenize", "-q")
    cli("index", "-q")
    return cli


def _assert_gone(cli: Cli, url: str, pid: str) -> None:
    word = SECRETS[pid].split()[0]
    assert _rows(url, f"SELECT count(*) FROM posts WHERE id = '{pid}' OR text LIKE '%{word}%'") == [(0,)]
    assert _rows(url, f"SELECT count(*) FROM search_docs WHERE id = '{pid}'") == [(0,)]
    files = pg_relation_files(url)
    for w in (word, word.lower()):  # the text, and the lexeme in the tsvector and its GIN index
        assert w.encode() not in files, f"{w!r} is still in a relation file of the database"
    for p in cli.home.rglob("*"):
        assert not p.is_file() or word.encode() not in p.read_bytes(), p
    for mode in ("keyword", "semantic", "hybrid"):
        out = cli("search", SECRETS[pid], "--mode", mode, "--json").output
        assert pid not in out and word not in out


def test_cli_forget_on_postgres_erases_everywhere(pg_home: Cli, pg_url: str) -> None:
    pid = "x:990000001"
    word = SECRETS[pid].split()[0]
    files = pg_relation_files(pg_url)  # the check in _assert_gone can see the text and the lexeme where they were
    assert word.encode() in files and word.lower().encode() in files
    assert pid in pg_home("search", "Kwizzlebrack marmalade", "--mode", "keyword", "--json").output
    out = " ".join(pg_home("forget", "--post", pid).output.split())
    assert "forgot 1 post(s)" in out and "stale" in out and "tokenizer" in out.lower()
    _assert_gone(pg_home, pg_url, pid)
    assert "x:990000002" in pg_home("search", "Snorfleplatz spare key", "--mode", "keyword", "--json").output


@pytest.fixture
def pg_server_app(pg_home: Cli, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    monkeypatch.setenv("ROOST_STORE", pg_url)
    svc = SearchService.open(
        Roost.at(pg_home.home), CorpusConfig(workers=1), SearchConfig(backend="postgres", refresh_ms=50)
    )
    srv = Server(build_app(None, None, None, ServeConfig(), search=svc))
    yield srv
    srv.stop()
    svc.close()


def test_delete_route_on_postgres_is_the_same_cascade(pg_home: Cli, pg_url: str, pg_server_app: Server) -> None:
    pid, text = "x:990000002", SECRETS["x:990000002"]
    base = pg_server_app.url
    hits = httpx.post(f"{base}/v1/search", json={"query": text, "k": 50}, timeout=30).json()["data"]
    assert pid in {h["id"] for h in hits}
    r = httpx.delete(f"{base}/v1/posts/{pid}", timeout=60)
    assert r.status_code == 200 and r.json()["deleted"] and r.json()["stale_shards"] == ["default"], r.text
    hits = httpx.post(f"{base}/v1/search", json={"query": text, "k": 50}, timeout=30).json()["data"]
    assert pid not in {h["id"] for h in hits}
    # the running server forgot its dedup state too: the same text is a new original, not "duplicate of <pid>"
    again = {"id": "again-1", "author": "someone", "text": text, "created_at": "2024-06-01T00:00:00Z"}
    body = httpx.post(f"{base}/v1/posts", json={"posts": [again]}, timeout=30).json()
    assert body["stored"] == 1 and body["duplicates"] == 0, body
    assert _rows(pg_url, "SELECT dup_of, near_dup_of FROM posts WHERE id = 'api:again-1'") == [(None, None)]
    assert httpx.delete(f"{base}/v1/posts/api:again-1", timeout=60).status_code == 200
    pg_home("tokenize", "--rebuild-stale", "-q")
    _assert_gone(pg_home, pg_url, pid)
