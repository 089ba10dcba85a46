"""Per-step metrics of `roost train`: `runs/<name>/metrics.jsonl` and TensorBoard event files
(`tensorboard --logdir runs/<name>/tensorboard`), plus the device peak that MFU is measured against.

MFU = achieved FLOP/s ÷ peak FLOP/s, with FLOPs from `ModelConfig.flops_per_token` (6·N + 12·L·H·Dh·T).
Peaks: dense bf16 tensor-core figures for known GPUs (NVIDIA datasheets, no sparsity); for a CPU, an estimate from
the probe (`roost.probe.cpu_peak_tflops`: threads × clock × 2 × FMA lanes × FMA units, docs/model.md).
`--peak-tflops` overrides; the value used is recorded in every metrics line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from roost.hardware import match_device_name


def device_peak_tflops(device: torch.device, dtype: str = "fp32") -> tuple[float, str]:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        known = match_device_name(name)
        if known is not None:
            return known.bf16_tflops, f"{name}: {known.bf16_tflops:g} TFLOP/s dense bf16 (datasheet)"
        return 100.0, f"{name}: unknown, assumed 100 TFLOP/s"
    from roost.probe import cpu_peak_tflops

    return cpu_peak_tflops(dtype=dtype)


class MetricsLog:
    def __init__(self, run_dir: Path, resume_step: int | None = None, tensorboard: bool = True):
        self.path = run_dir / "metrics.jsonl"
        run_dir.mkdir(parents=True, exist_ok=True)
        if resume_step is not None and self.path.exists():
            # drop what a killed run logged after the checkpoint we resume from: those steps run again
            keep = [
                line
                for line in self.path.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= resume_step
            ]
            self.path.write_text("".join(line + "\n" for line in keep))
        elif resume_step is None and self.path.exists():
            self.path.unlink()
        self._f = self.path.open("a")
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(run_dir / "tensorboard"), purge_step=resume_step)
            except ImportError:  # tensorboard not installed: JSONL only
                self._tb = None

    def log(self, row: dict[str, Any]) -> None:
        self._f.write(json.dumps(row) + "\n")
        self._f.flush()
        if self._tb is not None:
            for k, v in row.items():
                if isinstance(v, int | float) and k != "step":
                    self._tb.add_scalar(k, v, row["step"])

    def close(self) -> None:
        self._f.close()
        if self._tb is not None:
            self._tb.close()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def plot_losses(metrics: Path, out: Path, title: str) -> Path | None:
    """Train (and validation) loss against step as a PNG; None when there is nothing to plot."""
    rows = read_metrics(metrics)
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    train = [r for r in rows if "loss" in r]
    ax.plot([r["step"] for r in train], [r["loss"] for r in train], label="train loss", lw=1.2)
    val = [(r["step"], r["val_loss"]) for r in rows if "val_loss" in r]
    if val:
        ax.plot(*zip(*val, strict=True), "o-", label="val loss", lw=1.5)
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


class NoLog:
    """Ranks other than 0 log nothing (rank 0 logs the job's aggregated figures)."""

    def log(self, row: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


def rss_peak_gb() -> float:
    try:
        kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
        return kb / 2**20
    except (OSError, StopIteration):
        return 0.0
