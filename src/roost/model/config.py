"""`ModelConfig`: the shape of a Llama-family model, its presets (`configs/*.toml`), the `--depth` dial, and the
parameter and FLOP counts that MFU and the fleet planner use. Pure Python: no torch import.

`roost train --preset small`, `roost train --depth 6`; in Python `load_preset("llama3-8b").num_params()`.
FLOPs convention: training FLOPs per token = 6·N + 12·L·(H·Dh)·T (PaLM appendix B / nanoGPT), where N counts
every weight that takes part in a matmul (all but the input embedding table; the output head counts even when
tied) and T is the sequence length. The attention term counts the full T×T score matrix; a causal kernel does
about half of it, so MFU against this count is the convention most papers report.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from roost.config import build_section
from roost.errors import UsageError

PRESETS_DIR = Path(__file__).resolve().parent.parent / "configs"


@dataclass
class ModelConfig:
    name: str = "custom"
    vocab_size: int = 32_768
    dim: int = 768
    n_layers: int = 12
    n_heads: int = 12
    n_kv_heads: int = 0  # 0 → n_heads (multi-head attention); fewer → grouped-query attention
    head_dim: int = 0  # 0 → dim // n_heads
    ffn_dim: int = 0  # 0 → Llama's rule: 8/3·dim rounded up to a multiple of 256
    max_seq_len: int = 2048
    rope_theta: float = 10_000.0
    rope_scaling: dict[str, Any] | None = (
        None  # Llama 3.1: {factor, low_freq_factor, high_freq_factor, original_max_position_embeddings}
    )
    norm_eps: float = 1e-5
    tie_embeddings: bool = True
    qk_norm: bool = False
    attention_bias: bool = False
    init_std: float = 0.02
    extra: dict[str, Any] = field(default_factory=dict)  # provenance of imported shapes (not used by the model)

    def __post_init__(self) -> None:
        for k in ("vocab_size", "dim", "n_layers", "n_heads", "max_seq_len"):
            if getattr(self, k) < 1:
                raise UsageError(f"model.{k} must be >= 1, got {getattr(self, k)}")
        if self.n_kv_heads == 0:
            self.n_kv_heads = self.n_heads
        if self.head_dim == 0:
            if self.dim % self.n_heads:
                raise UsageError(
                    f"model: {self.n_heads} heads do not divide dim {self.dim}; "
                    "change n_heads or dim, or set head_dim explicitly"
                )
            self.head_dim = self.dim // self.n_heads
        if self.head_dim % 2:
            raise UsageError(f"model.head_dim must be even for rotary embeddings, got {self.head_dim}")
        if self.n_heads % self.n_kv_heads:
            raise UsageError(f"model: n_kv_heads {self.n_kv_heads} must divide n_heads {self.n_heads} (GQA groups)")
        if self.ffn_dim == 0:
            self.ffn_dim = 256 * -(-int(8 * self.dim / 3) // 256)
        if self.rope_scaling is not None:
            need = {"factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"}
            missing = need - set(self.rope_scaling)
            if missing:
                raise UsageError(f"model.rope_scaling is missing {sorted(missing)}")

    # -- counts ------------------------------------------------------------------------------------------------
    def layer_params(self) -> int:
        d, hd = self.dim, self.head_dim
        attn = d * self.n_heads * hd + 2 * d * self.n_kv_heads * hd + self.n_heads * hd * d
        if self.attention_bias:
            attn += (self.n_heads + 2 * self.n_kv_heads) * hd + d
        norms = 2 * d + (2 * hd if self.qk_norm else 0)
        return attn + 3 * d * self.ffn_dim + norms

    def num_params(self) -> int:
        """Trainable parameters (a tied head is counted once)."""
        emb = self.vocab_size * self.dim
        return emb + self.n_layers * self.layer_params() + self.dim + (0 if self.tie_embeddings else emb)

    def matmul_params(self) -> int:
        """N of the FLOP count: every weight in a matmul, i.e. all but the embedding table, head included."""
        return self.n_layers * self.layer_params() + self.vocab_size * self.dim

    def flops_per_token(self, seq_len: int | None = None) -> float:
        """Training (forward + backward) FLOPs per token: 6·N + 12·L·(H·Dh)·T."""
        t = seq_len or self.max_seq_len
        return 6.0 * self.matmul_params() + 12.0 * self.n_layers * self.n_heads * self.head_dim * t

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def from_dict(d: dict[str, Any], where: str = "model config") -> ModelConfig:
    cfg: ModelConfig = build_section(ModelConfig, d, where)
    return cfg


def presets() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.toml"))


def load_preset(name: str, **overrides: Any) -> ModelConfig:
    path = PRESETS_DIR / f"{name}.toml"
    if not path.is_file():
        raise UsageError(f"unknown model preset {name!r}; have {presets()}")
    data = tomllib.loads(path.read_text())
    return from_dict({**data.get("model", data), **overrides}, str(path))


def from_depth(depth: int, vocab_size: int = 32_768, max_seq_len: int = 1024) -> tuple[ModelConfig, float]:
    """The one size dial for from-scratch runs (nanochat's idea): width 64·depth, 64-wide heads, GQA with two
    query heads per key/value head where the count is even, SwiGLU 8/3·width; and the matching AdamW peak LR,
    scaled as 1/sqrt(width) from 6e-4 at width 768 (GPT-2 small)."""
    if not 1 <= depth <= 128:
        raise UsageError(f"--depth must be in [1, 128], got {depth}")
    dim = 64 * depth
    heads = max(1, dim // 64)
    kv = heads // 2 if heads % 2 == 0 else heads
    cfg = ModelConfig(
        name=f"d{depth}",
        vocab_size=vocab_size,
        dim=dim,
        n_layers=depth,
        n_heads=heads,
        n_kv_heads=kv,
        ffn_dim=64 * -(-int(8 * dim / 3) // 64),
        max_seq_len=max_seq_len,
    )
    return cfg, 6e-4 * (768 / dim) ** 0.5
