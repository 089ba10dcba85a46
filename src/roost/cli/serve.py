"""CLI verbs of generation: `roost serve`, `roost compose`, `roost reply`.

Registered on the main typer app by `roost.cli`; thin calls into `roost.infer` and `roost.serve`.
"""

from __future__ import annotations

import inspect
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from roost.cli.app import app, declare, option, state
from roost.errors import RoostError, UsageError
from roost.infer.loading import load_engine

console = Console()


def _say(line: str) -> None:
    from rich.markup import escape

    Console(stderr=True).print(f"[dim]{escape(line)}[/]", highlight=False)


def _print_suggestions(out: dict[str, Any], title: str) -> None:
    t = Table(title=title, show_lines=True)
    t.add_column("#", justify="right")
    t.add_column("candidate")
    t.add_column("chars", justify="right")
    for i, c in enumerate(out["candidates"], 1):
        t.add_row(str(i), c["text"], str(c["chars"]))
    console.print(t)
    d = out["dropped"]
    c0 = out["candidates"][0] if out["candidates"] else {"model": "?", "model_sha256": "?"}
    console.print(
        f"[dim]ai_generated: true · model {c0['model']} · sha256 {c0['model_sha256'][:12]}… · dropped: "
        f"{d['near_duplicate']} near-duplicate, {d['leak']} copying a corpus post, {d['empty']} empty[/]"
    )


@app.command()
def serve(
    ctx: typer.Context,
    model: Annotated[
        str | None, typer.Argument(help="models/NAME or a model directory; leave out to serve search only.")
    ] = None,
    host: Annotated[str, typer.Option("--host", help="Bind address (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port")] = 8000,
    api_key: Annotated[
        str | None, typer.Option("--api-key", help="Require 'Authorization: Bearer KEY' (default $ROOST_API_KEY).")
    ] = None,
    max_batch: Annotated[int, typer.Option("--max-batch", help="Requests decoded together.")] = 8,
    max_queue: Annotated[int, typer.Option("--max-queue", help="Waiting requests before 429.")] = 32,
    max_seq: Annotated[int, typer.Option("--max-seq", help="Context length served.")] = 2048,
    dtype: Annotated[str, typer.Option("--dtype", help="auto (by CPU class, roost.probe), bf16 or fp32.")] = "auto",
    quant: Annotated[
        str | None, typer.Option("--quant", help="int8: weight-only int8, ~1.7× faster decoding on CPU.")
    ] = None,
    no_search: Annotated[bool, typer.Option("--no-search", help="Do not serve search (/v1/search, /v1/ask).")] = False,
    header_timeout: Annotated[
        float, typer.Option("--header-timeout", help="Seconds a client has to send its request headers.")
    ] = 10.0,
    body_timeout: Annotated[
        float, typer.Option("--body-timeout", help="Seconds a client has to send its whole request body.")
    ] = 30.0,
    max_connections: Annotated[
        int, typer.Option("--max-connections", help="Open connections at once; more get 503.")
    ] = 256,
    upstream: Annotated[
        list[str] | None,
        typer.Option("--upstream", help="An OpenAI-compatible server (vLLM) serving MODEL; repeat for replicas."),
    ] = None,
    upstream_sha256: Annotated[
        str | None,
        typer.Option(
            "--upstream-sha256",
            help="Vouch that the upstreams serve MODEL's weights (its sha256; needed for --upstream).",
        ),
    ] = None,
    vllm: Annotated[
        int, typer.Option("--vllm", help="Start N vLLM replicas on MODEL (make vllm) and serve through them.")
    ] = 0,
    vllm_python: Annotated[
        str | None, typer.Option("--vllm-python", help="vLLM's interpreter (default .venv-vllm/bin/python).")
    ] = None,
) -> None:
    """Serve a model over an OpenAI-compatible API (chat, completions, compose, reply), real-time search over
    the posts (/v1/search, /v1/posts, /v1/ask), metrics and a web page. Without a model: search only.

    Example: [bold]roost serve smollm2-replies --port 8000[/] then open http://127.0.0.1:8000/
    """
    from roost.serve import launch
    from roost.serve.config import ServeConfig

    st = state(ctx)
    args = ServeConfig(
        model=model, host=host, port=port, api_key=api_key, max_batch=max_batch, max_queue=max_queue,
        max_seq=max_seq, dtype=dtype, quant=quant, no_search=no_search, header_timeout=header_timeout,
        body_timeout=body_timeout, max_connections=max_connections,
        upstreams=upstream or st.config.serve.upstreams,
        upstream_sha256=upstream_sha256 or st.config.serve.upstream_sha256, vllm=vllm, vllm_python=vllm_python,
    )  # fmt: skip
    server = launch.build(st.ctx, args, say=_say)
    for line in launch.hints(server):
        console.print(line, highlight=False)
    launch.run(server)


def _suggest(
    ctx: typer.Context,
    system: str,
    user: str,
    title: str,
    *,
    model: str,
    n: int,
    max_chars: int,
    seed: int | None,
    dtype: str,
) -> None:
    from roost.corpus.backend import store_exists
    from roost.infer.compose import ComposeConfig, chat_prompt, suggest
    from roost.infer.guard import LeakGuard

    if not 1 <= n <= 8 or max_chars < 20:
        raise UsageError("-n must be in 1..8 and --max-chars >= 20")
    loaded = load_engine(state(ctx).ws, model, max_batch=max(n, 1), dtype=dtype, say=_say)
    prompt = chat_prompt(system, user, loaded.template)
    db = state(ctx).store
    guard = LeakGuard(db) if store_exists(db) else None
    prov = {"model": loaded.name, "model_sha256": loaded.sha256}
    try:
        out = suggest(loaded.engine, prompt, ComposeConfig.of(n, max_chars, seed=seed), guard, prov)
    finally:
        loaded.engine.shutdown()
    _print_suggestions(out, title)


# the options compose and reply share (one declaration each)
SUGGEST_OPTIONS = [
    option("model", str, "smollm2", "--model", "-m", help="models/NAME."),
    option("n", int, 3, "-n", help="Candidates."),
    option("max_chars", int, 280, "--max-chars"),
    option("seed", int | None, None, "--seed"),
    option("dtype", str, "auto", "--dtype", help="auto (by CPU class, roost.probe), bf16 or fp32."),
]


def _argument(name: str, help: str) -> inspect.Parameter:
    return inspect.Parameter(
        name, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Annotated[str, typer.Argument(help=help)]
    )


@declare([_argument("topic", "What the post is about (or a draft)."), *SUGGEST_OPTIONS], with_ctx=True)
def compose(ctx: typer.Context, topic: str, **o: Any) -> None:
    """Suggest N posts on a topic: within the character limit, no near-duplicates, no copies of corpus posts.

    Example: [bold]roost compose "the first snow of the year" -m smollm2-replies -n 3[/]
    """
    from roost.infer.compose import COMPOSE_SYSTEM

    _suggest(ctx, COMPOSE_SYSTEM, f"Write a post about: {topic}", f"compose: {topic}", **o)


@declare(
    [_argument("post", "A post id in the store (e.g. x:123) or the text to reply to."), *SUGGEST_OPTIONS], with_ctx=True
)
def reply(ctx: typer.Context, post: str, **o: Any) -> None:
    """Suggest N replies to a post (by id from the store, or its text).

    Example: [bold]roost reply x:1500000000000000042 -m smollm2-replies[/]
    """
    from roost.corpus.backend import open_reader
    from roost.infer.compose import REPLY_SYSTEM

    text = post
    from roost.corpus.backend import store_exists

    db = state(ctx).store
    if ":" in post and " " not in post and store_exists(db):
        with open_reader(db) as store:
            found = store.post_text(post)
        if found is None:
            raise RoostError(f"no post {post!r} in {db}")
        text = found
    _suggest(ctx, REPLY_SYSTEM, f"Reply to this post:\n{text}", f"reply to: {text[:80]}", **o)
