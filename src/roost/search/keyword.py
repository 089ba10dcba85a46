"""The keyword index: tantivy with BM25. One analyser keeps #hashtags, @mentions, $cashtags and URLs as exact
tokens, lowercases and folds diacritics (café = cafe), works for Cyrillic/Arabic words, and indexes CJK as
overlapping bigrams. Fast fields for author, time, language and reply/repost flags make filters cheap.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import tantivy

from roost.corpus.post import author_key
from roost.errors import RoostError
from roost.search.query import Query, cjk_bigrams

ANALYZER = "roost_posts"
# 2: `author` and `mentions` hold roost.corpus.post.author_key (NFKC_Casefold); 1 (no "keys" in meta.json) held
# str.lower(), which erasure and from: did not match for ß, final Σ, ligatures or decomposed spellings
KEYS_VERSION = 2


class IndexBusy(RoostError):
    """Another process holds the keyword index's writer lock."""


_PATTERN = r"https?://[^\s]+|[#@$][\w]+|\w+"


def _schema() -> tantivy.Schema:
    b = tantivy.SchemaBuilder()
    b.add_text_field("id", stored=True, tokenizer_name="raw")
    b.add_text_field("body", stored=False, tokenizer_name=ANALYZER)
    b.add_text_field("author", stored=True, fast=True, tokenizer_name="raw")
    b.add_text_field("mentions", stored=False, tokenizer_name="raw")
    b.add_text_field("lang", stored=True, fast=True, tokenizer_name="raw")
    b.add_integer_field("created", stored=True, indexed=True, fast=True)
    b.add_integer_field("is_reply", stored=False, indexed=True, fast=True)
    b.add_integer_field("rowid", stored=True, indexed=True, fast=True)
    return b.build()


def _analyzer() -> Any:
    return (
        tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.regex(_PATTERN))
        .filter(tantivy.Filter.lowercase())
        .filter(tantivy.Filter.ascii_fold())
        .build()
    )


class KeywordIndex:
    def __init__(self, path: Path, create: bool = False):
        if create:
            shutil.rmtree(path, ignore_errors=True)
            path.mkdir(parents=True)
        self.schema = _schema()
        self.index = tantivy.Index(self.schema, path=str(path), reuse=not create)
        self.index.register_tokenizer(ANALYZER, _analyzer())
        self._writer: Any = None

    def writer(self, wait_s: float = 1.0) -> Any:
        """The index writer (one per index across processes: a running `roost serve` holds it while it commits)."""
        if self._writer is None:
            deadline = time.monotonic() + wait_s
            while True:
                try:
                    self._writer = self.index.writer(heap_size=64_000_000, num_threads=1)
                    break
                except ValueError as e:
                    if "lock" not in str(e).lower() or time.monotonic() > deadline:
                        raise IndexBusy(f"the keyword index is locked by another process ({e})") from None
                    time.sleep(0.05)
        return self._writer

    def add(self, rows: Iterable[tuple[int, str, str, str, str, str, str | None, str]], upsert: bool = False) -> int:
        """rows: (rowid, id, author, created_at ISO, text, lang, reply_to, mentions JSON); `upsert` replaces a
        document with the same id (catching up after a restart may see a post twice)."""
        import json

        w = self.writer()
        n = 0
        for rowid, pid, author, created, text, lang, reply_to, mentions in rows:
            if upsert:
                w.delete_documents_by_term("id", pid)
            doc = tantivy.Document()
            doc.add_text("id", pid)
            doc.add_text("body", cjk_bigrams(text))
            doc.add_text("author", author_key(author))
            for m in json.loads(mentions or "[]"):
                doc.add_text("mentions", author_key(str(m).lstrip("@")))
            doc.add_text("lang", lang)
            doc.add_integer("created", int(datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp()))
            doc.add_integer("is_reply", 1 if reply_to else 0)
            doc.add_integer("rowid", rowid)
            w.add_document(doc)
            n += 1
        return n

    def rewrite(self, batches: Iterable[list[tuple[Any, ...]]]) -> None:
        """Replace every document with these rows (committed by the next `commit`): deleted documents otherwise
        stay in their segment's files until a merge, so an erasure rewrites the index from the store."""
        w = self.writer()
        w.delete_all_documents()
        for rows in batches:
            self.add(rows)

    def holding(self, rowids: Sequence[int]) -> int:
        """How many of these rowids (store seqs) the index holds."""
        if not rowids:
            return 0
        query = tantivy.Query.term_set_query(self.schema, "rowid", [int(r) for r in rowids])
        return int(self.index.searcher().search(query, 1, count=True).count or 0)  # type: ignore[attr-defined]

    def commit(self, release: bool = True) -> None:
        """Commit and make the changes visible to searches now (the reader is reloaded explicitly). `release`
        gives the writer lock back so that another process (`roost forget`) can write."""
        if self._writer is not None:
            self._writer.commit()
            self._writer.garbage_collect_files()  # segments a commit dropped (e.g. after a rewrite) leave the disk
            if release:
                self._writer.wait_merging_threads()
                self._writer = None
        self.index.reload()

    # -- queries -----------------------------------------------------------------------------------------------------
    def _filters(self, q: Query) -> list[Any]:
        """from:/to:/lang:/since:/until:/filter:replies as Must clauses, their negations as MustNot clauses."""
        s, out = self.schema, []
        occ = tantivy.Occur
        if q.authors:
            out.append((occ.Must, tantivy.Query.term_set_query(s, "author", [author_key(a) for a in q.authors])))
        if q.to:
            out.append((occ.Must, tantivy.Query.term_set_query(s, "mentions", [author_key(a) for a in q.to])))
        if q.langs:
            out.append((occ.Must, tantivy.Query.term_set_query(s, "lang", q.langs)))
        if q.since or q.until:
            lo = int(q.since.timestamp()) if q.since else None
            hi = int(q.until.timestamp()) - 1 if q.until else None
            out.append((occ.Must, tantivy.Query.range_query(s, "created", tantivy.FieldType.Integer, lo, hi)))
        if q.replies is not None:
            out.append((occ.Must, tantivy.Query.term_query(s, "is_reply", 1 if q.replies else 0)))
        # -from:, -to:, -lang: exclude (a boolean query of MustNot clauses alone matches nothing: constraint() and
        # query() add the all-posts query when no clause is a Must)
        if q.not_authors:
            out.append((occ.MustNot, tantivy.Query.term_set_query(s, "author", [author_key(a) for a in q.not_authors])))
        if q.not_to:
            out.append((occ.MustNot, tantivy.Query.term_set_query(s, "mentions", [author_key(a) for a in q.not_to])))
        if q.not_langs:
            out.append((occ.MustNot, tantivy.Query.term_set_query(s, "lang", q.not_langs)))
        return out

    def _parses(self, quoted: str) -> bool:
        """Whether a quoted term or phrase leaves any token after analysis. `"©"` leaves none: tantivy parses it
        alone to an EmptyQuery (seen only in its repr), and rejects `"©" AND "x"` ("Only excluding terms")."""
        try:
            return "EmptyQuery" not in repr(self.index.parse_query(quoted, ["body"]))
        except ValueError:
            return False

    def _phrase(self, text: str) -> Any | None:
        """A term or phrase as a query on the body (None when no token of it is searchable)."""
        quoted = '"' + cjk_bigrams(text).replace("\\", " ").replace('"', " ") + '"'
        return self.index.parse_query(quoted, ["body"]) if self._parses(quoted) else None

    def _text_query(self, q: Query) -> Any | None:
        """None: the query has no text part. tantivy's empty query: it has one, but no word in it is searchable
        (like an OpenSearch match query whose analyser emits no token, such a word is dropped)."""

        def quote(t: str) -> str:
            return '"' + t.replace("\\", " ").replace('"', " ") + '"'

        parts = [t if t == "OR" else quote(cjk_bigrams(t)) for t in q.terms]
        parts += [quote(cjk_bigrams(p)) for p in q.phrases]
        if not [p for p in parts if p != "OR"]:
            return None
        parts = [p for p in parts if p == "OR" or self._parses(p)]
        while parts and parts[0] == "OR":
            parts.pop(0)
        while parts and parts[-1] == "OR":
            parts.pop()
        if not parts:
            return tantivy.Query.empty_query()
        text = " ".join(parts)
        text = re.sub(r"(^| )OR( OR)+", " OR", text)
        if "OR" in parts:
            return self.index.parse_query(text, ["body"])
        return self.index.parse_query(" AND ".join(p for p in parts if p != "OR"), ["body"])

    def _excluded(self, q: Query) -> list[Any]:
        return [(tantivy.Occur.MustNot, p) for ex in q.exclude if (p := self._phrase(ex)) is not None]

    def constraint(self, q: Query) -> Any | None:
        """The posts that satisfy every operator of q — filters, required #tags/@mentions/"phrases" (any of them
        under OR), exclusions — whatever its free words; None when q has no operator. Semantic results are drawn
        from these posts only, so an operator holds in every mode exactly as in keyword mode."""
        occ = tantivy.Occur
        clauses = self._filters(q) + self._excluded(q)
        required = [p for t in q.required if (p := self._phrase(t)) is not None]
        if required and "OR" in q.terms:
            clauses.append((occ.Must, tantivy.Query.boolean_query([(occ.Should, p) for p in required])))
        else:
            clauses += [(occ.Must, p) for p in required]
        if not clauses:
            return None
        if not any(o == occ.Must for o, _ in clauses):
            clauses.append((occ.Must, tantivy.Query.all_query()))
        return tantivy.Query.boolean_query(clauses)

    def query(self, q: Query) -> Any:
        clauses = self._filters(q) + self._excluded(q)
        text = self._text_query(q)
        if text is not None:
            clauses.append((tantivy.Occur.Must, text))
        if not any(o == tantivy.Occur.Must for o, _ in clauses):
            clauses.append((tantivy.Occur.Must, tantivy.Query.all_query()))
        return tantivy.Query.boolean_query(clauses)

    def search(self, q: Query, limit: int, within: Query | None = None) -> list[tuple[str, int, float]]:
        """(post id, rowid, BM25 score) best first. `within`: also hold to that query's operators (the expansion
        ranking searches other words, but only among the posts the user's operators allow)."""
        searcher = self.index.searcher()
        query = self.query(q)
        if within is not None and (allowed := self.constraint(within)) is not None:
            must = tantivy.Occur.Must
            query = tantivy.Query.boolean_query([(must, query), (must, tantivy.Query.const_score_query(allowed, 0.0))])
        out = []
        for score, addr in searcher.search(query, limit).hits:
            d = searcher.doc(addr)
            out.append((d["id"][0], int(d["rowid"][0]), float(score)))
        return out

    def ranked(self, q: Query, depth: int, within: Query | None = None) -> list[tuple[int, float]]:
        """(rowid, BM25 score) best first: the `KeywordSource` of roost.search.hybrid."""
        return [(rowid, score) for _, rowid, score in self.search(q, depth, within=within)]

    def rowids(self, query: Any, cap: int) -> list[int] | None:
        """Rowids of every post matching a query (None when there are more than `cap`)."""
        searcher = self.index.searcher()
        res = searcher.search(query, cap + 1)
        count = res.count  # type: ignore[attr-defined]
        if (count is not None and count > cap) or len(res.hits) > cap:
            return None
        return [int(searcher.doc(a)["rowid"][0]) for _, a in res.hits]

    def rowids_among(self, query: Any, rowids: Sequence[int]) -> set[int]:
        """Those of these rowids whose posts match a query."""
        if not rowids:
            return set()
        occ = tantivy.Occur
        among = tantivy.Query.term_set_query(self.schema, "rowid", [int(r) for r in rowids])
        found = self.rowids(tantivy.Query.boolean_query([(occ.Must, query), (occ.Must, among)]), len(rowids))
        return set(found or [])

    def filter_rowids(self, q: Query, cap: int) -> list[int] | None:
        """Rowids of every post passing all of q's operators (None when it has none, or more than `cap` pass)."""
        allowed = self.constraint(q)
        return None if allowed is None else self.rowids(allowed, cap)

    def num_docs(self) -> int:
        return int(self.index.searcher().num_docs)
