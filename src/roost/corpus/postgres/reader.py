"""The store's read API on PostgreSQL: the same calls and values as `corpus/sqlite/reader.py`, on a read-only
connection (`default_transaction_read_only`).

    with open_reader("postgresql://postgres:@/roost?host=/path") as r:
        r.count_training(); r.post_text("x:123"); list(r.training_texts())

Long scans page by seq (no transaction is held between batches unless the caller is inside `snapshot()`);
`training_snapshot` reads everything in one REPEATABLE READ transaction on its own connection.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg

from roost.corpus.postgres.store import connect, dead_in, existing_in, has_schema, redact, store_keys
from roost.corpus.rows import SEARCH_COLUMNS, SEARCHABLE, TRAINING_WHERE
from roost.errors import RoostError

PAGE = 2_048


class PgReader:
    """A read-only connection to the post store in the PostgreSQL database at `url`."""

    def __init__(self, url: str):
        self.url = url
        self.con = connect(url, read_only=True)
        if not has_schema(self.con):
            self.con.close()
            raise RoostError(f"{redact(url)}: no post store here; run `roost ingest EXPORTS` first")
        if self.con.execute("SELECT to_regclass('store_secret') IS NULL").fetchone()[0]:  # type: ignore[index]
            from roost.corpus.postgres.store import PgStore  # an older store: migrate it once, then read

            PgStore(url).close()
        try:
            self.keys = store_keys(self.con)
        except BaseException:
            self.con.close()
            raise
        self.con.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ  # for snapshot()

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> PgReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[PgReader]:
        """Every call inside reads the same state (a post stored meanwhile is seen by the next snapshot)."""
        with self.con.transaction():
            yield self

    def _all(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        return self.con.execute(sql, params).fetchall()

    def _one(self, sql: str, params: Any = None) -> Any:
        return self.con.execute(sql, params).fetchone()[0]  # type: ignore[index]

    def _by_seq(self, cols: str, where: str, params: tuple[Any, ...], after: int, page: int) -> Iterator[list[tuple]]:
        """Pages of (seq, *cols) of the posts matching `where`, in seq order after `after`."""
        sql = f"SELECT seq, {cols} FROM posts WHERE {where} AND seq > %s ORDER BY seq LIMIT %s"
        while rows := self._all(sql, (*params, after, page)):
            yield rows
            after = rows[-1][0]

    # -- followers: rows and tombstones since a cursor (seq values are never reused) ----------------------------------
    def max_seq(self) -> int:
        return int(self._one("SELECT coalesce(max(seq), 0) FROM posts"))

    def erasure_cursor(self) -> int:
        return int(self._one("SELECT coalesce(max(n), 0) FROM erased"))

    def erased_since(self, cursor: int) -> list[tuple[int, int]]:
        """(cursor, seq) of every post erased after `cursor`, in erasure order."""
        return self._all("SELECT n, seq FROM erased WHERE n > %s ORDER BY n", (cursor,))  # type: ignore[return-value]

    def count_searchable_since(self, seq: int) -> int:
        return int(self._one(f"SELECT count(*) FROM posts WHERE seq > %s AND {SEARCHABLE}", (seq,)))

    def searchable_rows(self, after: int = 0, upto: int | None = None, batch: int = 2048) -> Iterator[list[tuple]]:
        """Batches of (seq, id, author, created_at, text, lang, reply_to, mentions) of searchable posts (not
        reposts) with after < seq <= upto, in seq order."""
        cols = SEARCH_COLUMNS.removeprefix("seq, ")
        where = f"{SEARCHABLE} AND seq <= %s"
        yield from self._by_seq(cols, where, (upto if upto is not None else 2**62,), after, batch)

    def posts_by_seq(self, seqs: list[int]) -> dict[int, tuple[str, str, str, str]]:
        """seq → (id, author, created_at, text) for those still in the store."""
        sql = "SELECT seq, id, author, created_at, text FROM posts WHERE seq = ANY(%s::bigint[])"
        return {r[0]: r[1:] for r in self._all(sql, (list(seqs),))}  # type: ignore[misc]

    def existing(self, ids: list[str]) -> set[str]:
        """Those of these post ids the store holds."""
        return existing_in(self.con, ids)

    def dead(self, ids: list[str], authors: list[str]) -> tuple[set[str], set[str]]:
        """The tombstoned ones among these post ids and authors (keyed hashes, roost.corpus.tombkeys)."""
        return dead_in(self.con, self.keys, ids, authors)

    def texts_since(self, seq: int) -> list[tuple[int, str, str]]:
        """(seq, text, scrubbed text) of every post after `seq` (the leak guard's follow)."""
        return self._all("SELECT seq, text, text_scrubbed FROM posts WHERE seq > %s ORDER BY seq", (seq,))  # type: ignore[return-value]

    def post_by_seq(self, seq: int) -> tuple[str, str, str] | None:
        """(id, text, scrubbed text), or None when the post was forgotten."""
        return self.con.execute("SELECT id, text, text_scrubbed FROM posts WHERE seq = %s", (seq,)).fetchone()  # type: ignore[return-value]

    # -- training -----------------------------------------------------------------------------------------------------
    def count_training(self) -> int:
        """Posts that are training text: one copy of each text, no reposts, nothing forgotten."""
        return int(self._one(f"SELECT count(*) FROM posts WHERE {TRAINING_WHERE}"))

    def training_texts(self, limit: int = 0, batch: int = 1_000) -> Iterator[list[str]]:
        """Batches of scrubbed training text in store order; `limit` > 0 takes an even sample of about that many."""
        step = max(1, -(-self.count_training() // limit)) if limit else 1
        i = 0
        for rows in self._by_seq("text_scrubbed", TRAINING_WHERE, (), 0, batch * step):
            texts = [r[1] for j, r in enumerate(rows, i) if j % step == 0]
            i += len(rows)
            if texts:
                yield texts

    def training_sample_by_lang(self, n: int) -> list[tuple[str, str]]:
        """(lang, scrubbed text) for an even sample of about `n` training posts."""
        step = max(1, -(-self.count_training() // n))
        sql = f"SELECT lang, text_scrubbed FROM posts WHERE {TRAINING_WHERE} AND seq %% %s = 0 ORDER BY seq"
        return self._all(sql, (step,))  # type: ignore[return-value]

    def reply_pairs(self) -> list[tuple[str, str, str]]:
        """(reply id, parent text, reply text), scrubbed, for every training reply whose parent is in the store."""
        where = " AND ".join(f"c.{w.strip()}" for w in TRAINING_WHERE.split(" AND "))
        return self._all(  # type: ignore[return-value]
            "SELECT c.id, p.text_scrubbed, c.text_scrubbed FROM posts c JOIN posts p ON c.reply_to = p.id "
            f"WHERE {where} ORDER BY c.seq"
        )

    def training_snapshot(
        self, batch: int, meta: dict[str, Any], stop: threading.Event | None = None
    ) -> Iterator[list[tuple[str, str, str]]]:
        """Training rows (id, author, scrubbed text) in store order, all read in one REPEATABLE READ transaction;
        fills `meta` (posts, max_rowid, tombstones, snapshot_time) before the first batch. Tombstoned ids and
        authors are filtered again here (their rows are deleted; this is the second lock on the door)."""
        con = connect(self.url, read_only=True)
        con.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        try:
            with con.transaction():
                one = lambda q: con.execute(q).fetchone()[0]  # type: ignore[index]  # noqa: E731
                meta["posts"] = one(f"SELECT count(*) FROM posts WHERE {TRAINING_WHERE}")
                meta["max_rowid"] = one("SELECT coalesce(max(seq), 0) FROM posts")
                meta["erased_cursor"] = one("SELECT coalesce(max(n), 0) FROM erased")
                gone = {(k, v) for k, v in con.execute("SELECT kind, key FROM tombstones")}
                meta["tombstones"] = len(gone)
                meta["snapshot_time"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                with con.cursor(name="roost_training_snapshot") as cur:
                    cur.execute(f"SELECT id, author, text_scrubbed FROM posts WHERE {TRAINING_WHERE} ORDER BY seq")
                    while not (stop and stop.is_set()) and (rows := cur.fetchmany(batch)):
                        yield self.keys.live(rows, gone)
        finally:
            con.close()

    def post_text(self, post_id: str) -> str | None:
        """The text of one post, or None when there is no such post (or it was forgotten)."""
        row = self.con.execute("SELECT text FROM posts WHERE id = %s", (post_id,)).fetchone()
        return None if row is None else str(row[0])

    def posts_in(self, lang: str, min_chars: int) -> list[tuple[str, str]]:
        """(id, text) of the training posts in `lang` at least `min_chars` long, in store order."""
        return self._all(  # type: ignore[return-value]
            f"SELECT id, text FROM posts WHERE {TRAINING_WHERE} AND lang = %s AND length(text) >= %s ORDER BY seq",
            (lang, min_chars),
        )
