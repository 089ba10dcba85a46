"""The `roost` command's frame: the app, one-line errors for every verb, the global options that build the
context (roost.context.Roost) once, and what every verb module shares. The verbs live in the modules beside this
one (roost.cli.corpus, .data, .model, .train, .serve, .search, .plan, .db), each parsing flags, calling one
stage function and printing.

    roost --help; roost --home DIR VERB ...
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import typing
from pathlib import Path
from typing import Annotated, Any

import typer
import typer.core
import typer.main
from rich.console import Console
from rich.markup import escape

from roost.config import FLAG, RoostConfig
from roost.context import Roost
from roost.errors import RoostError
from roost.workspace import Workspace


class RoostGroup(typer.core.TyperGroup):
    """Prints a RoostError as one line (no traceback) and exits with its code, for every verb."""

    def invoke(self, ctx: typer.Context) -> object:  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except RoostError as e:
            err_console.print(f"[red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)  # words as written
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
        """The post store: `--store URL`, else `[store] url`, else `$ROOST_STORE`, else the home's SQLite file."""
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
            help="Post store: a postgresql:// URL (else [store] url in roost.toml, else <home>/corpus.db). "
            "Every command then reads and writes that store.",
        ),
    ] = None,
) -> None:
    ctx.obj = State(Roost.at(home, config, store))  # a bad --store or --config is a usage error here


STYLE_TAG = re.compile(r"\[(/?(?:bold|dim|italic|red|yellow|green|cyan)?)\]")


def literal_brackets(text: str | None) -> str | None:
    """Help text with every bracketed word kept (`[search] k`, `[store] url`): Rich markup would swallow it. Only
    the style tags the help texts use (`[bold]…[/]`) stay markup."""
    if not text:
        return text
    out, at = [], 0
    for m in re.finditer(r"\\?\[", text):
        out.append(text[at : m.start()])
        tag = STYLE_TAG.match(text, m.start())
        out.append(m.group() if m.group().startswith("\\") or tag else "\\[")
        at = m.end()
    return "".join(out) + text[at:]


def command() -> Any:
    """The app as the command line runs it (typer's click command), every help text through `literal_brackets`."""
    root = typer.main.get_command(app)
    todo = [root]
    while todo:
        cmd = todo.pop()
        cmd.help = literal_brackets(cmd.help)
        for param in cmd.params:
            if hasattr(param, "help"):  # options and typer's arguments
                param.help = literal_brackets(param.help)
        todo += getattr(cmd, "commands", {}).values()  # a group's verbs
    return root


def option(name: str, kind: Any, default: Any, *decls: str, help: str | None = None) -> inspect.Parameter:
    """One typer option as a keyword parameter (`declare` puts a list of them on a verb)."""
    return inspect.Parameter(
        name,
        inspect.Parameter.KEYWORD_ONLY,
        default=default,
        annotation=Annotated[kind, typer.Option(*decls, help=help)],
    )


def config_options(cls: type, names: list[str] | None = None) -> list[inspect.Parameter]:
    """One option per setting of a config dataclass that has `flag(...)` metadata (roost.config.flag), in field order
    or the order of `names`: `--seq-len` for `seq_len` (or the field's `decls`), its help text from the metadata. A
    switch (bool) defaults to off; any other option to None (left out: roost.toml's value or the field's default),
    unless the field says its default always applies. One declaration per setting: the file and the flags cannot
    drift."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if FLAG in f.metadata}
    params = []
    for name in names or list(fields):
        f = fields[name]
        kind, default = hints[f.name], f.default
        if kind is not bool and not f.metadata["always"]:
            kind, default = kind | None, None
        decls = f.metadata.get("decls") or (f"--{f.name.replace('_', '-')}",)
        params.append(option(f.name, kind, default, *decls, help=f.metadata[FLAG] or None))
    return params


def given(cls: type, options: dict[str, Any]) -> dict[str, Any]:
    """The settings of `cls` that options set: a value option when given, a switch when turned on."""
    names = {f.name for f in dataclasses.fields(cls) if FLAG in f.metadata}
    return {k: v for k, v in options.items() if k in names and v is not None and v is not False}


def declare(params: list[inspect.Parameter], with_ctx: bool = False, on: Any = None, name: str | None = None) -> Any:
    """Register a verb `def verb(**options)` (or `(ctx, **options)`) with these declared options on `on` (the app, or
    a verb group) as `name`: the option list is data, not a long signature."""

    def register(fn: Any) -> Any:
        ctx = [inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)]
        fn.__signature__ = inspect.Signature([*(ctx if with_ctx else []), *params])
        fn.__annotations__ = {p.name: p.annotation for p in fn.__signature__.parameters.values()}
        (on or app).command(name)(fn)
        return fn

    return register


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
