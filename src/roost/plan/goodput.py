"""Goodput: the fraction of wall-clock time a training job spends making progress, from a failure model.

    from roost.plan.goodput import FailureModel, goodput
    goodput(16384, 405e9, FailureModel())   # → Goodput(fraction≈0.88, mtbf_h≈3.1, ...)

Interruptions arrive at a rate proportional to the GPU count: one per `gpu_hours_per_interruption` GPU-hours
(Llama 3: 419 unexpected interruptions in 54 days on 16,384 H100s ≈ one per 51k GPU-hours; Dubey et al. 2024
§3.3.4). Each costs a restart (reschedule, NCCL init, checkpoint load) plus the work since the last checkpoint —
half an interval on average. Checkpoints cost their blocking write time every interval. With the job's mean
time between interruptions M, write time W, interval τ and restart R:

    lost fraction = W/τ + (R + τ/2)/M,   τ = sqrt(2·W·M) (Young 1974) unless given.

W = fixed cost (barrier, metadata) + 12 bytes/parameter (fp32 weights and AdamW's two moments) over the job's
aggregate storage bandwidth. `--goodput` replaces all of this with a number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from roost.errors import UsageError


@dataclass
class FailureModel:
    gpu_hours_per_interruption: float = 50_000.0
    restart_min: float = 10.0
    ckpt_fixed_s: float = 20.0
    ckpt_write_gbps_per_gpu: float = 0.5  # GB/s each GPU's share of the storage system sustains
    ckpt_interval_min: float = 0.0  # 0 → Young's optimum

    def __post_init__(self) -> None:
        for k in ("gpu_hours_per_interruption", "ckpt_write_gbps_per_gpu"):
            if not getattr(self, k) > 0:
                raise UsageError(f"failure model: {k} must be > 0, got {getattr(self, k)}")
        for k in ("restart_min", "ckpt_fixed_s", "ckpt_interval_min"):
            if not getattr(self, k) >= 0:
                raise UsageError(f"failure model: {k} must be >= 0, got {getattr(self, k)}")


@dataclass
class Goodput:
    fraction: float
    mtbf_h: float  # mean time between interruptions of the whole job
    interval_min: float
    write_s: float
    interruptions_per_day: float
    lost_checkpointing: float
    lost_failures: float


def goodput(gpus: int, params: float, fm: FailureModel | None = None) -> Goodput:
    fm = fm or FailureModel()
    if gpus < 1:
        raise UsageError(f"the GPU count must be >= 1, got {gpus}")
    m = fm.gpu_hours_per_interruption / gpus * 3600.0  # seconds
    w = fm.ckpt_fixed_s + 12.0 * params / (gpus * fm.ckpt_write_gbps_per_gpu * 1e9)
    tau = fm.ckpt_interval_min * 60.0 if fm.ckpt_interval_min else max(math.sqrt(2.0 * w * m), 2.0 * w)
    lost_ckpt = w / tau
    lost_fail = (fm.restart_min * 60.0 + tau / 2.0) / m
    return Goodput(
        fraction=max(0.01, 1.0 - lost_ckpt - lost_fail),
        mtbf_h=m / 3600.0,
        interval_min=tau / 60.0,
        write_s=w,
        interruptions_per_day=86400.0 / m,
        lost_checkpointing=lost_ckpt,
        lost_failures=lost_fail,
    )
