"""Training throughput on CPU: roost's Llama against HF transformers' `LlamaForCausalLM` with the same config and
weights, the same batch and sequence, forward + backward + AdamW step, measured in the same run.

`python -m bench.train_cpu [--steps 8] [--configs small,d6]`  (results go in docs/benchmarks.md)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from roost.model.config import ModelConfig, from_depth, load_preset
from roost.model.convert import hf_config, hf_state_dict
from roost.model.llama import Llama
from roost.train.build import build_optimizer

SHAPES = {"small": (16, 256), "d6": (8, 512), "gpt2-124m": (4, 512)}


def _config(name: str) -> ModelConfig:
    if name.startswith("d") and name[1:].isdigit():
        return from_depth(int(name[1:]), vocab_size=32_768, max_seq_len=1024)[0]
    return load_preset(name)


def _hf_model(m: Llama) -> torch.nn.Module:
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    d = Path(tempfile.mkdtemp())
    (d / "config.json").write_text(json.dumps(hf_config(m.config, None, None, None)))
    save_file(hf_state_dict(m), str(d / "model.safetensors"))
    return AutoModelForCausalLM.from_pretrained(str(d), dtype=torch.float32, attn_implementation="sdpa")


def _rate(step, tokens: int, steps: int) -> float:  # type: ignore[no-untyped-def]
    step()
    step()  # warm-up (and compile)
    t = time.perf_counter()
    for _ in range(steps):
        step()
    return tokens * steps / (time.perf_counter() - t)


def measure(name: str, steps: int) -> list[tuple[str, ...]]:
    cfg = _config(name)
    batch, seq = SHAPES.get(name, (8, 256))
    torch.manual_seed(0)
    x = torch.randint(0, cfg.vocab_size, (batch, seq))
    rows = []
    results: dict[str, float] = {}
    for impl, dtype in (
        ("transformers", "fp32"),
        ("roost", "fp32"),
        ("transformers", "bf16"),
        ("roost", "bf16"),
        ("roost + compile", "fp32"),
    ):
        m = Llama(cfg)
        m.init_weights(0)
        model = _hf_model(m) if impl == "transformers" else m
        model.train()
        opt = build_optimizer(model, "adamw", 1e-4, 0.1)
        fwd = torch.compile(model) if "compile" in impl else model
        ctx = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if dtype == "bf16" else None

        def step(fwd=fwd, opt=opt, impl=impl, ctx=ctx) -> None:  # type: ignore[no-untyped-def]
            with ctx() if ctx else torch.autocast("cpu", enabled=False):
                loss = fwd(x, labels=x).loss if impl == "transformers" else fwd(x, torch.roll(x, -1, 1))
            loss.backward()
            opt.step()
            opt.zero_grad()

        results[f"{impl} {dtype}"] = _rate(step, batch * seq, steps)
    for key, r in results.items():
        peer = results["transformers " + key.split()[-1]] if "compile" not in key else results["transformers fp32"]
        rows.append((name, f"{cfg.num_params() / 1e6:.1f} M", f"{batch}×{seq}", key, f"{r:,.0f}", f"{r / peer:.2f}×"))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--configs", default="small,d6")
    args = ap.parse_args()
    console = Console()
    import transformers

    table = Table(
        title=f"train step tokens/s — {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"transformers {transformers.__version__}"
    )
    for col in ("config", "params", "batch×seq", "implementation", "tokens/s", "roost ÷ transformers"):
        table.add_column(col, justify="right" if col in ("tokens/s", "roost ÷ transformers", "params") else "left")
    for name in args.configs.split(","):
        for row in measure(name, args.steps):
            table.add_row(*row)
    console.print(table)


if __name__ == "__main__":
    main()
