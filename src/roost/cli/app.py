"""The `roost` command's frame: the app, one-line errors for every verb, the global options that build the
context (roost.context.Roost) once, and what every verb module shares. The verbs live in the modules beside this
one (roost.cli.corpus, .data, .model, .train, .serve, .search, .plan, .db), each parsing flags, calling one
stage function and printing.

    roost --help; roost --home DIR VERB ...
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Any

import typer
import typer.core
from rich.console import Console

from roost.config import RoostConfig
from roost.context import Roost
from roost.errors import RoostError
from roost.workspace import Workspace


class RoostGroup(typer.core.TyperGroup):
    """Prints a RoostError as one line (no traceback) and exits with its code, for every verb."""

    def invoke(self, ctx: typer.Context) -> object:  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except RoostError as e:
            err_console.print(f"[red]error:[/] {e}", highlight=False, soft_wrap=True)
            raise typer.Exit(e.exit_code) from None


err_console = Console(stderr=True)
app = typer.Typer(
    cls=RoostGroup,
    name="roost",
    help="Train, serve and search your own LLM on your social network's posts.\n\n"
    "Start with: roost demo-corpus && roost ingest roost-home/exports && roost corpus stats",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
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


def state(ctx: typer.Context) -> State:
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


def progress_bar(show: bool) -> Any:
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
