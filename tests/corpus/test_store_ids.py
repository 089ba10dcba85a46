"""Row ids are never reused (a post stored after the newest was deleted is indexed), an old (v1) store migrates
in place keeping its ids, and authors match one way everywhere (X handles are case-insensitive)."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

from roost.corpus.sqlite import SCHEMA_VERSION, Store
from roost.demo.writers import Draft, write_x_archive
from tests.conftest import Cli

T0 = datetime(2024, 1, 1, tzinfo=UTC)
TEXTS = [
    "Morning tram was late again, the whole platform sighed at once",
    "Fresh bread from the corner bakery is the best part of Saturday",
    "Watched the storm roll in over the harbour from the lighthouse",
]


def _archive(root: Path, user: str, texts: list[str], first_id: int) -> Path:
    drafts = [Draft(str(first_id + i), t, T0 + timedelta(minutes=i)) for i, t in enumerate(texts)]
    return write_x_archive(root / f"{user}-{first_id}", user, "42", drafts)


def test_a_post_after_the_deleted_newest_gets_a_new_id_and_is_indexed(tmp_path: Path, store_cli: Cli) -> None:
    cli = store_cli
    cli("ingest", str(_archive(tmp_path, "alice", TEXTS, 1000)))
    cli("index")
    top = cli.sql("SELECT max(seq) FROM posts")[0][0]
    cli("forget", "--post", "x:1002")  # the newest row
    cli("ingest", str(_archive(tmp_path, "bob", ["Zeppelins over the old harbour at dawn, quiet and huge"], 5000)))
    new = cli.sql("SELECT seq FROM posts WHERE id = 'x:5000'")[0][0]
    assert new > top  # never the deleted row's id
    out = " ".join(cli("index").output.split())  # ingest already caught the index up; nothing left to add
    assert "the index: 3 posts (+0 -0)" in out
    hits = cli("search", "zeppelins harbour", "--mode", "keyword", "--json").output
    assert "x:5000" in hits


def test_v1_store_migrates_keeping_ids(tmp_path: Path) -> None:
    db = tmp_path / "corpus.db"
    with Store(db) as s:
        schema = s.db.execute("SELECT sql FROM sqlite_master WHERE name='posts'").fetchone()[0]
    assert "AUTOINCREMENT" in schema
    # an old store: posts keyed by id with an implicit rowid, one row deleted at the tail
    old = tmp_path / "old.db"
    con = sqlite3.connect(old)
    v1 = schema.replace("seq INTEGER PRIMARY KEY AUTOINCREMENT,\n", "").replace("NOT NULL UNIQUE", "PRIMARY KEY")
    con.executescript("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);" + v1 + ";")
    con.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    cols = "id, author, created_at, text, text_scrubbed, lang, hashtags, mentions, urls, visibility, source"
    for i in range(3):
        con.execute(
            f"INSERT INTO posts ({cols}) VALUES (?, 'a', 't', 'x', 'x', 'en', '[]', '[]', '[]', 'public', 'x')",
            (f"x:{i}",),
        )
    con.execute("DELETE FROM posts WHERE id = 'x:2'")
    con.commit()
    before = con.execute("SELECT rowid, id FROM posts ORDER BY rowid").fetchall()
    con.close()
    with Store(old) as s:
        assert s.db.execute("SELECT seq, id FROM posts ORDER BY seq").fetchall() == before
        assert s.db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
        s.db.execute(
            f"INSERT INTO posts ({cols}) VALUES ('x:9', 'a', 't', 'y', 'y', 'en', '[]', '[]', '[]', 'public', 'x')"
        )
        assert s.db.execute("SELECT seq FROM posts WHERE id = 'x:9'").fetchone()[0] > 3
    with Store(old) as s:  # opening again changes nothing
        assert s.db.execute("SELECT count(*) FROM posts").fetchone()[0] == 3


def test_forget_author_is_case_insensitive_everywhere(tmp_path: Path, store_cli: Cli) -> None:
    cli = store_cli
    cli("ingest", str(_archive(tmp_path, "TidePool", TEXTS, 1000)))
    cli("index")
    out = cli("forget", "--author", "tidepool").output  # X handles are case-insensitive
    assert "forgot 3 post(s)" in out
    assert cli.sql("SELECT count(*) FROM posts") == [(0,)]
    again = cli(
        "ingest", str(_archive(tmp_path, "TIDEPOOL", ["A brand new post from the same person, other case"], 7000))
    )
    assert "forgotten (not resurrected)" in again.output
    assert cli.sql("SELECT count(*) FROM posts") == [(0,)]


def test_forget_non_ascii_author_any_case(tmp_path: Path, store_cli: Cli) -> None:
    cli = store_cli
    """One author rule in SQL and Python (str.casefold), not SQLite's ASCII-only NOCASE."""
    for i, who in enumerate(("Élodie", "ÉLODIE", "Straße")):
        cli("ingest", str(_archive(tmp_path, who, [f"{TEXTS[i]} ({who})"], 1000 + 10 * i)))
    assert "forgot 2 post(s)" in cli("forget", "--author", "élodie").output
    assert "forgot 1 post(s)" in cli("forget", "--author", "STRASSE").output  # casefold: ß == ss
    assert cli.sql("SELECT count(*) FROM posts") == [(0,)]
    bad = cli("forget", "--author", " ", ok=False)
    assert bad.exit_code == 2 and "names nothing" in bad.output
