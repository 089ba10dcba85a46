"""Ingest throughput: N generated posts as a real X archive through the full `roost ingest` pipeline, next to a
bare `json` parse + SQLite insert of the same posts, measured in the same run.

`python -m bench.ingest [--posts 1000000] [--workers 0]`  (results go in docs/benchmarks.md)
"""

from __future__ import annotations

import argparse
import json
import platform
import sqlite3
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from roost.config import CorpusConfig
from roost.corpus.ingest import ingest
from roost.demo.writers import synthetic_drafts, write_x_archive


def bare(archive: Path, db: Path) -> int:
    """The floor: json-parse each tweets file and insert id/author/time/text into SQLite, one transaction."""
    con = sqlite3.connect(db)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("CREATE TABLE posts (id TEXT PRIMARY KEY, author TEXT, created_at TEXT, text TEXT)")
    n = 0
    with con:
        for f in sorted((archive / "data").glob("tweets*.js")):
            raw = f.read_text(encoding="utf-8")
            records = json.loads(raw[raw.index("=") + 1 :])
            rows = [
                (t["tweet"]["id_str"], "loadtest", t["tweet"]["created_at"], t["tweet"]["full_text"]) for t in records
            ]
            con.executemany("INSERT INTO posts VALUES (?, ?, ?, ?)", rows)
            n += len(rows)
    con.close()
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--posts", type=int, default=1_000_000)
    ap.add_argument("--workers", type=int, default=0)
    args = ap.parse_args()
    console = Console()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        archive = write_x_archive(root / "archive", "loadtest", "1", synthetic_drafts(args.posts, seed=1), parts=4)
        size = sum(f.stat().st_size for f in (archive / "data").glob("*.js"))
        console.print(
            f"generated {args.posts:,} posts ({size / 1e6:,.0f} MB of tweets.js) in {time.perf_counter() - t:.1f} s"
        )
        t = time.perf_counter()
        n_bare = bare(archive, root / "bare.db")
        t_bare = time.perf_counter() - t
        t = time.perf_counter()
        report = ingest([archive], root / "corpus.db", CorpusConfig(workers=args.workers), show_progress=False)
        t_roost = time.perf_counter() - t
    table = Table(
        title=f"ingest {args.posts:,} X-archive posts — {platform.machine()}, "
        f"{__import__('os').cpu_count()} cores, Python {platform.python_version()}"
    )
    for col in ("pipeline", "posts", "seconds", "posts/s", "cost vs bare"):
        table.add_column(col, justify="right" if col != "pipeline" else "left")
    table.add_row("bare json + SQLite insert", f"{n_bare:,}", f"{t_bare:.1f}", f"{n_bare / t_bare:,.0f}", "1.00×")
    table.add_row(
        "roost ingest (clean, dedup, PII, lang, store)",
        f"{report.read:,}",
        f"{t_roost:.1f}",
        f"{report.read / t_roost:,.0f}",
        f"{t_roost / t_bare:.2f}×",
    )
    console.print(table)
    console.print(
        f"roost kept {report.kept:,}, duplicates {report.duplicates:,}, near-duplicates "
        f"{report.near_duplicates:,}, reposts {report.reposts:,}, rejected {report.rejected:,}"
    )


if __name__ == "__main__":
    main()
