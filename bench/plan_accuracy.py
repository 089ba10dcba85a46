"""Accuracy of `roost plan` against published training runs, next to the back-of-envelope a capacity team would
otherwise use: hours = 6·N·D / (GPUs × peak × 40 % MFU), no attention term, no failures ("transformer math"
rule of thumb). Both predict every Tier A run's accelerator-hours; roost's MFU table is leave-one-out.

`python -m bench.plan_accuracy [--mfu 0.4]`  (results go in docs/benchmarks.md). Also times the layout search.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

from rich.console import Console
from rich.table import Table

from roost.hardware import accelerator
from roost.model.config import load_preset
from roost.plan.compute import Shape
from roost.plan.layouts import SearchConfig, search
from roost.plan.planner import validate
from roost.plan.runs import load_runs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mfu", type=float, default=0.4, help="the rule of thumb's MFU")
    args = ap.parse_args()
    runs = {r.name: r for r in load_runs()}
    v = validate()
    t = Table(title=f"Tier A accelerator-hours: roost plan vs 6ND at {args.mfu:.0%} MFU ({platform.node()})")
    for c in ("run", "published", "roost (LOO)", "error", "rule of thumb", "error"):
        t.add_column(c, justify="left" if c == "run" else "right")
    ours, peer = [], []
    for x in v["runs"]:
        if x["tier"] != "A":
            continue
        r = runs[x["run"]]
        thumb = 6 * r.params * r.tokens / (accelerator(r.hardware).bf16_tflops * 1e12 * args.mfu) / 3600
        e_ours, e_peer = x["hours_planner"] / r.hours - 1, thumb / r.hours - 1
        ours.append(e_ours)
        peer.append(e_peer)
        t.add_row(
            r.name, f"{r.hours:,.0f}", f"{x['hours_planner']:,.0f}", f"{e_ours:+.0%}", f"{thumb:,.0f}", f"{e_peer:+.0%}"
        )
    Console().print(t)

    def worst(errs: list[float]) -> float:
        return max(max(1 + e, 1 / (1 + e)) for e in errs)

    s = Table(title="summary (Tier A)")
    for c in ("metric", "rule of thumb", "roost plan", "ratio (peer / roost)"):
        s.add_column(c, justify="left" if c == "metric" else "right")
    med_o, med_p = statistics.median(abs(e) for e in ours), statistics.median(abs(e) for e in peer)
    s.add_row("median |error|", f"{med_p:.1%}", f"{med_o:.1%}", f"{med_p / med_o:.2f}×")
    s.add_row("worst ratio", f"×{worst(peer):.2f}", f"×{worst(ours):.2f}", f"{worst(peer) / worst(ours):.2f}×")
    s.add_row("runs within ×1.5", f"{sum(1 / 1.5 <= 1 + e <= 1.5 for e in peer)}/{len(peer)}",
              f"{sum(1 / 1.5 <= 1 + e <= 1.5 for e in ours)}/{len(ours)}", "")  # fmt: skip
    Console().print(s)
    shape, acc = Shape.from_config(load_preset("llama3-405b")), accelerator("h100")
    t0 = time.perf_counter()
    found = search(shape, acc, SearchConfig(gpus=16384))
    dt = time.perf_counter() - t0
    Console().print(f"layout search, llama3-405b on 16,384 H100: {len(found)} layouts in {dt * 1000:.0f} ms")


if __name__ == "__main__":
    main()
