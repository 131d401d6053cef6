"""Data-parallel training over torch.distributed: DDP, or FSDP2 (``fully_shard``) per block.

    torchrun --nproc_per_node=2 -m attnbench.cli train preset=small trainer.distributed=ddp

The same entry point runs on one process (``trainer.distributed=none``), under torchrun, or as
a SLURM job with several tasks (submitit's environment is exported to torch's variables).

Global batch. An optimizer step consumes ``batch_size × grad_accum`` = G sequences whatever the
world size W: micro-batches 0..grad_accum-1 of ``batch_size`` rows, exactly the sequences the
single-process run takes. Rank r takes the contiguous rows [r·G/W, (r+1)·G/W), cut where they
cross micro-batch boundaries, so ranks see disjoint data that together make the whole step,
and gradient accumulation shrinks as W grows.

Loss. The step's loss is Σ(token losses over the scored positions of all ranks) / (their
global count). Each rank backpropagates W × its part, because DDP and FSDP average gradients
over ranks; the sum over ranks is then the single-process gradient, to float rounding. (An
MoE load-balance loss is averaged over the micro-batches each rank ran, then over ranks.)
"""
from __future__ import annotations

import contextlib
import os
import socket
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

MODES = ("none", "ddp", "fsdp")


@dataclass(frozen=True)
class World:
    mode: str = "none"  # none | ddp | fsdp
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # this process called init_process_group (and will destroy it)

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes logs, metrics, summaries and full checkpoints."""
        return self.rank == 0

    @property
    def sharded(self) -> bool:
        return self.mode == "fsdp"


def launched_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def _export_slurm_env() -> None:
    """Under SLURM with several tasks and no torchrun, export RANK/WORLD_SIZE/MASTER_* from
    submitit's view of the job (hydra-submitit-launcher starts one task per GPU)."""
    if "RANK" in os.environ or int(os.environ.get("SLURM_NTASKS", "1")) < 2:
        return
    from submitit.helpers import TorchDistributedEnvironment

    TorchDistributedEnvironment().export(set_cuda_visible_devices=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_world(mode: str, device_type: str) -> World:
    """Join (or create) the process group for ``mode``; a one-process group when not launched
    by torchrun, so ddp/fsdp run the same code on one device."""
    if mode not in MODES:
        raise ValueError(f"trainer.distributed must be one of {', '.join(MODES)}; got {mode!r}")
    if mode == "none":
        if launched_world_size() > 1:
            raise ValueError(f"launched with {launched_world_size()} processes (torchrun/SLURM) but "
                             "trainer.distributed=none; set trainer.distributed=ddp or fsdp")
        return World()
    _export_slurm_env()
    if "RANK" not in os.environ:  # a single process: a group of one
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=str(_free_port()))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
    owns = not dist.is_initialized()
    if owns:
        backend = "nccl" if device_type == "cuda" else "gloo"
        dist.init_process_group(backend, device_id=torch.device("cuda", local_rank) if device_type == "cuda" else None)
    return World(mode, dist.get_rank(), dist.get_world_size(), local_rank, owns)


def close_world(world: World) -> None:
    if world.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def check_batch(world: World, batch_size: int, grad_accum: int) -> None:
    """The global batch must split evenly over ranks, and every rank needs a row to evaluate."""
    total = batch_size * grad_accum
    if total % world.size:
        raise ValueError(f"trainer.batch_size × trainer.grad_accum (= {total}) must be divisible by the number "
                         f"of processes ({world.size}); the global batch is fixed across world sizes")
    if batch_size < world.size:
        raise ValueError(f"trainer.batch_size ({batch_size}) must be at least the number of processes "
                         f"({world.size}): evaluation splits each batch's rows over ranks")


def step_pieces(world: World, batch_size: int, grad_accum: int) -> list[tuple[int, slice]]:
    """This rank's share of one optimizer step: [(micro-batch index, rows of that micro-batch)]."""
    share = batch_size * grad_accum // world.size
    lo, hi = world.rank * share, (world.rank + 1) * share
    pieces = []
    for micro in range(grad_accum):
        start, stop = max(lo, micro * batch_size), min(hi, (micro + 1) * batch_size)
        if start < stop:
            pieces.append((micro, slice(start - micro * batch_size, stop - micro * batch_size)))
    return pieces


def eval_rows(world: World, batch_size: int) -> slice:
    """This rank's rows of a validation batch (every rank runs every batch: FSDP needs it)."""
    return slice(world.rank * batch_size // world.size, (world.rank + 1) * batch_size // world.size)


def all_sum(world: World, values: list[float], device: torch.device) -> list[float]:
    """Element-wise sum over ranks, in float64 (identity on one process)."""
    if world.mode == "none":
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def reduce_sum(world: World, t: torch.Tensor) -> torch.Tensor:
    """Sum of a device tensor over ranks, queued on the device (no host sync); identity on one process."""
    if world.mode != "none":
        dist.all_reduce(t)
    return t


def wrap(model: nn.Module, world: World, amp_dtype: torch.dtype | None) -> nn.Module:
    """The module to call in training: DDP around the model, or the model sharded in place
    (each block, then the root with the embedding, norm and head) for FSDP. FSDP on CUDA with
    bf16 keeps fp32 master weights, computes in bf16 and reduces gradients in fp32."""
    if world.mode == "none":
        return model
    if world.mode == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        on_cuda = next(model.parameters()).is_cuda
        return DistributedDataParallel(model, device_ids=[world.local_rank] if on_cuda else None)
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    policy = MixedPrecisionPolicy()
    if amp_dtype is not None and next(model.parameters()).is_cuda:
        policy = MixedPrecisionPolicy(param_dtype=amp_dtype, reduce_dtype=torch.float32)
    for block in model.blocks:
        fully_shard(block, mp_policy=policy)
    fully_shard(model, mp_policy=policy)
    return model


@contextlib.contextmanager
def grad_sync(module: nn.Module, world: World, enabled: bool):
    """Reduce gradients only on the last micro-batch of a step (DDP no_sync / FSDP's switch)."""
    if world.mode == "ddp" and not enabled:
        with module.no_sync():
            yield
        return
    if world.mode == "fsdp":
        module.set_requires_gradient_sync(enabled)
    yield


def clip_grads(model: nn.Module, max_norm: float) -> torch.Tensor:
    """Global gradient norm before clipping, a 0-dim tensor on the device (also under FSDP's
    DTensors); reading it is left to the caller, as it syncs host and device."""
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    return norm.full_tensor() if hasattr(norm, "full_tensor") else norm


def barrier(world: World) -> None:
    if world.mode != "none":
        dist.barrier()
