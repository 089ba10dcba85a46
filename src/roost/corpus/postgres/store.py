"""The post store on PostgreSQL: the same rows and calls as the SQLite store (`corpus/sqlite/store.py`), for many ingest
workers and server replicas writing and reading one database at once.

    roost db start                                  # a local server under the home (or bring your own)
    roost --store postgresql://postgres:@/roost?host=/path ingest EXPORTS
    with open_store("postgresql://…") as s: ...     # roost.corpus.backend picks PgStore for a URL

Schema: numbered SQL files in `corpus/postgres/migrations/`, applied in order on open (one transaction each, recorded in
`schema_migrations`; concurrent openers wait on an advisory lock). Posts are partitioned by month of `created_at`
(partitions made on demand by the writer). `write_lock()` is a session advisory lock: the server releases it when
the writer's connection ends, however the writer died. Every insert into `posts` happens under it and commits
before it is released, so `seq` order is commit order and a follower reading "since seq" misses nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import socket
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

from roost.corpus.post import author_key
from roost.corpus.postgres.erase import owe_rewrite, pay_owed
from roost.corpus.rows import COLUMNS, now, reposts_of, summarize
from roost.corpus.tombkeys import TombKeys
from roost.errors import RoostError
from roost.redact import redact

MIGRATIONS = Path(__file__).with_name("migrations")
# advisory lock keys (one database = one store): writers, schema migrations, partition creation
WRITE_LOCK, MIGRATE_LOCK, PARTITION_LOCK = 0x726F6F7374_01, 0x726F6F7374_02, 0x726F6F7374_03
# columns whose values are people's words or names: never sampled into pg_statistic, where an erasure cannot reach
PRIVATE_COLUMNS = ("id", "author", "author_key", "text", "text_scrubbed", "reply_to", "quote_of", "repost_of",
                   "hashtags", "mentions", "urls", "dup_of", "near_dup_of")  # fmt: skip
MONTH = re.compile(r"\d{4}-(0[1-9]|1[0-2])")
PAGE = 10_000
CONNECT_TIMEOUT = 10  # seconds


def connect(url: str, read_only: bool = False) -> psycopg.Connection[Any]:
    """An autocommit connection (transactions are explicit), or a RoostError that names the server (password
    redacted). A server that accepts but never answers is given up after 10 s unless the URL sets
    connect_timeout."""
    extra = {} if "connect_timeout" in url else {"connect_timeout": CONNECT_TIMEOUT}
    try:
        con = psycopg.connect(url, autocommit=True, application_name="roost", **extra)  # type: ignore[arg-type]
    except (psycopg.Error, ValueError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RoostError(f"{redact(url)}: cannot connect to the PostgreSQL store ({redact(url, msg)})") from None
    if read_only:
        con.execute("SET default_transaction_read_only = on")
    return con


def has_schema(con: psycopg.Connection[Any]) -> bool:
    return con.execute("SELECT to_regclass('posts') IS NOT NULL").fetchone()[0]  # type: ignore[index,no-any-return]


def migrate(con: psycopg.Connection[Any], owed: list[tuple[list[str], list[str]]] | None = None) -> list[int]:
    """Apply the numbered SQL files not yet applied, in order, one transaction each; returns those applied. A
    Python step that needs an erasure run again by today's rules appends its (authors, post ids) to `owed`."""
    files = sorted((int(p.name.split("_", 1)[0]), p) for p in MIGRATIONS.glob("[0-9]*_*.sql"))
    con.execute("SELECT pg_advisory_lock(%s)", (MIGRATE_LOCK,))
    try:
        if not con.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()[0]:  # type: ignore[index]
            # only when missing: a least-privilege role (DML only, no CREATE) opens a migrated store fine
            con.execute("CREATE TABLE schema_migrations (version integer PRIMARY KEY, applied_at text NOT NULL)")
        done = {r[0] for r in con.execute("SELECT version FROM schema_migrations")}
        newest = max((v for v, _ in files), default=0)
        if done and max(done) > newest:
            raise RoostError(f"store schema {max(done)} is newer than this roost's ({newest}); upgrade roost")
        applied = []
        for version, path in files:
            if version in done:
                continue
            with con.transaction():
                con.execute(path.read_text(encoding="utf-8").encode())
                if version in PY_STEPS:
                    again = PY_STEPS[version](con)
                    if owed is not None and (again[0] or again[1]):
                        owed.append(again)
                con.execute("INSERT INTO schema_migrations VALUES (%s, %s)", (version, now()))
            applied.append(version)
        return applied
    finally:
        con.execute("SELECT pg_advisory_unlock(%s)", (MIGRATE_LOCK,))


def _tombstone_keys_step(con: psycopg.Connection[Any]) -> tuple[list[str], list[str]]:
    """Migration 0005's Python step (see the SQL file): the key, hashed tombstones, today's author keys. Returns
    the clear (authors, post ids), which the opener erases again (what 0004's rules missed goes too)."""
    con.execute("INSERT INTO store_secret VALUES (1, %s)", (secrets.token_bytes(32),))
    keys = store_keys(con)
    rows = con.execute("SELECT seq, kind, key FROM tombstones").fetchall()
    if rows:  # a clash (two v4 keys that normalise alike) keeps the older tombstone
        con.execute("DELETE FROM tombstones")
        done: set[tuple[str, str]] = set()
        for seq, kind, key in sorted(rows):
            if (kind, h := keys.of(kind, key)) not in done:
                done.add((kind, h))
                con.execute("INSERT INTO tombstones (seq, kind, key, forgotten_at) OVERRIDING SYSTEM VALUE "
                            "VALUES (%s, %s, %s, %s)", (seq, kind, h, now()))  # fmt: skip
        owe_rewrite(con, "tombstones")
    for author, old in con.execute("SELECT DISTINCT author, author_key FROM posts").fetchall():
        if author_key(author) != old:
            con.execute("UPDATE posts SET author_key = %s WHERE author = %s", (author_key(author), author))
    return [k for _, kind, k in rows if kind == "author"], [k for _, kind, k in rows if kind == "post"]


PY_STEPS: dict[int, Any] = {5: _tombstone_keys_step}


def store_keys(con: psycopg.Connection[Any]) -> TombKeys:
    """The store's tombstone key (`store_secret`, shared by every writer of this database)."""
    row = con.execute("SELECT key FROM store_secret WHERE id = 1").fetchone()
    if row is None:
        raise RoostError("the store has no tombstone key (store_secret is empty); it was not migrated by roost")
    return TombKeys(bytes(row[0]))


def dead_in(
    con: psycopg.Connection[Any], keys: TombKeys, ids: list[str], authors: list[str]
) -> tuple[set[str], set[str]]:
    """The tombstoned ones among these post ids and authors, by keyed hash."""
    sql = "SELECT kind, key FROM tombstones WHERE key = ANY(%s::text[])"
    found = {(k, v) for k, v in con.execute(sql, (keys.hashes(ids, authors),)).fetchall()}
    return keys.matches(ids, authors, found)


def existing_in(con: psycopg.Connection[Any], ids: list[str]) -> set[str]:
    """Those of these post ids the store holds (10,000 per query)."""
    found: set[str] = set()
    for i in range(0, len(ids), 10_000):
        chunk = list(ids[i : i + 10_000])
        found.update(r[0] for r in con.execute("SELECT id FROM post_ids WHERE id = ANY(%s::text[])", (chunk,)))
    return found


def partition_for(month: str) -> tuple[str, str, str]:
    """(name, from, to) of the partition holding created_at values that start with `month` ('2024-03'), the
    bounds as SQL literals (the last month, 9999-12, runs to MAXVALUE)."""
    y, m = int(month[:4]), int(month[5:7])
    nxt = "MAXVALUE" if (y, m) == (9999, 12) else f"'{y + (m == 12):04d}-{m % 12 + 1:02d}'"
    return f"posts_{y:04d}_{m:02d}", f"'{month}'", nxt


class PgStore:
    """The writable store in the PostgreSQL database at `url` (see the module docstring)."""

    def __init__(self, url: str, readonly: bool = False, threads: bool = False):
        # `threads`: psycopg connections are thread-safe; callers serialise use anyway (as for SQLite)
        self.url = url
        self.con = connect(url)
        try:
            if readonly and not has_schema(self.con):
                raise RoostError(f"{redact(url)}: no corpus here yet; run `roost ingest PATH` first")
            owed: list[tuple[list[str], list[str]]] = []
            migrate(self.con, owed)
            self.keys = store_keys(self.con)
        except BaseException:
            self.con.close()
            raise
        self._partitions: set[str] = set()
        self._schemes: set[str] = set()  # band schemes known to exist
        for authors, ids in owed:  # what an older store tombstoned, erased again by today's rules
            self.forget(authors, ids)
        if owed:
            self.checkpoint()

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> PgStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _all(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        return self.con.execute(sql, params).fetchall()

    def _one(self, sql: str, params: Any = None) -> Any:
        return self.con.execute(sql, params).fetchone()[0]  # type: ignore[index]

    # -- reading state for an ingest ---------------------------------------------------------------------------
    def dead(self, ids: list[str], authors: list[str]) -> tuple[set[str], set[str]]:
        """The tombstoned ones among these post ids and authors (keyed hashes, roost.corpus.tombkeys)."""
        return dead_in(self.con, self.keys, ids, authors)

    def existing(self, ids: list[str]) -> set[str]:
        return existing_in(self.con, ids)

    def _pages(self, sql: str, key: Any) -> Iterator[tuple[Any, ...]]:
        """Rows of `sql` (which takes the last key and a limit, and returns the key first) page by page, with no
        transaction left open between pages (the caller may write meanwhile)."""
        while rows := self._all(sql, (key, PAGE)):
            yield from rows
            key = rows[-1][0]

    def original_hashes(self) -> Iterator[tuple[bytes, str]]:
        sql = (
            "SELECT seq, text_hash, id FROM posts WHERE seq > %s AND text_hash IS NOT NULL AND dup_of IS NULL "
            "ORDER BY seq LIMIT %s"
        )
        for _, h, pid in self._pages(sql, 0):
            yield bytes(h), pid

    def signatures(self) -> Iterator[tuple[str, np.ndarray]]:
        sql = "SELECT post_id, sig FROM signatures WHERE post_id > %s ORDER BY post_id LIMIT %s"
        for pid, blob in self._pages(sql, ""):
            yield pid, np.frombuffer(blob, dtype=np.uint32)

    # -- writing -----------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def write_lock(self) -> Iterator[None]:
        """Held by every writer while it reads what others stored, decides which posts are copies and writes
        them (see `Store.write_lock`): a session advisory lock, which the server drops if the holder dies."""
        self.con.execute("SELECT pg_advisory_lock(%s)", (WRITE_LOCK,))
        try:
            yield
        finally:
            if not self.con.closed:
                self.con.execute("SELECT pg_advisory_unlock(%s)", (WRITE_LOCK,))

    @contextlib.contextmanager
    def ingest_lock(self, on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
        """Many `roost ingest` at once: each decides copies under `write_lock()`, batch by batch."""
        yield

    def _ensure_partitions(self, months: set[str]) -> None:
        """Monthly partitions for these 'YYYY-MM' prefixes (others fall into posts_default). Inside the batch's
        transaction; creating a partition briefly locks `posts` (once per month of data)."""
        for month in sorted(m for m in months - self._partitions if MONTH.fullmatch(m)):
            name, lo, hi = partition_for(month)
            if not self._one("SELECT to_regclass(%s) IS NOT NULL", (name,)):
                self.con.execute("SELECT pg_advisory_xact_lock(%s)", (PARTITION_LOCK,))
                self.con.execute(
                    f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF posts FOR VALUES FROM ({lo}) TO ({hi})"
                )
                for col in PRIVATE_COLUMNS:  # no statistics of the posts' content (see 0003_no_content_stats.sql)
                    self.con.execute(f"ALTER TABLE {name} ALTER COLUMN {col} SET STATISTICS 0")
            self._partitions.add(month)

    def write_batch(self, rows: list[tuple[Any, ...]], sigs: list[tuple[str, bytes]]) -> int:
        """Insert posts (the COLUMNS of roost.corpus.rows) and their signatures in one transaction; returns how many posts
        were new (an id already stored is skipped, as SQLite's INSERT OR IGNORE)."""
        if not rows and not sigs:
            return 0
        with self.con.transaction():
            new = set()
            if rows:
                self._ensure_partitions({str(r[2])[:7] for r in rows})
                sql = "INSERT INTO post_ids SELECT unnest(%s::text[]) ON CONFLICT DO NOTHING RETURNING id"
                new = {r[0] for r in self._all(sql, ([r[0] for r in rows],))}
            fresh = []
            for r in rows:
                if r[0] in new:
                    new.discard(r[0])  # the first of repeated ids wins
                    fresh.append((*r, author_key(r[1])))
            if fresh:
                cur = self.con.cursor()
                with cur.copy(f"COPY posts ({', '.join(COLUMNS)}, author_key) FROM STDIN") as cp:
                    for row in fresh:
                        cp.write_row(row)
            if sigs:
                params = ([s[0] for s in sigs], [s[1] for s in sigs])
                self.con.execute(
                    "INSERT INTO signatures SELECT * FROM unnest(%s::text[], %s::bytea[]) ON CONFLICT DO NOTHING",
                    params,
                )
                self.con.execute(
                    "INSERT INTO signature_bands SELECT bs.scheme, g, substring(u.sig FROM g * bs.band_bytes + 1 "
                    "FOR bs.band_bytes), u.id FROM unnest(%s::text[], %s::bytea[]) AS u(id, sig) CROSS JOIN "
                    "band_schemes bs CROSS JOIN LATERAL generate_series(0, bs.bands - 1) AS g "
                    "WHERE octet_length(u.sig) = bs.num_perm * 4 ON CONFLICT DO NOTHING",
                    params,
                )
        return len(fresh)

    def copy_decider(self, threshold: float, num_perm: int, run_id: int) -> Any:
        """How this store's writers decide copies: in the database, many writers at once (dedup.StoreCopies)."""
        from roost.corpus.dedup import StoreCopies

        return StoreCopies(self, threshold, num_perm, run_id)

    def ensure_bands(self, num_perm: int, bands: int, rows: int) -> str:
        """The band scheme for this split, filled from the stored signatures the first time any writer uses it
        (call under the write lock); returns its name."""
        scheme = f"{num_perm}:{bands}x{rows}"
        if scheme in self._schemes:
            return scheme
        with self.con.transaction():
            made = self.con.execute(
                "INSERT INTO band_schemes VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (scheme, num_perm, bands, rows * 4),
            ).rowcount
            if made:
                self.con.execute(
                    "INSERT INTO signature_bands SELECT %s, g, substring(sig FROM g * %s + 1 FOR %s), post_id "
                    "FROM signatures CROSS JOIN generate_series(0, %s - 1) AS g WHERE octet_length(sig) = %s",
                    (scheme, rows * 4, rows * 4, bands, num_perm * 4),
                )
        self._schemes.add(scheme)
        return scheme

    def lookup_copies(
        self, keys: list[bytes], sigs: list[bytes], scheme: str
    ) -> tuple[dict[bytes, str], list[tuple[str, np.ndarray]]]:
        """For one batch: the stored original of each exact-copy key, and every stored signature that shares an
        LSH band with one of `sigs` (the candidates a full in-memory LSH index would return)."""
        exact: dict[bytes, str] = {}
        if keys:
            sql = "SELECT text_hash, id FROM posts WHERE text_hash = ANY(%s::bytea[]) AND dup_of IS NULL ORDER BY seq"
            for h, pid in self._all(sql, (keys,)):
                exact.setdefault(bytes(h), pid)
        cands: list[tuple[str, np.ndarray]] = []
        row = self._all("SELECT num_perm, bands, band_bytes FROM band_schemes WHERE scheme = %s", (scheme,))
        if sigs and row:
            num_perm, nb, rb = row[0]
            qb, qk = [], []
            for sig in sigs:
                if len(sig) == num_perm * 4:
                    for g in range(nb):
                        qb.append(g)
                        qk.append(sig[g * rb : (g + 1) * rb])
            sql = (
                "SELECT DISTINCT s.post_id, s.sig FROM unnest(%s::smallint[], %s::bytea[]) AS q(band, key) "
                "JOIN signature_bands b ON b.scheme = %s AND b.band = q.band AND b.key = q.key "
                "JOIN signatures s ON s.post_id = b.post_id ORDER BY s.post_id"
            )
            cands = [(pid, np.frombuffer(sig, dtype=np.uint32)) for pid, sig in self._all(sql, (qb, qk, scheme))]
        return exact, cands

    def start_run(self, paths: Iterable[str]) -> int:
        self.reap_runs()
        sql = (
            "INSERT INTO ingest_runs (started_at, status, paths, pid, host, backend_pid, backend_start) "
            "SELECT %s, 'running', %s, %s, %s, pid, backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid() "
            "RETURNING id"
        )
        return int(self._one(sql, (now(), json.dumps(list(paths)), os.getpid(), socket.gethostname())))

    def reap_runs(self) -> int:
        """Mark runs still 'running' whose server session is gone (the writer was killed, on any machine) as
        'interrupted'; returns how many."""
        sql = (
            "UPDATE ingest_runs r SET status = 'interrupted', finished_at = %s WHERE status = 'running' "
            "AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = r.backend_pid "
            "AND a.backend_start = r.backend_start)"
        )
        return self.con.execute(sql, (now(),)).rowcount

    def max_seq(self) -> int:
        """The newest post's seq (the cursor followers and concurrent writers read from)."""
        return int(self._one("SELECT coalesce(max(seq), 0) FROM posts"))

    def dedup_state_since(self, seq: int, run_id: int) -> tuple[list[tuple[bytes, str]], list[tuple[str, np.ndarray]]]:
        """Exact-copy keys and MinHash signatures of originals other writers stored after `seq`."""
        hashes = self._all(
            "SELECT text_hash, id FROM posts WHERE seq > %s AND text_hash IS NOT NULL AND dup_of IS NULL "
            "AND coalesce(run_id, -1) != %s ORDER BY seq",
            (seq, run_id),
        )
        sigs = self._all(
            "SELECT s.post_id, s.sig FROM signatures s JOIN posts p ON p.id = s.post_id "
            "WHERE p.seq > %s AND coalesce(p.run_id, -1) != %s ORDER BY p.seq",
            (seq, run_id),
        )
        return [(bytes(h), i) for h, i in hashes], [(pid, np.frombuffer(b, dtype=np.uint32)) for pid, b in sigs]

    def finish_run(self, run_id: int, status: str, report: dict[str, Any]) -> None:
        self.con.execute(
            "UPDATE ingest_runs SET finished_at = %s, status = %s, report = %s WHERE id = %s",
            (now(), status, json.dumps(report), run_id),
        )

    # -- erasure -----------------------------------------------------------------------------------------------
    def forget(self, authors: list[str], post_ids: list[str]) -> dict[str, Any]:
        """Delete and tombstone (keyed hashes) these authors' posts, these posts and every repost carrying one of
        them (`store.reposts_of`); copies that pointed at a deleted original get a new original among themselves
        (the earliest by created_at, id); the erased seqs go to the `erased` log. Under the writers' lock, so
        tombstone order is commit order."""
        con = self.con
        with con.transaction():
            con.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
            ts = now()
            for h in sorted({self.keys.author(a) for a in authors}):
                con.execute("INSERT INTO tombstones (kind, key, forgotten_at) VALUES ('author', %s, %s) "
                            "ON CONFLICT DO NOTHING", (h, ts))  # fmt: skip
            for h in sorted({self.keys.post(p) for p in post_ids}):
                con.execute("INSERT INTO tombstones (kind, key, forgotten_at) VALUES ('post', %s, %s) "
                            "ON CONFLICT DO NOTHING", (h, ts))  # fmt: skip
            found = self._all(
                "SELECT id, tableoid::regclass::text, seq, author_key FROM posts WHERE author_key = ANY(%s::text[]) "
                "OR id = ANY(%s::text[])",
                ([author_key(a) for a in authors], list(post_ids)),
            )
            named = {r[0] for r in found}
            unmatched = [a for a in authors if author_key(a) not in {r[3] for r in found}]
            cands = self._all("SELECT id, repost_of, text, tableoid::regclass::text, seq FROM posts WHERE "
                              "repost_of IS NOT NULL OR text ILIKE '%%rt @%%' OR text ILIKE '%%mt @%%'")  # fmt: skip
            reposts = [
                (r[0], r[3], r[4]) for r in reposts_of(cands, named | set(post_ids), authors) if r[0] not in named
            ]
            found += reposts
            gone = [r[0] for r in found]
            if gone:  # owed rewrites, kept in the database until done (by this process or any later one)
                xid = int(self._one("SELECT pg_current_xact_id()::text"))
                tables = sorted({r[1] for r in found} | {"signatures", "signature_bands", "post_ids"})
                con.execute(
                    "INSERT INTO erase_pending SELECT unnest(%s::text[]), %s ON CONFLICT (relname) DO UPDATE "
                    "SET deleted_by = greatest(erase_pending.deleted_by, excluded.deleted_by)",
                    (tables, xid),
                )
                con.execute("INSERT INTO erased (seq) SELECT unnest(%s::bigint[])", (sorted(r[2] for r in found),))
            self._reassign_copies(gone)
            for table, col in (
                ("signature_bands", "post_id"),
                ("signatures", "post_id"),
                ("posts", "id"),
                ("post_ids", "id"),
            ):
                con.execute(f"DELETE FROM {table} WHERE {col} = ANY(%s::text[])", (gone,))
        return {"posts": len(gone), "authors": len(authors), "post_ids": len(post_ids), "ids": gone,
                "reposts": len(reposts), "unmatched": unmatched}  # fmt: skip

    def _reassign_copies(self, gone: list[str]) -> None:
        """Copies whose original is being erased: the earliest (created_at, id) becomes the new original."""
        for col in ("dup_of", "near_dup_of"):
            orphans = self._all(
                f"SELECT {col}, id FROM posts WHERE {col} = ANY(%s::text[]) AND NOT id = ANY(%s::text[]) "
                "ORDER BY created_at, id",
                (gone, gone),
            )
            heirs: dict[str, str] = {}
            moves: list[tuple[str | None, str]] = []
            for old, pid in orphans:
                moves.append((heirs.get(old), pid))
                heirs.setdefault(old, pid)
            for new, pid in moves:
                self.con.execute(f"UPDATE posts SET {col} = %s WHERE id = %s", (new, pid))

    def checkpoint(self, wait_s: float = 10.0) -> bool:
        """Do every rewrite an erasure still owes (`erase.pay_owed`: one month's partition per month touched, not
        the whole store), then CHECKPOINT where allowed. False when some rewrite is still owed: it stays recorded
        for the next try (any erasure, any running server's indexer every 30 s)."""
        left = pay_owed(self.con, wait_s)
        with contextlib.suppress(psycopg.Error):
            self.con.execute("CHECKPOINT")  # superuser or pg_checkpoint only; the rewrite above is what matters
        return not left

    def erase_pending(self) -> list[str]:
        """Tables whose rewrite an erasure still owes."""
        return [r[0] for r in self._all("SELECT relname FROM erase_pending ORDER BY relname")]

    def erasure_cursor(self) -> int:
        """The newest entry of the `erased` log: a follower that saw a smaller one has rows to drop."""
        return int(self._one("SELECT coalesce(max(n), 0) FROM erased"))

    # -- stats -------------------------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        self.reap_runs()
        return summarize(self._one, self._all)
