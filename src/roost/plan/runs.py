"""Published training runs — params, tokens, shapes, hardware, accelerator-hours and MFU where reported, each
with its source — that the planner's MFU table is seeded from and validated against
(`roost plan --validate`; tests/plan/test_validation.py). The CSV is a verbatim copy of the team's
shared/data/published_training_runs.csv; its `source` column names the paper or model card of every number.

Tier A: hours and shapes taken from the source. Tier B: estimates (hours derived, token counts lower bounds,
access windows) — shown as bands, not asserted.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

from roost.errors import UsageError
from roost.hardware import Accelerator, accelerator
from roost.plan.compute import Shape

RUNS_CSV = Path(__file__).with_name("published_training_runs.csv")
# GPU counts the sources leave out: Llama 2 was trained on Meta's RSC/production clusters in jobs of the same
# scale as LLaMA's 2048 A100s (Touvron et al. 2023b §2.2.1); the failure model needs a count.
ASSUMED_GPUS = 2048
# Reported utilisation that counts the recomputed forward pass of full activation checkpointing (hardware FLOPs,
# 8N): BLOOM's ~150 TFLOP/s used Megatron-DeepSpeed's throughput formula with checkpoint_activations on (BLOOM
# paper §3.4). Model FLOPs utilisation = reported × 6/8.
HARDWARE_FLOPS_BASIS = {"BLOOM-176B"}


@dataclass(frozen=True)
class PublishedRun:
    name: str
    params: float
    tokens: float
    hardware: str
    gpus: int | None
    hours: float
    reported_mfu: float | None
    layers: int
    d_model: int
    seq_len: int
    tier: str
    note: str
    source: str

    @property
    def shape(self) -> Shape:
        return Shape.from_counts(self.name, self.params, self.layers, self.d_model)

    @property
    def accelerator(self) -> Accelerator:
        return accelerator(self.hardware)

    @property
    def flops(self) -> float:
        return self.shape.flops_per_token(self.seq_len) * self.tokens

    @property
    def gpus_or_assumed(self) -> int:
        return self.gpus or ASSUMED_GPUS

    @property
    def effective_mfu(self) -> float:
        """Model FLOPs over the peak FLOPs of every published accelerator-hour (steady-state MFU × goodput)."""
        return self.flops / (self.hours * 3600.0 * self.accelerator.bf16_tflops * 1e12)

    @property
    def model_flops_mfu(self) -> float | None:
        """The reported MFU on the 6N(+attention) basis (hardware-FLOP figures converted)."""
        if self.reported_mfu is None:
            return None
        return self.reported_mfu * (6 / 8 if self.name in HARDWARE_FLOPS_BASIS else 1.0)


def _num(row: dict[str, str], key: str, where: str, optional: bool = False) -> float | None:
    text = (row.get(key) or "").strip()
    if not text:
        if optional:
            return None
        raise UsageError(f"{where}: field {key!r} is empty")
    try:
        v = float(text)
    except ValueError:
        raise UsageError(f"{where}: field {key!r} is not a number: {text!r}") from None
    if not math.isfinite(v) or v <= 0:
        raise UsageError(f"{where}: field {key!r} must be a positive number, got {text!r}")
    return v


def load_runs(path: Path = RUNS_CSV) -> list[PublishedRun]:
    try:
        rows = list(csv.DictReader(path.read_text().splitlines()))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise UsageError(f"{path}: cannot read published runs ({e})") from None
    out = []
    for i, row in enumerate(rows, start=2):
        where = f"{path.name} line {i} ({row.get('run') or '?'})"
        gpus = _num(row, "gpus", where, optional=True)
        run = PublishedRun(
            name=(row.get("run") or "").strip() or f"line{i}",
            params=_num(row, "params", where) or 0.0,
            tokens=_num(row, "tokens", where) or 0.0,
            hardware=(row.get("hardware") or "").strip(),
            gpus=int(gpus) if gpus else None,
            hours=_num(row, "published_accelerator_hours", where) or 0.0,
            reported_mfu=_num(row, "reported_mfu", where, optional=True),
            layers=int(_num(row, "layers", where) or 0),
            d_model=int(_num(row, "d_model", where) or 0),
            seq_len=int(_num(row, "seq_len", where) or 0),
            tier=(row.get("tier") or "").strip().upper(),
            note=(row.get("note") or "").strip(),
            source=(row.get("source") or "").strip(),
        )
        if run.tier not in ("A", "B"):
            raise UsageError(f"{where}: tier must be A or B, got {row.get('tier')!r}")
        try:
            accelerator(run.hardware)
        except UsageError as e:
            raise UsageError(f"{where}: field 'hardware': {e}") from None
        out.append(run)
    return out
