"""The planner against the published training runs (roost/plan/published_training_runs.csv, with sources):
accelerator-hours from params, tokens, shapes and hardware — with the published MFU, and with the planner's own
MFU table, leave-one-out."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from roost.errors import UsageError
from roost.plan.mfu import lookup, seeds_from_runs
from roost.plan.planner import validate
from roost.plan.runs import RUNS_CSV, load_runs

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "published_training_runs.csv"


@pytest.fixture(scope="module")
def result() -> dict:
    return validate()


def test_the_packaged_copy_is_the_shared_data() -> None:
    if SHARED.is_file():  # in the team's checkout; a clean clone carries only the packaged copy
        assert RUNS_CSV.read_text() == SHARED.read_text()
    runs = load_runs()
    assert len([r for r in runs if r.tier == "A"]) >= 18 and all(r.source for r in runs)


def test_published_mfu_predicts_hours_within_10_percent(result: dict) -> None:
    """Runs that publish a steady-state MFU: FLOPs / (GPUs × peak × MFU × modelled goodput) within ±10 % of the
    published accelerator-hours. PaLM is the exception the docs explain: its published chip-hours include, in
    the paper's words, "some downtime and repeated steps" — 31 % effective against 46.2 % steady state."""
    rows = {x["run"]: x for x in result["runs"]}
    for name in ("LLaMA-65B", "Llama-3.1-405B", "BLOOM-176B", "Gopher-280B"):
        assert abs(rows[name]["error_published_mfu"]) <= 0.10, (name, rows[name]["error_published_mfu"])
    assert -0.35 < rows["PaLM-540B"]["error_published_mfu"] < -0.2  # under-predicts by the stated downtime


def test_planner_mfu_within_1_5x_and_leave_one_out_median_under_20_percent(result: dict) -> None:
    tier_a = [x for x in result["runs"] if x["tier"] == "A"]
    for x in tier_a:
        ratio = x["hours_planner"] / x["published_hours"]
        assert 1 / 1.5 <= ratio <= 1.5, (x["run"], ratio)
    assert result["tier_a_median_abs_error"] <= 0.20
    assert result["tier_a_worst_ratio"] <= 1.5


def test_leave_one_out_does_not_see_the_run_it_predicts(tmp_path: Path) -> None:
    """Change one run's published hours tenfold: its own prediction must not move (it is not in its table)."""
    rows = list(csv.DictReader(RUNS_CSV.read_text().splitlines()))
    for r in rows:
        if r["run"] == "LLaMA-33B":
            r["published_accelerator_hours"] = str(float(r["published_accelerator_hours"]) * 10)
    path = tmp_path / "runs.csv"
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    before = {x["run"]: x for x in validate()["runs"]}
    after = {x["run"]: x for x in validate(path=path)["runs"]}
    assert after["LLaMA-33B"]["hours_planner"] == pytest.approx(before["LLaMA-33B"]["hours_planner"])
    assert after["LLaMA-65B"]["hours_planner"] != pytest.approx(before["LLaMA-65B"]["hours_planner"])


def test_tier_b_is_a_band(result: dict) -> None:
    for x in result["runs"]:
        lo, hi = x["hours_band"]
        assert lo <= x["hours_planner"] <= hi


def test_mfu_table_falls_back_to_wider_groups() -> None:
    seeds = seeds_from_runs(load_runs())
    h100 = lookup("H100", 70e9, seeds)
    assert h100.basis.startswith("H100") and 0.2 < h100.mfu < 0.6
    unseen = lookup("B200", 70e9, seeds)  # no published B200 run: every size-class peer
    assert unseen.basis.startswith("all hardware") and unseen.n > 3
    with pytest.raises(UsageError, match="--mfu"):
        lookup("H100", 70e9, [])


def test_bad_runs_file_names_the_line_and_field(tmp_path: Path) -> None:
    text = RUNS_CSV.read_text().splitlines()
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join([text[0], text[1].replace("1.0e12", "lots"), *text[2:]]) + "\n")
    with pytest.raises(UsageError, match=r"line 2 \(LLaMA-7B\): field 'tokens'"):
        load_runs(bad)
    gpu = tmp_path / "gpu.csv"
    gpu.write_text("\n".join([text[0], text[1].replace("A100-80GB", "A100-81GB")]) + "\n")
    with pytest.raises(UsageError, match="field 'hardware'.*did you mean"):
        load_runs(gpu)
