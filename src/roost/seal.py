"""Seals: proof that a folder's files are exactly what roost wrote in this home. Run `roost train --nproc 2 ...`
(it seals each sharded checkpoint); `roost train --resume` and `roost export` verify before reading one.

Why: a sharded (DCP) checkpoint's `.metadata` is a pickle, and torch's planner unpickles some shard entries, so
reading a checkpoint written elsewhere can run its author's code. Bookkeeping inside the folder (sizes, hashes in
`meta.json`) travels with a foreign folder and can be forged along with the payload, so the seal rests on what
such a folder cannot bring: an HMAC-SHA256 keyed with a secret kept in the home (`<home>/.roost/secret`, 32
random bytes, mode 0600, created on first use; one that group or others may read or write is refused, never
re-moded), over the sha256 of every file in the folder. A folder copied in from elsewhere, or changed after roost
wrote it, fails the check and nothing in it is deserialised.

    seal(ws, folder)                 # after roost has written every file (ws: the home's roost.workspace.Workspace)
    verify(ws, folder, "checkpoint") # before anything in it is read; raises RoostError naming the folder
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import stat
from pathlib import Path

from roost.errors import RoostError
from roost.hashing import sha256_file
from roost.workspace import Workspace

SEAL = "roost-seal.json"
FOREIGN_HINT = (
    "roost never unpickles a checkpoint it did not write in this home; to bring in weights from elsewhere, "
    "give a HF safetensors folder or a GGUF file to `roost import`"
)


def _key(ws: Workspace) -> bytes:
    path = ws.secret_file
    path.parent.mkdir(parents=True, exist_ok=True)
    try:  # created once, readable by the owner only; O_EXCL: two processes never write different secrets
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "wb") as fh:
            fh.write(secrets.token_bytes(32))
            fh.flush()
            os.fsync(fh.fileno())
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        raise RoostError(f"{path}: the home's secret must be a regular file readable by you") from None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise RoostError(f"{path}: the home's secret must be a regular file")
        if st.st_mode & 0o077:  # others could forge seals (read) or swap the key (write): refused, never fixed here
            raise RoostError(
                f"{path}: the home's secret is open to other users (mode {stat.S_IMODE(st.st_mode):04o}); anyone who "
                f"can read it can forge this home's seals. Run `chmod 600 {path}` if only you could have changed it, "
                "else delete it (roost makes a new one; checkpoints sealed with the old one are then refused)"
            )
        key = fh.read(33)
    if len(key) != 32:
        raise RoostError(f"{path}: not a roost secret (expected 32 bytes, found {len(key)})")
    return key


# folders verified in this process, keyed by their files' (name, size, mtime, inode): hashed once per load path
# (ctime too: unlike mtime it cannot be set back by a writer)
_verified: set[tuple[str, tuple[tuple[str, int, int, int, int], ...]]] = set()


def _stamp(folder: Path) -> tuple[str, tuple[tuple[str, int, int, int, int], ...]]:
    rows = []
    for p in sorted(folder.rglob("*")):
        st = p.lstat()
        rows.append((p.relative_to(folder).as_posix(), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino))
    return str(folder.resolve()), tuple(rows)


def _digest(folder: Path) -> dict[str, str]:
    files: dict[str, str] = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        if p.is_symlink():
            raise RoostError(f"{p}: a symlink inside a sealed folder")
        if p.is_dir() or rel == SEAL:
            continue
        if not p.is_file():
            raise RoostError(f"{p}: not a regular file")
        files[rel] = sha256_file(p)
    return files


def _mac(key: bytes, files: dict[str, str]) -> str:
    return hmac.new(key, json.dumps(files, sort_keys=True).encode(), hashlib.sha256).hexdigest()


def seal(ws: Workspace, folder: Path) -> None:
    """Record the sha256 of every file in `folder` with this home's HMAC (call when the folder is complete)."""
    files = _digest(folder)
    (folder / SEAL).write_text(json.dumps({"files": files, "hmac": _mac(_key(ws), files)}, indent=1))


def verify(ws: Workspace, folder: Path, what: str = "checkpoint") -> None:
    """Raise RoostError unless every file in `folder` is the one roost sealed in this home (none added, none
    changed). Reads only the seal (JSON) and the files' bytes for hashing: nothing is deserialised."""
    if folder.is_symlink() or not folder.is_dir():
        raise RoostError(f"{folder}: not a {what} folder")
    stamp = _stamp(folder)
    if stamp in _verified:
        return
    try:
        recorded = json.loads((folder / SEAL).read_text())
        mac = recorded["hmac"]
        if not isinstance(mac, str):
            raise TypeError
    except FileNotFoundError:
        raise RoostError(f"{folder}: this {what} carries no seal of this home; {FOREIGN_HINT}") from None
    except (OSError, ValueError, KeyError, TypeError):
        raise RoostError(f"{folder}/{SEAL}: unreadable; {FOREIGN_HINT}") from None
    if not hmac.compare_digest(_mac(_key(ws), _digest(folder)), mac):
        raise RoostError(
            f"{folder}: this {what} was not written by roost in this home, or its files changed since; {FOREIGN_HINT}"
        )
    _verified.add(stamp)
