"""`roost tokenizer train|report`, `roost tokenize`, `roost shards list|verify`: the training data's verbs
(roost.data).

    roost tokenizer train --vocab-size 16384 && roost tokenize --split-by author && roost shards verify default
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Any

import typer

from roost.cli.app import RoostGroup, app, config_options, console, declare, given, option, progress_bar, state
from roost.config import ShardConfig, TokenizerConfig

tokenizer_app = typer.Typer(
    cls=RoostGroup, help="Train or measure a BPE tokenizer on the post store.", no_args_is_help=True
)
app.add_typer(tokenizer_app, name="tokenizer")
shards_app = typer.Typer(cls=RoostGroup, help="Look at and check token shard sets.", no_args_is_help=True)
app.add_typer(shards_app, name="shards")


TOKENIZER_OPTIONS = [
    option("name", str, "default", "--name", help="Saved as <home>/tokenizers/NAME."),
    *config_options(TokenizerConfig),  # [tokenizer] settings: roost.config
    option("quiet", bool, False, "--quiet", "-q", help="No progress bar."),
    option("force", bool, False, "--force", help="Replace an existing tokenizers/NAME."),
]


@declare(TOKENIZER_OPTIONS, with_ctx=True, on=tokenizer_app, name="train")
def tokenizer_train(ctx: typer.Context, **o: Any) -> None:
    """Train a byte-level BPE tokenizer on the store's training text (PII-scrubbed) and report on it.

    Example: [bold]roost tokenizer train --vocab-size 16384[/]
    """
    from roost.data import tokenizer as toklib
    from roost.data.report import print_tokenizer_report

    st = state(ctx)
    out = st.ws.claim(st.ws.tokenizer_dir(o["name"]), o["force"])
    cfg = dataclasses.replace(st.config.tokenizer, **given(TokenizerConfig, o))
    total = toklib.count_posts(st.store)
    total = min(total, cfg.max_posts) if cfg.max_posts else total
    with progress_bar(not o["quiet"] and console.is_terminal) as progress:
        task = progress.add_task("reading posts for BPE", total=total)
        path = toklib.train(st.store, out, cfg, on_batch=lambda n: progress.advance(task, n))
    r = toklib.report(st.store, path, cfg.report_posts)
    (path.parent / "report.json").write_text(__import__("json").dumps(r, indent=1))
    print_tokenizer_report(r, console)
    console.print(f"saved {path} (loads in transformers: AutoTokenizer.from_pretrained('{path.parent}'))")
    console.print(f"next: roost --home {st.ws.root} tokenize --tokenizer {o['name']}")


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

    st = state(ctx)
    path = toklib.resolve(st.ws.tokenizers, tokenizer)
    print_tokenizer_report(toklib.report(st.store, path, st.config.tokenizer.report_posts), console)


TOKENIZE_OPTIONS = [
    option("name", str, "default", "--name", help="Shard set written to <home>/shards/NAME."),
    option("tokenizer", str, "default", "--tokenizer", "-t", help="Tokenizer name, model directory or tokenizer.json."),
    *config_options(ShardConfig),  # [data] settings: roost.config
    option("rebuild_stale", bool, False, "--rebuild-stale", help="Rebuild every stale set with its recorded settings."),
    option("quiet", bool, False, "--quiet", "-q", help="No progress bar."),
    option("force", bool, False, "--force", help="Replace an existing shards/NAME."),
]


@declare(TOKENIZE_OPTIONS, with_ctx=True)
def tokenize(ctx: typer.Context, **o: Any) -> None:
    """Tokenise the store into train/val token shards (memmap) with a document index and manifest.json.

    Example: [bold]roost tokenize --tokenizer default --val-fraction 0.02 --split-by author[/]
    """
    import time

    from roost.data import shards as shardlib
    from roost.data import tokenizer as toklib
    from roost.data.report import print_shards

    st = state(ctx)
    jobs: list[tuple[str, Path, ShardConfig]] = []
    if o["rebuild_stale"]:
        jobs = shardlib.stale_jobs(st.ws.shards)
        if not jobs:
            console.print("no stale shard sets")
            return
    else:
        cfg = dataclasses.replace(st.config.data, **given(ShardConfig, o))
        st.ws.claim(st.ws.shard_dir(o["name"]), o["force"])
        jobs.append((o["name"], toklib.resolve(st.ws.tokenizers, o["tokenizer"]), cfg))
    for set_name, tok_path, cfg in jobs:
        t0 = time.perf_counter()
        with progress_bar(not o["quiet"] and console.is_terminal) as progress:
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

    print_shard_sets(shardlib.list_sets(state(ctx).ws.shards), console)  # type: ignore[arg-type]


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

    m = shardlib.verify(state(ctx).ws.shard_dir(name), checksums=True)
    print_shards(m, console)
    console.print(
        f"[green]ok[/]: every file of {name} matches manifest.json"
        + (" [yellow](stale: rebuild with roost tokenize --rebuild-stale)[/]" if m.get("stale") else "")
    )
