"""Sampling parameters and the per-request logits pipeline of the engine: repetition / frequency / presence
penalties, temperature, top-k, top-p, min-p, a per-request seeded generator, and log-probabilities.

`SamplingParams` is the one sampling type of every route and verb; each keeps its own defaults where it builds one:
the OpenAI routes from the request (`roost.serve.generate_api.Generation.params_of`), `/v1/compose`, `/v1/reply`, `roost
compose` and `roost reply` from `SamplingParams.for_suggestions`, `roost generate` from its flags. Used by
`roost.infer.engine` and `roost.infer.simple` (`RequestSampler`) and sent upstream by `roost.infer.upstream`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch


@dataclass
class SamplingParams:
    max_tokens: int = 128
    temperature: float = 1.0
    top_k: int = 0  # 0 = off
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0  # HF style: divide positive logits of seen tokens, multiply negative ones
    frequency_penalty: float = 0.0  # OpenAI style: minus penalty × count
    presence_penalty: float = 0.0  # OpenAI style: minus penalty if seen
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    seed: int | None = None
    logprobs: int | None = None  # None: none; 0: the chosen token's; n: also the top n
    ignore_eos: bool = False

    @classmethod
    def for_suggestions(cls, max_chars: int = 280, temperature: float = 0.9, seed: int | None = None) -> SamplingParams:
        """Compose and reply candidates (API and CLI): enough tokens for `max_chars` characters (half as many, in
        48..256), nucleus 0.95 and a mild repetition penalty."""
        return cls(
            max_tokens=min(256, max(48, max_chars // 2)),
            temperature=temperature,
            top_p=0.95,
            repetition_penalty=1.1,
            seed=seed,
        )

    def nth(self, k: int) -> SamplingParams:
        """These parameters for the k-th of several samples: seed + k (no seed stays none)."""
        return replace(self, seed=None if self.seed is None else self.seed + k)

    def check(self) -> None:
        """Raise ValueError (a client error) for values that cannot work."""
        if self.max_tokens < 1:
            raise ValueError("max_tokens must be >= 1")
        if not 0 <= self.temperature <= 5:
            raise ValueError("temperature must be in [0, 5]")
        if self.top_k < 0:
            raise ValueError("top_k must be >= 0")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")
        if not 0 <= self.min_p <= 1:
            raise ValueError("min_p must be in [0, 1]")
        if not 0 < self.repetition_penalty <= 10:
            raise ValueError("repetition_penalty must be in (0, 10]")
        if not -2 <= self.frequency_penalty <= 2 or not -2 <= self.presence_penalty <= 2:
            raise ValueError("frequency_penalty and presence_penalty must be in [-2, 2]")
        if self.logprobs is not None and not 0 <= self.logprobs <= 20:
            raise ValueError("logprobs must be in [0, 20]")
        if len(self.stop) > 8 or any(not s or len(s) > 200 for s in self.stop):
            raise ValueError("stop: at most 8 non-empty strings of at most 200 characters")


class RequestSampler:
    """Holds one request's generator and token counts; turns a logits row into the next token."""

    def __init__(self, params: SamplingParams, vocab: int, device: torch.device):
        self.p = params
        self.gen = torch.Generator(device=device)
        if params.seed is not None:
            self.gen.manual_seed(params.seed)
        else:
            self.gen.seed()
        self.counts = torch.zeros(vocab, dtype=torch.float32, device=device)

    def observe(self, token_ids: list[int]) -> None:
        for t in token_ids:
            self.counts[t] += 1

    def __call__(self, logits: torch.Tensor) -> tuple[int, float | None, list[tuple[int, float]] | None]:
        """logits [V] → (token id, its logprob under the model, top-n (id, logprob)) — logprobs when requested."""
        p = self.p
        raw = logits.float()
        x = raw.clone()
        seen = self.counts > 0
        if p.repetition_penalty != 1.0 and bool(seen.any()):
            pen = torch.where(x > 0, x / p.repetition_penalty, x * p.repetition_penalty)
            x = torch.where(seen, pen, x)
        if p.frequency_penalty:
            x = x - p.frequency_penalty * self.counts
        if p.presence_penalty:
            x = x - p.presence_penalty * seen.float()
        big = torch.finfo(x.dtype).max / 4  # a tiny repetition penalty overflows: keep the order, finite
        x = torch.nan_to_num(x, nan=-big, posinf=big, neginf=-big)
        if p.temperature < 1e-5:  # greedy, as vLLM does below this (1e-300 is 0 in float32: 0/0 = nan)
            tok = int(x.argmax())
        else:
            # the best logit becomes 0, so a tiny temperature sends the rest to -inf, never to inf - inf = nan
            x = (x - x.max()) / p.temperature
            if p.top_k > 0:
                kth = torch.topk(x, min(p.top_k, x.numel())).values[-1]
                x = x.masked_fill(x < kth, float("-inf"))
            probs = x.softmax(-1)
            if p.min_p > 0:
                probs = probs.masked_fill(probs < p.min_p * probs.max(), 0.0)
            if p.top_p < 1.0:
                sp, order = probs.sort(descending=True)
                drop = sp.cumsum(-1) - sp > p.top_p
                sp = sp.masked_fill(drop, 0.0)
                probs = torch.zeros_like(probs).scatter(0, order, sp)
            tok = int(torch.multinomial(probs / probs.sum(), 1, generator=self.gen))
        self.counts[tok] += 1
        if p.logprobs is None:
            return tok, None, None
        lp = raw.log_softmax(-1)
        top = None
        if p.logprobs:
            v, i = lp.topk(p.logprobs)
            top = list(zip(i.tolist(), v.tolist(), strict=True))
        return tok, float(lp[tok]), top
