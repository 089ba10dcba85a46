"""A training run's settings: `TrainConfig`, the `[train]` section of roost.toml and the flags of `roost train`
(which are generated from its fields, so the file and the flags cannot drift). Imports no torch: the CLI builds
its options from it at start-up.

    roost train --name demo --preset small --steps 300      # or [train] name/preset/steps in roost.toml

A field with `flag(...)` metadata is a `roost train` option (`--seq-len` for `seq_len`, its help text in the
metadata, in the order of the fields); the others are set in roost.toml only. A flag left out keeps the
`[train]` value, else the field's default; a switch (a bool field) only turns its setting on.
"""

from __future__ import annotations

from dataclasses import dataclass

from roost.config import FLAG, flag  # noqa: F401 — FLAG re-exported
from roost.errors import UsageError


@dataclass
class TrainConfig:
    """Settings of `roost train` (`[train]` in roost.toml)."""

    name: str = flag("run", "Run name: runs/NAME and models/NAME.", always=True)
    # model shape for from-scratch runs (configs/*.toml); ignored with init or depth
    preset: str = flag("small", "Model shape from configs/: tiny, small, gpt2-124m, ...")
    # > 0: derive width, heads and LR from this one dial instead of the preset
    depth: int = flag(0, "One size dial: width 64·depth, heads and LR derived.")
    init: str = flag("", "Fine-tune this model (models/NAME or a directory).")
    shards: str = flag("default", "Shard set under <home>/shards.")
    # (post → reply) pairs from the store with the chat template, loss on replies only
    sft: bool = flag(False, "Train on (post → reply) pairs with the chat template.")
    steps: int = flag(200)
    seq_len: int = flag(256)
    batch_size: int = flag(16)
    grad_accum: int = flag(1)
    # 0 → the depth dial's LR, 1e-3 from scratch, 1e-4 fine-tuning (1e-3 with LoRA)
    lr: float = flag(0.0, "Peak LR (default from the dial / mode).")
    min_lr_ratio: float = 0.1
    warmup: int = flag(20)
    schedule: str = flag("cosine", "cosine, wsd or constant.")
    optimizer: str = flag("adamw", "adamw or muon.")
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    # auto (roost.probe: bf16 only where the hardware runs it natively) | fp32 | bf16 (autocast)
    dtype: str = flag("auto", "auto (by CPU class, roost.probe), fp32 or bf16 (autocast).")
    compile: bool = flag(False, "torch.compile the model.")
    activation_checkpointing: bool = flag(False)
    doc_mask: bool = flag(False, "Attention stays inside each packed post.")
    # > 0: train LoRA adapters only (merged into the weights on export)
    lora_rank: int = flag(0, "LoRA adapters of this rank (with --init).")
    lora_alpha: float = 16.0
    eval_every: int = flag(50)
    eval_batches: int = 8
    ckpt_every: int = flag(50)
    keep: int = flag(3, "Checkpoints kept.")
    seed: int = flag(0)
    device: str = flag("auto", "auto, cpu, cuda, cuda:1 ...")
    peak_tflops: float = 0.0  # 0 → detected
    log_every: int = 1
    # at scale (`--nproc N` or torchrun): see roost.train.parallel and docs/scale.md
    parallel: str = flag("fsdp", "fsdp (FSDP2/HSDP) or ddp.")  # HSDP with dp_replicate > 1
    dp_replicate: int = flag(1, "HSDP replica groups.")
    dp_shard: int = flag(-1, "FSDP shard degree (-1: the ranks left).")  # the ranks dp_replicate and tp leave
    tp: int = flag(1, "Tensor-parallel degree (within a node).")
    # FSDP2 keeps parameters, gradients and optimizer state in host memory
    cpu_offload: bool = flag(False, "FSDP2 keeps state in host memory.")
    # DCP async save: training goes on while the checkpoint is written
    async_ckpt: bool = flag(False, "Write checkpoints in the background.")
    # seconds a step may take before every rank dumps its stacks and exits; 0: off
    hang_timeout: float = flag(600.0, "Seconds before a stuck step dumps stacks and exits.")

    def __post_init__(self) -> None:
        for k in ("seq_len", "batch_size", "grad_accum", "steps", "eval_batches", "ckpt_every", "log_every"):
            if getattr(self, k) < 1:
                raise UsageError(f"train.{k} must be >= 1, got {getattr(self, k)}")
        if self.warmup < 0 or self.lr < 0 or self.weight_decay < 0 or self.grad_clip < 0 or self.lora_rank < 0:
            raise UsageError("train.warmup, lr, weight_decay, grad_clip and lora_rank must be >= 0")
        if self.schedule not in ("cosine", "wsd", "constant"):
            raise UsageError(f"train.schedule must be cosine, wsd or constant, got {self.schedule!r}")
        if self.optimizer not in ("adamw", "muon"):
            raise UsageError(f"train.optimizer must be adamw or muon, got {self.optimizer!r}")
        if self.dtype not in ("auto", "fp32", "bf16"):
            raise UsageError(f"train.dtype must be auto, fp32 or bf16, got {self.dtype!r}")
        if self.parallel not in ("fsdp", "ddp"):
            raise UsageError(f"train.parallel must be fsdp or ddp, got {self.parallel!r}")
        if self.hang_timeout < 0:
            raise UsageError("train.hang_timeout must be >= 0 (0 turns the watchdog off)")
        if self.lora_rank and not self.init:
            raise UsageError("--lora-rank fine-tunes an imported model: give --init models/NAME")
