"""A shard set's manifest and ids files: read and written by `roost tokenize` (roost.data.shards) and by erasure
inside shards (roost.data.erase), and `verify`, which checks a set's files against its manifest (the loader
calls it before training; `roost shards verify`). Nothing here reads tokens.

    m = read_manifest(home / "shards/default")      # RoostError naming the file when absent, corrupt or foreign
    ids = read_ids(home / "shards/default/train.ids", m["splits"]["train"]["docs"])
"""

from __future__ import annotations

import contextlib
import fcntl
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from roost.errors import RoostError
from roost.hashing import sha256_file

MANIFEST_VERSION = 1


def write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    tmp = directory / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=1))
    tmp.replace(directory / "manifest.json")


def read_manifest(directory: Path) -> dict[str, Any]:
    path = directory / "manifest.json"
    if not path.is_file():
        raise RoostError(f"{directory}: no shard set here (manifest.json missing); run `roost tokenize`")
    try:
        m = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RoostError(f"{path}: corrupt manifest ({e})") from None
    if not isinstance(m, dict) or m.get("version") != MANIFEST_VERSION or "splits" not in m:
        raise RoostError(f"{path}: not a roost shard manifest of version {MANIFEST_VERSION}")
    return m


def shard_sets(root: Path) -> list[Path]:
    return sorted(p for p in root.glob("*") if (p / "manifest.json").is_file() and not p.name.startswith("."))


def read_ids(path: Path, docs: int) -> list[str]:
    """The post ids of a split, one per document (an erased one is ""), split on b"\\n" only; RoostError unless
    there are exactly `docs` of them (ids never hold a line break: roost.corpus.clean refuses them)."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise RoostError(
            f"{path}: cannot read the ids of this split ({e.strerror}); rebuild with `roost tokenize`"
        ) from None
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    if len(lines) != docs:
        raise RoostError(f"{path}: {len(lines)} ids for {docs} documents; rebuild with `roost tokenize`")
    return [x.decode("utf-8", "surrogateescape") for x in lines]


@contextlib.contextmanager
def sets_lock(root: Path) -> Iterator[None]:
    """Held while a set is swapped into place and while an erasure overwrites sets, so a set built from a snapshot
    older than an erasure is either checked before its swap or seen by that erasure (an OS lock: released when
    the holder dies)."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def verify(directory: Path, checksums: bool = True) -> dict[str, Any]:
    """Check every file of a set against its manifest (existence, size, and sha256 when `checksums`)."""
    m = read_manifest(directory)
    if m.get("redacting"):
        raise RoostError(
            f"{directory}: an erasure was interrupted while overwriting forgotten posts' tokens; the next "
            "`roost forget` (any target) finishes it, or rebuild with `roost tokenize --rebuild-stale`"
        )
    size = np.dtype(m["dtype"]).itemsize
    for split, info in m["splits"].items():
        for f in info["files"]:
            p = directory / f["file"]
            if not p.is_file():
                raise RoostError(f"{p}: shard file missing (split {split}); rebuild with `roost tokenize`")
            if p.stat().st_size != f["tokens"] * size:
                raise RoostError(
                    f"{p}: {p.stat().st_size} bytes, manifest says {f['tokens']} tokens × {size} bytes; "
                    "the shard is truncated or corrupt — rebuild with `roost tokenize`"
                )
            if checksums and sha256_file(p) != f["sha256"]:
                raise RoostError(f"{p}: sha256 differs from manifest.json; the shard is corrupt — rebuild it")
        ids = directory / info["ids_file"]
        if checksums and info.get("ids_sha256") and (not ids.is_file() or sha256_file(ids) != info["ids_sha256"]):
            raise RoostError(f"{ids}: missing or its sha256 differs from manifest.json; rebuild with `roost tokenize`")
        read_ids(ids, int(info["docs"]))
        docs = directory / info["docs_file"]
        if not docs.is_file() or docs.stat().st_size != info["docs"] * 8:
            raise RoostError(f"{docs}: document index missing or of the wrong size; rebuild with `roost tokenize`")
    return m
