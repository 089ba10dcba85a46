"""Token shards: the store's training text tokenised into memmap files with a document index and a manifest.

Run: `roost tokenize [--name default] [--tokenizer default|PATH]` writes <home>/shards/<name>/:
  {split}-00000.bin ...   token ids, uint16 when the vocabulary fits, else uint32, each document followed by the
                          end-of-document token; a new file every `shard_tokens` tokens
  {split}.docs.bin        uint64 end offset of every document in the split's token stream
  {split}.ids             post ids, one per line, in stream order
  manifest.json           tokenizer sha256, corpus snapshot, split rule, files with sizes and sha256, token counts
The split is a hash of the post id (or the author, to hold out whole authors). Posts are read in batches inside
one SQLite read transaction (a consistent snapshot; memory does not grow with the corpus), tokenised with
`encode_batch_fast` (Rust threads on every core) while the next batch is read, and streamed to disk. The set is
built in a temp directory and renamed into place. `roost forget` overwrites a forgotten post's tokens in place and
marks the sets that held it stale (roost.data.erase); `roost tokenize --rebuild-stale` rebuilds them with their
recorded settings.
"""

from __future__ import annotations

import hashlib
import os
import queue
import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from itertools import chain
from pathlib import Path
from typing import IO, Any

import numpy as np

from roost.config import ShardConfig
from roost.corpus.backend import describe, open_reader
from roost.data import tokenizer as toklib
from roost.data.manifest import (  # noqa: F401 — re-exported: shardlib.verify, shardlib.read_manifest, …
    MANIFEST_VERSION,
    read_ids,
    read_manifest,
    sets_lock,
    shard_sets,
    verify,
    write_manifest,
)
from roost.errors import RoostError

SPLITS = ("train", "val")


def is_val(keys: list[str], salt: str, fraction: float) -> list[bool]:
    """Deterministic split: blake2b(salt, key) as a number in [0, 1) below `fraction` → validation."""
    cut = int(fraction * 2**64)
    s = salt.encode()
    return [int.from_bytes(hashlib.blake2b(k.encode(), digest_size=8, key=s[:64]).digest(), "big") < cut for k in keys]


class _SplitWriter:
    """Appends documents of one split: rolling token files, the offsets file and the ids file, all hashed."""

    def __init__(self, out: Path, split: str, dtype: np.dtype[Any], shard_tokens: int):
        self.out, self.split, self.dtype, self.shard_tokens = out, split, dtype, shard_tokens
        self.files: list[dict[str, Any]] = []
        self.tokens = 0
        self.docs = 0
        self._f: IO[bytes] | None = None
        self._h = hashlib.sha256()
        self._in_file = 0
        self._docs_f = (out / f"{split}.docs.bin").open("wb")
        self._ids_f = (out / f"{split}.ids").open("wb")
        self._ids_h = hashlib.sha256()

    def _roll(self) -> None:
        self._close_file()
        name = f"{self.split}-{len(self.files):05d}.bin"
        self._f = (self.out / name).open("wb")
        self.files.append({"file": name, "tokens": 0, "sha256": ""})
        self._h = hashlib.sha256()
        self._in_file = 0

    def _close_file(self) -> None:
        if self._f is not None:
            self._f.close()
            self.files[-1]["tokens"] = self._in_file
            self.files[-1]["sha256"] = self._h.hexdigest()
            self._f = None

    def add(self, ids: list[str], tokens: np.ndarray, ends: np.ndarray) -> None:
        """`tokens`: concatenated documents; `ends`: each document's end offset within `tokens`."""
        if not ids:
            return
        pos = 0
        while pos < len(tokens):
            if self._f is None or self._in_file >= self.shard_tokens:
                self._roll()
            take = min(len(tokens) - pos, self.shard_tokens - self._in_file)
            b = tokens[pos : pos + take].tobytes()
            assert self._f is not None
            self._f.write(b)
            self._h.update(b)
            self._in_file += take
            pos += take
        self._docs_f.write((ends.astype(np.uint64) + np.uint64(self.tokens)).tobytes())
        line = ("\n".join(ids) + "\n").encode()
        self._ids_f.write(line)
        self._ids_h.update(line)
        self.tokens += len(tokens)
        self.docs += len(ids)

    def close(self) -> dict[str, Any]:
        self._close_file()
        self._docs_f.close()
        self._ids_f.close()
        return {
            "tokens": self.tokens,
            "docs": self.docs,
            "files": self.files,
            "docs_file": f"{self.split}.docs.bin",
            "ids_file": f"{self.split}.ids",
            "ids_sha256": self._ids_h.hexdigest(),
        }


def _read_batches(
    db: Path | str, batch: int, stop: threading.Event, meta: dict[str, Any]
) -> Iterator[list[tuple[str, str, str]]]:
    """Training rows (id, author, scrubbed text) in store order inside one read snapshot; fills `meta` first."""
    with open_reader(db) as store:
        yield from store.training_snapshot(batch, meta, stop)


def _prefetched(it: Iterator[Any], depth: int = 2) -> Iterator[Any]:
    """Run `it` in a thread `depth` items ahead (SQLite reads overlap tokenisation, which releases the GIL)."""
    q: queue.Queue[Any] = queue.Queue(depth)
    done = object()

    def work() -> None:
        try:
            for x in it:
                q.put(x)
            q.put(done)
        except BaseException as e:  # handed to the consumer
            q.put(e)

    t = threading.Thread(target=work, daemon=True, name="roost-shard-reader")
    t.start()
    while (x := q.get()) is not done:
        if isinstance(x, BaseException):
            raise x
        yield x
    t.join()


@dataclass
class BuildResult:
    path: Path
    manifest: dict[str, Any] = field(default_factory=dict)


def build(
    db: Path | str, tok_path: Path, out: Path, cfg: ShardConfig, on_batch: Callable[[int, int], None] | None = None
) -> BuildResult:
    """Tokenise the store into the shard set `out` (replaced atomically). `on_batch(posts_done, posts_total)`."""
    tok = toklib.load(tok_path)
    vocab = tok.get_vocab_size()
    dtype = np.dtype(np.uint16 if vocab <= 1 << 16 else np.uint32)
    sep = toklib.separator_id(tok)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    meta: dict[str, Any] = {}
    stop = threading.Event()
    writers = {s: _SplitWriter(tmp, s, dtype, cfg.shard_tokens) for s in SPLITS}
    done = 0
    try:
        for rows in _prefetched(_read_batches(db, cfg.batch_posts, stop, meta)):
            if not rows:
                continue
            encs = tok.encode_batch_fast([r[2] for r in rows], add_special_tokens=False)
            keys = [r[0] if cfg.split_by == "post" else r[1] for r in rows]
            val = is_val(keys, cfg.split_salt, cfg.val_fraction)
            for split in SPLITS:
                want = split == "val"
                pick = [i for i, v in enumerate(val) if v == want]
                if not pick:
                    continue
                seqs = [encs[i].ids + [sep] for i in pick]
                ends = np.cumsum(np.fromiter(map(len, seqs), dtype=np.int64, count=len(seqs)))
                flat = np.fromiter(chain.from_iterable(seqs), dtype=dtype, count=int(ends[-1]))
                writers[split].add([rows[i][0] for i in pick], flat, ends)
            done += len(rows)
            if on_batch:
                on_batch(done, meta.get("posts", done))
    except BaseException:
        stop.set()
        for w in writers.values():
            w.close()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    splits = {s: w.close() for s, w in writers.items()}
    if splits["train"]["docs"] == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise RoostError(f"{db}: no training posts to tokenise (empty store, or everything is a duplicate/repost)")
    manifest = {
        "version": MANIFEST_VERSION,
        "name": out.name,
        "created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "tokenizer": {
            "path": str(tok_path),
            "sha256": toklib.sha256_file(tok_path),
            "vocab_size": vocab,
            "separator_id": sep,
        },
        "dtype": dtype.name,
        "corpus": {"db": describe(db), **meta},
        "config": asdict(cfg),
        "splits": splits,
        "stale": None,
    }
    write_manifest(tmp, manifest)
    from roost.data.erase import Erasures, redact_set, sweep

    with sets_lock(out.parent):
        with open_reader(db) as store:  # an erasure since the snapshot: its posts are overwritten before the swap
            now = store.erasure_cursor()
            if now != meta.get("erased_cursor"):
                redact_set(tmp, set(), Erasures(now, now, store.existing))
                manifest = read_manifest(tmp)
        _swap_into_place(tmp, out)
        sweep(out.parent)
    return BuildResult(out, manifest)


def _swap_into_place(tmp: Path, out: Path) -> None:
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)


def stale_jobs(root: Path) -> list[tuple[str, Path, ShardConfig]]:
    """(name, tokenizer, settings) of every stale set under `root`, to rebuild it as it was built
    (`roost tokenize --rebuild-stale`); a RoostError when a stale set's tokenizer is gone."""
    jobs = []
    for d in shard_sets(root):
        m = read_manifest(d)
        if m.get("stale"):
            tok = Path(m["tokenizer"]["path"])
            if not tok.is_file():
                raise RoostError(
                    f"{d}: its tokenizer {tok} is gone; rebuild with `roost tokenize --name {d.name} --tokenizer NEW`"
                )
            jobs.append((d.name, tok, ShardConfig(**m["config"])))
    return jobs


def list_sets(root: Path) -> list[tuple[Path, dict[str, Any] | str]]:
    """Every set under `root` with its manifest, or why it cannot be read (`roost shards list`)."""
    out: list[tuple[Path, dict[str, Any] | str]] = []
    for d in shard_sets(root):
        try:
            out.append((d, read_manifest(d)))
        except RoostError as e:
            out.append((d, str(e)))
    return out
