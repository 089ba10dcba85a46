"""Erasure inside token shards: a forgotten post's tokens are overwritten where they lie, so no shard file keeps a
decodable copy, whoever asked (`roost forget`, `DELETE /v1/posts/{id}`: roost.erasure runs this).

    done = redact(home / "shards", ids, Erasures(before, after, store.existing))

Every token of the post's document except its end-of-document separator becomes the separator, in place (the
bytes on disk are overwritten, not copied elsewhere and unlinked), and its line in `{split}.ids` is emptied. The
layout does not move — every document keeps its offsets, so a loader's saved position stays valid — and the
manifest's sha256 of each touched file is updated. The set is also marked stale: models trained on it still
learned from the post (`roost tokenize --rebuild-stale` rebuilds it without the empty documents).

What to overwrite is decided by the store, not only by this call: each set records the store's erasure cursor it
has seen (`erased_cursor`, from the snapshot it was built from, then from each redaction). A set that missed an
erasure — one killed between the store's commit and this step, a set built from a snapshot older than an
erasure — is checked whole against the store (every id no longer stored is overwritten). `build` makes the same
check before it swaps a new set in, and leftovers of killed builds are removed (`sweep`).

Crash safety: the documents to overwrite are written into the manifest (`redacting`) before any byte changes and
cleared after; a set found with `redacting` is finished by the next call, and `roost shards verify` reports it.
A set that cannot be read or written is reported and skipped; the others are still done.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from roost.data import tokenizer as toklib
from roost.data.manifest import read_ids, read_manifest, sets_lock, shard_sets, write_manifest
from roost.errors import RoostError


@dataclass(frozen=True)
class Erasures:
    """The store's erasure cursor before and after this erasure, and a way to ask which ids it still holds."""

    before: int
    after: int
    existing: Callable[[list[str]], set[str]]


def redact(root: Path, forgotten_ids: Iterable[str], erasures: Erasures) -> tuple[list[str], list[str]]:
    """Overwrite every forgotten post's tokens in every shard set under `root` (and finish any interrupted
    erasure); mark those sets stale. Returns (the sets that held one of the posts, problems as "set: why")."""
    gone = set(forgotten_ids)
    flagged: list[str] = []
    problems: list[str] = []
    if not root.is_dir():
        return flagged, problems
    with sets_lock(root):
        sweep(root)
        for d in shard_sets(root):
            try:
                if redact_set(d, gone, erasures):
                    flagged.append(d.name)
            except (OSError, ValueError, KeyError, TypeError, IndexError, RoostError) as e:
                problems.append(f"{d.name}: {e}")
    return flagged, problems


def redact_set(d: Path, gone: set[str], erasures: Erasures) -> bool:
    """One set (see `redact`); True when it held a forgotten post."""
    m = read_manifest(d)
    seen = m.get("erased_cursor", (m.get("corpus") or {}).get("erased_cursor"))
    whole = not isinstance(seen, int) or seen < erasures.before  # it missed an erasure: check every id
    pending: dict[str, list[int]] = {s: list(v) for s, v in (m.get("redacting") or {}).items()}
    hits, example = 0, ""
    for split, info in m["splits"].items():
        ids = read_ids(d / info["ids_file"], int(info["docs"]))
        stored = erasures.existing([i for i in ids if i]) if whole else set()
        found = [n for n, pid in enumerate(ids) if pid and (pid in gone or (whole and pid not in stored))]
        if found:
            example = example or ids[found[0]]
            hits += len(found)
            pending[split] = sorted(set(pending.get(split, [])) | set(found))
    m["erased_cursor"] = erasures.after
    if not pending:
        write_manifest(d, m)
        return False
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
    return hits > 0


def sweep(root: Path) -> list[str]:
    """Remove what killed builds left (`.NAME.tmp-PID`, `.NAME.old-PID` of a process that is gone): a temp set
    may hold posts erased since. Returns the names removed."""
    removed = []
    for p in root.glob(".*-*"):
        kind, _, pid = p.name.rpartition("-")
        if not p.is_dir() or p.is_symlink() or not pid.isdigit() or not kind.endswith((".tmp", ".old")):
            continue
        if int(pid) == os.getpid() or _alive(int(pid)):
            continue
        shutil.rmtree(p, ignore_errors=True)
        removed.append(p.name)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
    ids = read_ids(ids_path, int(info["docs"]))
    for doc in docs:
        if doc < len(ids):
            ids[doc] = ""
    tmp = ids_path.with_name(ids_path.name + ".tmp")
    tmp.write_bytes("".join(i + "\n" for i in ids).encode("utf-8"))
    os.replace(tmp, ids_path)
    info["ids_sha256"] = toklib.sha256_file(ids_path)


def _fill(path: Path, offset: int, count: int, value: int, dtype: np.dtype[Any]) -> None:
    """`count` tokens from token `offset` of one shard file set to `value`, written in place and synced."""
    with path.open("r+b") as fh:
        fh.seek(offset * dtype.itemsize)
        fh.write(np.full(count, value, dtype=dtype).tobytes())
        fh.flush()
        os.fsync(fh.fileno())
