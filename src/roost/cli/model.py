"""CLI verbs of the model stage: `roost import`, `roost export`, `roost train`, `roost generate`.

Registered on the main typer app by `roost.cli`; each verb is a thin call into `roost.model` / `roost.train`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from roost.cli.app import app, state
from roost.errors import UsageError
from roost.model.imports import import_model, resolve_model

console = Console()


@app.command("import")
def import_cmd(
    ctx: typer.Context,
    source: Annotated[
        str, typer.Argument(help="A llama GGUF file, a HF Llama directory, or 'smollm2' (the bundled base model).")
    ],
    name: Annotated[str | None, typer.Option("--name", help="Saved as <home>/models/NAME.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing models/NAME.")] = False,
) -> None:
    """Import a pretrained model (GGUF or HF safetensors) into <home>/models/NAME, in HF layout.

    Example: [bold]roost import smollm2[/]   or   [bold]roost import ~/Llama-3.2-1B --name llama1b[/]
    """
    out, meta = import_model(state(ctx).ws, source, name, force)
    console.print(f"imported {meta['source']} ({meta['params'] / 1e6:.1f} M parameters) → {out}")
    console.print(f"loads in transformers: AutoModelForCausalLM.from_pretrained('{out}')")


@app.command("export")
def export_cmd(
    ctx: typer.Context,
    source: Annotated[
        str, typer.Argument(help="models/NAME, or a run name under <home>/runs (its newest checkpoint).")
    ],
    out: Annotated[Path, typer.Argument(help="Directory to write (HF Llama layout).")],
    force: Annotated[bool, typer.Option("--force", help="Replace OUT if it is a model directory.")] = False,
) -> None:
    """Write a HF Llama directory (config.json, model.safetensors, tokenizer, generation config, chat template).

    Example: [bold]roost export demo-small ./demo-small-hf[/]
    """
    from roost.train.export import export

    meta = export(state(ctx).ctx, source, out, force)
    console.print(f"wrote {out} (model sha256 {meta.get('model_sha256', '?')[:12]}…)")


@app.command()
def generate(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="models/NAME or a model directory.")],
    prompt: Annotated[str, typer.Argument(help="Text to continue (with --chat: the user message).")],
    max_tokens: Annotated[int, typer.Option("--max-tokens")] = 60,
    temperature: Annotated[float, typer.Option("--temperature")] = 0.8,
    top_k: Annotated[int, typer.Option("--top-k")] = 50,
    top_p: Annotated[float, typer.Option("--top-p")] = 0.95,
    seed: Annotated[int | None, typer.Option("--seed")] = None,
    chat: Annotated[
        bool,
        typer.Option("--chat/--raw", help="Wrap the prompt in the chat template (default for models with one)."),
    ] = True,
    vs: Annotated[list[str] | None, typer.Option("--vs", help="Also sample these models; print side by side.")] = None,
    dtype: Annotated[str, typer.Option("--dtype", help="auto (by CPU class, roost.probe), bf16 or fp32.")] = "auto",
) -> None:
    """Sample a continuation (or a chat reply) from a model; the output is labelled as AI-generated.

    Example: [bold]roost generate smollm2 "Write a post about the first snow of the year"[/]
    """
    import torch

    from roost.infer.compose import chat_prompt
    from roost.infer.loading import text_side
    from roost.infer.sampling import SamplingParams
    from roost.infer.simple import generate as run_generate
    from roost.model.convert import load_model_dir
    from roost.probe import choose

    if max_tokens < 1 or temperature < 0 or not 0 < top_p <= 1 or top_k < 0:
        raise UsageError("--max-tokens >= 1, --temperature >= 0, --top-p in (0, 1], --top-k >= 0")
    choice = choose("decode", dtype)
    Console(stderr=True).print(f"[dim]{choice.line()}[/]", highlight=False)
    params = SamplingParams(max_tokens=max_tokens, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
    results = []
    for name in [model, *(vs or [])]:
        path = resolve_model(state(ctx).ws, name)
        m, meta = load_model_dir(path)
        if choice.dtype == "bf16":
            m.to(torch.bfloat16)
        tok, stops, template = text_side(path)  # as `roost serve` renders and stops a chat
        # a from-scratch base model continues text; imported and fine-tuned ChatML models get the user turn alone,
        # rendered by roost's ChatML template: the model's own may add a system turn (SmolLM2's does), which measured
        # worse on short prompts (docs/model.md, "roost generate --chat"), and this verb's prompt is pinned
        base_only = meta.get("source") == "trained" and not meta.get("init")
        chatml = template.from_model and tok.token_to_id("<|im_start|>") is not None
        use_chat = chat and not base_only and chatml
        text = chat_prompt(None, prompt) if use_chat else prompt
        out = run_generate(m, tok.encode(text, add_special_tokens=False).ids, params, stops)
        label = f"ai_generated: true · model {path.name} · sha256 {meta.get('model_sha256', '?')[:12]}…"
        results.append((path.name, ("" if use_chat else prompt) + tok.decode(out), label))
    if len(results) == 1:
        console.print(results[0][1], highlight=False, soft_wrap=True)
        console.print(f"[dim]{results[0][2]}[/]")
        return
    t = Table(title=f"prompt: {prompt}", show_lines=True)
    for name, _, _ in results:
        t.add_column(name, ratio=1)
    t.add_row(*(r[1] for r in results))
    t.add_row(*(f"[dim]{r[2]}[/]" for r in results))
    console.print(t)
