"""Normalise and validate post text; pull hashtags, mentions and URLs out of text when a source has no entities.

Part of `roost ingest`. `normalise()` is idempotent (property-tested): Unicode NFC, HTML entities decoded,
control characters removed, runs of spaces folded, at most one blank line, no leading/trailing space.
"""

from __future__ import annotations

import html
import re
import unicodedata

from roost.corpus.post import Post, RecordError, author_key

# Every pattern here matches in linear time (tests/security/test_regex_budget.py; `python -m bench.regex`).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b\u2028\u2029\ufeff]")
_SPACES = re.compile(r"[ \t\u00a0\u2000-\u200a\u202f\u205f\u3000]+")
# Spaces around a newline. ` *\n *` would rescan a run of n spaces from each of its n positions (quadratic); here
# only a run's first space may start one (`(?<! )`), and a newline right after an earlier match needs none.
_SPACE_NL = re.compile(r"(?:(?<! ) ++)?\n *+")
_MANY_NL = re.compile(r"\n{3,}")
_SURROGATE = re.compile(r"[\ud800-\udfff]")

# A hashtag is a run of word characters with a letter in it: digits/underscores, the first letter, the rest (the
# same match as `\w*[^\W\d_]\w*`, without backtracking through the run).
HASHTAG_RE = re.compile(r"(?<![\w#&/])#([\d_]*+[^\W\d_]\w*+)")
MENTION_RE = re.compile(r"(?<![\w@/])@(\w{1,30}(?:@[\w.-]+\.\w+)?)")
URL_RE = re.compile(r"https?://[^\s<>\"'`]+[^\s<>\"'`.,;:!?)\]}]")


def _step(text: str) -> str:
    text = unicodedata.normalize("NFC", text)
    text = html.unescape(text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub("", text)
    text = _SPACES.sub(" ", text)
    text = _SPACE_NL.sub("\n", text)
    text = _MANY_NL.sub("\n\n", text)
    return unicodedata.normalize("NFC", text.strip())


def normalise(text: str) -> str:
    """Normalise post text to a fixpoint (entity decoding can expose more to normalise: `&amp;lt;` → `<`)."""
    for _ in range(8):
        nxt = _step(text)
        if nxt == text:
            break
        text = nxt
    return text


def check_text(raw: object, max_chars: int) -> str:
    """Validate raw text of a record before normalising: string, UTF-8, no NUL, not absurdly long."""
    if not isinstance(raw, str):
        raise RecordError("text", "missing" if raw is None else f"expected a string, got {type(raw).__name__}")
    if len(raw) > max_chars:
        raise RecordError(
            "text", f"{len(raw):,} characters is longer than the {max_chars:,} allowed (corpus.max_post_chars)"
        )
    if "\x00" in raw:
        raise RecordError("text", "contains NUL bytes")
    if _SURROGATE.search(raw):
        raise RecordError("text", "invalid UTF-8 bytes (the file is not UTF-8 here)")
    return raw


def _check_field(value: str | None, name: str) -> None:
    if value is not None and (_SURROGATE.search(value) or "\x00" in value):
        raise RecordError(name, "invalid UTF-8 or NUL bytes")


def check_keys(post: Post) -> None:
    """The fields the store is asked about before cleaning (id, author): valid Unicode, or RecordError."""
    for name in ("id", "author"):
        value = getattr(post, name)
        if not isinstance(value, str):
            raise RecordError(name, f"must be a string, got {type(value).__name__}")
        _check_field(value, name)


def clean_post(post: Post, max_chars: int) -> Post:
    """Normalise a post in place and fill entity fields from the text when the source gave none."""
    post.text = normalise(check_text(post.text, max_chars))
    for name in ("id", "author", "reply_to", "quote_of", "repost_of", "lang"):
        _check_field(getattr(post, name), name)
    for name in ("id", "reply_to", "quote_of", "repost_of"):  # ids are one line each in shard .ids files
        value = getattr(post, name)
        if value is not None and any(unicodedata.category(c) == "Cc" or c in "\u2028\u2029" for c in value):
            raise RecordError(name, "contains a control character or line break")
    if not author_key(post.author):
        raise RecordError("author", "empty (no visible character)")
    if not post.text and post.repost_of is None:
        raise RecordError("text", "empty after normalising")
    if not post.hashtags:
        post.hashtags = extract_hashtags(post.text)
    if not post.mentions:
        post.mentions = extract_mentions(post.text)
    if not post.urls:
        post.urls = extract_urls(post.text)
    for name in ("hashtags", "mentions", "urls"):
        values = getattr(post, name)
        for v in values:
            _check_field(v, name)
        setattr(post, name, list(dict.fromkeys(values)))  # unique, order kept
    return post


def extract_hashtags(text: str) -> list[str]:
    return HASHTAG_RE.findall(text)


def extract_mentions(text: str) -> list[str]:
    return MENTION_RE.findall(text)


def extract_urls(text: str) -> list[str]:
    return URL_RE.findall(text)
