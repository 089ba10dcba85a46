"""Leak guard: does a generated text reproduce >= 50 consecutive characters of any post in the store?

Built from the store by `roost serve` / `roost compose`: every post (original and scrubbed text) contributes the
hashes of its 25-character windows at offsets 0, 25, 50, … . Any 50-character run shared with a post contains one
of those aligned windows whole, so checking every 25-character window of a candidate finds every leak; each hit is
confirmed by extending the match character by character against the post's text, read back from the store.
Forgotten posts are deleted from the store, so they can never be confirmed; `refresh()` adds newly ingested posts.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from roost.corpus.backend import open_reader

ANCHOR = 25


def _h(s: str) -> int:
    return hash(s) & 0x7FFF_FFFF_FFFF_FFFF


class LeakGuard:
    def __init__(self, db: Path | str, min_chars: int = 50):
        if min_chars < 2 * ANCHOR:
            raise ValueError(f"min_chars must be >= {2 * ANCHOR}")
        self.db, self.min_chars = db, min_chars
        self._store = open_reader(db)
        self._lock = threading.Lock()
        self._hashes = np.zeros(0, dtype=np.int64)
        self._rowids = np.zeros(0, dtype=np.int64)
        self._offsets = np.zeros(0, dtype=np.int32)
        self.max_rowid = 0
        self.tomb_seen = -1
        self.refresh()

    def refresh(self) -> int:
        """Index posts added since the last call, and drop posts erased since; returns how many were added."""
        before = self.max_rowid
        with self._lock:
            tomb = self._store.erasure_cursor()
            if tomb != self.tomb_seen:  # an erasure: keep no hash of a forgotten post in memory
                self._hashes = np.zeros(0, dtype=np.int64)
                self._rowids = np.zeros(0, dtype=np.int64)
                self._offsets = np.zeros(0, dtype=np.int32)
                self.max_rowid, self.tomb_seen = 0, tomb
            rows = self._store.texts_since(self.max_rowid)
        if not rows:
            return 0
        hs: list[int] = []
        rs: list[int] = []
        offs: list[int] = []
        for rowid, text, scrubbed in rows:
            for body in {text, scrubbed}:
                for i in range(0, len(body) - ANCHOR + 1, ANCHOR):
                    hs.append(_h(body[i : i + ANCHOR]))
                    rs.append(rowid)
                    offs.append(i if body is text else -1 - i)  # negative: offset into the scrubbed text
        h = np.concatenate([self._hashes, np.array(hs, dtype=np.int64)])
        order = np.argsort(h, kind="stable")
        self._hashes = h[order]
        self._rowids = np.concatenate([self._rowids, np.array(rs, dtype=np.int64)])[order]
        self._offsets = np.concatenate([self._offsets, np.array(offs, dtype=np.int32)])[order]
        self.max_rowid = max(r[0] for r in rows)
        return sum(1 for r in rows if r[0] > before)

    def check(self, candidate: str) -> str | None:
        """The id of a post the candidate copies >= min_chars characters from, else None."""
        if len(candidate) < self.min_chars or not len(self._hashes):
            return None
        wins = [_h(candidate[j : j + ANCHOR]) for j in range(len(candidate) - ANCHOR + 1)]
        keys = np.array(wins, dtype=np.int64)
        lo = np.searchsorted(self._hashes, keys, side="left")
        hi = np.searchsorted(self._hashes, keys, side="right")
        for j in np.nonzero(hi > lo)[0]:
            for k in range(lo[j], hi[j]):
                rowid, off = int(self._rowids[k]), int(self._offsets[k])
                with self._lock:
                    row = self._store.post_by_seq(rowid)
                if row is None:  # forgotten since indexing
                    continue
                body, i = (row[1], off) if off >= 0 else (row[2], -1 - off)
                j0 = int(j)
                if body[i : i + ANCHOR] != candidate[j0 : j0 + ANCHOR]:
                    continue
                a, b = j0, i
                while a > 0 and b > 0 and candidate[a - 1] == body[b - 1]:
                    a, b = a - 1, b - 1
                end_c, end_b = j0 + ANCHOR, i + ANCHOR
                while end_c < len(candidate) and end_b < len(body) and candidate[end_c] == body[end_b]:
                    end_c, end_b = end_c + 1, end_b + 1
                if end_c - a >= self.min_chars:
                    return str(row[0])
        return None

    def close(self) -> None:
        self._store.close()
