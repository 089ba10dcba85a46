"""The BPE tokenizer: round trip, transformers compatibility, special tokens, report figures, CLI and errors."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roost.config import TokenizerConfig
from roost.corpus.rows import TRAINING_WHERE
from roost.data import tokenizer as toklib
from roost.errors import RoostError, UsageError
from tests.conftest import run_roost

POSTY = [
    "Loving #RoostLife with @alice_b 🎉👩‍👩‍👧 https://example.com/a?b=1&c=%20 — $TSLA up 12.5%",
    "  leading spaces\n\nand blank lines\ttabs  ",
    "naïve café 東京 Привет ☕️ 🇺🇦 e\u0301 \u200d",
    "<|endoftext|> is text here, not a token? <|im_start|>",
]


@pytest.fixture(scope="module")
def tok(tok_path: Path):  # type: ignore[no-untyped-def]
    return toklib.load(tok_path)


@pytest.mark.parametrize("text", POSTY)
def test_posts_round_trip(tok, text: str) -> None:  # type: ignore[no-untyped-def]
    ids = tok.encode(text, add_special_tokens=False).ids
    assert tok.decode(ids, skip_special_tokens=False) == text


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_any_text_round_trips(tok, text: str) -> None:  # type: ignore[no-untyped-def]
    assert tok.decode(tok.encode(text, add_special_tokens=False).ids, skip_special_tokens=False) == text


def test_pretokeniser_keeps_post_entities_whole(tok) -> None:  # type: ignore[no-untyped-def]
    pieces = [
        p for p, _ in tok.pre_tokenizer.pre_tokenize_str("see #RoostLife and @alice_b at https://x.org/a?b=1 in 2024")
    ]
    decoded = [tok.decoder.decode([p]) for p in pieces]
    assert " #RoostLife" in decoded and " @alice_b" in decoded and " https://x.org/a?b=1" in decoded
    assert [d for d in decoded if d.strip().isdigit()] == ["2", "0", "2", "4"]  # digits one by one


def test_special_tokens_and_vocab(tok, tok_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert tok.get_vocab_size() == 1024
    for i, t in enumerate(toklib.SPECIAL_TOKENS):
        assert tok.token_to_id(t) == i
    assert toklib.separator_id(tok) == tok.token_to_id(toklib.EOS) == 0
    assert tok.encode("<|im_start|>user", add_special_tokens=False).ids[0] == tok.token_to_id(toklib.IM_START)


def test_transformers_loads_it(tok, tok_path: Path) -> None:  # type: ignore[no-untyped-def]
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(tokenizer_file=str(tok_path))
    auto = AutoTokenizer.from_pretrained(str(tok_path.parent))
    for text in POSTY[:3]:
        ids = tok.encode(text, add_special_tokens=False).ids
        assert fast.encode(text, add_special_tokens=False) == ids
        assert auto.encode(text, add_special_tokens=False) == ids
        assert auto.decode(ids) == text
    assert (auto.eos_token, auto.bos_token, auto.pad_token) == (toklib.EOS, toklib.BOS, toklib.PAD)
    assert auto.eos_token_id == 0
    chat = auto.apply_chat_template(
        [{"role": "user", "content": "hi #there"}], tokenize=False, add_generation_prompt=True
    )
    assert chat == "<|im_start|>user\nhi #there<|im_end|>\n<|im_start|>assistant\n"
    ids = auto.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=True)
    ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
    assert ids.count(tok.token_to_id(toklib.IM_START)) == 1


def test_report_figures(store_db: Path, tok_path: Path, tok) -> None:  # type: ignore[no-untyped-def]
    r = toklib.report(store_db, tok_path, n_posts=100_000)
    con = sqlite3.connect(store_db)
    rows = con.execute(f"SELECT lang, text_scrubbed FROM posts WHERE {TRAINING_WHERE}").fetchall()
    con.close()
    assert r["sampled_posts"] == len(rows)
    n_tok = sum(len(tok.encode(t, add_special_tokens=False).ids) for _, t in rows)
    n_bytes = sum(len(t.encode()) for _, t in rows)
    assert r["languages"]["all"]["tokens_per_post"] == pytest.approx(n_tok / len(rows), abs=0.01)
    assert r["languages"]["all"]["bytes_per_token"] == pytest.approx(n_bytes / n_tok, abs=0.001)
    langs = r["languages"]
    # English dominates the corpus; Thai is rare, so BPE falls back to UTF-8 byte fragments there
    assert langs["en"]["coverage"] > 0.99 and langs["th"]["coverage"] < langs["en"]["coverage"] - 0.2
    assert langs["th"]["bytes_per_token"] < langs["en"]["bytes_per_token"]


def test_sampling_limits_training_posts(store_db: Path, tmp_path: Path) -> None:
    seen: list[int] = []
    toklib.train(store_db, tmp_path / "s", TokenizerConfig(vocab_size=600, max_posts=100), on_batch=seen.append)
    assert 90 <= sum(seen) <= 100


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(RoostError, match="no post store"):
        toklib.train(tmp_path / "nope.db", tmp_path / "o", TokenizerConfig())
    with pytest.raises(UsageError, match="vocab_size"):
        TokenizerConfig(vocab_size=10)
    with pytest.raises(UsageError, match="tokenizer 'ghost'"):
        toklib.resolve(tmp_path, "ghost")
    bad = tmp_path / "bad.json"
    bad.write_text('{"model": 42}')
    with pytest.raises(RoostError, match="bad.json: not a valid tokenizer.json"):
        toklib.load(bad)


def test_cli_train_and_report(tmp_path: Path, store_db: Path) -> None:
    home = tmp_path / "h"
    home.mkdir()
    (home / "corpus.db").write_bytes(store_db.read_bytes())
    out = run_roost("--home", str(home), "tokenizer", "train", "--vocab-size", "700").stdout
    assert "tokens/post" in out and (home / "tokenizers/default/tokenizer.json").is_file()
    assert (home / "tokenizers/default/report.json").is_file()
    out = run_roost("--home", str(home), "tokenizer", "report", str(home / "tokenizers/default")).stdout
    assert "bytes/token" in out
    empty = run_roost("--home", str(tmp_path / "empty"), "tokenizer", "train", check=False)
    assert empty.returncode == 1 and "no post store" in empty.stderr and "Traceback" not in empty.stderr
