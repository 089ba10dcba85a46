"""A plain sampling loop with a KV cache behind `roost generate models/NAME "prompt"`; it samples with the engine's
`RequestSampler` (the batched engine with continuous batching is `roost.infer.engine`).
"""

from __future__ import annotations

import torch

from roost.infer.sampling import RequestSampler, SamplingParams
from roost.model.llama import Llama


@torch.no_grad()
def generate(model: Llama, prompt_ids: list[int], params: SamplingParams, stop_ids: set[int]) -> list[int]:
    """Prefill the prompt, then decode one token at a time until a stop id or max_tokens."""
    model.eval()
    dev = model.model.embed_tokens.weight.device
    sampler = RequestSampler(params, model.config.vocab_size, dev)
    total = min(len(prompt_ids) + params.max_tokens, model.config.max_seq_len)
    model.setup_kv_cache(1, total)
    try:
        x = torch.tensor([prompt_ids], device=dev)
        logits = model(x, input_pos=torch.arange(len(prompt_ids), device=dev))[0, -1].float()
        out: list[int] = []
        pos = len(prompt_ids)
        while len(out) < params.max_tokens and pos < total:
            tid = sampler(logits)[0]
            if tid in stop_ids:
                break
            out.append(tid)
            logits = model(torch.tensor([[tid]], device=dev), input_pos=torch.tensor([pos], device=dev))[0, -1].float()
            pos += 1
        return out
    finally:
        model.clear_kv_cache()
