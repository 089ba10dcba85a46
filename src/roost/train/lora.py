"""LoRA for fine-tuning (`roost train --init models/NAME --lora-rank 8`): low-rank adapters on every attention and
MLP projection, applied from outside the model with `torch.nn.utils.parametrize` (W + B·A·alpha/r), and merged
into plain weights on export, so the exported model is an ordinary Llama.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils import parametrize

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class LoRADelta(nn.Module):
    def __init__(self, out_f: int, in_f: int, rank: int, alpha: float, gen: torch.Generator):
        super().__init__()
        self.lora_A = nn.Parameter(torch.randn(rank, in_f, generator=gen) / math.sqrt(in_f))
        self.lora_B = nn.Parameter(torch.zeros(out_f, rank))
        self.scale = alpha / rank

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w + (self.lora_B @ self.lora_A).to(w.dtype) * self.scale


def apply_lora(model: nn.Module, rank: int, alpha: float, seed: int = 0) -> int:
    """Freeze every weight, add adapters to the target projections; returns the trainable parameter count."""
    gen = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.requires_grad_(False)
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Linear) and name.rsplit(".", 1)[-1] in TARGETS:
            out_f, in_f = mod.weight.shape
            delta = LoRADelta(out_f, in_f, rank, alpha, gen).to(mod.weight.device)
            parametrize.register_parametrization(mod, "weight", delta)
    return sum(p.numel() for p in lora_parameters(model))


def lora_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for n, p in model.named_parameters() if "lora_" in n]


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold the adapters into the weights in place (W ← W + B·A·alpha/r) and remove the parametrizations."""
    for mod in model.modules():
        if parametrize.is_parametrized(mod, "weight"):
            parametrize.remove_parametrizations(mod, "weight", leave_parametrized=True)
    for p in model.parameters():
        p.requires_grad_(True)
    return model
