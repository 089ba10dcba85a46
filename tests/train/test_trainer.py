"""The trainer: it learns, resumes bit-exactly after SIGKILL and SIGTERM, checkpoints are atomic and checked,
LoRA and SFT fine-tunes, Muon, export, metrics, and start-up errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from roost.context import Roost
from roost.errors import RoostError, UsageError
from roost.model.convert import load_model_dir
from roost.train import checkpoint as ckpt
from roost.train.trainer import TrainConfig, Trainer, read_metrics
from tests.conftest import run_roost

# fp32 pinned: the default (auto) depends on the CPU class, and these tests compare numbers
FAST = dict(preset="tiny", seq_len=64, batch_size=8, warmup=5, eval_every=10, ckpt_every=5, log_every=1, dtype="fp32")


def _cfg(**over: object) -> TrainConfig:
    return TrainConfig(**{**FAST, **over})  # type: ignore[arg-type]


def _losses(home: Path, name: str) -> list[float]:
    return [r["loss"] for r in read_metrics(home / "runs" / name / "metrics.jsonl") if "loss" in r]


def test_from_scratch_learns_and_exports(home: Path) -> None:
    t = Trainer(Roost.at(home), _cfg(name="a", steps=60, lr=3e-3))
    res = t.train()
    losses = _losses(home, "a")
    assert res["step"] == 60 and len(losses) == 60
    assert sum(losses[-10:]) / 10 < sum(losses[:10]) / 10 - 0.4
    rows = read_metrics(home / "runs/a/metrics.jsonl")
    assert rows[0]["step"] == 0 and "val_loss" in rows[0]  # the untrained starting point
    assert {"loss", "lr", "grad_norm", "tokens_per_s", "mfu", "peak_mem_gb"} <= set(rows[1])
    assert rows[-1]["val_loss"] < rows[0]["val_loss"] and rows[5]["lr"] > rows[1]["lr"]  # learned; warmup
    assert list((home / "runs/a/tensorboard").glob("events.out.tfevents.*"))
    assert len(ckpt.list_checkpoints(home / "runs/a/checkpoints")) == 3  # keep 3
    meta = t.export()
    model, roost_json = load_model_dir(home / "models/a")
    assert roost_json["steps"] == 60 and roost_json["shards"].endswith("shards/default")
    from roost.data.tokenizer import sha256_file

    assert roost_json["shards_manifest_sha256"] == sha256_file(home / "shards/default/manifest.json")
    x, y = next(iter(t.loader))
    with torch.no_grad():
        assert torch.allclose(model.eval()(x), t.model.eval()(x), atol=1e-5)
    assert meta["tokenizer_sha256"] == t.tokenizer_sha
    _export_matches(home, "a", tmp_path=home / "exported")


def _export_matches(home: Path, name: str, tmp_path: Path) -> None:
    """`roost export RUN OUT` of a plain checkpoint loads the weights through the checkpointer, without a Trainer,
    and writes the model the run's own export wrote."""
    from roost.train import trainer as trainer_mod
    from roost.train.export import export

    def no_trainer(*a: object, **k: object) -> None:
        raise AssertionError("roost export built a Trainer")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(trainer_mod.Trainer, "__init__", no_trainer)
        meta = export(Roost.at(home), name, tmp_path)
    want, want_meta = load_model_dir(home / "models" / name)
    got, got_meta = load_model_dir(tmp_path)
    assert meta["steps"] == want_meta["steps"] and got_meta["model_sha256"] == want_meta["model_sha256"]
    for (k, a), (k2, b) in zip(want.state_dict().items(), got.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(a, b), k


def _train_proc(home: Path, name: str, steps: int, *extra: str) -> subprocess.Popen[str]:
    exe = Path(sys.executable).with_name("roost")
    args = [
        str(exe),
        "--home",
        str(home),
        "train",
        "--name",
        name,
        "--preset",
        "tiny",
        "--seq-len",
        "64",
        "--batch-size",
        "8",
        "--steps",
        str(steps),
        "--ckpt-every",
        "4",
        "--eval-every",
        "5",
        "--warmup",
        "3",
        "--no-export",
        "-q",
        "--dtype",
        "fp32",
        *extra,
    ]
    return subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )


def _wait_for_step(home: Path, name: str, step: int, proc: subprocess.Popen[str]) -> None:
    deadline = time.time() + 120
    while time.time() < deadline:
        rows = read_metrics(home / "runs" / name / "metrics.jsonl")
        if rows and rows[-1]["step"] >= step:
            return
        if proc.poll() is not None:
            raise AssertionError(f"trainer exited early: {proc.stderr.read() if proc.stderr else ''}")
        time.sleep(0.05)
    raise AssertionError("trainer too slow")


@pytest.mark.slow
def test_sigkill_then_resume_is_bit_exact(home: Path) -> None:
    ref = _train_proc(home, "ref", 16)
    assert ref.wait(timeout=300) == 0, ref.stderr.read() if ref.stderr else ""
    p = _train_proc(home, "killed", 16)
    _wait_for_step(home, "killed", 10, p)
    p.send_signal(signal.SIGKILL)
    p.wait()
    done = [c.name for c in ckpt.list_checkpoints(home / "runs/killed/checkpoints")]
    assert done and done[-1] < "step_00000016"
    r = _train_proc(home, "killed", 16, "--resume")
    assert r.wait(timeout=300) == 0, r.stderr.read() if r.stderr else ""
    assert _losses(home, "killed") == _losses(home, "ref")  # exact, float for float
    v = [x.get("val_loss") for x in read_metrics(home / "runs/killed/metrics.jsonl")]
    assert v == [x.get("val_loss") for x in read_metrics(home / "runs/ref/metrics.jsonl")]


@pytest.mark.slow
def test_sigterm_saves_and_resume_continues(home: Path) -> None:
    p = _train_proc(home, "term", 400)
    _wait_for_step(home, "term", 6, p)
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=60) == 0
    last = ckpt.list_checkpoints(home / "runs/term/checkpoints")[-1]
    stopped_at = json.loads((last / "meta.json").read_text())["step"]
    assert stopped_at == read_metrics(home / "runs/term/metrics.jsonl")[-1]["step"] >= 6  # saved where it stopped
    t = Trainer(Roost.at(home), _cfg(name="term", steps=stopped_at + 3), resume=True)
    assert t.step == stopped_at
    t.train()
    assert [r["step"] for r in read_metrics(home / "runs/term/metrics.jsonl")] == list(range(0, stopped_at + 4))


def test_corrupt_checkpoint_is_detected_and_previous_offered(home: Path) -> None:
    Trainer(Roost.at(home), _cfg(name="c", steps=10)).train()
    cks = ckpt.list_checkpoints(home / "runs/c/checkpoints")
    f = cks[-1] / "model.safetensors"
    data = bytearray(f.read_bytes())
    data[-5] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(RoostError, match=f"sha256 does not match.*--resume-from {cks[-2].name}"):
        Trainer(Roost.at(home), _cfg(name="c", steps=12), resume=True)
    t = Trainer(Roost.at(home), _cfg(name="c", steps=12), resume_from=cks[-2].name)
    assert t.step == 5


def test_torn_save_is_never_loaded(home: Path) -> None:
    Trainer(Roost.at(home), _cfg(name="torn", steps=5)).train()
    d = home / "runs/torn/checkpoints"
    (d / ".step_00000010.tmp-99999").mkdir()  # what a kill mid-save leaves behind
    (d / ".step_00000010.tmp-99999" / "model.safetensors").write_bytes(b"half")
    assert [p.name for p in ckpt.list_checkpoints(d)] == ["step_00000005"]
    assert Trainer(Roost.at(home), _cfg(name="torn", steps=6), resume=True).step == 5


def _tiny_model_dir(home: Path, name: str) -> Path:
    t = Trainer(Roost.at(home), _cfg(name=name, steps=3))
    t.train()
    t.export()
    return home / "models" / name


def test_lora_finetune_merges_on_export(home: Path) -> None:
    from transformers import AutoModelForCausalLM

    base_dir = _tiny_model_dir(home, "base")
    base, _ = load_model_dir(base_dir)
    t = Trainer(Roost.at(home), _cfg(name="lora", init=str(base_dir), lora_rank=4, steps=8, lr=1e-2))
    trainable = [n for n, p in t.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    t.train()
    t.export()
    merged, meta = load_model_dir(home / "models/lora")
    assert meta["init"] == str(base_dir)
    w0 = base.state_dict()["model.layers.0.self_attn.q_proj.weight"]
    w1 = merged.state_dict()["model.layers.0.self_attn.q_proj.weight"]
    assert not torch.allclose(w0, w1)  # the adapters moved the weights
    assert torch.equal(base.state_dict()["model.embed_tokens.weight"], merged.state_dict()["model.embed_tokens.weight"])
    hf = AutoModelForCausalLM.from_pretrained(str(home / "models/lora")).eval()
    x = torch.randint(0, 1000, (1, 20))
    with torch.no_grad():
        assert (hf(x).logits - merged.eval()(x)).abs().max().item() <= 1e-4
    _export_matches(home, "lora", tmp_path=home / "exported")


def test_sft_trains_on_replies_only(home: Path) -> None:
    from roost.train.sft import SFTLoader, reply_pairs

    base_dir = _tiny_model_dir(home, "base2")
    pairs = reply_pairs(home / "corpus.db")
    assert pairs
    from roost.data.tokenizer import load

    tok = load(base_dir / "tokenizer.json")
    ld = SFTLoader(home / "corpus.db", base_dir / "tokenizer.json", 64, 4)
    answers = {r + "<|im_end|>\n" for _, _, r in pairs}
    x, y = next(iter(ld))
    for row_x, row_y in zip(x.tolist(), y.tolist(), strict=True):
        first = next(i for i, t in enumerate(row_y) if t != -100)
        # the token that predicts the reply's first token closes the prompt's assistant header
        assert tok.decode(row_x[: first + 1], skip_special_tokens=False).endswith("<|im_start|>assistant\n")
        target = tok.decode([t for t in row_y if t != -100], skip_special_tokens=False)
        assert any(a.startswith(target) for a in answers)  # the reply (cut at seq_len), nothing of the prompt
    t = Trainer(Roost.at(home), _cfg(name="sft", init=str(base_dir), sft=True, steps=6, eval_every=3))
    t.train()
    assert any("val_loss" in r for r in read_metrics(home / "runs/sft/metrics.jsonl"))


def test_muon_and_wsd_learn(home: Path) -> None:
    Trainer(Roost.at(home), _cfg(name="muon", optimizer="muon", schedule="wsd", steps=40, lr=3e-3)).train()
    losses = _losses(home, "muon")
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.5


def test_startup_errors(home: Path) -> None:
    with pytest.raises(UsageError, match="RoPE range"):
        Trainer(Roost.at(home), _cfg(name="e", seq_len=512))
    with pytest.raises(UsageError, match="--init"):
        TrainConfig(lora_rank=4)
    base_dir = _tiny_model_dir(home, "base3")
    # a model whose tokenizer differs from the shards' one
    (base_dir / "tokenizer.json").write_text(
        (base_dir / "tokenizer.json").read_text().replace('"<|pad|>"', '"<|pad2|>"')
    )
    with pytest.raises(RoostError, match="built with tokenizer"):
        Trainer(Roost.at(home), _cfg(name="e2", init=str(base_dir)))
    p = run_roost("--home", str(home), "train", "--preset", "nope", check=False)
    assert p.returncode == 2 and "unknown model preset 'nope'" in p.stderr and "Traceback" not in p.stderr
    p = run_roost("--home", str(home), "train", "--steps", "0", check=False)
    assert p.returncode == 2 and "train.steps" in p.stderr


def test_bf16_autocast_and_activation_checkpointing(home: Path) -> None:
    from roost.model.config import load_preset
    from roost.model.llama import Llama

    Trainer(Roost.at(home), _cfg(name="fp32", steps=3)).train()
    Trainer(Roost.at(home), _cfg(name="bf16", steps=3, dtype="bf16")).train()
    a, b = _losses(home, "fp32"), _losses(home, "bf16")
    assert all(abs(x - y) < 0.05 for x, y in zip(a, b, strict=True)) and a != b
    m = Llama(load_preset("tiny"))
    m.init_weights(0)
    x = torch.randint(0, 1024, (2, 64))
    grads = []
    for ac in (False, True):
        m.zero_grad()
        m.gradient_checkpointing = ac
        m(x, torch.roll(x, -1, 1)).backward()
        grads.append([p.grad.clone() for p in m.parameters()])
    assert all(torch.allclose(g0, g1, atol=1e-6) for g0, g1 in zip(*grads, strict=True))


@pytest.mark.slow
def test_torch_compile_matches_eager(home: Path) -> None:
    Trainer(Roost.at(home), _cfg(name="eager", steps=3)).train()
    Trainer(Roost.at(home), _cfg(name="compiled", steps=3, compile=True)).train()
    assert all(abs(x - y) < 1e-3 for x, y in zip(_losses(home, "eager"), _losses(home, "compiled"), strict=True))


def test_auto_dtype_follows_the_probe_and_resume_keeps_it(home: Path) -> None:
    """No --dtype: the probe's pick for training on this CPU, said in one line and recorded in the checkpoint."""
    from roost.probe import choose

    want = choose("train")
    args = ("--home", str(home), "train", "--name", "auto", "--preset", "tiny", "--seq-len", "64", "--batch-size", "8")
    out = run_roost(*args, "--steps", "2", "--ckpt-every", "2", "--no-export").stdout
    assert want.line() in out and "MFU against CPU estimate:" in " ".join(out.split())
    meta = json.loads(next((home / "runs/auto/checkpoints").glob("step_*/meta.json")).read_text())
    assert meta["train_config"]["dtype"] == want.dtype
    again = run_roost(*args, "--steps", "3", "--resume", "--no-export").stdout
    assert f"dtype {want.dtype} (kept from the checkpoint)" in again
