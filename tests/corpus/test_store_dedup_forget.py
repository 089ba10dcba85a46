"""Dedup (exact, near, reposts), idempotent re-ingest, forget + tombstones, stats — through the real CLI, on both
store backends (`store_cli`: SQLite, and a real PostgreSQL)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

from roost.corpus.dedup import NearDupIndex, signature
from roost.demo.writers import Draft, write_x_archive
from tests.conftest import Cli, posts

T0 = datetime(2024, 1, 1, tzinfo=UTC)
BASE = "The quick brown fox jumps over the lazy dog while the band plays on in the park tonight"


def _archive(root: Path, user: str, texts: list[str], first_id: int) -> Path:
    drafts = [Draft(str(first_id + i), t, T0 + timedelta(minutes=first_id % 1000 + i)) for i, t in enumerate(texts)]
    return write_x_archive(root / user, user, str(first_id), drafts)


def test_near_dup_index_threshold() -> None:
    idx = NearDupIndex(0.8, 64)
    a = signature(BASE, 5, 64)
    idx.add("a", a)
    assert idx.match(signature(BASE + "!!", 5, 64)) == "a"
    assert idx.match(signature(BASE.upper(), 5, 64)) == "a"  # case folded
    assert idx.match(signature("An entirely different sentence about gardening and tomatoes.", 5, 64)) is None
    idx.remove("a")
    assert idx.match(a) is None


def test_exact_near_repost_and_idempotent(tmp_path: Path, store_cli: Cli) -> None:
    cli = store_cli
    a = _archive(tmp_path, "alice", [BASE, "totally unrelated words about cooking pasta at home"], 1000)
    b = _archive(tmp_path, "bob", [BASE, BASE + " lol", f"RT @alice: {BASE}"], 2000)
    cli("ingest", str(a), str(b))
    rows = cli.posts()
    assert rows["x:2000"]["dup_of"] == "x:1000"
    assert rows["x:2001"]["near_dup_of"] == "x:1000" and rows["x:2001"]["dup_of"] is None
    assert rows["x:2002"]["repost_of"] == "@alice" and rows["x:2002"]["dup_of"] is None  # reposts never count
    assert rows["x:1000"]["dup_of"] is None and rows["x:1001"]["near_dup_of"] is None
    before = cli.sql("SELECT * FROM posts ORDER BY id")
    again = cli("ingest", str(a), str(b))
    assert "already in store" in again.output
    after = cli.sql("SELECT * FROM posts ORDER BY id")
    assert before == after
    # near-dups are found across runs too (state is rebuilt from the store)
    c = _archive(tmp_path, "carol", [BASE + "!!!"], 3000)
    cli("ingest", str(c))
    assert cli.posts()["x:3000"]["near_dup_of"] == "x:1000"


def test_threshold_setting_changes_decisions(tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    a = _archive(tmp_path, "alice", [BASE, BASE.replace("lazy dog", "sleepy cat")], 1000)
    bad = cli("ingest", "--near-dup-threshold", "1.0", str(a), ok=False)
    assert bad.exit_code == 2 and "near_dup_threshold" in bad.output
    cli("ingest", "--near-dup-threshold", "0.95", str(a))
    assert posts(cli.home / "corpus.db")["x:1001"]["near_dup_of"] is None
    (cli.home / "corpus.db").unlink()
    cli("ingest", "--near-dup-threshold", "0.5", str(a))
    assert posts(cli.home / "corpus.db")["x:1001"]["near_dup_of"] == "x:1000"


def test_forget_author_and_post_never_resurrect(tmp_path: Path, store_cli: Cli) -> None:
    cli = store_cli
    a = _archive(tmp_path, "alice", [BASE, "alice's second post about her cat and the weather"], 1000)
    b = _archive(tmp_path, "bob", [BASE, "bob writes about trains and timetables", BASE + " indeed"], 2000)
    c = _archive(tmp_path, "carol", [BASE], 3000)
    cli("ingest", str(a), str(b), str(c))
    out = cli("forget", "--author", "alice", "--post", "x:2001")
    assert "forgot 3 post(s)" in out.output
    rows = cli.posts()
    assert not any(r["author"] == "alice" for r in rows.values()) and "x:2001" not in rows
    # the copies of alice's post get a new original among themselves (the earliest), not a dangling pointer
    assert rows["x:2000"]["dup_of"] is None and rows["x:3000"]["dup_of"] == "x:2000"
    assert rows["x:2002"]["near_dup_of"] is None
    assert cli.sql("SELECT count(*) FROM signatures WHERE post_id LIKE 'x:100%'") == [(0,)]
    again = cli("ingest", str(a), str(b), str(c))
    assert "forgotten (not resurrected)" in again.output
    rows = cli.posts()
    assert not any(r["author"] == "alice" for r in rows.values()) and "x:2001" not in rows
    stats = cli("corpus", "stats").output
    assert "1 author(s)" in stats and "1 post(s)" in stats


def test_forget_needs_a_target(cli) -> None:  # type: ignore[no-untyped-def]
    result = cli("forget", ok=False)
    assert result.exit_code == 2 and "--author" in result.output


def test_stats_counts_match_the_store(tmp_path: Path, store_cli: Cli) -> None:
    cli = store_cli
    a = _archive(
        tmp_path, "alice", [BASE, BASE, "mail me: someone@example.com", "Das ist ein deutscher Satz über Züge"], 1000
    )
    cli("ingest", str(a))
    out = cli("corpus", "stats").output
    n = cli.sql("SELECT count(*) FROM posts")[0][0]
    assert n == 4 and re.search(rf"posts\s*│\s*{n}\s*│", out.replace("┃", "│")), out
    rows = cli.posts()
    assert rows["x:1002"]["text_scrubbed"] == "mail me: <EMAIL>"
    assert rows["x:1002"]["text"] == "mail me: someone@example.com"
    assert rows["x:1003"]["lang"] == "en"  # declared by X ("en")
    assert "PII hits" in out and "duplicates" in out


def test_stats_without_a_store_is_a_clear_error(store_cli: Cli) -> None:
    cli = store_cli
    result = cli("corpus", "stats", ok=False)
    assert result.exit_code == 1 and "roost ingest" in result.output
