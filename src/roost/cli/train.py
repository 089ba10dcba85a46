"""CLI verb `roost train`: one process, a torchrun job on this machine (`--nproc N`), one rank of a cluster job
(launched by torchrun/srun: scripts/slurm/train.sbatch), or a dry run that sizes a run without running it.

Registered on the main typer app by `roost.cli`; a thin call into `roost.train` (docs/scale.md).
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from roost.cli.app import app, state

console = Console()


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
    sft: Annotated[bool, typer.Option("--sft", help="Train on (post → reply) pairs with the chat template.")] = False,
    steps: Annotated[int | None, typer.Option("--steps")] = None,
    seq_len: Annotated[int | None, typer.Option("--seq-len")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size")] = None,
    grad_accum: Annotated[int | None, typer.Option("--grad-accum")] = None,
    lr: Annotated[float | None, typer.Option("--lr", help="Peak LR (default from the dial / mode).")] = None,
    warmup: Annotated[int | None, typer.Option("--warmup")] = None,
    schedule: Annotated[str | None, typer.Option("--schedule", help="cosine, wsd or constant.")] = None,
    optimizer: Annotated[str | None, typer.Option("--optimizer", help="adamw or muon.")] = None,
    dtype: Annotated[
        str | None, typer.Option("--dtype", help="auto (by CPU class, roost.probe), fp32 or bf16 (autocast).")
    ] = None,
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
    resume_from: Annotated[str | None, typer.Option("--resume-from", help="Continue this checkpoint (step_N).")] = None,
    no_export: Annotated[bool, typer.Option("--no-export", help="Do not write models/NAME at the end.")] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Start over: replace an existing run and models/NAME of this name.")
    ] = False,
    nproc: Annotated[
        int | None, typer.Option("--nproc", help="Run N processes on this machine (torchrun for you).")
    ] = None,
    max_restarts: Annotated[
        int, typer.Option("--max-restarts", help="With --nproc: restart the group this often after a failure.")
    ] = 0,
    parallel: Annotated[str | None, typer.Option("--parallel", help="fsdp (FSDP2/HSDP) or ddp.")] = None,
    dp_replicate: Annotated[int | None, typer.Option("--dp-replicate", help="HSDP replica groups.")] = None,
    dp_shard: Annotated[int | None, typer.Option("--dp-shard", help="FSDP shard degree (-1: the ranks left).")] = None,
    tp: Annotated[int | None, typer.Option("--tp", help="Tensor-parallel degree (within a node).")] = None,
    cpu_offload: Annotated[bool, typer.Option("--cpu-offload", help="FSDP2 keeps state in host memory.")] = False,
    async_ckpt: Annotated[bool, typer.Option("--async-ckpt", help="Write checkpoints in the background.")] = False,
    hang_timeout: Annotated[
        float | None, typer.Option("--hang-timeout", help="Seconds before a stuck step dumps stacks and exits.")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Build on the meta device; print params, FLOPs and memory per rank.")
    ] = False,
    gpu: Annotated[str, typer.Option("--gpu", help="With --dry-run: the GPU to check the fit on.")] = "h100",
    world: Annotated[
        int | None, typer.Option("--world", help="With --dry-run: ranks in the job (default: the mesh's product).")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Train from scratch on token shards, or fine-tune an imported model (full, LoRA, or SFT on replies).

    Example: [bold]roost train --name demo --preset small --steps 300[/]   ·
    [bold]roost train --name voice --init smollm2 --sft --lora-rank 8 --steps 100[/]   ·
    [bold]roost train --nproc 2 --dp-shard 2 ...[/] (FSDP2)   ·   [bold]roost train --dry-run --preset llama3-70b
    --dp-shard 64 --tp 8 --gpu h100[/]
    """
    from roost.config import build_section
    from roost.train.entry import Launch, run
    from roost.train.run import TrainConfig

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
        "parallel": parallel,
        "dp_replicate": dp_replicate,
        "dp_shard": dp_shard,
        "tp": tp,
        "hang_timeout": hang_timeout,
    }
    switches = {
        "sft": sft,
        "compile": compile,
        "activation_checkpointing": activation_checkpointing,
        "doc_mask": doc_mask,
        "cpu_offload": cpu_offload,
        "async_ckpt": async_ckpt,
    }
    table = {**st.config.train, **{k: v for k, v in flags.items() if v is not None}}
    table.update({k: True for k, v in switches.items() if v})
    cfg = build_section(TrainConfig, table, "[train] / flags")
    if dry_run:
        from roost.train.dryrun import print_dry_run

        print_dry_run(st.ws, cfg, gpu, world, console)
        return
    opts = Launch(resume, resume_from or "", force, nproc, max_restarts, export=not no_export)
    rc = run(
        st.ctx,
        cfg,
        opts,
        say=lambda line: console.print(line, highlight=False),
        drive=lambda trainer: _train_with_progress(trainer, quiet or not trainer.dist.main),
    )
    if rc:
        raise typer.Exit(rc)


def _train_with_progress(trainer: Any, quiet: bool) -> None:
    """A progress bar while training, then a table and the loss curve (rank 0 only under torchrun)."""
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
    if not trainer.dist.main:
        return
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
        f"[dim]MFU against {trainer.peak_note} (an estimate on CPU); metrics: {trainer.paths.run / 'metrics.jsonl'}, "
        f"loss curve: {png}, tensorboard --logdir {trainer.paths.run / 'tensorboard'}[/]"
    )
