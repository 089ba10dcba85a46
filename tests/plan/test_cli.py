"""`roost plan` as a user runs it: the budget and job modes, JSON that adds up, charts, calibration from a real
roost run, and clear errors for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from roost.context import Roost
from roost.hardware import accelerator
from roost.model.config import load_preset
from roost.train.trainer import TrainConfig, Trainer
from tests.conftest import run_roost
from tests.data.conftest import store_db, tok_path  # noqa: F401
from tests.train.conftest import base_home, home  # noqa: F401


def _json(*args: str) -> dict:
    return json.loads(run_roost("plan", *args, "--json").stdout)


def test_budget_mode_table() -> None:
    out = run_roost("plan", "--gpus", "10000", "--gpu", "h100-sxm", "--days", "30").stdout
    for want in ("10,000 × H100", "Chinchilla (Epoch AI refit)", "llama3-8b", "llama3-70b", "llama3-405b",
                 "best layouts that fit", "MWh", "does not transfer"):  # fmt: skip
        assert want in out, want


def test_budget_mode_json_adds_up() -> None:
    r = _json("--gpus", "10000", "--gpu", "h100-sxm", "--days", "30")
    acc = accelerator("h100")
    assert r["cost_usd"] == pytest.approx(
        [10000 * 30 * 24 * acc.usd_per_hour[0], 10000 * 30 * 24 * acc.usd_per_hour[1]]
    )
    alloc = r["allocation"]
    n, d = alloc["epoch_chinchilla"]["params"], alloc["epoch_chinchilla"]["tokens"]
    assert 6 * n * d == pytest.approx(alloc["budget_flops"], rel=1e-6)
    for j in r["models"]:
        assert j["days"] == pytest.approx(30, rel=1e-6)  # the whole budget goes to each preset
        assert j["layouts"] and all(c["memory_gib"]["total"] < acc.memory_gib for c in j["layouts"])
        world = [c["mesh"] for c in j["layouts"]]
        assert all(m["dp_replicate"] * m["dp_shard"] * m["tp"] * m["pp"] * m["cp"] == 10000 for m in world)


def test_job_mode_matches_the_formula() -> None:
    r = _json("--model", "llama3-70b", "--tokens", "15T", "--gpus", "10000")
    j = r["models"][0]
    flops = load_preset("llama3-70b").flops_per_token(8192) * 15e12
    assert j["flops"] == pytest.approx(flops)
    seconds = flops / (10000 * accelerator("h100").bf16_tflops * 1e12 * j["mfu"] * j["goodput"]["fraction"])
    assert j["days"] == pytest.approx(seconds / 86400)
    assert j["gpu_hours"] == pytest.approx(seconds / 3600 * 10000)
    fixed = _json("--model", "llama3-70b", "--tokens", "1.5e13", "--gpus", "10000", "--mfu", "0.5", "--goodput", "0.9")
    assert fixed["models"][0]["days"] == pytest.approx(flops / (10000 * 989e12 * 0.45) / 86400)


def test_layout_check_and_moe() -> None:
    r = _json("--model", "llama3-405b", "--tokens", "15.6T", "--gpus", "16384", "--tp", "8", "--pp", "16",
              "--recompute", "selective")  # fmt: skip
    assert r["layout_check"]["fits"] and r["layout_check"]["mesh"]["dp_shard"] == 128
    meg = _json("--model", "llama3-405b", "--tokens", "15.6T", "--gpus", "16384", "--tp", "8", "--pp", "16",
                "--recipe", "megatron")  # fmt: skip
    static = {k: sum(x["layout_check"]["memory_gib"][p] for p in ("parameters", "gradients", "optimizer"))
              for k, x in (("adamw", r), ("megatron", meg))}  # fmt: skip
    assert static["megatron"] == pytest.approx(static["adamw"] * 18 / 16)  # bytes per parameter by recipe
    moe = _json("--model", "llama3-8b", "--tokens", "1T", "--gpus", "64", "--experts", "8", "--top-k", "2")
    j = moe["models"][0]
    assert j["total_params"] > 3 * j["active_params"] and j["model"].endswith("moe")


def test_plots(tmp_path: Path) -> None:
    run_roost("plan", "--gpus", "1024", "--gpu", "b200", "--days", "10", "--plot", str(tmp_path))
    run_roost("plan", "--validate", "--plot", str(tmp_path))
    for name in ("plan_frontier.png", "plan_scaling.png", "planner_validation.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


def test_calibrate_from_a_real_run(home: Path) -> None:  # noqa: F811
    cfg = TrainConfig(preset="tiny", seq_len=64, batch_size=8, steps=12, log_every=1, name="cal", dtype="fp32")
    Trainer(Roost.at(home), cfg).train()
    metrics = home / "runs" / "cal" / "metrics.jsonl"
    rows = [json.loads(x) for x in metrics.read_text().splitlines() if '"mfu"' in x]
    measured = sorted(x["mfu"] for x in rows[int(len(rows) * 0.2) :])
    r = _json("--model", "llama3-8b", "--tokens", "1T", "--gpus", "64", "--calibrate", str(metrics))
    j = r["models"][0]
    assert measured[0] <= j["mfu"] <= measured[-1] and "--calibrate" in j["mfu_basis"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--gpus", "100", "--gpu", "h10O", "--days", "3"], "did you mean 'h100'"),
        (["--gpus", "0", "--days", "3"], "--gpus must be"),
        (["--gpus", "-5", "--days", "3"], "--gpus must be"),
        (["--gpus", "100", "--days", "-1"], "--days must be"),
        (["--gpus", "100", "--days", "1e9"], "--days must be"),
        (["--gpus", "100", "--model", "llama3-8b", "--tokens", "lots"], "cannot read 'lots'"),
        (["--gpus", "100", "--model", "llama3-8b", "--tokens", "-1T"], "positive"),
        (["--gpus", "100", "--model", "llama3-9b", "--tokens", "1T"], "unknown model preset"),
        (["--gpus", "100", "--tokens", "1T"], "--tokens needs --model"),
        (["--gpus", "100"], "give a budget"),
        (["--gpus", "64", "--model", "llama3-8b", "--tokens", "1T", "--tp", "16"], "does not divide the model's"),
        (["--gpus", "128", "--model", "llama3-8b", "--tokens", "1T", "--tp", "2", "--pp", "64"], "pipeline stages"),
        (["--gpus", "60", "--model", "llama3-8b", "--tokens", "1T", "--tp", "8"], "not divisible"),
        (["--gpus", "8", "--days", "1", "--mfu", "1.5"], "fractions"),
        (["--gpus", "8", "--days", "1", "--calibrate", "nope.jsonl"], "no such file"),
        (["--gpus", "8", "--days", "1", "--usd-per-hour", "4,2"], "LOW <= HIGH"),
        (["--gpus", "8", "--days", "1", "--seq-len", "999999"], "max_seq_len"),
        (["--gpus", "8", "--days", "1", "--batch-tokens", "1000"], "--batch-tokens"),
        (["--gpus", "8", "--days", "1", "--recipe", "sgd"], "--recipe must be one of"),
    ],
)
def test_bad_input_is_a_clear_error(args: list[str], message: str) -> None:
    p = run_roost("plan", *args, check=False)
    assert p.returncode != 0 and "Traceback" not in p.stderr, p.stderr
    assert message in p.stdout + p.stderr, p.stdout + p.stderr
