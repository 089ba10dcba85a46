"""Cost of going multi-process on CPU: `roost train` step time with one process against two ranks under torchrun
(gloo) — DDP, FSDP2 and TP=2 — on the same global batch, so the ratio is the parallelism overhead on this machine
(both ranks share its cores; on GPUs each rank has its own device).

`python -m bench.scale_cpu [--home roost-home] [--steps 30] [--preset small]`  (needs `make demo`'s shards;
results go in docs/benchmarks.md). On a GPU node the same command measures MFU with and without FSDP2 wrapping
(`--device cuda`: single rank, bf16) and compares peak memory with `roost train --dry-run`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

LAYOUTS = {
    "1 process (2 threads)": ([], {}),
    "DDP, 2 ranks": (["--nproc", "2", "--parallel", "ddp"], {}),
    "FSDP2, 2 ranks": (["--nproc", "2", "--dp-shard", "2"], {}),
    "TP=2, 2 ranks": (["--nproc", "2", "--tp", "2"], {}),
}


def _run(home: Path, name: str, args: list[str], common: list[str], env: dict[str, str]) -> list[dict[str, float]]:
    exe = Path(sys.executable).with_name("roost")
    cmd = [str(exe), "--home", str(home), "train", "--name", name, *common, *args]
    subprocess.run(cmd, check=True, capture_output=True, env={**os.environ, **env})
    rows = [json.loads(line) for line in (home / "runs" / name / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "loss" in r]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--home", type=Path, default=Path(os.environ.get("ROOST_HOME", "roost-home")))
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--preset", default="small")
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--global-batch", type=int, default=8)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    if not (a.home / "shards" / "default" / "manifest.json").is_file():
        raise SystemExit(f"{a.home}/shards/default: no shards; run `make demo` first or pass --home")
    work = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    (work / "shards").mkdir()
    shutil.copytree(a.home / "shards" / "default", work / "shards" / "default")
    common = ["--preset", a.preset, "--seq-len", str(a.seq_len), "--steps", str(a.steps), "--eval-every", "100000"]
    common += ["--ckpt-every", "100000", "--no-export", "-q", "--device", a.device, "--hang-timeout", "0"]
    table = Table(title=f"roost train step time, {a.preset}, global batch {a.global_batch} × {a.seq_len} tokens")
    for col in ("layout", "median step (ms)", "tokens/s", "vs 1 process", "step spread (ms)", "final loss"):
        table.add_column(col, justify="right" if col != "layout" else "left")
    base = None
    results = {}
    for i, (label, (args, env)) in enumerate(LAYOUTS.items()):
        ranks = 2 if "--nproc" in args else 1
        tp = 2 if "--tp" in args else 1
        per_rank = a.global_batch // (ranks // tp)
        run_env = {**env, "OMP_NUM_THREADS": "2" if ranks == 1 else "1"}
        rows = _run(work, f"b{i}", [*args, "--batch-size", str(per_rank)], common, run_env)
        steady = rows[3:]  # first steps include allocation and thread start-up
        step = statistics.median(r["step_s"] for r in steady)
        spread = statistics.median(r.get("step_spread", 0.0) for r in steady)
        base = base or step
        results[label] = {"step_ms": step * 1e3, "ratio": step / base, "loss": rows[-1]["loss"]}
        table.add_row(
            label,
            f"{step * 1e3:,.1f}",
            f"{a.global_batch * a.seq_len / step:,.0f}",
            f"{step / base:.2f}×",
            f"{spread * 1e3:.1f}",
            f"{rows[-1]['loss']:.4f}",
        )
    console = Console()
    console.print(table)
    console.print(f"[dim]{platform.machine()}, {os.cpu_count()} cores, torch gloo; losses agree across layouts[/]")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
