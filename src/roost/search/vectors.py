"""The vector index: HNSW from usearch (cosine, f32 or i8 with `roost index --vectors i8`) over MiniLM embeddings
keyed by store rowid, plus the raw vectors (for exact search when a filter leaves few candidates, so filtered
recall stays ~1). Adds and removes are incremental and thread-safe: a serving process adds new posts while it
answers queries.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
from usearch.index import Index

from roost.errors import UsageError
from roost.search.hybrid import DIM

DTYPES = ("f32", "i8")


class VectorIndex:
    def __init__(self, path: Path, dtype: str = "f32"):
        self.path = path
        info = path / "vectors.json"
        if info.is_file():
            dtype = json.loads(info.read_text()).get("dtype", dtype)
        if dtype not in DTYPES:
            raise UsageError(f"vector dtype must be one of {DTYPES}, got {dtype!r}")
        self.dtype = dtype
        self.lock = threading.RLock()
        self.index = Index(ndim=DIM, metric="cos", dtype=dtype)
        self._keys = np.zeros(0, dtype=np.int64)
        self._vecs = np.zeros((0, DIM), dtype=np.float32)
        self.n = 0  # used slots (removed ones included, with key -1)
        self.slot: dict[int, int] = {}
        if (path / "vectors.usearch").exists():
            self.index.load(str(path / "vectors.usearch"))
            keys, vecs = np.load(path / "keys.npy"), np.load(path / "vecs.npy")
            self._keys, self._vecs, self.n = keys, vecs, len(keys)
            self.slot = {int(k): i for i, k in enumerate(keys.tolist()) if k >= 0}

    def __len__(self) -> int:
        return len(self.slot)

    def _grow(self, extra: int) -> None:
        need = self.n + extra
        if need <= len(self._keys):
            return
        cap = max(need, 2 * len(self._keys), 1024)
        keys = np.full(cap, -1, dtype=np.int64)
        vecs = np.zeros((cap, DIM), dtype=np.float32)
        keys[: self.n], vecs[: self.n] = self._keys[: self.n], self._vecs[: self.n]
        self._keys, self._vecs = keys, vecs

    def add(self, keys: np.ndarray, vecs: np.ndarray) -> None:
        """Add (or replace) vectors under these rowids."""
        if not len(keys):
            return
        with self.lock:
            self.remove([int(k) for k in keys if int(k) in self.slot])
            self._grow(len(keys))
            self.index.add(keys.astype(np.uint64), vecs)
            s = self.n
            self._keys[s : s + len(keys)] = keys
            self._vecs[s : s + len(keys)] = vecs
            for i, k in enumerate(keys.tolist()):
                self.slot[int(k)] = s + i
            self.n += len(keys)

    def remove(self, keys: list[int]) -> int:
        with self.lock:
            gone = 0
            for k in keys:
                s = self.slot.pop(int(k), None)
                if s is None:
                    continue
                self.index.remove(int(k))
                self._keys[s] = -1
                gone += 1
            return gone

    def compact(self) -> None:
        """Rebuild the HNSW graph and the raw arrays from the live vectors only: usearch keeps a removed vector's
        bytes in its file, so after an erasure the index is rebuilt (O(n log n); erasures are rare)."""
        with self.lock:
            live = np.nonzero(self._keys[: self.n] >= 0)[0]
            keys, vecs = self._keys[live].copy(), self._vecs[live].copy()
            self.index = Index(ndim=DIM, metric="cos", dtype=self.dtype)
            if len(keys):
                self.index.add(keys.astype(np.uint64), vecs)
            self._keys, self._vecs, self.n = keys, vecs, len(keys)
            self.slot = {int(k): i for i, k in enumerate(keys.tolist())}

    def save(self) -> None:
        with self.lock:
            self.path.mkdir(parents=True, exist_ok=True)
            live = self._keys[: self.n] >= 0  # compact: removed slots are not written
            self.index.save(str(self.path / "vectors.usearch"))
            np.save(self.path / "keys.npy", self._keys[: self.n][live])
            np.save(self.path / "vecs.npy", self._vecs[: self.n][live])
            (self.path / "vectors.json").write_text(json.dumps({"dtype": self.dtype, "dim": DIM}))

    def search(self, vec: np.ndarray, k: int) -> list[tuple[int, float]]:
        """(rowid, cosine similarity) by approximate search."""
        with self.lock:
            if not self.slot:
                return []
            m = self.index.search(vec, min(k, len(self.slot)))
            return [(int(key), 1.0 - float(d)) for key, d in zip(m.keys, m.distances, strict=True)]

    def exact(self, vec: np.ndarray, k: int, among: list[int] | None = None) -> list[tuple[int, float]]:
        """(rowid, cosine similarity) by brute force, optionally among some rowids only."""
        with self.lock:
            if among is None:
                slots = np.nonzero(self._keys[: self.n] >= 0)[0]
            else:
                slots = np.array([s for r in among if (s := self.slot.get(int(r))) is not None], dtype=np.int64)
            if not len(slots):
                return []
            keys, sims = self._keys[slots], self._vecs[slots] @ vec
        top = np.argsort(-sims)[:k]
        return [(int(keys[i]), float(sims[i])) for i in top]
