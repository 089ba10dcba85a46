"""The loader: packing, document ids, determinism, disjoint ranks, exact resume, resume at another world size."""

from __future__ import annotations

from collections import Counter
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
import torch

from roost.config import ShardConfig
from roost.data import shards as shardlib
from roost.data.loader import FeistelPermutation, TokenLoader
from roost.errors import RoostError

T = 16


@pytest.fixture(scope="module")
def sd(store_db: Path, tok_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("loader") / "s"
    shardlib.build(store_db, tok_path, out, ShardConfig(val_fraction=0.05, shard_tokens=3000))
    return out


def _stream(d: Path, split: str = "train") -> np.ndarray:
    m = shardlib.read_manifest(d)
    return np.concatenate([np.fromfile(d / f["file"], dtype=m["dtype"]) for f in m["splits"][split]["files"]])


def _rows(batches) -> list[tuple[int, ...]]:  # type: ignore[no-untyped-def]
    return [tuple(r) for b in batches for r in torch.cat([b[0], b[1][:, -1:]], 1).tolist()]


@pytest.mark.parametrize("n", [1, 2, 3, 7, 1000, 4097, 65_537])
def test_feistel_is_a_bijection(n: int) -> None:
    p = FeistelPermutation(n, seed=3, epoch=1)(np.arange(n))
    assert np.array_equal(np.sort(p), np.arange(n))
    if n >= 1000:
        assert not np.array_equal(p, np.arange(n))
        assert not np.array_equal(p, FeistelPermutation(n, seed=3, epoch=2)(np.arange(n)))


def test_batches_are_packed_windows_of_the_stream(sd: Path) -> None:
    stream = _stream(sd).astype(np.int64)
    ld = TokenLoader(sd, seq_len=T, batch_size=4, doc_ids=True, seed=1)
    windows = {tuple(stream[i * T : i * T + T + 1]) for i in range(ld.samples)}
    for x, y, doc in islice(ld, 50):
        assert x.shape == y.shape == doc.shape == (4, T) and x.dtype == torch.int64
        assert torch.equal(x[:, 1:], y[:, :-1])
        for row in torch.cat([x, y[:, -1:]], 1).tolist():
            assert tuple(row) in windows
        # the document id goes up by one right after each separator token, and never otherwise
        step = doc[:, 1:] - doc[:, :-1]
        assert torch.equal(step, (x[:, :-1] == 0).long())
        assert (doc[:, 0] == 0).all()


def test_one_epoch_over_all_ranks_covers_every_sample_once(sd: Path) -> None:
    per_rank = [
        list(TokenLoader(sd, seq_len=T, batch_size=3, world_size=2, rank=r, seed=5, loop=False)) for r in range(2)
    ]
    assert len(per_rank[0]) == len(per_rank[1])  # same step count on every rank (the last batch may be short)
    rows = _rows(per_rank[0] + per_rank[1])
    ref = TokenLoader(sd, seq_len=T, batch_size=1, shuffle=False, loop=False)
    assert Counter(rows) == Counter(_rows(ref))
    assert rows[:6] != _rows(islice(TokenLoader(sd, seq_len=T, batch_size=6, shuffle=False), 1))  # shuffled


def test_ranks_disjoint_and_seed_deterministic(sd: Path) -> None:
    a = [next(iter(TokenLoader(sd, seq_len=T, batch_size=4, world_size=4, rank=r, seed=9))) for r in range(4)]
    rows = _rows(a)
    assert len(set(rows)) == 16
    again = next(iter(TokenLoader(sd, seq_len=T, batch_size=4, world_size=4, rank=2, seed=9)))
    assert torch.equal(again[0], a[2][0])
    other = next(iter(TokenLoader(sd, seq_len=T, batch_size=4, world_size=4, rank=2, seed=10)))
    assert not torch.equal(other[0], a[2][0])


@pytest.mark.parametrize("prefetch", [0, 3])
def test_exact_resume(sd: Path, prefetch: int) -> None:
    ref = list(islice(TokenLoader(sd, seq_len=T, batch_size=4, world_size=2, rank=1, seed=2, prefetch=prefetch), 12))
    ld = TokenLoader(sd, seq_len=T, batch_size=4, world_size=2, rank=1, seed=2, prefetch=prefetch)
    it = iter(ld)
    first = [next(it) for _ in range(7)]
    state = ld.state_dict()
    del it
    fresh = TokenLoader(sd, seq_len=T, batch_size=4, world_size=2, rank=1, seed=2, prefetch=prefetch)
    fresh.load_state_dict(state)
    rest = list(islice(fresh, 5))
    for got, want in zip(first + rest, ref, strict=True):
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_resume_at_another_world_size_has_no_repeats_or_gaps(sd: Path) -> None:
    """2 ranks × 4 for 5 steps, then 3 ranks × 2 for 6 steps (and across an epoch boundary) = the first
    76 positions of the single sequence the run reads."""
    kw = dict(seq_len=T, seed=4, prefetch=2)
    ref_ld = TokenLoader(sd, batch_size=1, **kw)  # type: ignore[arg-type]
    ref_ld.position = ref_ld.samples - 30  # so the resumed part crosses into epoch 2
    start = ref_ld.position
    ref = _rows(islice(ref_ld, 40 + 36))
    seen: list[tuple[int, ...]] = []
    state = None
    for world, batch, steps in ((2, 4, 5), (3, 2, 6)):
        lds = [TokenLoader(sd, batch_size=batch, world_size=world, rank=r, **kw) for r in range(world)]  # type: ignore[arg-type]
        for ld in lds:
            if state is None:
                ld.position = start
            else:
                ld.load_state_dict(state)
        per_rank = [list(islice(ld, steps)) for ld in lds]
        for s in range(steps):  # global batch order: rank 0's block, then rank 1's, ...
            for r in range(world):
                seen += _rows([per_rank[r][s]])
        state = lds[0].state_dict()
        assert all(ld.state_dict()["position"] == state["position"] for ld in lds)
    assert seen == ref


def test_val_pass_without_loop_ends(sd: Path) -> None:
    ld = TokenLoader(sd, split="val", seq_len=T, batch_size=5, shuffle=False, loop=False)
    got = _rows(ld)
    assert len(got) == ld.samples
    stream = _stream(sd, "val").astype(np.int64)
    assert got[-1] == tuple(stream[(ld.samples - 1) * T : ld.samples * T + 1])


def test_state_from_another_layout_is_refused(sd: Path) -> None:
    st = TokenLoader(sd, seq_len=T).state_dict()
    with pytest.raises(RoostError, match="seq_len was 16"):
        TokenLoader(sd, seq_len=T * 2).load_state_dict(st)
    with pytest.raises(RoostError, match="seed was 0"):
        TokenLoader(sd, seq_len=T, seed=1).load_state_dict(st)


def test_out_of_vocab_token_is_reported(sd: Path, tmp_path: Path) -> None:
    import json
    import shutil

    d = tmp_path / "c"
    shutil.copytree(sd, d)
    m = json.loads((d / "manifest.json").read_text())
    m["tokenizer"]["vocab_size"] = 10  # as if a shard held ids the tokenizer cannot produce
    (d / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(RoostError, match="token id .* vocab size 10"):
        next(iter(TokenLoader(d, seq_len=T)))
