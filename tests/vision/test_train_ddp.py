"""`vision train` under torchrun: 2 CPU workers with gloo against one process with the same
global batch (both recipes' data paths), checkpoints that load anywhere, a killed worker."""

import json

import pytest
import torch

from tests.ddp_support import assert_ok, assert_same_weights, largest_change, torchrun
from tests.vision.colour_tree import write_colour_tree
from torchtutor.cli import main
from torchtutor.runtime.checkpoint import load_checkpoint
from torchtutor.runtime.progress import read_metrics
from torchtutor.vision.data import DeviceBatches
from torchtutor.vision.inference import CHECKPOINT_NAME

PER_RANK_BATCH = 4   # 48 training images: 6 global batches of 8 per epoch


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """root/{train,test}/<colour>/*.png, noisy images of one hue; a private decode cache."""
    root = tmp_path_factory.mktemp("ddp_vision")
    patch = pytest.MonkeyPatch()
    patch.setenv("TORCHTUTOR_CACHE", str(root / "cache"))  # torchrun's workers inherit it
    write_colour_tree(root / "colours", train_per_class=16, test_per_class=5)
    yield root
    patch.undo()


def options(tree, out, recipe: str, batch_size: int | None, epochs: int = 2) -> list[str]:
    # The tutorial net has no BatchNorm, so nothing depends on how a batch is split. The fast
    # recipe brings the device-side batches with random crops and flips. A resumed run keeps
    # its batch size (batch_size None: the option is left out, as --resume wants).
    batch = [] if batch_size is None else ["--batch-size", str(batch_size)]
    return ["vision", "train", "--data", str(tree / "colours"), "--out", str(out),
            "--model", "tutorial", "--recipe", recipe, "--epochs", str(epochs), "--lr", "0.01",
            *batch, "--precision", "fp32", "--device", "cpu"]


def weights(run) -> dict:
    return load_checkpoint(run / CHECKPOINT_NAME)["model"]


@pytest.mark.parametrize("recipe", ["tutorial", "fast"])
def test_two_workers_equal_one_process_with_the_global_batch(tree, recipe, capsys):
    ddp, single = tree / f"ddp-{recipe}", tree / f"single-{recipe}"
    result = torchrun(options(tree, ddp, recipe, PER_RANK_BATCH))
    assert_ok(result)
    assert result.stdout.count("test accuracy") == 1  # rank 0 alone reports
    assert main(options(tree, single, recipe, 2 * PER_RANK_BATCH)) == 0
    assert load_checkpoint(ddp / CHECKPOINT_NAME)["step"] == 12  # 6 steps per epoch each
    assert load_checkpoint(single / CHECKPOINT_NAME)["step"] == 12
    assert_same_weights(weights(ddp), weights(single), atol=1e-5, rtol=1e-4)
    start = tree / f"start-{recipe}"
    assert main(options(tree, start, recipe, 2 * PER_RANK_BATCH, epochs=1)) == 0
    assert largest_change(weights(start), weights(single)) > 1e-3  # it did keep training
    # Losses, accuracies and image counts are summed over the ranks: rank 0's rows match.
    ddp_rows, single_rows = read_metrics(ddp / "metrics.csv"), read_metrics(single / "metrics.csv")
    assert [r["epoch"] for r in ddp_rows] == [r["epoch"] for r in single_rows] == ["1", "2"]
    for mine, theirs in zip(ddp_rows, single_rows, strict=True):
        for key in ("train_loss", "train_accuracy", "test_accuracy"):
            assert float(mine[key]) == pytest.approx(float(theirs[key]), abs=2e-4)
    # The distributed checkpoint is the plain net's: a single process evaluates it.
    capsys.readouterr()
    assert main(["vision", "evaluate", "--run", str(ddp), "--json", "--device", "cpu"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["accuracy"] == pytest.approx(float(ddp_rows[-1]["test_accuracy"]), abs=1e-4)


def test_single_process_checkpoint_resumes_under_torchrun_and_back(tree):
    run = tree / "cross"
    assert main(options(tree, run, "tutorial", 2 * PER_RANK_BATCH, epochs=1)) == 0
    before = weights(run)
    result = torchrun(options(tree, run, "tutorial", None) + ["--resume"])
    assert_ok(result)
    assert load_checkpoint(run / CHECKPOINT_NAME)["epoch"] == 2
    assert largest_change(before, weights(run)) > 1e-3
    before = weights(run)
    assert main(options(tree, run, "tutorial", None, epochs=3) + ["--resume"]) == 0
    assert load_checkpoint(run / CHECKPOINT_NAME)["epoch"] == 3
    assert largest_change(before, weights(run)) > 1e-3


def test_a_killed_worker_restarts_the_group_which_resumes(tree):
    """Killed after step 9 (mid second epoch): the group resumes from the epoch-1 checkpoint."""
    marker, run = tree / "killed-once", tree / "killed"
    result = torchrun(options(tree, run, "tutorial", PER_RANK_BATCH), max_restarts=1,
                      kill_at_step=(9, marker))
    assert_ok(result)
    assert marker.exists()
    assert load_checkpoint(run / CHECKPOINT_NAME)["step"] == 12
    reference = tree / "ddp-tutorial"
    if not reference.exists():  # run alone (-k): make the uninterrupted run here
        assert_ok(torchrun(options(tree, reference, "tutorial", PER_RANK_BATCH)))
    assert_same_weights(weights(run), weights(reference), atol=0, rtol=0)
    assert [r["epoch"] for r in read_metrics(run / "metrics.csv")] == ["1", "2"]


@pytest.mark.parametrize("augment", [False, True])
def test_device_batch_parts_make_up_the_global_batch(augment):
    images = torch.randint(0, 256, (22, 3, 8, 8), dtype=torch.uint8)
    labels = torch.arange(22)
    common = dict(mean=[0.5] * 3, std=[0.25] * 3, device=torch.device("cpu"), augment=augment,
                  shuffle=True, drop_last=False, seed=3)
    single = DeviceBatches(images, labels, batch_size=8, **common)
    ranks = [DeviceBatches(images, labels, batch_size=4, rank=r, world_size=2, **common)
             for r in range(2)]
    assert len(single) == len(ranks[0]) == 3
    for _ in range(2):  # two epochs: the generators stay in step
        for (x, y), (x0, y0), (x1, y1) in zip(single.epoch(), ranks[0].epoch(), ranks[1].epoch(),
                                              strict=True):
            assert len(y0) == len(y1)  # the short last batch (6) splits evenly
            assert torch.equal(torch.cat([y0, y1]), y)
            assert torch.equal(torch.cat([x0, x1]), x)  # the same crops and flips
