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
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from roost.errors import RoostError
from roost.hashing import sha256_file

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
    np_state = np.random.get_state()
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
