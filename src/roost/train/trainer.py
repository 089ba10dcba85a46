"""The single-process trainer behind `roost train`: from scratch on token shards, or fine-tuning an imported model
(full or LoRA), with exact resume.

`roost train --name demo --preset small --shards default --steps 300` writes runs/demo/ (checkpoints/step_N/,
metrics.jsonl, tensorboard/) and, at the end, models/demo/ (HF layout + roost.json). `--resume` continues the
newest complete checkpoint bit-exactly; SIGTERM/SIGINT save a checkpoint and stop cleanly.
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
from roost.corpus.backend import describe
from roost.data import tokenizer as toklib
from roost.data.loader import TokenLoader
from roost.data.shards import read_manifest
from roost.errors import RoostError, UsageError
from roost.model.config import ModelConfig, from_depth, load_preset
from roost.model.convert import load_model_dir, save_model_dir
from roost.model.llama import Llama
from roost.train import checkpoint as ckpt
from roost.train import dcp
from roost.train.lora import apply_lora, lora_parameters, merge_lora
from roost.train.metrics import MetricsLog, NoLog, device_peak_tflops, rss_peak_gb
from roost.train.optim import build_optimizer, lr_factor
from roost.train.parallel import (
    Dist,
    HangWatchdog,
    agree_stop,
    check_tp,
    clip_grad_norm,
    mean_over_ranks,
    parallelize,
    step_stats,
)
from roost.train.run import Paths, TrainConfig, check_new_run, device_of, pick_dtype, resolve_init


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
        self.paths = Paths.of(ctx, cfg)
        self.on_step = on_step
        self.start_ckpt: Path | None = None
        if resume or resume_from:
            found = ckpt.list_checkpoints(self.paths.run / "checkpoints")
            if resume_from:
                found = [p for p in found if p.name == resume_from]
            if not found:
                raise RoostError(
                    f"{self.paths.run}: no checkpoint to resume from" + (f" named {resume_from}" if resume_from else "")
                )
            self.start_ckpt = found[-1]
            if dcp.is_dcp(self.start_ckpt):  # sealed by this home, else refused before anything in it is read
                meta = dcp.read_meta(self.ws, self.start_ckpt)
            else:
                meta = json.loads((self.start_ckpt / "meta.json").read_text())
            saved = meta["train_config"]
            # a resumed run keeps the settings it was started with; only these may change (the layout included:
            # DCP reshards, and the per-rank batch follows so that the global batch stays the same)
            free = ("steps", "eval_every", "ckpt_every", "keep", "log_every", "device")
            free += ("parallel", "dp_replicate", "dp_shard", "tp", "cpu_offload", "async_ckpt", "hang_timeout")
            if not isinstance(saved, dict):
                raise RoostError(f"{self.start_ckpt}/meta.json: train_config is not a table")
            try:  # the run keeps its own name (the folder it was found in), never one read from the file
                cfg = TrainConfig(**{**saved, **{k: getattr(cfg, k) for k in free}, "name": cfg.name})
            except TypeError as e:
                raise RoostError(f"{self.start_ckpt}/meta.json: train_config does not fit this roost ({e})") from None
            self.paths = Paths.of(ctx, cfg)  # shards named in the file are checked as names here
            global_batch = int(meta.get("global_batch", saved["batch_size"]))
            if global_batch % self.dist.dp_size:
                raise UsageError(
                    f"{self.start_ckpt}: its global batch of {global_batch} samples does not split over "
                    f"{self.dist.dp_size} data-parallel ranks"
                )
            cfg = dataclasses.replace(cfg, batch_size=global_batch // self.dist.dp_size)
        else:
            check_new_run(self.ws, cfg.name)
        self.device = self.dist.device if self.dist.on else device_of(cfg.device)
        self.dtype_choice = pick_dtype(self.device, cfg.dtype)
        if self.start_ckpt is not None:  # a resumed run keeps the dtype it started with
            self.dtype_choice = dataclasses.replace(self.dtype_choice, why="kept from the checkpoint", given=True)
        self.cfg = cfg = dataclasses.replace(cfg, dtype=self.dtype_choice.dtype)  # checkpoints record what ran
        torch.manual_seed(cfg.seed)
        self._pending: dcp.Pending | None = None
        self._build()

    # -- construction -----------------------------------------------------------------------------------------------
    def _build(self) -> None:
        cfg, p, d = self.cfg, self.paths, self.dist
        if d.on and (cfg.lora_rank or cfg.sft or cfg.optimizer != "adamw"):
            raise UsageError(
                "--nproc/torchrun trains with AdamW, without --lora-rank or --sft (one process does those)"
            )
        meta_init = False
        manifest = read_manifest(p.shards) if not cfg.sft else None
        self.provenance: dict[str, Any] = {"source": "trained", "run": cfg.name}
        if cfg.init:
            model_dir = resolve_init(p.ws, cfg.init)
            self.model, init_meta = load_model_dir(model_dir)
            self.tokenizer_path = model_dir / "tokenizer.json"
            self.tokenizer_config = json.loads((model_dir / "tokenizer_config.json").read_text())
            self.provenance |= {
                "init": str(model_dir),
                "init_source": init_meta.get("source"),
                "init_model_sha256": init_meta.get("model_sha256"),
            }
            lr = cfg.lr or (1e-3 if cfg.lora_rank else 1e-4)
        else:
            if manifest is None:
                raise UsageError("--sft fine-tunes a model: give --init models/NAME")
            self.tokenizer_path = Path(manifest["tokenizer"]["path"])
            if not self.tokenizer_path.is_file():
                raise RoostError(f"{p.shards}: its tokenizer {self.tokenizer_path} is gone; rebuild the shards")
            tdir = self.tokenizer_path.parent
            self.tokenizer_config = (
                json.loads((tdir / "tokenizer_config.json").read_text())
                if (tdir / "tokenizer_config.json").is_file()
                else {"eos_token": toklib.EOS}
            )
            vocab = int(manifest["tokenizer"]["vocab_size"])
            if cfg.depth:
                mcfg, depth_lr = from_depth(cfg.depth, vocab_size=vocab, max_seq_len=max(cfg.seq_len, 256))
            else:
                mcfg, depth_lr = load_preset(cfg.preset, vocab_size=vocab), 1e-3
            lr = cfg.lr or depth_lr
            if d.on:  # built without memory, sharded, then initialised shard by shard (parallel.parallelize)
                with torch.device("meta"):
                    self.model = Llama(mcfg)
                meta_init = True
            else:
                self.model = Llama(mcfg)
                self.model.init_weights(cfg.seed)
        mc: ModelConfig = self.model.config
        if cfg.seq_len > mc.max_seq_len and not mc.rope_scaling:
            raise UsageError(
                f"--seq-len {cfg.seq_len} is longer than the model's RoPE range (max_seq_len "
                f"{mc.max_seq_len}); shorten it or use a model with rope scaling"
            )
        self.tokenizer_sha = toklib.sha256_file(self.tokenizer_path)
        tok_vocab = toklib.load(self.tokenizer_path).get_vocab_size()
        if tok_vocab > mc.vocab_size:
            raise RoostError(f"the tokenizer has {tok_vocab} tokens but the model's vocab_size is {mc.vocab_size}")
        self.manifest = manifest
        if manifest is not None:
            self.loader = TokenLoader(
                p.shards,
                "train",
                cfg.seq_len,
                cfg.batch_size,
                rank=d.dp_rank,
                world_size=d.dp_size,
                seed=cfg.seed,
                doc_ids=cfg.doc_mask,
                tokenizer_sha256=self.tokenizer_sha,
            )
            self.provenance |= {
                "shards": str(p.shards),
                "shards_manifest_sha256": toklib.sha256_file(p.shards / "manifest.json"),
                "shards_manifest_created": manifest["created_at"],
                "corpus_snapshot": manifest["corpus"]["snapshot_time"],
            }
        else:
            from roost.train.sft import SFTLoader

            self.loader = SFTLoader(p.corpus_db, self.tokenizer_path, cfg.seq_len, cfg.batch_size, seed=cfg.seed)
            self.provenance |= {"sft_pairs": self.loader.n_train, "corpus": describe(p.corpus_db)}
        if cfg.activation_checkpointing:
            self.model.gradient_checkpointing = True
        self.fsdp_bf16 = False
        if d.on:
            check_tp(mc, d.tp, cfg.seq_len)
            self.fsdp_bf16 = cfg.dtype == "bf16" and cfg.parallel == "fsdp" and d.dp_size > 1
            if not meta_init:
                self.model.to(self.device)
            self.step_fn: Any = parallelize(
                self.model,
                d,
                cfg.parallel,
                torch.bfloat16 if self.fsdp_bf16 else None,
                cpu_offload=cfg.cpu_offload,
                compile=cfg.compile,
                init_seed=cfg.seed if meta_init else None,
            )
        else:
            self.model.to(self.device)
            if cfg.lora_rank:
                apply_lora(self.model, cfg.lora_rank, cfg.lora_alpha, seed=cfg.seed)
            self.step_fn = torch.compile(self.model) if cfg.compile else self.model
        self.opt = build_optimizer(self.model, cfg.optimizer, lr, cfg.weight_decay)
        self.lr = lr
        self.flops_per_token = mc.flops_per_token(cfg.seq_len)
        if cfg.lora_rank:  # frozen base: no weight gradients, ~2/3 of the FLOPs
            self.flops_per_token *= 2 / 3
        self.peak, self.peak_note = (
            (cfg.peak_tflops, "given") if cfg.peak_tflops else device_peak_tflops(self.device, cfg.dtype)
        )
        self.step = 0
        if self.start_ckpt is not None:
            self._restore(self.start_ckpt)

    def _restore(self, path: Path) -> None:
        if dcp.is_dcp(path):  # a sharded checkpoint: loads into this process's layout, whatever wrote it
            meta = dcp.load(self.ws, path, self.model, self.opt.opts[0])
            if meta.get("model_config") != self.model.config.to_dict():
                raise RoostError(f"{path}: checkpoint of another model config; it cannot be resumed into this one")
            self.loader.load_state_dict(meta["loader"])
            self.step = int(meta["step"])
            return
        if self.dist.world > 1:
            raise RoostError(f"{path}: a one-process checkpoint; resume it with one process, then save sharded")
        model_state, optim_states, meta = ckpt.load(path)
        if meta.get("model_config") != self.model.config.to_dict():
            raise RoostError(f"{path}: checkpoint of another model config; it cannot be resumed into this one")
        missing, unexpected = self.model.load_state_dict(model_state, strict=False)
        bad = [k for k in missing if not (k == "lm_head.weight" and self.model.config.tie_embeddings)]
        if bad or unexpected:
            raise RoostError(f"{path}: weights do not match the model (missing {bad[:3]}, unexpected {unexpected[:3]})")
        try:
            self.opt.load_state_dict(optim_states)
        except ValueError as e:
            raise RoostError(f"{path}: optimizer state does not fit ({e})") from None
        self.loader.load_state_dict(meta["loader"])
        ckpt.set_rng_state(meta["_rng_tensors"], meta["rng"])
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
            if self._pending is not None:
                dcp.finish(self._pending)
            self._pending = dcp.save(
                self.ws,
                self.paths.run / "checkpoints",
                self.step,
                self.model,
                self.opt.opts[0],
                meta,
                keep=self.cfg.keep,
                async_save=self.cfg.async_ckpt,
            )
            if not self.cfg.async_ckpt:
                self._pending = None
            return self.paths.run / "checkpoints" / f"step_{self.step:08d}"
        return ckpt.save(
            self.paths.run / "checkpoints",
            self.step,
            self.model.state_dict(),
            self.opt.state_dict(),
            meta,
            keep=self.cfg.keep,
        )

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
            if self._pending is not None:
                dcp.finish(self._pending)
                self._pending = None
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
                meta = dcp.export(self.ws, ck[-1], out, self.tokenizer_path, self.tokenizer_config, prov)
            dcp.barrier()
            return meta
        model = merge_lora(self.model) if self.cfg.lora_rank else self.model
        model = model.to("cpu").float()
        prov["checkpoint"] = str(ck[-1]) if ck else None
        return save_model_dir(model, out, self.tokenizer_path, self.tokenizer_config, prov)


__all__ = ["TrainConfig", "Trainer", "lora_parameters"]
