"""Batch-1 decode speed on SmolLM2-135M-Instruct: roost's engine against HF transformers `generate` on the same
weights, and against llama.cpp (llama-cpp-python) on the same GGUF file when it is installed; same run.

`python -m bench.decode [--tokens 128] [--dtype bf16]`  (results go in docs/benchmarks.md)
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import threading
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from roost.data.tokenizer import load
from roost.infer.engine import Engine
from roost.infer.sampling import SamplingParams
from roost.model.convert import load_model_dir
from roost.model.imports import import_model, smollm2_gguf
from roost.workspace import Workspace

PROMPT = "<|im_start|>user\nWrite a short, upbeat post about a rainy Monday morning.<|im_end|>\n<|im_start|>assistant\n"


def roost_rate(model_dir: Path, n: int, dtype: torch.dtype | None, quant: str | None = None) -> float:
    m, _ = load_model_dir(model_dir)
    tok = load(model_dir / "tokenizer.json")
    eng = Engine(m, tok, eos_ids=set(), max_batch=1, max_seq=1024, dtype=dtype, start=False, quant=quant)
    ids = tok.encode(PROMPT, add_special_tokens=False).ids
    out: list[float] = []

    def client() -> None:  # the engine runs in the main thread, as `roost serve` does
        eng.complete(ids, SamplingParams(max_tokens=8, temperature=0, ignore_eos=True))  # warm-up
        t = time.perf_counter()
        _, ev = eng.complete(ids, SamplingParams(max_tokens=n, temperature=0, ignore_eos=True))
        out.append((ev.usage or {})["completion_tokens"] / (time.perf_counter() - t))
        eng.shutdown()

    th = threading.Thread(target=client)
    th.start()
    eng.run()
    th.join()
    return out[0]


def hf_rate(model_dir: Path, n: int, dtype: torch.dtype) -> float:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    m = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype).eval()
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    x = tok(PROMPT, return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        m.generate(**x, max_new_tokens=8, do_sample=False, min_new_tokens=8)
        t = time.perf_counter()
        out = m.generate(**x, max_new_tokens=n, min_new_tokens=n, do_sample=False)
        dt = time.perf_counter() - t
    return (out.shape[1] - x["input_ids"].shape[1]) / dt


def llama_cpp_rate(gguf: Path, n: int) -> float | None:
    try:
        from llama_cpp import Llama as LlamaCpp
    except ImportError:
        return None
    llm = LlamaCpp(model_path=str(gguf), n_ctx=1024, n_threads=os.cpu_count() or 1, verbose=False)
    llm(PROMPT, max_tokens=8, temperature=0)
    t = time.perf_counter()
    out = llm(PROMPT, max_tokens=n, temperature=0, stop=[])
    dt = time.perf_counter() - t
    return out["usage"]["completion_tokens"] / dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=128)
    args = ap.parse_args()
    console = Console()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir, _ = import_model(Workspace(Path(tmp)), "smollm2", "smollm2")
        rows = []
        hf32 = hf_rate(model_dir, args.tokens, torch.float32)
        hf16 = hf_rate(model_dir, args.tokens, torch.bfloat16)
        r32 = roost_rate(model_dir, args.tokens, None)
        r16 = roost_rate(model_dir, args.tokens, torch.bfloat16)
        r8 = roost_rate(model_dir, args.tokens, torch.bfloat16, "int8")
        cpp = llama_cpp_rate(smollm2_gguf(), args.tokens)
    best_hf = max(hf32, hf16)
    rows.append(("transformers generate, fp32", hf32))
    rows.append(("transformers generate, bf16", hf16))
    rows.append(("roost engine, fp32", r32))
    rows.append(("roost engine, bf16", r16))
    rows.append(("roost engine, int8 weights (bf16 activations)", r8))
    if cpp is not None:
        rows.append(("llama.cpp (llama-cpp-python), Q4_1 GGUF", cpp))
    table = Table(
        title=f"batch-1 greedy decode, SmolLM2-135M, {args.tokens} tokens — {platform.machine()}, "
        f"{os.cpu_count()} cores, torch {torch.__version__}"
    )
    for col in ("implementation", "tokens/s", "roost best ÷ this"):
        table.add_column(col, justify="left" if col == "implementation" else "right")
    best = max(r32, r16, r8)
    for name, r in rows:
        table.add_row(name, f"{r:.1f}", f"{best / r:.2f}×")
    console.print(table)
    console.print(
        f"roost best ÷ transformers best: {best / best_hf:.2f}×"
        + (f"; roost best ÷ llama.cpp: {best / cpp:.2f}×" if cpp else "; llama-cpp-python not installed")
    )


if __name__ == "__main__":
    main()
