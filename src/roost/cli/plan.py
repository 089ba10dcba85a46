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
from typing import Any

from rich.console import Console

from roost.cli.app import declare, option

# the flags, in the order --help lists them (one declaration each)
PLAN_OPTIONS = [
    option("gpus", int, 0, "--gpus", help="Accelerators in the fleet."),
    option("gpu", str, "h100", "--gpu", help="Accelerator: h100-sxm, h200, b200, a100, tpu-v5p, ..."),
    option("days", float, 0.0, "--days", help="Budget: wall-clock days on the fleet."),
    option("model", str, "", "--model", help="Preset to plan (default: llama3-8b/70b/405b)."),
    option("tokens", str, "", "--tokens", help="Training tokens: 15T, 1.5e12, 300B."),
    option("seq_len", int, 8192, "--seq-len"),
    option("batch_tokens", str, "16M", "--batch-tokens", help="Global batch in tokens."),
    option("mfu", float, 0.0, "--mfu", help="Use this MFU instead of the table."),
    option("goodput", float, 0.0, "--goodput", help="Use this goodput instead of the failure model."),
    option("calibrate", str, "", "--calibrate", help="Take the MFU measured by a roost run: runs/NAME/metrics.jsonl."),
    option("experts", int, 1, "--experts", help="Mixture of experts: experts per layer."),
    option("top_k", int, 1, "--top-k", help="Mixture of experts: experts per token."),
    option(
        "inference_tokens", str, "", "--inference-tokens", help="Expected lifetime inference tokens (over-training)."
    ),
    option("usd_per_hour", str, "", "--usd-per-hour", help="Price range LOW,HIGH per GPU-hour."),
    option("pue", float, 1.2, "--pue"),
    option("node_overhead", float, 1.5, "--node-overhead", help="Node watts per GPU watt."),
    option(
        "interruption_gpu_hours", float, 50_000.0, "--interruption-gpu-hours", help="GPU-hours between interruptions."
    ),
    option("restart_min", float, 10.0, "--restart-min"),
    option("ckpt_fixed_s", float, 20.0, "--ckpt-fixed-s", help="Blocking cost of a checkpoint."),
    option("ckpt_write_gbps", float, 0.5, "--ckpt-write-gbps", help="Storage write GB/s per GPU for checkpoints."),
    option("ckpt_interval_min", float, 0.0, "--ckpt-interval-min", help="0: Young's optimum."),
    option("hardware", str, "", "--hardware", help="Extra hardware catalogue (TOML)."),
    option("tp", int, 0, "--tp", help="Check this layout: tensor parallel."),
    option("pp", int, 1, "--pp", help="Check this layout: pipeline stages."),
    option("cp", int, 1, "--cp", help="Check this layout: context parallel."),
    option("dp_shard", int, 0, "--dp-shard", help="Check this layout: FSDP group (0: all)."),
    option("micro_batch", int, 1, "--micro-batch"),
    option("recompute", str, "none", "--recompute", help="none | selective | full"),
    option("recipe", str, "adamw", "--recipe", help="Bytes/param: adamw (16), adamw-bf16-grads (14), megatron (18)."),
    option("top", int, 3, "--top", help="Layouts to show per model."),
    option("as_json", bool, False, "--json", help="Print the plan as JSON."),
    option("plot", str, "", "--plot", help="Write PNG charts into this directory."),
    option("validate", bool, False, "--validate", help="Predict the published runs and compare."),
]


@declare(PLAN_OPTIONS)
def plan(**o: Any) -> None:
    """Plan a training run on a fleet: compute-optimal size, days, layouts that fit, energy and cost."""
    from roost.plan.compute import parse_count
    from roost.plan.goodput import FailureModel
    from roost.plan.planner import PlanConfig, check_layout, parse_usd
    from roost.plan.planner import plan as make_plan
    from roost.plan.planner import validate as run_validation

    console = Console()
    fm = FailureModel(
        o["interruption_gpu_hours"], o["restart_min"], o["ckpt_fixed_s"], o["ckpt_write_gbps"], o["ckpt_interval_min"]
    )
    outdir = Path(o["plot"]) if o["plot"] else None
    if outdir is not None:
        outdir.mkdir(parents=True, exist_ok=True)
    if o["validate"]:
        return show_validation(run_validation(fm), o["as_json"], outdir, console)
    usd = parse_usd(o["usd_per_hour"]) if o["usd_per_hour"] else None
    cfg = PlanConfig(
        gpus=o["gpus"],
        gpu=o["gpu"],
        days=o["days"],
        model=o["model"],
        tokens=parse_count(o["tokens"], "--tokens") if o["tokens"] else 0.0,
        seq_len=o["seq_len"],
        batch_tokens=parse_count(o["batch_tokens"], "--batch-tokens"),
        mfu=o["mfu"],
        goodput=o["goodput"],
        calibrate=o["calibrate"],
        experts=o["experts"],
        top_k=o["top_k"],
        inference_tokens=parse_count(o["inference_tokens"], "--inference-tokens") if o["inference_tokens"] else 0.0,
        usd_per_hour=usd,
        pue=o["pue"],
        node_overhead=o["node_overhead"],
        failure=fm,
        hardware_file=o["hardware"],
        recipe=o["recipe"],
        top=o["top"],
    )
    r = make_plan(cfg)
    if o["tp"]:
        r["layout_check"] = check_layout(
            cfg, o["tp"], o["pp"], o["cp"], o["dp_shard"], o["micro_batch"], o["recompute"]
        )
    show_plan(r, cfg, o["as_json"], outdir, console)


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
