"""Accelerators roost knows by name — memory, dense bf16/fp8 peaks, links, power and a typical price — read from
`roost/hardware.toml` (plus any file a user adds with `load(extra=...)`). The numbers MFU (`roost train`), the dry
run (`roost train --dry-run --gpu h100`) and the fleet planner use. Pure Python, no torch.

`intra_gbps` is the per-device bandwidth inside a node (NVLink/xGMI/ICI), `inter_gbps` the per-device network
bandwidth between nodes (400 Gb/s per GPU = 50 GB/s).
"""

from __future__ import annotations

import difflib
import tomllib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from roost.errors import UsageError

CATALOGUE = Path(__file__).with_name("hardware.toml")


@dataclass(frozen=True)
class Accelerator:
    name: str
    memory_gib: float
    bf16_tflops: float
    intra_gbps: float  # GB/s per device inside a node
    inter_gbps: float  # GB/s per device across nodes
    per_node: int = 8
    fp8_tflops: float = 0.0
    hbm_tbps: float = 0.0
    power_w: float = 0.0
    usd_per_hour: tuple[float, float] = (0.0, 0.0)
    aliases: tuple[str, ...] = field(default=())


def _parse(path: Path) -> dict[str, Accelerator]:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise UsageError(f"{path}: not a readable hardware catalogue ({e})") from None
    out = {}
    for name, spec in data.items():
        try:
            acc = Accelerator(
                name=name,
                memory_gib=float(spec["memory_gib"]),
                bf16_tflops=float(spec["bf16_tflops"]),
                intra_gbps=float(spec["intra_gbps"]),
                inter_gbps=float(spec["inter_gbps"]),
                per_node=int(spec.get("per_node", 8)),
                fp8_tflops=float(spec.get("fp8_tflops", 0.0)),
                hbm_tbps=float(spec.get("hbm_tbps", 0.0)),
                power_w=float(spec.get("power_w", 0.0)),
                usd_per_hour=tuple(float(x) for x in spec.get("usd_per_hour", (0.0, 0.0))),  # type: ignore[arg-type]
                aliases=tuple(str(a) for a in spec.get("aliases", ())),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise UsageError(f"{path}: [{name}]: missing or bad field ({e})") from None
        if acc.memory_gib <= 0 or acc.bf16_tflops <= 0:
            raise UsageError(f"{path}: [{name}]: memory_gib and bf16_tflops must be > 0")
        out[name] = acc
    return out


@cache
def _catalogue(extra: Path | None = None) -> dict[str, Accelerator]:
    cat = _parse(CATALOGUE)
    if extra is not None:
        cat |= _parse(extra)  # a user's entries add to or replace the built-in ones
    return cat


def load(extra: Path | None = None) -> dict[str, Accelerator]:
    """Name → Accelerator; `extra` is a TOML file of the same shape as roost/hardware.toml."""
    return _catalogue(extra)


def _keys(acc: Accelerator) -> list[str]:
    return [k.lower().replace("_", "-").replace(" ", "-") for k in (acc.name, *acc.aliases)]


def accelerator(name: str, extra: Path | None = None) -> Accelerator:
    key = name.lower().replace("_", "-").replace(" ", "-")
    cat = load(extra)
    for acc in cat.values():
        if key in _keys(acc):
            return acc
    known = [k for a in cat.values() for k in _keys(a)]
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.5)
    hint = f" — did you mean {close[0]!r}?" if close else ""
    raise UsageError(f"unknown GPU {name!r}{hint} Known: {', '.join(a.name for a in cat.values())}")


def match_device_name(device_name: str) -> Accelerator | None:
    """The accelerator whose name appears in a CUDA device name ("NVIDIA H100 80GB HBM3" → H100)."""
    for a in sorted(load().values(), key=lambda a: -len(a.name)):
        if all(part.lower() in device_name.lower() for part in a.name.split("-")):  # A100-40GB needs "40GB"
            return a
    return None
