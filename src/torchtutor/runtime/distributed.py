"""torchrun / DistributedDataParallel helpers shared by both training loops.

Under `torchrun --nproc-per-node N` each worker finds RANK, WORLD_SIZE and LOCAL_RANK in its
environment. Outside torchrun everything here degrades to a single process, so the training
loops call the same functions either way.
"""

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from torchtutor.runtime.device import resolve_device
from torchtutor.runtime.errors import UserError


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Only rank 0 writes logs, checkpoints and progress bars."""
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def restarted_by_torchrun() -> bool:
    """True in a worker group that torchrun restarted after a failure (--max-restarts)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0) > 0


def init_distributed(device_spec: str = "auto") -> DistContext:
    """Join the process group when launched by torchrun; pick this worker's device.

    gloo on CPU, NCCL on CUDA (one GPU per local rank).
    """
    device = resolve_device(device_spec)
    if not launched_by_torchrun():
        return DistContext(device=device)
    rank = int(os.environ["RANK"])
    world_size = int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise UserError(f"local rank {local_rank} has no GPU: only "
                            f"{torch.cuda.device_count()} visible; lower --nproc-per-node")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    elif device.type == "cpu":
        backend = "gloo"
    else:
        raise UserError(f"distributed training supports cpu and cuda, not {device.type}")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def all_reduce_sum(values: list[float], ctx: DistContext) -> list[float]:
    """Sum a few numbers (losses, counts) over all ranks; a no-op in a single process."""
    if not ctx.enabled:
        return list(values)
    device = ctx.device if ctx.device.type == "cuda" else torch.device("cpu")
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.tolist()


def broadcast_object(value, ctx: DistContext):
    """Rank 0's value on every rank (e.g. a decision to stop on a time budget)."""
    if not ctx.enabled:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def cleanup(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module inside a DDP wrapper: checkpoints store its state_dict, so they load
    the same in single-process and distributed runs."""
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def wrap_model(model: torch.nn.Module, ctx: DistContext) -> torch.nn.Module:
    if not ctx.enabled:
        return model
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
