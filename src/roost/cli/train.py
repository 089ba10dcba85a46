"""CLI verb `roost train`: one process, a torchrun job on this machine (`--nproc N`), one rank of a cluster job
(launched by torchrun/srun: scripts/slurm/train.sbatch), or a dry run that sizes a run without running it.

Registered on the main typer app by `roost.cli`; a thin call into `roost.train.run` (docs/scale.md). The options
that set a `TrainConfig` are generated from its fields (roost.train.config: one declaration per setting, so the
`[train]` section and the flags cannot drift); this module declares only how to run (resume, processes, dry run).
"""

from __future__ import annotations

import inspect
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from roost.cli.app import app, config_options, given, option, state
from roost.train.config import TrainConfig

KEYWORD = inspect.Parameter.KEYWORD_ONLY

console = Console()


# the verb's own options (how to run, not what to train), placed in --help after the settings they follow
LAUNCH = [
    option("resume", bool, False, "--resume", help="Continue the newest checkpoint of --name."),
    option("resume_from", str | None, None, "--resume-from", help="Continue this checkpoint (step_N)."),
    option("no_export", bool, False, "--no-export", help="Do not write models/NAME at the end."),
    option("force", bool, False, "--force", help="Start over: replace an existing run and models/NAME of this name."),
    option("nproc", int | None, None, "--nproc", help="Run N processes on this machine (torchrun for you)."),
    option(
        "max_restarts", int, 0, "--max-restarts", help="With --nproc: restart the group this often after a failure."
    ),
]
DRY_RUN = [
    option(
        "dry_run", bool, False, "--dry-run", help="Build on the meta device; print params, FLOPs and memory per rank."
    ),
    option("gpu", str, "h100", "--gpu", help="With --dry-run: the GPU to check the fit on."),
    option(
        "world", int | None, None, "--world", help="With --dry-run: ranks in the job (default: the mesh's product)."
    ),
    option("quiet", bool, False, "--quiet", "-q", help="No progress bar."),
]


def _signature() -> inspect.Signature:
    settings = config_options(TrainConfig)
    cut = next(i for i, p in enumerate(settings) if p.name == "device") + 1
    ctx = inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)
    return inspect.Signature([ctx, *settings[:cut], *LAUNCH, *settings[cut:], *DRY_RUN])


def train(ctx: typer.Context, **options: Any) -> None:
    """Train from scratch on token shards, or fine-tune an imported model (full, LoRA, or SFT on replies).

    Example: [bold]roost train --name demo --preset small --steps 300[/]   ·
    [bold]roost train --name voice --init smollm2 --sft --lora-rank 8 --steps 100[/]   ·
    [bold]roost train --nproc 2 --dp-shard 2 ...[/] (FSDP2)   ·   [bold]roost train --dry-run --preset llama3-70b
    --dp-shard 64 --tp 8 --gpu h100[/]
    """
    from roost.config import build_section
    from roost.train.run import Launch, run

    st, o = state(ctx), options
    cfg = build_section(TrainConfig, {**st.config.train, **given(TrainConfig, o)}, "[train] / flags")
    if o["dry_run"]:
        from roost.train.dryrun import print_dry_run

        print_dry_run(st.ws, cfg, o["gpu"], o["world"], console)
        return
    opts = Launch(o["resume"], o["resume_from"] or "", o["force"], o["nproc"], o["max_restarts"], not o["no_export"])
    rc = run(
        st.ctx,
        cfg,
        opts,
        say=lambda line: console.print(line, highlight=False),
        drive=lambda trainer: _train_with_progress(trainer, o["quiet"] or not trainer.dist.main),
    )
    if rc:
        raise typer.Exit(rc)


train.__signature__ = _signature()  # type: ignore[attr-defined]
train.__annotations__ = {p.name: p.annotation for p in train.__signature__.parameters.values()}  # type: ignore[attr-defined]
app.command()(train)


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
    from roost.train.trainer import plot_losses

    png = plot_losses(trainer.paths.run / "metrics.jsonl", trainer.paths.run / "loss.png", f"roost train {cfg.name}")
    console.print(
        f"[dim]MFU against {trainer.peak_note} (an estimate on CPU); metrics: {trainer.paths.run / 'metrics.jsonl'}, "
        f"loss curve: {png}, tensorboard --logdir {trainer.paths.run / 'tensorboard'}[/]"
    )
