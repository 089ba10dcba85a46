"""X-style search queries: `from:alice to:bob since:2024-01-01 until:2024-02-01 #tag lang:de "exact phrase" -term
filter:replies -filter:replies OR`. `parse()` splits a query into free text and filters, with a clear error for
anything malformed.

Free words rank (lexically in keyword mode, by meaning in semantic mode); everything else the user wrote is an
operator, a hard constraint in every mode: #tags, @mentions and "phrases" (`Query.required`), -exclusions, and
the filters.

Every filter can be negated with a leading `-`, and a negated filter excludes, never selects:
- `-from:alice`, `-to:bob`, `-lang:de`: no post by alice, none mentioning bob, none in German (`Query.not_authors`,
  `not_to`, `not_langs`; repeat them to exclude several). `from:a from:b` means by a or by b; `-from:a -from:b`
  means by neither.
- `-since:D` (not on or after D) is `until:D`, before D; `-until:D` (not before D) is `since:D`, on or after D.
  Date bounds intersect: the latest lower bound and the earliest upper bound hold, and bounds that leave no time
  (`since:D -since:D`) are refused.
- `-filter:replies`: no replies.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

from roost.errors import UsageError

MAX_QUERY_CHARS = 1000
# English function words (and question words) that carry no topic: left out of answer support checks, question
# keyword queries and LLM expansion terms
STOPWORDS = frozenset(
    "a an and are as at be but by can do does for from has have he her his how i if in is it its me my no not of on "
    "or our she so than that the their them then there these they this those to too was we were what when where "
    "which who why will with would you your".split()
)
_TOKEN = re.compile(r'-?"[^"]*"|\S+')
_ENTITY = re.compile(r"[#@]\w")
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]{2,}")


@dataclass
class Query:
    terms: list[str] = field(default_factory=list)  # words, #tags, @mentions, URLs; "OR" kept as an operator
    phrases: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    authors: list[str] = field(default_factory=list)
    to: list[str] = field(default_factory=list)
    since: datetime | None = None  # on or after (since:D, -until:D)
    until: datetime | None = None  # before (until:D, -since:D)
    langs: list[str] = field(default_factory=list)
    replies: bool | None = None  # True: only replies; False: no replies
    not_authors: list[str] = field(default_factory=list)  # -from:
    not_to: list[str] = field(default_factory=list)  # -to:
    not_langs: list[str] = field(default_factory=list)  # -lang:

    @property
    def text(self) -> str:
        """The free text (for embeddings): terms and phrases without operators."""
        return " ".join([t for t in self.terms if t != "OR"] + self.phrases)

    def has_filters(self) -> bool:
        return bool(
            self.authors
            or self.to
            or self.since
            or self.until
            or self.langs
            or self.replies is not None
            or self.not_authors
            or self.not_to
            or self.not_langs
        )

    @property
    def required(self) -> list[str]:
        """The #tags, @mentions and "phrases" that results must contain, in every mode. With OR they are
        alternatives (any one must match, as in keyword mode); an OR that also offers a free word requires none,
        since a free word ranks and constrains nothing."""
        ops = [t for t in self.terms if is_entity(t)] + self.phrases
        if "OR" in self.terms and any(t != "OR" and not is_entity(t) for t in self.terms):
            return []
        return ops


def is_entity(term: str) -> bool:
    """A #tag or @mention: an operator matched as written (case and accents folded), not a free word."""
    return bool(_ENTITY.match(term))


def _date(value: str, op: str) -> datetime:
    try:
        return datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise UsageError(f"{op}:{value} — dates are YYYY-MM-DD") from None


def parse(q: str) -> Query:
    if len(q) > MAX_QUERY_CHARS:
        raise UsageError(f"query of {len(q)} characters; the limit is {MAX_QUERY_CHARS}")
    bad = next((i for i, c in enumerate(q) if "\ud800" <= c <= "\udfff"), None)
    if bad is not None:  # a lone surrogate: an invalid byte from a shell, or a broken client
        raise UsageError(f"the query is not valid Unicode (an invalid byte or lone surrogate at character {bad})")
    q = q.replace("\x00", " ")  # a NUL separates words; no post or store value can hold one
    if not q.strip():
        raise UsageError("empty query")
    if q.count('"') % 2:
        raise UsageError('unbalanced " in the query')
    out = Query()
    for tok in _TOKEN.findall(q):
        neg = tok.startswith("-") and len(tok) > 1
        body = tok[1:] if neg else tok
        if body.startswith('"'):
            phrase = body.strip('"').strip()
            if phrase:
                (out.exclude if neg else out.phrases).append(phrase)
            continue
        op, sep, value = body.partition(":")
        low = op.lower()
        if (
            sep
            and low in ("from", "to", "since", "until", "lang", "filter")
            and not body.startswith(("http:", "https:"))
        ):
            if not value:
                raise UsageError(f"{op}: needs a value, e.g. {op}:alice")
            if low in ("from", "to"):
                if not value.lstrip("@"):
                    raise UsageError(f"{op}:{value} needs a name, e.g. {op}:alice")
                if low == "from":
                    (out.not_authors if neg else out.authors).append(value.lstrip("@"))
                else:
                    (out.not_to if neg else out.to).append(value.lstrip("@"))
            elif low in ("since", "until"):
                day = _date(value, "-" * neg + op)
                if (low == "since") != neg:  # since:D, or -until:D (not before D): on or after D
                    out.since = day if out.since is None else max(out.since, day)
                else:  # until:D, or -since:D (not on or after D): before D
                    out.until = day if out.until is None else min(out.until, day)
            elif low == "lang":
                if not re.fullmatch(r"[a-z]{2,3}", value.lower()):
                    raise UsageError(f"lang:{value} — use a 2- or 3-letter language code")
                (out.not_langs if neg else out.langs).append(value.lower())
            elif value.lower() == "replies":
                out.replies = not neg
            else:
                raise UsageError(f"filter:{value} — only filter:replies / -filter:replies are supported")
            continue
        if neg:
            out.exclude.append(body)
        elif tok == "OR":
            if out.terms and out.terms[-1] != "OR":
                out.terms.append("OR")
        else:
            out.terms.append(tok)
    if out.terms and out.terms[-1] == "OR":
        out.terms.pop()
    if out.since and out.until and out.since >= out.until:
        raise UsageError("since: must be before until: (-since:D means until:D, -until:D means since:D)")
    if not (out.terms or out.phrases or out.has_filters()):
        raise UsageError("the query has nothing to search for (only exclusions?)")
    return out


def cjk_bigrams(text: str) -> str:
    """CJK runs → overlapping bigrams (what the keyword index stores and queries)."""
    return _CJK.sub(lambda m: " ".join(m.group()[i : i + 2] for i in range(len(m.group()) - 1)), text)
