"""Build a generation engine from a model name and arguments (as vLLM builds one from `EngineArgs`): used by
`roost serve`, `roost compose`/`reply` and `roost ask`, e.g. `load_engine(home, "smollm2", max_batch=8)`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from roost.errors import UsageError
from roost.model.imports import resolve_model


def load_engine(
    home: Path,
    name: str,
    max_batch: int = 8,
    max_queue: int = 32,
    max_seq: int = 2048,
    dtype: str = "auto",
    quant: str | None = None,
    start: bool = True,
    say: Callable[[str], None] | None = None,
) -> tuple[Any, str, str, Any]:
    """An `Engine` on `models/NAME` (or a model directory) in the dtype the probe picks for decode (or `dtype`),
    with its name, weights sha256 and chat template; `say` gets the one-line dtype choice."""
    import torch

    from roost.data import tokenizer as toklib
    from roost.infer.engine import Engine
    from roost.model.convert import load_model_dir

    path = resolve_model(home, name)
    model, meta = load_model_dir(path)
    tok = toklib.load(path / "tokenizer.json")
    tc_path = path / "tokenizer_config.json"
    tc = json.loads(tc_path.read_text()) if tc_path.is_file() else {}
    eos = {
        i
        for i in (tok.token_to_id(t) for t in ("<|im_end|>", "<|endoftext|>", tc.get("eos_token") or ""))
        if i is not None
    }
    from roost.probe import choose

    choice = choose("decode", dtype)  # UsageError for anything but auto, fp32, bf16
    if say:
        say(f"{path.name}: {choice.line()}")
    if quant not in (None, "int8"):
        raise UsageError(f"--quant must be int8 (or left out), got {quant!r}")
    if torch.cuda.is_available():
        model.to("cuda")
        if quant:
            raise UsageError("--quant int8 is the CPU path; on a GPU serve bf16")
    engine = Engine(
        model,
        tok,
        eos,
        max_batch=max_batch,
        max_seq=max_seq,
        max_queue=max_queue,
        dtype=torch.bfloat16 if choice.dtype == "bf16" else None,
        quant=quant,
        start=start,
    )
    from roost.infer.chat import ChatTemplate

    template = ChatTemplate(tc.get("chat_template"), tc, origin=f"{path}/tokenizer_config.json chat_template")
    return engine, path.name, str(meta.get("model_sha256", "unknown")), template
