"""What a `Trainer` is built from, one concern per function: the run's folder and device, the checkpoint it
resumes, the model (from scratch or from an imported one), the data, where the model runs (one device, or
sharded over a torchrun job), the checkpointer, the optimizer and the learning-rate schedule.

    roost train --name demo --preset small --steps 300     (roost.train.trainer.Trainer calls these in order)
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from roost.context import Roost
from roost.corpus.backend import describe
from roost.data import tokenizer as toklib
from roost.data.loader import TokenLoader
from roost.errors import RoostError, UsageError
from roost.model.config import ModelConfig, from_depth, load_preset
from roost.model.convert import load_model_dir
from roost.model.imports import resolve_model
from roost.model.llama import Llama
from roost.probe import Choice, choose, probe
from roost.registry import Location
from roost.train import checkpoint as ckpt
from roost.train import dcp
from roost.train.checkpoint import Checkpointer, Plain
from roost.train.config import TrainConfig
from roost.train.lora import apply_lora
from roost.train.parallel import Dist, check_tp, parallelize
from roost.workspace import Workspace

# what a resumed run may change (the layout included: DCP reshards, and the per-rank batch follows so that the
# global batch stays the same); every other setting is the one the run was started with
RESUME_FREE: tuple[str, ...] = ("steps", "eval_every", "ckpt_every", "keep", "log_every", "device")
RESUME_FREE += ("parallel", "dp_replicate", "dp_shard", "tp", "cpu_offload", "async_ckpt", "hang_timeout")


# -- the run's folder and device --------------------------------------------------------------------------------
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


# -- the checkpoint a run resumes -------------------------------------------------------------------------------
def find_checkpoint(run: Path, resume_from: str) -> Path:
    """The newest complete checkpoint of a run, or the one named `resume_from` (step_N)."""
    found = ckpt.list_checkpoints(run / "checkpoints")
    if resume_from:
        found = [p for p in found if p.name == resume_from]
    if not found:
        raise RoostError(f"{run}: no checkpoint to resume from" + (f" named {resume_from}" if resume_from else ""))
    return found[-1]


def resumed_config(meta: dict[str, Any], cfg: TrainConfig, path: Path, dp_size: int) -> TrainConfig:
    """The settings a run started with (from its checkpoint's meta), with the ones it may change taken from `cfg`
    and the per-rank batch that keeps its global batch over `dp_size` data-parallel ranks."""
    saved = meta["train_config"]
    if not isinstance(saved, dict):
        raise RoostError(f"{path}/meta.json: train_config is not a table")
    try:  # the run keeps its own name (the folder it was found in), never one read from the file
        cfg = TrainConfig(**{**saved, **{k: getattr(cfg, k) for k in RESUME_FREE}, "name": cfg.name})
    except TypeError as e:
        raise RoostError(f"{path}/meta.json: train_config does not fit this roost ({e})") from None
    global_batch = int(meta["global_batch"] if "global_batch" in meta else saved["batch_size"])
    if global_batch % dp_size:
        raise UsageError(
            f"{path}: its global batch of {global_batch} samples does not split over {dp_size} data-parallel ranks"
        )
    return dataclasses.replace(cfg, batch_size=global_batch // dp_size)


# -- the model --------------------------------------------------------------------------------------------------
@dataclass
class Model:
    """A built (not yet placed) model, the tokenizer it trains with, where it came from and its peak LR."""

    model: Llama
    tokenizer_path: Path
    tokenizer_config: dict[str, Any]
    provenance: dict[str, Any]
    lr: float
    on_meta: bool  # built on the meta device: initialised shard by shard once sharded (parallel.parallelize)


def build_model(cfg: TrainConfig, p: Paths, d: Dist, manifest: dict[str, Any] | None) -> Model:
    """The model to train: the one `--init` names (fine-tuning), else a new one of the preset's or the depth
    dial's shape for the shards' tokenizer (on the meta device under torchrun)."""
    prov: dict[str, Any] = {"source": "trained", "run": cfg.name}
    if cfg.init:
        model_dir = resolve_init(p.ws, cfg.init)
        model, init_meta = load_model_dir(model_dir)
        prov |= {
            "init": str(model_dir),
            "init_source": init_meta.get("source"),
            "init_model_sha256": init_meta.get("model_sha256"),
        }
        tok_config = json.loads((model_dir / "tokenizer_config.json").read_text())
        lr = cfg.lr or (1e-3 if cfg.lora_rank else 1e-4)
        return Model(model, model_dir / "tokenizer.json", tok_config, prov, lr, on_meta=False)
    if manifest is None:
        raise UsageError("--sft fine-tunes a model: give --init models/NAME")
    tok_path = Path(manifest["tokenizer"]["path"])
    if not tok_path.is_file():
        raise RoostError(f"{p.shards}: its tokenizer {tok_path} is gone; rebuild the shards")
    tdir = tok_path.parent
    tok_config = (
        json.loads((tdir / "tokenizer_config.json").read_text())
        if (tdir / "tokenizer_config.json").is_file()
        else {"eos_token": toklib.EOS}
    )
    vocab = int(manifest["tokenizer"]["vocab_size"])
    if cfg.depth:
        mcfg, depth_lr = from_depth(cfg.depth, vocab_size=vocab, max_seq_len=max(cfg.seq_len, 256))
    else:
        mcfg, depth_lr = load_preset(cfg.preset, vocab_size=vocab), 1e-3
    if d.on:  # built without memory, sharded, then initialised shard by shard (parallel.parallelize)
        with torch.device("meta"):
            model = Llama(mcfg)
    else:
        model = Llama(mcfg)
        model.init_weights(cfg.seed)
    return Model(model, tok_path, tok_config, prov, cfg.lr or depth_lr, on_meta=d.on)


def check_fit(mc: ModelConfig, cfg: TrainConfig, tokenizer_path: Path) -> str:
    """The sequence length and the tokenizer fit the model; returns the tokenizer's sha256."""
    if cfg.seq_len > mc.max_seq_len and not mc.rope_scaling:
        raise UsageError(
            f"--seq-len {cfg.seq_len} is longer than the model's RoPE range (max_seq_len "
            f"{mc.max_seq_len}); shorten it or use a model with rope scaling"
        )
    sha = toklib.sha256_file(tokenizer_path)
    tok_vocab = toklib.load(tokenizer_path).get_vocab_size()
    if tok_vocab > mc.vocab_size:
        raise RoostError(f"the tokenizer has {tok_vocab} tokens but the model's vocab_size is {mc.vocab_size}")
    return sha


# -- the data ---------------------------------------------------------------------------------------------------
def build_loader(
    cfg: TrainConfig, p: Paths, d: Dist, manifest: dict[str, Any] | None, tokenizer_path: Path, tokenizer_sha: str
) -> tuple[Any, dict[str, Any]]:
    """The training batches (this rank's share of the token shards, or the store's reply pairs with --sft) and
    the provenance they add to the model."""
    if manifest is None:
        from roost.train.sft import SFTLoader

        sft = SFTLoader(p.corpus_db, tokenizer_path, cfg.seq_len, cfg.batch_size, seed=cfg.seed)
        return sft, {"sft_pairs": sft.n_train, "corpus": describe(p.corpus_db)}
    loader = TokenLoader(
        p.shards,
        "train",
        cfg.seq_len,
        cfg.batch_size,
        rank=d.dp_rank,
        world_size=d.dp_size,
        seed=cfg.seed,
        doc_ids=cfg.doc_mask,
        tokenizer_sha256=tokenizer_sha,
    )
    return loader, {
        "shards": str(p.shards),
        "shards_manifest_sha256": toklib.sha256_file(p.shards / "manifest.json"),
        "shards_manifest_created": manifest["created_at"],
        "corpus_snapshot": manifest["corpus"]["snapshot_time"],
    }


# -- where the model runs ---------------------------------------------------------------------------------------
def check_modes(cfg: TrainConfig, d: Dist) -> None:
    if d.on and (cfg.lora_rank or cfg.sft or cfg.optimizer != "adamw"):
        raise UsageError("--nproc/torchrun trains with AdamW, without --lora-rank or --sft (one process does those)")


def place(m: Model, cfg: TrainConfig, d: Dist, device: torch.device) -> tuple[Any, bool]:
    """Put the model on its device, sharded over the job under torchrun (parallel.parallelize) or with LoRA
    adapters in one process; returns the module a step calls and whether FSDP2 casts to bf16 itself."""
    model = m.model
    if cfg.activation_checkpointing:
        model.gradient_checkpointing = True
    if not d.on:
        model.to(device)
        if cfg.lora_rank:
            apply_lora(model, cfg.lora_rank, cfg.lora_alpha, seed=cfg.seed)
        return (torch.compile(model) if cfg.compile else model), False
    check_tp(model.config, d.tp, cfg.seq_len)
    fsdp_bf16 = cfg.dtype == "bf16" and cfg.parallel == "fsdp" and d.dp_size > 1
    if not m.on_meta:
        model.to(device)
    step_fn = parallelize(
        model,
        d,
        cfg.parallel,
        torch.bfloat16 if fsdp_bf16 else None,
        cpu_offload=cfg.cpu_offload,
        compile=cfg.compile,
        init_seed=cfg.seed if m.on_meta else None,
    )
    return step_fn, fsdp_bf16


# -- the checkpointer ---------------------------------------------------------------------------------------------
def checkpointer_for(
    ws: Workspace, dist: Dist | None = None, path: Path | None = None, async_save: bool = False
) -> Checkpointer:
    """The checkpointer that reads `path` (the format it was written in), or without one, the one a job writes
    with: sharded (DCP, `async_save` in the background) when `dist` is a distributed job, plain otherwise. `ws`'s
    key seals the sharded ones."""
    d = dist or Dist()
    sharded = dcp.is_dcp(path) if path is not None else d.on
    return dcp.Sharded(ws, d, async_save) if sharded else Plain(ws, d)


# -- the optimizer and the LR schedule -------------------------------------------------------------------------------
# Optimizers and learning-rate schedules for `roost train`.
#
# AdamW (fused where the device supports it) with decoupled weight decay on matrices only (not norms, biases or
# LoRA-free frozen weights); optionally Muon (torch.optim.Muon) for the hidden 2-D matrices with AdamW for the rest.
# Schedules: warmup + cosine, and warmup-stable-decay (WSD). The schedule is a pure function of the step, so a
# checkpoint needs only the step to restore it.


class Optimizers:
    """One or two torch optimizers stepped together (AdamW, or Muon + AdamW); the trainer sees one object."""

    def __init__(self, opts: list[torch.optim.Optimizer]):
        self.opts = opts
        for o in opts:
            for g in o.param_groups:
                g.setdefault("base_lr", g["lr"])

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return [g for o in self.opts for g in o.param_groups]

    def step(self) -> None:
        for o in self.opts:
            o.step()

    def zero_grad(self) -> None:
        for o in self.opts:
            o.zero_grad(set_to_none=True)

    def set_lr_factor(self, factor: float) -> None:
        for g in self.param_groups:
            g["lr"] = g["base_lr"] * factor

    def state_dict(self) -> list[dict[str, Any]]:
        return [o.state_dict() for o in self.opts]

    def load_state_dict(self, states: list[dict[str, Any]]) -> None:
        if len(states) != len(self.opts):
            raise ValueError(f"checkpoint holds {len(states)} optimizer(s), this run builds {len(self.opts)}")
        for o, s in zip(self.opts, states, strict=True):
            o.load_state_dict(s)


def _adamw(
    groups: list[dict[str, Any]], lr: float, betas: tuple[float, float], device: torch.device
) -> torch.optim.AdamW:
    fused = device.type in ("cuda", "cpu")  # fused AdamW has CPU and CUDA kernels in torch >= 2.4
    try:
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=1e-8, fused=fused)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=1e-8)


def build_optimizer(
    model: nn.Module,
    name: str,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float] = (0.9, 0.95),
    muon_lr: float = 0.02,
) -> Optimizers:
    """`name` is "adamw" or "muon" (Muon on hidden matrices, AdamW on embeddings, head, norms, biases)."""
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    device = params[0][1].device if params else torch.device("cpu")
    seen: set[int] = set()
    unique = []
    for n, p in params:  # a tied head shares the embedding tensor: optimise it once
        if id(p) not in seen:
            seen.add(id(p))
            unique.append((n, p))
    decay = [p for n, p in unique if p.dim() >= 2]
    no_decay = [p for n, p in unique if p.dim() < 2]
    if name == "adamw":
        return Optimizers([_adamw(_groups(decay, no_decay, weight_decay), lr, betas, device)])
    if name != "muon":
        raise ValueError(f"optimizer must be 'adamw' or 'muon', got {name!r}")
    hidden = [p for n, p in unique if p.dim() == 2 and ".layers." in f".{n}"]
    hidden_ids = {id(p) for p in hidden}
    rest_decay = [p for p in decay if id(p) not in hidden_ids]
    muon = torch.optim.Muon(hidden, lr=muon_lr, weight_decay=weight_decay, adjust_lr_fn="match_rms_adamw")
    return Optimizers([muon, _adamw(_groups(rest_decay, no_decay, weight_decay), lr, betas, device)])


def _groups(decay: Iterable[torch.Tensor], no_decay: Iterable[torch.Tensor], wd: float) -> list[dict[str, Any]]:
    """Decay and no-decay groups, each split by tensor type: under tensor parallelism some parameters are DTensors
    and some plain (the replicated embedding), and fused/foreach kernels run per group and refuse a mix."""
    groups = []
    for params, w in ((list(decay), wd), (list(no_decay), 0.0)):
        kinds: dict[type, list[torch.Tensor]] = {}
        for p in params:
            kinds.setdefault(type(p.data), []).append(p)
        groups += [{"params": ps, "weight_decay": w} for ps in kinds.values()]
    return groups


def lr_factor(
    step: int, total: int, warmup: int, schedule: str, min_ratio: float = 0.1, decay_frac: float = 0.2
) -> float:
    """Multiplier of the peak LR at `step` (0-based) of `total`: linear warmup, then cosine to `min_ratio`, or
    WSD — flat until the last `decay_frac` of the run, then linear to `min_ratio`."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        span = max(1, total - warmup)
        progress = min(1.0, (step - warmup) / span)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    if schedule == "wsd":
        decay_start = total - int(decay_frac * total)
        if step < decay_start:
            return 1.0
        progress = min(1.0, (step - decay_start) / max(1, total - decay_start))
        return 1.0 - (1 - min_ratio) * progress
    raise ValueError(f"schedule must be cosine, wsd or constant, got {schedule!r}")
