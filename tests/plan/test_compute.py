"""FLOPs, the scaling law, goodput and input parsing of the planner, each against an independent computation."""

from __future__ import annotations

import math

import pytest

from roost.errors import UsageError
from roost.model.config import load_preset
from roost.plan import compute
from roost.plan.compute import Shape, parse_count
from roost.plan.goodput import FailureModel, goodput


@pytest.mark.parametrize("preset", ["smollm2-135m", "llama3-8b", "llama3-405b"])
def test_dense_flops_are_the_model_configs(preset: str) -> None:
    cfg = load_preset(preset)
    s = Shape.from_config(cfg)
    assert s.flops_per_token(4096) == cfg.flops_per_token(4096)  # the count FlopCounterMode checks (test_dryrun)
    assert s.total_params == cfg.num_params() and s.active_params == cfg.matmul_params()


def test_moe_active_and_total_parameters() -> None:
    cfg = load_preset("llama3-8b")
    moe = Shape.from_config(cfg, experts=8, top_k=2)
    ffn = 3 * cfg.dim * cfg.ffn_dim * cfg.n_layers
    router = cfg.dim * 8 * cfg.n_layers
    assert moe.total_params == cfg.num_params() + 7 * ffn + router
    assert moe.active_params == cfg.matmul_params() + ffn + router
    # FLOPs follow the active parameters, memory the total
    assert moe.flops_per_token(8192) - Shape.from_config(cfg).flops_per_token(8192) == 6 * (ffn + router)
    with pytest.raises(UsageError, match="top-k"):
        Shape.from_config(cfg, experts=4, top_k=5)


def test_compute_optimal_is_the_minimum_of_the_loss() -> None:
    """The closed form against a brute-force search along the iso-FLOP line."""
    for flops in (1e21, 3.8e25):
        n, d = compute.compute_optimal(flops)
        assert math.isclose(6 * n * d, flops, rel_tol=1e-9)
        grid = [n * 10 ** (k / 200) for k in range(-200, 201)]
        best = min(grid, key=lambda x: compute.chinchilla_loss(x, flops / (6 * x)))
        assert abs(math.log(best / n)) < math.log(10) / 100
    # Epoch AI's refit puts the optimum near 20 tokens per parameter at Chinchilla's scale (5.76e23 FLOPs)
    n, d = compute.compute_optimal(5.76e23)
    assert 15 < d / n < 30
    n20, d20 = compute.rule_of_20(5.76e23)
    assert math.isclose(d20 / n20, 20) and math.isclose(6 * n20 * d20, 5.76e23)


def test_inference_aware_trains_smaller_models_longer() -> None:
    flops = 1e24
    n_opt, d_opt = compute.compute_optimal(flops)
    target = compute.chinchilla_loss(n_opt, d_opt)
    n0, _ = compute.inference_aware(flops, 0.0)
    n1, d1 = compute.inference_aware(flops, 1e14)
    assert abs(n0 / n_opt - 1) < 0.02  # no inference: the compute-optimal model
    assert n1 < 0.8 * n_opt and d1 / n1 > d_opt / n_opt
    assert compute.chinchilla_loss(n1, d1) == pytest.approx(target, rel=1e-6)  # same quality
    assert 6 * n1 * d1 + 2 * n1 * 1e14 < 6 * n_opt * d_opt + 2 * n_opt * 1e14


def test_goodput_failure_model() -> None:
    fm = FailureModel()
    small, big = goodput(128, 8e9, fm), goodput(16384, 405e9, fm)
    assert small.fraction > big.fraction and big.interruptions_per_day > 100 * small.interruptions_per_day
    # Llama 3: ~one interruption per 50k GPU-hours on 16,384 GPUs, ">90% effective training time" (Dubey et al.)
    assert 0.85 < big.fraction < 0.95 and 2.5 < big.mtbf_h < 3.5
    # Young's interval is the optimum of the model: moving it either way loses goodput
    for scale in (0.5, 2.0):
        moved = goodput(16384, 405e9, FailureModel(ckpt_interval_min=big.interval_min * scale))
        assert moved.fraction < big.fraction
    assert goodput(16384, 405e9, FailureModel(restart_min=60)).fraction < big.fraction
    with pytest.raises(UsageError, match="gpu_hours_per_interruption"):
        FailureModel(gpu_hours_per_interruption=0)


@pytest.mark.parametrize(
    ("text", "value"), [("15T", 15e12), ("1.5e12", 1.5e12), ("300B", 300e9), ("16M", 16e6), ("2_000", 2000.0)]
)
def test_parse_count(text: str, value: float) -> None:
    assert parse_count(text) == value


@pytest.mark.parametrize("text", ["", "abc", "-5T", "0", "nan", "inf", "1e400", "15X"])
def test_parse_count_rejects(text: str) -> None:
    with pytest.raises(UsageError):
        parse_count(text, "--tokens")


def test_energy_and_cost() -> None:
    # 1000 GPUs × 700 W × 24 h × 1.5 × 1.2 = 30.24 MWh
    assert compute.energy_kwh(1000, 24, 700, 1.5, 1.2) == pytest.approx(30_240)
    assert compute.cost_usd(1e6, (2.0, 4.0)) == (2e6, 4e6)
