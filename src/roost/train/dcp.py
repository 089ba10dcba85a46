"""Sharded training checkpoints with PyTorch Distributed Checkpoint (DCP): every rank writes its own shards in
parallel, and a checkpoint loads into any other layout — 2 ranks → 1, 1 → 2, FSDP ↔ TP — because DCP stores
each tensor's global shape and the offsets of its pieces, and loading reads the pieces each new rank needs.

Written by `roost train --nproc N` (and read by `roost train --resume` at any N, `roost export RUN OUT`):
  runs/<name>/checkpoints/step_N/
    .metadata, __R_0.distcp   DCP: model and optimizer state (FQN keys, DTensor shards)
    rng/rank<R>.safetensors   each rank's torch generator states
    meta.json                 step, configs, loader position, mesh, file sizes; written last, by rank 0
A save goes to `.step_N.tmp/`; rank 0 renames it once every rank's DCP write has finished and meta.json is on
disk, so a job killed mid-save leaves no `step_N/` (list_checkpoints only sees directories with meta.json).
`--async-ckpt` returns to training as soon as the state is staged in host memory and finishes the write in the
background; the rename waits for it.

DCP's `.metadata` is a pickle and torch's planner unpickles some shard entries, so a checkpoint is read only after
`roost.seal.verify` proves every file is the one roost wrote in this home (an HMAC keyed with the home's secret,
`roost-seal.json`, written last): a checkpoint folder from elsewhere, or one changed since, is refused before torch
sees it. Extra state is JSON or safetensors.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from safetensors.torch import load_file, save_file
from torch import nn
from torch.distributed.checkpoint.metadata import TensorStorageMetadata
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from roost.errors import RoostError
from roost.seal import seal, verify
from roost.train import checkpoint as ckpt
from roost.workspace import Workspace

if TYPE_CHECKING:
    from roost.model.llama import Llama
    from roost.train.build import Optimizers
    from roost.train.parallel import Dist


def is_dcp(path: Path) -> bool:
    return (path / ".metadata").is_file()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


@dataclass
class Pending:
    """An async save whose files are still being written."""

    future: Future[Any] | None
    ws: Workspace
    tmp: Path
    final: Path
    meta: dict[str, Any]
    keep: int


def _state(model: nn.Module, opt: torch.optim.Optimizer) -> dict[str, Any]:
    msd, osd = get_state_dict(model, opt)
    return {"model": msd, "optim": osd}


def save(
    ws: Workspace,
    ckpt_dir: Path,
    step: int,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    meta: dict[str, Any],
    keep: int = 3,
    async_save: bool = False,
) -> Pending:
    """Collective: every rank calls it. Returns a Pending; `finish()` it (at once for a blocking save). `ws` is
    the workspace whose secret seals the checkpoint."""
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    final = ckpt_dir / f"step_{step:08d}"
    tmp = ckpt_dir / f".step_{step:08d}.tmp"
    if _rank() == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        (tmp / "rng").mkdir()
    barrier()
    rng_t, rng_plain = ckpt.rng_state()
    save_file(rng_t, str(tmp / "rng" / f"rank{_rank()}.safetensors"))
    state = _state(model, opt)
    full = {**meta, "step": step, "format": "dcp", "rng": rng_plain}
    if async_save:
        fut: Any = dcp.async_save(state, checkpoint_id=str(tmp))
        return Pending(fut, ws, tmp, final, full, keep)
    dcp.save(state, checkpoint_id=str(tmp))
    pending = Pending(None, ws, tmp, final, full, keep)
    finish(pending)
    return pending


def finish(p: Pending) -> Path:
    """Wait for the write, then rank 0 writes meta.json and renames the directory into place."""
    if p.future is not None:
        p.future.result()
    barrier()
    if _rank() == 0:
        files = sorted(f for f in p.tmp.rglob("*") if f.is_file())
        for f in files:
            with f.open("rb") as fh:
                os.fsync(fh.fileno())
        p.meta["files"] = {str(f.relative_to(p.tmp)): f.stat().st_size for f in files}
        (p.tmp / "meta.json").write_text(json.dumps(p.meta, indent=1))
        seal(p.ws, p.tmp)
        if p.final.exists():
            shutil.rmtree(p.final)
        p.tmp.rename(p.final)
        for old in ckpt.list_checkpoints(p.final.parent)[: -p.keep] if p.keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    barrier()
    return p.final


def read_meta(ws: Workspace, path: Path) -> dict[str, Any]:
    """meta.json of a checkpoint roost wrote in this home (the seal is verified first: nothing else is read)."""
    verify(ws, path, "checkpoint")
    try:
        meta: dict[str, Any] = json.loads((path / "meta.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise RoostError(f"{path}/meta.json: unreadable ({e})") from None
    for name, size in meta.get("files", {}).items():
        f = path / name
        if not f.is_file() or f.stat().st_size != size:
            raise RoostError(f"{f}: missing or not the size meta.json records — the checkpoint is damaged")
    return meta


def load(ws: Workspace, path: Path, model: nn.Module, opt: torch.optim.Optimizer) -> dict[str, Any]:
    """Load a DCP checkpoint into `model`/`opt` in whatever layout they have now (collective under torchrun)."""
    meta = read_meta(ws, path)
    state = _state(model, opt)
    # per-parameter state (moments, step) is matched by parameter name; the param groups stay this run's own,
    # since a new layout may group the parameters differently (tensor parallelism splits groups by tensor type)
    groups = state["optim"].pop("param_groups")
    try:
        dcp.load(state, checkpoint_id=str(path))
    except Exception as e:  # DCP raises CheckpointException listing each rank's failure
        raise RoostError(f"{path}: the checkpoint does not fit this model/optimizer ({str(e)[:300]})") from None
    state["optim"]["param_groups"] = groups
    set_state_dict(model, opt, model_state_dict=state["model"], optim_state_dict=state["optim"])
    mine = path / "rng" / f"rank{_rank()}.safetensors"
    tensors = load_file(str(mine if mine.is_file() else path / "rng" / "rank0.safetensors"))
    ckpt.set_rng_state(tensors, meta["rng"])
    return meta


def model_tensors(ws: Workspace, path: Path) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """HF-named model tensors of a DCP checkpoint with their global shapes, read from its metadata only."""
    verify(ws, path, "checkpoint")
    return _model_tensors(path)


def _model_tensors(path: Path) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:  # after verify()
    md = dcp.FileSystemReader(str(path)).read_metadata()
    out = {}
    for key, m in md.state_dict_metadata.items():
        if key.startswith("model.") and isinstance(m, TensorStorageMetadata):
            out[key.removeprefix("model.")] = (tuple(m.size), m.properties.dtype)
    return out


def read_tensors(ws: Workspace, path: Path, names: list[str]) -> dict[str, torch.Tensor]:
    """Full values of some model tensors, loaded piece by piece from the shards (one process, no process group):
    memory is the size of these tensors, not of the model."""
    verify(ws, path, "checkpoint")
    return _read_tensors(path, names, _model_tensors(path))


def _read_tensors(
    path: Path, names: list[str], shapes: dict[str, tuple[tuple[int, ...], torch.dtype]]
) -> dict[str, torch.Tensor]:  # after verify()
    want = {f"model.{n}": torch.empty(shapes[n][0], dtype=shapes[n][1]) for n in names}
    with warnings.catch_warnings():  # "assuming the intent is to load in a single process": it is
        warnings.simplefilter("ignore", UserWarning)
        dcp.load(want, storage_reader=dcp.FileSystemReader(str(path)), no_dist=True)
    return {k.removeprefix("model."): v for k, v in want.items()}


def export(
    ws: Workspace,
    path: Path,
    out: Path,
    tokenizer_path: Path | None = None,
    tokenizer_config: dict[str, Any] | None = None,
    provenance: dict[str, Any] | None = None,
    group_bytes: int = 2 << 30,
) -> dict[str, Any]:
    """A HF model directory from a DCP checkpoint, streamed: tensors are read from the shards a group of about
    `group_bytes` at a time and written as one safetensors file per group (HF's sharded layout), so no process ever
    holds the whole model. Runs in one process, with or without the job that wrote the checkpoint. The tokenizer
    and the provenance default to the ones the checkpoint records (its run's provenance and train config)."""
    from roost.model.config import from_dict
    from roost.model.convert import save_weights_dir

    meta = read_meta(ws, path)  # verifies the seal once for the whole export
    tokenizer_path = tokenizer_path or Path(meta["tokenizer_path"])
    tokenizer_config = tokenizer_config if tokenizer_config is not None else meta["tokenizer_config"]
    if provenance is None:
        provenance = {**meta["provenance"], "train_config": meta["train_config"]}
    cfg = from_dict(meta["model_config"], f"{path}/meta.json")
    shapes = _model_tensors(path)
    names = [n for n in shapes if not (cfg.tie_embeddings and n == "lm_head.weight")]
    groups: list[list[str]] = [[]]
    size = 0
    for n in names:
        shape, dtype = shapes[n]
        nbytes = torch.Size(shape).numel() * dtype.itemsize
        if groups[-1] and size + nbytes > group_bytes:
            groups.append([])
            size = 0
        groups[-1].append(n)
        size += nbytes
    prov = {**provenance, "checkpoint": str(path), "steps": meta["step"]}
    return save_weights_dir(
        cfg,
        (_read_tensors(path, g, shapes) for g in groups),
        out,
        tokenizer_path,
        tokenizer_config,
        prov,
        n_groups=len(groups),
    )


class Sharded:
    """A torchrun job: DCP shards written by every rank, sealed; loads into any layout (dcp.py)."""

    def __init__(self, ws: Workspace, dist: Dist, async_save: bool = False):
        self.ws, self.dist, self.async_save = ws, dist, async_save
        self.pending: Pending | None = None

    def save(self, ckpt_dir: Path, step: int, model: Llama, opt: Optimizers, meta: dict[str, Any], keep: int) -> Path:
        self.finish()  # one save in flight at a time
        pending = save(self.ws, ckpt_dir, step, model, opt.opts[0], meta, keep=keep, async_save=self.async_save)
        self.pending = pending if self.async_save else None
        return ckpt_dir / f"step_{step:08d}"

    def finish(self) -> None:
        if self.pending is not None:
            finish(self.pending)
            self.pending = None

    def read_meta(self, path: Path) -> dict[str, Any]:
        return read_meta(self.ws, path)  # sealed by this home, else refused before anything in it is read

    def restore(self, path: Path, model: Llama, opt: Optimizers) -> dict[str, Any]:
        meta = load(self.ws, path, model, opt.opts[0])
        if meta.get("model_config") != model.config.to_dict():
            raise RoostError(f"{path}: checkpoint of another model config; it cannot be resumed into this one")
        return meta

    def export(self, path: Path, out: Path, provenance: dict[str, Any] | None = None) -> dict[str, Any]:
        """Streams the shards a tensor group at a time (one process; no rank gathers the whole model)."""
        return export(self.ws, path, out, provenance=provenance)
