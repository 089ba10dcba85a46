"""Erasure on PostgreSQL: the rewrites that take deleted rows' bytes out of the table files, and the bookkeeping of
rewrites still owed (`erase_pending`, migration 0004). Called by `PgStore.checkpoint` after `roost forget` /
`DELETE /v1/posts/{id}`, and by `PgSearch` for `search_docs` (docs/security.md, "Erasure on PostgreSQL").
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from typing import Any

import psycopg

LOCK_TIMEOUT = "5s"  # the erasure rewrite waits this long for a table's lock, then reports and retries later


def older_than(con: psycopg.Connection[Any], deleted_by: int) -> int:
    """Sessions, prepared transactions and replication slots that may still see rows deleted by `deleted_by`:
    a snapshot (xmin) or a transaction of their own (xid) at or before it. VACUUM keeps such rows."""
    x = str(deleted_by % 2**32)
    sql = (
        "SELECT (SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND datname = current_database() AND ("
        "  (backend_xmin IS NOT NULL AND age(backend_xmin) >= age(%(x)s::text::xid)) OR"
        "  (backend_xid IS NOT NULL AND age(backend_xid) >= age(%(x)s::text::xid))))"
        " + (SELECT count(*) FROM pg_prepared_xacts WHERE database = current_database()"
        "    AND age(transaction) >= age(%(x)s::text::xid))"
        " + (SELECT count(*) FROM pg_replication_slots WHERE xmin IS NOT NULL AND age(xmin) >= age(%(x)s::text::xid))"
    )
    return int(con.execute(sql, {"x": x}).fetchone()[0])  # type: ignore[index]


def erase_rows(con: psycopg.Connection[Any], tables: Iterable[str], deleted_by: int, wait_s: float = 10.0) -> set[str]:
    """Rewrite `tables` (VACUUM FULL) so rows deleted by transaction `deleted_by` leave their files: a plain VACUUM
    frees a dead row's space but PostgreSQL never overwrites it in place, so its bytes would stay in the page.
    First waits (up to `wait_s`) until nothing older can still see the rows (`older_than`); then each table is
    rewritten, waiting at most LOCK_TIMEOUT for its lock, and checked (its file must change: a role that may not
    rewrite a table gets only a warning from PostgreSQL). Returns the tables NOT rewritten (all of them when the
    wait ran out: a rewrite then could not drop the rows). The server's WAL, backups and replicas keep their own
    copies until their own retention."""
    deadline = time.monotonic() + wait_s
    while older_than(con, deleted_by):
        if time.monotonic() >= deadline:
            return set(tables)
        time.sleep(0.05)
    left = set()
    con.execute(f"SET lock_timeout = '{LOCK_TIMEOUT}'")  # a reader holding a table must not stall every writer
    try:
        for t in sorted(set(tables)):
            if not re.fullmatch(r"[a-z0-9_.]+", t):  # our own table names (the regclass text of a partition)
                continue
            before = con.execute("SELECT pg_relation_filenode(to_regclass(%s))", (t,)).fetchone()
            if before is None or before[0] is None:
                continue  # gone (a dropped partition): nothing left to rewrite
            try:
                con.execute(f"VACUUM (FULL) {t}".encode())
            except psycopg.errors.LockNotAvailable:
                left.add(t)
                continue
            after = con.execute("SELECT pg_relation_filenode(to_regclass(%s))", (t,)).fetchone()
            if after is None or after[0] == before[0]:
                left.add(t)  # not rewritten (not the owner, no MAINTAIN privilege)
    finally:
        con.execute("RESET lock_timeout")
    return left


def owe_rewrite(con: psycopg.Connection[Any], relname: str) -> None:
    """Inside the deleting transaction: `relname` owes an erasure rewrite (erase_pending) until `pay_owed` does it."""
    con.execute(
        "INSERT INTO erase_pending VALUES (%s, pg_current_xact_id()::text::bigint) "
        "ON CONFLICT (relname) DO UPDATE SET deleted_by = excluded.deleted_by",
        (relname,),
    )


def pay_owed(con: psycopg.Connection[Any], wait_s: float = 10.0) -> list[str]:
    """Do every rewrite an erasure still owes (`erase_pending`, whoever's erasure it was: posts partitions,
    signatures, tombstones after a migration, search_docs); returns the tables still owed (recorded for the next
    try: an older snapshot or writer, a lock held past the timeout, a role that may not rewrite the table)."""
    owed = con.execute("SELECT relname, deleted_by FROM erase_pending ORDER BY relname").fetchall()
    if not owed:
        return []
    newest = max(int(r[1]) for r in owed)
    try:
        left = erase_rows(con, [r[0] for r in owed], newest, wait_s)
    except psycopg.Error:
        return [r[0] for r in owed]
    done = [r[0] for r in owed if r[0] not in left]
    con.execute("DELETE FROM erase_pending WHERE relname = ANY(%s::text[]) AND deleted_by <= %s", (done, newest))
    return sorted(left)
