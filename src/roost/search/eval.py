"""Search quality: nDCG@10, recall@10/100 and MRR (trec_eval's, via pytrec_eval) for keyword vs semantic vs hybrid
(vs hybrid + LLM query expansion).

`roost eval search -m smollm2 [--queries 200] [--tune] [--expand]` builds a known-item eval set from your own
posts: the model writes the query someone would type to find a sampled post (roost.search.expand), the posts are
split into a tune half and a held-out half by a hash of their id, and only the held-out half is scored; `--tune`
picks the fusion weights on the tune half and stores them in index/meta.json. The set is cached under
index/eval/ (BEIR layout), so runs compare like with like.

`roost eval search --beir DIR` scores any BEIR-format corpus.jsonl / queries.jsonl / qrels/test.tsv instead
(indexed in a scratch workspace). Both print a table and write a PNG chart.
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from roost.context import Roost
from roost.corpus.backend import open_reader
from roost.errors import UsageError
from roost.search.backend import SearchBackend, current_search
from roost.search.embedded import SearchIndex
from roost.search.hybrid import or_terms
from roost.search.query import MAX_QUERY_CHARS, Query, parse
from roost.workspace import Workspace

MEASURES = {"ndcg_cut_10": "nDCG@10", "recall_10": "recall@10", "recall_100": "recall@100", "recip_rank": "MRR"}
MODES = ("keyword", "semantic", "hybrid")


@dataclass
class EvalSet:
    name: str
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    tune: set[str] = field(default_factory=set)  # query ids used for tuning (never scored)

    @property
    def test(self) -> list[str]:
        return sorted(q for q in self.queries if q not in self.tune and q in self.qrels)

    def save(self, d: Path) -> None:
        (d / "qrels").mkdir(parents=True, exist_ok=True)
        with open(d / "queries.jsonl", "w") as f:
            for qid, text in self.queries.items():
                f.write(json.dumps({"_id": qid, "text": text, "split": "tune" if qid in self.tune else "test"}) + "\n")
        with open(d / "qrels" / "test.tsv", "w") as f:
            f.write("query-id\tcorpus-id\tscore\n")
            for qid, docs in self.qrels.items():
                for doc, rel in docs.items():
                    f.write(f"{qid}\t{doc}\t{rel}\n")


def _half(key: str) -> bool:
    return hashlib.sha1(key.encode()).digest()[0] % 2 == 0


def known_item_set(ctx: Roost, generate: Callable[[list[str]], list[str]], n: int, min_chars: int = 60) -> EvalSet:
    """n posts spread evenly over the store (English training text of at least min_chars), one query each."""
    d = ctx.ws.index_dir / "eval" / "known-item"
    if (d / "queries.jsonl").is_file():
        cached = load_beir_queries(d)
        if len(cached.queries) == n:
            return cached
    with open_reader(ctx.store) as store:
        rows = store.posts_in("en", min_chars)
    if len(rows) < n:
        raise UsageError(
            f"only {len(rows)} English posts of {min_chars}+ characters in the store; use --queries {len(rows)}"
        )
    step = len(rows) / n
    picked = [rows[int(i * step)] for i in range(n)]
    queries = generate([t for _, t in picked])
    es = EvalSet("known-item", {}, {})
    for i, ((pid, _), q) in enumerate(zip(picked, queries, strict=True)):
        if not q.strip():
            continue
        qid = f"q{i}"
        es.queries[qid], es.qrels[qid] = q, {pid: 1}
        if _half(pid):
            es.tune.add(qid)
    es.save(d)
    return es


def load_beir_queries(d: Path) -> EvalSet:
    es = EvalSet(d.name, {}, {})
    for n, line in enumerate((d / "queries.jsonl").read_text().splitlines(), 1):
        try:
            obj = json.loads(line)
            es.queries[str(obj["_id"])] = str(obj["text"])
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise UsageError(f"{d / 'queries.jsonl'}: line {n}: not a BEIR query ({e})") from None
        if obj.get("split") == "tune":
            es.tune.add(str(obj["_id"]))
    qrels = d / "qrels" / "test.tsv"
    if not qrels.is_file():
        raise UsageError(f"{qrels}: missing (BEIR layout: qrels/test.tsv with query-id, corpus-id, score)")
    for n, line in enumerate(qrels.read_text().splitlines(), 1):
        parts = line.split("\t")
        if n == 1 and parts[0] == "query-id":
            continue
        if len(parts) != 3 or not re.fullmatch(r"-?[0-9]+", parts[2].strip()):
            raise UsageError(f"{qrels}: line {n}: expected query-id<TAB>corpus-id<TAB>score")
        es.qrels.setdefault(parts[0], {})[parts[1]] = int(parts[2])
    return es


def beir_workspace(d: Path, max_docs: int, on_batch: Callable[[int, int], None] | None = None) -> tuple[Roost, Any]:
    """Ingest a BEIR corpus.jsonl into a scratch workspace and index it; (its context, TemporaryDirectory)."""
    from roost.config import CorpusConfig
    from roost.corpus.importers import ImportOptions
    from roost.corpus.importers.generic import parse_mapping
    from roost.corpus.ingest import ingest

    src = d / "corpus.jsonl"
    if not src.is_file():
        raise UsageError(f"{src}: missing (BEIR layout: corpus.jsonl, queries.jsonl, qrels/test.tsv)")
    tmp = tempfile.TemporaryDirectory(prefix="roost-beir-")
    scratch = Roost(Workspace(Path(tmp.name)))  # a workspace of its own: defaults, its own SQLite store
    posts = scratch.home / "corpus-posts.jsonl"
    with open(src) as f, open(posts, "w") as out:
        for n, line in enumerate(f):
            if n >= max_docs:
                break
            try:
                doc = json.loads(line)
                text = " ".join(x for x in (doc.get("title") or "", doc.get("text") or "") if x)
                row = {"id": str(doc["_id"]), "author": "beir", "created_at": "2020-01-01T00:00:00Z", "text": text}
            except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
                raise UsageError(f"{src}: line {n + 1}: not a BEIR document ({e})") from None
            out.write(json.dumps(row) + "\n")
    cfg = CorpusConfig(max_post_chars=100_000, workers=1)
    ingest(
        [posts],
        scratch.store,
        cfg,
        ImportOptions(format="jsonl", mapping=parse_mapping(None), source="beir"),
        False,
    )
    SearchIndex.build(scratch, on_batch=on_batch)
    return scratch, tmp


def as_query(text: str) -> Query:
    """A natural-language eval query as a search: operator characters neutralised, terms OR-ed (BM25 as BEIR runs it)."""
    clean = " ".join(w.lstrip("-") for w in text.replace('"', " ").replace(":", " ").split())[:MAX_QUERY_CHARS]
    q = parse(clean or "empty")
    q.terms = or_terms([t for t in q.terms if t != "OR"])
    return q


def run_mode(
    index: SearchBackend,
    es: EvalSet,
    qids: list[str],
    mode: str,
    k: int = 100,
    expander: Callable[[str], list[str]] | None = None,
    id_prefix: str = "",
) -> dict[str, dict[str, float]]:
    run: dict[str, dict[str, float]] = {}
    for qid in qids:
        q = as_query(es.queries[qid])
        extra = expander(es.queries[qid]) if expander else None
        hits = index.search(q, mode, k, 0.0, extra_terms=extra)
        # trec_eval ranks by score; ties broken by rank here
        run[qid] = {h.id[len(id_prefix) :]: float(len(hits) - i) for i, h in enumerate(hits)}
    return run


def score(es: EvalSet, run: dict[str, dict[str, float]], qids: list[str]) -> dict[str, float]:
    import pytrec_eval

    qrels = {q: es.qrels[q] for q in qids}
    per_q = pytrec_eval.RelevanceEvaluator(qrels, set(MEASURES)).evaluate({q: run.get(q, {}) for q in qids})
    return {name: sum(v[m] for v in per_q.values()) / max(len(per_q), 1) for m, name in MEASURES.items()}


def tune_weights(index: SearchBackend, es: EvalSet, id_prefix: str = "", min_gain: float = 0.02) -> dict[str, Any]:
    """Fusion weights with the best nDCG@10 on the tune half (never on the queries that are scored). `keep` is
    true only when they beat the default 1 : 1 there by `min_gain` (relative): small tune sets are noisy."""
    qids = sorted(q for q in es.tune if q in es.qrels)
    if not qids:
        raise UsageError("no tune queries in the eval set")
    scores = {}
    for w_kw in (0.25, 0.5, 1.0, 1.5, 2.0):
        index.cfg.keyword_weight, index.cfg.semantic_weight = w_kw, 1.0
        scores[w_kw] = score(es, run_mode(index, es, qids, "hybrid", id_prefix=id_prefix), qids)["nDCG@10"]
    index.cfg.keyword_weight = index.cfg.semantic_weight = None
    best = max(scores, key=lambda w: (scores[w], w == 1.0))
    keep = scores[best] >= scores[1.0] * (1 + min_gain) and best != 1.0
    return {
        "keyword": best,
        "semantic": 1.0,
        "tune_ndcg10": round(scores[best], 4),
        "default_ndcg10": round(scores[1.0], 4),
        "tune_queries": len(qids),
        "keep": keep,
    }


def plot(results: dict[str, dict[str, float]], title: str, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(MEASURES.values())
    modes = list(results)
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / len(modes)
    for i, mode in enumerate(modes):
        xs = [j + i * width for j in range(len(names))]
        ax.bar(xs, [results[mode][n] for n in names], width, label=mode)
    ax.set_xticks([j + width * (len(modes) - 1) / 2 for j in range(len(names))], names)
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def evaluate(
    index: Any,
    es: EvalSet,
    prefix: str = "",
    tune: bool = False,
    store: bool = True,
    expander: Callable[[str], list[str]] | None = None,
) -> tuple[dict[str, dict[str, float]], dict[str, Any] | None]:
    """Score every mode on the held-out queries (plus tuned fusion and LLM expansion when asked). With `tune`,
    fusion weights are tuned on the tune half and, when `store`, kept with the index (`store_fusion`: the embedded
    index's meta.json, or the PostgreSQL search_state every replica reads) only for a real gain."""

    tuned = None
    if tune:
        tuned = tune_weights(index, es, prefix)
        if store:  # stored only where the tune half shows a real gain; else the default 1 : 1
            index.store_fusion(tuned if tuned["keep"] else None)
    qids = es.test
    if not qids:
        raise UsageError("no held-out queries with relevance judgements")
    index.cfg.keyword_weight = index.cfg.semantic_weight = 1.0  # the plain rows: default fusion
    results = {m: score(es, run_mode(index, es, qids, m, id_prefix=prefix), qids) for m in MODES}
    if tuned:
        index.cfg.keyword_weight, index.cfg.semantic_weight = tuned["keyword"], tuned["semantic"]
        name = f"hybrid (tuned {tuned['keyword']}:{tuned['semantic']})"
        results[name] = score(es, run_mode(index, es, qids, "hybrid", id_prefix=prefix), qids)
        if not tuned["keep"]:
            index.cfg.keyword_weight = index.cfg.semantic_weight = 1.0
    if expander is not None:
        run = run_mode(index, es, qids, "hybrid", expander=expander, id_prefix=prefix)
        results["hybrid + LLM expansion"] = score(es, run, qids)
    return results, tuned


@dataclass
class EvalRun:
    """One `roost eval search`: the set scored, the scores by mode, and the fusion tuning (if asked)."""

    es: EvalSet
    results: dict[str, dict[str, float]]
    tuned: dict[str, Any] | None
    title: str


def run_eval(
    ctx: Roost,
    engine: Any = None,
    template: Any = None,
    *,
    queries: int = 200,
    beir: Path | None = None,
    max_docs: int = 100_000,
    tune: bool = False,
    expand: bool = False,
    on_index: Callable[[int, int], None] | None = None,
    say: Callable[[str], None] = lambda _: None,
) -> EvalRun:
    """Known-item queries written by `engine` over this home's posts, or a BEIR folder indexed into a temporary
    workspace; scored in every mode (and tuned fusion / LLM expansion with `tune` / `expand`)."""
    from roost.search.expand import expand_query, synthetic_queries

    if engine is None and (beir is None or expand or tune):
        raise UsageError("give -m MODEL (it writes the known-item queries and expands them), or --beir DIR")
    tmp, prefix, search_cfg = None, "", ctx.settings.search
    try:
        if beir is not None:
            es = load_beir_queries(beir)
            ctx, tmp = beir_workspace(beir, max_docs, on_index)
            prefix = "beir:"
            if not tune:
                es.tune = set()
        else:
            say(f"building {queries} known-item queries (cached under index/eval/)…")
            es = known_item_set(ctx, lambda posts: synthetic_queries(engine, template, posts), queries)
        # BEIR builds its own embedded index in a temp workspace; a real home is scored on its configured backend
        index = SearchIndex(ctx, cfg=search_cfg) if beir is not None else current_search(ctx)
        expander = None
        if expand and engine is not None:
            cache: dict[str, list[str]] = {}

            def expander(text: str) -> list[str]:
                if text not in cache:
                    cache[text] = expand_query(engine, template, text)
                return cache[text]

        results, tuned = evaluate(index, es, prefix, tune, store=beir is None, expander=expander)
    finally:
        if tmp is not None:
            tmp.cleanup()
    n = len(es.test)
    title = f"{es.name}: {n} held-out queries" if beir is None else f"BEIR {beir.name}: {n} queries"
    return EvalRun(es, results, tuned, title)
