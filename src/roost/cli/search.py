"""CLI verbs of search: `roost index`, `roost search`, `roost ask`, `roost eval search`.

Registered on the main typer app by `roost.cli`; thin calls into `roost.search`.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from roost.cli.app import app, config_options, declare, option, state
from roost.config import SearchConfig
from roost.errors import UsageError
from roost.workspace import Workspace

console = Console()
eval_app = typer.Typer(help="Measure quality: `roost eval search`.", no_args_is_help=True)


def _progress(label: str, quiet: bool) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        disable=quiet or not console.is_terminal,
        transient=True,
        console=console,
    )


def _engine(ws: Workspace, model: str, max_batch: int = 8, dtype: str = "auto") -> tuple[Any, dict[str, str], Any]:
    from roost.infer.loading import load_engine

    loaded = load_engine(
        ws,
        model,
        max_batch=max_batch,
        max_queue=256,
        dtype=dtype,
        say=lambda line: Console(stderr=True).print(f"[dim]{line}[/]", highlight=False),
    )
    return loaded.engine, {"model": loaded.name, "model_sha256": loaded.sha256}, loaded.template


app.add_typer(eval_app, name="eval")


@app.command("index")
def index_cmd(
    ctx: typer.Context,
    rebuild: Annotated[bool, typer.Option("--rebuild", help="Build from scratch instead of catching up.")] = False,
    vectors: Annotated[
        str | None, typer.Option("--vectors", help="f32, or i8 (int8 HNSW, 4× smaller); needs --rebuild.")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    dtype: Annotated[
        str | None, typer.Option("--dtype", help="Embedding dtype: auto (by CPU class, roost.probe), fp32, bf16.")
    ] = None,
) -> None:
    """Build or update the search indexes: keyword (tantivy BM25) and vectors (MiniLM + usearch HNSW).

    Without --rebuild it catches up: indexes new posts and drops forgotten ones.
    Example: [bold]roost index && roost search "#coffee from:alice"[/]
    """
    from roost.search.backend import build_index

    st = state(ctx)
    cfg = st.config.search
    if vectors is not None:
        cfg = dataclasses.replace(cfg, vectors=vectors)
        rebuild = True
    if dtype is not None:
        cfg = dataclasses.replace(cfg, embed_dtype=dtype)
    from roost.probe import choose

    console.print(f"[dim]embeddings: {choose('embed', cfg.embed_dtype).line()}[/]")
    with _progress("indexing", quiet) as progress:
        task = progress.add_task("index", total=None)
        meta = build_index(
            st.ctx.with_settings(search=cfg),
            on_batch=lambda d, t: progress.update(task, completed=d, total=t),
            rebuild=rebuild,
        )
    console.print(
        f"{'built' if rebuild else 'updated'} the index: {meta['posts']:,} posts (+{meta['added']:,} "
        f"-{meta['removed']:,}) in {meta['seconds']:.1f} s · vectors {meta.get('vectors', 'f32')} → {meta['where']}"
    )


SEARCH_OPTIONS = [
    inspect.Parameter(
        "query",
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        annotation=Annotated[
            str,
            typer.Argument(
                help='Words, "phrases", -exclusions, OR, #tags, from:, to:, since:, until:, lang:, filter:replies.'
            ),
        ],
    ),
    *config_options(SearchConfig, ["mode", "k", "recency"]),  # [search] settings: roost.config
    option("expand", bool | None, None, "--expand/--no-expand", help="LLM query expansion (needs -m)."),
    option("model", str | None, None, "--model", "-m", help="Model for --expand."),
    option("as_json", bool, False, "--json", help="JSON lines instead of a table."),
]


@declare(SEARCH_OPTIONS, with_ctx=True)
def search(ctx: typer.Context, **o: Any) -> None:
    """Search the posts: keyword (BM25), semantic (MiniLM vectors) or hybrid (reciprocal rank fusion).

    Example: [bold]roost search 'rain OR snow since:2024-01-01 -filter:replies' --mode hybrid[/]
    """
    from roost.search.backend import current_search
    from roost.search.query import parse

    st = state(ctx)
    cfg = st.config.search  # roost.toml's [search] unless a flag says otherwise
    k = cfg.k if o["k"] is None else o["k"]
    recency = cfg.recency if o["recency"] is None else o["recency"]
    expand = cfg.expand if o["expand"] is None else o["expand"]
    mode, query, model = o["mode"], o["query"], o["model"]  # mode: the backend's default when left out
    if not 1 <= k <= 1000 or recency < 0:
        raise UsageError("-k must be in 1..1000 and --recency >= 0")
    q = parse(query)
    terms: list[str] = []
    if expand:
        if not model:
            raise UsageError("--expand needs a model to expand with: -m NAME")
        from roost.search.expand import expand_query

        engine, _, template = _engine(st.ws, model, 1)
        try:
            terms = expand_query(engine, template, q.text)
        finally:
            engine.shutdown()
    hits = current_search(st.ctx).search(q, mode, k, recency, terms or None)
    if o["as_json"]:
        for h in hits:
            console.print_json(json.dumps(h.to_json()))
        return
    t = Table(title=f"{mode or st.config.search.mode}: {query}" + (f"  (+ {', '.join(terms)})" if terms else ""))
    for col in ("id", "author", "time", "text", "score"):
        t.add_column(col, overflow="fold", max_width=60 if col == "text" else None)
    for h in hits:
        t.add_row(h.id, h.author, h.created_at, h.text, f"{h.score:.4f}")
    console.print(t)
    if not hits:
        console.print("no posts match")


@app.command()
def ask(
    ctx: typer.Context,
    question: Annotated[str, typer.Argument(help="A question about the posts.")],
    model: Annotated[str, typer.Option("--model", "-m", help="models/NAME.")] = "smollm2",
    query: Annotated[str | None, typer.Option("--query", help="Search query (default: the question).")] = None,
    posts: Annotated[int, typer.Option("--posts", help="Retrieved posts the model reads.")] = 5,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    dtype: Annotated[str, typer.Option("--dtype", help="Decode dtype: auto (roost.probe), bf16 or fp32.")] = "auto",
) -> None:
    """Answer a question from the posts; every sentence cites the posts it rests on, or roost says it cannot.

    Example: [bold]roost ask "what do people say about coffee?" -m smollm2[/]
    """
    from roost.search.answer import AnswerConfig
    from roost.search.answer import ask as run_ask
    from roost.search.backend import current_search

    if not 1 <= posts <= 20:
        raise UsageError("--posts must be in 1..20")
    st = state(ctx)
    index = current_search(st.ctx)
    engine, prov, template = _engine(st.ws, model, 1, dtype)
    try:
        cfg = AnswerConfig(posts=posts, min_similarity=st.config.search.min_similarity)
        out = run_ask(engine, template, index, question, cfg, prov, query)
    finally:
        engine.shutdown()
    if as_json:
        console.print_json(json.dumps(out))
        return
    console.print(f"[bold]Q:[/] {question}")
    console.print(f"[bold]A:[/] {out['answer']}")
    if out["answered"]:
        console.print(f"[dim]ai_generated: true · model {prov['model']} · sha256 {prov['model_sha256'][:12]}…[/]")
    t = Table(title="cited posts" if out["cited_posts"] else "retrieved posts")
    for col in ("id", "author", "time", "text"):
        t.add_column(col, overflow="fold", max_width=70 if col == "text" else None)
    for p in out["cited_posts"] or out["retrieved_posts"]:
        t.add_row(p["id"], p["author"], p["created_at"][:10], p["snippet"])
    if t.row_count:
        console.print(t)
    if out["dropped_sentences"]:
        console.print(f"[dim]{out['dropped_sentences']} sentence(s) dropped: their post did not support them[/]")


@eval_app.command("search")
def eval_search(
    ctx: typer.Context,
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Writes the known-item queries (and expands).")
    ] = None,
    queries: Annotated[int, typer.Option("--queries", help="Known-item queries to build.")] = 200,
    beir: Annotated[Path | None, typer.Option("--beir", help="A BEIR dataset folder instead.")] = None,
    max_docs: Annotated[int, typer.Option("--max-docs", help="BEIR: documents indexed.")] = 100_000,
    tune: Annotated[bool, typer.Option("--tune", help="Tune fusion weights on the tune half; store them.")] = False,
    expand: Annotated[bool, typer.Option("--expand", help="Also score hybrid + LLM expansion.")] = False,
    plot_path: Annotated[Path | None, typer.Option("--plot", help="PNG chart (default under index/eval/).")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """nDCG@10, recall@10/100 and MRR of keyword, semantic and hybrid search (and hybrid + LLM expansion).

    Example: [bold]roost eval search -m smollm2 --tune --expand[/]  ·  [bold]roost eval search --beir scifact/[/]
    """
    from roost.search import eval as ev

    st = state(ctx)
    if model is None and (beir is None or expand or tune):
        raise UsageError("give -m MODEL (it writes the known-item queries and expands them), or --beir DIR")
    engine, template = (_engine(st.ws, model, 8)[::2]) if model else (None, None)
    try:
        with _progress("indexing BEIR corpus", beir is None) as progress:
            task = progress.add_task("beir", total=None)
            run = ev.run_eval(
                st.ctx,
                engine,
                template,
                queries=queries,
                beir=beir,
                max_docs=max_docs,
                tune=tune,
                expand=expand,
                on_index=lambda d, t: progress.update(task, completed=d, total=t),
                say=lambda line: console.print(line, highlight=False),
            )
    finally:
        if engine is not None:
            engine.shutdown()
    es, results, tuned, title, qids = run.es, run.results, run.tuned, run.title, run.es.test
    out_png = ev.plot(results, title, plot_path or (st.ws.index_dir / "eval" / "search-eval.png"))
    if as_json:
        console.print_json(json.dumps({"set": es.name, "queries": len(qids), "results": results, "tuned": tuned}))
        return
    t = Table(title=title)
    t.add_column("mode")
    for name in ev.MEASURES.values():
        t.add_column(name, justify="right")
    t.add_column("nDCG vs keyword", justify="right")
    base = results["keyword"]["nDCG@10"] or 1e-9
    for mode, r in results.items():
        t.add_row(mode, *(f"{r[n]:.3f}" for n in ev.MEASURES.values()), f"{r['nDCG@10'] / base - 1:+.1%}")
    console.print(t)
    if tuned:
        verdict = (
            "stored in index/meta.json"
            if tuned["keep"] and beir is None
            else ("kept" if tuned["keep"] else "not kept: under a 2 % gain over 1:1 on the tune half")
        )
        console.print(
            f"fusion tuning on the tune half ({tuned['tune_queries']} queries): best keyword:semantic "
            f"{tuned['keyword']}:{tuned['semantic']} nDCG@10 {tuned['tune_ndcg10']} vs 1:1 "
            f"{tuned['default_ndcg10']} → {verdict}"
        )
    console.print(f"chart: {out_png}")
