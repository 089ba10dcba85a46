"""The store's read API for every later stage (tokenizer, SFT, search evaluation, the server's reply-by-id): the
schema stays private to `corpus/`, and a PostgreSQL store implements the same calls.

    with StoreReader(home / "corpus.db") as r:
        r.count_training(); r.post_text("x:123"); list(r.training_texts())
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from roost.corpus.rows import SEARCH_COLUMNS, SEARCHABLE, TRAINING_WHERE
from roost.corpus.sqlite.store import (
    SCHEMA_VERSION,
    dead_in,
    erasure_cursor,
    existing_in,
    store_keys,
)
from roost.errors import RoostError


class StoreReader:
    """A read-only connection to the post store (SQLite, `mode=ro`)."""

    def __init__(self, db: Path):
        if not db.is_file():
            raise RoostError(f"{db}: no post store here; run `roost ingest EXPORTS` first")
        self.db = db
        # autocommit; `snapshot()` opens a read transaction so that several calls see one state of the store
        self.con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, check_same_thread=False, isolation_level=None)
        try:
            version = self.con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        except sqlite3.DatabaseError as e:
            self.con.close()
            raise RoostError(f"{db}: not a usable roost corpus database ({e})") from None
        if version is None or int(version[0]) < SCHEMA_VERSION:  # an older store: migrate it once, then read
            from roost.corpus.sqlite.store import Store

            Store(db).close()
        self.keys = store_keys(self.con)

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> StoreReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[StoreReader]:
        """Every call inside reads the same state (a post stored meanwhile is seen by the next snapshot)."""
        self.con.execute("BEGIN")
        try:
            yield self
        finally:
            self.con.execute("COMMIT")

    # -- followers: rows and tombstones since a cursor (row ids are never reused) -----------------------------------
    def max_seq(self) -> int:
        return int(self.con.execute("SELECT coalesce(max(seq), 0) FROM posts").fetchone()[0])

    def erasure_cursor(self) -> int:
        return erasure_cursor(self.con)

    def erased_since(self, cursor: int) -> list[tuple[int, int]]:
        """(cursor, seq) of every post erased after `cursor`, in erasure order."""
        return self.con.execute("SELECT n, seq FROM erased WHERE n > ? ORDER BY n", (cursor,)).fetchall()

    def count_searchable_since(self, seq: int) -> int:
        return int(self.con.execute(f"SELECT count(*) FROM posts WHERE seq > ? AND {SEARCHABLE}", (seq,)).fetchone()[0])

    def searchable_rows(self, after: int = 0, upto: int | None = None, batch: int = 2048) -> Iterator[list[tuple]]:
        """Batches of (seq, id, author, created_at, text, lang, reply_to, mentions) of searchable posts (not
        reposts) with after < seq <= upto, in seq order."""
        cur = self.con.execute(
            f"SELECT {SEARCH_COLUMNS} FROM posts WHERE {SEARCHABLE} AND seq > ? AND seq <= ? ORDER BY seq",
            (after, upto if upto is not None else 2**62),
        )
        while rows := cur.fetchmany(batch):
            yield rows

    def posts_by_seq(self, seqs: list[int]) -> dict[int, tuple[str, str, str, str]]:
        """seq → (id, author, created_at, text) for those still in the store."""
        out: dict[int, tuple[str, str, str, str]] = {}
        for s in range(0, len(seqs), 500):
            part = seqs[s : s + 500]
            sql = f"SELECT seq, id, author, created_at, text FROM posts WHERE seq IN ({','.join('?' * len(part))})"
            out.update({r[0]: r[1:] for r in self.con.execute(sql, part)})
        return out

    def existing(self, ids: list[str]) -> set[str]:
        """Those of these post ids the store holds."""
        return existing_in(self.con, ids)

    def dead(self, ids: list[str], authors: list[str]) -> tuple[set[str], set[str]]:
        """The tombstoned ones among these post ids and authors (keyed hashes, roost.corpus.tombkeys)."""
        return dead_in(self.con, self.keys, ids, authors)

    def texts_since(self, seq: int) -> list[tuple[int, str, str]]:
        """(seq, text, scrubbed text) of every post after `seq` (the leak guard's follow)."""
        return self.con.execute("SELECT seq, text, text_scrubbed FROM posts WHERE seq > ?", (seq,)).fetchall()

    def post_by_seq(self, seq: int) -> tuple[str, str, str] | None:
        """(id, text, scrubbed text), or None when the post was forgotten."""
        return self.con.execute("SELECT id, text, text_scrubbed FROM posts WHERE seq = ?", (seq,)).fetchone()

    # -- training -----------------------------------------------------------------------------------------------------
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
            meta["erased_cursor"] = erasure_cursor(con)
            gone = set(con.execute("SELECT kind, key FROM tombstones"))
            meta["tombstones"] = len(gone)
            meta["snapshot_time"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            cur = con.execute(f"SELECT id, author, text_scrubbed FROM posts WHERE {TRAINING_WHERE} ORDER BY seq")
            while not (stop and stop.is_set()) and (rows := cur.fetchmany(batch)):
                yield self.keys.live(rows, gone)
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
