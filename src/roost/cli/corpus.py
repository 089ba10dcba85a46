"""`roost ingest`, `roost corpus stats`, `roost forget`, `roost demo-corpus`: the post store's verbs (roost.corpus,
roost.erasure).

    roost ingest twitter.zip archive.tar.gz repo.car && roost corpus stats
    roost forget --author alice --post x:123
"""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
from typing import Annotated, Any

import typer

from roost.cli.app import RoostGroup, app, config_options, console, declare, given, option, state
from roost.config import CorpusConfig
from roost.errors import UsageError

corpus_app = typer.Typer(cls=RoostGroup, help="Look at the post store.", no_args_is_help=True)
app.add_typer(corpus_app, name="corpus")


INGEST_OPTIONS = [
    inspect.Parameter(
        "paths",
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        annotation=Annotated[list[Path], typer.Argument(help="Export files or folders (searched for exports).")],
    ),
    option(
        "format", str | None, None, "--format", "-f",
        help="Force the format: x-archive, twitter-api, mastodon, bluesky, jsonl, csv, parquet.",
    ),
    option("map", str | None, None, "--map", help="Generic files: FIELD=COLUMN,... e.g. text=body,author=user"),
    option("source", str, "generic", "--source", help="Generic files: id prefix / source name."),
    *config_options(CorpusConfig, ["strict", "include_deleted"]),  # [corpus] settings: roost.config
    option("include_private", bool, False, "--include-private", help="Also keep followers-only and direct posts."),
    *config_options(CorpusConfig, ["near_dup_threshold", "scrub_mentions", "workers"]),
    option("quiet", bool, False, "--quiet", "-q", help="No progress bar."),
]  # fmt: skip


@declare(INGEST_OPTIONS, with_ctx=True)
def ingest(ctx: typer.Context, **o: Any) -> None:
    """Import exports into the post store: clean, dedup, scrub PII, identify language.

    Example: [bold]roost ingest twitter-archive.zip mastodon-archive.tar.gz repo.car[/]
    """
    from roost.corpus.importers import ImportOptions
    from roost.corpus.importers.generic import parse_mapping
    from roost.corpus.ingest import ingest as run_ingest
    from roost.corpus.report import print_ingest_report

    st = state(ctx)
    overrides: dict[str, object] = given(CorpusConfig, o)
    if o["include_private"]:
        overrides["keep_visibility"] = ("public", "unlisted", "followers", "direct")
    cfg: CorpusConfig = dataclasses.replace(st.config.corpus, **overrides)  # type: ignore[arg-type]
    opts = ImportOptions(format=o["format"], mapping=parse_mapping(o["map"]), source=o["source"])
    st.ws.ensure()
    report = run_ingest(
        o["paths"],
        st.store,
        cfg,
        opts,
        show_progress=not o["quiet"] and console.is_terminal,
        on_wait=lambda m: console.print(f"[yellow]{m}[/]"),
    )
    print_ingest_report(report.to_json(), console)
    if report.stored:
        from roost.search.backend import keep_current

        meta = keep_current(st.ctx)
        if meta and meta.get("busy"):
            console.print(
                "a running `roost serve` holds the search index: the new posts are searchable within a second"
            )
        elif meta:
            console.print(f"search index updated: +{meta['added']:,} posts")


@corpus_app.command("stats")
def corpus_stats(ctx: typer.Context) -> None:
    """Counts for the whole store: posts, training text, duplicates, PII, languages, sources, rejects.

    Example: [bold]roost corpus stats[/]
    """
    from roost.corpus.backend import open_store
    from roost.corpus.report import print_stats

    with open_store(state(ctx).store, readonly=True) as store:
        print_stats(store.stats(), console)


@app.command()
def forget(
    ctx: typer.Context,
    author: Annotated[list[str] | None, typer.Option("--author", help="Author handle, any case (repeatable).")] = None,
    post: Annotated[list[str] | None, typer.Option("--post", help="Post id, e.g. x:1234 (repeatable).")] = None,
) -> None:
    """Delete posts or whole authors and tombstone them: re-ingest never brings them back.

    Example: [bold]roost forget --author alice --post x:1600000000000000123[/]
    """
    from rich.markup import escape

    from roost.erasure import erase

    if not author and not post:
        raise UsageError("forget: give --author NAME and/or --post ID")
    rep = erase(state(ctx).ctx, author or [], post or [])
    console.print(f"forgot {rep.posts:,} post(s); tombstoned {rep.authors} author(s) and {rep.post_ids} post id(s)")
    if rep.reposts:
        console.print(f"  of them, {rep.reposts:,} repost(s) by other users that carried a forgotten post")
    for name in rep.unmatched:
        console.print(
            f"[yellow]no post by {escape(repr(name))} in the store[/] (tombstoned anyway: their posts in later exports "
            "are refused)",
            highlight=False,
        )
    if rep.index == "removed" and rep.index_removed:
        console.print(
            f"removed {rep.index_removed} post(s) from the search index (keyword index rewritten, vectors compacted)"
        )
    elif rep.index == "removed" and rep.posts:
        console.print("the search index holds none of them (a running server dropped them first, or none was indexed)")
    elif rep.index == "server":
        console.print("a running `roost serve` holds the search index: it erases them from it within a second")
    if rep.pending:
        console.print(
            "[yellow]the posts are deleted and never returned, but an older transaction or a table lock kept their "
            f"bytes in {', '.join(rep.pending)}: the next erasure (or a running server, every 30 s) rewrites them[/]"
        )
    elif not rep.wal_truncated:
        console.print("[yellow]a reader kept the WAL from being truncated; the next erasure retries[/]")
    for name in rep.stale_shards:
        console.print(
            f"[yellow]shard set {name} held forgotten posts: their tokens overwritten in place, set marked stale[/]; "
            "rebuild with [bold]roost tokenize --rebuild-stale[/]"
        )
    for problem in rep.shard_problems:
        console.print(
            f"[red]shard set {escape(problem)}[/]: not checked for the forgotten posts; delete the set or rebuild it with "
            "[bold]roost tokenize --rebuild-stale[/] (the next erasure tries again)",
            highlight=False,
        )
    for kind, names in (("tokenizers", rep.tokenizers), ("runs", rep.runs), ("models", rep.models)):
        if names:
            console.print(f"[yellow]{kind} built from these posts (retrain to be rid of them):[/] {', '.join(names)}")
