"""The store's read API for every later stage (tokenizer, SFT, search evaluation, the server's reply-by-id): the
schema stays private to `corpus/`, and a PostgreSQL store implements the same calls.

    with StoreReader(home / "corpus.db") as r:
        r.count_training(); r.post_text("x:123"); list(r.training_texts())
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from roost.corpus.post import author_key
from roost.corpus.store import TRAINING_WHERE
from roost.errors import RoostError


class StoreReader:
    """A read-only connection to the post store (SQLite, `mode=ro`)."""

    def __init__(self, db: Path):
        if not db.is_file():
            raise RoostError(f"{db}: no post store here; run `roost ingest EXPORTS` first")
        self.db = db
        self.con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, check_same_thread=False)

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> StoreReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def count_training(self) -> int:
        """Posts that are training text: one copy of each text, no reposts, nothing forgotten."""
        return int(self.con.execute(f"SELECT count(*) FROM posts WHERE {TRAINING_WHERE}").fetchone()[0])

    def training_texts(self, limit: int = 0, batch: int = 1_000) -> Iterator[list[str]]:
        """Batches of scrubbed training text in store order; `limit` > 0 takes an even sample of about that many."""
        step = max(1, -(-self.count_training() // limit)) if limit else 1
        cur = self.con.execute(f"SELECT text_scrubbed FROM posts WHERE {TRAINING_WHERE} ORDER BY seq")
        i = 0
        while rows := cur.fetchmany(batch * step):
            texts = [r[0] for j, r in enumerate(rows, i) if j % step == 0]
            i += len(rows)
            if texts:
                yield texts

    def training_sample_by_lang(self, n: int) -> list[tuple[str, str]]:
        """(lang, scrubbed text) for an even sample of about `n` training posts."""
        step = max(1, -(-self.count_training() // n))
        sql = f"SELECT lang, text_scrubbed FROM (SELECT seq r, lang, text_scrubbed FROM posts WHERE {TRAINING_WHERE})"
        return self.con.execute(sql + " WHERE r % ? = 0", (step,)).fetchall()

    def reply_pairs(self) -> list[tuple[str, str, str]]:
        """(reply id, parent text, reply text), scrubbed, for every training reply whose parent is in the store."""
        where = " AND ".join(f"c.{w.strip()}" for w in TRAINING_WHERE.split(" AND "))
        return self.con.execute(
            "SELECT c.id, p.text_scrubbed, c.text_scrubbed FROM posts c JOIN posts p ON c.reply_to = p.id "
            f"WHERE {where} ORDER BY c.seq"
        ).fetchall()

    def training_snapshot(
        self, batch: int, meta: dict[str, Any], stop: threading.Event | None = None
    ) -> Iterator[list[tuple[str, str, str]]]:
        """Training rows (id, author, scrubbed text) in store order, all read in one snapshot; fills `meta` (posts,
        max_rowid, tombstones, snapshot_time) before the first batch. Tombstoned ids and authors are filtered again
        here (their rows are deleted; this is the second lock on the door)."""
        con = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, isolation_level=None, check_same_thread=False)
        try:
            con.execute("BEGIN")  # one snapshot for the count, the tombstones and every row
            meta["posts"] = con.execute(f"SELECT count(*) FROM posts WHERE {TRAINING_WHERE}").fetchone()[0]
            meta["max_rowid"] = con.execute("SELECT coalesce(max(seq), 0) FROM posts").fetchone()[0]
            gone_posts = {r[0] for r in con.execute("SELECT key FROM tombstones WHERE kind = 'post'")}
            gone_authors = {author_key(r[0]) for r in con.execute("SELECT key FROM tombstones WHERE kind = 'author'")}
            meta["tombstones"] = len(gone_posts) + len(gone_authors)
            meta["snapshot_time"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            cur = con.execute(f"SELECT id, author, text_scrubbed FROM posts WHERE {TRAINING_WHERE} ORDER BY seq")
            while not (stop and stop.is_set()) and (rows := cur.fetchmany(batch)):
                yield [r for r in rows if r[0] not in gone_posts and author_key(r[1]) not in gone_authors]
            con.execute("COMMIT")
        finally:
            con.close()

    def post_text(self, post_id: str) -> str | None:
        """The text of one post, or None when there is no such post (or it was forgotten)."""
        row = self.con.execute("SELECT text FROM posts WHERE id = ?", (post_id,)).fetchone()
        return None if row is None else str(row[0])

    def posts_in(self, lang: str, min_chars: int) -> list[tuple[str, str]]:
        """(id, text) of the training posts in `lang` at least `min_chars` long, in store order."""
        return self.con.execute(
            f"SELECT id, text FROM posts WHERE {TRAINING_WHERE} AND lang = ? AND length(text) >= ? ORDER BY seq",
            (lang, min_chars),
        ).fetchall()
