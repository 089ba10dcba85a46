"""The `roost` command: one verb per user action, each a thin call into a stage.

`roost --help`; `roost --home DIR VERB ...`. Errors a user can act on print as one line (no traceback) and exit
non-zero.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import typer
import typer.core
from rich.console import Console

from roost.config import CorpusConfig, RoostConfig
from roost.context import Roost
from roost.errors import RoostError, UsageError
from roost.workspace import Workspace


class _RoostGroup(typer.core.TyperGroup):
    """Prints a RoostError as one line (no traceback) and exits with its code, for every verb."""

    def invoke(self, ctx: typer.Context) -> object:  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except RoostError as e:
            err_console.print(f"[red]error:[/] {e}", highlight=False, soft_wrap=True)
            raise typer.Exit(e.exit_code) from None


err_console = Console(stderr=True)
app = typer.Typer(
    cls=_RoostGroup,
    name="roost",
    help="Train, serve and search your own LLM on your social network's posts.\n\n"
    "Start with: roost demo-corpus && roost ingest roost-home/exports && roost corpus stats",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
corpus_app = typer.Typer(cls=_RoostGroup, help="Look at the post store.", no_args_is_help=True)
app.add_typer(corpus_app, name="corpus")
tokenizer_app = typer.Typer(
    cls=_RoostGroup, help="Train or measure a BPE tokenizer on the post store.", no_args_is_help=True
)
app.add_typer(tokenizer_app, name="tokenizer")
shards_app = typer.Typer(cls=_RoostGroup, help="Look at and check token shard sets.", no_args_is_help=True)
app.add_typer(shards_app, name="shards")
console = Console()


@dataclasses.dataclass
class State:
    """What every verb runs with: the context built once here (roost.context)."""

    ctx: Roost

    @property
    def ws(self) -> Workspace:
        return self.ctx.ws

    @property
    def config(self) -> RoostConfig:
        return self.ctx.settings

    @property
    def store(self) -> Path | str:
        """The post store: `--store URL`, else `$ROOST_STORE`, else `[store] url`, else the home's SQLite file."""
        return self.ctx.store


def _state(ctx: typer.Context) -> State:
    return ctx.obj  # type: ignore[no-any-return]


@app.callback()
def main_options(
    ctx: typer.Context,
    home: Annotated[
        str | None, typer.Option("--home", help="Workspace directory (else $ROOST_HOME, else ./roost-home).")
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="TOML settings file (default: <home>/roost.toml).")
    ] = None,
    store: Annotated[
        str | None,
        typer.Option(
            "--store",
            help="Post store: a postgresql:// URL (else $ROOST_STORE, else \\[store] url in roost.toml, else "
            "<home>/corpus.db). Every command then reads and writes that store.",
        ),
    ] = None,
) -> None:
    ctx.obj = State(Roost.at(home, config, store))  # a bad --store or --config is a usage error here


@app.command()
def ingest(
    ctx: typer.Context,
    paths: Annotated[list[Path], typer.Argument(help="Export files or folders (searched for exports).")],
    format: Annotated[
        str | None,
        typer.Option(
            "--format", "-f", help="Force the format: x-archive, twitter-api, mastodon, bluesky, jsonl, csv, parquet."
        ),
    ] = None,
    map: Annotated[
        str | None, typer.Option("--map", help="Generic files: FIELD=COLUMN,... e.g. text=body,author=user")
    ] = None,
    source: Annotated[str, typer.Option("--source", help="Generic files: id prefix / source name.")] = "generic",
    strict: Annotated[bool, typer.Option("--strict", help="Any bad record is fatal; nothing is written.")] = False,
    include_deleted: Annotated[
        bool, typer.Option("--include-deleted", help="X archives: also deleted tweets.")
    ] = False,
    include_private: Annotated[
        bool, typer.Option("--include-private", help="Also keep followers-only and direct posts.")
    ] = False,
    near_dup_threshold: Annotated[
        float | None, typer.Option("--near-dup-threshold", help="Jaccard threshold in (0, 1); default 0.8.")
    ] = None,
    scrub_mentions: Annotated[
        bool, typer.Option("--scrub-mentions", help="Also replace @mentions in training text.")
    ] = False,
    workers: Annotated[int | None, typer.Option("--workers", help="Worker processes (0 = all cores).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Import exports into the post store: clean, dedup, scrub PII, identify language.

    Example: [bold]roost ingest twitter-archive.zip mastodon-archive.tar.gz repo.car[/]
    """
    from roost.corpus.importers import ImportOptions
    from roost.corpus.importers.generic import parse_mapping
    from roost.corpus.ingest import ingest as run_ingest
    from roost.corpus.report import print_ingest_report

    st = _state(ctx)
    overrides: dict[str, object] = {}
    if strict:
        overrides["strict"] = True
    if include_deleted:
        overrides["include_deleted"] = True
    if include_private:
        overrides["keep_visibility"] = ("public", "unlisted", "followers", "direct")
    if near_dup_threshold is not None:
        overrides["near_dup_threshold"] = near_dup_threshold
    if scrub_mentions:
        overrides["scrub_mentions"] = True
    if workers is not None:
        overrides["workers"] = workers
    cfg: CorpusConfig = dataclasses.replace(st.config.corpus, **overrides)  # type: ignore[arg-type]
    opts = ImportOptions(format=format, mapping=parse_mapping(map), source=source)
    st.ws.ensure()
    report = run_ingest(
        paths,
        st.store,
        cfg,
        opts,
        show_progress=not quiet and console.is_terminal,
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

    with open_store(_state(ctx).store, readonly=True) as store:
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
    rep = erase(_state(ctx).ctx, author or [], post or [])
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


def _progress(show: bool):  # type: ignore[no-untyped-def]
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        disable=not show,
        transient=True,
        console=console,
    )


@tokenizer_app.command("train")
def tokenizer_train(
    ctx: typer.Context,
    name: Annotated[str, typer.Option("--name", help="Saved as <home>/tokenizers/NAME.")] = "default",
    vocab_size: Annotated[int | None, typer.Option("--vocab-size", help="Vocabulary size (default 32768).")] = None,
    min_frequency: Annotated[
        int | None, typer.Option("--min-frequency", help="Merge pairs seen at least this often.")
    ] = None,
    max_posts: Annotated[
        int | None, typer.Option("--max-posts", help="Train on an even sample of this many posts (0 = all).")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing tokenizers/NAME.")] = False,
) -> None:
    """Train a byte-level BPE tokenizer on the store's training text (PII-scrubbed) and report on it.

    Example: [bold]roost tokenizer train --vocab-size 16384[/]
    """
    from roost.data import tokenizer as toklib
    from roost.data.report import print_tokenizer_report

    st = _state(ctx)
    out = st.ws.claim(st.ws.tokenizer_dir(name), force)
    over = {
        k: v
        for k, v in {"vocab_size": vocab_size, "min_frequency": min_frequency, "max_posts": max_posts}.items()
        if v is not None
    }
    cfg = dataclasses.replace(st.config.tokenizer, **over)  # type: ignore[arg-type]
    total = toklib.count_posts(st.store)
    total = min(total, cfg.max_posts) if cfg.max_posts else total
    with _progress(not quiet and console.is_terminal) as progress:
        task = progress.add_task("reading posts for BPE", total=total)
        path = toklib.train(st.store, out, cfg, on_batch=lambda n: progress.advance(task, n))
    r = toklib.report(st.store, path, cfg.report_posts)
    (path.parent / "report.json").write_text(__import__("json").dumps(r, indent=1))
    print_tokenizer_report(r, console)
    console.print(f"saved {path} (loads in transformers: AutoTokenizer.from_pretrained('{path.parent}'))")
    console.print(f"next: roost --home {st.ws.root} tokenize --tokenizer {name}")


@tokenizer_app.command("report")
def tokenizer_report(
    ctx: typer.Context,
    tokenizer: Annotated[
        str, typer.Argument(help="Name under <home>/tokenizers, a directory, or a tokenizer.json.")
    ] = "default",
) -> None:
    """Measure any tokenizer on the store: tokens per post, bytes per token, coverage per language.

    Example: [bold]roost tokenizer report models/smollm2/tokenizer.json[/]
    """
    from roost.data import tokenizer as toklib
    from roost.data.report import print_tokenizer_report

    st = _state(ctx)
    path = toklib.resolve(st.ws.tokenizers, tokenizer)
    print_tokenizer_report(toklib.report(st.store, path, st.config.tokenizer.report_posts), console)


@app.command()
def tokenize(
    ctx: typer.Context,
    name: Annotated[str, typer.Option("--name", help="Shard set written to <home>/shards/NAME.")] = "default",
    tokenizer: Annotated[
        str, typer.Option("--tokenizer", "-t", help="Tokenizer name, model directory or tokenizer.json.")
    ] = "default",
    val_fraction: Annotated[
        float | None, typer.Option("--val-fraction", help="Share held out for validation (default 0.01).")
    ] = None,
    split_by: Annotated[
        str | None, typer.Option("--split-by", help="post (default) or author: hold out whole authors.")
    ] = None,
    rebuild_stale: Annotated[
        bool, typer.Option("--rebuild-stale", help="Rebuild every stale set with its recorded settings.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing shards/NAME.")] = False,
) -> None:
    """Tokenise the store into train/val token shards (memmap) with a document index and manifest.json.

    Example: [bold]roost tokenize --tokenizer default --val-fraction 0.02 --split-by author[/]
    """
    import time

    from roost.config import ShardConfig
    from roost.data import shards as shardlib
    from roost.data import tokenizer as toklib
    from roost.data.report import print_shards

    st = _state(ctx)
    jobs: list[tuple[str, Path, ShardConfig]] = []
    if rebuild_stale:
        for d in shardlib.shard_sets(st.ws.shards):
            m = shardlib.read_manifest(d)
            if m.get("stale"):
                tok = Path(m["tokenizer"]["path"])
                if not tok.is_file():
                    raise RoostError(
                        f"{d}: its tokenizer {tok} is gone; rebuild with `roost tokenize --name {d.name} "
                        "--tokenizer NEW`"
                    )
                jobs.append((d.name, tok, ShardConfig(**m["config"])))
        if not jobs:
            console.print("no stale shard sets")
            return
    else:
        over = {k: v for k, v in {"val_fraction": val_fraction, "split_by": split_by}.items() if v is not None}
        cfg = dataclasses.replace(st.config.data, **over)  # type: ignore[arg-type]
        st.ws.claim(st.ws.shard_dir(name), force)
        jobs.append((name, toklib.resolve(st.ws.tokenizers, tokenizer), cfg))
    for set_name, tok_path, cfg in jobs:
        t0 = time.perf_counter()
        with _progress(not quiet and console.is_terminal) as progress:
            task = progress.add_task(f"tokenising into {set_name}", total=None)

            def tick(done: int, total: int, task=task, progress=progress) -> None:  # type: ignore[no-untyped-def]
                progress.update(task, completed=done, total=total)

            res = shardlib.build(st.store, tok_path, st.ws.shard_dir(set_name), cfg, on_batch=tick)
        print_shards(res.manifest, console, time.perf_counter() - t0)
        console.print(f"wrote {res.path}")


@shards_app.command("list")
def shards_list(ctx: typer.Context) -> None:
    """Every shard set in the workspace with its token counts and whether forget made it stale.

    Example: [bold]roost shards list[/]
    """
    from roost.data import shards as shardlib
    from roost.data.report import print_shard_sets

    sets: list[tuple[Path, dict[str, object] | str]] = []
    for d in shardlib.shard_sets(_state(ctx).ws.shards):
        try:
            sets.append((d, shardlib.read_manifest(d)))
        except RoostError as e:
            sets.append((d, str(e)))
    print_shard_sets(sets, console)  # type: ignore[arg-type]


@shards_app.command("verify")
def shards_verify(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Shard set under <home>/shards.")] = "default",
) -> None:
    """Check every file of a shard set against its manifest (sizes and sha256).

    Example: [bold]roost shards verify default[/]
    """
    from roost.data import shards as shardlib
    from roost.data.report import print_shards

    m = shardlib.verify(_state(ctx).ws.shard_dir(name), checksums=True)
    print_shards(m, console)
    console.print(
        f"[green]ok[/]: every file of {name} matches manifest.json"
        + (" [yellow](stale: rebuild with roost tokenize --rebuild-stale)[/]" if m.get("stale") else "")
    )


@app.command("demo-corpus")
def demo_corpus(
    ctx: typer.Context,
    vader_sdist: Annotated[
        Path | None, typer.Option("--vader-sdist", help="Path to vaderSentiment-3.3.2.tar.gz.")
    ] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    posts: Annotated[
        int | None, typer.Option("--posts", help="A seeded sample of this many source texts (default: all ~19.7k).")
    ] = None,
) -> None:
    """Write the demo exports (X archives + Mastodon outboxes of real text) into <home>/exports.

    Example: [bold]roost demo-corpus && roost ingest roost-home/exports[/]
    """
    from roost.corpus.demo import build, find_vader_sdist

    ws = _state(ctx).ws.ensure()
    summary = build(ws.exports, find_vader_sdist(vader_sdist, ws.cache), seed, posts)
    console.print(
        f"wrote {summary.posts:,} posts as {summary.x_archives} X archives and "
        f"{summary.mastodon_outboxes} Mastodon outboxes under {summary.path}"
    )
    console.print(f"next: roost --home {ws.root} ingest {summary.path}")


from roost.cli_model import register as _register_model_verbs  # noqa: E402

_register_model_verbs(app, _state)
from roost.cli_train import register as _register_train_verbs  # noqa: E402

_register_train_verbs(app, _state)

from roost.cli_search import register as _register_search_verbs  # noqa: E402
from roost.cli_serve import register as _register_serve_verbs  # noqa: E402

_register_serve_verbs(app, _state)
_register_search_verbs(app, _state)
from roost.cli_plan import register as _register_plan_verbs  # noqa: E402

_register_plan_verbs(app, _state)
from roost.cli_db import register as _register_db_verbs  # noqa: E402

_register_db_verbs(app, _state, _RoostGroup)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
