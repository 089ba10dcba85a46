"""Fused output-head + cross-entropy: the loss of `Llama.forward(idx, targets)` without materialising the
[tokens × vocab] logits or running `log_softmax` over them.

The rows are processed in chunks: logits of a chunk → log-sum-exp → loss, and, when gradients are wanted, the
gradient of the chunk's logits (softmax − one-hot) is pushed straight into the gradients of the hidden states and
the head weight, which backward then only scales. Peak memory for the head drops from O(tokens·vocab) to
O(chunk·vocab); on CPU it is also faster than `F.cross_entropy(lm_head(x))` (see bench.train_cpu). Targets equal
to -100 are ignored, as in `F.cross_entropy`.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

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
