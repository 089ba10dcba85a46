"""The vector index: HNSW from usearch (cosine, f32 or i8) over MiniLM embeddings keyed by store rowid, plus the
raw vectors (for exact search when a filter leaves few candidates, so filtered recall stays ~1).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from usearch.index import Index

from roost.search.embed import DIM


class VectorIndex:
    def __init__(self, path: Path, dtype: str = "f32"):
        self.path = path
        self.index = Index(ndim=DIM, metric="cos", dtype=dtype)
        self.keys = np.zeros(0, dtype=np.int64)
        self.vecs = np.zeros((0, DIM), dtype=np.float32)
        if (path / "vectors.usearch").exists():
            self.index.load(str(path / "vectors.usearch"))
            self.keys = np.load(path / "keys.npy")
            self.vecs = np.load(path / "vecs.npy")

    def add(self, keys: np.ndarray, vecs: np.ndarray) -> None:
        if not len(keys):
            return
        self.index.add(keys.astype(np.uint64), vecs)
        self.keys = np.concatenate([self.keys, keys.astype(np.int64)])
        self.vecs = np.concatenate([self.vecs, vecs.astype(np.float32)])

    def remove(self, keys: list[int]) -> None:
        if not keys:
            return
        ks = np.array(keys, dtype=np.int64)
        present = ks[np.isin(ks, self.keys)]
        for k in present.tolist():
            self.index.remove(int(k))
        keep = ~np.isin(self.keys, ks)
        self.keys, self.vecs = self.keys[keep], self.vecs[keep]

    def save(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        self.index.save(str(self.path / "vectors.usearch"))
        np.save(self.path / "keys.npy", self.keys)
        np.save(self.path / "vecs.npy", self.vecs)

    def search(self, vec: np.ndarray, k: int) -> list[tuple[int, float]]:
        """(rowid, cosine similarity) by approximate search."""
        if not len(self.keys):
            return []
        m = self.index.search(vec, min(k, len(self.keys)))
        return [(int(key), 1.0 - float(d)) for key, d in zip(m.keys, m.distances, strict=True)]

    def exact(self, vec: np.ndarray, k: int, among: list[int] | None = None) -> list[tuple[int, float]]:
        """(rowid, cosine similarity) by brute force, optionally among some rowids only."""
        sel = np.isin(self.keys, np.array(among, dtype=np.int64)) if among is not None else slice(None)
        keys, vecs = self.keys[sel], self.vecs[sel]
        if not len(keys):
            return []
        sims = vecs @ vec
        top = np.argsort(-sims)[:k]
        return [(int(keys[i]), float(sims[i])) for i in top]
