"""The workspace owns every path: names cannot reach outside the home, replacing needs --force and is atomic, and
roost never deletes a folder it did not write (the `roost import .` / `..` / `--name ../../X` reports)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from roost.errors import UsageError
from roost.workspace import Workspace, check_name
from tests.data.conftest import store_db, tok_path  # noqa: F401
from tests.serve.conftest import model_dir  # noqa: F401


def _roost(home: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("roost")
    return subprocess.run(
        [str(exe), "--home", str(home), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "COLUMNS": "200"},
    )


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize("bad", ["", ".", "..", "../x", "a/b", "/tmp/x", "..\\x", "-x", ".hidden", "x" * 65, "a\x00"])
def test_bad_names_are_refused(bad: str, tmp_path: Path) -> None:
    ws = Workspace(tmp_path)
    for build in (ws.model_dir, ws.run_dir, ws.tokenizer_dir, ws.shard_dir):
        with pytest.raises(UsageError, match="letters, digits"):
            build(bad)
    assert check_name("smollm2-replies_v1.2") == "smollm2-replies_v1.2"


def test_import_dot_and_dotdot_inside_a_model_folder(tmp_path: Path, model_dir: Path) -> None:  # noqa: F811
    home = tmp_path / "home"
    for name in ("a", "b"):
        p = _roost(home, "import", str(model_dir), "--name", name)
        assert p.returncode == 0, p.stderr
    before = _tree(home)
    inside = home / "models" / "a"
    dot = _roost(home, "import", ".", cwd=inside)  # derives the name "a": it exists
    assert dot.returncode == 2 and "--force" in dot.stderr and "Traceback" not in dot.stderr
    dotdot = _roost(home, "import", "..", cwd=inside)  # <home>/models is not a model directory
    assert dotdot.returncode != 0 and "Traceback" not in dotdot.stderr
    assert _tree(home) == before  # nothing deleted, nothing added
    again = _roost(home, "import", ".", "--force", cwd=inside)  # replacing a model with itself works
    assert again.returncode == 0, again.stderr
    assert (home / "models" / "b" / "model.safetensors").is_file() and (inside / "model.safetensors").is_file()


def test_names_cannot_escape_the_home(tmp_path: Path, model_dir: Path, store_db: Path) -> None:  # noqa: F811
    home = tmp_path / "home"
    outside = tmp_path / "X"
    outside.mkdir()
    (outside / "keep.txt").write_text("mine")
    home.mkdir()
    (home / "corpus.db").write_bytes(store_db.read_bytes())
    attempts = [
        ("import", str(model_dir), "--name", "../../X"),
        ("import", str(model_dir), "--name", str(outside)),
        ("tokenizer", "train", "--name", "../../X", "--vocab-size", "300"),
        ("tokenizer", "train", "--name", str(outside), "--vocab-size", "300"),
        ("tokenize", "--name", "../../X"),
        ("train", "--name", "../../X", "--preset", "tiny", "--steps", "1"),
        ("train", "--name", "ok", "--shards", "../../X", "--preset", "tiny", "--steps", "1"),
    ]
    for args in attempts:
        p = _roost(home, *args, "--force")
        assert p.returncode == 2, (args, p.stdout, p.stderr)
        assert "letters, digits" in p.stderr and "Traceback" not in p.stderr, (args, p.stderr)
    assert _tree(outside) == {"keep.txt"} and (outside / "keep.txt").read_text() == "mine"
    assert (home / "corpus.db").is_file()


def test_replace_needs_force_and_never_deletes_foreign_folders(tmp_path: Path, model_dir: Path) -> None:  # noqa: F811
    home = tmp_path / "home"
    assert _roost(home, "import", str(model_dir), "--name", "m").returncode == 0
    first = (home / "models" / "m" / "roost.json").read_text()
    p = _roost(home, "import", str(model_dir), "--name", "m")
    assert p.returncode == 2 and "pass --force" in p.stderr
    assert _roost(home, "import", str(model_dir), "--name", "m", "--force").returncode == 0
    assert (home / "models" / "m" / "roost.json").read_text() == first  # same source, same provenance
    assert not [x for x in (home / "models").iterdir() if x.name.startswith(".")]  # no temp folder left
    mine = home / "models" / "notes"  # a folder the user made in models/
    mine.mkdir()
    (mine / "todo.txt").write_text("keep me")
    p = _roost(home, "import", str(model_dir), "--name", "notes", "--force")
    assert p.returncode == 2 and "not written by roost" in p.stderr
    assert (mine / "todo.txt").read_text() == "keep me"
    out = tmp_path / "export-here"  # export never replaces a folder that is not a model directory
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    p = _roost(home, "export", "m", str(out), "--force")
    assert p.returncode == 2 and "not a roost model directory" in p.stderr
    assert (out / "thesis.tex").read_text() == "years of work"
    assert _roost(home, "export", "m", str(tmp_path / "fresh")).returncode == 0
    assert _roost(home, "export", "m", str(tmp_path / "fresh")).returncode == 2
    assert _roost(home, "export", "m", str(tmp_path / "fresh"), "--force").returncode == 0


def test_hostile_review_cases(tmp_path: Path, model_dir: Path) -> None:  # noqa: F811
    """Found by attacking the first version: --force must not remove the model it fine-tunes from, export --force
    must not take a folder that merely has a config.json (or a run folder), a run folder roost did not write is
    refused, and a symlink at an artifact path is refused up front."""
    home = tmp_path / "home"
    assert _roost(home, "import", str(model_dir), "--name", "imp").returncode == 0
    p = _roost(home, "train", "--name", "imp", "--init", "imp", "--force", "--steps", "1")
    assert p.returncode == 2 and "--force would replace" in p.stderr
    assert (home / "models" / "imp" / "roost.json").is_file()
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "config.json").write_text("{}")
    (proj / "main.py").write_text("print('mine')")
    p = _roost(home, "export", "imp", str(proj), "--force")
    assert p.returncode == 2 and (proj / "main.py").is_file()
    mine = home / "runs" / "foo"
    mine.mkdir(parents=True)
    (mine / "precious.txt").write_text("keep")
    p = _roost(home, "train", "--name", "foo", "--preset", "tiny", "--steps", "1")
    assert p.returncode == 2 and "not written by roost" in p.stderr and (mine / "precious.txt").read_text() == "keep"
    (home / "tokenizers").mkdir()
    (home / "tokenizers" / "dang").symlink_to(tmp_path / "nowhere")
    p = _roost(home, "tokenizer", "train", "--name", "dang", "--force")
    assert p.returncode == 2 and "symlink" in p.stderr and "Traceback" not in p.stderr
    p = _roost(home, "export", "imp", ".", "--force", cwd=proj)
    assert p.returncode == 2 and (proj / "main.py").is_file()
