"""Search operators are hard constraints in every mode: `#tag`, `@mention`, `"phrase"`, `-term`, `-"phrase"`,
`from:`, `to:`, `lang:`, `since:`/`until:` and `filter:replies` — and their negations `-from:`, `-to:`, `-lang:`,
`-since:`/`-until:` — hold for semantic and hybrid results exactly as for keyword results, while free words keep
ranking semantically. A small real store (X archives through the real
importer, real MiniLM embeddings) and a property test over random operator queries drawn from its own values."""

from __future__ import annotations

import json
import re
import sqlite3
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from roost.config import CorpusConfig
from roost.context import Roost
from roost.corpus.ingest import ingest
from roost.demo.writers import Draft, write_x_archive
from roost.errors import UsageError
from roost.search.embedded import SearchIndex
from roost.search.hybrid import Embedder, Hit
from roost.search.query import parse

MODES = ("keyword", "semantic", "hybrid")
T0 = datetime(2024, 1, 1, 9, tzinfo=UTC)
# (author, text, day, lang, index of the post it replies to)
POSTS: list[tuple[str, str, int, str, int | None]] = [
    ("alice", "Rebuilt the #infra dashboards this morning, latency is finally flat", 0, "en", None),
    ("alice", "Racking new servers in the data center tonight #infra @bob", 3, "en", None),
    ("alice", "The data center cooling failed again and the pager went off twice", 6, "en", None),
    ("alice", "Lunch by the harbour, the lighthouse keeper waved at us from the gallery", 9, "en", None),
    ("alice", "Reading about #infrastructure policy and city budgets on the train home", 12, "en", None),
    ("alice", "Center of gravity: the data shows our deploys are slower on Fridays", 15, "en", None),
    ("alice", "Watched zeppelins drift over the lake like slow silver whales @carol", 18, "en", None),
    ("alice", "Yes the #infra migration is done, thanks for the patience @carol", 21, "en", 19),
    ("alice", "Heute baue ich das Rechenzentrum um, #infra bleibt trotzdem stabil", 24, "de", None),
    ("bob", "Lighthouses along the coast guide ships through the fog at night", 1, "en", None),
    ("bob", "The old lighthouse on the cliff was painted red and white last summer", 4, "en", None),
    ("bob", "Zeppelins and lighthouses both fascinated sailors a century ago", 7, "en", None),
    ("bob", "Zeppelins were giant airships filled with hydrogen, floating above the sea", 10, "en", None),
    ("bob", "Fixed the flaky deploy script before the weekend #ops @alice", 13, "en", None),
    ("bob", "Coffee first, then the data center tour with the new hires #ops", 16, "en", None),
    ("bob", "@alice need a hand with those racks tomorrow? #infra", 19, "en", 1),
    ("bob", "Le phare de la cote brille dans la nuit, un spectacle magnifique", 22, "fr", None),
    ("carol", "Lighthouse photography trip next weekend, bringing the big tripod #travel", 2, "en", None),
    ("carol", "Airship museum visit: the zeppelins hangar is enormous and cold #travel", 5, "en", None),
    ("carol", "Our #ops rotation moves to Tuesdays starting next month @bob", 8, "en", None),
    ("carol", "Planning a trip to the coast, maybe more lighthouses again #travel @alice", 11, "en", None),
    ("carol", "@bob the data center move went smoothly with no downtime at all", 14, "en", 14),
    ("carol", "Baking bread on a rainy Sunday, the kitchen smells wonderful", 17, "en", None),
    ("carol", "Der Leuchtturm an der Kueste ist wunderschoen bei Sonnenuntergang #travel", 20, "de", None),
    ("carol", "Coffee tasting downtown: three roasts, one favourite, zero regrets", 23, "en", None),
    ("carol", "The harbour lights flicker while the ferry leaves for the islands", 26, "en", None),
]


@pytest.fixture(scope="module")
def idx(tmp_path_factory: pytest.TempPathFactory) -> SearchIndex:
    root = tmp_path_factory.mktemp("operators")
    ids = [str(1_700_000_000_000_000_000 + i) for i in range(len(POSTS))]
    by_author: dict[str, list[Draft]] = {}
    for i, (author, text, day, lang, parent) in enumerate(POSTS):
        reply = (ids[parent], POSTS[parent][0]) if parent is not None else (None, None)
        draft = Draft(ids[i], text, T0 + timedelta(days=day), reply[0], reply[1], lang=lang)
        by_author.setdefault(author, []).append(draft)
    paths = [
        write_x_archive(root / "exports" / a, a, str(200 + n), drafts)
        for n, (a, drafts) in enumerate(by_author.items())
    ]
    home = root / "home"
    home.mkdir()
    report = ingest(paths, home / "corpus.db", CorpusConfig(workers=1), show_progress=False)
    assert _store(home)["n"] == len(POSTS), report  # every post stored (none dropped as a near copy)
    embedder = RememberingEmbedder()
    SearchIndex.build(Roost.at(home), embedder=embedder)
    return SearchIndex(Roost.at(home), embedder=embedder)


class RememberingEmbedder(Embedder):
    """The real model, computing each query's vector once (every example searches one query six times)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: dict[str, np.ndarray] = {}

    def encode(self, texts: list[str], batch: int = 64) -> np.ndarray:
        if len(texts) != 1:
            return super().encode(texts, batch)
        if texts[0] not in self.seen:
            self.seen[texts[0]] = super().encode(texts, batch)
        return self.seen[texts[0]].copy()


@pytest.fixture(scope="module")
def broad(idx: SearchIndex) -> SearchIndex:
    """The same index, searched as if every constraint were broad: approximate search, then the allowed posts."""
    b = SearchIndex(Roost.at(idx.db.parent), embedder=idx.embedder)
    b.exact_limit = 0
    return b


def _store(home: Path) -> dict:
    con = sqlite3.connect(home / "corpus.db")
    rows = con.execute("SELECT id, author, created_at, text, lang, reply_to, mentions FROM posts").fetchall()
    con.close()
    return {"n": len(rows), "rows": {r[0]: r[1:] for r in rows}}


# -- an oracle independent of the code under test: the keyword analyser's tokens (lowercased, accents folded) ---------
_TOKEN = re.compile(r"https?://[^\s]+|[#@$][\w]+|\w+")


def _tokens(text: str) -> list[str]:
    folded = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    return [t.lower() for t in _TOKEN.findall(folded)]


def _contains(text: str, needle: str) -> bool:
    hay, seq = _tokens(text), _tokens(needle)
    return bool(seq) and any(hay[i : i + len(seq)] == seq for i in range(len(hay) - len(seq) + 1))


@dataclass
class Ops:
    """What the user wrote, operator by operator (the query string is built from it)."""

    words: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)  # #tags and @mentions, as typed
    phrases: list[str] = field(default_factory=list)
    not_terms: list[str] = field(default_factory=list)
    not_phrases: list[str] = field(default_factory=list)
    authors: list[str] = field(default_factory=list)
    to: list[str] = field(default_factory=list)
    langs: list[str] = field(default_factory=list)
    not_authors: list[str] = field(default_factory=list)  # -from:
    not_to: list[str] = field(default_factory=list)  # -to:
    not_langs: list[str] = field(default_factory=list)  # -lang:
    since: str | None = None
    until: str | None = None
    not_since: str | None = None  # -since:D: posted before D
    not_until: str | None = None  # -until:D: posted on or after D
    replies: bool | None = None

    def query(self) -> str:
        parts = self.words + self.tags + [f'"{p}"' for p in self.phrases]
        parts += [f"-{t}" for t in self.not_terms] + [f'-"{p}"' for p in self.not_phrases]
        parts += [f"from:{a}" for a in self.authors] + [f"to:{a}" for a in self.to] + [f"lang:{x}" for x in self.langs]
        parts += [f"-from:{a}" for a in self.not_authors] + [f"-to:{a}" for a in self.not_to]
        parts += [f"-lang:{x}" for x in self.not_langs]
        parts += [f"since:{self.since}"] * bool(self.since) + [f"until:{self.until}"] * bool(self.until)
        parts += [f"-since:{self.not_since}"] * bool(self.not_since)
        parts += [f"-until:{self.not_until}"] * bool(self.not_until)
        if self.replies is not None:
            parts.append("filter:replies" if self.replies else "-filter:replies")
        return " ".join(parts)

    def violations(self, row: tuple) -> list[str]:
        author, created, text, lang, reply_to, mentions = row
        when = datetime.fromisoformat(created.replace("Z", "+00:00"))
        day = lambda s: datetime.strptime(s, "%Y-%m-%d").replace(tzinfo=UTC)  # noqa: E731
        mentioned = {str(m).lstrip("@").lower() for m in json.loads(mentions or "[]")}
        bad = [t for t in self.tags + self.phrases if not _contains(text, t)]
        bad += [f"-{t}" for t in self.not_terms + self.not_phrases if _contains(text, t)]
        bad += [f"from:{self.authors}"] * bool(self.authors and author.lower() not in {a.lower() for a in self.authors})
        bad += [f"to:{self.to}"] * bool(self.to and not mentioned & {a.lower() for a in self.to})
        bad += [f"lang:{self.langs}"] * bool(self.langs and lang not in self.langs)
        bad += [f"-from:{a}" for a in self.not_authors if author.lower() == a.lower()]
        bad += [f"-to:{a}" for a in self.not_to if a.lower() in mentioned]
        bad += [f"-lang:{x}" for x in self.not_langs if lang == x.lower()]
        bad += [f"since:{self.since}"] * bool(self.since and when < day(self.since))
        bad += [f"until:{self.until}"] * bool(self.until and when >= day(self.until))
        bad += [f"-since:{self.not_since}"] * bool(self.not_since and when >= day(self.not_since))
        bad += [f"-until:{self.not_until}"] * bool(self.not_until and when < day(self.not_until))
        bad += ["filter:replies"] * bool(self.replies is not None and self.replies != (reply_to is not None))
        return bad


def _check(idx: SearchIndex, ops: Ops, hits: list[Hit], mode: str) -> None:
    rows = _store(idx.db.parent)["rows"]
    for h in hits:
        assert h.id in rows
        bad = ops.violations(rows[h.id])
        assert not bad, f"{mode} {ops.query()!r} returned {h.text!r}, which breaks {bad}"


# -- the three reported cases ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_excluded_term_never_returned(idx: SearchIndex, mode: str) -> None:
    hits = idx.search("lighthouses -zeppelins", mode, k=20)
    assert hits
    assert not [h.text for h in hits if _contains(h.text, "zeppelins")]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("q,needle", [("from:alice #infra", "#infra"), ('from:alice "data center"', "data center")])
def test_tag_and_phrase_constrain_every_mode(idx: SearchIndex, mode: str, q: str, needle: str) -> None:
    hits = idx.search(q, mode, k=50)
    assert hits and all(h.author == "alice" for h in hits)
    assert not [h.text for h in hits if not _contains(h.text, needle)]
    assert {h.id for h in hits} == {h.id for h in idx.search(q, "keyword", k=50)}  # exactly the keyword matches


def test_expansion_terms_keep_the_operators(idx: SearchIndex) -> None:
    """LLM expansion terms add an OR-ed keyword ranking; the user's operators still hold on it."""
    hits = idx.search("from:alice #infra", "hybrid", k=50, extra_terms=["cooling", "pager", "servers"])
    assert hits and not [h.text for h in hits if not _contains(h.text, "#infra")]


def test_free_words_still_rank_semantically(idx: SearchIndex) -> None:
    """Only operators constrain: a free word need not occur in a semantic hit, and it still orders the hits."""
    hits = idx.search("seaside beacon #travel", "semantic", k=50)
    texts = [h.text for h in hits]
    assert texts and all(_contains(t, "#travel") for t in texts)
    assert not [t for t in texts if _contains(t, "beacon")]  # no hit has the word: it ranked, it did not filter
    assert len(texts) == sum(_contains(p[1], "#travel") for p in POSTS)
    assert re.search(r"lighthouse|leuchtturm", texts[0], re.I), texts


def test_operators_hold_with_narrow_and_broad_sets(idx: SearchIndex, broad: SearchIndex) -> None:
    """`-"phrase"`, `-#tag`, `to:` and `filter:replies` too, whether semantic search is exact over the allowed posts
    (few pass) or approximate and then restricted to them (many pass)."""
    for q in ('coffee -"data center"', "lighthouse -#travel", "to:alice", "racks filter:replies", "weekend -big"):
        for index, mode in [(idx, m) for m in MODES] + [(broad, "semantic"), (broad, "hybrid")]:
            hits = index.search(q, mode, k=20)
            assert hits, (q, mode)
            _check(index, _ops_of(q), hits, mode)
    lighthouses = {h.id for h in idx.search("lighthouse -#travel", "semantic", k=50)}
    assert lighthouses == {h.id for h in broad.search("lighthouse -#travel", "semantic", k=50)}


def _ops_of(q: str) -> Ops:
    ops = Ops()
    for tok in re.findall(r'-?"[^"]*"|\S+', q):
        op, _, value = tok.lower().partition(":")
        lists = {"from": ops.authors, "-from": ops.not_authors, "to": ops.to, "-to": ops.not_to}
        lists |= {"lang": ops.langs, "-lang": ops.not_langs}
        if tok.startswith('-"'):
            ops.not_phrases.append(tok[2:-1])
        elif tok.startswith('"'):
            ops.phrases.append(tok[1:-1])
        elif tok in ("filter:replies", "-filter:replies"):
            ops.replies = tok == "filter:replies"
        elif value and op in lists:
            lists[op].append(value.lstrip("@"))
        elif value and op in ("since", "until", "-since", "-until"):
            setattr(ops, op.replace("-", "not_"), value)
        elif tok.startswith("-"):
            ops.not_terms.append(tok[1:])
        elif tok.startswith(("#", "@")):
            ops.tags.append(tok)
        else:
            ops.words.append(tok)
    return ops


# -- negated filters (security review: `-from:X` returned only X's posts in semantic and hybrid mode) ----------------
NEGATED = [
    "lighthouse -from:bob",
    "lighthouse -from:@BOB -from:carol",
    "data center -to:alice",
    "data center -to:@bob -to:alice",
    "#travel -lang:de",
    "lighthouse OR leuchtturm OR phare -lang:EN",
    "#infra -from:alice",
    "zeppelins -from:bob -lang:de",
    "coffee -since:2024-01-20",
    "coffee -until:2024-01-20",
    "lighthouses from:carol -lang:de -until:2024-01-05",
]


@pytest.mark.parametrize("q", NEGATED)
def test_negated_filters_exclude_in_every_mode(idx: SearchIndex, broad: SearchIndex, q: str) -> None:
    ops = _ops_of(q)
    assert ops.not_authors or ops.not_to or ops.not_langs or ops.not_since or ops.not_until, q
    for index, mode in [(idx, m) for m in MODES] + [(broad, "semantic"), (broad, "hybrid")]:
        hits = index.search(q, mode, k=50)
        assert hits, (q, mode)
        _check(index, ops, hits, mode)
    # and nothing more is dropped: with k above the corpus size, semantic search returns exactly the posts that
    # the oracle allows
    allowed = {pid for pid, row in _store(idx.db.parent)["rows"].items() if not ops.violations(row)}
    for index in (idx, broad):
        assert {h.id for h in index.search(q, "semantic", k=50)} == allowed, q


def test_reported_case_negated_author_is_not_positive(idx: SearchIndex) -> None:
    """The report: `joke -from:jokebot` returned only jokebot's posts. Here: none of the hits is bob's."""
    for mode in MODES:
        hits = idx.search("lighthouses OR zeppelins -from:bob", mode, k=50)
        assert hits and "bob" not in {h.author for h in hits}, mode
        assert {h.author for h in idx.search("lighthouses OR zeppelins from:bob", mode, k=50)} == {"bob"}


def test_negated_filters_parse() -> None:
    q = parse("x -from:@Alice -to:@BOB -lang:DE from:carol to:dave lang:fr")
    assert (q.authors, q.to, q.langs) == (["carol"], ["dave"], ["fr"])
    assert (q.not_authors, q.not_to, q.not_langs) == (["Alice"], ["BOB"], ["de"])
    only_negated = parse("-from:alice")  # a filter, like -filter:replies: every post but alice's
    assert only_negated.has_filters() and only_negated.not_authors == ["alice"]


def test_negated_dates_are_the_complementary_bound() -> None:
    """`-since:D` (not on or after D) is `until:D`; `-until:D` (not before D) is `since:D`. Bounds intersect."""
    assert parse("x -since:2024-01-10") == parse("x until:2024-01-10")
    assert parse("x -until:2024-01-10") == parse("x since:2024-01-10")
    q = parse("x since:2024-01-05 -until:2024-01-03 until:2024-01-20 -since:2024-01-10")
    assert (q.since, q.until) == (parse("x since:2024-01-05").since, parse("x until:2024-01-10").until)
    with pytest.raises(UsageError, match="since"):
        parse("x since:2024-01-10 -since:2024-01-10")  # on or after and before the same day: nothing
    with pytest.raises(UsageError, match="YYYY-MM-DD"):
        parse("x -until:yesterday")
    with pytest.raises(UsageError, match="needs a value"):
        parse("x -from:")
    with pytest.raises(UsageError, match="needs a name"):
        parse("x -to:@")
    with pytest.raises(UsageError, match="language code"):
        parse("x -lang:german")


@pytest.mark.parametrize("mode", MODES)
def test_negated_dates_in_every_mode(idx: SearchIndex, mode: str) -> None:
    before = {h.id for h in idx.search("coffee OR lighthouse -since:2024-01-12", mode, k=50)}
    assert before == {h.id for h in idx.search("coffee OR lighthouse until:2024-01-12", mode, k=50)}
    after = {h.id for h in idx.search("coffee OR lighthouse -until:2024-01-12", mode, k=50)}
    assert after == {h.id for h in idx.search("coffee OR lighthouse since:2024-01-12", mode, k=50)}
    assert before and after and not before & after


# -- the property --------------------------------------------------------------------------------------------------
def _vocab() -> dict[str, list[str]]:
    texts = [p[1] for p in POSTS]
    toks = [_tokens(t) for t in texts]
    words = sorted({w for ts in toks for w in ts if w.isalpha() and len(w) > 3})
    pairs = sorted({f"{a} {b}" for ts in toks for a, b in zip(ts, ts[1:], strict=False) if a.isalpha() and b.isalpha()})
    return {
        "words": words,
        "pairs": pairs,
        "tags": sorted({w for ts in toks for w in ts if w[0] in "#@"}),
        "authors": sorted({p[0] for p in POSTS}),
        "langs": sorted({p[3] for p in POSTS}),
        "days": [(T0 + timedelta(days=d)).strftime("%Y-%m-%d") for d in range(0, 30, 2)],
    }


VOCAB = _vocab()


def _case(s: str, upper: bool) -> str:
    return s.upper() if upper else s


def small(values: list[str], n: int) -> st.SearchStrategy[list[str]]:
    return st.lists(st.sampled_from(values), min_size=1, max_size=n, unique=True)


KINDS = (
    "tags",
    "phrases",
    "not_terms",
    "not_phrases",
    "authors",
    "to",
    "langs",
    "not_authors",
    "not_to",
    "not_langs",
    "dates",
    "replies",
)


@st.composite
def operator_queries(draw: st.DrawFn) -> Ops:
    """Up to two free words and one to three kinds of operator (more would leave almost every query empty)."""
    v = VOCAB
    ops = Ops(words=draw(st.lists(st.sampled_from(v["words"]), max_size=2, unique=True)))
    kinds = draw(st.lists(st.sampled_from(KINDS), min_size=1, max_size=3, unique=True))
    if "tags" in kinds:
        ops.tags = [_case(t, draw(st.booleans())) for t in draw(small(v["tags"], 2))]
    if "phrases" in kinds:
        ops.phrases = draw(small(v["pairs"], 1))
    if "not_terms" in kinds:
        ops.not_terms = draw(small(v["words"] + v["tags"], 2))
    if "not_phrases" in kinds:
        ops.not_phrases = draw(small(v["pairs"], 1))
    if "authors" in kinds:
        ops.authors = draw(small(v["authors"], 2))
    if "to" in kinds:
        ops.to = draw(small(v["authors"], 1))
    if "langs" in kinds:
        ops.langs = draw(small(v["langs"], 1))
    if "not_authors" in kinds:
        ops.not_authors = [_case(a, draw(st.booleans())) for a in draw(small(v["authors"], 2))]
    if "not_to" in kinds:
        ops.not_to = draw(small(v["authors"], 2))
    if "not_langs" in kinds:
        ops.not_langs = [_case(x, draw(st.booleans())) for x in draw(small(v["langs"], 1))]
    if "dates" in kinds:
        days = sorted(draw(small(v["days"], 2)))
        lo = days[0] if len(days) == 2 or draw(st.booleans()) else None
        hi = days[-1] if len(days) == 2 or lo is None else None
        # the lower bound written as since:D or -until:D, the upper as until:D or -since:D
        if lo is not None:
            if draw(st.booleans()):
                ops.not_until = lo
            else:
                ops.since = lo
        if hi is not None:
            if draw(st.booleans()):
                ops.not_since = hi
            else:
                ops.until = hi
    if "replies" in kinds:
        ops.replies = draw(st.booleans())
    if not (ops.words or ops.tags or ops.phrases):
        ops.words = [draw(st.sampled_from(v["words"]))]
    return ops


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(ops=operator_queries())
def test_every_result_of_every_mode_satisfies_every_operator(idx: SearchIndex, broad: SearchIndex, ops: Ops) -> None:
    for mode in MODES:
        _check(idx, ops, idx.search(ops.query(), mode, k=20), mode)
    for mode in ("semantic", "hybrid"):
        _check(broad, ops, broad.search(ops.query(), mode, k=20), f"{mode} (broad)")
    extra = [w for w in VOCAB["words"] if w not in ops.not_terms][:3]
    _check(idx, ops, idx.search(ops.query(), "hybrid", k=20, extra_terms=extra), "hybrid+expansion")
