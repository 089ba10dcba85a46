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

from roost.config import CorpusConfig, RoostConfig, load_config
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
console = Console()


@dataclasses.dataclass
class State:
    ws: Workspace
    config: RoostConfig


def _state(ctx: typer.Context) -> State:
    return ctx.obj  # type: ignore[no-any-return]


@app.callback()
def main_options(
    ctx: typer.Context,
    home: Annotated[str | None, typer.Option("--home", help="Workspace directory (else $ROOST_HOME, else ./roost-home).")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="TOML settings file (default: <home>/roost.toml).")] = None,
) -> None:
    ws = Workspace.resolve(home)
    if config is not None and not config.is_file():
        raise UsageError(f"--config {config}: no such file")
    ctx.obj = State(ws, load_config(config or ws.config_file))


@app.command()
def ingest(
    ctx: typer.Context,
    paths: Annotated[list[Path], typer.Argument(help="Export files or folders (searched for exports).")],
    format: Annotated[str | None, typer.Option("--format", "-f", help="Force the format: x-archive, twitter-api, "
                                               "mastodon, bluesky, jsonl, csv, parquet.")] = None,
    map: Annotated[str | None, typer.Option("--map", help="Generic files: FIELD=COLUMN,... e.g. text=body,author=user")] = None,
    source: Annotated[str, typer.Option("--source", help="Generic files: id prefix / source name.")] = "generic",
    strict: Annotated[bool, typer.Option("--strict", help="Any bad record is fatal; nothing is written.")] = False,
    include_deleted: Annotated[bool, typer.Option("--include-deleted", help="X archives: also deleted tweets.")] = False,
    include_private: Annotated[bool, typer.Option("--include-private", help="Also keep followers-only and direct posts.")] = False,
    near_dup_threshold: Annotated[float | None, typer.Option("--near-dup-threshold", help="Jaccard threshold in (0, 1); default 0.8.")] = None,
    scrub_mentions: Annotated[bool, typer.Option("--scrub-mentions", help="Also replace @mentions in training text.")] = False,
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
    report = run_ingest(paths, st.ws.corpus_db, cfg, opts, show_progress=not quiet and console.is_terminal)
    print_ingest_report(report.to_json(), console)


@corpus_app.command("stats")
def corpus_stats(ctx: typer.Context) -> None:
    """Counts for the whole store: posts, training text, duplicates, PII, languages, sources, rejects.

    Example: [bold]roost corpus stats[/]
    """
    from roost.corpus.report import print_stats
    from roost.corpus.store import Store

    with Store(_state(ctx).ws.corpus_db, readonly=True) as store:
        print_stats(store.stats(), console)


@app.command()
def forget(
    ctx: typer.Context,
    author: Annotated[list[str] | None, typer.Option("--author", help="Author handle as stored (repeatable).")] = None,
    post: Annotated[list[str] | None, typer.Option("--post", help="Post id, e.g. x:1234 (repeatable).")] = None,
) -> None:
    """Delete posts or whole authors and tombstone them: re-ingest never brings them back.

    Example: [bold]roost forget --author alice --post x:1600000000000000123[/]
    """
    from roost.corpus.store import Store

    if not author and not post:
        raise UsageError("forget: give --author NAME and/or --post ID")
    with Store(_state(ctx).ws.corpus_db, readonly=True) as store:
        n = store.forget(author or [], post or [])
    console.print(f"forgot {n['posts']:,} post(s); tombstoned {n['authors']} author(s) and {n['post_ids']} post id(s)")


@app.command("demo-corpus")
def demo_corpus(
    ctx: typer.Context,
    vader_sdist: Annotated[Path | None, typer.Option("--vader-sdist", help="Path to vaderSentiment-3.3.2.tar.gz.")] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
) -> None:
    """Write the demo exports (X archives + Mastodon outboxes of real text) into <home>/exports.

    Example: [bold]roost demo-corpus && roost ingest roost-home/exports[/]
    """
    from roost.corpus.demo import build, find_vader_sdist

    ws = _state(ctx).ws.ensure()
    summary = build(ws.exports, find_vader_sdist(vader_sdist, ws.cache), seed)
    console.print(f"wrote {summary.posts:,} posts as {summary.x_archives} X archives and "
                  f"{summary.mastodon_outboxes} Mastodon outboxes under {summary.path}")
    console.print(f"next: roost --home {ws.root} ingest {summary.path}")


def main() -> None:
    app()

if __name__ == "__main__":
    main()
