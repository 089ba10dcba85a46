"""The dry run and the memory model behind it (and behind `roost plan`): counts come from the real module on the
meta device, the static memory matches real tensors, the activation estimate matches what autograd saves, and
the CLI prints a verdict for presets up to 405B without allocating them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from roost.errors import UsageError
from roost.hardware import accelerator, match_device_name
from roost.model.budget import Layout, memory_per_rank
from roost.model.config import ModelConfig, load_preset
from roost.model.llama import Llama
from roost.train.dryrun import counted_flops_per_token, dry_run
from roost.train.trainer import TrainConfig
from roost.workspace import Workspace
from tests.conftest import run_roost


@pytest.mark.parametrize("preset", ["tiny", "smollm2-135m", "llama3-8b"])
def test_meta_counts_match_the_config(preset: str) -> None:
    cfg = load_preset(preset)
    params, flops = counted_flops_per_token(cfg, 256)
    assert params == cfg.num_params()
    # FlopCounterMode counts every matmul of forward + backward, SDPA included; the 6N+12LHDT convention agrees
    assert abs(flops - cfg.flops_per_token(256)) / flops < 0.01


def _saved_bytes(cfg: ModelConfig, tokens: int, checkpointing: bool, dtype: torch.dtype) -> int:
    """Bytes autograd keeps for backward after one forward (unique storages, parameters excluded)."""
    m = Llama(cfg)
    m.init_weights(0)
    m.to(dtype)
    m.gradient_checkpointing = checkpointing
    m.train()
    params = {p.untyped_storage().data_ptr() for p in m.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        if st.data_ptr() not in params:
            seen[st.data_ptr()] = st.nbytes()
        return t

    x = torch.randint(0, cfg.vocab_size, (1, tokens))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        m(x, x)
    return sum(seen.values())


@pytest.mark.parametrize("checkpointing", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_activation_estimate_matches_autograd(checkpointing: bool, dtype: torch.dtype) -> None:
    cfg = ModelConfig(vocab_size=2048, dim=384, n_layers=3, n_heads=6, n_kv_heads=2, ffn_dim=1024, max_seq_len=512)
    measured = _saved_bytes(cfg, 512, checkpointing, dtype)
    lay = Layout(
        seq_len=512, micro_batch=1, compute_bytes=dtype.itemsize, recompute="full" if checkpointing else "none"
    )
    predicted = memory_per_rank(cfg, lay)["activations"]
    assert abs(predicted - measured) / measured < 0.15, (predicted, measured)


@pytest.mark.parametrize("recompute", ["none", "full"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_peak_memory_matches_what_pytorch_allocates(recompute: str, dtype: torch.dtype) -> None:
    """The whole estimate against the peak of a real training step (second step: AdamW state exists), tracked by
    PyTorch's own MemTracker (a dispatch-mode tracker of every live tensor) on CPU. bf16 here is the model in bf16,
    as FSDP2's mixed precision runs it (the residual stream in bf16), with bf16 weights and AdamW state. The step
    runs under FakeTensorMode (MemTracker's documented way to size a step): every op allocates its real output
    shapes and dtypes without computing, so the figure is the same on every CPU and takes a second, not minutes of
    emulated bf16 arithmetic on an AVX2-only machine (the fp32 peak was checked equal to a computed step's)."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.distributed._tools.mem_tracker import MemTracker

    cfg = ModelConfig(vocab_size=8192, dim=512, n_layers=4, n_heads=8, n_kv_heads=2, ffn_dim=1536, max_seq_len=1024)
    prev = torch.get_default_dtype()
    with FakeTensorMode():
        torch.set_default_dtype(dtype)
        try:
            m = Llama(cfg)
        finally:
            torch.set_default_dtype(prev)
        m.gradient_checkpointing = recompute == "full"
        opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
        x = torch.randint(0, cfg.vocab_size, (4, 1024))

        def step() -> None:
            m(x, x).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        step()
        mt = MemTracker()
        mt.track_external(m, opt)
        with mt:
            step()
    measured = mt.get_tracker_snapshot("peak")[torch.device("cpu")]["Total"]
    b = dtype.itemsize
    lay = Layout(seq_len=1024, micro_batch=4, compute_bytes=b, recompute=recompute, param_bytes=b, grad_bytes=b)
    lay.optim_bytes = 2 * b
    predicted = memory_per_rank(cfg, lay)["total"]
    assert abs(predicted - measured) / measured < 0.10, (predicted, measured)


def test_static_memory_matches_real_tensors() -> None:
    """Parameters, gradients and AdamW state of one process (no sharding) equal the model's 4N + 4N + 8N."""
    cfg = load_preset("tiny")
    m = Llama(cfg)
    m.init_weights(0)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
    x = torch.randint(0, cfg.vocab_size, (2, 32))
    m(x, x).backward()
    opt.step()
    uniq = {id(p): p for p in m.parameters()}.values()
    real = {
        "parameters": sum(p.numel() * p.element_size() for p in uniq),
        "gradients": sum(p.grad.numel() * p.grad.element_size() for p in uniq if p.grad is not None),
        "optimizer": sum(v.numel() * v.element_size() for s in opt.state.values() for v in s.values() if v.dim() > 0),
    }
    est = memory_per_rank(cfg, Layout(seq_len=32, micro_batch=2, compute_bytes=4))
    for k, v in real.items():
        assert est[k] == v, k
    # sharding divides the static parts by dp_shard × tp
    sharded = memory_per_rank(cfg, Layout(dp_shard=4, tp=2, seq_len=32, micro_batch=2, compute_bytes=4))
    assert sharded["optimizer"] == est["optimizer"] / 8


def test_dry_run_fits_and_does_not_fit(tmp_path: Path) -> None:
    small = dry_run(
        Workspace(tmp_path), TrainConfig(preset="smollm2-135m", seq_len=2048, batch_size=4, dtype="bf16"), "h100"
    )
    assert small["fits"]["no_checkpointing"] and small["params"] == load_preset("smollm2-135m").num_params()
    big = TrainConfig(preset="llama3-405b", seq_len=8192, batch_size=1, dtype="bf16", dp_shard=8, tp=8)
    r = dry_run(Workspace(tmp_path), big, "h100")
    assert r["mesh"]["world"] == 64 and not r["fits"]["no_checkpointing"]
    with_ac, without = r["memory"]["checkpointing"], r["memory"]["no_checkpointing"]
    assert with_ac["activations"] < without["activations"] / 5
    assert dry_run(Workspace(tmp_path), TrainConfig(preset="tiny"), "h100")["mesh"]["world"] == 1
    assert dry_run(Workspace(tmp_path), TrainConfig(preset="tiny", tp=2), "h100", world=8)["mesh"]["dp_shard"] == 4
    with pytest.raises(UsageError, match="not divisible"):
        dry_run(Workspace(tmp_path), TrainConfig(preset="tiny", tp=4), "h100", world=6)
    with pytest.raises(UsageError, match="unknown GPU"):
        dry_run(Workspace(tmp_path), TrainConfig(preset="tiny", dp_shard=1), "tpu-v9")


def test_cli_dry_run_405b(tmp_path: Path) -> None:
    out = run_roost(
        "--home", str(tmp_path), "train", "--dry-run", "--preset", "llama3-405b", "--dp-shard", "64", "--tp", "8",
        "--seq-len", "8192", "--batch-size", "1", "--dtype", "bf16", "--gpu", "h200",
    ).stdout  # fmt: skip
    assert "405.85" in out and "512 ranks" in out and "H200" in out and "fits" in out
    bad = run_roost("--home", str(tmp_path), "train", "--dry-run", "--preset", "smollm2-135m", "--tp", "2", check=False)
    assert bad.returncode != 0 and "n_heads (9)" in bad.stderr + bad.stdout


def test_accelerators() -> None:
    assert accelerator("H100").memory_gib > 70
    hit = match_device_name("NVIDIA H100 80GB HBM3")
    assert hit is not None and hit.name == "H100"
    assert match_device_name("NVIDIA A100-SXM4-40GB") is not None


def test_hardware_catalogue_is_data_and_extensible(tmp_path: Path) -> None:
    from roost.hardware import load

    cat = load()
    assert {"H100", "H200", "B200", "GB200", "MI300X", "TPU-v4", "TPU-v5p", "A100", "A100-40GB"} <= cat.keys()
    assert accelerator("h100-sxm").name == "H100" and accelerator("A100_80GB").name == "A100"
    a100 = match_device_name("NVIDIA A100-SXM4-80GB")
    assert a100 is not None and a100.name == "A100"
    assert match_device_name("NVIDIA A100-SXM4-40GB").name == "A100-40GB"  # type: ignore[union-attr]
    with pytest.raises(UsageError, match="did you mean 'h100'"):
        accelerator("h10O")
    mine = tmp_path / "mine.toml"
    mine.write_text("[X1]\nbf16_tflops = 100.0\nmemory_gib = 10.0\nintra_gbps = 1.0\ninter_gbps = 1.0\n")
    assert accelerator("x1", extra=mine).bf16_tflops == 100.0
    bad = tmp_path / "bad.toml"
    bad.write_text("[X2]\nmemory_gib = 10.0\n")
    with pytest.raises(UsageError, match=r"\[X2\]"):
        load(bad)
