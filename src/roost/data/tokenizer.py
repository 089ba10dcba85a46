"""Byte-level BPE tokenizer trained on the post store with HF `tokenizers`, plus a report on any tokenizer.

Run: `roost tokenizer train [--name default] [--vocab-size 32768]` writes
<home>/tokenizers/<name>/{tokenizer.json, tokenizer_config.json, special_tokens_map.json, report.json};
`roost tokenizer report NAME|PATH` measures any tokenizer.json (e.g. an imported model's) on the store.
The directory loads in `transformers` as it is (`AutoTokenizer.from_pretrained(dir)`).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

from roost.config import TokenizerConfig
from roost.corpus.backend import open_reader
from roost.errors import RoostError, UsageError
from roost.hashing import sha256_file
from roost.workspace import is_name, replace_dir, temp_dir_for

BOS, EOS, PAD = "<|startoftext|>", "<|endoftext|>", "<|pad|>"
IM_START, IM_END = "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = [EOS, BOS, PAD, IM_START, IM_END]  # EOS is id 0: the document separator in shards
# ChatML, the template SmolLM2 ships, so fine-tuning either tokenizer looks the same to the trainer.
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# Pre-tokenisation for posts: #hashtags, @mentions, $cashtags and URLs are units BPE can merge whole; digits are
# split one by one (arithmetic and dates generalise); letters keep their combining marks; whitespace runs are
# kept apart from the word after them except a single leading space (GPT-style).
POST_PATTERN = (
    r" ?[#@$][\p{L}\p{M}\p{N}_]+"
    r"| ?https?://[^\s]+"
    r"|(?i:'s|'t|'re|'ve|'m|'ll|'d)"
    r"|[^\r\n\p{L}\p{M}\p{N}]?[\p{L}\p{M}]+"
    r"|\p{N}"
    r"| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+"
    r"|\s+(?!\S)"
    r"|\s+"
)


def build_empty() -> Tokenizer:
    """An untrained byte-level BPE with roost's pre-tokeniser (no normaliser: decode(encode(x)) == x for any x)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(POST_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    return tok


def iter_texts(db: Path | str, limit: int = 0, batch: int = 1_000) -> Iterator[list[str]]:
    """Batches of training text (scrubbed, one copy of each, no reposts); `limit` > 0 samples evenly."""
    with open_reader(db) as store:
        yield from store.training_texts(limit, batch)


def count_posts(db: Path | str) -> int:
    with open_reader(db) as store:
        return store.count_training()


def train(
    db: Path | str,
    out_dir: Path,
    cfg: TokenizerConfig,
    show_progress: bool = False,
    on_batch: Callable[[int], None] | None = None,
) -> Path:
    """Train on the store's training text and save the HF-loadable directory; returns the tokenizer.json path."""
    n = count_posts(db)
    if n == 0:
        raise RoostError(f"{db}: the store has no training posts; ingest some exports first")
    total = min(n, cfg.max_posts) if cfg.max_posts else n
    tok = build_empty()
    trainer = trainers.BpeTrainer(
        vocab_size=cfg.vocab_size,
        min_frequency=cfg.min_frequency,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=show_progress,
    )

    def texts() -> Iterator[str]:
        for batch in iter_texts(db, cfg.max_posts):
            if on_batch:
                on_batch(len(batch))
            yield from batch

    tok.train_from_iterator(texts(), trainer=trainer, length=total)
    return save(tok, out_dir)


def save(tok: Tokenizer, final_dir: Path) -> Path:
    """Write the HF-loadable tokenizer folder: built in a temp folder beside `final_dir`, then swapped in."""
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    out_dir = temp_dir_for(final_dir)
    tok.save(str(out_dir / "tokenizer.json"))
    special = {"bos_token": BOS, "eos_token": EOS, "pad_token": PAD}
    (out_dir / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                **special,
                "unk_token": None,
                "model_max_length": 8192,
                "clean_up_tokenization_spaces": False,
                "chat_template": CHAT_TEMPLATE,
                "additional_special_tokens": [IM_START, IM_END],
            },
            indent=2,
        )
    )
    (out_dir / "special_tokens_map.json").write_text(
        json.dumps({**special, "additional_special_tokens": [IM_START, IM_END]}, indent=2)
    )
    replace_dir(out_dir, final_dir)
    return final_dir / "tokenizer.json"


def resolve(tokenizers_dir: Path, name_or_path: str) -> Path:
    """A tokenizer.json from a name under <home>/tokenizers, a directory holding one, or the file itself."""
    p = Path(name_or_path).expanduser()
    named = [tokenizers_dir / name_or_path / "tokenizer.json"] if is_name(name_or_path) else []
    for cand in (*named, p / "tokenizer.json", p):
        if cand.is_file():
            return cand.resolve()
    raise UsageError(
        f"tokenizer {name_or_path!r}: not a name under {tokenizers_dir}, a directory with "
        "tokenizer.json, or a tokenizer.json file; run `roost tokenizer train` first"
    )


def load(path: Path) -> Tokenizer:
    try:
        return Tokenizer.from_file(str(path))
    except Exception as e:  # the Rust side raises a plain Exception for bad JSON / unknown model types
        raise RoostError(f"{path}: not a valid tokenizer.json ({str(e).splitlines()[0][:200]})") from None


def separator_id(tok: Tokenizer) -> int:
    """The token that ends a document in shards: <|endoftext|>, else the model's own end-of-text token."""
    for t in (EOS, "</s>", "<|eos|>", "<eos>", "<|end_of_text|>", IM_END):
        i = tok.token_to_id(t)
        if i is not None:
            return int(i)
    raise RoostError(f"the tokenizer has none of the end-of-document tokens {EOS!r}, '</s>', '<|end_of_text|>'")


def _partial_byte_ids(tok: Tokenizer) -> set[int]:
    """Ids of single-byte tokens that are only part of a UTF-8 character (what BPE falls back to for new scripts)."""
    out = set()
    for token, i in tok.get_vocab().items():
        if len(token) == 1 and tok.decode([i]) == "\ufffd":
            out.add(i)
    return out


def report(db: Path | str, tok_path: Path, n_posts: int = 20_000) -> dict[str, Any]:
    """Tokens per post, bytes per token and vocabulary coverage, overall and per language, on a store sample."""
    tok = load(tok_path)
    partial = _partial_byte_ids(tok)
    with open_reader(db) as store:
        n = store.count_training()
        rows = store.training_sample_by_lang(n_posts)
    if not rows:
        raise RoostError(f"{db}: the store has no training posts to measure the tokenizer on")
    encs = tok.encode_batch_fast([t for _, t in rows], add_special_tokens=False)
    acc: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"posts": 0, "tokens": 0, "bytes": 0, "partial": 0, "used": set()}
    )
    for (lang, text), enc in zip(rows, encs, strict=True):
        for key in (lang, "all"):
            a = acc[key]
            a["posts"] += 1
            a["tokens"] += len(enc.ids)
            a["bytes"] += len(text.encode("utf-8"))
            a["partial"] += sum(1 for i in enc.ids if i in partial)
            a["used"].update(enc.ids)
    vocab = tok.get_vocab_size()
    per_lang = {}
    for lang, a in sorted(acc.items(), key=lambda kv: -kv[1]["posts"]):
        t = max(a["tokens"], 1)
        per_lang[lang] = {
            "posts": a["posts"],
            "tokens_per_post": round(a["tokens"] / a["posts"], 2),
            "bytes_per_token": round(a["bytes"] / t, 3),
            "coverage": round(1 - a["partial"] / t, 4),  # share of tokens that are not bare UTF-8 fragments
            "vocab_used": round(len(a["used"]) / vocab, 4),
        }
    return {
        "tokenizer": str(tok_path),
        "sha256": sha256_file(tok_path),
        "vocab_size": vocab,
        "sampled_posts": len(rows),
        "of_posts": n,
        "languages": per_lang,
    }
