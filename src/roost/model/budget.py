"""Memory per rank of training a `ModelConfig` on a mesh: parameters, gradients, optimizer state, the gathered
FSDP units, and activations with and without activation checkpointing. Pure Python (no torch): `roost train
--dry-run` prints it and the fleet planner (`roost plan`) searches over it.

    from roost.model.budget import Layout, memory_per_rank
    memory_per_rank(load_preset("llama3-8b"), Layout(dp_shard=8, tp=1, seq_len=8192, micro_batch=1))

What is counted (bytes; N = parameters, /S = sharded over dp_shard·tp for FSDP, over tp for DDP):
  parameters     fp32 master copy 4N/S (FSDP2 keeps the sharded parameters in fp32)
  gradients      fp32 4N/S (reduce-scattered; DDP keeps a full copy per rank)
  optimizer      AdamW's two fp32 moments 8N/S
  gathered       FSDP all-gathers one block (plus the next, prefetched) in the compute dtype: 2·block/tp
  activations    what autograd saves for backward, per token per layer, for this repo's Llama block with a
                 fused attention kernel (no T×T scores kept): the norm inputs kept in fp32 (2·4D bytes), and in
                 the compute dtype the q/k/v/o inputs, q, k, v after RoPE, the attention output and its
                 log-sum-exp, RoPE's rotated copies, the MLP input, gate, up, silu(gate) and their product:
                 (6D + 3·kvD + 4F)·b;
                 sequence parallelism divides it by tp. With checkpointing only each block's input (D·b) is
                 kept, plus one block's full set while it is recomputed. The embedding output and the fused
                 loss's per-chunk logits are added.
The static part is checked against real tensors and the activation part against autograd's saved tensors in
tests/train/test_dryrun.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from roost.model.config import ModelConfig

GIB = 2**30


@dataclass
class Layout:
    dp_replicate: int = 1
    dp_shard: int = 1
    tp: int = 1
    parallel: str = "fsdp"  # fsdp | ddp
    seq_len: int = 2048
    micro_batch: int = 1  # sequences per rank per forward
    compute_bytes: int = 2  # 2: bf16 (GPU default), 4: fp32
    activation_checkpointing: bool = False

    @property
    def world(self) -> int:
        return self.dp_replicate * self.dp_shard * self.tp


def activation_bytes_per_token_layer(cfg: ModelConfig, compute_bytes: int) -> float:
    d, kv, f = cfg.dim, cfg.n_kv_heads * cfg.head_dim, cfg.ffn_dim
    q = cfg.n_heads * cfg.head_dim
    lse = cfg.n_heads * 4 / max(cfg.head_dim, 1)  # one fp32 per head per token, amortised over head_dim slots
    return 2 * 4 * d + (3 * d + 3 * q + 3 * kv + lse + 4 * f) * compute_bytes


def memory_per_rank(cfg: ModelConfig, lay: Layout) -> dict[str, float]:
    """Bytes per rank by part, and `total`."""
    n = cfg.num_params()
    shard = lay.dp_shard * lay.tp if lay.parallel == "fsdp" else lay.tp
    b = lay.compute_bytes
    params = 4 * n / shard
    grads = 4 * n / shard
    optim = 8 * n / shard
    gathered = 0.0
    if lay.parallel == "fsdp" and lay.dp_shard > 1:
        gathered = 2 * cfg.layer_params() * b / lay.tp
    tokens = lay.seq_len * lay.micro_batch
    per_layer = activation_bytes_per_token_layer(cfg, b) * tokens / lay.tp
    if lay.activation_checkpointing:
        saved = cfg.n_layers * cfg.dim * b * tokens / lay.tp
        recompute = per_layer  # one block's activations exist again while its backward runs
    else:
        saved, recompute = cfg.n_layers * per_layer, 0.0
    # embedding output and final norm input; the fused loss keeps d(loss)/d(hidden) and the head's fp32 gradient,
    # and holds two fp32 logit chunks at a time
    chunk = min(tokens, max(16, (1 << 23) // max(cfg.vocab_size, 1)))
    saved += tokens * cfg.dim * (b + 4) + tokens * cfg.dim * b + cfg.vocab_size * cfg.dim * 4
    out = {
        "parameters": params,
        "gradients": grads,
        "optimizer": optim,
        "gathered": gathered,
        "activations": saved,
        "recompute": recompute,
        "loss_chunks": 2 * chunk * cfg.vocab_size * 4,
    }
    out["total"] = sum(out.values())
    return out
