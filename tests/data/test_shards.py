"""Token shards: exact contents against the store, deterministic split, dtype, stale-on-forget, bad input."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from roost.config import ShardConfig
from roost.corpus.rows import TRAINING_WHERE
from roost.corpus.sqlite import Store
from roost.data import shards as shardlib
from roost.data import tokenizer as toklib
from roost.data.erase import Erasures, redact
from roost.data.loader import TokenLoader
from roost.errors import RoostError
from tests.conftest import run_roost


def _docs(d: Path, split: str) -> list[tuple[str, np.ndarray]]:
    """(post id, tokens) of every document of a split, read back through the manifest and the offsets file."""
    m = shardlib.read_manifest(d)
    info = m["splits"][split]
    stream = np.concatenate([np.fromfile(d / f["file"], dtype=m["dtype"]) for f in info["files"]] or [np.zeros(0)])
    ends = np.fromfile(d / info["docs_file"], dtype=np.uint64).astype(np.int64)
    ids = (d / info["ids_file"]).read_text().splitlines()
    starts = np.concatenate([[0], ends[:-1]])
    return [(pid, stream[s:e]) for pid, s, e in zip(ids, starts, ends, strict=True)]


def _training_rows(db: Path) -> dict[str, tuple[str, str]]:
    con = sqlite3.connect(db)
    rows = {
        r[0]: (r[1], r[2]) for r in con.execute(f"SELECT id, author, text_scrubbed FROM posts WHERE {TRAINING_WHERE}")
    }
    con.close()
    return rows


@pytest.fixture(scope="module")
def built(store_db: Path, tok_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("shards") / "s"
    shardlib.build(store_db, tok_path, out, ShardConfig(val_fraction=0.1, shard_tokens=4096, batch_posts=100))
    return out


def test_shards_hold_exactly_the_training_text(built: Path, store_db: Path, tok_path: Path) -> None:
    tok = toklib.load(tok_path)
    rows = _training_rows(store_db)
    m = shardlib.read_manifest(built)
    seen: dict[str, str] = {}
    for split in ("train", "val"):
        docs = _docs(built, split)
        assert m["splits"][split]["docs"] == len(docs)
        assert m["splits"][split]["tokens"] == sum(len(t) for _, t in docs)
        for pid, toks in docs:
            assert toks[-1] == 0 and 0 not in toks[:-1]  # one separator, at the end
            assert tok.decode(toks[:-1].tolist(), skip_special_tokens=False) == rows[pid][1]
            seen[pid] = split
    assert set(seen) == set(rows)  # every training post once, nothing else
    assert len(m["splits"]["train"]["files"]) > 3 and m["dtype"] == "uint16"
    assert m["tokenizer"]["sha256"] == toklib.sha256_file(tok_path)
    assert m["corpus"]["posts"] == len(rows)
    val_share = m["splits"]["val"]["docs"] / len(rows)
    assert 0.06 < val_share < 0.14
    shardlib.verify(built)  # sha256 of every file matches


def test_split_is_deterministic_and_author_split_holds_out_authors(
    built: Path, store_db: Path, tok_path: Path, tmp_path: Path
) -> None:
    again = tmp_path / "again"
    shardlib.build(store_db, tok_path, again, ShardConfig(val_fraction=0.1, shard_tokens=4096, batch_posts=37))
    a, b = shardlib.read_manifest(built), shardlib.read_manifest(again)
    assert [f["sha256"] for f in a["splits"]["train"]["files"]] == [f["sha256"] for f in b["splits"]["train"]["files"]]
    assert a["splits"]["val"]["ids_sha256"] == b["splits"]["val"]["ids_sha256"]
    by_author = tmp_path / "author"
    shardlib.build(store_db, tok_path, by_author, ShardConfig(val_fraction=0.3, split_by="author", split_salt="x"))
    rows = _training_rows(store_db)
    authors = {s: {rows[pid][0] for pid, _ in _docs(by_author, s)} for s in ("train", "val")}
    assert authors["val"] and authors["train"] and not authors["train"] & authors["val"]


def test_big_vocab_uses_uint32(store_db: Path, tok_path: Path, tmp_path: Path) -> None:
    tok = toklib.load(tok_path)
    tok.add_tokens([f"<extra_{i}>" for i in range(70_000)])
    big = tmp_path / "big.json"
    tok.save(str(big))
    m = shardlib.build(store_db, big, tmp_path / "s32", ShardConfig()).manifest
    assert m["dtype"] == "uint32"
    assert _docs(tmp_path / "s32", "train")[0][1].dtype == np.uint32


def test_forget_marks_stale_and_rebuild_drops_the_post(tmp_path: Path, store_db: Path, tok_path: Path) -> None:
    home = tmp_path / "h"
    (home / "tokenizers/t").mkdir(parents=True)
    (home / "corpus.db").write_bytes(store_db.read_bytes())
    (home / "tokenizers/t/tokenizer.json").write_bytes(tok_path.read_bytes())
    run_roost("--home", str(home), "tokenize", "--tokenizer", "t", "--name", "a", "-q")
    run_roost("--home", str(home), "tokenize", "--tokenizer", "t", "--name", "b", "-q")
    victim = _docs(home / "shards/a", "train")[5][0]
    out = run_roost("--home", str(home), "forget", "--post", victim).stdout
    assert "shard set a held forgotten posts" in out and "shard set b" in out
    m = shardlib.read_manifest(home / "shards/a")
    assert m["stale"]["example"] == victim
    with pytest.raises(RoostError, match="stale"):
        TokenLoader(home / "shards/a", seq_len=8, batch_size=2)
    assert "stale" in run_roost("--home", str(home), "shards", "list").stdout
    run_roost("--home", str(home), "tokenize", "--rebuild-stale", "-q")
    for name in ("a", "b"):
        m = shardlib.read_manifest(home / f"shards/{name}")
        assert m["stale"] is None
        assert victim not in {pid for s in ("train", "val") for pid, _ in _docs(home / f"shards/{name}", s)}
    # a whole author
    author = _training_rows(home / "corpus.db")[_docs(home / "shards/a", "train")[0][0]][0]
    with Store(home / "corpus.db") as store:
        before = store.erasure_cursor()
        gone = store.forget([author], [])["ids"]
        assert gone and redact(home / "shards", gone, Erasures(before, store.erasure_cursor(), store.existing)) == (
            ["a", "b"],
            [],
        )
    kept = {pid for name in ("a", "b") for s in ("train", "val") for pid, _ in _docs(home / f"shards/{name}", s)}
    assert not kept & set(gone)


def test_bad_input_is_named(built: Path, store_db: Path, tok_path: Path, tmp_path: Path) -> None:
    import shutil

    d = tmp_path / "copy"
    shutil.copytree(built, d)
    first = d / shardlib.read_manifest(d)["splits"]["train"]["files"][0]["file"]
    # flipped bytes: size is right, the checksum is not
    data = bytearray(first.read_bytes())
    data[10] ^= 0xFF
    first.write_bytes(bytes(data))
    with pytest.raises(RoostError, match=f"{first.name}: sha256 differs"):
        shardlib.verify(d)
    # truncated: the loader refuses at open, naming the file
    first.write_bytes(bytes(data[:-3]))
    with pytest.raises(RoostError, match=f"{first.name}: .* truncated or corrupt"):
        TokenLoader(d, seq_len=8)
    first.unlink()
    with pytest.raises(RoostError, match=f"{first.name}: shard file missing"):
        TokenLoader(d, seq_len=8)
    (d / "manifest.json").write_text("{not json")
    with pytest.raises(RoostError, match="manifest.json: corrupt manifest"):
        TokenLoader(d, seq_len=8)
    (d / "manifest.json").unlink()
    with pytest.raises(RoostError, match="manifest.json missing"):
        TokenLoader(d, seq_len=8)
    # another tokenizer than the model's
    with pytest.raises(RoostError, match="built with tokenizer"):
        TokenLoader(built, seq_len=8, tokenizer_sha256="0" * 64)
    # longer than the split
    val_tokens = shardlib.read_manifest(built)["splits"]["val"]["tokens"]
    with pytest.raises(RoostError, match=f"seq_len {val_tokens} is longer than the whole val split"):
        TokenLoader(built, split="val", seq_len=val_tokens)


def test_empty_store_and_cli_errors(tmp_path: Path, tok_path: Path) -> None:
    home = tmp_path / "h"
    home.mkdir()
    with Store(home / "corpus.db"):
        pass
    with pytest.raises(RoostError, match="no training posts"):
        shardlib.build(home / "corpus.db", tok_path, home / "shards/x", ShardConfig())
    assert not (home / "shards/x").exists() and not list((home / "shards").glob(".x.tmp*"))
    p = run_roost("--home", str(home), "tokenize", "--tokenizer", str(tok_path), check=False)
    assert p.returncode == 1 and "no training posts" in p.stderr and "Traceback" not in p.stderr
    p = run_roost("--home", str(home), "tokenize", "--val-fraction", "1.5", "--tokenizer", str(tok_path), check=False)
    assert p.returncode == 2 and "val_fraction" in p.stderr
    p = run_roost("--home", str(home), "shards", "verify", "nope", check=False)
    assert p.returncode == 1 and "manifest.json missing" in p.stderr


def test_manifest_is_json_with_ids_reference(built: Path) -> None:
    m = json.loads((built / "manifest.json").read_text())
    assert set(m["splits"]) == {"train", "val"} and m["config"]["val_fraction"] == 0.1
