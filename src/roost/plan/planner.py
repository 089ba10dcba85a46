"""`roost plan`: a plan from a budget (GPUs × days) or a job (model × tokens), and the validation against
published runs. Pure Python over roost.hardware and the model presets.

    roost plan --gpus 10000 --gpu h100-sxm --days 30
    roost plan --model llama3-70b --tokens 15T --gpus 10000 --json
    roost plan --validate

time = FLOPs / (GPUs × peak × MFU × goodput); MFU from the table in roost.plan.mfu (or --mfu / --calibrate),
goodput from roost.plan.goodput (or --goodput).
"""

from __future__ import annotations

import dataclasses
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from roost.errors import UsageError
from roost.hardware import Accelerator, accelerator
from roost.model.budget import RECIPES
from roost.model.config import load_preset
from roost.plan import compute
from roost.plan.compute import Shape
from roost.plan.goodput import FailureModel, goodput
from roost.plan.layouts import Candidate, SearchConfig, search
from roost.plan.mfu import MfuEstimate, calibrate, lookup, seeds_from_runs
from roost.plan.runs import load_runs

DEFAULT_PRESETS = ("llama3-8b", "llama3-70b", "llama3-405b")
MAX_GPUS = 10_000_000
MAX_DAYS = 3650


@dataclass
class PlanConfig:
    gpus: int = 0
    gpu: str = "h100"
    days: float = 0.0
    model: str = ""  # a preset name; empty → the 8B/70B/405B presets
    tokens: float = 0.0
    seq_len: int = 8192
    batch_tokens: float = 16 * 2**20
    mfu: float = 0.0  # 0 → the table
    goodput: float = 0.0  # 0 → the failure model
    calibrate: str = ""  # runs/<name>/metrics.jsonl
    experts: int = 1
    top_k: int = 1
    inference_tokens: float = 0.0
    usd_per_hour: tuple[float, float] | None = None
    pue: float = 1.2
    node_overhead: float = 1.5
    failure: FailureModel = field(default_factory=FailureModel)
    hardware_file: str = ""
    recipe: str = "adamw"
    top: int = 3

    def __post_init__(self) -> None:
        if not 1 <= self.gpus <= MAX_GPUS:
            raise UsageError(f"--gpus must be between 1 and {MAX_GPUS:,}, got {self.gpus}")
        if not 0 <= self.days <= MAX_DAYS:
            raise UsageError(f"--days must be > 0 and at most {MAX_DAYS} (ten years), got {self.days:g}")
        if self.tokens < 0 or self.tokens > 1e16:
            raise UsageError(f"--tokens must be > 0 and at most 1e16, got {self.tokens:g}")
        if not 0 <= self.mfu <= 1 or not 0 <= self.goodput <= 1:
            raise UsageError("--mfu and --goodput are fractions in (0, 1]")
        if self.seq_len < 1 or self.batch_tokens < self.seq_len:
            raise UsageError(f"--batch-tokens ({self.batch_tokens:g}) must hold one --seq-len ({self.seq_len})")
        if self.recipe not in RECIPES:
            raise UsageError(f"--recipe must be one of {sorted(RECIPES)}, got {self.recipe!r}")
        if self.pue < 1 or self.node_overhead < 1:
            raise UsageError("--pue and --node-overhead are >= 1")
        if not self.days and not self.tokens:
            raise UsageError("give a budget (--days) or a job (--model NAME --tokens 15T)")
        if self.tokens and not self.model:
            raise UsageError("--tokens needs --model (a preset: roost plan --model llama3-70b --tokens 15T)")
        if self.usd_per_hour is not None and not 0 <= self.usd_per_hour[0] <= self.usd_per_hour[1]:
            raise UsageError("--usd-per-hour LOW HIGH: need 0 <= LOW <= HIGH")


class Planner:
    def __init__(self, cfg: PlanConfig) -> None:
        self.cfg = cfg
        self.acc: Accelerator = accelerator(cfg.gpu, Path(cfg.hardware_file) if cfg.hardware_file else None)
        self.seeds = seeds_from_runs(load_runs(), cfg.failure)
        self.calibrated: tuple[float, str] | None = calibrate(Path(cfg.calibrate)) if cfg.calibrate else None

    def mfu(self, params: float) -> MfuEstimate:
        if self.cfg.mfu:
            return MfuEstimate(self.cfg.mfu, "--mfu", 1, self.cfg.mfu, self.cfg.mfu)
        if self.calibrated:
            v, note = self.calibrated
            return MfuEstimate(v, f"--calibrate: {note}", 1, v, v)
        return lookup(self.acc.name, params, self.seeds)

    def goodput(self, params: float) -> dict[str, Any]:
        if self.cfg.goodput:
            return {"fraction": self.cfg.goodput, "basis": "--goodput"}
        g = goodput(self.cfg.gpus, params, self.cfg.failure)
        return {**g.__dict__, "basis": "failure model"}

    def usd(self) -> tuple[float, float]:
        return self.cfg.usd_per_hour or self.acc.usd_per_hour

    def job(self, shape: Shape, tokens: float) -> dict[str, Any]:
        """Days, GPU-hours, energy and cost of training `shape` on `tokens` on this fleet."""
        c = self.cfg
        m, g = self.mfu(shape.active_params), self.goodput(shape.total_params)
        flops = compute.training_flops(shape, tokens, c.seq_len)
        seconds = flops / self.flops_per_second(shape.active_params, shape.total_params)
        hours = seconds / 3600
        gpu_hours = hours * c.gpus
        lo, hi = compute.cost_usd(gpu_hours, self.usd())
        return {
            "model": shape.name,
            "total_params": shape.total_params,
            "active_params": shape.active_params,
            "tokens": tokens,
            "tokens_per_param": tokens / shape.total_params,
            "flops": flops,
            "flops_per_token": shape.flops_per_token(c.seq_len),
            "mfu": m.mfu,
            "mfu_basis": f"{m.basis} (n={m.n}, range {m.low:.2f}–{m.high:.2f})",
            "goodput": g,
            "days": hours / 24,
            "gpu_hours": gpu_hours,
            "energy_mwh": compute.energy_kwh(c.gpus, hours, self.acc.power_w, c.node_overhead, c.pue) / 1000,
            "cost_usd": [lo, hi],
            "predicted_loss": compute.chinchilla_loss(shape.total_params, tokens),
        }

    def layouts(self, shape: Shape) -> list[dict[str, Any]]:
        c = self.cfg
        sc = SearchConfig(gpus=c.gpus, seq_len=c.seq_len, batch_tokens=c.batch_tokens, recipe=c.recipe)
        found = search(shape, self.acc, sc)
        return [candidate_json(c) for c in found if c.fits][: self.cfg.top]

    def flops_per_second(self, active: float, total: float | None = None) -> float:
        """Model FLOP/s of the whole fleet for a model of this size: GPUs × peak × MFU (by active parameters) ×
        goodput (by total parameters, which set the checkpoint size)."""
        rate = self.cfg.gpus * self.acc.bf16_tflops * 1e12 * self.mfu(active).mfu
        return rate * self.goodput(total or active)["fraction"]

    def budget_flops(self, active: float, total: float | None = None) -> float:
        """Model FLOPs the fleet does in --days for a model of this size."""
        return self.flops_per_second(active, total) * self.cfg.days * 86400

    def allocation(self) -> dict[str, Any]:
        """Compute-optimal N and D for the budget; MFU and goodput depend on N, so iterate to a fixed point."""
        n = 70e9
        for _ in range(5):
            flops = self.budget_flops(n)
            n, d = compute.compute_optimal(flops)
        n20, d20 = compute.rule_of_20(flops)
        out = {
            "budget_flops": flops,
            "epoch_chinchilla": {"params": n, "tokens": d, "loss": compute.chinchilla_loss(n, d)},
            "tokens_per_param_20": {"params": n20, "tokens": d20, "loss": compute.chinchilla_loss(n20, d20)},
        }
        if self.cfg.inference_tokens:
            ni, di = compute.inference_aware(flops, self.cfg.inference_tokens)
            out["inference_aware"] = {
                "params": ni,
                "tokens": di,
                "loss": compute.chinchilla_loss(ni, di),
                "inference_tokens": self.cfg.inference_tokens,
            }
        return out


def candidate_json(c: Candidate) -> dict[str, Any]:
    lay = c.layout
    return {
        "layout": c.describe(),
        "mesh": {k: getattr(lay, k) for k in ("dp_replicate", "dp_shard", "tp", "pp", "cp")},
        "micro_batch": lay.micro_batch,
        "recompute": lay.recompute,
        "grad_accum_or_microbatches": c.grad_accum,
        "memory_gib": {k: v / 2**30 for k, v in c.memory.items()},
        "relative_throughput": c.efficiency,
        "factors": c.factors,
    }


def shape_for(name: str, experts: int = 1, top_k: int = 1) -> Shape:
    return Shape.from_config(load_preset(name), experts, top_k)


def plan(cfg: PlanConfig) -> dict[str, Any]:
    p = Planner(cfg)
    out: dict[str, Any] = {
        "gpus": cfg.gpus,
        "gpu": p.acc.name,
        "peak_bf16_tflops": p.acc.bf16_tflops,
        "seq_len": cfg.seq_len,
        "usd_per_gpu_hour": list(p.usd()),
    }
    names = [cfg.model] if cfg.model else list(DEFAULT_PRESETS)
    shapes = [shape_for(n, cfg.experts, cfg.top_k) for n in names]
    for s in shapes:
        if s.cfg is not None and cfg.seq_len > s.cfg.max_seq_len:
            raise UsageError(f"--seq-len {cfg.seq_len} is longer than {s.name}'s max_seq_len {s.cfg.max_seq_len}")
    if cfg.days:
        out["days"] = cfg.days
        out["allocation"] = p.allocation()
        jobs = []
        for s in shapes:
            budget = p.budget_flops(s.active_params, s.total_params)
            tokens = budget / s.flops_per_token(cfg.seq_len)
            j = p.job(s, tokens)
            j["days_for_20_tokens_per_param"] = p.job(s, 20 * s.total_params)["days"]
            j["layouts"] = p.layouts(s)
            jobs.append(j)
        out["models"] = jobs
        hours = cfg.days * 24
        out["energy_mwh"] = compute.energy_kwh(cfg.gpus, hours, p.acc.power_w, cfg.node_overhead, cfg.pue) / 1000
        out["cost_usd"] = list(compute.cost_usd(cfg.gpus * hours, p.usd()))
    else:
        j = p.job(shapes[0], cfg.tokens)
        j["layouts"] = p.layouts(shapes[0])
        out["models"] = [j]
    out["caveats"] = [
        "Predicted loss is Chinchilla's fit on MassiveText (nats/token); it does not transfer to another corpus or "
        "tokenizer — compare model sizes and token ratios, not the number.",
        "MFU is the median of published runs on the same hardware and size class; measure yours with "
        "`roost plan --calibrate runs/<name>/metrics.jsonl`.",
    ]
    return out


def time_vs_gpus(cfg: PlanConfig, model: str, tokens: float, counts: list[int]) -> list[dict[str, float]]:
    """Days to train `model` on `tokens` as the fleet grows (goodput falls as failures become more frequent)."""
    rows = []
    p = Planner(dataclasses.replace(cfg, days=0.0, model=model, tokens=tokens))  # seeds and calibration read once
    shape = shape_for(model, cfg.experts, cfg.top_k)
    for g in counts:
        p.cfg = dataclasses.replace(p.cfg, gpus=g)
        j = p.job(shape, tokens)
        rows.append({"gpus": g, "days": j["days"], "goodput": j["goodput"]["fraction"], "ideal_days": 0.0})
    base = rows[0]["days"] * rows[0]["goodput"] * rows[0]["gpus"]
    for r in rows:
        r["ideal_days"] = base / r["gpus"]
    return rows


def validate(fm: FailureModel | None = None, path: Path | None = None) -> dict[str, Any]:
    """Predict every published run's accelerator-hours: (a) with its published MFU and the failure model's
    goodput, (b) with the planner's own MFU table, leave-one-out (the run is not in the table that predicts it)."""
    runs = load_runs(path) if path else load_runs()
    rows = []
    for r in runs:
        acc = r.accelerator
        peak_s = acc.bf16_tflops * 1e12 * 3600
        g = goodput(r.gpus_or_assumed, r.params, fm).fraction
        row: dict[str, Any] = {
            "run": r.name,
            "tier": r.tier,
            "hardware": acc.name,
            "gpus": r.gpus,
            "published_hours": r.hours,
            "effective_mfu": r.effective_mfu,
            "goodput": g,
            "source": r.source,
        }
        if r.model_flops_mfu:
            row["published_mfu"] = r.model_flops_mfu
            row["hours_with_published_mfu"] = r.flops / (peak_s * r.model_flops_mfu * g)
            row["error_published_mfu"] = row["hours_with_published_mfu"] / r.hours - 1
        est = lookup(acc.name, r.params, seeds_from_runs(runs, fm, exclude=[r.name]))
        row["planner_mfu"] = est.mfu
        row["planner_basis"] = est.basis
        row["hours_planner"] = r.flops / (peak_s * est.mfu * g)
        row["hours_band"] = [r.flops / (peak_s * est.high * g), r.flops / (peak_s * est.low * g)]
        row["error_planner"] = row["hours_planner"] / r.hours - 1
        rows.append(row)
    tier_a = [x for x in rows if x["tier"] == "A"]
    errs = [abs(x["error_planner"]) for x in tier_a]
    ratios = [max(x["hours_planner"] / x["published_hours"], x["published_hours"] / x["hours_planner"]) for x in tier_a]
    return {
        "runs": rows,
        "tier_a_median_abs_error": statistics.median(errs),
        "tier_a_worst_ratio": max(ratios),
        "tier_a_within_published_mfu_10pct": [x["run"] for x in tier_a if abs(x.get("error_published_mfu", 1)) <= 0.10],
    }


def check_layout(cfg: PlanConfig, tp: int, pp: int, cp: int, dp_shard: int, mb: int, recompute: str) -> dict[str, Any]:
    """One layout the user gives (`roost plan --tp/--pp/--cp/--dp-shard`): its memory per GPU, throughput, fit."""
    from roost.hardware import accelerator
    from roost.model.budget import OVERHEAD_GIB, RECIPES, Layout
    from roost.plan.layouts import fixed_layout

    if not cfg.model:
        raise UsageError("--tp/--pp/--cp/--dp-shard check one layout of one model: add --model NAME")
    cells = tp * pp * cp
    if tp < 1 or pp < 1 or cp < 1 or mb < 1 or cfg.gpus % cells:
        raise UsageError(f"--gpus {cfg.gpus} is not divisible by tp·pp·cp = {tp}·{pp}·{cp}; each must be >= 1")
    dp = cfg.gpus // cells
    shard = dp_shard or dp
    if dp % shard:
        raise UsageError(f"--dp-shard {shard} does not divide the {dp} data-parallel ranks")
    pb, gb, ob = RECIPES[cfg.recipe]  # PlanConfig checked the name
    lay = Layout(
        dp // shard, shard, tp, pp, cp, "fsdp", cfg.seq_len, mb, 2, recompute, "chunked", pb, gb, ob, OVERHEAD_GIB
    )
    acc = accelerator(cfg.gpu, Path(cfg.hardware_file) if cfg.hardware_file else None)
    c = fixed_layout(shape_for(cfg.model, cfg.experts, cfg.top_k), acc, lay, cfg.batch_tokens)
    return {**candidate_json(c), "fits": c.fits}


def parse_usd(text: str) -> tuple[float, float]:
    """`--usd-per-hour LOW,HIGH` → (low, high)."""
    try:
        lo, hi = (float(x) for x in text.split(","))
    except ValueError:
        raise UsageError(f"--usd-per-hour LOW,HIGH (e.g. 2,4), got {text!r}") from None
    return lo, hi
