"""The whole pipeline on a PostgreSQL store with one flag: `--store URL` (set once, every stage follows it through
`$ROOST_STORE`): ingest, stats, tokenizer, shards, search index, search, forget — the same results as on SQLite."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import pg_server, pg_url, run_roost  # noqa: F401

QUERY = "rain OR snow OR coffee OR morning"


def _run(home: Path, store: str | None, *args: str) -> str:
    flags = ["--home", str(home)] + (["--store", store] if store else [])
    return run_roost(*flags, *args).stdout


def _ids(out: str) -> list[str]:
    """The ids of `roost search --json` output (one JSON object per hit)."""
    dec, ids, i = json.JSONDecoder(), [], 0
    while (i := out.find("{", i)) >= 0:
        obj, i = dec.raw_decode(out, i)
        ids.append(obj["id"])
    return ids


def test_pipeline_on_postgres_equals_sqlite(pg_url: str, tmp_path: Path) -> None:  # noqa: F811
    results = {}
    for name, store in (("sqlite", None), ("postgresql", pg_url)):
        home = tmp_path / name
        _run(home, None, "demo-corpus", "--posts", "400")
        _run(home, store, "ingest", "-q", str(home / "exports"))
        _run(home, store, "tokenizer", "train", "--vocab-size", "1024")
        _run(home, store, "tokenize", "--val-fraction", "0.05")
        _run(home, store, "index")
        hits = _ids(_run(home, store, "search", QUERY, "--mode", "keyword", "-k", "5", "--json"))
        tokenizer = (home / "tokenizers/default/tokenizer.json").read_bytes()
        results[name] = (hits, tokenizer)
        assert not (home / "corpus.db").exists() or store is None  # the PostgreSQL run wrote no SQLite store
    (kw_sqlite, tok_sqlite), (kw_pg, tok_pg) = results["sqlite"], results["postgresql"]
    assert len(kw_sqlite) == 5 and kw_sqlite == kw_pg  # the same posts found, in the same order
    assert tok_sqlite == tok_pg  # the tokenizer trained on the same texts in the same order
    victim = kw_pg[0]
    _run(tmp_path / "postgresql", pg_url, "forget", "--post", victim)
    after = _ids(_run(tmp_path / "postgresql", pg_url, "search", QUERY, "--mode", "keyword", "-k", "5", "--json"))
    assert after and victim not in after
    stats = _run(tmp_path / "postgresql", pg_url, "corpus", "stats")
    assert "posts" in stats


def test_search_backend_postgres_from_roost_toml(pg_url: str, tmp_path: Path) -> None:  # noqa: F811
    """`[search] backend = "postgres"`: `roost index` fills the index in the store's database, `roost search` reads
    it (every hit holds the query's operators), and `roost forget` erases from it."""
    home = tmp_path / "h"
    _run(home, None, "demo-corpus", "--posts", "300")
    (home / "roost.toml").write_text(f'[store]\nurl = "{pg_url}"\n\n[search]\nbackend = "postgres"\n')
    _run(home, None, "ingest", "-q", str(home / "exports"))
    out = _run(home, None, "index")
    assert "the store's PostgreSQL database" in " ".join(out.split()) and not (home / "index").exists()
    hits = _ids(_run(home, None, "search", QUERY, "--mode", "keyword", "-k", "5", "--json"))
    assert len(hits) >= 2
    tagged = _run(home, None, "search", QUERY + " -filter:replies", "--mode", "hybrid", "-k", "5", "--json")
    dec, i = json.JSONDecoder(), 0
    while (i := tagged.find("{", i)) >= 0:
        obj, i = dec.raw_decode(tagged, i)
        assert obj["id"]  # hybrid answers from PostgreSQL too
    _run(home, None, "forget", "--post", hits[0])
    after = _ids(_run(home, None, "search", QUERY, "--mode", "keyword", "-k", "5", "--json"))
    assert after and hits[0] not in after
