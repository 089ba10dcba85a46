"""Typed configuration: one dataclass per stage, loadable from TOML and overridable from the CLI.

`roost --config my.toml ingest ...` reads `[corpus]`, `[tokenizer]`, `[data]`, `[search]`, `[serve]`, `[store]` and
`[train]` from the file; a `roost.toml` inside the workspace is read when no `--config` is given. CLI flags override
both.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from roost.errors import UsageError
from roost.registry import StoreKind, search_kind, store_kind

FLAG = "roost.flag"  # the metadata key of a setting that is also a command-line option: its help text


def flag(default: Any, help: str = "", *, always: bool = False, decls: tuple[str, ...] = ()) -> Any:
    """A setting that is also an option of its verb (roost.cli.app `config_options`): `--seq-len` for `seq_len`, or
    `decls`, with this help text. `always`: the option's own default is the field's and wins over roost.toml (shown
    in --help as the default); otherwise an option left out changes nothing."""
    return field(default=default, metadata={FLAG: help, "always": always, "decls": decls})


@dataclass
class CorpusConfig:
    """Settings of `roost ingest` (importers, cleaning, dedup, PII, language, store)."""

    # estimated Jaccard of character shingles at which a post is a near-dup
    near_dup_threshold: float = flag(0.8, "Jaccard threshold in (0, 1); default 0.8.")
    shingle_size: int = 5  # characters per shingle; short posts need short shingles
    num_perm: int = 64  # MinHash permutations
    max_post_chars: int = 20_000  # longer "posts" are rejected (a 10 MB post is a broken record, not a post)
    keep_visibility: tuple[str, ...] = ("public", "unlisted")
    include_deleted: bool = flag(False, "X archives: also deleted tweets.")  # X archive deleted-tweets files
    scrub_mentions: bool = flag(False, "Also replace @mentions in training text.")  # in the scrubbed text
    min_lang_chars: int = 12  # shorter texts get lang "und" unless the source declares one
    batch_size: int = 2_000  # posts per SQLite transaction
    strict: bool = flag(False, "Any bad record is fatal; nothing is written.")
    workers: int = flag(0, "Worker processes (0 = all cores).")  # 1 = in-process

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

    vocab_size: int = flag(32_768, "Vocabulary size (default 32768).")
    min_frequency: int = flag(2, "Merge pairs seen at least this often.")  # to be merged
    # training sample (evenly spaced, deterministic); 0 = every post
    max_posts: int = flag(2_000_000, "Train on an even sample of this many posts (0 = all).")
    report_posts: int = 20_000  # posts the report encodes

    def __post_init__(self) -> None:
        if not 512 <= self.vocab_size <= 1 << 24:
            raise UsageError(f"tokenizer.vocab_size must be in [512, 2^24], got {self.vocab_size}")
        if self.min_frequency < 1 or self.max_posts < 0 or self.report_posts < 1:
            raise UsageError("tokenizer.min_frequency and report_posts must be >= 1, max_posts >= 0")


@dataclass
class ShardConfig:
    """Settings of `roost tokenize` (`[data]`)."""

    val_fraction: float = flag(0.01, "Share held out for validation (default 0.01).")
    split_by: str = flag("post", "post (default) or author: hold out whole authors.")
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
class SearchConfig:
    """Settings of `roost index`, `roost search`, `roost ask` and the search side of `roost serve` (`[search]`)."""

    mode: str = flag("hybrid", "keyword, semantic or hybrid (default).")
    backend: str = "embedded"  # embedded (tantivy + usearch in <home>/index) | postgres (the store's database)
    k: int = flag(10, "Results (default [search] k, 10).", decls=("-k",))  # results returned
    rrf_k: int = 60  # reciprocal rank fusion constant
    keyword_weight: float | None = None  # fusion weights; None = tuned by `roost eval search --tune`, else 1.0
    semantic_weight: float | None = None
    recency: float = flag(0.0, "Boost for recent posts (default [search] recency, 0).")  # 0 = off
    vectors: str = "f32"  # f32 or i8 (HNSW quantised to int8: 4× smaller graph vectors)
    refresh_ms: int = 50  # real time: new posts are committed and searchable after at most this long (+ embed)
    min_similarity: float = 0.3  # ask: abstain when the best cosine of question and post is below this
    answer_posts: int = 5  # ask: posts the model reads
    expand: bool = False  # LLM query expansion (on only where `roost eval search` shows a gain)
    embed_dtype: str = "auto"  # auto (roost.probe picks by CPU class) | fp32 | bf16

    def __post_init__(self) -> None:
        search_kind(self.backend)  # a UsageError naming the backends there are
        if self.mode not in ("keyword", "semantic", "hybrid"):
            raise UsageError(f"search.mode must be keyword, semantic or hybrid, got {self.mode!r}")
        if self.vectors not in ("f32", "i8"):
            raise UsageError(f"search.vectors must be f32 or i8, got {self.vectors!r}")
        if self.embed_dtype not in ("auto", "fp32", "bf16"):
            raise UsageError(f"search.embed_dtype must be auto, fp32 or bf16, got {self.embed_dtype!r}")
        if not 1 <= self.k <= 1000 or self.rrf_k < 1 or not 1 <= self.answer_posts <= 20:
            raise UsageError("search.k in 1..1000, search.rrf_k >= 1, search.answer_posts in 1..20")
        if not 1 <= self.refresh_ms <= 60_000:
            raise UsageError(f"search.refresh_ms must be in 1..60000, got {self.refresh_ms}")
        for w in (self.keyword_weight, self.semantic_weight):
            if w is not None and not 0.0 <= w <= 100.0:
                raise UsageError(f"search weights must be in [0, 100], got {w}")


@dataclass
class ServeSettings:
    """`[serve]` in roost.toml: where generation runs when not in process (flags override)."""

    upstreams: list[str] = field(default_factory=list)  # OpenAI-compatible servers (vLLM) serving the model
    upstream_sha256: str | None = None  # the operator's word for what upstreams roost did not start serve

    def __post_init__(self) -> None:
        if not isinstance(self.upstreams, list) or not all(
            isinstance(u, str) and u.startswith(("http://", "https://")) for u in self.upstreams
        ):
            raise UsageError("[serve] upstreams must be a list of http(s):// URLs")


@dataclass
class StoreSettings:
    """`[store]` in roost.toml: where the post store is (`--store` overrides). No url: `<home>/corpus.db` (SQLite)."""

    url: str | None = None  # postgresql://user:password@host/db (see `roost db start` for a local one)

    def __post_init__(self) -> None:
        if self.url is not None and not (isinstance(self.url, str) and store_kind(self.url) is StoreKind.POSTGRES):
            raise UsageError("[store] url must be a postgresql:// URL (leave it out for the SQLite store)")


@dataclass
class RoostConfig:
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    data: ShardConfig = field(default_factory=ShardConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    serve: ServeSettings = field(default_factory=ServeSettings)
    store: StoreSettings = field(default_factory=StoreSettings)
    # [train] is checked by `roost train` against roost.train.config.TrainConfig (the training stage owns it)
    train: dict[str, Any] = field(default_factory=dict)


SECTIONS = {
    "corpus": CorpusConfig,
    "tokenizer": TokenizerConfig,
    "data": ShardConfig,
    "search": SearchConfig,
    "serve": ServeSettings,
    "store": StoreSettings,
}


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
