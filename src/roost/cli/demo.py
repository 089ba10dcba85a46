"""`roost demo-corpus`: the demo's exports (real-format X archives and Mastodon outboxes of real text) into
`<home>/exports` (roost.demo.build).

    roost demo-corpus --posts 6000 && roost ingest roost-home/exports
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from roost.cli.app import app, console, state


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
    from roost.demo.build import build, find_vader_sdist

    ws = state(ctx).ws.ensure()
    summary = build(ws.exports, find_vader_sdist(vader_sdist, ws.cache), seed, posts)
    console.print(
        f"wrote {summary.posts:,} posts as {summary.x_archives} X archives and "
        f"{summary.mastodon_outboxes} Mastodon outboxes under {summary.path}"
    )
    console.print(f"next: roost --home {ws.root} ingest {summary.path}")
