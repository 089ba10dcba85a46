"""What this machine can compute fast, and the dtype each workload runs in because of it.

    python -m roost.probe            # the machine's class, its peak FLOP/s estimate and the dtype per workload
    roost train / serve / index ...  # each prints one line: "dtype bf16 (decode on avx2: ...)"

One probe (`probe()`) reads the CPU flags (/proc/cpuinfo), vendor, family, clock and thread count, oneDNN's ISA cap
(`ONEDNN_MAX_CPU_ISA`) and CUDA, and every stage that picks a dtype asks `choose(workload)` instead of guessing.
`classify()` and `choose()` are pure functions of the `Hardware` record, so every CPU class can be tested on one
machine. The defaults are a table (`DEFAULTS`) of measured figures: compute-bound work (training, embedding) never
runs in a dtype the hardware emulates; memory-bound batch-1 decode uses bf16 weights where that measured faster, even
where bf16 arithmetic is emulated (half the bytes per token). `python -m bench.dtype` re-measures a row on any CPU.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from roost.errors import UsageError

WORKLOADS = ("train", "embed", "decode")
DTYPES = ("fp32", "bf16")

# (cpu class, workload) -> (dtype, the measurement behind it). Figures: `python -m bench.dtype` (docs/benchmarks.md);
# avx2 rows from a 2-core AMD EPYC with AVX2 only (issue 15), the others from a 2-core AMD EPYC (Zen 5, AVX512-BF16).
DEFAULTS: dict[tuple[str, str], tuple[str, str]] = {
    ("cuda-bf16", "train"): ("bf16", "tensor cores run bf16 natively"),
    ("cuda-bf16", "embed"): ("bf16", "tensor cores run bf16 natively"),
    ("cuda-bf16", "decode"): ("bf16", "tensor cores run bf16 natively; half the bytes per token"),
    ("cuda", "train"): ("fp32", "this GPU has no bf16"),
    ("cuda", "embed"): ("fp32", "this GPU has no bf16"),
    ("cuda", "decode"): ("fp32", "this GPU has no bf16"),
    ("amx", "train"): ("bf16", "AMX tiles run bf16 natively (as avx512_bf16, which measured 1.96x fp32 per step)"),
    ("amx", "embed"): ("bf16", "AMX tiles run bf16 natively (as avx512_bf16: 2.98x fp32)"),
    ("amx", "decode"): ("bf16", "native bf16, half the bytes per token (as avx512_bf16: 2.05x fp32)"),
    ("avx512_bf16", "train"): ("bf16", "VDPBF16PS is native: bf16 autocast measured 1.96x fp32 tokens/s"),
    ("avx512_bf16", "embed"): ("bf16", "native bf16: MiniLM measured 2.98x fp32 texts/s"),
    ("avx512_bf16", "decode"): ("bf16", "native bf16, half the bytes: measured 2.05x fp32 tokens/s"),
    ("avx512", "train"): ("fp32", "no AVX512-BF16: bf16 would be emulated (compute-bound)"),
    ("avx512", "embed"): ("fp32", "no AVX512-BF16: bf16 would be emulated (compute-bound)"),
    ("avx512", "decode"): ("fp32", "no AVX512-BF16 and not measured on this class; try --dtype bf16"),
    ("avx2", "train"): ("fp32", "bf16 is emulated: 21.7 s/step against 1.10 s in fp32"),
    ("avx2", "embed"): ("fp32", "bf16 is emulated (compute-bound; see train: ~20x slower)"),
    ("avx2", "decode"): ("bf16", "memory-bound: bf16 weights measured 16.8 tokens/s against 9.1 in fp32"),
    ("capped", "train"): ("fp32", "ONEDNN_MAX_CPU_ISA caps bf16 to emulation: bf16 measured 0.10x fp32 tokens/s"),
    ("capped", "embed"): ("fp32", "ONEDNN_MAX_CPU_ISA caps bf16 to emulation: bf16 measured 0.26x fp32 texts/s"),
    ("capped", "decode"): ("bf16", "memory-bound: bf16 weights measured 1.98x fp32 tokens/s even with the cap"),
    ("arm-bf16", "train"): ("fp32", "not measured on ARM; fp32 is never emulated"),
    ("arm-bf16", "embed"): ("fp32", "not measured on ARM; fp32 is never emulated"),
    ("arm-bf16", "decode"): ("fp32", "not measured on ARM; try --dtype bf16"),
    ("generic", "train"): ("fp32", "no AVX2/AVX-512: bf16 would be emulated"),
    ("generic", "embed"): ("fp32", "no AVX2/AVX-512: bf16 would be emulated"),
    ("generic", "decode"): ("fp32", "no AVX2/AVX-512: not measured"),
}

# oneDNN ISA names (ONEDNN_MAX_CPU_ISA) below which it has no native bf16 path
_BELOW_BF16 = {"sse41", "avx", "avx2", "avx2_vnni", "avx2_vnni_2", "avx512_core", "avx512_core_vnni"}


@dataclass(frozen=True)
class Hardware:
    """What the probe read. Every field can be given by hand, so classification is testable anywhere."""

    arch: str = "x86_64"
    vendor: str = ""
    family: int = 0
    model_name: str = ""
    flags: frozenset[str] = field(default_factory=frozenset)
    threads: int = 1
    ghz: float = 2.5
    ghz_source: str = "assumed"
    isa_cap: str = ""  # ONEDNN_MAX_CPU_ISA, lower-cased; "" when not set
    cuda_name: str = ""  # "" when there is no CUDA device
    cuda_bf16: bool = False

    def flags_line(self) -> str:
        simd = [f for f in sorted(self.flags) if f.startswith(("avx", "amx", "fma", "sve", "asimd", "bf16", "neon"))]
        cap = f", ONEDNN_MAX_CPU_ISA={self.isa_cap}" if self.isa_cap else ""
        gpu = f", CUDA {self.cuda_name} (bf16 {'yes' if self.cuda_bf16 else 'no'})" if self.cuda_name else ""
        return (
            f"{self.model_name or self.arch} [{self.vendor or '?'} family {self.family}] {self.threads} threads "
            f"{self.ghz:.2f} GHz; class {classify(self)}; SIMD: {' '.join(simd) or 'none'}{cap}{gpu}"
        )


def classify(hw: Hardware) -> str:
    """The CPU (or GPU) class the dtype table is keyed by."""
    if hw.cuda_name:
        return "cuda-bf16" if hw.cuda_bf16 else "cuda"
    f = hw.flags
    if hw.arch in ("aarch64", "arm64"):
        return "arm-bf16" if "bf16" in f else "generic"
    native_bf16 = "avx512_bf16" in f or "amx_bf16" in f
    if native_bf16 and hw.isa_cap in _BELOW_BF16:
        return "capped"
    if "amx_bf16" in f and (not hw.isa_cap or "amx" in hw.isa_cap or hw.isa_cap == "all"):
        return "amx"
    if "avx512_bf16" in f:
        return "avx512_bf16"
    if "avx512f" in f:
        return "avx512"
    if "avx2" in f and "fma" in f:
        return "avx2"
    return "generic"


@dataclass(frozen=True)
class Choice:
    """A dtype and the one-line reason a command prints."""

    dtype: str
    why: str
    cpu_class: str
    workload: str
    given: bool = False

    def line(self) -> str:
        src = self.why if self.given else f"{self.workload} on {self.cpu_class}: {self.why}"
        return f"dtype {self.dtype} ({src})"


def choose(workload: str, requested: str | None = "auto", hw: Hardware | None = None) -> Choice:
    """The dtype for `workload` ("train", "embed", "decode"): `requested` unless it is "auto"/None."""
    if workload not in WORKLOADS:
        raise ValueError(f"workload must be one of {WORKLOADS}, got {workload!r}")
    hw = hw or probe()
    cls = classify(hw)
    if requested not in (None, "auto"):
        if requested not in DTYPES:
            raise UsageError(f"--dtype must be auto, fp32 or bf16, got {requested!r}")
        return Choice(requested, "set by --dtype or roost.toml", cls, workload, given=True)
    dtype, why = DEFAULTS[(cls, workload)]
    return Choice(dtype, why, cls, workload)


def flop_per_cycle(hw: Hardware, dtype: str = "fp32") -> tuple[int, str]:
    """Per-core FLOPs per cycle: 2 (an FMA) × lanes of the FMA datapath × FMA units; see docs/model.md."""
    f = hw.flags
    if hw.arch in ("aarch64", "arm64"):
        bits, units = 128, 2  # NEON: 2 × 128-bit FMA pipes on most server cores (4 on Neoverse V1/V2)
    elif "avx512f" in f:  # fp32 GEMMs run in MKL, which ONEDNN_MAX_CPU_ISA does not cap
        # AMD Zen 4 (family 0x19) runs AVX-512 on 256-bit pipes; Zen 5 (0x1a) and Intel server cores on 512-bit ones
        bits = 256 if hw.vendor == "AuthenticAMD" and hw.family < 0x1A else 512
        units = 2
    elif "avx2" in f or "avx" in f:
        bits, units = (256, 2) if "fma" in f else (128, 2)  # without FMA: a 256-bit mul + add = two 128-bit FMAs
    else:
        bits, units = 128, 1
    per = 2 * (bits // 32) * units
    how = f"2 × {bits // 32} fp32 lanes ({bits}-bit) × {units} FMA units"
    if dtype == "bf16" and hw.isa_cap in _BELOW_BF16:
        return per, how + " (bf16 capped to emulation)"
    if dtype == "bf16" and "amx_bf16" in f and (not hw.isa_cap or "amx" in hw.isa_cap or hw.isa_cap == "all"):
        return 1024, "AMX: 1024 bf16 FLOP/cycle per core"
    if dtype == "bf16" and ("avx512_bf16" in f or (hw.arch in ("aarch64", "arm64") and "bf16" in f)):
        return per * 2, how + " × 2 (bf16 dot products)"
    return per, how


def cpu_peak_tflops(hw: Hardware | None = None, dtype: str = "fp32") -> tuple[float, str]:
    """Estimated peak: threads × clock × FLOP/cycle. An estimate: turbo, SMT and FMA-unit counts vary by model."""
    hw = hw or probe()
    per, how = flop_per_cycle(hw, dtype)
    peak = hw.threads * hw.ghz * per / 1000
    note = (
        f"CPU estimate: {hw.threads} threads × {hw.ghz:.2f} GHz ({hw.ghz_source}) × {per} FLOP/cycle [{how}] "
        f"= {peak:.3f} TFLOP/s"
    )
    return peak, note


def _cpuinfo() -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if not line.strip():
                    break  # the first processor is enough
                k, _, v = line.partition(":")
                out.setdefault(k.strip(), v.strip())
    except OSError:
        pass
    return out


def _ghz(info: dict[str, str]) -> tuple[float, str]:
    try:
        khz = int(Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq").read_text())
        return khz / 1e6, "max clock"
    except (OSError, ValueError):
        pass
    try:
        return float(info["cpu MHz"]) / 1000, "current clock; turbo may be higher"
    except (KeyError, ValueError):
        return 2.5, "assumed"


@cache
def probe() -> Hardware:
    """Read this machine once per process."""
    import torch

    info = _cpuinfo()
    flags = frozenset((info.get("flags") or info.get("Features") or "").split())
    cuda_name, cuda_bf16 = "", False
    if torch.cuda.is_available():
        cuda_name = torch.cuda.get_device_name(0)
        cuda_bf16 = bool(torch.cuda.is_bf16_supported())
    try:
        family = int(info.get("cpu family", "0"))
    except ValueError:
        family = 0
    ghz, source = _ghz(info)
    return Hardware(
        arch=platform.machine(),
        vendor=info.get("vendor_id", ""),
        family=family,
        model_name=info.get("model name", ""),
        flags=flags,
        threads=torch.get_num_threads() or os.cpu_count() or 1,
        ghz=ghz,
        ghz_source=source,
        isa_cap=(os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "").strip().lower(),
        cuda_name=cuda_name,
        cuda_bf16=cuda_bf16,
    )


def main() -> None:
    hw = probe()
    print(hw.flags_line())
    for dtype in DTYPES:
        print(f"peak {dtype}: {cpu_peak_tflops(hw, dtype)[1]}")
    for w in WORKLOADS:
        print(f"{w:>6}: {choose(w, hw=hw).line()}")


if __name__ == "__main__":
    main()
