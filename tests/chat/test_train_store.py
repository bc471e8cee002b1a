"""Training reads the memory-mapped token store: the same batches and losses as pairs held in
memory, and `chat prepare` then `chat train --data DIR` trains on exactly DIR's data."""

import itertools
import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from torchtutor import cli
from torchtutor.chat import run_dir as rd
from torchtutor.chat.config import TUTORIAL
from torchtutor.chat.data.batches import BatchStream, index_pairs
from torchtutor.chat.data.prepare import PrepareConfig, load_prepared, prepare_folder
from torchtutor.chat.data.store import TokenStore
from torchtutor.chat.evaluate import split_pairs
from torchtutor.chat.model import ModelConfig, Seq2Seq
from torchtutor.chat.train.loop import train_step
from torchtutor.chat.train.objective import Objective
from torchtutor.chat.train.run import make_optimizers, make_schedulers
from torchtutor.runtime.checkpoint import load_checkpoint


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """`chat prepare --data chatterbot --out D` as a user runs it (the issue's first step)."""
    folder = tmp_path_factory.mktemp("prepared") / "D"
    assert cli.main(["chat", "prepare", "--data", "chatterbot", "--out", str(folder),
                     "--min-count", "1", "--max-length", "12"]) == 0
    return folder


def test_the_command_writes_what_prepare_folder_writes(prepared, tmp_path):
    prepare_folder(PrepareConfig(min_count=1, max_length=12), tmp_path / "same")
    for name in ("vocab.json", "store.json", "train.tokens.bin", "test.tokens.bin"):
        assert (tmp_path / "same" / name).read_bytes() == (prepared / name).read_bytes()


def _losses(stream: BatchStream, vocab_size: int, steps: int) -> list[float]:
    torch.manual_seed(0)
    model = Seq2Seq(ModelConfig(vocab_size=vocab_size, hidden_size=16, dropout=0.0))
    config = replace(TUTORIAL, out="unused", lr=3e-3, precision="fp32", schedule_steps=4000)
    optimizers = make_optimizers(model, config)
    schedulers = make_schedulers(optimizers, config)
    objective = Objective(model)
    return [train_step(objective, optimizers, schedulers, batch, config,
                       torch.autocast("cpu", enabled=False))
            for batch in itertools.islice(iter(stream), steps)]


@pytest.mark.parametrize("bucket", [False, True])
def test_mapped_store_gives_the_batches_and_losses_of_pairs_in_memory(prepared, bucket):
    data = load_prepared(prepared)
    store = TokenStore(prepared, data.vocab)
    in_memory = index_pairs(data.splits["train"], data.vocab)
    for rank in range(2):
        kwargs = dict(batch_size=16, seed=3, bucket=bucket, rank=rank, world_size=2)
        mapped = BatchStream(store.split("train").view(), **kwargs)
        held = BatchStream(in_memory, **kwargs)
        steps = mapped.batches_per_epoch + 3   # into the second epoch
        for a, b in zip(itertools.islice(iter(mapped), steps), itertools.islice(iter(held), steps),
                        strict=True):
            for name in ("inputs", "lengths", "targets", "mask"):
                assert torch.equal(getattr(a, name), getattr(b, name)), name
        assert mapped.state_dict() == held.state_dict()
    kwargs = dict(batch_size=16, seed=3, bucket=bucket)
    mapped_losses = _losses(BatchStream(store.split("train").view(), **kwargs), len(data.vocab), 6)
    held_losses = _losses(BatchStream(in_memory, **kwargs), len(data.vocab), 6)
    assert mapped_losses == held_losses and len(set(mapped_losses)) == 6
    # backward: the same stream with query and reply swapped
    backward = BatchStream(store.split("train").view("backward"), **kwargs)
    swapped = BatchStream([(r, q) for q, r in in_memory], **kwargs)
    for a, b in zip(itertools.islice(iter(backward), 5), itertools.islice(iter(swapped), 5),
                    strict=True):
        assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)


def test_bucketing_orders_like_a_stable_python_sort(prepared):
    data = load_prepared(prepared)
    view = TokenStore(prepared, data.vocab).split("train").view()
    stream = BatchStream(view, batch_size=8, seed=5, bucket=True)
    g = torch.Generator().manual_seed(5 * 1000003)
    perm = torch.randperm(len(view), generator=g).tolist()
    q_len, r_len = view.lengths()
    perm.sort(key=lambda i: (q_len[i], r_len[i]))
    batches = [perm[i:i + 8] for i in range(0, len(perm), 8)]
    order = torch.randperm(len(batches), generator=g).tolist()
    assert [b.tolist() for b in stream.epoch_batches(0)] == [batches[i] for i in order]


def test_prepare_then_train_on_the_folder_uses_its_splits_and_vocabulary(prepared, tmp_path):
    run = tmp_path / "run"
    assert cli.main(["chat", "train", "--data", str(prepared), "--out", str(run),
                     "--steps", "3", "--hidden-size", "16", "--batch-size", "16",
                     "--eval-every", "3", "--device", "cpu"]) == 0
    assert (run / rd.VOCAB).read_bytes() == (prepared / "vocab.json").read_bytes()
    config = rd.read_config(run)
    # the folder's settings, not the command line's defaults (max length 10, min count 3)
    assert config["data"]["corpus"] == str(prepared)
    assert config["data"]["max_length"] == 12 and config["data"]["min_count"] == 1
    assert not (run / "data").exists()   # nothing prepared again
    stats = json.loads((prepared / "stats.json").read_text())
    assert load_checkpoint(run / rd.LAST)["stream"]["num_pairs"] == stats["pairs_train"]
    data = load_prepared(prepared)
    for split in ("valid", "test"):
        assert split_pairs(str(run), config, split) == data.splits[split]
    assert load_trained_max_length(run) == 12
    # and it resumes from the same folder
    assert cli.main(["chat", "train", "--out", str(run), "--resume", "--steps", "4",
                     "--device", "cpu"]) == 0
    assert load_checkpoint(run / rd.LAST)["step"] == 4


def load_trained_max_length(run) -> int:
    return rd.load_trained(run, torch.device("cpu")).max_length


def test_a_raw_corpus_is_prepared_into_the_run_folder_once(tmp_path):
    run = tmp_path / "run"
    args = ["--out", str(run), "--hidden-size", "16", "--batch-size", "16", "--device", "cpu"]
    assert cli.main(["chat", "train", "--data", "chatterbot", "--steps", "2", *args]) == 0
    head = (run / "data" / "store.json").read_bytes()
    assert not (run / "data" / "pairs.tsv").exists() and (run / "data" / "test.tsv").is_file()
    reference = load_prepared(run / "data")
    expected = index_pairs(reference.splits["train"], reference.vocab)
    view = TokenStore(run / "data", reference.vocab).split("train").view()
    assert view.gather(np.arange(len(view))) == expected
    assert (run / rd.VOCAB).read_bytes() == (run / "data" / "vocab.json").read_bytes()
    stamp = (run / "data" / "train.tokens.bin").stat().st_mtime_ns
    assert cli.main(["chat", "train", "--data", "chatterbot", "--steps", "3", "--resume",
                     *args]) == 0
    assert (run / "data" / "train.tokens.bin").stat().st_mtime_ns == stamp
    assert (run / "data" / "store.json").read_bytes() == head
