"""Where roost keeps everything it writes: one workspace directory, and the only place paths under it are built.

Resolved from `--home DIR`, else `$ROOST_HOME`, else `./roost-home` (see ARCHITECTURE.md). Run
`roost --home DIR corpus stats` to look at one.

Every named artifact lives at `<home>/<kind>/<name>` (`model_dir`, `run_dir`, `tokenizer_dir`, `shard_dir`); names
are checked here (letters, digits, `._-`, at most 64, starting with a letter or digit: no separators, never `.` or
`..`), so no name reaches outside the home. Replacing an existing artifact needs `force` (`claim`) and is an atomic
swap of a finished temp folder (`replace_dir`); roost refuses to replace a folder that does not carry the marker
file it writes into that kind of folder, so it never deletes a folder it did not create at that exact path.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from roost.errors import UsageError

DEFAULT_HOME = "roost-home"
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# the file roost writes into every folder of a kind: a folder without it was not made by roost
MARKERS = {"models": "roost.json", "runs": "config.json", "tokenizers": "tokenizer.json", "shards": "manifest.json"}


def check_name(name: str, what: str = "name") -> str:
    """`name` if it is a safe artifact name, else a UsageError that says what is allowed."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise UsageError(
            f"{what} name {name!r}: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit "
            "(no '/', not '.' or '..')"
        )
    return name


def is_name(name: str) -> bool:
    return isinstance(name, str) and NAME_RE.fullmatch(name) is not None


def replace_dir(tmp: Path, final: Path) -> None:
    """Move the finished folder `tmp` to `final`, atomically replacing what was there (a rename, then the old copy
    is removed). Callers build `tmp` next to `final` and have `claim`ed `final`."""
    old = final.parent / f".{final.name}.old-{os.getpid()}"
    if final.exists() or final.is_symlink():
        final.rename(old)
    tmp.rename(final)
    if old.is_symlink():
        old.unlink()
    elif old.exists():
        shutil.rmtree(old, ignore_errors=True)


def temp_dir_for(final: Path) -> Path:
    """An empty scratch folder beside `final` (same filesystem, so the final rename is atomic)."""
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


@dataclass(frozen=True)
class Workspace:
    """The home directory and every path under it."""

    root: Path

    @classmethod
    def resolve(cls, home: str | os.PathLike[str] | None = None) -> Workspace:
        chosen = home or os.environ.get("ROOST_HOME") or DEFAULT_HOME
        return cls(Path(chosen).expanduser().resolve())

    def ensure(self) -> Workspace:
        self.root.mkdir(parents=True, exist_ok=True)
        return self

    @property
    def corpus_db(self) -> Path:
        return self.root / "corpus.db"

    @property
    def pg_dir(self) -> Path:
        """The data folder of `roost db start`'s local PostgreSQL server (owned by the server's user)."""
        return self.root / "pg"

    @property
    def logs(self) -> Path:
        """Logs of processes roost starts and leaves running (vLLM replicas of `roost serve --vllm N`)."""
        return self.root / "logs"

    @property
    def secret_file(self) -> Path:
        """The home's own key (roost.seal): seals what roost wrote here, so a folder from elsewhere is told apart."""
        return self.root / ".roost" / "secret"

    @property
    def config_file(self) -> Path:
        return self.root / "roost.toml"

    @property
    def exports(self) -> Path:
        return self.root / "exports"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def tokenizers(self) -> Path:
        return self.root / "tokenizers"

    @property
    def shards(self) -> Path:
        return self.root / "shards"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def index_dir(self) -> Path:
        return self.root / "index"

    def model_dir(self, name: str) -> Path:
        return self.models / check_name(name, "model")

    def run_dir(self, name: str) -> Path:
        return self.runs / check_name(name, "run")

    def tokenizer_dir(self, name: str) -> Path:
        return self.tokenizers / check_name(name, "tokenizer")

    def shard_dir(self, name: str) -> Path:
        return self.shards / check_name(name, "shard set")

    def claim(self, path: Path, force: bool) -> Path:
        """Check that roost may write the artifact folder `path` (one of the `*_dir` paths): a new name, or an
        existing folder roost made (its kind's marker file is there) with `force`."""
        kind = path.parent.name
        if path.parent.parent != self.root or kind not in MARKERS:
            raise UsageError(f"{path}: not an artifact folder of the workspace {self.root}")
        check_name(path.name, kind.rstrip("s"))
        if path.is_symlink():
            raise UsageError(f"{path} is a symlink; roost writes only real folders of its own there")
        if not path.exists():
            return path
        if not (path / MARKERS[kind]).is_file():
            raise UsageError(
                f"{path} exists and was not written by roost (no {MARKERS[kind]}); move it away or pick another name"
            )
        if not force:
            raise UsageError(f"{path} exists; pass --force to replace it (or pick another --name)")
        return path
