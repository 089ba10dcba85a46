"""Accelerators roost knows by name: memory, dense bf16 peak and links — the numbers MFU (`roost train`), the dry
run (`roost train --dry-run --gpu h100`) and the fleet planner (`roost plan`) use. Pure Python, no torch.

Figures are from the vendors' datasheets (dense, no sparsity). `memory_gib` is what the device reports as usable;
`intra_gbps` is the per-GPU bandwidth inside a node (NVLink/xGMI), `inter_gbps` the usual per-GPU network
bandwidth between nodes (InfiniBand/RoCE, 400 Gb/s per GPU = 50 GB/s).
"""

from __future__ import annotations

from dataclasses import dataclass

from roost.errors import UsageError


@dataclass(frozen=True)
class Accelerator:
    name: str
    memory_gib: float
    bf16_tflops: float
    intra_gbps: float  # GB/s per GPU inside a node
    inter_gbps: float  # GB/s per GPU across nodes
    per_node: int = 8


ACCELERATORS = {
    a.name.lower(): a
    for a in (
        Accelerator("H100", 79.6, 989.0, 450.0, 50.0),
        Accelerator("H200", 139.8, 989.0, 450.0, 50.0),
        Accelerator("B200", 178.4, 2250.0, 900.0, 50.0),
        Accelerator("A100", 79.2, 312.0, 300.0, 25.0),
        Accelerator("A100-40GB", 39.4, 312.0, 300.0, 25.0),
        Accelerator("L40S", 44.4, 362.0, 32.0, 12.5),
        Accelerator("A10", 22.0, 125.0, 32.0, 12.5),
        Accelerator("L4", 22.0, 121.0, 32.0, 12.5),
        Accelerator("RTX 4090", 23.6, 165.0, 32.0, 12.5),
        Accelerator("MI300X", 191.5, 1307.0, 448.0, 50.0),
    )
}


def accelerator(name: str) -> Accelerator:
    key = name.lower().replace("_", "-")
    if key not in ACCELERATORS:
        raise UsageError(f"unknown GPU {name!r}; known: {', '.join(a.name for a in ACCELERATORS.values())}")
    return ACCELERATORS[key]


def match_device_name(device_name: str) -> Accelerator | None:
    """The accelerator whose name appears in a CUDA device name ("NVIDIA H100 80GB HBM3" → H100)."""
    for a in sorted(ACCELERATORS.values(), key=lambda a: -len(a.name)):
        if a.name.split("-")[0] in device_name:
            return a
    return None
