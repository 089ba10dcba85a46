"""PostgreSQL full-text search with roost's own analyser (used by `roost.search.pgsearch.PgSearch`).

PostgreSQL's built-in parsers split `#tag` into `#` + `tag`, break URLs into host and path pieces and have no CJK
segmentation, and a custom parser would have to be C. So the text search "configuration" here is the keyword
index's analyser itself (`roost.search.keyword`, the very same tantivy analyser object, run in Python): CJK runs
become overlapping bigrams, a regex keeps `https://…` URLs, `#hashtags`, `@mentions` and `$cashtags` as single
tokens and splits the rest into Unicode words, then tokens are lowercased and folded to ASCII where a folding
exists (café = cafe, Straße = strasse; Cyrillic, Greek and CJK stay as written). Documents are stored as a
`tsvector` literal with positions (`'tok':1,4 'tok2':2`), queries sent as `tsquery` literals built from the same
tokens — a literal cast is not normalised again by PostgreSQL, so both sides agree token for token:

- a free word or a #tag is the phrase of its tokens (`data-center` → `'data' <-> 'center'`), like tantivy's query;
- `"a phrase"` → `'a' <-> 'phrase'` (FOLLOWED BY, from the positions), `-x` → `!(…)`;
- words are AND-ed, or all OR-ed when the query has an OR (as in the embedded index);
- a word with no searchable token (`©`) is dropped; a text part left with none matches nothing.

Filters (from:/to:/lang:/since:/until:/filter:replies and the negations) become plain SQL on indexed columns.
"""

from __future__ import annotations

from typing import Any

from roost.corpus.post import author_key
from roost.search.query import Query, cjk_bigrams

MAX_LEXEME_BYTES = 2000  # PostgreSQL's limit is 2047 bytes per lexeme
MAX_POSITION = 16383  # and positions above 16383 are clamped
_analyzer: Any = None


def tokens(text: str) -> list[str]:
    """The keyword index's tokens of `text`, in order."""
    global _analyzer
    if _analyzer is None:
        from roost.search.keyword import _analyzer as make

        _analyzer = make()
    out = []
    for t in _analyzer.analyze(cjk_bigrams(text)):
        b = t.encode()
        out.append(t if len(b) <= MAX_LEXEME_BYTES else b[:MAX_LEXEME_BYTES].decode(errors="ignore"))
    return out


def lexeme(token: str) -> str:
    """A token quoted for a tsvector or tsquery literal (quotes and backslashes doubled)."""
    return "'" + token.replace("\\", "\\\\").replace("'", "''") + "'"


def tsvector(text: str) -> str:
    """The tsvector literal of a post: every token with its positions (phrases need them)."""
    where: dict[str, list[int]] = {}
    for i, t in enumerate(tokens(text), 1):
        pos = where.setdefault(t, [])
        if len(pos) < 255:
            pos.append(min(i, MAX_POSITION))
    return " ".join(f"{lexeme(t)}:{','.join(map(str, sorted(set(p))))}" for t, p in where.items())


def phrase(text: str) -> str | None:
    """A word or phrase as a tsquery (its tokens, each followed by the next); None when it has no token."""
    toks = tokens(text)
    return "(" + " <-> ".join(lexeme(t) for t in toks) + ")" if toks else None


def text_query(q: Query) -> str | None:
    """The tsquery of q's words and phrases; None when q has none; '' when none of them has a searchable token
    (the query then matches nothing, like tantivy's empty query)."""
    words = [t for t in q.terms if t != "OR"] + q.phrases
    if not words:
        return None
    parts = [p for w in words if (p := phrase(w)) is not None]
    return (" | " if "OR" in q.terms else " & ").join(parts)


def exclusions(q: Query) -> list[str]:
    """`!(…)` for every -term and -"phrase" that has a token."""
    return [f"!{p}" for ex in q.exclude if (p := phrase(ex)) is not None]


def required(q: Query) -> str | None:
    """The #tags, @mentions and "phrases" a result must contain (any one of them under OR), or None."""
    parts = [p for t in q.required if (p := phrase(t)) is not None]
    if not parts:
        return None
    return "(" + (" | " if "OR" in q.terms else " & ").join(parts) + ")"


def filters(q: Query) -> tuple[list[str], list[Any]]:
    """SQL conditions on search_docs for q's filters (and their negations), with their parameters."""
    sql: list[str] = []
    params: list[Any] = []

    def add(cond: str, value: Any) -> None:
        sql.append(cond)
        params.append(value)

    if q.authors:
        add("author_key = ANY(%s::text[])", [author_key(a) for a in q.authors])
    if q.to:
        add("mentions && %s::text[]", [author_key(a) for a in q.to])
    if q.langs:
        add("lang = ANY(%s::text[])", list(q.langs))
    if q.since:
        add("created >= %s", q.since)
    if q.until:
        add("created < %s", q.until)
    if q.replies is not None:
        add("is_reply = %s", q.replies)
    if q.not_authors:
        add("NOT author_key = ANY(%s::text[])", [author_key(a) for a in q.not_authors])
    if q.not_to:
        add("NOT mentions && %s::text[]", [author_key(a) for a in q.not_to])
    if q.not_langs:
        add("NOT lang = ANY(%s::text[])", list(q.not_langs))
    return sql, params


def constraint(q: Query) -> tuple[list[str], list[Any]]:
    """SQL conditions for every operator of q — filters, required #tags/@mentions/"phrases", exclusions — whatever
    its free words: the posts a semantic search may return. Empty when q has no operator."""
    sql, params = filters(q)
    tsq = ([r] if (r := required(q)) else []) + exclusions(q)
    if tsq:
        sql.append("tsv @@ %s::tsquery")
        params.append(" & ".join(tsq))
    return sql, params


def keyword(q: Query, within: Query | None = None) -> tuple[list[str], list[Any], str | None] | None:
    """(conditions, parameters, ranking tsquery or None) of a keyword search for q; None when it matches nothing.
    `within`: also hold to that query's operators (LLM expansion terms search among the posts q allows)."""
    sql, params = filters(q)
    text = text_query(q)
    if text == "":
        return None
    tsq = ([f"({text})"] if text else []) + exclusions(q)
    if within is not None and (r := required(within)):
        tsq.append(r)
    if tsq:
        sql.append("tsv @@ %s::tsquery")
        params.append(" & ".join(tsq))
    return sql, params, text or None
