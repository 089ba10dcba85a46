"""The one start path of a training run, `run`: `roost train` parses flags into a `TrainConfig` and calls it, and
so can a script. It trains in this process (alone, or as one rank of a job that torchrun/srun started:
scripts/slurm/train.sbatch), or with `nproc` starts torchrun on this machine, whose ranks come back here.

    roost train --name demo --preset tiny --steps 50          # this process
    roost train --name demo --nproc 2 --dp-shard 2 ...        # torchrun: 2 ranks, each `python -m roost train ...`

    from roost.train.run import Launch, run
    run(Roost.at(home), TrainConfig(name="demo", preset="tiny", steps=50), Launch(), say=print, drive=lambda t: t.train())

`--force` starts over (`start_over`: only the folders roost wrote); `--resume` continues the newest checkpoint.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from roost.context import Roost
from roost.errors import UsageError
from roost.train import launch
from roost.train.build import resolve_init
from roost.train.config import TrainConfig
from roost.train.parallel import init_distributed, report_hangs, shutdown
from roost.workspace import Workspace


@dataclass
class Launch:
    """How to run (not what to train): resume, start over, processes, export at the end."""

    resume: bool = False
    resume_from: str = ""
    force: bool = False
    nproc: int | None = None
    max_restarts: int = 0
    export: bool = True


def launched_by_torchrun() -> bool:
    """This process is one rank of a torchrun job (the single-process path never touches distributed code)."""
    return "TORCHELASTIC_RUN_ID" in os.environ or ("RANK" in os.environ and "WORLD_SIZE" in os.environ)


def run(ctx: Roost, cfg: TrainConfig, opts: Launch, say: Callable[[str], None], drive: Callable[[Any], None]) -> int:
    """Start a run: train here (alone or as a rank of a torchrun job), or with `nproc` start torchrun on this
    machine and wait for it; returns the exit code. `drive(trainer)` runs the steps (the CLI wraps
    `trainer.train()` in a progress bar); `say` prints one line of news (rich markup), on rank 0 only."""
    by_torchrun = launched_by_torchrun()
    if opts.force and not opts.resume and not opts.resume_from and not by_torchrun:
        start_over(ctx.ws, cfg.name, cfg.init)  # the folders this run would write, checked as roost's own first
    if opts.nproc is not None and not by_torchrun:
        if opts.nproc < 1:
            raise UsageError(f"--nproc must be >= 1, got {opts.nproc}")
        return _torchrun(ctx.ws.run_dir(cfg.name), opts.nproc, opts.max_restarts, say)
    return _train_here(ctx, cfg, opts, say, drive, by_torchrun)


def _torchrun(run_dir: Path, nproc: int, max_restarts: int, say: Callable[[str], None]) -> int:
    """Run this command as `nproc` ranks under torchrun, wait, and name the ranks that hung (their stacks are in
    run_dir/hang/)."""
    argv = launch.torchrun_argv(nproc, max_restarts, launch.rank_argv(sys.argv[1:]))
    for stale in (run_dir / "hang").glob("rank*.txt"):
        stale.unlink()
    say(f"[dim]torchrun: {nproc} ranks, up to {max_restarts} restart(s)[/]")
    rc = subprocess.call(argv, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    for line in report_hangs(run_dir):
        say(f"[red]{line}[/]")
    if rc:
        say(f"[red]error:[/] the job failed (torchrun exit code {rc}); see the rank tracebacks above")
    return rc


def _train_here(
    ctx: Roost, cfg: TrainConfig, opts: Launch, say: Callable[[str], None], drive: Callable[[Any], None], rank: bool
) -> int:
    """Build the trainer in this process (joining the job first when torchrun started it: `rank`), drive it,
    export at the end."""
    from roost.train.trainer import Trainer

    ws = ctx.ws
    if cfg.init:
        cfg = dataclasses.replace(cfg, init=str(resolve_init(ws, cfg.init)))
    dist, resume = None, opts.resume
    if rank:
        # the collectives' own timeout sits well past the hang watchdog's, so a frozen rank is always reported by
        # the watchdog (stacks of every rank) rather than by a bare gloo/NCCL timeout first
        timeout = cfg.hang_timeout * 2 + 30 if cfg.hang_timeout else 600
        dist = init_distributed(cfg.dp_replicate, cfg.dp_shard, cfg.tp, cfg.device, timeout_s=timeout)
        resume = resume or launch.restarted_with_checkpoint(ws.run_dir(cfg.name))
    try:
        trainer = Trainer(ctx, cfg, resume=resume, resume_from=opts.resume_from, dist=dist)
        main = trainer.dist.main
        if main:
            say(trainer.dtype_choice.line())
        drive(trainer)
        if opts.export:
            meta = trainer.export()
            if main:
                say(
                    f"model → {ws.model_dir(trainer.cfg.name)} (sha256 {meta['model_sha256'][:12]}…); "
                    f'try: roost generate {trainer.cfg.name} "your prompt"'
                )
    finally:
        if dist is not None:
            shutdown()
    return 0


def start_over(ws: Workspace, name: str, init: str = "") -> None:
    """`roost train --force`: remove the run folder and models/NAME that roost wrote (their marker files say so);
    never the model this run fine-tunes from."""
    if init and resolve_init(ws, init).resolve() == ws.model_dir(name).resolve():
        raise UsageError(f"--init {init} is models/{name}, which --force would replace: pick another --name")
    for path in (ws.run_dir(name), ws.model_dir(name)):
        ws.claim(path, force=True)  # refuses a folder roost did not write
        if path.exists():
            tmp = path.parent / f".{path.name}.old-{os.getpid()}"
            path.rename(tmp)
            shutil.rmtree(tmp, ignore_errors=True)


__all__ = ["Launch", "TrainConfig", "run", "start_over"]
