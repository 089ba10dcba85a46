"""Where roost keeps everything it writes: one workspace directory.

Resolved from `--home DIR`, else `$ROOST_HOME`, else `./roost-home` (see ARCHITECTURE.md). Run
`roost --home DIR corpus stats` to look at one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_HOME = "roost-home"


@dataclass(frozen=True)
class Workspace:
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
