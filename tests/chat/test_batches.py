import itertools

import pytest
import torch

from torchtutor.chat.data.batches import BatchStream, index_pairs, make_batch
from torchtutor.chat.data.vocab import EOS, PAD, UNK, Vocab
from torchtutor.runtime.errors import UserError


def numbered_pairs(n: int, seed: int = 0) -> list[tuple[list[int], list[int]]]:
    """Pair i: query starts with the id 100 + i (so a batch tells which pairs it holds)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        q_len, r_len = (int(x) for x in torch.randint(1, 9, (2,), generator=g))
        out.append(([100 + i] + [5] * (q_len - 1) + [EOS], [6] * r_len + [EOS]))
    return out


def pair_ids(batch) -> list[int]:
    return [int(x) - 100 for x in batch.inputs[0]]


def test_index_pairs_appends_eos_and_maps_unknown():
    v = Vocab()
    v.add_sentence("hi there")
    assert index_pairs([("hi there", "hi zz")], v) == [([4, 5, EOS], [4, UNK, EOS])]


def test_make_batch_shapes_padding_mask_and_sorting():
    pairs = [([7, EOS], [8, 8, 8, EOS]), ([7, 7, 7, 7, EOS], [8, EOS]), ([7, 7, EOS], [8, 8, EOS])]
    b = make_batch(pairs)
    assert b.inputs.shape == (5, 3) and b.targets.shape == (4, 3)
    assert b.inputs.dtype == torch.long and b.mask.dtype == torch.bool
    assert b.lengths.tolist() == [5, 3, 2]   # sorted, longest first
    assert b.inputs[:, 0].tolist() == [7, 7, 7, 7, EOS]
    assert b.inputs[:, 2].tolist() == [7, EOS, PAD, PAD, PAD]
    # targets travel with their queries
    assert b.targets[:, 0].tolist() == [8, EOS, PAD, PAD]
    assert b.targets[:, 2].tolist() == [8, 8, 8, EOS]
    assert torch.equal(b.mask, b.targets != PAD)
    assert b.max_target_len == 4 and b.size == 3 and b.target_tokens == 2 + 3 + 4
    for col, n in enumerate(b.lengths.tolist()):
        assert b.inputs[n - 1, col] == EOS
    with pytest.raises(ValueError):
        make_batch([])


def test_to_keeps_lengths_on_cpu():
    b = make_batch(numbered_pairs(4)).to("cpu")
    assert b.lengths.device.type == "cpu"
    assert b.target_tokens == int(b.mask.sum())


def test_epoch_order_follows_the_contract_seed_formula():
    pairs = numbered_pairs(23)
    stream = BatchStream(pairs, batch_size=5, seed=7)
    g = torch.Generator().manual_seed(7 * 1000003 + 0)
    perm = torch.randperm(23, generator=g).tolist()
    got = [sorted(pair_ids(b)) for b in itertools.islice(iter(stream), 5)]
    assert got == [sorted(perm[i:i + 5]) for i in range(0, 23, 5)]


@pytest.mark.parametrize("bucket", [False, True])
def test_each_epoch_sees_every_pair_once_and_orders_differ(bucket):
    stream = BatchStream(numbered_pairs(50), batch_size=8, seed=1, bucket=bucket)
    assert stream.batches_per_epoch == 7
    it = iter(stream)
    epochs = []
    for _ in range(3):
        ids = [i for b in itertools.islice(it, 7) for i in pair_ids(b)]
        assert sorted(ids) == list(range(50))
        epochs.append(ids)
    assert epochs[0] != epochs[1] != epochs[2]
    assert stream.epoch == 2 and stream.position == 7


def test_bucketing_cuts_padding():
    pairs = numbered_pairs(400)

    def padding(bucket: bool) -> int:
        s = BatchStream(pairs, batch_size=16, seed=3, bucket=bucket)
        batches = list(itertools.islice(iter(s), s.batches_per_epoch))
        return sum(b.inputs.numel() - int(b.lengths.sum()) + (~b.mask).sum().item()
                   for b in batches)

    assert padding(True) < padding(False) / 3


@pytest.mark.parametrize("bucket", [False, True])
def test_resume_gives_the_same_batches(bucket):
    pairs = numbered_pairs(37)
    reference = BatchStream(pairs, batch_size=6, seed=5, bucket=bucket)
    expected = [b.inputs for b in itertools.islice(iter(reference), 20)]
    for k in (0, 3, 6, 7, 13):   # inside an epoch, at its end, across boundaries
        first = BatchStream(pairs, batch_size=6, seed=5, bucket=bucket)
        consumed = list(itertools.islice(iter(first), k))
        state = first.state_dict()
        resumed = BatchStream(pairs, batch_size=6, seed=5, bucket=bucket)
        resumed.load_state_dict(state)
        rest = [b.inputs for b in itertools.islice(iter(resumed), 20 - k)]
        got = [b.inputs for b in consumed] + rest
        assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True)), k


def test_iter_again_continues_where_it_stopped():
    stream = BatchStream(numbered_pairs(20), batch_size=3, seed=2)
    a = [pair_ids(b) for b in itertools.islice(iter(stream), 4)]
    b = [pair_ids(b) for b in itertools.islice(iter(stream), 4)]
    fresh = BatchStream(numbered_pairs(20), batch_size=3, seed=2)
    assert a + b == [pair_ids(x) for x in itertools.islice(iter(fresh), 8)]


@pytest.mark.parametrize("bucket", [False, True])
def test_ranks_get_disjoint_equal_shards(bucket):
    pairs = numbered_pairs(103)
    world = 3
    streams = [BatchStream(pairs, batch_size=4, seed=9, bucket=bucket, rank=r, world_size=world)
               for r in range(world)]
    per_rank = streams[0].batches_per_epoch
    assert all(s.batches_per_epoch == per_rank for s in streams)
    assert per_rank == 26 // 3
    for epoch in range(2):
        seen = [set(i for b in s.epoch_batches(epoch) for i in b) for s in streams]
        assert all(len(s.epoch_batches(epoch)) == per_rank for s in streams)
        for a, b in itertools.combinations(seen, 2):
            assert not a & b
        assert len(set().union(*seen)) >= 103 - 2 * 4 - 3   # at most a few batches left over


def test_bad_settings_and_mismatched_resume():
    with pytest.raises(UserError):
        BatchStream([], batch_size=4)
    with pytest.raises(UserError):
        BatchStream(numbered_pairs(5), batch_size=4, rank=0, world_size=3)
    with pytest.raises(ValueError):
        BatchStream(numbered_pairs(5), batch_size=0)
    with pytest.raises(ValueError):
        BatchStream(numbered_pairs(5), batch_size=1, rank=2, world_size=2)
    state = BatchStream(numbered_pairs(10), batch_size=2, seed=1).state_dict()
    with pytest.raises(UserError, match="seed"):
        BatchStream(numbered_pairs(10), batch_size=2, seed=2).load_state_dict(state)
    with pytest.raises(UserError, match="num_pairs"):
        BatchStream(numbered_pairs(11), batch_size=2, seed=1).load_state_dict(state)
