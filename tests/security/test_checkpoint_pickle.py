"""A checkpoint folder from elsewhere never runs code: a planted pickle in a sharded (DCP) checkpoint, with the
folder's own bookkeeping forged to match, is refused before torch reads it on every load path (resume, resume on
another layout, export, dry-run --init), and a genuine checkpoint of another home is refused too (the seal is
keyed with this home's secret)."""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
from pathlib import Path

import pytest

from roost.train import checkpoint as ckpt
from tests.conftest import run_roost
from tests.data.conftest import store_db, tok_path  # noqa: F401
from tests.train.conftest import base_home, home  # noqa: F401

COMMON = ["--preset", "tiny", "--seq-len", "64", "--eval-every", "100", "--warmup", "0", "--dtype", "fp32", "-q"]


class Payload:
    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.mkdir, (self.marker,))


def _plant(step: Path, marker: Path) -> None:
    """Replace .metadata with a payload and forge meta.json's own record of file sizes to match."""
    (step / ".metadata").write_bytes(pickle.dumps(Payload(marker)))
    meta = json.loads((step / "meta.json").read_text())
    meta["files"] = {
        str(f.relative_to(step)): f.stat().st_size for f in step.rglob("*") if f.is_file() and f.name != "meta.json"
    }
    (step / "meta.json").write_text(json.dumps(meta))


@pytest.fixture
def sharded(home: Path) -> tuple[Path, Path]:  # noqa: F811
    """A real one-rank sharded run (torchrun), 2 steps, and its checkpoint."""
    run_roost("--home", str(home), "train", "--name", "r", *COMMON, "--steps", "2", "--ckpt-every", "100",
              "--nproc", "1")  # fmt: skip
    assert (home / "models/r/config.json").is_file()  # the export at the end streams the sharded checkpoint
    step = ckpt.list_checkpoints(home / "runs/r/checkpoints")[-1]
    assert (step / ".metadata").is_file() and (step / "roost-seal.json").is_file()
    return home, step


def test_planted_pickle_never_runs_on_any_load_path(sharded: tuple[Path, Path], tmp_path: Path) -> None:
    h, step = sharded
    marker = tmp_path / "PWNED"
    _plant(step, marker)
    attempts = [
        ("train", "--name", "r", *COMMON, "--steps", "3", "--resume", "--no-export"),
        ("train", "--name", "r", *COMMON, "--steps", "3", "--resume", "--no-export", "--nproc", "2", "--dp-shard", "2"),
        ("export", "r", str(tmp_path / "out")),
    ]
    for args in attempts:
        p = run_roost("--home", str(h), *args, check=False)
        out = " ".join((p.stdout + p.stderr).split())
        assert p.returncode != 0 and not marker.exists(), (args, out[-800:])
        assert "never unpickles a checkpoint it did not write in this home" in out, out[-800:]
        assert "Traceback" not in p.stderr or "RoostError" not in p.stderr
    # a forged seal (copied from a genuine checkpoint of this home) does not help either
    run_roost("--home", str(h), "train", "--name", "ok", *COMMON, "--steps", "1", "--ckpt-every", "100",
              "--no-export", "--nproc", "1")  # fmt: skip
    genuine = ckpt.list_checkpoints(h / "runs/ok/checkpoints")[-1]
    shutil.copyfile(genuine / "roost-seal.json", step / "roost-seal.json")
    p = run_roost("--home", str(h), "export", "r", str(tmp_path / "out2"), check=False)
    assert (
        p.returncode != 0 and not marker.exists() and "not written by roost in this home" in " ".join(p.stderr.split())
    )
    # the payload is live: torch's own reader runs it (the control that shows the checks above can fail)
    from torch.distributed.checkpoint import FileSystemReader

    with pytest.raises(Exception):  # noqa: B017 — the payload returns None where metadata was expected
        FileSystemReader(str(step)).read_metadata()
    assert marker.exists()


def test_genuine_checkpoint_of_another_home_is_refused(sharded: tuple[Path, Path], tmp_path: Path) -> None:
    h, _ = sharded
    p = run_roost("--home", str(h), "train", "--name", "r", *COMMON, "--steps", "3", "--resume", "--no-export",
                  "--nproc", "1")  # fmt: skip
    assert p.returncode == 0  # sealed here: resumes
    assert (ckpt.list_checkpoints(h / "runs/r/checkpoints")[-1] / ".metadata").is_file()
    other = tmp_path / "other"
    shutil.copytree(h, other, ignore=shutil.ignore_patterns(".roost"))  # everything but this home's secret
    p = run_roost("--home", str(other), "export", "r", str(tmp_path / "out"), check=False)
    assert p.returncode != 0 and "not written by roost in this home" in " ".join(p.stderr.split())


def test_dry_run_init_reads_no_pickle(home: Path, tmp_path: Path) -> None:  # noqa: F811
    marker = tmp_path / "PWNED"
    evil = tmp_path / "evil-model"
    evil.mkdir()
    (evil / "config.json").write_text(
        json.dumps({"architectures": ["LlamaForCausalLM"], "hidden_size": 64, "num_hidden_layers": 2,
                    "num_attention_heads": 2, "num_key_value_heads": 2, "intermediate_size": 128,
                    "vocab_size": 512, "max_position_embeddings": 128})
    )  # fmt: skip
    for name in (".metadata", "pytorch_model.bin", "training_args.bin", "optimizer.pt"):
        (evil / name).write_bytes(pickle.dumps(Payload(marker)))
    p = run_roost("--home", str(home), "train", "--dry-run", "--init", str(evil), "--name", "d", check=False)
    assert not marker.exists(), p.stdout[-500:] + p.stderr[-500:]
    p = run_roost("--home", str(home), "train", "--name", "d2", "--init", str(evil), *COMMON, "--steps", "1",
                  check=False)  # fmt: skip
    assert not marker.exists() and p.returncode != 0, p.stdout[-500:] + p.stderr[-500:]


def test_foreign_meta_json_cannot_name_a_path_or_crash(home: Path, tmp_path: Path) -> None:  # noqa: F811
    """A one-process checkpoint is safetensors + JSON; the JSON is still a stranger's: the run keeps its own name
    (a name in the file cannot send the export elsewhere), and a malformed config is a clear error."""
    run_roost("--home", str(home), "train", "--name", "r1", *COMMON, "--steps", "2", "--ckpt-every", "2",
              "--no-export")  # fmt: skip
    shutil.copytree(home / "runs/r1", home / "runs/evil")
    step = ckpt.list_checkpoints(home / "runs/evil/checkpoints")[-1]
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "important.txt").write_text("precious")
    meta = json.loads((step / "meta.json").read_text())
    meta["train_config"]["name"] = str(victim)
    (step / "meta.json").write_text(json.dumps(meta))
    run_roost("--home", str(home), "train", "--name", "evil", *COMMON, "--steps", "3", "--resume", check=False)
    assert (victim / "important.txt").read_text() == "precious" and not (victim / "config.json").exists()
    meta["train_config"]["shards"] = "../../etc"
    (step / "meta.json").write_text(json.dumps(meta))
    p = run_roost(
        "--home", str(home), "train", "--name", "evil", *COMMON, "--steps", "4", "--resume-from", step.name, check=False
    )
    assert p.returncode != 0 and "Traceback" not in p.stderr, p.stderr[-500:]
    meta["train_config"] = {"bogus": 1}
    (step / "meta.json").write_text(json.dumps(meta))
    p = run_roost(
        "--home", str(home), "train", "--name", "evil", *COMMON, "--steps", "4", "--resume-from", step.name, check=False
    )
    assert p.returncode != 0 and "train_config" in p.stderr and "Traceback" not in p.stderr, p.stderr[-500:]


@pytest.mark.parametrize("mode", [0o666, 0o644, 0o620])
def test_a_home_secret_others_can_read_or_write_is_refused(tmp_path: Path, mode: int) -> None:
    """A secret that group or others can read could forge seals; one they can write could be swapped: refused,
    naming the file and the fix, before any seal is made or checked."""
    from roost.errors import RoostError
    from roost.seal import seal, verify
    from roost.workspace import Workspace

    own, folder = tmp_path / "home", tmp_path / "ckpt"
    folder.mkdir()
    (folder / "w.safetensors").write_bytes(b"weights")
    seal(Workspace(own), folder)  # creates the secret, mode 0600
    secret = Workspace(own).secret_file
    assert secret.stat().st_mode & 0o777 == 0o600
    os.chmod(secret, mode)
    for call in (lambda: seal(Workspace(own), folder), lambda: verify(Workspace(own), folder)):
        with pytest.raises(RoostError, match=re.escape(f"chmod 600 {secret}")):
            call()
    os.chmod(secret, 0o600)
    seal(Workspace(own), folder)
    verify(Workspace(own), folder)
