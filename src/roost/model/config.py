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
import math
import numbers
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from roost.config import build_section
from roost.errors import UsageError

PRESETS_DIR = Path(__file__).resolve().parent.parent / "configs"

# Upper bounds on a model's sizes. A config from elsewhere (config.json, GGUF metadata) is held to them before
# anything is built, then checked tensor by tensor against its weights (`roost.model.convert.check_shapes`). The
# largest preset, llama3-405b (vocabulary 128,256, dim 16,384, 126 layers, 128 heads, head_dim 128, FFN 53,248,
# 131,072 positions), is well inside each.
MAX_VOCAB = 1 << 21  # 2,097,152 token ids
MAX_DIM = 1 << 16  # 65,536
MAX_LAYERS = 1024
MAX_HEADS = 1024  # query heads, and key/value heads
MAX_HEAD_DIM = 1024
MAX_FFN = 1 << 18  # 262,144
MAX_SEQ_LEN = 1 << 21  # 2,097,152 positions
# The rotary tables (cos and sin, [max_seq_len, head_dim] in fp32) are built from the config alone, with no weights
# to check them against: 2^27 cells is 512 MiB a table (a 1M-position model at head_dim 128; llama3-405b needs 2^24).
MAX_ROPE_CELLS = 1 << 27
# field → (least, most); 0 means "derive it" for n_kv_heads, head_dim and ffn_dim
SIZE_LIMITS: dict[str, tuple[int, int]] = {
    "vocab_size": (1, MAX_VOCAB),
    "dim": (1, MAX_DIM),
    "n_layers": (1, MAX_LAYERS),
    "n_heads": (1, MAX_HEADS),
    "n_kv_heads": (0, MAX_HEADS),
    "head_dim": (0, MAX_HEAD_DIM),
    "ffn_dim": (0, MAX_FFN),
    "max_seq_len": (1, MAX_SEQ_LEN),
}


def check_size(field: str, value: Any, label: str | None = None) -> int:
    """`value` as an int within SIZE_LIMITS[field]; UsageError naming `label` (the field as its file spells it)."""
    lo, hi = SIZE_LIMITS[field]
    label = label or f"model.{field}"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise UsageError(f"{label} must be an integer in [{lo:,}, {hi:,}], got {str(value)[:40]!r}")
    size = int(value)
    if not lo <= size <= hi:
        raise UsageError(f"{label} must be in [{lo:,}, {hi:,}] (roost's limit), got {size:,}")
    return size


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
        for k in SIZE_LIMITS:
            setattr(self, k, check_size(k, getattr(self, k)))
        if self.n_kv_heads == 0:
            self.n_kv_heads = self.n_heads
        if self.head_dim == 0:
            if self.dim % self.n_heads:
                raise UsageError(
                    f"model: {self.n_heads} heads do not divide dim {self.dim}; "
                    "change n_heads or dim, or set head_dim explicitly"
                )
            self.head_dim = self.dim // self.n_heads
        if self.head_dim % 2 or self.head_dim < 2:
            raise UsageError(f"model.head_dim must be even for rotary embeddings, got {self.head_dim}")
        if self.max_seq_len * self.head_dim > MAX_ROPE_CELLS:
            raise UsageError(
                f"model.max_seq_len {self.max_seq_len:,} x head_dim {self.head_dim} is over roost's limit of "
                f"{MAX_ROPE_CELLS:,} rotary table cells"
            )
        if self.n_heads % self.n_kv_heads:
            raise UsageError(f"model: n_kv_heads {self.n_kv_heads} must divide n_heads {self.n_heads} (GQA groups)")
        if self.ffn_dim == 0:
            self.ffn_dim = 256 * -(-int(8 * self.dim / 3) // 256)
        if self.rope_scaling is not None:
            need = {"factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"}
            missing = need - set(self.rope_scaling)
            if missing:
                raise UsageError(f"model.rope_scaling is missing {sorted(missing)}")
            for k in sorted(need):
                _check_number(f"model.rope_scaling.{k}", self.rope_scaling[k], positive=True)
            if self.rope_scaling["high_freq_factor"] == self.rope_scaling["low_freq_factor"]:
                raise UsageError("model.rope_scaling: high_freq_factor must differ from low_freq_factor")
        _check_number("model.rope_theta", self.rope_theta, positive=True)
        _check_number("model.norm_eps", self.norm_eps, positive=False)

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


def _check_number(label: str, value: Any, positive: bool) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (positive and value == 0):
        raise UsageError(f"{label} must be a finite {'positive' if positive else 'non-negative'} number, got {value!r}")


def from_dict(d: dict[str, Any], where: str = "model config") -> ModelConfig:
    """A ModelConfig from a table; any UsageError names `where`."""
    try:
        cfg: ModelConfig = build_section(ModelConfig, d, where)
    except UsageError as e:
        raise UsageError(str(e) if str(e).startswith(where) else f"{where}: {e}") from None
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
