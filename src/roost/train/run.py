"""A training run's settings and folder: `TrainConfig` (the `[train]` section / `roost train` flags), its paths in
the workspace, the dtype it runs in (roost.probe), and the rules for starting a run over an existing one.

Used by `roost train` through `roost.train.trainer.Trainer`; `roost train --force` calls `start_over`.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from roost.context import Roost
from roost.errors import UsageError
from roost.model.imports import resolve_model
from roost.probe import Choice, choose, probe
from roost.registry import Location
from roost.train import checkpoint as ckpt
from roost.workspace import Workspace


@dataclass
class TrainConfig:
    """Settings of `roost train` (`[train]` in roost.toml)."""

    name: str = "run"
    preset: str = "small"  # model shape for from-scratch runs (configs/*.toml); ignored with init or depth
    depth: int = 0  # > 0: derive width, heads and LR from this one dial instead of the preset
    init: str = ""  # models/<name> directory to fine-tune
    shards: str = "default"
    sft: bool = False  # (post → reply) pairs from the store with the chat template, loss on replies only
    seq_len: int = 256
    batch_size: int = 16
    grad_accum: int = 1
    steps: int = 200
    lr: float = 0.0  # 0 → the depth dial's LR, 1e-3 from scratch, 1e-4 fine-tuning (1e-3 with LoRA)
    min_lr_ratio: float = 0.1
    warmup: int = 20
    schedule: str = "cosine"  # cosine | wsd | constant
    optimizer: str = "adamw"  # adamw | muon
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    dtype: str = "auto"  # auto (roost.probe: bf16 only where the hardware runs it natively) | fp32 | bf16 (autocast)
    compile: bool = False
    activation_checkpointing: bool = False
    doc_mask: bool = False  # attention stays inside each packed document
    lora_rank: int = 0  # > 0: train LoRA adapters only (merged into the weights on export)
    lora_alpha: float = 16.0
    eval_every: int = 50
    eval_batches: int = 8
    ckpt_every: int = 50
    keep: int = 3
    seed: int = 0
    device: str = "auto"
    peak_tflops: float = 0.0  # 0 → detected
    log_every: int = 1
    # at scale (`--nproc N` or torchrun): see roost.train.parallel and docs/scale.md
    parallel: str = "fsdp"  # fsdp (FSDP2, HSDP with dp_replicate > 1) | ddp
    dp_replicate: int = 1
    dp_shard: int = -1  # -1: the ranks dp_replicate and tp leave
    tp: int = 1  # tensor-parallel degree (keep it within a node)
    cpu_offload: bool = False  # FSDP2 keeps parameters, gradients and optimizer state in host memory
    async_ckpt: bool = False  # DCP async save: training goes on while the checkpoint is written
    hang_timeout: float = 600.0  # seconds a step may take before every rank dumps its stacks and exits; 0: off

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


@dataclass
class Paths:
    ws: Workspace
    run: Path
    shards: Path
    models: Path
    corpus_db: Location  # the post store (the context's: a PostgreSQL URL with --store / [store] url)

    @classmethod
    def of(cls, ctx: Roost, cfg: TrainConfig) -> Paths:
        ws = ctx.ws
        return cls(ws, ws.run_dir(cfg.name), ws.shard_dir(cfg.shards), ws.models, ctx.store)


def device_of(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def pick_dtype(device: torch.device, requested: str) -> Choice:
    """The training dtype for `device`: `requested`, or by the probe's table when it is "auto"."""
    hw = probe()
    if device.type != "cuda":
        hw = dataclasses.replace(hw, cuda_name="", cuda_bf16=False)
    return choose("train", requested, hw)


def resolve_init(ws: Workspace, init: str) -> Path:
    try:
        return resolve_model(ws, init)
    except UsageError:
        raise UsageError(
            f"--init {init}: no model directory there (config.json missing); `roost import` one first"
        ) from None


def check_new_run(ws: Workspace, name: str) -> None:
    """A new run may not write over an existing run's checkpoints or an existing models/NAME."""
    run, model = ws.run_dir(name), ws.model_dir(name)
    ours = {"config.json", "checkpoints", "metrics.jsonl", "tensorboard", "loss.png", "hang"}  # what roost writes
    if run.is_symlink() or (run.is_dir() and not (run / "config.json").is_file() and set(os.listdir(run)) - ours):
        raise UsageError(f"{run} exists and was not written by roost; move it away or pick another --name")
    if ckpt.list_checkpoints(run / "checkpoints"):
        raise UsageError(f"run {name!r} exists ({run}): --resume continues it, --force starts it over")
    if model.exists():
        raise UsageError(f"model {name!r} exists ({model}): pass --force to replace it, or pick another --name")


def start_over(ws: Workspace, name: str, init: str = "") -> None:
    """`roost train --force`: remove the run folder and models/NAME that roost wrote (their marker files say so);
    never the model this run fine-tunes from."""
    if init and resolve_init(ws, init).resolve() == ws.model_dir(name).resolve():
        raise UsageError(f"--init {init} is models/{name}, which --force would replace: pick another --name")
    for path in (ws.run_dir(name), ws.model_dir(name)):
        ws.claim(path, force=True)  # refuses a folder roost did not write
        if path.exists():
            tmp = path.parent / f".{path.name}.old-{os.getpid()}"
            path.rename(tmp)
            shutil.rmtree(tmp, ignore_errors=True)
