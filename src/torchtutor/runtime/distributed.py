"""torchrun / DistributedDataParallel helpers shared by both training loops.

Under `torchrun --nproc-per-node N` each worker finds RANK, WORLD_SIZE and LOCAL_RANK in its
environment. Outside torchrun everything here degrades to a single process, so the training
loops call the same functions either way.
"""

import gc
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

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


def is_main_process() -> bool:
    """Rank 0, or a single process: the one that prints summaries."""
    return int(os.environ.get("RANK", "0") or 0) == 0


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
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size,
                                store=_attempt_store(world_size))
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def _attempt_store(world_size: int) -> dist.Store | None:
    """The store the process group meets in: None (torch's env:// default) unless torchrun's
    agent hosts it, and then a key space of this restart attempt's own.

    torchrun keeps the agent's store across the restarts of --max-restarts, and the process
    group's keys carry no attempt number: a restarted worker can read the address a dead worker
    of the previous attempt published and fail with "Gloo connectFullMesh failed ... Connection
    refused" (seen here in about half the restarts with 2 CPU workers).
    """
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]),
                          world_size, is_master=False)
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    return dist.PrefixStore(f"torchtutor/attempt-{attempt}", store)


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


@contextmanager
def process_group(device_spec: str = "auto") -> Iterator[DistContext]:
    """This worker's context, with torchrun's process group joined for the whole block and
    left once at its end; a block inside another reuses the outer one's group.

    One group for a whole command: a second group made after the first was destroyed meets
    in the same store keys, and a rank could read its peer's stale address and wait in gloo's
    connect forever (4 of 6 runs of the default recipe, forward then backward model, hung
    there with 2 CPU workers). Leaving, every rank first drops its DDP wrappers (their reducers
    hold the group), then waits for the others at a barrier, so no rank destroys the group
    while a peer still has a collective in flight. A block left by an exception skips the
    barrier: the peer may never reach it, and torchrun stops the other workers anyway.
    """
    owner = launched_by_torchrun() and not dist.is_initialized()
    ctx = init_distributed(device_spec)
    if not owner or not dist.is_initialized():
        yield ctx
        return
    try:
        yield ctx
        gc.collect()   # DDP wrappers in reference cycles: freed while the group lives
        dist.barrier()
    finally:
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


def max_over_ranks(value: float, ctx: DistContext) -> float:
    """The largest of each rank's `value`, on every rank (e.g. seconds a step took, so every
    rank stops on a time budget at the same step)."""
    if not ctx.enabled:
        return value
    device = ctx.device if ctx.device.type == "cuda" else torch.device("cpu")
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return float(tensor.item())


def share_of_global_mean(local_count: int, ctx: DistContext) -> tuple[float, int]:
    """(factor, global count) for a loss that is a mean over this rank's `local_count` items.

    DDP averages gradients over the ranks, which is the mean over the global batch only when
    every rank holds as many items. Multiplying each rank's mean by
    local_count * world_size / global_count makes the averaged gradient exactly that of the
    mean over all items of the global batch, however unevenly they are spread (the chatbot's
    target tokens are). A single process gets (1.0, local_count).
    """
    if not ctx.enabled:
        return 1.0, local_count
    total = int(round(all_reduce_sum([float(local_count)], ctx)[0]))
    return local_count * ctx.world_size / total, total


def shard_bounds(count: int, ctx: DistContext) -> slice:
    """This rank's contiguous share of `count` items (evaluation sets split over the ranks)."""
    per_rank = -(-count // ctx.world_size)
    return slice(min(count, ctx.rank * per_rank), min(count, (ctx.rank + 1) * per_rank))


def should_resume(checkpoint: Path, ctx: DistContext) -> bool:
    """Whether this worker group was restarted by torchrun (--max-restarts) after a failure and
    rank 0 finds `checkpoint` to resume from. Every rank gets rank 0's answer, so on several
    machines the run folder must be on storage all of them read (a shared file system)."""
    found = ctx.is_main and restarted_by_torchrun() and Path(checkpoint).exists()
    return bool(broadcast_object(found, ctx))


class ShardedRandomSampler(torch.utils.data.Sampler):
    """Rank r's share of a RandomSampler's epoch: positions r, r + W, r + 2W, ... of the same
    permutation drawn from the same generator (every rank holds an identically seeded one).

    Batching each share by B makes the ranks' batches i together exactly batch i of one
    process batching the whole permutation by B * W. The last n mod W items of an epoch are
    skipped so every rank takes as many steps.
    """

    def __init__(self, size: int, generator: torch.Generator, ctx: DistContext):
        self.size, self.generator, self.ctx = size, generator, ctx

    def __len__(self) -> int:
        return self.size // self.ctx.world_size

    def __iter__(self):
        order = torch.randperm(self.size, generator=self.generator).tolist()
        usable = len(self) * self.ctx.world_size
        yield from order[self.ctx.rank:usable:self.ctx.world_size]
        # RandomSampler draws one more permutation as it ends (its `num_samples % n` tail);
        # so does this, to keep the generator in step with a single process's.
        torch.randperm(self.size, generator=self.generator)


def random_sampler(dataset, generator: torch.Generator, ctx: DistContext,
                   ) -> torch.utils.data.Sampler:
    """A RandomSampler in one process; this rank's share of the same order under torchrun."""
    if not ctx.enabled:
        return torch.utils.data.RandomSampler(dataset, generator=generator)
    return ShardedRandomSampler(len(dataset), generator, ctx)


class NullLog:
    """Stands in for a MetricsLog on ranks other than 0, which write nothing."""

    def log(self, **row) -> None:
        pass

    def close(self) -> None:
        pass
