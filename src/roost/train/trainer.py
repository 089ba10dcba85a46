"""The trainer behind `roost train`: one training run, in one process or as one rank of a torchrun job (FSDP2,
HSDP, DDP, tensor parallelism; roost.train.parallel), from scratch on token shards or fine-tuning an imported model
(full, LoRA, or SFT on replies), with exact resume and an export at the end.

`roost train --name demo --preset small --shards default --steps 300` writes runs/demo/ (checkpoints/step_N/,
metrics.jsonl, tensorboard/) and, at the end, models/demo/ (HF layout + roost.json); `roost train --nproc 2
--dp-shard 2 ...` runs the same trainer on every rank (roost.train.run starts it). `--resume` continues the
newest complete checkpoint bit-exactly, in any layout; SIGTERM/SIGINT save a checkpoint and stop cleanly. The
pieces it is built from are in roost.train.build, its checkpoints go through roost.train.checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from roost.context import Roost
from roost.data.loader import TokenLoader
from roost.data.manifest import read_manifest
from roost.hardware import match_device_name
from roost.model.config import ModelConfig
from roost.model.convert import save_model_dir
from roost.train import checkpoint as ckpt
from roost.train.build import (
    Paths,
    build_loader,
    build_model,
    build_optimizer,
    check_fit,
    check_modes,
    check_new_run,
    checkpointer_for,
    device_of,
    find_checkpoint,
    lr_factor,
    pick_dtype,
    place,
    resumed_config,
)
from roost.train.config import TrainConfig
from roost.train.dcp import barrier
from roost.train.lora import lora_parameters, merge_lora
from roost.train.parallel import (
    Dist,
    HangWatchdog,
    agree_stop,
    clip_grad_norm,
    mean_over_ranks,
    step_stats,
)


class Trainer:
    """One training run: builds the model, loader and optimizer from a `TrainConfig`, trains with checkpoints,
    resumes, and exports `models/NAME`."""

    def __init__(
        self,
        ctx: Roost,
        cfg: TrainConfig,
        resume: bool = False,
        resume_from: str = "",
        on_step: Callable[[dict[str, Any]], None] | None = None,
        dist: Dist | None = None,
    ):
        """`dist` (from `parallel.init_distributed`) trains across the torchrun job; None: this process alone."""
        self.dist = dist or Dist()
        self.ctx, self.ws = ctx, ctx.ws
        self.on_step = on_step
        self.start_ckpt: Path | None = None
        if resume or resume_from:
            self.start_ckpt = find_checkpoint(Paths.of(ctx, cfg).run, resume_from)
            self.reader = checkpointer_for(self.ws, self.dist, self.start_ckpt)  # the format it was written in
            meta = self.reader.read_meta(self.start_ckpt)
            cfg = resumed_config(meta, cfg, self.start_ckpt, self.dist.dp_size)
        else:
            check_new_run(self.ws, cfg.name)
        self.paths = Paths.of(ctx, cfg)  # shards named in a checkpoint's file are checked as names here
        self.device = self.dist.device if self.dist.on else device_of(cfg.device)
        self.dtype_choice = pick_dtype(self.device, cfg.dtype)
        if self.start_ckpt is not None:  # a resumed run keeps the dtype it started with
            self.dtype_choice = dataclasses.replace(self.dtype_choice, why="kept from the checkpoint", given=True)
        self.cfg = cfg = dataclasses.replace(cfg, dtype=self.dtype_choice.dtype)  # checkpoints record what ran
        torch.manual_seed(cfg.seed)
        self.checkpointer = checkpointer_for(self.ws, self.dist, async_save=cfg.async_ckpt)  # the format it writes
        self._build()

    # -- construction -----------------------------------------------------------------------------------------------
    def _build(self) -> None:
        """Model, data, placement, optimizer and throughput, in this order (each draws on the one before)."""
        cfg, p, d = self.cfg, self.paths, self.dist
        check_modes(cfg, d)
        self.manifest = read_manifest(p.shards) if not cfg.sft else None
        built = build_model(cfg, p, d, self.manifest)
        self.model, self.lr, self.provenance = built.model, built.lr, built.provenance
        self.tokenizer_path, self.tokenizer_config = built.tokenizer_path, built.tokenizer_config
        self.tokenizer_sha = check_fit(self.model.config, cfg, self.tokenizer_path)
        self.loader, data_provenance = build_loader(cfg, p, d, self.manifest, self.tokenizer_path, self.tokenizer_sha)
        self.provenance |= data_provenance
        self.step_fn, self.fsdp_bf16 = place(built, cfg, d, self.device)
        self.opt = build_optimizer(self.model, cfg.optimizer, self.lr, cfg.weight_decay)
        self.flops_per_token, self.peak, self.peak_note = throughput(self.model.config, cfg, self.device)
        self.step = 0
        if self.start_ckpt is not None:
            self._restore(self.start_ckpt)

    def _restore(self, path: Path) -> None:
        """Weights, optimizer and RNG from the checkpoint (into this process's layout, whatever wrote it), then the
        loader's position and the step."""
        meta = self.reader.restore(path, self.model, self.opt)
        self.loader.load_state_dict(meta["loader"])
        self.step = int(meta["step"])

    # -- training ---------------------------------------------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.cfg.dtype == "bf16" and not self.fsdp_bf16:  # FSDP2's policy casts instead
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _loss(self, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        x, y = batch[0].to(self.device, non_blocking=True), batch[1].to(self.device, non_blocking=True)
        doc = batch[2].to(self.device) if len(batch) > 2 and self.cfg.doc_mask else None
        with self._autocast():
            return self.step_fn(x, y, doc_ids=doc)

    @torch.no_grad()
    def evaluate(self) -> float | None:
        cfg = self.cfg
        if self.manifest is not None:
            if self.manifest["splits"]["val"]["tokens"] < cfg.seq_len + 1:
                return None
            val: Any = TokenLoader(
                self.paths.shards,
                "val",
                cfg.seq_len,
                cfg.batch_size,
                shuffle=False,
                loop=False,
                doc_ids=cfg.doc_mask,
                prefetch=0,
                tokenizer_sha256=self.tokenizer_sha,
            )
        else:
            val = self.loader.val_batches()
        self.model.eval()
        losses = []
        for i, batch in enumerate(val):
            if i >= cfg.eval_batches or batch[0].shape[0] == 0:
                break
            losses.append(float(self._loss(batch)))
        self.model.train()
        return sum(losses) / len(losses) if losses else None

    def save_checkpoint(self) -> Path:
        meta: dict[str, Any] = {
            "train_config": dataclasses.asdict(self.cfg),
            "model_config": self.model.config.to_dict(),
            "loader": self.loader.state_dict(),
            "tokenizer_sha256": self.tokenizer_sha,
            "tokenizer_path": str(self.tokenizer_path),
            "tokenizer_config": self.tokenizer_config,
            "provenance": self.provenance,
            "lr": self.lr,
        }
        if self.dist.on:
            meta["global_batch"] = self.cfg.batch_size * self.dist.dp_size
            meta["mesh"] = {"world": self.dist.world, "dp_replicate": self.dist.dp_replicate}
            meta["mesh"] |= {"dp_shard": self.dist.dp_shard, "tp": self.dist.tp, "parallel": self.cfg.parallel}
        ckpt_dir = self.paths.run / "checkpoints"
        return self.checkpointer.save(ckpt_dir, self.step, self.model, self.opt, meta, keep=self.cfg.keep)

    def train(self) -> dict[str, Any]:
        cfg = self.cfg
        stop: list[int] = []
        old = {s: signal.signal(s, lambda n, f: stop.append(n)) for s in (signal.SIGTERM, signal.SIGINT)}
        d = self.dist
        log: Any = MetricsLog(self.paths.run, resume_step=self.step if self.start_ckpt else None) if d.main else None
        log = log or NoLog()
        watchdog = HangWatchdog(self.paths.run, d.rank, cfg.hang_timeout if d.on else 0)
        if d.main:
            self._write_run_config()
        it: Iterator[tuple[torch.Tensor, ...]] = iter(self.loader)
        self.model.train()
        tokens_per_step = cfg.batch_size * cfg.seq_len * cfg.grad_accum * d.dp_size
        last: dict[str, Any] = {}
        if self.start_ckpt is None and self.step == 0:  # the starting point, so curves show what training changed
            v = self.evaluate()
            if v is not None:
                log.log({"step": 0, "val_loss": v})
        try:
            while self.step < cfg.steps and not agree_stop(d, bool(stop)):
                watchdog.arm(self.step + 1)
                t0 = time.perf_counter()
                factor = lr_factor(self.step, cfg.steps, cfg.warmup, cfg.schedule, cfg.min_lr_ratio)
                self.opt.set_lr_factor(factor)
                total = 0.0
                for _ in range(cfg.grad_accum):
                    loss = self._loss(next(it)) / cfg.grad_accum
                    loss.backward()
                    total += float(loss.detach())
                params = [p for p in self.model.parameters() if p.grad is not None]
                clip = cfg.grad_clip if cfg.grad_clip > 0 else 1e30
                if d.on:
                    gnorm = clip_grad_norm(params, clip)
                    total = mean_over_ranks(d, total)
                else:
                    gnorm = float(torch.nn.utils.clip_grad_norm_(params, clip))
                self.opt.step()
                self.opt.zero_grad()
                self.step += 1
                if self.device.type == "cuda":
                    torch.cuda.synchronize()
                dt = time.perf_counter() - t0
                mem = torch.cuda.max_memory_allocated() / 2**30 if self.device.type == "cuda" else rss_peak_gb()
                job = step_stats(d, dt, mem)  # slowest rank's time, max memory, spread (stragglers)
                row: dict[str, Any] = {
                    "step": self.step,
                    "loss": total,
                    "lr": self.lr * factor,
                    "grad_norm": gnorm,
                    "tokens_per_s": tokens_per_step / job["step_s"],
                    "mfu": tokens_per_step * self.flops_per_token / job["step_s"] / (self.peak * 1e12 * d.world),
                    **job,
                }
                watchdog.disarm()
                if self.step % cfg.eval_every == 0 or self.step == cfg.steps:
                    v = self.evaluate()
                    if v is not None:
                        row["val_loss"] = v
                if self.step % cfg.log_every == 0 or "val_loss" in row:
                    log.log(row)
                last = row
                if self.on_step:
                    self.on_step(row)
                if self.step % cfg.ckpt_every == 0 and self.step < cfg.steps:
                    self.save_checkpoint()
            self.save_checkpoint()
            self.checkpointer.finish()
        finally:
            watchdog.disarm()
            log.close()
            for s, h in old.items():
                signal.signal(s, h)
        return {"step": self.step, "stopped": bool(stop), "last": last}

    def _write_run_config(self) -> None:
        (self.paths.run / "config.json").write_text(
            json.dumps(
                {
                    "train": dataclasses.asdict(self.cfg),
                    "model": self.model.config.to_dict(),
                    "mesh": dataclasses.asdict(self.dist) | {"device": str(self.dist.device), "mesh": None},
                    "peak_tflops": self.peak,
                    "peak_note": self.peak_note,
                },
                indent=1,
            )
        )

    # -- output -----------------------------------------------------------------------------------------------------
    def export(self, out: Path | None = None) -> dict[str, Any]:
        """Write models/<name>/ (HF layout) from the current weights; LoRA adapters are merged first. Under
        torchrun, rank 0 streams the newest sharded checkpoint instead (no rank gathers the whole model)."""
        out = out or self.ws.model_dir(self.cfg.name)
        ck = ckpt.list_checkpoints(self.paths.run / "checkpoints")
        prov = {**self.provenance, "steps": self.step, "train_config": dataclasses.asdict(self.cfg)}
        if self.dist.on:
            meta: dict[str, Any] = {}
            if self.dist.main:
                meta = self.checkpointer.export(ck[-1], out, prov)
            barrier()
            return meta
        if self.cfg.lora_rank:
            merge_lora(self.model)  # in place
        model = self.model.to("cpu").float()
        prov["checkpoint"] = str(ck[-1]) if ck else None
        return save_model_dir(model, out, self.tokenizer_path, self.tokenizer_config, prov)


__all__ = ["TrainConfig", "Trainer", "lora_parameters"]


# -- metrics: the log, peaks, the loss plot --------------------------------------------------------------------------
# Per-step metrics of `roost train`: `runs/<name>/metrics.jsonl` and TensorBoard event files
# (`tensorboard --logdir runs/<name>/tensorboard`), plus the device peak that MFU is measured against.
#
# MFU = achieved FLOP/s ÷ peak FLOP/s, with FLOPs from `ModelConfig.flops_per_token` (6·N + 12·L·H·Dh·T).
# Peaks: dense bf16 tensor-core figures for known GPUs (NVIDIA datasheets, no sparsity); for a CPU, an estimate from
# the probe (`roost.probe.cpu_peak_tflops`: threads × clock × 2 × FMA lanes × FMA units, docs/model.md).
# `--peak-tflops` overrides; the value used is recorded in every metrics line.


def device_peak_tflops(device: torch.device, dtype: str = "fp32") -> tuple[float, str]:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        known = match_device_name(name)
        if known is not None:
            return known.bf16_tflops, f"{name}: {known.bf16_tflops:g} TFLOP/s dense bf16 (datasheet)"
        return 100.0, f"{name}: unknown, assumed 100 TFLOP/s"
    from roost.probe import cpu_peak_tflops

    return cpu_peak_tflops(dtype=dtype)


class MetricsLog:
    def __init__(self, run_dir: Path, resume_step: int | None = None, tensorboard: bool = True):
        self.path = run_dir / "metrics.jsonl"
        run_dir.mkdir(parents=True, exist_ok=True)
        if resume_step is not None and self.path.exists():
            # drop what a killed run logged after the checkpoint we resume from: those steps run again
            keep = [
                line
                for line in self.path.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= resume_step
            ]
            self.path.write_text("".join(line + "\n" for line in keep))
        elif resume_step is None and self.path.exists():
            self.path.unlink()
        self._f = self.path.open("a")
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(run_dir / "tensorboard"), purge_step=resume_step)
            except ImportError:  # tensorboard not installed: JSONL only
                self._tb = None

    def log(self, row: dict[str, Any]) -> None:
        self._f.write(json.dumps(row) + "\n")
        self._f.flush()
        if self._tb is not None:
            for k, v in row.items():
                if isinstance(v, int | float) and k != "step":
                    self._tb.add_scalar(k, v, row["step"])

    def close(self) -> None:
        self._f.close()
        if self._tb is not None:
            self._tb.close()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def plot_losses(metrics: Path, out: Path, title: str) -> Path | None:
    """Train (and validation) loss against step as a PNG; None when there is nothing to plot."""
    rows = read_metrics(metrics)
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    train = [r for r in rows if "loss" in r]
    ax.plot([r["step"] for r in train], [r["loss"] for r in train], label="train loss", lw=1.2)
    val = [(r["step"], r["val_loss"]) for r in rows if "val_loss" in r]
    if val:
        ax.plot(*zip(*val, strict=True), "o-", label="val loss", lw=1.5)
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


class NoLog:
    """Ranks other than 0 log nothing (rank 0 logs the job's aggregated figures)."""

    def log(self, row: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


def rss_peak_gb() -> float:
    try:
        kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
        return kb / 2**20
    except (OSError, StopIteration):
        return 0.0


def throughput(mc: ModelConfig, cfg: TrainConfig, device: torch.device) -> tuple[float, float, str]:
    """Training FLOPs per token, and the device's peak TFLOP/s with where that figure comes from (for MFU)."""
    flops_per_token: float = mc.flops_per_token(cfg.seq_len)
    if cfg.lora_rank:  # frozen base: no weight gradients, ~2/3 of the FLOPs
        flops_per_token *= 2 / 3
    peak, note = (cfg.peak_tflops, "given") if cfg.peak_tflops else device_peak_tflops(device, cfg.dtype)
    return flops_per_token, peak, note
