"""A plain sampling loop with a KV cache, behind `roost generate models/NAME "prompt"` (the batched engine with
continuous batching is `roost.infer.engine`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from roost.model.llama import Llama


@dataclass
class SampleConfig:
    max_tokens: int = 60
    temperature: float = 0.8
    top_k: int = 50
    top_p: float = 0.95
    seed: int | None = None


def sample_next(logits: torch.Tensor, cfg: SampleConfig, gen: torch.Generator | None) -> torch.Tensor:
    """logits [B, V] → token ids [B]; greedy when temperature is 0."""
    if cfg.temperature <= 0:
        return logits.argmax(-1)
    logits = logits.float() / cfg.temperature
    if cfg.top_k > 0:
        kth = torch.topk(logits, min(cfg.top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if 0 < cfg.top_p < 1:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        drop = probs.cumsum(-1) - probs > cfg.top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    return torch.multinomial(logits.softmax(-1), 1, generator=gen).squeeze(-1)


@torch.no_grad()
def generate(model: Llama, prompt_ids: list[int], cfg: SampleConfig, stop_ids: set[int]) -> list[int]:
    """Prefill the prompt, then decode one token at a time until a stop id or max_tokens."""
    model.eval()
    dev = model.model.embed_tokens.weight.device
    gen = torch.Generator(device=dev).manual_seed(cfg.seed) if cfg.seed is not None else None
    total = min(len(prompt_ids) + cfg.max_tokens, model.config.max_seq_len)
    model.setup_kv_cache(1, total)
    try:
        x = torch.tensor([prompt_ids], device=dev)
        logits = model(x, input_pos=torch.arange(len(prompt_ids), device=dev))[:, -1]
        out: list[int] = []
        pos = len(prompt_ids)
        while len(out) < cfg.max_tokens and pos < total:
            nxt = sample_next(logits, cfg, gen)
            tid = int(nxt[0])
            if tid in stop_ids:
                break
            out.append(tid)
            logits = model(nxt[:, None], input_pos=torch.tensor([pos], device=dev))[:, -1]
            pos += 1
        return out
    finally:
        model.clear_kv_cache()
