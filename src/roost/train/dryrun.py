"""`roost train --dry-run`: size a run without running it. The model is built on the meta device (no memory, any
preset up to llama3-405b), its parameters counted, one forward + backward counted by torch's FlopCounterMode,
and the memory per rank of the chosen mesh estimated (roost.model.budget) — with and without activation
checkpointing — against the named GPU.

    roost train --dry-run --preset llama3-70b --dp-shard 64 --tp 8 --seq-len 8192 --dtype bf16 --gpu h100
"""

from __future__ import annotations

import json
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from roost.errors import UsageError
from roost.hardware import accelerator
from roost.model.budget import GIB, OVERHEAD_GIB, USABLE, Layout, memory_per_rank
from roost.model.config import ModelConfig, from_depth, load_preset
from roost.model.llama import Llama
from roost.train.parallel import check_tp, mesh_shape
from roost.workspace import Workspace


def model_config(ws: Workspace, cfg: Any) -> ModelConfig:
    if cfg.init:
        from roost.model.convert import config_from_hf
        from roost.train.build import resolve_init

        path = resolve_init(ws, cfg.init) / "config.json"
        return config_from_hf(json.loads(path.read_text()), str(path))
    vocab: dict[str, int] = {}
    manifest = ws.shard_dir(cfg.shards) / "manifest.json"
    if manifest.is_file():
        vocab = {"vocab_size": int(json.loads(manifest.read_text())["tokenizer"]["vocab_size"])}
    if cfg.depth:
        return from_depth(cfg.depth, max_seq_len=max(cfg.seq_len, 256), **vocab)[0]
    preset = load_preset(cfg.preset)
    return load_preset(cfg.preset, **vocab) if preset.name in ("tiny", "small") and vocab else preset


def counted_flops_per_token(mcfg: ModelConfig, seq_len: int) -> tuple[int, float]:
    """(parameters, training FLOPs per token) of the real module on the meta device, counted by FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = Llama(mcfg)
    params = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    x = torch.zeros(1, seq_len, dtype=torch.long, device="meta")
    with FlopCounterMode(display=False) as fc:
        model(x, x).backward()
    return params, fc.get_total_flops() / seq_len


def dry_run(ws: Workspace, cfg: Any, gpu: str, world: int | None = None) -> dict[str, Any]:
    mcfg = model_config(ws, cfg)
    if cfg.seq_len > mcfg.max_seq_len:
        raise UsageError(f"--seq-len {cfg.seq_len} is longer than the model's max_seq_len {mcfg.max_seq_len}")
    if world is None:  # the mesh's product; dp_shard -1 without --world is one shard
        world = cfg.dp_replicate * max(cfg.dp_shard, 1) * cfg.tp
    rep, shard, tp = mesh_shape(world, cfg.dp_replicate, cfg.dp_shard, cfg.tp)
    check_tp(mcfg, tp, cfg.seq_len)
    acc = accelerator(gpu)
    params, counted = counted_flops_per_token(mcfg, cfg.seq_len)
    base = dict(dp_replicate=rep, dp_shard=shard, tp=tp, parallel=cfg.parallel, seq_len=cfg.seq_len)
    dtype = "bf16" if cfg.dtype == "auto" else cfg.dtype  # auto: what the probe picks on a GPU with bf16
    base |= dict(micro_batch=cfg.batch_size, compute_bytes=2 if dtype == "bf16" else 4)
    mem = {
        ac: memory_per_rank(mcfg, Layout(**base, recompute="full" if ac else "none", overhead_gib=OVERHEAD_GIB))
        for ac in (False, True)
    }
    usable = acc.memory_gib * GIB * USABLE
    return {
        "model": mcfg.name,
        "params": params,
        "params_config": mcfg.num_params(),
        "flops_per_token": mcfg.flops_per_token(cfg.seq_len),
        "flops_per_token_counted": counted,
        "mesh": {"world": world, "dp_replicate": rep, "dp_shard": shard, "tp": tp, "parallel": cfg.parallel},
        "seq_len": cfg.seq_len,
        "micro_batch": cfg.batch_size,
        "dtype": dtype,
        "gpu": acc.name,
        "gpu_memory_gib": acc.memory_gib,
        "memory": {"no_checkpointing": mem[False], "checkpointing": mem[True]},
        "fits": {"no_checkpointing": mem[False]["total"] <= usable, "checkpointing": mem[True]["total"] <= usable},
    }


def print_dry_run(ws: Workspace, cfg: Any, gpu: str, world: int | None, console: Console) -> dict[str, Any]:
    r = dry_run(ws, cfg, gpu, world)
    m = r["mesh"]
    console.print(
        f"[bold]{r['model']}[/]: {r['params'] / 1e9:.3f} B parameters (config says {r['params_config'] / 1e9:.3f} B) · "
        f"{r['flops_per_token'] / 1e9:.2f} GFLOP/token by 6N+12LHDT, {r['flops_per_token_counted'] / 1e9:.2f} "
        f"counted by FlopCounterMode · seq {r['seq_len']} × micro-batch {r['micro_batch']} · {r['dtype']}"
    )
    console.print(
        f"mesh: {m['world']} ranks = dp_replicate {m['dp_replicate']} × dp_shard {m['dp_shard']} × tp {m['tp']} "
        f"({m['parallel']})"
    )
    t = Table(title=f"memory per rank (GiB) on {r['gpu']} ({r['gpu_memory_gib']:g} GiB)")
    t.add_column("part")
    t.add_column("no checkpointing", justify="right")
    t.add_column("activation checkpointing", justify="right")
    a, b = r["memory"]["no_checkpointing"], r["memory"]["checkpointing"]
    for k in a:
        t.add_row(k, f"{a[k] / GIB:,.2f}", f"{b[k] / GIB:,.2f}", style="bold" if k == "total" else None)
    fit = r["fits"]
    t.add_row("fits", *("[green]yes[/]" if fit[k] else "[red]no[/]" for k in ("no_checkpointing", "checkpointing")))
    console.print(t)
    return r
