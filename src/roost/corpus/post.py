"""The one record every importer yields (`Post`), and the one way a bad record is reported (`BadRecord`).

Used by `roost ingest`; importers never write to the store directly (ARCHITECTURE.md).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

VISIBILITIES = ("public", "unlisted", "followers", "direct")


# Unicode's Default_Ignorable_Code_Point (DerivedCoreProperties.txt): invisible characters NFKC_Casefold removes
# (zero-width space and joiners, soft hyphen, bidi controls, variation selectors, tag characters, fillers)
_IGNORABLE_RANGES = (
    (0x00AD, 0x00AD), (0x034F, 0x034F), (0x061C, 0x061C), (0x115F, 0x1160), (0x17B4, 0x17B5), (0x180B, 0x180F),
    (0x200B, 0x200F), (0x202A, 0x202E), (0x2060, 0x206F), (0x3164, 0x3164), (0xFE00, 0xFE0F), (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0), (0xFFF0, 0xFFF8), (0x1BCA0, 0x1BCA3), (0x1D173, 0x1D17A), (0xE0000, 0xE0FFF),
)  # fmt: skip
_IGNORABLE = {c: None for lo, hi in _IGNORABLE_RANGES for c in range(lo, hi + 1)}


def author_key(author: str) -> str:
    """The one rule for matching authors everywhere (forget, tombstones, both search backends, re-ingest):
    Unicode's NFKC_Casefold (`NFKC(casefold(NFKC(s)))` without default-ignorable characters), then whitespace
    collapsed and a leading `@` dropped. Case-insensitive as X handles and Mastodon accounts are, with full case
    folding (`Groß` = `GROSS` = `gross`, final `ς` = `σ`), and one spelling per name: canonical and compatibility
    variants are one (`Jürgen` composed or decomposed, the ligature `ﬁ` = `fi`, fullwidth `ａ` = `a`), invisible
    characters (zero-width space, soft hyphen, variation selectors, bidi controls) are nothing, and `@alice ` is
    `alice`. Idempotent (tests/security/test_erasure_names.py). Turkish dotless `ı` stays its own letter
    (casefold keeps it; `İ` folds to `i̇`), as in every locale-independent fold; a name in another script that
    only looks alike (Cyrillic `о`) is another name."""
    s = unicodedata.normalize("NFKC", author).translate(_IGNORABLE)
    s = unicodedata.normalize("NFKC", s.casefold()).translate(_IGNORABLE)
    return " ".join(s.split()).lstrip("@ ")


# `RT @user: …`, `comment RT @user …`, `MT @user: …` (a manual retweet, anywhere in a text, any case)
_RT = re.compile(r"(?<![\w@])[RrMm][Tt]:? @(\w{1,30})(?!\w)")
_AT_URI = re.compile(r"bsky:at://(did:[a-z]{1,16}:[A-Za-z0-9._:%-]{1,256})/")
_AP_URL = re.compile(
    r"mastodon:https?://([A-Za-z0-9.-]{1,253}(?::[0-9]{1,5})?)/(?:users/|u/|accounts/|@)([A-Za-z0-9_.-]{1,64})(?:/|$)"
)
MAX_REPOSTED = 16  # names taken from one post


def reposted_authors(repost_of: str | None, text: str = "") -> list[str]:
    """Whose posts a post carries, as far as its fields say: the author of what `repost_of` names (`@handle` in X
    archives, the author part of a Mastodon status URL as `handle@host` or of a Bluesky `at://` URI, the DID), and
    every `RT @handle` / `MT @handle` in its text. Erasure removes such posts with the forgotten author's own, and
    re-ingest drops them (linear-time, bounded patterns; at most MAX_REPOSTED names)."""
    out: list[str] = []
    if repost_of:
        if repost_of.startswith("@"):
            out.append(repost_of[1:])
        elif (m := _AP_URL.match(repost_of)) is not None:
            out.append(f"{m.group(2)}@{m.group(1)}")
        elif (m := _AT_URI.match(repost_of)) is not None:
            out.append(m.group(1))
    if text and ("@" in text):
        for m in _RT.finditer(text):
            out.append(m.group(1))
            if len(out) >= MAX_REPOSTED:
                break
    return [a for a in dict.fromkeys(out) if a]


_MONTHS = {
    m: i for i, m in enumerate(("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)
}


@dataclass(slots=True)
class Post:
    id: str  # source-qualified: "x:1234", "mastodon:https://…/statuses/1", "bsky:at://did/…/rkey"
    author: str  # handle as the source spells it: "alice", "alice@mastodon.social", "did:plc:…"
    created_at: datetime  # timezone-aware UTC
    text: str
    source: str  # "x", "twitter-api", "mastodon", "bluesky", or a generic source name
    lang: str | None = None  # declared by the source if any; filled by language identification
    reply_to: str | None = None  # id of the post replied to
    quote_of: str | None = None
    repost_of: str | None = None  # id of the reposted post, or "@handle" when only the author is known
    hashtags: list[str] = field(default_factory=list)  # without '#', as written
    mentions: list[str] = field(default_factory=list)  # without '@'
    urls: list[str] = field(default_factory=list)  # expanded
    visibility: str = "public"


@dataclass(slots=True, frozen=True)
class BadRecord:
    """A record that could not be used: where it is and what is wrong, in words a user can act on."""

    file: str
    record: str  # "#12" (index), "id 1234", "line 7", "block bafy…"
    field: str | None
    message: str

    def __str__(self) -> str:
        where = f"{self.file}: record {self.record}"
        if self.field:
            where += f", field '{self.field}'"
        return f"{where}: {self.message}"


class RecordError(ValueError):
    """Raised inside an importer for one record; turned into a BadRecord by the importer loop."""

    def __init__(self, field: str | None, message: str):
        super().__init__(message)
        self.field = field
        self.message = message


def parse_twitter_date(value: object, field: str = "created_at") -> datetime:
    """`Wed Oct 10 20:19:24 +0000 2018` (X archive, API v1.1) or ISO 8601 (API v2) → aware UTC datetime."""
    if not isinstance(value, str) or not value.strip():
        raise RecordError(field, "missing date")
    s = value.strip()
    if s[:1].isascii() and s[:1].isdigit():
        return parse_iso_date(s, field)
    parts = s.split()
    if len(parts) == 6 and parts[4] == "+0000" and parts[1] in _MONTHS:  # the common case, without strptime
        try:
            hh, mm, ss = parts[3].split(":")
            return datetime(int(parts[5]), _MONTHS[parts[1]], int(parts[2]), int(hh), int(mm), int(ss), tzinfo=UTC)
        except ValueError:
            raise RecordError(field, f"unparseable date {s[:40]!r}") from None
    try:
        dt = datetime.strptime(s, "%a %b %d %H:%M:%S %z %Y")
    except ValueError:
        try:
            dt = parsedate_to_datetime(s)
        except (TypeError, ValueError):
            raise RecordError(field, f"unparseable date {s[:40]!r}") from None
    if dt.tzinfo is None:
        raise RecordError(field, f"date without a time zone {s[:40]!r}")
    return dt.astimezone(UTC)


def parse_iso_date(value: object, field: str = "created_at") -> datetime:
    """ISO 8601 with `Z` or an offset (a naive time is taken as UTC) → aware UTC datetime."""
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = value / 1000 if value > 1e11 else value  # epoch seconds or milliseconds
        try:
            return datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):
            raise RecordError(field, f"timestamp out of range: {value}") from None
    elif isinstance(value, str) and value.strip():
        s = value.strip()
        if s.endswith(("Z", "z")):
            s = s[:-1] + "+00:00"
        try:
            dt = datetime.fromisoformat(s)
        except ValueError:
            if re.fullmatch(r"-?[0-9]+(\.[0-9]*)?", s):  # ASCII only: "¹".isdigit() is True
                return parse_iso_date(float(s), field)
            raise RecordError(field, f"unparseable date {value[:40]!r}") from None
    else:
        raise RecordError(field, "missing date")
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    try:
        return dt.astimezone(UTC)
    except OverflowError:
        raise RecordError(field, f"date out of range: {str(value)[:40]!r}") from None


def iso(dt: datetime) -> str:
    """The store's timestamp form: `2018-10-10T20:19:24Z` (sorts as text)."""
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
