"""Erasure inside token shards: a forgotten post's tokens are overwritten where they lie, so no shard file keeps a
decodable copy, whoever asked (`roost forget`, `DELETE /v1/posts/{id}`: roost.erasure runs this).

    erased = redact(home / "shards", ["x:123"])   # names of the sets that held a forgotten post

Every token of the post's document except its end-of-document separator becomes the separator, in place (the
bytes on disk are overwritten, not copied elsewhere and unlinked), and its line in `{split}.ids` is emptied. The
layout does not move — every document keeps its offsets, so a loader's saved position stays valid — and the
manifest's sha256 of each touched file is updated. The set is also marked stale: models trained on it still
learned from the post (`roost tokenize --rebuild-stale` rebuilds it without the empty documents).

Crash safety: the documents to overwrite are written into the manifest (`redacting`) before any byte changes and
cleared after; a set found with `redacting` (an erasure killed half-way) is finished by the next call, and
`roost shards verify` reports it. Overwriting with the separator twice is harmless.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from roost.data import tokenizer as toklib
from roost.data.shards import read_manifest, shard_sets, write_manifest
from roost.errors import RoostError


def redact(root: Path, forgotten_ids: Iterable[str]) -> list[str]:
    """Overwrite every forgotten post's tokens in every shard set under `root` (and finish any interrupted
    erasure); mark those sets stale. Returns the names of the sets that held one of the posts."""
    gone = set(forgotten_ids)
    flagged: list[str] = []
    for d in shard_sets(root) if root.is_dir() else []:
        try:
            m = read_manifest(d)
        except RoostError:
            continue
        pending: dict[str, list[int]] = {s: list(v) for s, v in (m.get("redacting") or {}).items()}
        hits = 0
        example = ""
        for split, info in m["splits"].items():
            ids_path = d / info["ids_file"]
            if not ids_path.is_file():
                continue
            lines = ids_path.read_text(encoding="utf-8").split("\n")
            found = [i for i, pid in enumerate(lines) if pid and pid in gone]
            if found:
                example = example or lines[found[0]]
                hits += len(found)
                pending[split] = sorted(set(pending.get(split, [])) | set(found))
        if not pending:
            continue
        m["redacting"] = pending  # first: a crash from here on is finished by the next call
        if hits:
            m["stale"] = {
                "reason": "holds forgotten posts",
                "posts": hits + int((m.get("stale") or {}).get("posts", 0)),
                "example": example,
                "redacted": True,
                "at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
        write_manifest(d, m)
        for split, docs in pending.items():
            _overwrite(d, m, split, docs)
        m.pop("redacting", None)
        write_manifest(d, m)
        if hits:
            flagged.append(d.name)
    return flagged


def _overwrite(d: Path, m: dict[str, Any], split: str, docs: list[int]) -> None:
    """Documents `docs` (indices in the split) become separators in place; their ids lines are emptied; the
    touched files' sha256 in `m` are updated."""
    info = m["splits"][split]
    sep = int(m["tokenizer"]["separator_id"])
    dtype = np.dtype(m["dtype"])
    ends = np.fromfile(d / info["docs_file"], dtype=np.uint64)
    file_starts = np.cumsum([0] + [int(f["tokens"]) for f in info["files"]])
    touched: set[int] = set()
    for doc in docs:
        if doc >= len(ends):
            continue
        start, end = (int(ends[doc - 1]) if doc else 0), int(ends[doc]) - 1  # keep the document's separator
        while start < end:
            fi = int(np.searchsorted(file_starts, start, side="right")) - 1
            stop = min(end, int(file_starts[fi + 1]))
            _fill(d / info["files"][fi]["file"], start - int(file_starts[fi]), stop - start, sep, dtype)
            touched.add(fi)
            start = stop
    for fi in sorted(touched):
        info["files"][fi]["sha256"] = toklib.sha256_file(d / info["files"][fi]["file"])
    ids_path = d / info["ids_file"]
    lines = ids_path.read_text(encoding="utf-8").split("\n")
    for doc in docs:
        if doc < len(lines):
            lines[doc] = ""
    tmp = ids_path.with_name(ids_path.name + ".tmp")
    tmp.write_text("\n".join(lines), encoding="utf-8")
    os.replace(tmp, ids_path)
    info["ids_sha256"] = toklib.sha256_file(ids_path)


def _fill(path: Path, offset: int, count: int, value: int, dtype: np.dtype[Any]) -> None:
    """`count` tokens from token `offset` of one shard file set to `value`, written in place and synced."""
    with path.open("r+b") as fh:
        fh.seek(offset * dtype.itemsize)
        fh.write(np.full(count, value, dtype=dtype).tobytes())
        fh.flush()
        os.fsync(fh.fileno())
