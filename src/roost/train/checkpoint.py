"""Training checkpoints: everything needed to continue a run bit-exactly, written atomically, with checksums,
and with no pickle anywhere.

`roost train --resume` reads the newest complete `runs/<name>/checkpoints/step_N/`:
  model.safetensors      weights
  optim.safetensors      optimizer tensors (moments, steps), keys "<opt>.<param index>.<name>"
  rng.safetensors        torch CPU (and CUDA) generator states
  meta.json              step, configs, optimizer hyper-parameters, loader state, python/numpy RNG, shard manifest
                         id, metrics so far, and the sha256 of each file above
A checkpoint is written into `.step_N.tmp-<pid>/` and renamed into place, so a kill mid-save never leaves a
half-written `step_N/`. Loading verifies every checksum and names the previous checkpoint when one is corrupt.

One `Checkpointer` protocol covers both formats of a run: `Plain` (this format, one process) and
`roost.train.dcp.Sharded` (torchrun: PyTorch DCP, sealed with the home's key). `roost.train.build.checkpointer_for`
chooses once: a job writes sharded checkpoints when it is distributed, and a checkpoint is read in the format it
was written in (`roost export RUN OUT` reads through it too: no Trainer, no data).
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from roost.errors import RoostError
from roost.hashing import sha256_file
from roost.model.config import from_dict
from roost.model.convert import save_model_dir
from roost.model.llama import Llama
from roost.workspace import Workspace

if TYPE_CHECKING:
    from roost.train.build import Optimizers
    from roost.train.parallel import Dist

FILES = ("model.safetensors", "optim.safetensors", "rng.safetensors")


def _optim_to_flat(states: list[dict[str, Any]]) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    tensors: dict[str, torch.Tensor] = {}
    meta: list[dict[str, Any]] = []
    for oi, st in enumerate(states):
        plain: dict[str, dict[str, Any]] = {}
        for pid, pstate in st["state"].items():
            for k, v in pstate.items():
                if isinstance(v, torch.Tensor):
                    tensors[f"{oi}.{pid}.{k}"] = v.detach().contiguous().cpu()
                else:
                    plain.setdefault(str(pid), {})[k] = v
        meta.append({"param_groups": st["param_groups"], "plain": plain, "ids": [str(i) for i in st["state"]]})
    return tensors, meta


def _optim_from_flat(tensors: dict[str, torch.Tensor], meta: list[dict[str, Any]]) -> list[dict[str, Any]]:
    states = []
    for oi, m in enumerate(meta):
        state: dict[int, dict[str, Any]] = {int(i): dict(m["plain"].get(i, {})) for i in m["ids"]}
        for key, v in tensors.items():
            o, pid, name = key.split(".", 2)
            if int(o) == oi:
                state.setdefault(int(pid), {})[name] = v
        states.append({"state": state, "param_groups": m["param_groups"]})
    return states


def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{i}"] = s
    np_state: tuple[Any, ...] = np.random.get_state(legacy=True)  # type: ignore[assignment]
    py = random.getstate()
    return tensors, {"numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]], "python": [py[0], list(py[1]), py[2]]}


def set_rng_state(tensors: dict[str, torch.Tensor], plain: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("torch_cuda_")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    n = plain["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), *n[2:]))
    p = plain["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))


def save(
    ckpt_dir: Path,
    step: int,
    model_state: dict[str, torch.Tensor],
    optim_states: list[dict[str, Any]],
    meta: dict[str, Any],
    keep: int = 3,
) -> Path:
    """Write step_N atomically, then drop all but the newest `keep` checkpoints."""
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    final = ckpt_dir / f"step_{step:08d}"
    tmp = ckpt_dir / f".step_{step:08d}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    # safetensors refuses shared storage: a tied head is saved once (the embedding) and re-tied on load
    seen: dict[int, str] = {}
    weights = {}
    for k, v in model_state.items():
        ptr = v.untyped_storage().data_ptr()
        if ptr in seen:
            continue
        seen[ptr] = k
        weights[k] = v.detach().contiguous().cpu()
    save_file(weights, str(tmp / "model.safetensors"))
    opt_tensors, opt_meta = _optim_to_flat(optim_states)
    save_file(opt_tensors, str(tmp / "optim.safetensors"))
    rng_t, rng_plain = rng_state()
    save_file(rng_t, str(tmp / "rng.safetensors"))
    full = {
        **meta,
        "step": step,
        "optimizers": opt_meta,
        "rng": rng_plain,
        "sha256": {f: sha256_file(tmp / f) for f in FILES},
    }
    (tmp / "meta.json").write_text(json.dumps(full, indent=1))
    for f in list(tmp.iterdir()):
        with f.open("rb") as fh:
            os.fsync(fh.fileno())
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    for old in list_checkpoints(ckpt_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    for stale in ckpt_dir.glob(".step_*.tmp-*"):
        if stale != tmp:
            shutil.rmtree(stale, ignore_errors=True)
    return final


def list_checkpoints(ckpt_dir: Path) -> list[Path]:
    return sorted(p for p in ckpt_dir.glob("step_*") if p.is_dir() and (p / "meta.json").is_file())


def load(path: Path) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]], dict[str, Any]]:
    """Model tensors, optimizer states and meta of one checkpoint; checksums verified (RNG restored by caller)."""
    try:
        meta = json.loads((path / "meta.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise RoostError(f"{path}/meta.json: unreadable ({e}){_previous_hint(path)}") from None
    for f in FILES:
        p = path / f
        if not p.is_file() or sha256_file(p) != meta.get("sha256", {}).get(f):
            raise RoostError(
                f"{p}: missing or its sha256 does not match meta.json — the checkpoint is corrupt{_previous_hint(path)}"
            )
    model = load_file(str(path / "model.safetensors"))
    optim = _optim_from_flat(load_file(str(path / "optim.safetensors")), meta["optimizers"])
    meta["_rng_tensors"] = load_file(str(path / "rng.safetensors"))
    return model, optim, meta


def _previous_hint(path: Path) -> str:
    earlier = [p for p in list_checkpoints(path.parent) if p.name < path.name]
    if earlier:
        return f"; the previous checkpoint is {earlier[-1]} (resume from it with --resume-from {earlier[-1].name})"
    return "; there is no earlier checkpoint"


# -- one checkpointer protocol over the plain and the sharded format (roost.train.dcp) ---------------------------
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
        return save(ckpt_dir, step, model.state_dict(), opt.state_dict(), meta, keep=keep)

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
        model_state, optim_states, meta = load(path)
        if meta.get("model_config") != model.config.to_dict():
            raise RoostError(f"{path}: checkpoint of another model config; it cannot be resumed into this one")
        load_weights(model, model_state, path)
        try:
            opt.load_state_dict(optim_states)
        except ValueError as e:
            raise RoostError(f"{path}: optimizer state does not fit ({e})") from None
        set_rng_state(meta["_rng_tensors"], meta["rng"])
        return meta

    def export(self, path: Path, out: Path, provenance: dict[str, Any] | None = None) -> dict[str, Any]:
        """Rebuilds the model from the checkpoint's own model config (LoRA adapters merged), checksums verified.
        meta.json is not sealed, so what it names is checked against what the checkpoint holds: the model may not
        be larger than the saved weights, the LoRA rank is the saved adapters', the tokenizer is a tokenizer.json
        with the sha256 the run trained with."""
        from roost.train.lora import apply_lora, merge_lora

        state, _, meta = load(path)
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
