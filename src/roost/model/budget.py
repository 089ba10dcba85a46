"""Memory per rank of training a `ModelConfig` on a mesh: parameters, gradients, optimizer state, the gathered
FSDP units, activations under a recompute policy, the loss's logits and transient buffers. Pure Python (no
torch): `roost train --dry-run` prints it and the fleet planner (`roost plan`) searches over it — one model.

    from roost.model.budget import Layout, memory_per_rank
    memory_per_rank(load_preset("llama3-8b"), Layout(dp_shard=8, tp=1, seq_len=8192, micro_batch=1))

What is counted (bytes; N = parameters of the rank's pipeline stage; S = dp_shard·tp·cp for FSDP — context
parallel ranks hold the same weights and shard them too — and tp for DDP):
  parameters     master copy `param_bytes`·N/S (FSDP2 keeps the sharded parameters in fp32: 4)
  gradients      `grad_bytes`·N/S (reduce-scattered; DDP keeps a full copy per rank)
  optimizer      `optim_bytes`·N/S — AdamW's two fp32 moments: 8 (Megatron's distributed optimizer: 12 with its
                 fp32 master copy, with param_bytes 2)
  gathered       FSDP all-gathers one block (plus the next, prefetched) in the compute dtype: 2·block/tp
  activations    what autograd saves for backward, per token per layer, for this repo's Llama block with a
                 fused attention kernel (no T×T scores kept): the norm inputs kept in fp32 (2·4D bytes), and in
                 the compute dtype the q/k/v/o inputs, q, k, v after RoPE, the attention output and its
                 log-sum-exp, RoPE's rotated copies, the MLP input, gate, up, silu(gate) and their product:
                 (6D + 3·kvD + 4F)·b. Tokens per rank are micro_batch·seq_len/cp; sequence parallelism divides
                 by tp. Recompute policies:
                   none       all of it;
                   selective  torchtitan's op-level policy: the block input, the attention output and
                              log-sum-exp and every other matmul output (q, v, gate, down) are kept, the rest is
                              recomputed: (2D + 2·qD + kvD + F)·b;
                   full       only each block's input (D·b), plus one block's full set while it is recomputed.
                 Pipeline parallelism with 1F1B keeps `pp` micro-batches in flight on the first stage, each for
                 L/pp layers: the same L layers' worth as without pipelining.
  loss           chunked: the fused loss holds two fp32 logit chunks; full: the whole [tokens, vocab/tp]
                 logits in the compute dtype, their fp32 copy and its gradient (torchtitan, HF).
  transient      the reduce-scatter of one block's fp32 gradients, and `overhead_gib` for the CUDA context,
                 NCCL and cuBLAS workspaces (0 on CPU).
The peak (`total`) counts the larger of the loss's logits and one recomputed block, which never coexist.
The static part is checked against real tensors, the activation part against autograd's saved tensors and the
total against the peak PyTorch's own MemTracker sees on CPU in tests/train/test_dryrun.py; the planner's figures against published
peak memory in tests/plan/test_memory.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from roost.errors import UsageError
from roost.model.config import ModelConfig

GIB = 2**30
RECOMPUTE = ("none", "selective", "full")
OVERHEAD_GIB = 2.0  # CUDA context, NCCL buffers, cuBLAS workspace per GPU
# bytes per parameter (master weights, gradients, optimizer state) of the training recipes the planner knows
RECIPES = {
    "adamw": (4, 4, 8),  # FSDP2 / torchtitan / roost: fp32 sharded params and grads, AdamW's two fp32 moments
    "adamw-bf16-grads": (4, 2, 8),  # gradients reduced and kept in bf16
    "megatron": (2, 4, 12),  # bf16 weights, fp32 main grads, distributed optimizer: fp32 master + 2 moments
}
USABLE = 0.95  # of a device's memory before the caching allocator's fragmentation bites


@dataclass
class Layout:
    dp_replicate: int = 1
    dp_shard: int = 1
    tp: int = 1
    pp: int = 1
    cp: int = 1
    parallel: str = "fsdp"  # fsdp | ddp
    seq_len: int = 2048
    micro_batch: int = 1  # sequences per rank per forward
    compute_bytes: int = 2  # 2: bf16 (GPU default), 4: fp32
    recompute: str = "none"  # none | selective | full
    loss: str = "chunked"  # chunked (roost's fused loss) | full (logits materialised)
    param_bytes: int = 4
    grad_bytes: int = 4
    optim_bytes: int = 8
    overhead_gib: float = 0.0

    @property
    def world(self) -> int:
        return self.dp_replicate * self.dp_shard * self.tp * self.pp * self.cp


def check_layout(cfg: ModelConfig, lay: Layout) -> None:
    """What each parallelism splits must divide: heads, KV heads and the FFN by tp; the sequence by tp (sequence
    parallel norms) and 2·cp (load-balanced ring attention); the layers by pp."""
    for what, n in (("tp", lay.tp), ("pp", lay.pp), ("cp", lay.cp), ("dp_shard", lay.dp_shard)):
        if n < 1:
            raise UsageError(f"{what} must be >= 1, got {n}")
    if lay.recompute not in RECOMPUTE:
        raise UsageError(f"recompute must be one of {RECOMPUTE}, got {lay.recompute!r}")
    if lay.tp > 1:
        for what, n in (("n_heads", cfg.n_heads), ("n_kv_heads", cfg.n_kv_heads), ("ffn_dim", cfg.ffn_dim)):
            if n % lay.tp:
                raise UsageError(
                    f"--tp {lay.tp} does not divide the model's {what} ({n}); tensor parallelism gives each rank "
                    f"{what}/tp of them — pick a tp that divides {n}"
                )
        if lay.seq_len % lay.tp:
            raise UsageError(f"--seq-len {lay.seq_len} must be a multiple of --tp {lay.tp} (sequence-parallel norms)")
    if lay.pp > cfg.n_layers:
        raise UsageError(f"--pp {lay.pp} is more pipeline stages than the model has layers ({cfg.n_layers})")
    if lay.cp > 1 and lay.seq_len % (2 * lay.cp):
        raise UsageError(f"--seq-len {lay.seq_len} must be a multiple of 2·cp = {2 * lay.cp} (ring attention)")


def activation_bytes_per_token_layer(cfg: ModelConfig, compute_bytes: int, recompute: str = "none") -> float:
    d, kv, f = cfg.dim, cfg.n_kv_heads * cfg.head_dim, cfg.ffn_dim
    q = cfg.n_heads * cfg.head_dim
    lse = cfg.n_heads * 4 / max(cfg.head_dim, 1)  # one fp32 per head per token, amortised over head_dim slots
    if recompute == "selective":
        return (2 * d + 2 * q + kv + f + lse) * compute_bytes
    if recompute == "full":
        return d * compute_bytes
    return 2 * 4 * d + (3 * d + 3 * q + 3 * kv + lse + 4 * f) * compute_bytes


def weight_shards(lay: Layout) -> int:
    """Ranks one stage's weights, gradients and optimizer state are split over: FSDP shards over dp_shard·tp·cp,
    DDP only over tp."""
    return lay.dp_shard * lay.tp * lay.cp if lay.parallel == "fsdp" else lay.tp


def peak(parts: dict[str, float]) -> float:
    """The peak of a step from its parts: the loss's logits live only at the turn from forward to backward, before
    any block is recomputed, so only the larger of the two counts."""
    return sum(v for k, v in parts.items() if k != "total") - min(parts["loss"], parts["recompute"])


def memory_per_rank(cfg: ModelConfig, lay: Layout) -> dict[str, float]:
    """Bytes per rank by part, and `total`."""
    fsdp = lay.parallel == "fsdp"
    stage_layers = math.ceil(cfg.n_layers / lay.pp)
    emb = cfg.vocab_size * cfg.dim
    # one stage holds the embedding and the head when pp == 1; with pipelining the first holds one, the last the other
    ends = emb if lay.pp > 1 or cfg.tie_embeddings else 2 * emb
    n = stage_layers * cfg.layer_params() + ends + cfg.dim
    shard = weight_shards(lay)
    b = lay.compute_bytes
    gathered = 0.0
    if fsdp and lay.dp_shard * lay.cp > 1:
        gathered = 2 * cfg.layer_params() * b / lay.tp
    tokens = lay.seq_len * lay.micro_batch / lay.cp
    full = activation_bytes_per_token_layer(cfg, b) * tokens / lay.tp
    per_layer = activation_bytes_per_token_layer(cfg, b, lay.recompute) * tokens / lay.tp
    saved = cfg.n_layers * per_layer  # 1F1B: pp micro-batches × L/pp layers on the first stage
    recompute = full if lay.recompute != "none" else 0.0
    # embedding output and final norm input; the head's fp32 gradient
    saved += tokens * cfg.dim * (b + 4) + tokens * cfg.dim * b + emb * 4 / lay.tp
    if lay.loss == "full":
        loss = tokens * cfg.vocab_size / lay.tp * (b + 4 + 4)
    else:
        chunk = min(tokens, max(16, (1 << 23) // max(cfg.vocab_size, 1)))
        loss = 2 * chunk * cfg.vocab_size * 4
    out = {
        "parameters": lay.param_bytes * n / shard,
        "gradients": lay.grad_bytes * n / shard,
        "optimizer": lay.optim_bytes * n / shard,
        "gathered": gathered,
        "activations": saved,
        "recompute": recompute,
        "loss": loss,
        "transient": (4 * cfg.layer_params() / lay.tp if fsdp and shard > 1 else 0.0) + lay.overhead_gib * GIB,
    }
    out["total"] = peak(out)
    return out
