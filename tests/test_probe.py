"""The capability probe and the dtype each workload runs in: both CPU kinds (AVX2-only, AVX512-BF16) and the others
are classified from their flags on any machine; the probe reads this machine's flags; every stage takes its dtype
from the probe (trainer, serve engine, embedder), and `--dtype` overrides it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from roost.errors import UsageError
from roost.probe import DEFAULTS, WORKLOADS, Hardware, choose, classify, cpu_peak_tflops, flop_per_cycle, probe
from tests.conftest import run_roost

# flags as /proc/cpuinfo prints them on the two machines of issue 15 (trimmed to the SIMD ones that matter)
AVX2_EPYC = Hardware(
    vendor="AuthenticAMD", family=23, model_name="AMD EPYC 7B12", threads=2, ghz=2.25,
    flags=frozenset("sse sse2 ssse3 sse4_1 sse4_2 avx f16c fma avx2 bmi2".split()),
)  # fmt: skip
ZEN5_BF16 = Hardware(
    vendor="AuthenticAMD", family=26, model_name="AMD EPYC", threads=2, ghz=2.6,
    flags=frozenset("sse4_2 avx fma avx2 avx512f avx512bw avx512vl avx512dq avx512_bf16 avx512_vnni".split()),
)  # fmt: skip
ZEN4 = dataclasses.replace(ZEN5_BF16, family=25)
SKYLAKE = Hardware(vendor="GenuineIntel", family=6, threads=4, ghz=2.0, flags=frozenset("fma avx2 avx512f".split()))
SAPPHIRE = dataclasses.replace(SKYLAKE, flags=SKYLAKE.flags | {"avx512_bf16", "amx_bf16", "amx_tile"})
GRAVITON3 = Hardware(arch="aarch64", threads=2, ghz=2.6, flags=frozenset("fp asimd sve bf16".split()))


def test_compute_bound_work_never_runs_in_an_emulated_dtype() -> None:
    """The table's rule, for every class: bf16 training/embedding only where bf16 is native."""
    native = {"cuda-bf16", "amx", "avx512_bf16"}
    classes = {c for c, _ in DEFAULTS}
    assert {(c, w) for c in classes for w in WORKLOADS} == set(DEFAULTS)  # no hole in the table
    for c in classes:
        for w in ("train", "embed"):
            assert (DEFAULTS[(c, w)][0] == "bf16") == (c in native), (c, w)


def test_avx2_only_machine() -> None:
    assert classify(AVX2_EPYC) == "avx2"
    assert choose("train", hw=AVX2_EPYC).dtype == "fp32"  # 21.7 s/step in bf16 against 1.10 s in fp32
    assert choose("embed", hw=AVX2_EPYC).dtype == "fp32"
    assert choose("decode", hw=AVX2_EPYC).dtype == "bf16"  # memory-bound: half the bytes won (16.8 vs 9.1 tok/s)
    line = choose("train", hw=AVX2_EPYC).line()
    assert line.startswith("dtype fp32 (train on avx2: ") and "emulated" in line


def test_avx512_bf16_machine_and_others() -> None:
    assert classify(ZEN5_BF16) == "avx512_bf16"
    assert {w: choose(w, hw=ZEN5_BF16).dtype for w in WORKLOADS} == dict.fromkeys(WORKLOADS, "bf16")
    assert classify(SKYLAKE) == "avx512" and choose("train", hw=SKYLAKE).dtype == "fp32"
    assert classify(SAPPHIRE) == "amx" and choose("train", hw=SAPPHIRE).dtype == "bf16"
    assert classify(GRAVITON3) == "arm-bf16" and choose("train", hw=GRAVITON3).dtype == "fp32"
    assert classify(Hardware(flags=frozenset({"sse2"}))) == "generic"
    gpu = dataclasses.replace(AVX2_EPYC, cuda_name="NVIDIA H100 80GB HBM3", cuda_bf16=True)
    assert classify(gpu) == "cuda-bf16" and choose("train", hw=gpu).dtype == "bf16"
    old_gpu = dataclasses.replace(gpu, cuda_name="Tesla V100", cuda_bf16=False)
    assert choose("train", hw=old_gpu).dtype == "fp32"
    # oneDNN capped below bf16 on a bf16 machine: its bf16 GEMMs are emulated, so compute-bound work goes fp32
    capped = dataclasses.replace(ZEN5_BF16, isa_cap="avx2")
    assert classify(capped) == "capped" and choose("train", hw=capped).dtype == "fp32"
    assert classify(dataclasses.replace(ZEN5_BF16, isa_cap="avx512_core_bf16")) == "avx512_bf16"


def test_dtype_flag_overrides_and_bad_values() -> None:
    c = choose("train", "bf16", hw=AVX2_EPYC)
    assert c.dtype == "bf16" and c.given and "set by --dtype or roost.toml" in c.line()
    assert choose("decode", "fp32", hw=ZEN5_BF16).dtype == "fp32"
    assert choose("decode", None, hw=AVX2_EPYC).dtype == "bf16"  # None is auto
    with pytest.raises(UsageError, match="--dtype must be auto, fp32 or bf16"):
        choose("train", "fp16", hw=AVX2_EPYC)
    with pytest.raises(ValueError):
        choose("pretrain", hw=AVX2_EPYC)


def test_peak_flops_from_vector_width_fma_units_and_threads() -> None:
    """docs/model.md: threads × clock × 2 × fp32 lanes of the FMA datapath × FMA units (× 2 for bf16 dot products)."""
    assert flop_per_cycle(AVX2_EPYC)[0] == 2 * 8 * 2  # Zen 2: two 256-bit FMA pipes
    assert flop_per_cycle(ZEN4)[0] == 2 * 8 * 2  # Zen 4: AVX-512 on 256-bit pipes
    assert flop_per_cycle(ZEN5_BF16)[0] == 2 * 16 * 2  # Zen 5: 512-bit pipes
    assert flop_per_cycle(SKYLAKE)[0] == 64
    assert flop_per_cycle(ZEN5_BF16, "bf16")[0] == 128
    assert flop_per_cycle(AVX2_EPYC, "bf16")[0] == 32  # emulated bf16 is no faster than fp32
    assert flop_per_cycle(SAPPHIRE, "bf16")[0] == 1024  # AMX tiles
    capped = dataclasses.replace(ZEN5_BF16, isa_cap="avx2")  # oneDNN held to AVX2: bf16 emulated, fp32 (MKL) not
    assert flop_per_cycle(capped)[0] == flop_per_cycle(capped, "bf16")[0] == 64
    amx_capped = dataclasses.replace(SAPPHIRE, isa_cap="avx512_core_bf16")
    assert classify(amx_capped) == "avx512_bf16" and flop_per_cycle(amx_capped, "bf16")[0] == 128
    peak, note = cpu_peak_tflops(AVX2_EPYC)
    assert peak == pytest.approx(2 * 2.25 * 32 / 1000) and note.startswith("CPU estimate:")


def test_probe_reads_this_machine() -> None:
    hw = probe()
    text = Path("/proc/cpuinfo").read_text()
    first_flags = next(line for line in text.splitlines() if line.startswith(("flags", "Features")))
    assert hw.flags == frozenset(first_flags.split(":", 1)[1].split())
    assert hw.threads == torch.get_num_threads() and hw.ghz > 0
    assert classify(hw) in {c for c, _ in DEFAULTS}
    assert bool(hw.cuda_name) == torch.cuda.is_available()


def test_stages_take_the_probe_dtype(home: Path) -> None:
    """The embedder and the CLI follow the probe (and --dtype), and say which dtype they picked and why."""
    from roost.search.hybrid import Embedder

    want = choose("embed").dtype
    assert Embedder().model.dtype == (torch.bfloat16 if want == "bf16" else torch.float32)
    assert Embedder(dtype="fp32").model.dtype == torch.float32
    out = run_roost("--home", str(home), "train", "--dtype", "fp16", check=False)
    assert out.returncode == 2 and "train.dtype must be auto, fp32 or bf16" in out.stderr
    import subprocess
    import sys

    shown = subprocess.run([sys.executable, "-m", "roost.probe"], capture_output=True, text=True, check=True).stdout
    assert f"class {classify(probe())};" in shown.splitlines()[0]
    for w in WORKLOADS:
        assert choose(w).line() in shown
