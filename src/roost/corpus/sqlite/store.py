"""The post store: one SQLite file (WAL) under the workspace with posts, signatures, tombstones and ingest runs.

Written by `roost ingest` in batched transactions (a killed ingest leaves whole batches only; re-running it
skips what is there); read by `roost corpus stats` and every later stage; erased by `roost forget`.
Tombstoned ids and authors are never inserted again. A tombstone keeps a keyed hash, never the name or id
(roost.corpus.tombkeys; the key is the store's own, in `meta`); every erased row's seq goes to the `erased`
log, the cursor followers (search indexes, dedup state, leak guard) read to drop exactly those rows.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from roost.corpus.post import author_key
from roost.corpus.rows import CARRIERS, COLUMNS, now, reposts_of, summarize
from roost.corpus.tombkeys import TombKeys
from roost.errors import RoostError

SCHEMA_VERSION = 3
# v2: `seq` (the rowid) is AUTOINCREMENT, so a row id is never reused after a delete: followers (the live indexer,
# the leak guard) read "rows since a cursor" and must never see a new post under an id they have passed.
# v3: tombstones keep keyed hashes (NFKC-casefolded authors), the clear-text keys of v2 are hashed and their bytes
# overwritten; the `erased` log (one row per erased post's seq) is the erasure cursor.
POSTS_TABLE = """
CREATE TABLE IF NOT EXISTS posts (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    author TEXT NOT NULL,
    created_at TEXT NOT NULL,              -- ISO 8601 UTC, '2018-10-10T20:19:24Z'
    text TEXT NOT NULL,                    -- normalised original
    text_scrubbed TEXT NOT NULL,           -- PII replaced by placeholders: what training reads
    lang TEXT NOT NULL,
    reply_to TEXT, quote_of TEXT, repost_of TEXT,
    hashtags TEXT NOT NULL, mentions TEXT NOT NULL, urls TEXT NOT NULL,   -- JSON arrays
    visibility TEXT NOT NULL,
    source TEXT NOT NULL,
    text_hash BLOB,                        -- SHA-1 of text (NULL for reposts)
    dup_of TEXT, near_dup_of TEXT,         -- set on copies; originals and reposts have NULL
    pii_hits INTEGER NOT NULL DEFAULT 0,
    run_id INTEGER
);
"""
SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
    + POSTS_TABLE
    + """
CREATE INDEX IF NOT EXISTS posts_author ON posts(author COLLATE NOCASE);
CREATE INDEX IF NOT EXISTS posts_hash ON posts(text_hash);
CREATE INDEX IF NOT EXISTS posts_created ON posts(created_at);
CREATE TABLE IF NOT EXISTS signatures (post_id TEXT PRIMARY KEY, sig BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS tombstones (
    kind TEXT NOT NULL CHECK (kind IN ('post', 'author')), key TEXT NOT NULL, forgotten_at TEXT NOT NULL,
    PRIMARY KEY (kind, key));
CREATE TABLE IF NOT EXISTS ingest_runs (
    id INTEGER PRIMARY KEY, started_at TEXT NOT NULL, finished_at TEXT, status TEXT NOT NULL,
    paths TEXT NOT NULL, report TEXT, pid INTEGER);
CREATE TABLE IF NOT EXISTS erased (n INTEGER PRIMARY KEY AUTOINCREMENT, seq INTEGER NOT NULL);
"""
)
_INSERT = f"INSERT OR IGNORE INTO posts ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"


class Store:
    def __init__(self, path: Path, readonly: bool = False, threads: bool = False):
        self.path = path
        if readonly and not path.exists():
            raise RoostError(f"{path}: no corpus here yet; run `roost ingest PATH` first")
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # threads: the caller serialises use (a server's request threads share one connection under a lock)
            self.db = sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=not threads)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("PRAGMA foreign_keys=ON")
            self.db.create_function("author_key", 1, author_key, deterministic=True)
            self.db.execute("PRAGMA secure_delete=ON")  # erased rows are overwritten, not left in free pages
            owed = self._migrate()
            self.keys = store_keys(self.db, create=True)
        except sqlite3.DatabaseError as e:
            raise RoostError(f"{path}: not a usable roost corpus database ({e})") from None
        if owed[0] or owed[1]:  # what a v2 store tombstoned, erased again by today's rules (see _hash_tombstones)
            self.forget(*owed)
            self.checkpoint()

    def _migrate(self) -> tuple[list[str], list[str]]:
        """Create the schema, or bring an older store up to SCHEMA_VERSION (numbered steps, in one transaction).
        Returns the (authors, post ids) an older store had tombstoned, to erase again by today's rules."""
        db = self.db
        has_posts = db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='posts'").fetchone()
        version = 0
        if has_posts:
            db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            version = int(row[0]) if row else 1
        if version > SCHEMA_VERSION:
            raise RoostError(f"{self.path}: written by a newer roost (schema {version} > {SCHEMA_VERSION})")
        if version == 1:
            with self.transaction():
                cols = ", ".join(COLUMNS)
                db.execute("ALTER TABLE posts RENAME TO posts_v1")
                for idx in ("posts_author", "posts_hash", "posts_created"):
                    db.execute(f"DROP INDEX IF EXISTS {idx}")
                db.execute(POSTS_TABLE)
                db.execute(f"INSERT INTO posts (seq, {cols}) SELECT rowid, {cols} FROM posts_v1 ORDER BY rowid")
                # rows deleted before v2 may have been the newest a follower saw: start past them with room
                top = db.execute("SELECT coalesce(max(rowid), 0) FROM posts_v1").fetchone()[0]
                db.execute("DROP TABLE posts_v1")
                db.execute("DELETE FROM sqlite_sequence WHERE name = 'posts'")
                db.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('posts', ?)", (top + 1_000_000,))
                db.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
            version = 2
        runs_cols = [r[1] for r in db.execute("PRAGMA table_info(ingest_runs)")]
        if runs_cols and "pid" not in runs_cols:
            db.execute("ALTER TABLE ingest_runs ADD COLUMN pid INTEGER")
        if has_posts and "NOCASE" not in self._index_sql("posts_author"):
            db.execute("DROP INDEX IF EXISTS posts_author")  # the case-sensitive one of schema 1
        db.executescript(SCHEMA)
        db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        return self._hash_tombstones() if version == 2 else ([], [])

    def _hash_tombstones(self) -> tuple[list[str], list[str]]:
        """v2 → v3: every clear-text tombstone key becomes its keyed hash (authors normalised by today's
        `author_key`; v2 kept `casefold()`), in place, then the WAL is truncated: with `secure_delete` the old
        cells are overwritten, so no forgotten name or id stays in corpus.db or its WAL. Returns the clear
        (authors, post ids): the caller erases them again, so what v2's rules missed (a decomposed spelling, other
        users' reposts) goes too."""
        db = self.db
        with self.transaction():
            keys = store_keys(db, create=True)
            rows = db.execute("SELECT rowid, kind, key, forgotten_at FROM tombstones").fetchall()
            db.execute("DELETE FROM tombstones")
            db.executemany(
                "INSERT OR IGNORE INTO tombstones (rowid, kind, key, forgotten_at) VALUES (?, ?, ?, ?)",
                [(r, kind, keys.of(kind, key), at) for r, kind, key, at in rows],
            )
            db.execute("CREATE TABLE IF NOT EXISTS erased (n INTEGER PRIMARY KEY AUTOINCREMENT, seq INTEGER NOT NULL)")
            db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return [k for _, kind, k, _ in rows if kind == "author"], [k for _, kind, k, _ in rows if kind == "post"]

    def _index_sql(self, name: str) -> str:
        row = self.db.execute("SELECT sql FROM sqlite_master WHERE type='index' AND name=?", (name,)).fetchone()
        return row[0] if row and row[0] else ""

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading state for an ingest ---------------------------------------------------------------------------
    def dead(self, ids: list[str], authors: list[str]) -> tuple[set[str], set[str]]:
        """The tombstoned ones among these post ids and authors (matched by keyed hash, see tombkeys)."""
        return dead_in(self.db, self.keys, ids, authors)

    def existing(self, ids: list[str]) -> set[str]:
        return existing_in(self.db, ids)

    def original_hashes(self) -> Iterator[tuple[bytes, str]]:
        yield from self.db.execute("SELECT text_hash, id FROM posts WHERE text_hash IS NOT NULL AND dup_of IS NULL")

    def signatures(self) -> Iterator[tuple[str, np.ndarray]]:
        for pid, blob in self.db.execute("SELECT post_id, sig FROM signatures"):
            yield pid, np.frombuffer(blob, dtype=np.uint32)

    # -- writing -----------------------------------------------------------------------------------------------
    def copy_decider(self, threshold: float, num_perm: int, run_id: int) -> Any:
        """How this store's writer decides copies: from memory (one writer at a time; see dedup.MemoryCopies)."""
        from roost.corpus.dedup import MemoryCopies

        return MemoryCopies(self, threshold, num_perm, run_id)

    def write_batch(self, rows: list[tuple[Any, ...]], sigs: list[tuple[str, bytes]]) -> int:
        """Insert posts and their signatures in one transaction; returns how many posts were new."""
        with self.transaction():
            before = self.db.total_changes
            self.db.executemany(_INSERT, rows)
            added = self.db.total_changes - before
            self.db.executemany("INSERT OR IGNORE INTO signatures VALUES (?, ?)", sigs)
        return added

    def transaction(self) -> _Tx:
        return _Tx(self.db)

    @contextlib.contextmanager
    def write_lock(self) -> Iterator[None]:
        """Held by every writer (`roost ingest`, a server's `POST /v1/posts`) while it reads what others stored,
        decides which posts are copies and writes them: decisions then equal some one-after-the-other order of
        the batches, whichever processes wrote them. An OS file lock, released by the kernel if the holder dies."""
        with open(self.path.with_name(self.path.name + ".write-lock"), "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def ingest_lock(self, on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
        """One `roost ingest` at a time per SQLite store (an OS file lock, released when the process dies, even by
        SIGKILL): a second one waits, saying so, and then sees every post the first stored (exact and near copies
        included)."""
        with open(self.path.with_name(self.path.name + ".ingest-lock"), "a+") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if on_wait:
                    on_wait(f"another `roost ingest` is writing to {self.path}; waiting for it to finish…")
                fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def start_run(self, paths: Iterable[str]) -> int:
        self.reap_runs()
        cur = self.db.execute(
            "INSERT INTO ingest_runs (started_at, status, paths, pid) VALUES (?, 'running', ?, ?)",
            (now(), json.dumps(list(paths)), os.getpid()),
        )
        return int(cur.lastrowid or 0)

    def reap_runs(self) -> int:
        """Mark runs still 'running' whose process is gone (killed) as 'interrupted'; returns how many."""
        dead = []
        for rid, pid in self.db.execute("SELECT id, pid FROM ingest_runs WHERE status = 'running'").fetchall():
            try:
                alive = pid is not None and pid != os.getpid()
                if alive:
                    os.kill(pid, 0)  # raises when the process is gone
            except ProcessLookupError:
                alive = False
            except PermissionError:
                alive = True
            if not alive and pid != os.getpid():
                dead.append(rid)
        for rid in dead:
            self.db.execute("UPDATE ingest_runs SET status='interrupted', finished_at=? WHERE id=?", (now(), rid))
        return len(dead)

    def max_seq(self) -> int:
        """The newest post's row id (the cursor followers and concurrent writers read from)."""
        return int(self.db.execute("SELECT coalesce(max(seq), 0) FROM posts").fetchone()[0])

    def dedup_state_since(self, seq: int, run_id: int) -> tuple[list[tuple[bytes, str]], list[tuple[str, np.ndarray]]]:
        """Exact-copy keys and MinHash signatures of originals other writers stored after `seq`."""
        hashes = self.db.execute(
            "SELECT text_hash, id FROM posts WHERE seq > ? AND text_hash IS NOT NULL AND dup_of IS NULL "
            "AND coalesce(run_id, -1) != ?",
            (seq, run_id),
        ).fetchall()
        sigs = self.db.execute(
            "SELECT s.post_id, s.sig FROM signatures s JOIN posts p ON p.id = s.post_id "
            "WHERE p.seq > ? AND coalesce(p.run_id, -1) != ?",
            (seq, run_id),
        ).fetchall()
        return hashes, [(pid, np.frombuffer(b, dtype=np.uint32)) for pid, b in sigs]

    def finish_run(self, run_id: int, status: str, report: dict[str, Any]) -> None:
        self.db.execute(
            "UPDATE ingest_runs SET finished_at=?, status=?, report=? WHERE id=?",
            (now(), status, json.dumps(report), run_id),
        )

    # -- erasure -----------------------------------------------------------------------------------------------
    def forget(self, authors: list[str], post_ids: list[str]) -> dict[str, Any]:
        """Delete and tombstone these authors' posts and these posts, and every repost that carries one of them
        (another user's `RT @them: …`, an Announce of their status: `reposts_of`); copies that pointed at a
        deleted original get a new original among themselves. Under the writers' lock, so an ingest racing it
        stores nothing forgotten; each erased row's seq goes to the `erased` log."""
        with self.write_lock(), self.transaction():
            db = self.db
            db.execute("CREATE TEMP TABLE IF NOT EXISTS gone (id TEXT PRIMARY KEY)")
            db.execute("DELETE FROM gone")
            unmatched = []
            for a in authors:
                cur = db.execute(
                    "INSERT OR IGNORE INTO gone SELECT id FROM posts WHERE author_key(author) = ?", (author_key(a),)
                )
                if cur.rowcount <= 0:
                    unmatched.append(a)
                db.execute("INSERT OR IGNORE INTO tombstones VALUES ('author', ?, ?)", (self.keys.author(a), now()))
            for p in post_ids:
                db.execute("INSERT OR IGNORE INTO gone SELECT id FROM posts WHERE id = ?", (p,))
                db.execute("INSERT OR IGNORE INTO tombstones VALUES ('post', ?, ?)", (self.keys.post(p), now()))
            named = {r[0] for r in db.execute("SELECT id FROM gone")}
            cands = db.execute(f"SELECT id, repost_of, text FROM posts WHERE {CARRIERS}")
            reposts = [r[0] for r in reposts_of(cands, named | set(post_ids), authors) if r[0] not in named]
            db.executemany("INSERT OR IGNORE INTO gone VALUES (?)", [(r,) for r in reposts])
            ids = [r[0] for r in db.execute("SELECT posts.id FROM gone JOIN posts ON posts.id = gone.id")]
            for col in ("dup_of", "near_dup_of"):
                orphans = db.execute(
                    f"SELECT {col}, id FROM posts WHERE {col} IN (SELECT id FROM gone) "
                    "AND id NOT IN (SELECT id FROM gone) ORDER BY created_at, id"
                ).fetchall()
                heirs: dict[str, str] = {}
                for old, pid in orphans:
                    if old not in heirs:
                        heirs[old] = pid
                        db.execute(f"UPDATE posts SET {col} = NULL WHERE id = ?", (pid,))
                    else:
                        db.execute(f"UPDATE posts SET {col} = ? WHERE id = ?", (heirs[old], pid))
            db.execute("INSERT INTO erased (seq) SELECT seq FROM posts WHERE id IN (SELECT id FROM gone) ORDER BY seq")
            db.execute("DELETE FROM signatures WHERE post_id IN (SELECT id FROM gone)")
            db.execute("DELETE FROM posts WHERE id IN (SELECT id FROM gone)")
        return {"posts": len(ids), "authors": len(authors), "post_ids": len(post_ids), "ids": ids,
                "reposts": len(reposts), "unmatched": unmatched}  # fmt: skip

    def checkpoint(self, wait_s: float = 10.0) -> bool:
        """Move the WAL into the database file and truncate it (after an erasure the deleted text must not linger
        in corpus.db-wal), waiting up to `wait_s` for readers; False when a reader kept it from finishing (it is
        retried at the next erasure)."""
        self.db.execute(f"PRAGMA busy_timeout = {max(0, int(wait_s * 1000))}")
        try:
            busy = self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        finally:
            self.db.execute("PRAGMA busy_timeout = 60000")  # the connection's own (timeout=60)
        return busy == 0

    def erasure_cursor(self) -> int:
        """The newest entry of the `erased` log: a follower that saw a smaller one has rows to drop."""
        return erasure_cursor(self.db)

    def erase_pending(self) -> list[str]:
        """Tables whose rewrite an erasure still owes: none here (`secure_delete` overwrites as it deletes; a WAL a
        reader kept from truncating is what `checkpoint()` reports)."""
        return []

    # -- stats -------------------------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        self.reap_runs()
        return summarize(lambda q: self.db.execute(q).fetchone()[0], lambda q: self.db.execute(q).fetchall())


def store_keys(db: sqlite3.Connection, create: bool = False) -> TombKeys:
    """The store's tombstone key (32 random bytes in `meta`, made on first open; kept with the store, so a copied
    or restored corpus.db keeps recognising what it forgot)."""
    row = db.execute("SELECT value FROM meta WHERE key = 'tomb_secret'").fetchone()
    if row is None and create:  # two first openers: one insert wins, both read it back
        db.execute("INSERT OR IGNORE INTO meta VALUES ('tomb_secret', ?)", (secrets.token_bytes(32).hex(),))
        row = db.execute("SELECT value FROM meta WHERE key = 'tomb_secret'").fetchone()
    if row is None:
        raise RoostError("the store has no tombstone key; open it once with roost to migrate it")
    return TombKeys(bytes.fromhex(row[0]))


def dead_in(db: sqlite3.Connection, keys: TombKeys, ids: list[str], authors: list[str]) -> tuple[set[str], set[str]]:
    """The tombstoned ones among these post ids and authors, by keyed hash, without reading the whole table."""
    hashes = keys.hashes(ids, authors)
    found: set[tuple[str, str]] = set()
    for i in range(0, len(hashes), 900):
        chunk = hashes[i : i + 900]
        found.update(db.execute(f"SELECT kind, key FROM tombstones WHERE key IN ({','.join('?' * len(chunk))})", chunk))
    return keys.matches(ids, authors, found)


def existing_in(db: sqlite3.Connection, ids: list[str]) -> set[str]:
    """Those of these post ids the store holds."""
    found: set[str] = set()
    for i in range(0, len(ids), 900):
        chunk = ids[i : i + 900]
        found.update(
            r[0] for r in db.execute(f"SELECT id FROM posts WHERE id IN ({','.join('?' * len(chunk))})", chunk)
        )
    return found


def erasure_cursor(db: sqlite3.Connection) -> int:
    return int(db.execute("SELECT coalesce(max(n), 0) FROM erased").fetchone()[0])


class _Tx:
    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, exc_type: object, *_: object) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")
