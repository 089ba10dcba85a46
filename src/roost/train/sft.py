"""SFT data for `roost train --sft --init models/NAME`: (post → reply) pairs from reply chains in the store,
rendered with the ChatML chat template (user = the post, assistant = the reply); the loss is on reply tokens only.

Same interface as `TokenLoader` (iterate for `(input_ids, targets)`, `state_dict()` / `load_state_dict()`), so
resume is exact here too. Pairs whose reply is a duplicate, near-duplicate or repost are skipped; forgotten posts
are gone from the store and never paired.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from roost.corpus.backend import open_reader
from roost.data import tokenizer as toklib
from roost.data.loader import FeistelPermutation
from roost.errors import RoostError

PROMPT = "<|im_start|>user\n{post}<|im_end|>\n<|im_start|>assistant\n"
ANSWER = "{reply}<|im_end|>\n"


def reply_pairs(db: Path | str) -> list[tuple[str, str, str]]:
    """(reply id, parent text, reply text) for every reply whose parent is in the store."""
    with open_reader(db) as store:
        return store.reply_pairs()


class SFTLoader:
    def __init__(
        self,
        db: Path | str,
        tokenizer_path: Path,
        seq_len: int,
        batch_size: int,
        seed: int = 0,
        val_fraction: float = 0.05,
    ):
        pairs = reply_pairs(db)
        if not pairs:
            raise RoostError(f"{db}: no (post → reply) pairs: SFT needs replies whose parent post is in the store")
        tok = toklib.load(tokenizer_path)
        pad = tok.token_to_id("<|pad|>")
        self.pad = pad if pad is not None else toklib.separator_id(tok)
        cut = int(val_fraction * 2**64)
        rows: dict[str, list[tuple[list[int], list[int]]]] = {"train": [], "val": []}
        prompts = tok.encode_batch_fast([PROMPT.format(post=p) for _, p, _ in pairs], add_special_tokens=False)
        answers = tok.encode_batch_fast([ANSWER.format(reply=r) for _, _, r in pairs], add_special_tokens=False)
        for (pid, _, _), pe, ae in zip(pairs, prompts, answers, strict=True):
            ids = (pe.ids + ae.ids)[: seq_len + 1]
            labels = ([-100] * len(pe.ids) + ae.ids)[: seq_len + 1]
            if all(t == -100 for t in labels[1:]):
                continue  # the prompt alone fills the window: nothing to learn from
            h = int.from_bytes(hashlib.blake2b(pid.encode(), digest_size=8).digest(), "big")
            rows["val" if h < cut else "train"].append((ids, labels))
        if not rows["train"]:
            raise RoostError(f"--seq-len {seq_len} leaves no reply tokens in any pair; use a longer --seq-len")
        self.rows, self.seq_len, self.batch_size, self.seed = rows, seq_len, batch_size, seed
        self.n_train = len(rows["train"])
        self.position = 0

    def _batch(self, items: list[tuple[list[int], list[int]]]) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.full((len(items), self.seq_len), self.pad, dtype=torch.long)
        y = torch.full((len(items), self.seq_len), -100, dtype=torch.long)
        for i, (ids, labels) in enumerate(items):
            n = len(ids) - 1
            x[i, :n] = torch.tensor(ids[:-1])
            y[i, :n] = torch.tensor(labels[1:])
        return x, y

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = self.n_train
        while True:
            pos = np.arange(self.position, self.position + self.batch_size, dtype=np.int64)
            epochs, idx = np.divmod(pos, n)
            order = np.concatenate(
                [FeistelPermutation(n, self.seed, int(e))(idx[epochs == e]) for e in np.unique(epochs)]
            )
            self.position += self.batch_size
            yield self._batch([self.rows["train"][int(i)] for i in order])

    def val_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        val = self.rows["val"] or self.rows["train"][: self.batch_size]
        for i in range(0, len(val), self.batch_size):
            yield self._batch(val[i : i + self.batch_size])

    def state_dict(self) -> dict[str, Any]:
        return {"position": self.position, "seed": self.seed, "n_train": self.n_train, "seq_len": self.seq_len}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k in ("seed", "n_train", "seq_len"):
            if state.get(k) != getattr(self, k):
                raise RoostError(
                    f"SFT loader state: {k} was {state.get(k)} at save time, now {getattr(self, k)} "
                    "(the store's reply pairs changed); start a new run"
                )
        self.position = int(state["position"])
