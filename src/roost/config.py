"""Typed configuration: one dataclass per stage, loadable from TOML and overridable from the CLI.

`roost --config my.toml ingest ...` reads `[corpus]`, `[tokenizer]`, `[data]` (and later `[model]`, `[train]`, ...) from the file; a
`roost.toml` inside the workspace is read when no `--config` is given. CLI flags override both.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from roost.errors import UsageError


@dataclass
class CorpusConfig:
    """Settings of `roost ingest` (importers, cleaning, dedup, PII, language, store)."""

    near_dup_threshold: float = 0.8  # estimated Jaccard of character shingles at which a post is a near-dup
    shingle_size: int = 5  # characters per shingle; short posts need short shingles
    num_perm: int = 64  # MinHash permutations
    max_post_chars: int = 20_000  # longer "posts" are rejected (a 10 MB post is a broken record, not a post)
    keep_visibility: tuple[str, ...] = ("public", "unlisted")
    include_deleted: bool = False  # X archive deleted-tweets files
    scrub_mentions: bool = False  # also replace @mentions in the scrubbed text
    min_lang_chars: int = 12  # shorter texts get lang "und" unless the source declares one
    batch_size: int = 2_000  # posts per SQLite transaction
    strict: bool = False  # any bad record is fatal
    workers: int = 0  # processes for per-post work; 0 = all cores (1 = in-process)

    def __post_init__(self) -> None:
        if not 0.0 < self.near_dup_threshold < 1.0:
            raise UsageError(f"corpus.near_dup_threshold must be in (0, 1), got {self.near_dup_threshold}")
        if self.shingle_size < 1:
            raise UsageError(f"corpus.shingle_size must be >= 1, got {self.shingle_size}")
        if self.num_perm < 16:
            raise UsageError(f"corpus.num_perm must be >= 16, got {self.num_perm}")
        if self.max_post_chars < 1 or self.batch_size < 1 or self.workers < 0:
            raise UsageError("corpus.max_post_chars and corpus.batch_size must be >= 1, corpus.workers >= 0")
        allowed = {"public", "unlisted", "followers", "direct"}
        bad = set(self.keep_visibility) - allowed
        if bad:
            raise UsageError(f"corpus.keep_visibility: unknown {sorted(bad)}; allowed {sorted(allowed)}")
        self.keep_visibility = tuple(self.keep_visibility)


@dataclass
class TokenizerConfig:
    """Settings of `roost tokenizer train` (`[tokenizer]`)."""

    vocab_size: int = 32_768
    min_frequency: int = 2  # a pair must occur this often to be merged
    max_posts: int = 2_000_000  # training sample (evenly spaced, deterministic); 0 = every post
    report_posts: int = 20_000  # posts the report encodes

    def __post_init__(self) -> None:
        if not 512 <= self.vocab_size <= 1 << 24:
            raise UsageError(f"tokenizer.vocab_size must be in [512, 2^24], got {self.vocab_size}")
        if self.min_frequency < 1 or self.max_posts < 0 or self.report_posts < 1:
            raise UsageError("tokenizer.min_frequency and report_posts must be >= 1, max_posts >= 0")


@dataclass
class ShardConfig:
    """Settings of `roost tokenize` (`[data]`)."""

    val_fraction: float = 0.01
    split_by: str = "post"  # "post" or "author" (hold out whole authors)
    split_salt: str = "roost"  # change it to draw a different split
    shard_tokens: int = 1 << 28  # tokens per file (512 MiB as uint16)
    batch_posts: int = 4_096  # posts per encode_batch call

    def __post_init__(self) -> None:
        if not 0.0 <= self.val_fraction < 1.0:
            raise UsageError(f"data.val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.split_by not in ("post", "author"):
            raise UsageError(f"data.split_by must be 'post' or 'author', got {self.split_by!r}")
        if self.shard_tokens < 1024 or self.batch_posts < 1:
            raise UsageError("data.shard_tokens must be >= 1024 and data.batch_posts >= 1")


@dataclass
class RoostConfig:
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    data: ShardConfig = field(default_factory=ShardConfig)
    # [train] is checked by `roost train` against roost.train.trainer.TrainConfig (kept out of here: it needs torch)
    train: dict[str, Any] = field(default_factory=dict)


SECTIONS = {"corpus": CorpusConfig, "tokenizer": TokenizerConfig, "data": ShardConfig}


def build_section(cls: type, table: dict[str, Any], where: str) -> Any:
    """A config dataclass from a TOML table; unknown keys and wrong arguments are UsageErrors naming `where`."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(table) - names
    if unknown:
        raise UsageError(f"{where}: unknown setting(s) {sorted(unknown)}; known: {sorted(names)}")
    try:
        return cls(**table)
    except TypeError as e:
        raise UsageError(f"{where}: {e}") from None


def load_config(path: Path | None) -> RoostConfig:
    """Read a roost TOML file (missing path → defaults)."""
    if path is None or not path.exists():
        return RoostConfig()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f"{path}: not valid TOML: {e}") from None
    unknown = set(data) - set(SECTIONS) - {"train"}
    if unknown:
        raise UsageError(f"{path}: unknown section(s) {sorted(unknown)}; known: {sorted([*SECTIONS, 'train'])}")
    for name, table in data.items():
        if not isinstance(table, dict):
            raise UsageError(f"{path}: [{name}] must be a table of settings")
    typed = {name: build_section(cls, data.get(name, {}), f"{path} [{name}]") for name, cls in SECTIONS.items()}
    return RoostConfig(**typed, train=dict(data.get("train", {})))
