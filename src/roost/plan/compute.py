"""Training compute, compute-optimal allocation, energy and cost: the formulas `roost plan` is built from.

    from roost.plan.compute import Shape, compute_optimal
    Shape.from_config(load_preset("llama3-70b")).flops_per_token(8192)

FLOPs convention (PaLM appendix B, Megatron, nanoGPT): training FLOPs per token = 6·N_active + 12·L·(H·Dh)·T,
N_active = every weight in a matmul that a token passes through (the head counted, the input embedding not; for
a mixture of experts only the routed top-k experts), T the sequence length. The attention term counts the full
T×T score matrix — a causal kernel does about half of it; published MFU figures use this count, so ours do too.

Scaling law: Chinchilla's parametric loss L(N, D) = E + A/N^α + B/D^β with the Epoch AI refit (Besiroglu et al.
2024: E 1.8172, A 482.01, B 2085.43, α 0.3478, β 0.3658), minimised at fixed C = 6ND; also the 20-tokens-per-
parameter rule, and an inference-aware mode (Sardana et al. 2024): the model that reaches the compute-optimal
loss with the least training + inference compute. The loss is in nats on Chinchilla's MassiveText; it does not
transfer to another corpus or tokenizer — compare sizes and ratios, not absolute values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from roost.errors import UsageError
from roost.model.config import ModelConfig

E, A, B, ALPHA, BETA = 1.8172, 482.01, 2085.43, 0.3478, 0.3658
TOKENS_PER_PARAM = 20.0


@dataclass(frozen=True)
class Shape:
    """What the planner needs of a model: parameter counts, attention width, depth, and (when known) the config."""

    name: str
    total_params: float  # all trainable parameters (every expert)
    active_params: float  # matmul weights a token passes through (the N of 6N)
    layers: int
    attn_width: int  # H·Dh
    cfg: ModelConfig | None = None
    experts: int = 1
    top_k: int = 1

    @classmethod
    def from_config(cls, cfg: ModelConfig, experts: int = 1, top_k: int = 1) -> Shape:
        if experts < 1 or not 1 <= top_k <= experts:
            raise UsageError(f"--experts {experts} / --top-k {top_k}: need 1 <= top-k <= experts")
        ffn = 3 * cfg.dim * cfg.ffn_dim * cfg.n_layers
        router = cfg.dim * experts * cfg.n_layers if experts > 1 else 0
        name = cfg.name if experts == 1 else f"{cfg.name}-{experts}x{top_k}moe"
        return cls(
            name=name,
            total_params=cfg.num_params() + (experts - 1) * ffn + router,
            active_params=cfg.matmul_params() + (top_k - 1) * ffn + router,
            layers=cfg.n_layers,
            attn_width=cfg.n_heads * cfg.head_dim,
            cfg=cfg,
            experts=experts,
            top_k=top_k,
        )

    @classmethod
    def from_counts(cls, name: str, params: float, layers: int, d_model: int) -> Shape:
        """A dense model known only by its published parameter count, depth and width."""
        return cls(name=name, total_params=params, active_params=params, layers=layers, attn_width=d_model)

    def flops_per_token(self, seq_len: int) -> float:
        return 6.0 * self.active_params + 12.0 * self.layers * self.attn_width * seq_len


def training_flops(shape: Shape, tokens: float, seq_len: int) -> float:
    return shape.flops_per_token(seq_len) * tokens


def chinchilla_loss(n: float, d: float) -> float:
    return E + A / n**ALPHA + B / d**BETA


def compute_optimal(flops: float) -> tuple[float, float]:
    """(N, D) minimising L(N, D) subject to 6·N·D = flops (Hoffmann et al. approach 3, Epoch AI's refit)."""
    if flops <= 0:
        raise UsageError("the compute budget must be > 0 FLOPs")
    g = (ALPHA * A / (BETA * B)) ** (1 / (ALPHA + BETA))
    n = g * (flops / 6) ** (BETA / (ALPHA + BETA))
    return n, flops / (6 * n)


def rule_of_20(flops: float) -> tuple[float, float]:
    n = math.sqrt(flops / (6 * TOKENS_PER_PARAM))
    return n, TOKENS_PER_PARAM * n


def tokens_for_loss(n: float, loss: float) -> float:
    """D such that L(n, D) = loss; inf when n alone cannot reach it."""
    rest = loss - E - A / n**ALPHA
    return math.inf if rest <= 0 else (B / rest) ** (1 / BETA)


def inference_aware(flops: float, inference_tokens: float) -> tuple[float, float]:
    """(N, D): the model reaching the compute-optimal loss at `flops` with the least 6ND + 2N·inference_tokens."""
    n_opt, d_opt = compute_optimal(flops)
    target = chinchilla_loss(n_opt, d_opt)
    best = (math.inf, n_opt, d_opt)
    for i in range(400):  # N from n_opt/20 up to n_opt (smaller, longer-trained models)
        n = n_opt * 10 ** (-1.3 * i / 399)
        d = tokens_for_loss(n, target)
        cost = 6 * n * d + 2 * n * inference_tokens
        if cost < best[0]:
            best = (cost, n, d)
    return best[1], best[2]


def energy_kwh(gpus: int, hours: float, power_w: float, node_overhead: float = 1.5, pue: float = 1.2) -> float:
    """GPU board power × wall-clock hours × (CPUs, memory, NICs, switches per GPU watt) × datacentre PUE."""
    return gpus * power_w * hours * node_overhead * pue / 1000.0


def cost_usd(gpu_hours: float, usd_per_hour: tuple[float, float]) -> tuple[float, float]:
    return gpu_hours * usd_per_hour[0], gpu_hours * usd_per_hour[1]


_SUFFIX = {"k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12, "p": 1e15}


def parse_count(text: str, what: str = "value") -> float:
    """'15T', '1.5e12', '300B', '2_000_000' → float; anything else (or ≤ 0, or not finite) → UsageError."""
    s = text.strip().replace("_", "").replace(",", "").lower()
    mult = 1.0
    if s and s[-1] in _SUFFIX:
        s, mult = s[:-1], _SUFFIX[s[-1]]
    try:
        v = float(s) * mult
    except ValueError:
        raise UsageError(f"{what}: cannot read {text!r} as a number (examples: 15T, 1.5e12, 300B)") from None
    if not math.isfinite(v) or v <= 0:
        raise UsageError(f"{what} must be a positive finite number, got {text!r}")
    return v
