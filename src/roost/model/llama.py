"""A Llama-family decoder as one readable module: embeddings, RoPE (with Llama-3 scaling), RMSNorm, grouped-query
attention through `scaled_dot_product_attention`, SwiGLU, optional QK-norm, tied or untied output head.

Used by `roost train`, `roost import/export` and `roost generate`; build one with `Llama(ModelConfig(...))` or
`Llama(load_preset("tiny"))`. Parameter names follow HF `LlamaForCausalLM` (model.layers.N.self_attn.q_proj …)
so HF checkpoints map one to one. No I/O and no distributed code here: parallelism, precision and compilation
are applied from `roost.train`.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from roost.model.config import ModelConfig


def rope_frequencies(cfg: ModelConfig, device: torch.device | None = None) -> torch.Tensor:
    """Inverse frequencies of the rotary embedding, with Llama-3 style scaling when configured."""
    hd = cfg.head_dim
    inv = 1.0 / (cfg.rope_theta ** (torch.arange(0, hd, 2, dtype=torch.float64, device=device) / hd))
    s = cfg.rope_scaling
    if s is not None and s.get("rope_type", "llama3") == "llama3":
        factor, lo, hi = s["factor"], s["low_freq_factor"], s["high_freq_factor"]
        old = s["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv
        low_wl, high_wl = old / lo, old / hi
        scaled = torch.where(wavelen > low_wl, inv / factor, inv)
        smooth = (old / wavelen - lo) / (hi - lo)
        mid = (1 - smooth) * scaled / factor + smooth * scaled
        is_mid = (wavelen <= low_wl) & (wavelen >= high_wl)
        inv = torch.where(is_mid, mid, scaled)
    return inv.float()


def rope_cache(cfg: ModelConfig, seq_len: int, device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin of shape [seq_len, head_dim] in the HF "rotate half" layout."""
    inv = rope_frequencies(cfg, device)
    t = torch.arange(seq_len, dtype=torch.float32, device=device)
    freqs = torch.outer(t, inv)
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos(), emb.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: [B, H, T, D]; cos/sin: [B or 1, 1, T, D]."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return (x * cos + rotated * sin).type_as(x)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x.float(), (x.shape[-1],), self.weight.float(), self.eps).type_as(x)


class KVCache(nn.Module):
    """Preallocated keys/values [batch, kv_heads, max_seq, head_dim]; written at given rows and positions (gpt-fast style)."""

    def __init__(
        self,
        batch: int,
        kv_heads: int,
        max_seq: int,
        head_dim: int,
        dtype: torch.dtype,
        device: torch.device | None = None,
    ):
        super().__init__()
        shape = (batch, kv_heads, max_seq, head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device), persistent=False)

    def update(self, at: CacheAt, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v [B, H, T, D] for cache row `at.rows[b]` at positions `at.starts[b]`..+T; return each row's
        first `at.span` cached positions (a view when the rows are consecutive)."""
        t = k.shape[2]
        for b, (r, p) in enumerate(zip(at.rows, at.starts, strict=True)):
            self.k[r, :, p : p + t] = k[b]
            self.v[r, :, p : p + t] = v[b]
        r0 = at.rows[0]
        if at.rows == list(range(r0, r0 + len(at.rows))):
            return self.k[r0 : r0 + len(at.rows), :, : at.span], self.v[r0 : r0 + len(at.rows), :, : at.span]
        idx = torch.tensor(at.rows, device=self.k.device)
        return self.k[idx, :, : at.span], self.v[idx, :, : at.span]


class CacheAt(NamedTuple):
    """Where a forward pass reads and writes the KV cache: the cache row of each batch row, the position of its
    first token (its tokens are consecutive), and how many cached positions attention reads."""

    rows: list[int]
    starts: list[int]
    span: int


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.n_kv, self.hd = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.q_proj = nn.Linear(cfg.dim, cfg.n_heads * cfg.head_dim, bias=cfg.attention_bias)
        self.k_proj = nn.Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=cfg.attention_bias)
        self.v_proj = nn.Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=cfg.attention_bias)
        self.o_proj = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.dim, bias=cfg.attention_bias)  # as HF Llama
        self.q_norm = RMSNorm(cfg.head_dim, cfg.norm_eps) if cfg.qk_norm else None
        self.k_norm = RMSNorm(cfg.head_dim, cfg.norm_eps) if cfg.qk_norm else None
        self.kv_cache: KVCache | None = None

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor | None,
        cache_at: CacheAt | None = None,
    ) -> torch.Tensor:
        b, t, _ = x.shape
        # heads as -1: under tensor parallelism each rank holds n_heads/tp of them (applied from roost.train)
        q = self.q_proj(x).view(b, t, -1, self.hd).transpose(1, 2)
        k = self.k_proj(x).view(b, t, -1, self.hd).transpose(1, 2)
        v = self.v_proj(x).view(b, t, -1, self.hd).transpose(1, 2)
        if self.q_norm is not None and self.k_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if self.kv_cache is not None and cache_at is not None:
            k, v = self.kv_cache.update(cache_at, k, v)
            k, v = k.to(q.dtype), v.to(q.dtype)
        gqa = self.n_heads != self.n_kv
        if mask is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)
        return self.o_proj(y.transpose(1, 2).reshape(b, t, -1))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.dim, cfg.ffn_dim, bias=False)
        self.up_proj = nn.Linear(cfg.dim, cfg.ffn_dim, bias=False)
        self.down_proj = nn.Linear(cfg.ffn_dim, cfg.dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.mlp = MLP(cfg)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor | None,
        cache_at: CacheAt | None = None,
    ) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, cache_at)
        return x + self.mlp(self.post_attention_layernorm(x))


class Decoder(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)


class Llama(nn.Module):
    """`forward(idx)` → logits [B, T, V]; `forward(idx, targets)` → mean cross-entropy (targets −100 ignored)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.model = Decoder(cfg)
        self.lm_head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        self.tie_weights()
        cos, sin = rope_cache(cfg, cfg.max_seq_len)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.gradient_checkpointing = False

    # -- init ----------------------------------------------------------------------------------------------------
    def init_weights(self, seed: int | None = None) -> None:
        """Normal(0, init_std) weights, residual projections scaled by 1/sqrt(2·layers) (GPT-2), zero biases."""
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        with torch.no_grad():
            for name, p in self.named_parameters():
                p.copy_(self.init_value(name, tuple(p.shape), gen))
        self.init_buffers()

    def init_value(self, name: str, shape: tuple[int, ...], gen: torch.Generator | None) -> torch.Tensor:
        """The initial value of parameter `name` (full shape), drawn from `gen`; parameters are drawn in
        `named_parameters()` order, so a sharded model can be initialised to the same numbers piece by piece."""
        if len(shape) == 1:
            return torch.ones(shape) if name.endswith("norm.weight") else torch.zeros(shape)
        std = self.config.init_std
        if name.endswith(("o_proj.weight", "down_proj.weight")):
            std /= math.sqrt(2 * self.config.n_layers)
        return torch.randn(shape, generator=gen) * std

    def tie_weights(self) -> None:
        """Share the embedding with the output head when the config ties them (again after `to_empty()`, which
        gives each its own tensor)."""
        if self.config.tie_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def init_buffers(self) -> None:
        """(Re)compute the RoPE tables, e.g. after `to_empty()` of a model built on the meta device."""
        dev = self.rope_cos.device
        cos, sin = rope_cache(self.config, self.config.max_seq_len, dev)
        self.rope_cos, self.rope_sin = cos, sin

    # -- caches for generation --------------------------------------------------------------------------------------
    def setup_kv_cache(self, batch: int, max_seq: int, dtype: torch.dtype | None = None) -> None:
        dtype = dtype or self.model.embed_tokens.weight.dtype
        dev = self.model.embed_tokens.weight.device
        for layer in self.model.layers:
            layer.self_attn.kv_cache = KVCache(batch, self.config.n_kv_heads, max_seq, self.config.head_dim, dtype, dev)

    def clear_kv_cache(self) -> None:
        for layer in self.model.layers:
            layer.self_attn.kv_cache = None

    # -- forward ----------------------------------------------------------------------------------------------------
    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        doc_ids: torch.Tensor | None = None,
        input_pos: torch.Tensor | None = None,
        cache_rows: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """idx [B, T]. `doc_ids` [B, T] keeps attention inside each packed document. With a KV cache
        (`setup_kv_cache`), `input_pos` ([T], or [B, T] per row) gives the tokens' positions and `cache_rows` [B]
        the cache row of each batch row (default 0..B-1); each query sees its row's cached keys up to its position."""
        b, t = idx.shape
        mask: torch.Tensor | None = None
        cache_at: CacheAt | None = None
        if input_pos is None:
            if t > self.config.max_seq_len:
                raise ValueError(f"sequence of {t} tokens exceeds max_seq_len {self.config.max_seq_len}")
            cos, sin = self.rope_cos[:t][None, None], self.rope_sin[:t][None, None]
        else:
            pos = input_pos if input_pos.dim() == 2 else input_pos[None].expand(b, -1)
            cos, sin = self.rope_cos[pos][:, None], self.rope_sin[pos][:, None]
            if self.model.layers[0].self_attn.kv_cache is not None:
                rows = cache_rows.tolist() if cache_rows is not None else list(range(b))
                starts = pos[:, 0].tolist()
                span = max(starts) + t
                cache_at = CacheAt(rows, starts, span)
                mask = (torch.arange(span, device=idx.device)[None, None, :] <= pos[:, :, None])[:, None]
        if doc_ids is not None:
            causal = torch.ones(t, t, dtype=torch.bool, device=idx.device).tril()
            mask = (doc_ids[:, :, None] == doc_ids[:, None, :]) & causal
            mask = mask[:, None]
        x = self.model.embed_tokens(idx)
        for layer in self.model.layers:
            if self.gradient_checkpointing and self.training:
                x = torch.utils.checkpoint.checkpoint(layer, x, cos, sin, mask, cache_at, use_reentrant=False)
            else:
                x = layer(x, cos, sin, mask, cache_at)
        x = self.model.norm(x)
        if targets is None:
            return self.lm_head(x)
        return linear_cross_entropy(x, self.lm_head.weight, targets)


# -- the loss --------------------------------------------------------------------------------------------------------
# Fused output-head + cross-entropy: the loss of `Llama.forward(idx, targets)` without materialising the
# [tokens × vocab] logits or running `log_softmax` over them.
#
# The rows are processed in chunks: logits of a chunk → log-sum-exp → loss, and, when gradients are wanted, the
# gradient of the chunk's logits (softmax − one-hot) is pushed straight into the gradients of the hidden states and
# the head weight, which backward then only scales. Peak memory for the head drops from O(tokens·vocab) to
# O(chunk·vocab); on CPU it is also faster than `F.cross_entropy(lm_head(x))` (see bench.train_cpu). Targets equal
# to -100 are ignored, as in `F.cross_entropy`.

IGNORE = -100


def _chunk_rows(vocab: int) -> int:
    return max(16, (1 << 23) // max(vocab, 1))  # ≈ 32 MiB of fp32 logits per chunk


class _FusedLinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, h: torch.Tensor, w: torch.Tensor, targets: torch.Tensor, compute_dtype: torch.dtype
    ) -> torch.Tensor:
        n = h.shape[0]
        count = (targets != IGNORE).sum().clamp(min=1).to(torch.float32)
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_h = torch.empty_like(h) if need_h else None
        grad_w = torch.zeros(w.shape, dtype=torch.float32, device=w.device) if need_w else None
        wc = w.to(compute_dtype)
        total = torch.zeros((), dtype=torch.float32, device=h.device)
        step = _chunk_rows(w.shape[0])
        for s in range(0, n, step):
            hc = h[s : s + step].to(compute_dtype)
            t = targets[s : s + step]
            valid = t != IGNORE
            tt = t.clamp(min=0)
            logits = (hc @ wc.t()).float()
            target_logit = logits.gather(1, tt[:, None]).squeeze(1)
            m = logits.amax(dim=-1, keepdim=True)
            e = logits.sub_(m).exp_()  # in place: logits are not needed any more
            sums = e.sum(dim=-1)
            lse = m.squeeze(1) + sums.log()
            total += ((lse - target_logit) * valid).sum()
            if need_h or need_w:
                p = e.div_(sums[:, None])
                p[torch.arange(len(t), device=p.device), tt] -= 1.0
                p.mul_((valid.to(torch.float32) / count)[:, None])
                pc = p.to(compute_dtype)
                if grad_h is not None:
                    grad_h[s : s + step] = (pc @ wc).to(h.dtype)
                if grad_w is not None:
                    grad_w += (pc.t() @ hc).float()
        ctx.save_for_backward(*(x for x in (grad_h, grad_w) if x is not None))
        ctx.has = (grad_h is not None, grad_w is not None)
        ctx.w_dtype = w.dtype
        return total / count

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        saved = list(ctx.saved_tensors)
        gh = saved.pop(0) * g if ctx.has[0] else None
        gw = (saved.pop(0) * g).to(ctx.w_dtype) if ctx.has[1] else None
        return gh, gw, None, None


def linear_cross_entropy(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """mean cross-entropy of `h @ weight.T` against `targets` (ignore -100); h [..., d], targets [...]."""
    h2 = h.reshape(-1, h.shape[-1])
    t = targets.reshape(-1)
    dev = h.device.type
    amp = dev in ("cpu", "cuda", "xpu", "mps", "hpu")  # not "meta" (dry runs count FLOPs there)
    dtype = torch.get_autocast_dtype(dev) if amp and torch.is_autocast_enabled(dev) else h.dtype
    if not torch.is_grad_enabled():  # evaluation: the loss only, no gradient work
        h2, weight = h2.detach(), weight.detach()
    with torch.autocast(dev, enabled=False) if amp else contextlib.nullcontext():
        return _FusedLinearCrossEntropy.apply(h2, weight, t, dtype)  # type: ignore[no-any-return]
