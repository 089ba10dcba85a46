"""Which parallel layouts of a model fit on a fleet, ranked by predicted throughput — the memory model is
roost.model.budget (the one `roost train --dry-run` prints), the throughput model below.

    from roost.plan.layouts import SearchConfig, search
    search(Shape.from_config(load_preset("llama3-405b")), accelerator("h100"), SearchConfig(gpus=16384))

A layout is dp_replicate × dp_shard × tp × pp × cp = GPUs, a micro-batch, a recompute policy. It is valid when
tp divides heads, KV heads and the FFN and stays inside one NVLink domain, pp ≤ layers, the global batch
(`batch_tokens`) holds at least one micro-batch per data-parallel rank — and, with pipelining, at least pp of
them (1F1B) — and it fits in `usable` of the device's memory. Its relative throughput is the product of:
  recompute     none 1, selective 0.9 (torchtitan's op-level policy re-runs the cheap ops), full 0.75 (one more
                forward: 8N instead of 6N)
  pipeline      1F1B bubble: m / (m + pp − 1) for m micro-batches per step
  tensor        compute / (compute + communication) per layer: 8 sequence-parallel collectives of D per token
                (forward + backward) at the intra-node bandwidth, against 6·block/tp FLOPs at 60 % of peak
  context       ring attention's K/V exchange (6·kvD per token), half of it hidden behind attention
  data          FSDP's all-gathers and reduce-scatter (3 × the local weights in bf16 per micro-batch) and, for
                replicas, an all-reduce of fp32 gradients per step, whatever part does not overlap with compute
  moe           the experts' weights and top-k experts' activations are added; experts are sharded like the
                rest (no expert parallelism in the model)
The planner's MFU table says how fast the best layout runs; the factors rank the others against it.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from roost.errors import UsageError
from roost.hardware import Accelerator
from roost.model.budget import (
    GIB,
    OVERHEAD_GIB,
    RECIPES,
    USABLE,
    Layout,
    check_layout,
    memory_per_rank,
    peak,
    weight_shards,
)
from roost.plan.compute import Shape

KERNEL_EFFICIENCY = 0.6  # fraction of peak a matmul reaches, for the communication/compute ratios
RECOMPUTE_COST = {"none": 1.0, "selective": 0.9, "full": 0.75}


@dataclass
class SearchConfig:
    gpus: int
    seq_len: int = 8192
    batch_tokens: float = 16 * 2**20  # global batch in tokens (Llama 3 405B: 16M)
    micro_batches: tuple[int, ...] = (1, 2, 4, 8)
    recompute: tuple[str, ...] = ("none", "selective", "full")
    recipe: str = "adamw"  # bytes per parameter: roost.model.budget.RECIPES
    usable: float = USABLE
    top: int = 5

    def __post_init__(self) -> None:
        if self.gpus < 1:
            raise UsageError(f"--gpus must be >= 1, got {self.gpus}")
        if self.recipe not in RECIPES:
            raise UsageError(f"--recipe must be one of {sorted(RECIPES)}, got {self.recipe!r}")
        if self.seq_len < 1 or self.batch_tokens < self.seq_len:
            raise UsageError(f"--batch-tokens {self.batch_tokens:g} must hold at least one --seq-len {self.seq_len}")


@dataclass
class Candidate:
    layout: Layout
    memory: dict[str, float]
    fits: bool
    efficiency: float
    factors: dict[str, float]
    grad_accum: int

    def describe(self) -> str:
        lay = self.layout
        parts = [f"dp {lay.dp_replicate}×{lay.dp_shard}" if lay.dp_replicate > 1 else f"fsdp {lay.dp_shard}"]
        parts += [f"{k} {getattr(lay, k)}" for k in ("tp", "pp", "cp") if getattr(lay, k) > 1]
        return " · ".join(parts) + f" · mb {lay.micro_batch} · {lay.recompute}"


def _divisors(n: int, options: list[int]) -> list[int]:
    return [d for d in options if d <= n and n % d == 0]


def memory(shape: Shape, lay: Layout) -> dict[str, float]:
    if shape.cfg is None:
        raise UsageError(f"{shape.name}: the memory model needs a model config (a preset or --model NAME)")
    mem = memory_per_rank(shape.cfg, lay)
    if shape.experts > 1:
        cfg = shape.cfg
        ffn_layer = 3 * cfg.dim * cfg.ffn_dim
        extra = (shape.experts - 1) * ffn_layer * -(-cfg.n_layers // lay.pp) / weight_shards(lay)
        for k, per in (("parameters", lay.param_bytes), ("gradients", lay.grad_bytes), ("optimizer", lay.optim_bytes)):
            mem[k] += extra * per
        tokens = lay.seq_len * lay.micro_batch / lay.cp / lay.tp
        act = (shape.top_k - 1) * 4 * cfg.ffn_dim * lay.compute_bytes * tokens * cfg.n_layers
        mem["activations"] += act if lay.recompute == "none" else act / 4
        mem["total"] = peak(mem)
    return mem


def efficiency(shape: Shape, acc: Accelerator, lay: Layout, microbatches: int) -> dict[str, float]:
    cfg = shape.cfg
    assert cfg is not None
    b = lay.compute_bytes
    flops_s = acc.bf16_tflops * 1e12 * KERNEL_EFFICIENCY
    block_flops = 6.0 * shape.active_params / max(cfg.n_layers, 1)  # per token per layer
    f: dict[str, float] = {"recompute": RECOMPUTE_COST[lay.recompute]}
    f["pipeline"] = microbatches / (microbatches + lay.pp - 1)
    if lay.tp > 1:
        comm = 8 * cfg.dim * b * (lay.tp - 1) / lay.tp / (acc.intra_gbps * 1e9)
        comp = block_flops / lay.tp / flops_s
        f["tensor"] = comp / (comp + comm)
    if lay.cp > 1:
        kv = cfg.n_kv_heads * cfg.head_dim
        bw = acc.intra_gbps if lay.tp * lay.cp <= acc.per_node else acc.inter_gbps
        comm = 6 * kv * b * (lay.cp - 1) / lay.cp / (bw * 1e9) * 0.5
        comp = block_flops / lay.tp / flops_s
        f["context"] = comp / (comp + comm)
    local = shape.total_params / (lay.tp * lay.pp)
    tokens_mb = lay.seq_len * lay.micro_batch / lay.cp
    compute_mb = shape.flops_per_token(lay.seq_len) / (lay.tp * lay.pp) * tokens_mb / flops_s
    shard = lay.dp_shard * lay.cp
    exposed = 0.0
    if shard > 1:
        bw = acc.intra_gbps if lay.tp * shard <= acc.per_node else acc.inter_gbps
        exposed += max(0.0, 3 * local * b * (shard - 1) / shard / (bw * 1e9) - compute_mb)
    if lay.dp_replicate > 1:
        r = lay.dp_replicate
        allreduce = 2 * 4 * local / shard * (r - 1) / r / (acc.inter_gbps * 1e9)
        exposed += max(0.0, allreduce - compute_mb * microbatches) / microbatches
    f["data"] = compute_mb / (compute_mb + exposed)
    return f


def _sized(shape: Shape, acc: Accelerator, lay: Layout, microbatches: int, usable: float) -> Candidate:
    """A valid layout's memory, fit and relative throughput (the product of its efficiency factors)."""
    mem = memory(shape, lay)
    factors = efficiency(shape, acc, lay, microbatches)
    fits = mem["total"] <= acc.memory_gib * GIB * usable
    return Candidate(lay, mem, fits, math.prod(factors.values()), factors, microbatches)


def search(shape: Shape, acc: Accelerator, sc: SearchConfig) -> list[Candidate]:
    """Every valid layout, fitting ones first, best predicted throughput first (ties: less memory)."""
    cfg = shape.cfg
    if cfg is None:
        raise UsageError(f"{shape.name}: the layout search needs a model config")
    pow2 = [2**i for i in range(0, 17)]
    param_b, grad_b, optim_b = RECIPES[sc.recipe]
    out: list[Candidate] = []
    for tp, pp, cp in itertools.product(
        [t for t in pow2 if t <= acc.per_node], [p for p in pow2 if p <= cfg.n_layers], [c for c in pow2 if c <= 16]
    ):
        if sc.gpus % (tp * pp * cp):
            continue
        dp = sc.gpus // (tp * pp * cp)
        if cp > 1 and sc.seq_len < 16384:
            continue  # context parallelism only pays for long sequences
        for shard in sorted({dp, *_divisors(dp, [8, 16, 32, 64, 128, 256, 512])}):
            for mb, rc in itertools.product(sc.micro_batches, sc.recompute):
                per_step = dp * mb * sc.seq_len
                m = int(sc.batch_tokens // per_step)
                if m < 1 or (pp > 1 and m < pp):
                    continue
                lay = Layout(dp // shard, shard, tp, pp, cp, "fsdp", sc.seq_len, mb, 2, rc, "chunked")
                lay.param_bytes, lay.grad_bytes, lay.optim_bytes = param_b, grad_b, optim_b
                lay.overhead_gib = OVERHEAD_GIB
                try:
                    check_layout(cfg, lay)
                except UsageError:
                    continue
                out.append(_sized(shape, acc, lay, m, sc.usable))
    out.sort(key=lambda c: (not c.fits, -c.efficiency, c.memory["total"]))
    return out


def fixed_layout(shape: Shape, acc: Accelerator, lay: Layout, batch_tokens: float) -> Candidate:
    """One given layout, checked (heads, layers, sequence) and sized — for `roost plan --tp 8 --pp 16 ...`."""
    if shape.cfg is None:
        raise UsageError(f"{shape.name}: the memory model needs a model config")
    check_layout(shape.cfg, lay)
    m = max(1, int(batch_tokens // (lay.dp_replicate * lay.dp_shard * lay.micro_batch * lay.seq_len)))
    return _sized(shape, acc, lay, m, USABLE)
