"""Post stores for the data benchmarks: the real demo corpus through `roost ingest`, or N generated posts
inserted straight into a SQLite or PostgreSQL store (the ingest pipeline has its own benchmark, bench.ingest)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from roost.config import CorpusConfig
from roost.corpus.backend import open_store
from roost.corpus.ingest import ingest
from roost.corpus.rows import COLUMNS
from roost.corpus.sqlite import Store
from roost.demo.build import build, find_vader_sdist
from roost.demo.writers import synthetic_drafts


def demo_store(root: Path) -> Path:
    summary = build(root / "exports", find_vader_sdist(None, root / "cache"))
    db = root / "corpus.db"
    ingest([summary.path], db, CorpusConfig(), show_progress=False)
    return db


def generated_rows(n: int) -> list[tuple]:
    """N generated posts as store rows (the COLUMNS of roost.corpus.rows), the same for every backend."""
    rows = []
    for d in synthetic_drafts(n, seed=3):
        vals = {c: None for c in COLUMNS} | {
            "id": f"x:{d.id}",
            "author": f"user{int(d.id) % 5000}",
            "created_at": d.created_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "text": d.text,
            "text_scrubbed": d.text,
            "lang": "en",
            "hashtags": "[]",
            "mentions": "[]",
            "urls": "[]",
            "visibility": "public",
            "source": "x",
            "pii_hits": 0,
        }
        rows.append(tuple(vals[c] for c in COLUMNS))
    return rows


def generated_store(root: Path, n: int, rows: list[tuple] | None = None) -> Path:
    """A SQLite store of `rows` (default: `generated_rows(n)`), inserted in one transaction."""
    db = root / "corpus.db"
    with Store(db):
        pass
    con = sqlite3.connect(db)
    with con:
        con.executemany(
            f"INSERT OR IGNORE INTO posts ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
            rows if rows is not None else generated_rows(n),
        )
    con.close()
    return db


def generated_pg_store(url: str, rows: list[tuple]) -> None:
    """The same rows in a PostgreSQL store, through the store's own write path (COPY, 10,000 per batch)."""
    with open_store(url) as store:
        for i in range(0, len(rows), 10_000):
            store.write_batch(rows[i : i + 10_000], [])
