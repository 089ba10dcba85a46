"""Post stores for the data benchmarks: the real demo corpus through `roost ingest`, or N generated posts
inserted straight into a store (the ingest pipeline has its own benchmark, bench.ingest)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from roost.config import CorpusConfig
from roost.corpus.demo import build, find_vader_sdist
from roost.corpus.ingest import ingest
from roost.corpus.store import COLUMNS, Store
from roost.corpus.writers import synthetic_drafts


def demo_store(root: Path) -> Path:
    summary = build(root / "exports", find_vader_sdist(None, root / "cache"))
    db = root / "corpus.db"
    ingest([summary.path], db, CorpusConfig(), show_progress=False)
    return db


def generated_store(root: Path, n: int) -> Path:
    db = root / "corpus.db"
    with Store(db):
        pass
    con = sqlite3.connect(db)
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
    with con:
        con.executemany(
            f"INSERT OR IGNORE INTO posts ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})", rows
        )
    con.close()
    return db
