"""Padded, time-major batches and an endless, exactly resumable stream of them.

A batch follows the notes: inputs `(max_len, batch)` zero-padded with their lengths sorted
longest first (what `pack_padded_sequence` wants), targets `(max_len, batch)` with a mask.
The stream shuffles without replacement each epoch from a generator seeded by
(seed, epoch) alone, so resuming needs only (epoch, position), never an RNG state.

The stream reads its pairs through a pair source: `MemoryPairs` (id lists held in memory) or a
memory-mapped split of the token store (`chat.data.store.PairView`); both give the lengths of every
pair and gather pairs by index, and the same seed gives the same batches from either. Epoch
orders are numpy arrays (4 or 8 bytes a pair), never Python lists, so a corpus of millions of
pairs costs little memory beyond its mapped pages.
"""

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from torchtutor.chat.data.vocab import EOS, PAD, Vocab
from torchtutor.runtime.errors import UserError

IndexedPair = tuple[list[int], list[int]]


@dataclass
class Batch:
    inputs: torch.Tensor        # (max_in, B) long, time-major, zero-padded, each ends with EOS
    lengths: torch.Tensor       # (B,) long, on the CPU, sorted descending
    targets: torch.Tensor       # (max_out, B) long, each ends with EOS, zero-padded
    mask: torch.Tensor          # (max_out, B) bool, True on real tokens
    max_target_len: int
    target_lengths: torch.Tensor | None = None   # (B,) long on the CPU; spares a device sync

    def to(self, device: torch.device | str) -> "Batch":
        """The tensors on `device`; `lengths` stays on the CPU as packing requires.

        To a GPU they go from pinned memory without waiting: a plain copy from pageable memory
        waits for all queued GPU work first, which would stall the GPU once per tensor.
        """
        if torch.device(device).type != "cuda":
            return Batch(self.inputs.to(device), self.lengths, self.targets.to(device),
                         self.mask.to(device), self.max_target_len, self.target_lengths)
        inputs, targets, mask = (t.pin_memory().to(device, non_blocking=True)
                                 for t in (self.inputs, self.targets, self.mask))
        return Batch(inputs, self.lengths, targets, mask, self.max_target_len,
                     self.target_lengths)

    @property
    def size(self) -> int:
        return self.inputs.shape[1]

    @property
    def target_tokens(self) -> int:
        if self.target_lengths is not None:
            return int(self.target_lengths.sum())
        return int(self.mask.sum())


def index_pairs(pairs: list[tuple[str, str]], vocab: Vocab) -> list[IndexedPair]:
    """Normalized pairs -> id lists, EOS appended to both sides (unknown words per the vocab)."""
    out = []
    for query, reply in pairs:
        q, _ = vocab.encode(query)
        r, _ = vocab.encode(reply)
        out.append((q + [EOS], r + [EOS]))
    return out


def _pad_time_major(seqs: list[list[int]], width: int) -> torch.Tensor:
    padded = [s + [PAD] * (width - len(s)) for s in seqs]
    return torch.tensor(padded, dtype=torch.long).t().contiguous()


def make_batch(indexed: list[IndexedPair]) -> Batch:
    """One padded batch; pairs are sorted by input length, longest first."""
    if not indexed:
        raise ValueError("make_batch needs at least one pair")
    ordered = sorted(indexed, key=lambda p: len(p[0]), reverse=True)
    queries = [q for q, _ in ordered]
    replies = [r for _, r in ordered]
    in_lens = [len(q) for q in queries]
    out_lens = [len(r) for r in replies]
    max_out = max(out_lens)
    targets = _pad_time_major(replies, max_out)
    target_lengths = torch.tensor(out_lens, dtype=torch.long)
    # From the lengths, not `targets != PAD`, so the mask never depends on token values.
    mask = torch.arange(max_out).unsqueeze(1) < target_lengths.unsqueeze(0)
    return Batch(inputs=_pad_time_major(queries, in_lens[0]),
                 lengths=torch.tensor(in_lens, dtype=torch.long),
                 targets=targets, mask=mask, max_target_len=max_out,
                 target_lengths=target_lengths)


class PairSource(Protocol):
    """Pairs of token id lists, by index."""

    def __len__(self) -> int: ...

    def lengths(self) -> tuple[np.ndarray, np.ndarray]:
        """Input and target length of every pair."""
        ...

    def gather(self, indices: Sequence[int] | np.ndarray) -> list[IndexedPair]: ...


class MemoryPairs:
    """A list of indexed pairs as a pair source."""

    def __init__(self, indexed: list[IndexedPair]):
        self.indexed = indexed

    def __len__(self) -> int:
        return len(self.indexed)

    def lengths(self) -> tuple[np.ndarray, np.ndarray]:
        return (np.array([len(q) for q, _ in self.indexed], np.int64),
                np.array([len(r) for _, r in self.indexed], np.int64))

    def gather(self, indices: Sequence[int] | np.ndarray) -> list[IndexedPair]:
        indexed = self.indexed
        return [indexed[i] for i in np.asarray(indices, np.int64).tolist()]


def as_source(pairs: "list[IndexedPair] | PairSource") -> PairSource:
    return MemoryPairs(pairs) if isinstance(pairs, list) else pairs


def sorted_batches(pairs: "list[IndexedPair] | PairSource", batch_size: int,
                   ) -> Iterator[Batch]:
    """Fixed batches over all pairs, grouped by length (input, then target) so little is
    padding; made one at a time."""
    source = as_source(pairs)
    q_len, r_len = source.lengths()
    order = np.lexsort((r_len, q_len))
    for start in range(0, len(order), batch_size):
        yield make_batch(source.gather(order[start:start + batch_size]))


class BatchStream:
    """Endless batches, epoch after epoch, resumable exactly from `state_dict()`.

    Epoch e's order comes from `torch.Generator().manual_seed(seed * 1000003 + e)`: a
    permutation (each pair once per epoch). With `bucket=True` the permuted pairs are sorted
    by length (stable, so ties stay shuffled), cut into batches of similar length, and the
    batch order is shuffled with the same generator. Rank r of `world_size` takes batches
    r, r + world_size, ...; every rank gets the same number of batches per epoch (the few
    left over are skipped that epoch), so DDP ranks step in lockstep on disjoint data.
    """

    def __init__(self, indexed: "list[IndexedPair] | PairSource", batch_size: int,
                 seed: int = 0, bucket: bool = False, rank: int = 0, world_size: int = 1):
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, not {batch_size}")
        if world_size <= 0 or not 0 <= rank < world_size:
            raise ValueError(f"bad rank {rank} of world_size {world_size}")
        total_batches = -(-len(indexed) // batch_size)
        if total_batches < world_size:
            raise UserError(f"{len(indexed)} pairs make {total_batches} batches of "
                            f"{batch_size}, fewer than the {world_size} ranks")
        self.pairs = as_source(indexed)
        self.batch_size = batch_size
        self.seed = seed
        self.bucket = bucket
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.position = 0
        self._order_epoch: int | None = None
        self._order: list[np.ndarray] = []
        self._lengths: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def batches_per_epoch(self) -> int:
        """Batches this rank sees per epoch."""
        return -(-len(self.pairs) // self.batch_size) // self.world_size

    def epoch_batches(self, epoch: int) -> list[np.ndarray]:
        """Pair indices of each batch this rank gets in `epoch`, in order."""
        g = torch.Generator().manual_seed(self.seed * 1000003 + epoch)
        perm = torch.randperm(len(self.pairs), generator=g).numpy()
        if self.bucket:
            if self._lengths is None:   # read once: every pair's offsets
                q_len, r_len = self.pairs.lengths()
                self._lengths = (q_len.astype(np.int32), r_len.astype(np.int32))
            q_len, r_len = self._lengths
            # By input then target length; lexsort is stable, so ties stay shuffled.
            perm = perm[np.lexsort((r_len[perm], q_len[perm]))]
        bs = self.batch_size
        batches = [perm[i:i + bs] for i in range(0, len(perm), bs)]
        if self.bucket:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]
        usable = self.batches_per_epoch * self.world_size
        return batches[self.rank:usable:self.world_size]

    def _batches_for(self, epoch: int) -> list[list[int]]:
        if self._order_epoch != epoch:
            self._order = self.epoch_batches(epoch)
            self._order_epoch = epoch
        return self._order

    def __iter__(self) -> Iterator[Batch]:
        """Yield batches forever, continuing from (epoch, position)."""
        while True:
            order = self._batches_for(self.epoch)
            while self.position < len(order):
                chosen = order[self.position]
                # Count the batch as consumed before handing it out, so a state_dict taken
                # after using it resumes with the next one.
                self.position += 1
                yield make_batch(self.pairs.gather(chosen))
            self.epoch += 1
            self.position = 0

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed,
                "bucket": self.bucket, "batch_size": self.batch_size,
                "num_pairs": len(self.pairs), "rank": self.rank,
                "world_size": self.world_size}

    def load_state_dict(self, state: dict) -> None:
        for key in ("seed", "bucket", "batch_size", "num_pairs"):
            mine = self.state_dict()[key]
            if key in state and state[key] != mine:
                raise UserError(f"cannot resume the batch stream: {key} was {state[key]}, "
                                f"now {mine}")
        self.epoch = int(state["epoch"])
        # A run resumed on another number of ranks (torchrun after a single process, or the
        # other way round) skips as many of the epoch's batches as were consumed in all; only
        # the same world size continues exactly.
        old_world = int(state.get("world_size", 1))
        self.position = int(state["position"]) * old_world // self.world_size
