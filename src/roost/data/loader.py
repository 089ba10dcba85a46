"""The training data loader: packed fixed-length samples from a shard set, rank-aware, exactly resumable.

Used by `roost train` (and any torch loop):

    loader = TokenLoader(home / "shards/default", seq_len=1024, batch_size=32, rank=r, world_size=w, seed=0)
    for x, y in loader: ...                      # int64 tensors [batch, seq_len]; y is x shifted by one
    state = loader.state_dict()                  # into the checkpoint; later: loader.load_state_dict(state)

How it works. A split's documents (each followed by the end-of-document token) form one token stream, cut into
samples of `seq_len + 1` tokens at stride `seq_len`. The run reads one endless sequence of *positions*; position
p is sample `perm_e(p mod N)` of epoch `e = p div N`, where `perm_e` is a keyed Feistel bijection on [0, N) (no
permutation table: O(1) memory at any corpus size). Global batch k covers positions [k·B·W, (k+1)·B·W): rank r
takes the r-th block of B. The whole state is the next position, so resuming — with the same or a different
world size or batch size — continues the same sequence with no repeats and no gaps. A background thread builds
the next `prefetch` batches while the trainer computes.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from roost.data.manifest import verify
from roost.errors import RoostError, UsageError

_M64 = np.uint64((1 << 64) - 1)


def _mix(x: np.ndarray, key: np.uint64) -> np.ndarray:
    """splitmix64 finaliser of x ^ key (uint64 arithmetic wraps)."""
    z = x ^ key
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


class FeistelPermutation:
    """A pseudo-random bijection on [0, n) from a 4-round Feistel network with cycle walking."""

    def __init__(self, n: int, seed: int, epoch: int):
        if n < 1:
            raise ValueError("permutation of an empty range")
        self.n = n
        bits = max(2, (n - 1).bit_length())
        self.half = (bits + 1) // 2
        self.mask = np.uint64((1 << self.half) - 1)
        rng = np.random.default_rng([seed, epoch, 0x5EED])
        self.keys = [np.uint64(k) for k in rng.integers(0, 2**63, size=4, dtype=np.int64)]

    def _round_trip(self, x: np.ndarray) -> np.ndarray:
        h = np.uint64(self.half)
        left, right = x >> h, x & self.mask
        for k in self.keys:
            left, right = right, left ^ (_mix(right, k) & self.mask)
        return (left << h) | right

    def __call__(self, idx: np.ndarray) -> np.ndarray:
        x = np.asarray(idx, dtype=np.uint64)
        with np.errstate(over="ignore"):
            x = self._round_trip(x)
            out = x >= np.uint64(self.n)
            while out.any():  # cycle walking: the domain is < 4n, so this ends after a few rounds
                x[out] = self._round_trip(x[out])
                out = x >= np.uint64(self.n)
        return x.astype(np.int64)


@dataclass
class _Split:
    files: list[np.memmap]
    bounds: np.ndarray  # start offset of each file in the split's stream, plus the total
    doc_ends: np.ndarray  # memmap of uint64 end offsets
    tokens: int


class TokenLoader:
    """Batches `(input_ids, targets)` — or `(input_ids, targets, doc_ids)` with `doc_ids=True` — from one split."""

    def __init__(
        self,
        shards: Path,
        split: str = "train",
        seq_len: int = 1024,
        batch_size: int = 32,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        shuffle: bool = True,
        loop: bool = True,
        doc_ids: bool = False,
        prefetch: int = 4,
        tokenizer_sha256: str | None = None,
        allow_stale: bool = False,
        pin_memory: bool = False,
    ):
        if seq_len < 1 or batch_size < 1:
            raise UsageError(f"seq_len and batch_size must be >= 1, got seq_len={seq_len}, batch_size={batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise UsageError(f"rank {rank} is not in [0, world_size={world_size})")
        self.dir = Path(shards)
        self.manifest = verify(self.dir, checksums=False)
        m = self.manifest
        if m.get("stale") and not allow_stale:
            raise RoostError(
                f"{self.dir}: shard set is stale ({m['stale'].get('reason')}, e.g. "
                f"{m['stale'].get('example')}); rebuild it with `roost tokenize --rebuild-stale`"
            )
        if tokenizer_sha256 is not None and m["tokenizer"]["sha256"] != tokenizer_sha256:
            raise RoostError(
                f"{self.dir}: shards were built with tokenizer {m['tokenizer']['path']} "
                f"(sha256 {m['tokenizer']['sha256'][:12]}…), not the model's (sha256 "
                f"{tokenizer_sha256[:12]}…); run `roost tokenize --tokenizer <the model dir>`"
            )
        if split not in m["splits"]:
            raise UsageError(f"{self.dir}: no split {split!r}; have {sorted(m['splits'])}")
        self.split, self.seq_len, self.batch_size = split, seq_len, batch_size
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.shuffle, self.loop, self.want_doc_ids, self.prefetch = shuffle, loop, doc_ids, prefetch
        self.pin_memory = pin_memory and torch.cuda.is_available()
        self.vocab_size = int(m["tokenizer"]["vocab_size"])
        self._data = self._open(m["splits"][split], np.dtype(m["dtype"]))
        self.samples = (self._data.tokens - 1) // seq_len
        if self.samples < 1:
            raise UsageError(
                f"seq_len {seq_len} is longer than the whole {split} split of {self.dir} "
                f"({self._data.tokens} tokens); use a smaller --seq-len or add posts"
            )
        self.position = 0  # next global position to hand out (the whole resumable state)
        self._perms: dict[int, FeistelPermutation] = {}
        self._generation = 0

    def _open(self, info: dict[str, Any], dtype: np.dtype[Any]) -> _Split:
        files = [
            np.memmap(self.dir / f["file"], dtype=dtype, mode="r", shape=(f["tokens"],))
            for f in info["files"]
            if f["tokens"] > 0
        ]
        sizes = [len(f) for f in files]
        bounds = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        docs = (
            np.memmap(self.dir / info["docs_file"], dtype=np.uint64, mode="r", shape=(info["docs"],))
            if info["docs"]
            else np.zeros(0, dtype=np.uint64)
        )
        return _Split(files, bounds, docs, int(bounds[-1]))

    # -- state -------------------------------------------------------------------------------------------------
    @property
    def global_batch(self) -> int:
        return self.batch_size * self.world_size

    @property
    def epoch(self) -> int:
        return self.position // self.samples

    def state_dict(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "seed": self.seed,
            "seq_len": self.seq_len,
            "split": self.split,
            "shuffle": self.shuffle,
            "samples": self.samples,
            "tokenizer_sha256": self.manifest["tokenizer"]["sha256"],
            "world_size": self.world_size,
            "batch_size": self.batch_size,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue where `state` left off; world size and batch size may differ, the sample layout may not."""
        for key in ("seed", "seq_len", "split", "shuffle", "samples", "tokenizer_sha256"):
            mine = self.state_dict()[key]
            if key in state and state[key] != mine:
                raise RoostError(
                    f"loader state: {key} was {state[key]!r} at save time but is {mine!r} now; resuming "
                    "would not continue the same data order (same shards, seq_len and seed needed)"
                )
        self.position = int(state["position"])
        self._generation += 1  # a running iterator from before stops

    # -- sampling ----------------------------------------------------------------------------------------------
    def _samples_at(self, positions: np.ndarray) -> np.ndarray:
        epochs, idx = np.divmod(positions, self.samples)
        if not self.shuffle:
            return idx
        out = np.empty_like(idx)
        for e in np.unique(epochs):
            e = int(e)
            if e not in self._perms:
                self._perms = {e: FeistelPermutation(self.samples, self.seed, e)}  # keep one epoch's keys
            sel = epochs == e
            out[sel] = self._perms[e](idx[sel])
        return out

    def _window(self, start: int) -> np.ndarray:
        """Tokens [start, start + seq_len + 1) of the split's stream, across file boundaries when needed."""
        end = start + self.seq_len + 1
        d = self._data
        i = int(np.searchsorted(d.bounds, start, side="right")) - 1
        lo = start - int(d.bounds[i])
        if end <= d.bounds[i + 1]:
            return np.asarray(d.files[i][lo : lo + self.seq_len + 1])
        parts, pos = [], start
        while pos < end:
            i = int(np.searchsorted(d.bounds, pos, side="right")) - 1
            hi = min(end, int(d.bounds[i + 1]))
            parts.append(np.asarray(d.files[i][pos - int(d.bounds[i]) : hi - int(d.bounds[i])]))
            pos = hi
        return np.concatenate(parts)

    def make_batch(self, position: int) -> tuple[torch.Tensor, ...]:
        """This rank's batch of the global batch that starts at `position` (no state change)."""
        first = position + self.rank * self.batch_size
        count = self.batch_size
        if not self.loop:
            count = max(0, min(count, self.samples - first))
        pos = np.arange(first, first + count, dtype=np.int64)
        starts = self._samples_at(pos) * self.seq_len
        win = np.stack([self._window(int(s)) for s in starts]) if count else np.zeros((0, self.seq_len + 1), np.int64)
        win = win.astype(np.int64)
        if win.size and int(win.max()) >= self.vocab_size:
            raise RoostError(
                f"{self.dir}: token id {int(win.max())} ≥ vocab size {self.vocab_size} in split "
                f"{self.split}; the shard is corrupt — rebuild it with `roost tokenize`"
            )
        t = torch.from_numpy(win)
        out: tuple[torch.Tensor, ...] = (t[:, :-1], t[:, 1:])
        if self.want_doc_ids:
            tok_pos = starts[:, None] + np.arange(self.seq_len, dtype=np.int64)[None, :]
            doc = np.searchsorted(self._data.doc_ends, tok_pos.astype(np.uint64), side="right").astype(np.int64)
            out = (*out, torch.from_numpy(doc - doc[:, :1]))
        if self.pin_memory:
            out = tuple(x.pin_memory() for x in out)
        return out

    # -- iteration ---------------------------------------------------------------------------------------------
    def _positions(self) -> Iterator[int]:
        p = self.position
        while self.loop or p < self.samples:
            yield p
            p += self.global_batch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        gen = self._generation
        if self.prefetch <= 0:
            for p in self._positions():
                batch = self.make_batch(p)
                if gen != self._generation:
                    return
                self.position = p + self.global_batch
                yield batch
            return
        q: queue.Queue[Any] = queue.Queue(self.prefetch)
        stop = threading.Event()

        def work() -> None:
            try:
                for p in self._positions():
                    item = (p, self.make_batch(p))
                    while not stop.is_set():
                        try:
                            q.put(item, timeout=0.1)
                            break
                        except queue.Full:
                            continue
                    if stop.is_set():
                        return
                q.put(None)
            except BaseException as e:  # re-raised in the consumer
                q.put(e)

        t = threading.Thread(target=work, daemon=True, name=f"roost-loader-r{self.rank}")
        t.start()
        try:
            while (item := q.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                if gen != self._generation:
                    return
                p, batch = item
                self.position = p + self.global_batch
                yield batch
        finally:
            stop.set()
            t.join(timeout=5)
