"""Start a training run from a `TrainConfig`: a dry run, one process, a torchrun job on this machine, or one rank
of a job torchrun/srun started. `roost train` parses flags into a TrainConfig and calls `run`; so can a script:

    from roost.train.entry import Launch, run
    run(Roost.at(home), TrainConfig(name="demo", preset="tiny", steps=50), Launch(), say=print, drive=lambda t: t.train())
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from roost.context import Roost
from roost.errors import UsageError
from roost.train.run import TrainConfig, resolve_init, start_over


@dataclass
class Launch:
    """How to run (not what to train): resume, start over, processes, export at the end."""

    resume: bool = False
    resume_from: str = ""
    force: bool = False
    nproc: int | None = None
    max_restarts: int = 0
    export: bool = True


def run(ctx: Roost, cfg: TrainConfig, opts: Launch, say: Callable[[str], None], drive: Callable[[Any], None]) -> int:
    """Train (or, with `nproc`, start torchrun doing it); returns the exit code. `drive(trainer)` runs the steps
    (the CLI wraps `trainer.train()` in a progress bar); `say` prints one line of news, on rank 0 only."""
    from roost.train import launch
    from roost.train.parallel import init_distributed, launched_by_torchrun, shutdown
    from roost.train.trainer import Trainer

    ws = ctx.ws
    by_torchrun = launched_by_torchrun()
    if opts.force and not opts.resume and not opts.resume_from and not by_torchrun:
        start_over(ws, cfg.name, cfg.init)  # the folders this run would write, checked as roost's own first
    if opts.nproc is not None and not by_torchrun:
        if opts.nproc < 1:
            raise UsageError(f"--nproc must be >= 1, got {opts.nproc}")
        return launch.run_local(opts.nproc, opts.max_restarts, ws.run_dir(cfg.name), say)
    if cfg.init:
        cfg = dataclasses.replace(cfg, init=str(resolve_init(ws, cfg.init)))
    dist, resume = None, opts.resume
    if by_torchrun:
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
