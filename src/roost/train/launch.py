"""The torchrun command line of `roost train --nproc N ...` (started by roost.train.run): the same command as N
ranks on this machine (`python -m torch.distributed.run --standalone`), with elastic restarts.

Each rank is `python -m roost <the same arguments, less --nproc/--max-restarts>`; it sees RANK/WORLD_SIZE and joins
the job (roost.train.parallel.init_distributed). After a failure torchrun restarts the whole group (up to
`--max-restarts` times); the restarted ranks resume from the newest complete checkpoint.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from roost.train import checkpoint as ckpt

_OWN = ("--nproc", "--max-restarts")


def rank_argv(argv: list[str]) -> list[str]:
    """The user's arguments without the launcher's own options (`--nproc 2`, `--nproc=2`, `--max-restarts 1`)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in _OWN:
            skip = True
            continue
        if a.startswith(tuple(f"{o}=" for o in _OWN)):
            continue
        out.append(a)
    return out


def torchrun_argv(nproc: int, max_restarts: int, args: list[str]) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        f"--max-restarts={max_restarts}",
        "-m",
        "roost",
        *args,
    ]


def restarted_with_checkpoint(run_dir: Path) -> bool:
    """Inside a rank: whether torchrun restarted the group and there is a checkpoint to continue from."""
    restarts = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    return restarts > 0 and bool(ckpt.list_checkpoints(run_dir / "checkpoints"))
