"""Optimizers and learning-rate schedules for `roost train`.

AdamW (fused where the device supports it) with decoupled weight decay on matrices only (not norms, biases or
LoRA-free frozen weights); optionally Muon (torch.optim.Muon) for the hidden 2-D matrices with AdamW for the rest.
Schedules: warmup + cosine, and warmup-stable-decay (WSD). The schedule is a pure function of the step, so a
checkpoint needs only the step to restore it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn


class Optimizers:
    """One or two torch optimizers stepped together (AdamW, or Muon + AdamW); the trainer sees one object."""

    def __init__(self, opts: list[torch.optim.Optimizer]):
        self.opts = opts
        for o in opts:
            for g in o.param_groups:
                g.setdefault("base_lr", g["lr"])

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return [g for o in self.opts for g in o.param_groups]

    def step(self) -> None:
        for o in self.opts:
            o.step()

    def zero_grad(self) -> None:
        for o in self.opts:
            o.zero_grad(set_to_none=True)

    def set_lr_factor(self, factor: float) -> None:
        for g in self.param_groups:
            g["lr"] = g["base_lr"] * factor

    def state_dict(self) -> list[dict[str, Any]]:
        return [o.state_dict() for o in self.opts]

    def load_state_dict(self, states: list[dict[str, Any]]) -> None:
        if len(states) != len(self.opts):
            raise ValueError(f"checkpoint holds {len(states)} optimizer(s), this run builds {len(self.opts)}")
        for o, s in zip(self.opts, states, strict=True):
            o.load_state_dict(s)


def _adamw(
    groups: list[dict[str, Any]], lr: float, betas: tuple[float, float], device: torch.device
) -> torch.optim.AdamW:
    fused = device.type in ("cuda", "cpu")  # fused AdamW has CPU and CUDA kernels in torch >= 2.4
    try:
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=1e-8, fused=fused)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=1e-8)


def build_optimizer(
    model: nn.Module,
    name: str,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float] = (0.9, 0.95),
    muon_lr: float = 0.02,
) -> Optimizers:
    """`name` is "adamw" or "muon" (Muon on hidden matrices, AdamW on embeddings, head, norms, biases)."""
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    device = params[0][1].device if params else torch.device("cpu")
    seen: set[int] = set()
    unique = []
    for n, p in params:  # a tied head shares the embedding tensor: optimise it once
        if id(p) not in seen:
            seen.add(id(p))
            unique.append((n, p))
    decay = [p for n, p in unique if p.dim() >= 2]
    no_decay = [p for n, p in unique if p.dim() < 2]
    if name == "adamw":
        return Optimizers([_adamw(_groups(decay, no_decay, weight_decay), lr, betas, device)])
    if name != "muon":
        raise ValueError(f"optimizer must be 'adamw' or 'muon', got {name!r}")
    hidden = [p for n, p in unique if p.dim() == 2 and ".layers." in f".{n}"]
    hidden_ids = {id(p) for p in hidden}
    rest_decay = [p for p in decay if id(p) not in hidden_ids]
    muon = torch.optim.Muon(hidden, lr=muon_lr, weight_decay=weight_decay, adjust_lr_fn="match_rms_adamw")
    return Optimizers([muon, _adamw(_groups(rest_decay, no_decay, weight_decay), lr, betas, device)])


def _groups(decay: Iterable[torch.Tensor], no_decay: Iterable[torch.Tensor], wd: float) -> list[dict[str, Any]]:
    """Decay and no-decay groups, each split by tensor type: under tensor parallelism some parameters are DTensors
    and some plain (the replicated embedding), and fused/foreach kernels run per group and refuse a mix."""
    groups = []
    for params, w in ((list(decay), wd), (list(no_decay), 0.0)):
        kinds: dict[type, list[torch.Tensor]] = {}
        for p in params:
            kinds.setdefault(type(p.data), []).append(p)
        groups += [{"params": ps, "weight_decay": w} for ps in kinds.values()]
    return groups


def lr_factor(
    step: int, total: int, warmup: int, schedule: str, min_ratio: float = 0.1, decay_frac: float = 0.2
) -> float:
    """Multiplier of the peak LR at `step` (0-based) of `total`: linear warmup, then cosine to `min_ratio`, or
    WSD — flat until the last `decay_frac` of the run, then linear to `min_ratio`."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        span = max(1, total - warmup)
        progress = min(1.0, (step - warmup) / span)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    if schedule == "wsd":
        decay_start = total - int(decay_frac * total)
        if step < decay_start:
            return 1.0
        progress = min(1.0, (step - decay_start) / max(1, total - decay_start))
        return 1.0 - (1 - min_ratio) * progress
    raise ValueError(f"schedule must be cosine, wsd or constant, got {schedule!r}")
