"""runtime/distributed.py: the pieces that need no process group (the torchrun runs are in
tests/chat/test_train_ddp.py and tests/vision/test_train_ddp.py)."""

import torch
from torch.utils.data import DataLoader, RandomSampler

from torchtutor.runtime import distributed as ddp


def ctx(rank: int, world: int) -> ddp.DistContext:
    return ddp.DistContext(rank=rank, world_size=world)


def test_a_single_process_needs_no_collectives(tmp_path, monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "TORCHELASTIC_RESTART_COUNT"):
        monkeypatch.delenv(name, raising=False)
    single = ddp.init_distributed("cpu")
    assert (single.rank, single.world_size, single.enabled, single.is_main) == (0, 1, False, True)
    assert ddp.share_of_global_mean(37, single) == (1.0, 37)
    assert ddp.all_reduce_sum([1.5, 2.0], single) == [1.5, 2.0]
    assert ddp.max_over_ranks(3.25, single) == 3.25
    (tmp_path / "last.pt").write_bytes(b"x")
    assert not ddp.should_resume(tmp_path / "last.pt", single)  # not restarted by torchrun
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    assert ddp.should_resume(tmp_path / "last.pt", single)
    assert not ddp.should_resume(tmp_path / "missing.pt", single)
    net = torch.nn.Linear(2, 2)
    assert ddp.wrap_model(net, single) is net and ddp.unwrap(net) is net
    with ddp.process_group("cpu") as inside:   # no group to join or leave
        assert inside == single and not torch.distributed.is_initialized()


def test_shards_cover_a_set_once():
    for count in (0, 1, 5, 10, 11):
        for world in (1, 2, 3):
            parts = [range(count)[ddp.shard_bounds(count, ctx(r, world))] for r in range(world)]
            assert [i for part in parts for i in part] == list(range(count))


def test_sharded_sampler_batches_make_up_the_single_process_batches():
    """With one generator seed, rank r's batch i of size B over W ranks, joined over r, is
    batch i of size B * W of a plain RandomSampler, epoch after epoch."""
    data = list(range(24))
    single_gen = torch.Generator().manual_seed(5)
    single = DataLoader(data, batch_size=6, sampler=RandomSampler(data, generator=single_gen))
    gens = [torch.Generator().manual_seed(5) for _ in range(2)]
    ranks = [DataLoader(data, batch_size=3,
                        sampler=ddp.random_sampler(data, gens[r], ctx(r, 2))) for r in range(2)]
    for _ in range(3):  # epochs: the generators must stay in step
        expected = [sorted(b.tolist()) for b in single]
        got = [sorted(a.tolist() + b.tolist()) for a, b in zip(*ranks, strict=True)]
        assert got == expected
    assert not set(next(iter(ranks[0])).tolist()) & set(next(iter(ranks[1])).tolist())


def test_sharded_sampler_drops_the_uneven_tail():
    sampler = ddp.ShardedRandomSampler(7, torch.Generator().manual_seed(0), ctx(1, 2))
    assert len(sampler) == len(list(sampler)) == 3
