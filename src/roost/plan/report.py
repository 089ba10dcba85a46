"""Rich tables and PNG charts of a plan and of the validation: `roost plan ... --plot DIR`, `roost plan
--validate --plot docs/`.

Charts: loss vs compute (the Chinchilla frontier, the budget and the presets on it), days vs GPU count (with
and without the goodput the failure model predicts), predicted vs published accelerator-hours.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from roost.plan import compute


def _sci(x: float) -> str:
    for unit, v in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= v:
            return f"{x / v:,.3g}{unit}"
    return f"{x:,.3g}"


def _usd(lo_hi: list[float]) -> str:
    return f"${_sci(lo_hi[0])}–{_sci(lo_hi[1])}"


def print_plan(r: dict[str, Any], console: Console) -> None:
    head = f"[bold]{r['gpus']:,} × {r['gpu']}[/] ({r['peak_bf16_tflops']:g} TFLOP/s bf16 dense), seq {r['seq_len']}"
    if "days" in r:
        head += f", {r['days']:g} days: ≈{r['allocation']['budget_flops']:.3g} FLOPs after MFU and goodput"
    console.print(head)
    if "allocation" in r:
        t = Table(title="compute-optimal allocation for this budget")
        for c in ("rule", "parameters", "tokens", "tokens/param", "loss*"):
            t.add_column(c, justify="right" if c != "rule" else "left")
        names = {
            "epoch_chinchilla": "Chinchilla (Epoch AI refit)",
            "tokens_per_param_20": "20 tokens per parameter",
            "inference_aware": "inference-aware (over-trained)",
        }
        for k, v in r["allocation"].items():
            if isinstance(v, dict):
                row = [_sci(v["params"]), _sci(v["tokens"]), f"{v['tokens'] / v['params']:.0f}", f"{v['loss']:.3f}"]
                t.add_row(names[k], *row)
        console.print(t)
    budget = "days_for_20_tokens_per_param" in r["models"][0]
    if budget:
        t = Table(title=f"what {r['days']:g} days buy")
        cols = ["model", "params", "tokens", "tok/param", "loss*", "days @20 tok/p", "MFU", "goodput"]
    else:
        t = Table(title="the job")
        cols = ["model", "params", "tokens", "days", "GPU-hours", "MFU", "goodput", "MWh", "cost"]
    for c in cols:
        t.add_column(c, justify="left" if c == "model" else "right", no_wrap=c in ("model", "cost"))
    for j in r["models"]:
        params = _sci(j["total_params"])
        if j["model"].endswith("moe"):
            params += f" ({_sci(j['active_params'])} active)"
        eff = [f"{j['mfu']:.2f}", f"{j['goodput']['fraction']:.2f}"]
        if budget:
            row = [_sci(j["tokens"]), f"{j['tokens_per_param']:.0f}", f"{j['predicted_loss']:.3f}"]
            row += [f"{j['days_for_20_tokens_per_param']:.1f}", *eff]
        else:
            row = [_sci(j["tokens"]), f"{j['days']:.1f}", _sci(j["gpu_hours"]), *eff]
            row += [f"{j['energy_mwh']:,.0f}", _usd(j["cost_usd"])]
        t.add_row(j["model"], params, *row)
    console.print(t)
    for j in r["models"]:
        console.print(f"[dim]{j['model']}: MFU from {j['mfu_basis']}[/]")
        g = j["goodput"]
        if g.get("basis") == "failure model":
            console.print(
                f"[dim]  goodput: an interruption every {g['mtbf_h']:.1f} h ({g['interruptions_per_day']:.1f}/day), "
                f"checkpoint every {g['interval_min']:.0f} min ({g['write_s']:.0f} s to write): "
                f"{100 * g['lost_failures']:.1f}% lost to failures, {100 * g['lost_checkpointing']:.1f}% to checkpoints[/]"
            )
        if j["layouts"]:
            lt = Table(title=f"{j['model']}: best layouts that fit (of {r['gpus']:,} GPUs)")
            for c in ("layout", "relative throughput", "memory GiB/GPU", "params+grads+optim", "activations"):
                lt.add_column(c, justify="left" if c == "layout" else "right")
            for c in j["layouts"]:
                m = c["memory_gib"]
                lt.add_row(
                    c["layout"],
                    f"{c['relative_throughput']:.2f}",
                    f"{m['total']:.1f}",
                    f"{m['parameters'] + m['gradients'] + m['optimizer']:.1f}",
                    f"{m['activations'] + m['recompute']:.1f}",
                )
            console.print(lt)
        else:
            console.print(f"[red]{j['model']}: no layout fits on {r['gpus']:,} × {r['gpu']} at this batch size[/]")
    if "energy_mwh" in r:
        console.print(
            f"whole budget: {r['energy_mwh']:,.0f} MWh, {_usd(r['cost_usd'])} at ${r['usd_per_gpu_hour'][0]:g}–{r['usd_per_gpu_hour'][1]:g}/GPU-hour"
        )
    for c in r["caveats"]:
        console.print(f"[dim]* {c}[/]")


def _band(x: dict[str, Any]) -> str:
    e = f"{100 * x['error_planner']:+.0f}%"
    if x["tier"] == "B":  # estimates: the range of the MFU group, not a point
        lo, hi = (100 * (h / x["published_hours"] - 1) for h in x["hours_band"])
        e += f" (band {lo:+.0f}…{hi:+.0f}%)"
    return e


def print_validation(v: dict[str, Any], console: Console) -> None:
    t = Table(title="predicted vs published accelerator-hours")
    for c in ("run", "tier", "hardware", "published", "pub. MFU", "± with pub. MFU", "planner MFU", "± planner (LOO)"):
        t.add_column(c, justify="left" if c in ("run", "hardware") else "right")
    for x in v["runs"]:
        pub = f"{x['published_mfu']:.3f}" if "published_mfu" in x else ""
        e_pub = f"{100 * x['error_published_mfu']:+.0f}%" if "error_published_mfu" in x else ""
        t.add_row(
            x["run"], x["tier"], x["hardware"], _sci(x["published_hours"]), pub, e_pub,
            f"{x['planner_mfu']:.3f}", _band(x),
        )  # fmt: skip
    console.print(t)
    console.print(
        f"Tier A, leave-one-out: median |error| {100 * v['tier_a_median_abs_error']:.1f}%, worst ratio "
        f"×{v['tier_a_worst_ratio']:.2f}; within ±10% with the published MFU: "
        f"{', '.join(v['tier_a_within_published_mfu_10pct'])}"
    )


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_frontier(r: dict[str, Any], path: Path) -> Path:
    plt = _plt()
    import numpy as np

    budget = r["allocation"]["budget_flops"]
    cs = np.logspace(np.log10(budget) - 4, np.log10(budget) + 2, 60)
    frontier = [compute.chinchilla_loss(*compute.compute_optimal(c)) for c in cs]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    ax.plot(cs, frontier, label="compute-optimal (Epoch AI refit)")
    for j in r["models"]:
        ax.scatter([j["flops"]], [j["predicted_loss"]], zorder=3)
        ax.annotate(
            j["model"], (j["flops"], j["predicted_loss"]), textcoords="offset points", xytext=(4, 4), fontsize=8
        )
    ax.axvline(budget, color="grey", ls="--", label=f"budget {budget:.2g} FLOPs")
    ax.set_xscale("log")
    ax.set_xlabel("training FLOPs")
    ax.set_ylabel("predicted loss (nats, MassiveText; relative only)")
    ax.set_title(f"{r['gpus']:,} × {r['gpu']}, {r.get('days', 0):g} days")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_scaling(rows: list[dict[str, float]], title: str, path: Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    g = [x["gpus"] for x in rows]
    ax.plot(g, [x["ideal_days"] for x in rows], ls="--", label="perfect scaling")
    ax.plot(g, [x["days"] for x in rows], marker="o", label="with goodput (failures + checkpoints)")
    ax2 = ax.twinx()
    ax2.plot(g, [x["goodput"] for x in rows], color="grey", alpha=0.5, label="goodput")
    ax2.set_ylabel("goodput")
    ax2.set_ylim(0, 1.05)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("GPUs")
    ax.set_ylabel("days")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_validation(v: dict[str, Any], path: Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 5), dpi=110)
    pub = [x["published_hours"] for x in v["runs"]]
    lo, hi = min(pub) / 2, max(pub) * 2
    ax.plot([lo, hi], [lo, hi], color="black", lw=0.8, label="exact")
    ax.fill_between([lo, hi], [lo / 1.5, hi / 1.5], [lo * 1.5, hi * 1.5], color="grey", alpha=0.15, label="×1.5")
    for tier, marker in (("A", "o"), ("B", "s")):
        xs = [x for x in v["runs"] if x["tier"] == tier]
        if tier == "B":
            for x in xs:
                ax.plot([x["published_hours"]] * 2, x["hours_band"], color="tab:orange", alpha=0.6)
        ax.scatter(
            [x["published_hours"] for x in xs], [x["hours_planner"] for x in xs], marker=marker,
            label=f"Tier {tier}: planner MFU (leave-one-out)" + (" with band" if tier == "B" else ""),
        )  # fmt: skip
    withpub = [x for x in v["runs"] if "hours_with_published_mfu" in x]
    ax.scatter(
        [x["published_hours"] for x in withpub], [x["hours_with_published_mfu"] for x in withpub], marker="x",
        color="tab:red", label="with the published MFU",
    )  # fmt: skip
    for x in v["runs"]:
        ax.annotate(
            x["run"], (x["published_hours"], x["hours_planner"]), fontsize=6, xytext=(3, -3), textcoords="offset points"
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("published accelerator-hours")
    ax.set_ylabel("predicted accelerator-hours")
    ax.set_title("roost plan vs published training runs")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_plan(r: dict[str, Any], cfg: Any, outdir: Path) -> list[Path]:
    """`roost plan --plot DIR`: the frontier (when the plan allocated a budget) and time against fleet size."""
    from roost.plan.planner import DEFAULT_PRESETS, time_vs_gpus

    written = []
    if "allocation" in r:
        written.append(plot_frontier(r, outdir / "plan_frontier.png"))
    j = r["models"][-1]
    counts = sorted({max(1, int(cfg.gpus * f)) for f in (1 / 16, 1 / 8, 1 / 4, 1 / 2, 1, 2, 4, 8, 16)})
    rows = time_vs_gpus(cfg, cfg.model or DEFAULT_PRESETS[-1], j["tokens"], counts)
    title = f"{j['model']} on {j['tokens'] / 1e12:.3g}T tokens, {r['gpu']}"
    written.append(plot_scaling(rows, title, outdir / "plan_scaling.png"))
    return written
