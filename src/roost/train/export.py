"""`roost export SOURCE OUT [--force]`: a HF Llama directory from `models/NAME` or from a run's newest checkpoint,
read through roost.train.checkpoint (sharded DCP checkpoints are streamed tensor group by tensor group, never
whole in memory; a plain one is loaded into a model of its own config, LoRA adapters merged).

OUT is the operator's path, outside the workspace if they like; an existing OUT is replaced only with `force` and
only when it is a model directory (config.json), through a temp folder and a rename.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from roost.context import Roost
from roost.errors import UsageError
from roost.model.imports import resolve_model
from roost.workspace import is_name, replace_dir, temp_dir_for


def check_out(out: Path, force: bool) -> Path:
    """OUT may be new, an empty folder, or (with force) a model folder roost wrote (roost.json, not a run folder);
    anything else is refused. Returns OUT resolved (so `.` names the folder itself)."""
    if out.is_file() or out.is_symlink():
        raise UsageError(f"{out}: exists and is not a directory")
    out = out.resolve()
    if out == Path.cwd() or out in Path.cwd().parents:
        raise UsageError(f"{out}: the current folder (or one above it); give a folder to write the model into")
    if out.is_dir() and any(out.iterdir()):
        if not (out / "roost.json").is_file() or (out / "checkpoints").exists():
            raise UsageError(
                f"{out}: a non-empty folder that is not a roost model directory; roost will not replace it"
            )
        if not force:
            raise UsageError(f"{out}: exists; pass --force to replace it")
    return out


def export(ctx: Roost, source: str, out: Path, force: bool = False) -> dict[str, Any]:
    """models/SOURCE copied, or a run's newest checkpoint (either format) written as a HF folder: the weights come
    through the checkpointer, the shape from the checkpoint's own model config (no Trainer, no data)."""
    from roost.train import checkpoint as ckpt
    from roost.train.build import checkpointer_for

    out = check_out(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    ws = ctx.ws
    run = ws.run_dir(source) if is_name(source) else None
    found = ckpt.list_checkpoints(run / "checkpoints") if run else []
    if found:
        return checkpointer_for(ws, path=found[-1]).export(found[-1], out)
    src = resolve_model(ws, source)
    tmp = temp_dir_for(out)
    shutil.rmtree(tmp)
    shutil.copytree(src, tmp)
    replace_dir(tmp, out)
    return json.loads((out / "roost.json").read_text()) if (out / "roost.json").is_file() else {}
