"""`roost plan`: the fleet planner's verb — a thin call into roost.plan.

roost plan --gpus 10000 --gpu h100-sxm --days 30 --plot plan/
roost plan --model llama3-70b --tokens 15T --gpus 10000 --json
roost plan --model llama3-405b --gpus 16384 --tokens 15.6T --tp 8 --pp 16 --recompute selective
roost plan --calibrate roost-home/runs/demo/metrics.jsonl --model llama3-8b --tokens 1T --gpus 64
roost plan --validate --plot docs/
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from roost.cli.app import app


@app.command()
def plan(
    gpus: Annotated[int, typer.Option("--gpus", help="Accelerators in the fleet.")] = 0,
    gpu: Annotated[str, typer.Option("--gpu", help="Accelerator: h100-sxm, h200, b200, a100, tpu-v5p, ...")] = "h100",
    days: Annotated[float, typer.Option("--days", help="Budget: wall-clock days on the fleet.")] = 0.0,
    model: Annotated[str, typer.Option("--model", help="Preset to plan (default: llama3-8b/70b/405b).")] = "",
    tokens: Annotated[str, typer.Option("--tokens", help="Training tokens: 15T, 1.5e12, 300B.")] = "",
    seq_len: Annotated[int, typer.Option("--seq-len")] = 8192,
    batch_tokens: Annotated[str, typer.Option("--batch-tokens", help="Global batch in tokens.")] = "16M",
    mfu: Annotated[float, typer.Option("--mfu", help="Use this MFU instead of the table.")] = 0.0,
    goodput: Annotated[float, typer.Option("--goodput", help="Use this goodput instead of the failure model.")] = 0.0,
    calibrate: Annotated[
        str, typer.Option("--calibrate", help="Take the MFU measured by a roost run: runs/NAME/metrics.jsonl.")
    ] = "",
    experts: Annotated[int, typer.Option("--experts", help="Mixture of experts: experts per layer.")] = 1,
    top_k: Annotated[int, typer.Option("--top-k", help="Mixture of experts: experts per token.")] = 1,
    inference_tokens: Annotated[
        str, typer.Option("--inference-tokens", help="Expected lifetime inference tokens (over-training).")
    ] = "",
    usd_per_hour: Annotated[str, typer.Option("--usd-per-hour", help="Price range LOW,HIGH per GPU-hour.")] = "",
    pue: Annotated[float, typer.Option("--pue")] = 1.2,
    node_overhead: Annotated[float, typer.Option("--node-overhead", help="Node watts per GPU watt.")] = 1.5,
    interruption_gpu_hours: Annotated[
        float, typer.Option("--interruption-gpu-hours", help="GPU-hours between interruptions.")
    ] = 50_000.0,
    restart_min: Annotated[float, typer.Option("--restart-min")] = 10.0,
    ckpt_fixed_s: Annotated[float, typer.Option("--ckpt-fixed-s", help="Blocking cost of a checkpoint.")] = 20.0,
    ckpt_write_gbps: Annotated[
        float, typer.Option("--ckpt-write-gbps", help="Storage write GB/s per GPU for checkpoints.")
    ] = 0.5,
    ckpt_interval_min: Annotated[float, typer.Option("--ckpt-interval-min", help="0: Young's optimum.")] = 0.0,
    hardware: Annotated[str, typer.Option("--hardware", help="Extra hardware catalogue (TOML).")] = "",
    tp: Annotated[int, typer.Option("--tp", help="Check this layout: tensor parallel.")] = 0,
    pp: Annotated[int, typer.Option("--pp", help="Check this layout: pipeline stages.")] = 1,
    cp: Annotated[int, typer.Option("--cp", help="Check this layout: context parallel.")] = 1,
    dp_shard: Annotated[int, typer.Option("--dp-shard", help="Check this layout: FSDP group (0: all).")] = 0,
    micro_batch: Annotated[int, typer.Option("--micro-batch")] = 1,
    recompute: Annotated[str, typer.Option("--recompute", help="none | selective | full")] = "none",
    recipe: Annotated[
        str, typer.Option("--recipe", help="Bytes/param: adamw (16), adamw-bf16-grads (14), megatron (18).")
    ] = "adamw",
    top: Annotated[int, typer.Option("--top", help="Layouts to show per model.")] = 3,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")] = False,
    plot: Annotated[str, typer.Option("--plot", help="Write PNG charts into this directory.")] = "",
    validate: Annotated[bool, typer.Option("--validate", help="Predict the published runs and compare.")] = False,
) -> None:
    """Plan a training run on a fleet: compute-optimal size, days, layouts that fit, energy and cost."""
    from roost.plan.compute import parse_count
    from roost.plan.goodput import FailureModel
    from roost.plan.planner import PlanConfig, check_layout, parse_usd
    from roost.plan.planner import plan as make_plan
    from roost.plan.planner import validate as run_validation

    console = Console()
    fm = FailureModel(interruption_gpu_hours, restart_min, ckpt_fixed_s, ckpt_write_gbps, ckpt_interval_min)
    outdir = Path(plot) if plot else None
    if outdir is not None:
        outdir.mkdir(parents=True, exist_ok=True)
    if validate:
        return show_validation(run_validation(fm), as_json, outdir, console)
    usd = parse_usd(usd_per_hour) if usd_per_hour else None
    cfg = PlanConfig(
        gpus=gpus,
        gpu=gpu,
        days=days,
        model=model,
        tokens=parse_count(tokens, "--tokens") if tokens else 0.0,
        seq_len=seq_len,
        batch_tokens=parse_count(batch_tokens, "--batch-tokens"),
        mfu=mfu,
        goodput=goodput,
        calibrate=calibrate,
        experts=experts,
        top_k=top_k,
        inference_tokens=parse_count(inference_tokens, "--inference-tokens") if inference_tokens else 0.0,
        usd_per_hour=usd,
        pue=pue,
        node_overhead=node_overhead,
        failure=fm,
        hardware_file=hardware,
        recipe=recipe,
        top=top,
    )
    r = make_plan(cfg)
    if tp:
        r["layout_check"] = check_layout(cfg, tp, pp, cp, dp_shard, micro_batch, recompute)
    show_plan(r, cfg, as_json, outdir, console)


def show_validation(v: dict[str, Any], as_json: bool, outdir: Path | None, console: Console) -> None:
    from roost.plan import report

    if as_json:
        print(json.dumps(v, indent=1))
    else:
        report.print_validation(v, console)
    if outdir is not None:
        console.print(f"wrote {report.plot_validation(v, outdir / 'planner_validation.png')}")


def show_plan(r: dict[str, Any], cfg: Any, as_json: bool, outdir: Path | None, console: Console) -> None:
    from roost.plan import report

    if as_json:
        print(json.dumps(r, indent=1))
    else:
        report.print_plan(r, console)
        if "layout_check" in r:
            c = r["layout_check"]
            verdict = "[green]fits[/]" if c["fits"] else "[red]does not fit[/]"
            console.print(
                f"your layout {c['layout']}: {c['memory_gib']['total']:.1f} GiB per GPU — {verdict}; "
                f"relative throughput {c['relative_throughput']:.2f}"
            )
    if outdir is not None:
        for p in report.plot_plan(r, cfg, outdir):
            console.print(f"wrote {p}")
