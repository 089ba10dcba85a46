"""Exact and near-duplicate detection for posts: SHA-1 of the normalised text, and MinHash LSH (datasketch)
over character shingles — shingles rather than words, because posts are short.

Part of `roost ingest`. The first post seen with a text is the original; later copies are flagged
(`dup_of` / `near_dup_of`) and excluded from training text. Reposts never enter either index.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from typing import Any

import numpy as np
from datasketch import LeanMinHash, MinHash, MinHashLSH

from roost.errors import UsageError

_URL = re.compile(r"https?://\S+")
_NONWORD = re.compile(r"[\W_]+")
SEED = 1  # shingles are hashed with CRC-32 (C speed; 32 bits is what the affine32 scheme uses)
SCHEME = "affine32"


def text_key(text: str) -> bytes:
    """Exact-duplicate key: SHA-1 of the normalised text."""
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).digest()


def shingles(text: str, k: int) -> list[bytes]:
    """Character k-shingles (as UTF-8 byte k-grams) of case-folded text, URLs dropped, punctuation/space folded."""
    body = _NONWORD.sub(" ", _URL.sub(" ", text).casefold()).strip().encode("utf-8", "surrogatepass")
    if len(body) <= k:
        return [body] if body else []
    return list({body[i : i + k] for i in range(len(body) - k + 1)})


_PERMUTATIONS: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def signature(text: str, k: int, num_perm: int) -> np.ndarray | None:
    """MinHash signature (uint32 × num_perm) of a text, or None when it has no shingles."""
    sh = shingles(text, k)
    if not sh:
        return None
    perms = _PERMUTATIONS.get(num_perm)
    if perms is None:  # datasketch derives permutations from the seed; build them once per process
        perms = _PERMUTATIONS[num_perm] = MinHash(num_perm=num_perm, seed=SEED, scheme=SCHEME).permutations
    m = MinHash(num_perm=num_perm, seed=SEED, permutations=perms, scheme=SCHEME, hashfunc=zlib.crc32)
    m.update_batch(sh)
    return m.hashvalues.astype(np.uint32)


class NearDupIndex:
    """In-memory MinHash LSH over the originals seen so far (store + this run)."""

    def __init__(self, threshold: float, num_perm: int):
        self.threshold = threshold
        self.num_perm = num_perm
        try:
            self.lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
        except ValueError as e:
            raise UsageError(
                f"near-dup threshold {threshold} with {num_perm} permutations: {e}; "
                "lower the threshold or raise corpus.num_perm"
            ) from None
        self.sigs: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.sigs)

    def _lean(self, sig: np.ndarray) -> LeanMinHash:
        return LeanMinHash(seed=SEED, hashvalues=sig.astype(np.uint64), scheme=SCHEME)

    def add(self, post_id: str, sig: np.ndarray) -> None:
        if post_id in self.sigs:
            return
        self.lsh.insert(post_id, self._lean(sig), check_duplication=False)
        self.sigs[post_id] = sig

    def match(self, sig: np.ndarray) -> str | None:
        """The most similar indexed post whose estimated Jaccard ≥ threshold, or None."""
        best, best_j = None, self.threshold
        for cand in self.lsh.query(self._lean(sig)):
            j = float(np.count_nonzero(self.sigs[cand] == sig)) / self.num_perm
            if j >= best_j and (best is None or j > best_j or cand < best):
                best, best_j = cand, j
        return best

    def remove(self, post_id: str) -> None:
        if self.sigs.pop(post_id, None) is not None:
            self.lsh.remove(post_id)


class MemoryCopies:
    """Copy decisions from memory (the SQLite store, one writer at a time): every original's exact key and MinHash
    signature is loaded at start; before each batch the originals other writers stored since are taken in."""

    def __init__(self, store: Any, threshold: float, num_perm: int, run_id: int):
        self.store, self.num_perm, self.run_id, self.threshold = store, num_perm, run_id, threshold
        # the cursors first: rows another writer commits while the state below is read are read again by follow()
        self.tomb = store.erasure_cursor()
        self.seq = store.max_seq()
        self.originals: dict[bytes, str] = dict(store.original_hashes())
        self.near_index = NearDupIndex(threshold, num_perm)
        for pid, sig in store.signatures():
            if len(sig) == num_perm:
                self.near_index.add(pid, sig)

    def follow(self) -> None:
        """Take in the originals other writers (a server, another ingest) stored since: a copy of one of them is
        then a duplicate here too, whichever process stored the original."""
        top = self.store.max_seq()
        if top == self.seq:
            return
        hashes, sigs = self.store.dedup_state_since(self.seq, self.run_id)
        for key, pid in hashes:
            self.originals.setdefault(key, pid)
        for pid, sig in sigs:
            if len(sig) == self.num_perm:
                self.near_index.add(pid, sig)
        self.seq = top

    def prepare(self, keys: list[bytes], sigs: list[bytes]) -> None:
        """Before deciding a batch (under the store's write lock). After an erasure by anyone, the state is read
        again: a forgotten original must not be anyone's original, and its copies have a new one (an heir)."""
        if self.store.erasure_cursor() != self.tomb:
            MemoryCopies.__init__(self, self.store, self.threshold, self.num_perm, self.run_id)
        self.follow()

    def exact(self, key: bytes) -> str | None:
        return self.originals.get(key)

    def near(self, sig: np.ndarray) -> str | None:
        return self.near_index.match(sig)

    def add(self, key: bytes, post_id: str, sig: np.ndarray | None) -> None:
        """A new original (sig: when it is also a near-copy original)."""
        self.originals[key] = post_id
        if sig is not None:
            self.near_index.add(post_id, sig)


class StoreCopies(MemoryCopies):
    """Copy decisions from the database (PostgreSQL, many writers at once): nothing is loaded at start; before
    each batch, under the write lock, the store returns the stored originals of the batch's exact keys and every
    stored signature sharing an LSH band with one of its signatures (`lookup_copies`, LSH bands in the database),
    and the batch is decided against those plus its own earlier posts. The candidates are the ones a full
    in-memory index would return, so the decisions are the same."""

    def __init__(self, store: Any, threshold: float, num_perm: int, run_id: int):  # noqa: D107 — nothing loaded
        self.store, self.num_perm, self.run_id, self.threshold = store, num_perm, run_id, threshold
        lsh = NearDupIndex(threshold, num_perm).lsh
        self.bands, self.rows = lsh.b, lsh.r
        self.scheme = ""
        self.originals, self.near_index = {}, NearDupIndex(threshold, num_perm)

    def follow(self) -> None:
        """Nothing to follow: every batch asks the database."""

    def prepare(self, keys: list[bytes], sigs: list[bytes]) -> None:
        if not self.scheme:
            self.scheme = self.store.ensure_bands(self.num_perm, self.bands, self.rows)
        self.originals, cands = self.store.lookup_copies(keys, sigs, self.scheme)
        self.near_index = NearDupIndex(self.threshold, self.num_perm)
        for pid, sig in cands:
            if len(sig) == self.num_perm:
                self.near_index.add(pid, sig)
