"""Model FLOPs utilisation by (hardware, model size class): the table `roost plan` predicts time from, seeded
from published runs, overridable with `--mfu` or calibrated from a real roost run (`--calibrate`).

    from roost.plan.mfu import lookup, seeds_from_runs
    lookup("H100", 70e9, seeds_from_runs(load_runs()))   # → MfuEstimate(mfu=…, basis='H100, 20-100B', …)

Seeds are steady-state MFU: a run's model FLOPs over the peak FLOPs of its published accelerator-hours, divided
by the goodput the failure model predicts for it — so each team's unmodelled overheads (evaluation, loss-spike
rollbacks, slow nodes) stay in the number, which is what a capacity plan wants. A prediction is the median of
the most specific group with data: same accelerator and size class → same accelerator → same family (A100
40/80 GB, TPU v3/v4) and size class → same family → same size class → all. `exclude` drops runs, which is how
the leave-one-out validation keeps a run out of its own prediction.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from roost.errors import UsageError
from roost.plan.goodput import FailureModel, goodput
from roost.plan.runs import PublishedRun

SIZE_CLASSES = ((20e9, "<20B"), (100e9, "20-100B"), (float("inf"), ">=100B"))


def size_class(params: float) -> str:
    return next(name for bound, name in SIZE_CLASSES if params < bound)


def family(hardware: str) -> str:
    return hardware.split("-")[0].upper()


@dataclass(frozen=True)
class Seed:
    name: str
    hardware: str  # catalogue name
    params: float
    mfu: float


@dataclass(frozen=True)
class MfuEstimate:
    mfu: float
    basis: str  # which group it came from
    n: int  # seeds in that group
    low: float
    high: float


def seeds_from_runs(
    runs: Iterable[PublishedRun], fm: FailureModel | None = None, exclude: Iterable[str] = (), tiers: str = "A"
) -> list[Seed]:
    skip = set(exclude)
    out = []
    for r in runs:
        if r.name in skip or r.tier not in tiers:
            continue
        g = goodput(r.gpus_or_assumed, r.params, fm).fraction
        out.append(Seed(r.name, r.accelerator.name, r.params, r.effective_mfu / g))
    return out


def lookup(hardware: str, params: float, seeds: list[Seed]) -> MfuEstimate:
    if not seeds:
        raise UsageError("no MFU seeds to predict from; pass --mfu")
    cls, fam = size_class(params), family(hardware)
    groups: list[tuple[str, Callable[[Seed], bool]]] = [
        (f"{hardware}, {cls}", lambda s: s.hardware == hardware and size_class(s.params) == cls),
        (f"{hardware}, all sizes", lambda s: s.hardware == hardware),
        (f"{fam} family, {cls}", lambda s: family(s.hardware) == fam and size_class(s.params) == cls),
        (f"{fam} family, all sizes", lambda s: family(s.hardware) == fam),
        (f"all hardware, {cls}", lambda s: size_class(s.params) == cls),
        ("all runs", lambda s: True),
    ]
    for basis, keep in groups:
        vals = [s.mfu for s in seeds if keep(s)]
        if vals:
            return MfuEstimate(statistics.median(vals), basis, len(vals), min(vals), max(vals))
    raise AssertionError("unreachable: the last group keeps every seed")


def calibrate(path: Path, skip_fraction: float = 0.2) -> tuple[float, str]:
    """The median MFU of a roost run's metrics.jsonl after its first `skip_fraction` of logged steps (warm-up,
    compilation), and the device its run config names."""
    if not path.is_file():
        raise UsageError(f"--calibrate {path}: no such file (point it at runs/<name>/metrics.jsonl)")
    vals = []
    for i, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise UsageError(f"{path} line {i}: not JSON") from None
        v = row.get("mfu") if isinstance(row, dict) else None
        if isinstance(v, (int, float)) and 0 < v <= 1:
            vals.append(float(v))
    if not vals:
        raise UsageError(f"{path}: no training steps with an 'mfu' field")
    steady = vals[int(len(vals) * skip_fraction) :] or vals
    note = f"median of {len(steady)} logged steps of {path}"
    cfg = path.with_name("config.json")
    if cfg.is_file():
        try:
            note += f" ({json.loads(cfg.read_text()).get('peak_note', '')})"
        except (json.JSONDecodeError, AttributeError):
            pass
    return statistics.median(steady), note
