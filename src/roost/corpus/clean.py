"""The per-post steps of `roost ingest`, in the order it runs them: normalise and validate the text, pull hashtags,
mentions and URLs out of it when a source has no entities, scrub PII from the training text, identify the language.

- `normalise()` is idempotent (property-tested): Unicode NFC, HTML entities decoded, control characters removed,
  runs of spaces folded, at most one blank line, no leading/trailing space.
- `scrub()`: e-mail addresses, phone numbers, payment card numbers (Luhn-checked), IP addresses, and optionally
  @mentions, replaced by placeholders (the store keeps the original and the scrubbed text; training reads the
  scrubbed one). Idempotent, and never leaves a match of its own patterns behind (property-tested).
- `choose_lang()`: language identification with py3langid (langid.py's model), stored as ISO 639-1. URLs,
  mentions and the '#' of hashtags are removed before identification; texts that are too short, or where the model
  is unsure, get "und" — unless the source declared a language.
"""

from __future__ import annotations

import functools
import html
import ipaddress
import itertools
import re
import unicodedata
from collections import Counter
from functools import lru_cache

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


# -- PII scrub (training text) ------------------------------------------------------------------------------------
EMAIL = "<EMAIL>"
PHONE = "<PHONE>"
CARD = "<CARD>"
IP = "<IP>"
MENTION = "@<USER>"

# Every pattern here matches in linear time, and `scrub` stays within 50 ms for any 20k-character post
# (tests/security/test_regex_budget.py; `python -m bench.regex`).
_EMAIL_RE = re.compile(r"(?<![\w.+@-])[\w.+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63})*\.[A-Za-z]{2,24}\b")
# Runs of digit groups separated by single spaces or dashes; `_card` finds the card numbers inside a run:
# 13-19 digits contiguous, in groups of four (4-4-4-4, 4-4-4-4-3, 4-4-4-1..), or Amex/Diners 4-6-5 / 4-6-4, passing
# Luhn. ("42 42 42 42 42 42 42" is not a card; "2024 4000 1000 1000 0008" holds one.) The lookahead skips runs of
# fewer than 13 digits, which `_card` leaves alone anyway: "0:0:0:..." would otherwise call it 10,000 times.
_CARD_RE = re.compile(r"(?<![\w.-])(?=(?:\d[ -]?+){13})\d++(?:[ -]\d++){0,8}(?![\w-])")
_IPV4_RE = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w.]*\d)")
_IPV6_RE = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")
# International (+CC, then groups; trimmed to the number's own length below), North American (555) 123-4567,
# and national numbers with a trunk 0 (030 1234 5678).
# The international branch was `\+\d{1,3}(?:[ .-]?\(?\d{1,4}\)?){1,6}(?!\w)`, which tries every way of cutting a
# run of digits into a 1-3 digit code and up to six 1-4 digit groups before it fails (thousands of paths per '+':
# 0.5-1.5 s for a 20k-character post of "+1111111111111111111x"). A match can only end where a run of digits ends,
# so here each run is cut one way: 4 digits while more follow (`\d{4}(?=\d)`), then the rest (`\d{1,4}+(?!\d)`).
# That cut needs the fewest groups, so it reaches every end any other cut reaches: the same matches, found in
# linear time. The code takes 3 digits when more follow, else the whole run, else all but the last digit (which
# then makes the one group: "+12", "+12) 345").
_PHONE_RE = re.compile(
    r"(?<![\w+])\+(?:\d{3}(?=\d)|\d{1,3}+(?!\d)|\d{1,2}(?=\d(?!\d)))"
    r"(?:[ .-]?\(?(?:\d{4}(?=\d)|\d{1,4}+(?!\d))\)?){1,6}(?!\w)"
    r"|(?<![\w(])\(?\d{3}\)?[ .-]?\d{3}[ .-]\d{4}(?![\w-])"
    r"|(?<!\w)0\d{2,4}[ /-]\d{3,4}[ -]?\d{3,4}(?![\w-])"
)
_MAYBE = re.compile(r"[0-9@]")
_GROUP_RE = re.compile(r"[ .-]?\(?\d+\)?")
_MENTION_RE = re.compile(r"(?<![\w@/<])@(?!<USER>)\w{1,30}(?:@[\w.-]+\.\w+)?")


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _card_shape(lens: list[int]) -> bool:
    if len(lens) == 1:
        return 13 <= lens[0] <= 19
    if lens in ([4, 6, 5], [4, 6, 4]):
        return True
    return len(lens) >= 4 and all(n == 4 for n in lens[:-1]) and 1 <= lens[-1] <= 4 and 13 <= sum(lens) <= 19


def _card(m: re.Match[str], hits: Counter[str]) -> str:
    text = m.group()
    spans = [g.span() for g in re.finditer(r"\d+", text)]
    lens = [hi - lo for lo, hi in spans]
    if sum(lens) < 13:
        return text
    ends = [0, *itertools.accumulate(lens)]  # digits before group i: a window's count without summing it
    out, i, pos = [], 0, 0
    while i < len(spans):
        for size in range(min(5, len(spans) - i), 0, -1):  # the longest card-shaped run of groups at i
            if not 13 <= ends[i + size] - ends[i] <= 19:  # every card shape holds 13-19 digits
                continue
            lo, hi = spans[i][0], spans[i + size - 1][1]
            if _card_shape(lens[i : i + size]) and luhn_ok(re.sub(r"\D", "", text[lo:hi])):
                out.append(text[pos:lo] + CARD)
                hits["card"] += 1
                pos, i = hi, i + size
                break
        else:
            i += 1
    return "".join(out) + text[pos:]


@functools.lru_cache(maxsize=4096)
def _ip_ok(s: str) -> bool:
    # The family is known from the match (only IPv6 has ':'), so no IPv4 parse fails first; cached because a post
    # of 6,000 "::" would otherwise spend ~30 ms of its 50 ms budget in ipaddress.
    try:
        (ipaddress.IPv6Address if ":" in s else ipaddress.IPv4Address)(s)
    except ValueError:
        return False
    return True


def _ip(m: re.Match[str], hits: Counter[str]) -> str:
    if not _ip_ok(m.group()):
        return m.group()
    hits["ip"] += 1
    return IP


def _phone(m: re.Match[str], hits: Counter[str]) -> str:
    s = m.group()
    if not s.startswith("+"):
        hits["phone"] += 1
        return PHONE
    # "+1 555 123 4567 2024" — stop at the first prefix of groups with 10+ digits; the rest is not the number.
    digits, end = 0, 0
    for g in _GROUP_RE.finditer(s, 1):
        digits += sum(c.isdigit() for c in g.group())
        end = g.end()
        if digits >= 10:
            break
    if 8 <= digits <= 15:
        hits["phone"] += 1
        return PHONE + s[end:]
    return s


def scrub(text: str, mentions: bool = False) -> tuple[str, Counter[str]]:
    """Return (scrubbed text, hits by kind). Order matters: e-mails before mentions, cards before phones."""
    hits: Counter[str] = Counter()
    if not mentions and _MAYBE.search(text) is None:  # every pattern but mentions needs a digit or an '@'
        return text, hits
    for _ in range(4):  # replacements can expose new matches at their edges; run to a fixpoint
        before = text
        text, n = _EMAIL_RE.subn(EMAIL, text)  # a fixed replacement: no Python call per match
        if n:
            hits["email"] += n
        text = _CARD_RE.sub(lambda m: _card(m, hits), text)
        text = _IPV4_RE.sub(lambda m: _ip(m, hits), text)
        if ":" in text:
            text = _IPV6_RE.sub(lambda m: _ip(m, hits), text)
        text = _PHONE_RE.sub(lambda m: _phone(m, hits), text)
        if mentions:
            text, n = _MENTION_RE.subn(MENTION, text)
            if n:
                hits["mention"] += n
        if text == before:
            break
    return text, hits


# -- language --------------------------------------------------------------------------------------------------------
_LANG_STRIP = re.compile(r"https?://\S+|(?<!\w)@\w+(?:@[\w.-]+)?|#")
LANG_MIN_CONFIDENCE = 0.5


@lru_cache(maxsize=1)
def _identifier():  # type: ignore[no-untyped-def]
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def detect_lang(text: str, min_chars: int = 12) -> tuple[str, float]:
    """Return (language code or 'und', probability)."""
    body = _LANG_STRIP.sub(" ", text).strip()
    if sum(c.isalpha() for c in body) < min_chars:
        return "und", 0.0
    lang, prob = _identifier().classify(body)
    if prob < LANG_MIN_CONFIDENCE:
        return "und", float(prob)
    return str(lang), float(prob)


def choose_lang(declared: str | None, text: str, min_chars: int = 12) -> str:
    """The language stored on a post: a declared code (normalised to its primary subtag) else the detected one."""
    if declared:
        code = declared.strip().lower().replace("_", "-").split("-")[0]
        if code.isalpha() and 2 <= len(code) <= 3 and code not in ("und", "qme", "qht", "zxx", "qam", "qct", "qst"):
            return code
    return detect_lang(text, min_chars)[0]
