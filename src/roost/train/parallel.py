"""Parallelism applied to a built Llama from outside (the model holds no distributed code): process group, device
mesh, FSDP2 / HSDP, DDP, tensor + sequence parallelism, per-block activation checkpointing and torch.compile,
gradient clipping over sharded gradients, and a hang watchdog.

`roost train --nproc 2 --dp-shard 2 ...` runs torchrun for you; on a cluster `torchrun --nnodes N
--nproc-per-node 8 -m roost train ...` (scripts/slurm/train.sbatch). Every piece runs with gloo on CPU and with
NCCL on GPUs; tests/train/test_parallel.py checks DDP, FSDP2 and TP=2 losses against one process.

The mesh is (dp_replicate, dp_shard, tp), torchtitan's layout: HSDP replicates across `dp_replicate` groups and
shards inside `dp_shard`; tensor parallelism runs inside `tp` (put it within a node). Data-parallel ranks read
different batches; the ranks of one tensor-parallel group read the same one.
"""

from __future__ import annotations

import datetime
import faulthandler
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import torch
import torch.distributed as dist
from torch import nn

from roost.errors import UsageError
from roost.model.budget import Layout, check_layout
from roost.model.config import ModelConfig


@dataclass
class Dist:
    """Who this process is in the job, and the meshes it trains on (None when it runs alone)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    mesh: Any = None  # DeviceMesh (dp_replicate, dp_shard, tp)
    dp_rank: int = 0
    dp_size: int = 1
    tp: int = 1
    dp_replicate: int = 1
    dp_shard: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def on(self) -> bool:
        return self.mesh is not None


def mesh_shape(world: int, dp_replicate: int, dp_shard: int, tp: int) -> tuple[int, int, int]:
    """(dp_replicate, dp_shard, tp) for `world` ranks; dp_shard -1 takes whatever the others leave."""
    for k, v in (("dp_replicate", dp_replicate), ("tp", tp)):
        if v < 1:
            raise UsageError(f"--{k.replace('_', '-')} must be >= 1, got {v}")
    if dp_shard == -1:
        if world % (dp_replicate * tp):
            raise UsageError(
                f"world size {world} is not divisible by dp_replicate {dp_replicate} × tp {tp}; "
                f"choose degrees whose product divides {world}"
            )
        dp_shard = world // (dp_replicate * tp)
    if dp_shard < 1 or dp_replicate * dp_shard * tp != world:
        raise UsageError(
            f"mesh dp_replicate {dp_replicate} × dp_shard {dp_shard} × tp {tp} = {dp_replicate * dp_shard * tp} "
            f"ranks, but the job has {world}; the product must equal the world size (dp_shard -1 fills it in)"
        )
    return dp_replicate, dp_shard, tp


def check_tp(cfg: ModelConfig, tp: int, seq_len: int) -> None:
    """Tensor parallelism splits heads, KV heads (GQA), the FFN and, for sequence parallel norms, the sequence
    (the rules live with the memory model in roost.model.budget, which the planner shares)."""
    check_layout(cfg, Layout(tp=tp, seq_len=seq_len))


def init_distributed(dp_replicate: int, dp_shard: int, tp: int, device: str = "auto", timeout_s: float = 600.0) -> Dist:
    """Join the torchrun job (env RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT), gloo on CPU or NCCL on CUDA,
    and build the mesh. Without torchrun: a one-rank job on a private loopback store."""
    from torch.distributed.device_mesh import init_device_mesh

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    shape = mesh_shape(world, dp_replicate, dp_shard, tp)
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if device.startswith("cuda:"):
        raise UsageError("--device cuda:N is chosen per rank by LOCAL_RANK under --nproc; pass --device cuda")
    dev = torch.device(f"cuda:{local}") if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        timeout = datetime.timedelta(seconds=timeout_s)
        backend = "nccl" if use_cuda else "gloo"
        device_id = dev if use_cuda else None
        if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
            # torchrun's store outlives a restart; keys of the failed attempt (peer addresses of groups, whose
            # names repeat) would be read by the new one ("Connection refused"), so each attempt gets a prefix
            base = dist.TCPStore(
                os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world, is_master=False, timeout=timeout
            )
            attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
            store = dist.PrefixStore(f"roost/attempt{attempt}", base)
            dist.init_process_group(
                backend, store=store, rank=rank, world_size=world, timeout=timeout, device_id=device_id
            )
        elif "MASTER_ADDR" in os.environ:
            dist.init_process_group(backend, timeout=timeout, device_id=device_id)
        else:
            dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1, timeout=timeout)
    mesh = init_device_mesh(dev.type, shape, mesh_dim_names=("dp_replicate", "dp_shard", "tp"))
    rep, shard, _ = shape
    dp_rank = mesh["dp_replicate"].get_local_rank() * shard + mesh["dp_shard"].get_local_rank()
    return Dist(rank, world, local, dev, mesh, dp_rank, rep * shard, tp, rep, shard)


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


# -- applying parallelism ---------------------------------------------------------------------------------------------
def apply_tp(model: nn.Module, tp_mesh: Any) -> None:
    """Megatron column/row-wise attention and MLP with sequence-parallel norms (torchtitan's plan). Between blocks
    the activations are split along the sequence; attention and the MLP all-gather their input and reduce-scatter
    their output. The embedding and output head stay replicated, so the fused loss sees full rows."""
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor.parallel import (
        ColwiseParallel,
        PrepareModuleInput,
        PrepareModuleOutput,
        RowwiseParallel,
        SequenceParallel,
        parallelize_module,
    )

    root: Any = model
    parallelize_module(
        root.model,
        tp_mesh,
        {
            "embed_tokens": PrepareModuleOutput(output_layouts=Replicate(), desired_output_layouts=Shard(1)),
            "norm": SequenceParallel(),
        },
    )
    parallelize_module(
        root.model.norm,
        tp_mesh,
        PrepareModuleOutput(output_layouts=Shard(1), desired_output_layouts=Replicate()),
    )
    for block in root.model.layers:
        parallelize_module(
            block,
            tp_mesh,
            {
                "input_layernorm": SequenceParallel(),
                "self_attn": PrepareModuleInput(
                    input_layouts=(Shard(1), None, None, None, None),
                    desired_input_layouts=(Replicate(), None, None, None, None),
                ),
                "self_attn.q_proj": ColwiseParallel(),
                "self_attn.k_proj": ColwiseParallel(),
                "self_attn.v_proj": ColwiseParallel(),
                "self_attn.o_proj": RowwiseParallel(output_layouts=Shard(1)),
                "post_attention_layernorm": SequenceParallel(),
                "mlp": PrepareModuleInput(input_layouts=(Shard(1),), desired_input_layouts=(Replicate(),)),
                "mlp.gate_proj": ColwiseParallel(),
                "mlp.up_proj": ColwiseParallel(),
                "mlp.down_proj": RowwiseParallel(output_layouts=Shard(1)),
            },
        )


def apply_fsdp(
    model: nn.Module, dp_mesh: Any, param_dtype: torch.dtype | None, cpu_offload: bool, reshard_root: bool = False
) -> None:
    """FSDP2: one unit per transformer block plus the root (embedding, final norm, head). With a 2-D dp mesh
    (dp_replicate, dp_shard) this is HSDP. Parameters are gathered in `param_dtype`, gradients reduced in fp32."""
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard

    mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32 if param_dtype else None)
    kw: dict[str, Any] = {"mesh": dp_mesh, "mp_policy": mp}
    if cpu_offload:
        kw["offload_policy"] = CPUOffloadPolicy()
    root: Any = model
    layers = list(root.model.layers)
    for i, block in enumerate(layers):
        # the last block's parameters are needed again at once by backward: keep them gathered (torchtitan)
        fully_shard(block, reshard_after_forward=i < len(layers) - 1, **kw)
    fully_shard(model, reshard_after_forward=reshard_root, **kw)


def apply_ddp(model: nn.Module, dp_mesh: Any) -> nn.Module:
    from torch.nn.parallel import DistributedDataParallel

    dev = next(model.parameters()).device
    return DistributedDataParallel(
        model, process_group=dp_mesh.get_group(), device_ids=[dev] if dev.type == "cuda" else None
    )


def compile_blocks(model: nn.Module) -> None:
    """torch.compile each transformer block (torchtitan's choice: composes with FSDP2 and TP, and compiles once
    because the blocks are identical)."""
    root: Any = model
    for block in root.model.layers:
        block.compile()


def parallelize(
    model: nn.Module,
    d: Dist,
    mode: str,
    param_dtype: torch.dtype | None,
    cpu_offload: bool = False,
    compile: bool = False,
    init_seed: int | None = None,
) -> nn.Module:
    """Apply TP, then per-block compile, then FSDP2 or DDP over the data-parallel dims; returns the module the
    trainer calls (the DDP wrapper, or the model itself). `init_seed`: the model is on the meta device; it is
    materialised on this rank's device after sharding and initialised as `Llama.init_weights(init_seed)` would."""

    def materialise() -> None:
        if init_seed is not None:
            model.to_empty(device=d.device)
            if d.dp_size == 1 or mode == "ddp":  # FSDP2 keeps the tie itself
                model.tie_weights()  # type: ignore[operator]
            init_weights_sharded(model, init_seed)

    if cpu_offload and d.device.type != "cuda":
        raise UsageError("--cpu-offload moves FSDP2's state from GPU to host memory; it needs CUDA devices")
    if mode == "ddp" and d.tp > 1:
        raise UsageError("--parallel ddp does not combine with --tp; use --parallel fsdp")
    if d.tp > 1:
        apply_tp(model, d.mesh["tp"])
    if compile:
        compile_blocks(model)
    if mode == "ddp":
        if d.dp_replicate > 1 and d.dp_shard > 1:
            raise UsageError("--parallel ddp has no shard dimension: leave --dp-shard at 1 or -1")
        materialise()  # DDP broadcasts rank 0's weights at wrap time: they must exist
        return apply_ddp(model, d.mesh["dp_replicate", "dp_shard"]._flatten("dp"))
    if d.dp_size > 1:
        dp_mesh = d.mesh["dp_replicate", "dp_shard"] if d.dp_replicate > 1 else d.mesh["dp_shard"]
        apply_fsdp(model, dp_mesh, param_dtype, cpu_offload)
    materialise()
    return model


# -- job-wide figures ------------------------------------------------------------------------------------------------
def agree_stop(d: Dist, mine: bool) -> bool:
    """Whether any rank was asked to stop (SIGTERM): all ranks then save the same checkpoint and leave together."""
    if not d.on or d.world == 1:
        return mine
    t = torch.tensor([1.0 if mine else 0.0], device=d.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def mean_over_ranks(d: Dist, value: float) -> float:
    if d.world == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=d.device)
    dist.all_reduce(t)
    return float(t.item()) / d.world


def step_stats(d: Dist, step_s: float, mem_gb: float) -> dict[str, float]:
    """The job's step time (its slowest rank), the spread of step times across ranks (a straggler shows as a large
    spread and as `slowest_rank`), and the largest peak memory of any rank."""
    if d.world == 1:
        return {"step_s": step_s, "peak_mem_gb": mem_gb}
    t = torch.tensor([step_s, mem_gb], dtype=torch.float64, device=d.device)
    out = [torch.zeros_like(t) for _ in range(d.world)]
    dist.all_gather(out, t)
    times = [float(o[0]) for o in out]
    slowest = max(range(d.world), key=times.__getitem__)
    return {
        "step_s": times[slowest],
        "step_s_min": min(times),
        "step_spread": times[slowest] - min(times),
        "slowest_rank": float(slowest),
        "peak_mem_gb": max(float(o[1]) for o in out),
    }


@torch.no_grad()
def clip_grad_norm(params: list[nn.Parameter], max_norm: float) -> float:
    """Global L2 norm of all gradients — plain, FSDP-sharded and TP-sharded DTensors mixed — then clip to it.
    Gradients are grouped by (mesh, placements) so each group costs one small all-reduce."""
    from torch.distributed.tensor import DTensor

    groups: dict[Any, list[torch.Tensor]] = {}
    for p in params:
        if p.grad is None:
            continue
        g = p.grad
        key = (g.device_mesh, tuple(g.placements)) if isinstance(g, DTensor) else ("plain", g.device)
        groups.setdefault(key, []).append(g)
    sq = torch.zeros((), dtype=torch.float32)
    for grads in groups.values():
        n = torch.nn.utils.get_total_norm(grads, 2.0)
        if isinstance(n, DTensor):
            n = n.full_tensor()
        sq = sq + n.float().cpu() ** 2
    total = float(sq.sqrt())
    coef = max_norm / (total + 1e-6)
    if max_norm > 0 and coef < 1:
        for grads in groups.values():  # per group: foreach kernels refuse DTensors mixed with plain tensors
            torch._foreach_mul_(grads, coef)
    return total


def init_weights_sharded(model: nn.Module, seed: int) -> None:
    """The values `Llama.init_weights(seed)` gives, written into sharded (DTensor) parameters one full tensor at a
    time, so a model built on the meta device and sharded never exists whole on one rank."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    root: Any = model
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in root.named_parameters():
            full = root.init_value(name, tuple(p.shape), gen)
            if isinstance(p, DTensor):
                p.copy_(distribute_tensor(full.to(p.device_mesh.device_type), p.device_mesh, p.placements))
            else:
                p.copy_(full)
    root.init_buffers()


# -- resilience -------------------------------------------------------------------------------------------------------
class HangWatchdog:
    """Armed around each step: if the step (its collectives included) has not finished within `timeout_s`, this
    rank dumps every thread's Python stack (faulthandler) to runs/<name>/hang/rank<R>.txt, whose first line names
    the rank, host and step, and exits with code 1, so torchrun ends the job (or restarts it) instead of waiting
    forever. faulthandler works from its own C thread, so a rank blocked inside a C++ collective still dies."""

    def __init__(self, run_dir: Path, rank: int, timeout_s: float):
        self.timeout_s = timeout_s
        self.rank = rank
        self.path = run_dir / "hang" / f"rank{rank}.txt"
        self._fh: IO[str] | None = None

    def arm(self, step: int) -> None:
        if self.timeout_s <= 0:
            return
        self.disarm()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = self.path.open("w")
        fh.write(
            f"rank {self.rank} on {socket.gethostname()} (pid {os.getpid()}): step {step} did not finish within "
            f"{self.timeout_s:g} s — a collective is waiting for a rank that is stuck or gone. Stacks:\n"
        )
        fh.flush()
        self._fh = fh
        faulthandler.dump_traceback_later(self.timeout_s, repeat=False, file=fh, exit=True)

    def disarm(self) -> None:
        faulthandler.cancel_dump_traceback_later()
        if self._fh is not None:
            self._fh.close()
            self._fh = None
            self.path.unlink(missing_ok=True)


def report_hangs(run_dir: Path) -> list[str]:
    """One line per rank that dumped its stack (read by the `roost train --nproc` launcher after torchrun ends)."""
    out = []
    for f in sorted((run_dir / "hang").glob("rank*.txt")):
        text = f.read_text(errors="replace")
        if "most recent call first" in text:  # a header alone is a rank killed while armed, not a hang
            out.append(f"{text.splitlines()[0].split(' did not')[0]} hung — stacks in {f}")
    return out
