"""A plain sampling loop with a KV cache behind `roost generate models/NAME "prompt"`; it samples with the engine's
`RequestSampler` (the batched engine with continuous batching is `roost.infer.engine`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from roost.infer.sampling import RequestSampler, SamplingParams
from roost.model.llama import Llama


@dataclass
class SampleConfig:
    max_tokens: int = 60
    temperature: float = 0.8
    top_k: int = 50
    top_p: float = 0.95
    seed: int | None = None


@torch.no_grad()
def generate(model: Llama, prompt_ids: list[int], cfg: SampleConfig, stop_ids: set[int]) -> list[int]:
    """Prefill the prompt, then decode one token at a time until a stop id or max_tokens."""
    model.eval()
    dev = model.model.embed_tokens.weight.device
    sampler = RequestSampler(
        SamplingParams(
            max_tokens=cfg.max_tokens, temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p, seed=cfg.seed
        ),
        model.config.vocab_size,
        dev,
    )
    total = min(len(prompt_ids) + cfg.max_tokens, model.config.max_seq_len)
    model.setup_kv_cache(1, total)
    try:
        x = torch.tensor([prompt_ids], device=dev)
        logits = model(x, input_pos=torch.arange(len(prompt_ids), device=dev))[0, -1].float()
        out: list[int] = []
        pos = len(prompt_ids)
        while len(out) < cfg.max_tokens and pos < total:
            tid = sampler(logits)[0]
            if tid in stop_ids:
                break
            out.append(tid)
            logits = model(torch.tensor([[tid]], device=dev), input_pos=torch.tensor([pos], device=dev))[0, -1].float()
            pos += 1
        return out
    finally:
        model.clear_kv_cache()
