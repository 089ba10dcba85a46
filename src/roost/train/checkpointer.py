"""One checkpointer protocol over the two checkpoint formats of a run (`runs/<name>/checkpoints/step_N/`): plain
(one process: safetensors + meta.json with checksums, roost.train.checkpoint) and sharded (torchrun: PyTorch DCP,
sealed with the home's key, roost.train.dcp). The format is chosen once, by `checkpointer_for`: a job writes
sharded checkpoints when it is distributed, and a checkpoint is read in the format it was written in.

    roost train --resume ...   (Trainer: checkpointer_for(ws, dist) saves, checkpointer_for(ws, dist, path) loads)
    roost export RUN OUT       (checkpointer_for(ws, path=newest).export(...): no Trainer, no data)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

import torch

from roost.errors import RoostError
from roost.hashing import sha256_file
from roost.model.config import from_dict
from roost.model.convert import save_model_dir
from roost.model.llama import Llama
from roost.train import checkpoint as ckpt
from roost.train import dcp
from roost.train.optim import Optimizers
from roost.train.parallel import Dist
from roost.workspace import Workspace


class Checkpointer(Protocol):
    """Saves, reads and restores one run's checkpoints in one format, and exports one as a HF model folder."""

    def save(self, ckpt_dir: Path, step: int, model: Llama, opt: Optimizers, meta: dict[str, Any], keep: int) -> Path:
        """Write step_N under `ckpt_dir` and drop all but the newest `keep` (collective when sharded; an async
        sharded save goes on in the background until `finish` or the next save)."""
        ...

    def finish(self) -> None:
        """Wait until the last save is complete on disk (nothing to wait for when saves block)."""
        ...

    def read_meta(self, path: Path) -> dict[str, Any]:
        """meta.json of a checkpoint (train_config, model_config, loader, step, provenance, tokenizer)."""
        ...

    def restore(self, path: Path, model: Llama, opt: Optimizers) -> dict[str, Any]:
        """Load weights, optimizer state and RNG into a built model and optimizer; returns the meta."""
        ...

    def export(self, path: Path, out: Path, provenance: dict[str, Any] | None = None) -> dict[str, Any]:
        """A HF model directory at `out` from the checkpoint's weights and tokenizer; returns its roost.json.
        `provenance` defaults to the one the checkpoint records (its run's, with its train config)."""
        ...


def checkpointer_for(
    ws: Workspace, dist: Dist | None = None, path: Path | None = None, async_save: bool = False
) -> Checkpointer:
    """The checkpointer that reads `path` (the format it was written in), or without one, the one a job writes
    with: sharded (DCP, `async_save` in the background) when `dist` is a distributed job, plain otherwise. `ws`'s
    key seals the sharded ones."""
    d = dist or Dist()
    sharded = dcp.is_dcp(path) if path is not None else d.on
    return Sharded(ws, d, async_save) if sharded else Plain(ws, d)


def load_weights(model: Llama, state: dict[str, torch.Tensor], path: Path) -> None:
    """A checkpoint's tensors into `model`, which must have exactly those weights (a tied head may be left out)."""
    missing, unexpected = model.load_state_dict(state, strict=False)
    bad = [k for k in missing if not (k == "lm_head.weight" and model.config.tie_embeddings)]
    if bad or unexpected:
        raise RoostError(f"{path}: weights do not match the model (missing {bad[:3]}, unexpected {unexpected[:3]})")


class Plain:
    """One process: model, optimizer and RNG as safetensors, meta.json with each file's sha256 (checkpoint.py)."""

    def __init__(self, ws: Workspace, dist: Dist):
        self.ws, self.dist = ws, dist

    def save(self, ckpt_dir: Path, step: int, model: Llama, opt: Optimizers, meta: dict[str, Any], keep: int) -> Path:
        return ckpt.save(ckpt_dir, step, model.state_dict(), opt.state_dict(), meta, keep=keep)

    def finish(self) -> None:
        return None

    def read_meta(self, path: Path) -> dict[str, Any]:
        try:
            meta: dict[str, Any] = json.loads((path / "meta.json").read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise RoostError(f"{path}/meta.json: unreadable ({e})") from None
        return meta

    def restore(self, path: Path, model: Llama, opt: Optimizers) -> dict[str, Any]:
        if self.dist.world > 1:
            raise RoostError(f"{path}: a one-process checkpoint; resume it with one process, then save sharded")
        model_state, optim_states, meta = ckpt.load(path)
        if meta.get("model_config") != model.config.to_dict():
            raise RoostError(f"{path}: checkpoint of another model config; it cannot be resumed into this one")
        load_weights(model, model_state, path)
        try:
            opt.load_state_dict(optim_states)
        except ValueError as e:
            raise RoostError(f"{path}: optimizer state does not fit ({e})") from None
        ckpt.set_rng_state(meta["_rng_tensors"], meta["rng"])
        return meta

    def export(self, path: Path, out: Path, provenance: dict[str, Any] | None = None) -> dict[str, Any]:
        """Rebuilds the model from the checkpoint's own model config (LoRA adapters merged), checksums verified.
        meta.json is not sealed, so what it names is checked against what the checkpoint holds: the model may not
        be larger than the saved weights, the LoRA rank is the saved adapters', the tokenizer is a tokenizer.json
        with the sha256 the run trained with."""
        from roost.train.lora import apply_lora, merge_lora

        state, _, meta = ckpt.load(path)
        cfg = from_dict(meta["model_config"], f"{path}/meta.json")
        if cfg.num_params() > sum(t.numel() for t in state.values()):
            raise RoostError(f"{path}: meta.json's model config is larger than the weights saved with it")
        tokenizer = Path(meta["tokenizer_path"])
        if tokenizer.name != "tokenizer.json" or not tokenizer.is_file():
            raise RoostError(f"{path}: the run's tokenizer {tokenizer} is gone; export the model another way")
        if sha256_file(tokenizer) != meta.get("tokenizer_sha256"):
            raise RoostError(f"{tokenizer}: not the tokenizer this run trained with (its sha256 differs)")
        train = meta["train_config"]
        model = Llama(cfg)
        adapters = [t for k, t in state.items() if k.endswith("lora_A")]
        if adapters:  # the rank of the adapters saved, whatever the file says
            apply_lora(model, int(adapters[0].shape[0]), float(train.get("lora_alpha", 16.0)))
        load_weights(model, state, path)
        merge_lora(model)
        model.float()
        if provenance is None:
            provenance = {**meta["provenance"], "train_config": train}
        prov = {**provenance, "checkpoint": str(path), "steps": meta["step"]}
        return save_model_dir(model, out, tokenizer, meta["tokenizer_config"], prov)


class Sharded:
    """A torchrun job: DCP shards written by every rank, sealed; loads into any layout (dcp.py)."""

    def __init__(self, ws: Workspace, dist: Dist, async_save: bool = False):
        self.ws, self.dist, self.async_save = ws, dist, async_save
        self.pending: dcp.Pending | None = None

    def save(self, ckpt_dir: Path, step: int, model: Llama, opt: Optimizers, meta: dict[str, Any], keep: int) -> Path:
        self.finish()  # one save in flight at a time
        pending = dcp.save(self.ws, ckpt_dir, step, model, opt.opts[0], meta, keep=keep, async_save=self.async_save)
        self.pending = pending if self.async_save else None
        return ckpt_dir / f"step_{step:08d}"

    def finish(self) -> None:
        if self.pending is not None:
            dcp.finish(self.pending)
            self.pending = None

    def read_meta(self, path: Path) -> dict[str, Any]:
        return dcp.read_meta(self.ws, path)  # sealed by this home, else refused before anything in it is read

    def restore(self, path: Path, model: Llama, opt: Optimizers) -> dict[str, Any]:
        meta = dcp.load(self.ws, path, model, opt.opts[0])
        if meta.get("model_config") != model.config.to_dict():
            raise RoostError(f"{path}: checkpoint of another model config; it cannot be resumed into this one")
        return meta

    def export(self, path: Path, out: Path, provenance: dict[str, Any] | None = None) -> dict[str, Any]:
        """Streams the shards a tensor group at a time (one process; no rank gathers the whole model)."""
        return dcp.export(self.ws, path, out, provenance=provenance)
