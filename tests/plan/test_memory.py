"""The planner's memory per GPU against what published runs report, and the layout search.

Published facts used (torchtitan docs/performance.md, Dec 2024 and the earlier A100 page; Llama 3 paper §3.3):
peak memory of FSDP2 runs of Llama 3.1 8B/70B on H100 (96 GB HBM2e, reserved memory), the layouts that ran
and the ones that ran out of memory. torchtitan materialises the logits (loss="full"). The reported figures are
the caching allocator's reserved peak; the model counts allocated bytes, so it sits at or below them."""

from __future__ import annotations

import pytest

from roost.errors import UsageError
from roost.hardware import accelerator
from roost.model.budget import GIB, OVERHEAD_GIB, Layout, check_layout, memory_per_rank
from roost.model.config import ModelConfig, load_preset
from roost.plan.compute import Shape
from roost.plan.layouts import SearchConfig, fixed_layout, search

LLAMA2_70B = ModelConfig(
    name="llama2-70b", vocab_size=32000, dim=8192, n_layers=80, n_heads=64, n_kv_heads=8, ffn_dim=28672,
    max_seq_len=4096, tie_embeddings=False,
)  # fmt: skip
H100_96 = 94.5  # GiB the Grand Teton H100 (96 GB HBM2e) reports


def _gib(cfg: ModelConfig, **kw: object) -> float:
    lay = Layout(**kw, loss="full", overhead_gib=OVERHEAD_GIB)  # type: ignore[arg-type]
    return memory_per_rank(cfg, lay)["total"] / GIB


@pytest.mark.parametrize(
    ("preset", "layout", "reported"),
    [
        ("llama3-8b", dict(dp_shard=8, seq_len=8192, micro_batch=2, recompute="selective"), 82.4),  # Table 1
        ("llama3-8b", dict(dp_shard=128, seq_len=8192, micro_batch=2, recompute="selective"), 67.0),  # Table 3
        ("llama3-8b", dict(dp_shard=8, seq_len=32768, micro_batch=1, recompute="full"), 83.9),  # Table 2
        ("llama3-70b", dict(dp_shard=32, tp=8, seq_len=8192, micro_batch=16, recompute="full"), 71.9),  # Table 4
    ],
)
def test_torchtitan_reported_peak_memory(preset: str, layout: dict, reported: float) -> None:
    predicted = _gib(load_preset(preset), **layout)
    assert 0.75 * reported <= predicted <= 1.02 * reported, (predicted, reported)


def test_torchtitan_fits_and_out_of_memory() -> None:
    a100 = accelerator("a100").memory_gib
    # Llama 2 70B, FSDP on 64 A100 80GB, seq 4096: batch 2 with selective AC ran out of memory; batch 1 selective
    # and batch 2 with full AC ran (torchtitan's A100 table and its footnote)
    assert _gib(LLAMA2_70B, dp_shard=64, seq_len=4096, micro_batch=2, recompute="selective") > a100
    assert _gib(LLAMA2_70B, dp_shard=64, seq_len=4096, micro_batch=1, recompute="selective") < a100
    assert _gib(LLAMA2_70B, dp_shard=64, seq_len=4096, micro_batch=2, recompute="full") < a100
    # Llama 3.1 405B on 128 H100: "we do see OOM for 1D parallelism (FSDP2)"; FSDP 16 × TP 8, batch 2, full AC ran
    big = load_preset("llama3-405b")
    assert _gib(big, dp_shard=128, seq_len=8192, micro_batch=2, recompute="full") > H100_96
    assert _gib(big, dp_shard=16, tp=8, seq_len=8192, micro_batch=2, recompute="full") < H100_96


def test_llama3_405b_on_16k_h100() -> None:
    """Llama 3 405B's 8K-context layout (TP 8, CP 1, PP 16, DP 128; Dubey et al. Table 4) fits in 80 GB."""
    cfg = load_preset("llama3-405b")
    lay = Layout(dp_shard=128, tp=8, pp=16, seq_len=8192, micro_batch=1, recompute="selective")
    c = fixed_layout(Shape.from_config(cfg), accelerator("h100"), lay, 16 * 2**20)
    assert c.fits and 10 < c.memory["total"] / GIB < 80
    # and the search finds layouts for it, all fitting, best first
    found = search(Shape.from_config(cfg), accelerator("h100"), SearchConfig(gpus=16384))
    fitting = [x for x in found if x.fits]
    assert fitting and all(x.layout.world == 16384 and x.layout.tp <= 8 for x in fitting)
    assert [x.efficiency for x in fitting] == sorted((x.efficiency for x in fitting), reverse=True)
    # the global batch bounds data parallelism: 16M tokens of 8192 = 2048 sequences
    assert all(x.layout.dp_replicate * x.layout.dp_shard <= 2048 for x in found)


def test_search_prefers_no_recompute_when_it_fits() -> None:
    found = search(
        Shape.from_config(load_preset("smollm2-135m")), accelerator("h100"), SearchConfig(gpus=8, seq_len=2048)
    )
    best = found[0]
    assert best.fits and best.layout.recompute == "none" and best.layout.tp == 1 and best.layout.pp == 1


def test_impossible_layouts_are_named() -> None:
    cfg = load_preset("llama3-8b")  # 32 heads, 8 KV heads, 32 layers
    with pytest.raises(UsageError, match="n_kv_heads"):
        check_layout(cfg, Layout(tp=16, seq_len=8192))
    with pytest.raises(UsageError, match="more pipeline stages than the model has layers"):
        check_layout(cfg, Layout(pp=64, seq_len=8192))
    with pytest.raises(UsageError, match="2·cp"):
        check_layout(cfg, Layout(cp=4, seq_len=8190))
    with pytest.raises(UsageError, match="recompute"):
        check_layout(cfg, Layout(recompute="some"))


def test_moe_memory_counts_every_expert() -> None:
    cfg = load_preset("llama3-8b")
    lay = Layout(dp_shard=64, seq_len=8192, recompute="full")
    dense = fixed_layout(Shape.from_config(cfg), accelerator("h100"), lay, 16 * 2**20)
    moe = fixed_layout(Shape.from_config(cfg, experts=8, top_k=2), accelerator("h100"), lay, 16 * 2**20)
    extra = 7 * 3 * cfg.dim * cfg.ffn_dim * cfg.n_layers * 16 / 64  # 16 bytes/param sharded over 64
    got = moe.memory["parameters"] + moe.memory["gradients"] + moe.memory["optimizer"]
    want = dense.memory["parameters"] + dense.memory["gradients"] + dense.memory["optimizer"] + extra
    assert got == pytest.approx(want)
