"""`chat train` under torchrun: 2 CPU workers with gloo against one process with the same
global batch, checkpoints across world sizes, and a worker killed mid-run."""

import shutil

import pytest
import torch

from tests.ddp_support import assert_ok, assert_same_weights, largest_change, torchrun
from torchtutor import cli
from torchtutor.chat import run_dir as rd
from torchtutor.chat.run_dir import load_trained
from torchtutor.runtime.checkpoint import load_checkpoint
from torchtutor.runtime.progress import read_metrics

PER_RANK_BATCH = 8
STEPS = 4


def options(out, batch_size: int, steps: int = STEPS) -> list[str]:
    # No bucketing (the tutorial recipe), so the single run's batch i is exactly the union of
    # the ranks' batches i; dropout 0 and full teacher forcing, so nothing random differs.
    return ["chat", "train", "--data", "chatterbot", "--min-count", "1", "--out", str(out),
            "--recipe", "tutorial", "--hidden-size", "16", "--dropout", "0",
            "--teacher-forcing", "1.0", "--lr", "0.01", "--precision", "fp32",
            "--batch-size", str(batch_size), "--steps", str(steps), "--eval-every", "2",
            "--checkpoint-every", "1", "--device", "cpu"]


def weights(run) -> dict:
    return load_checkpoint(run / rd.LAST)["model"]


def differing(a: dict, b: dict, atol: float) -> int:
    return sum(int(((a[k] - b[k]).abs() > atol).sum()) for k in a)


def count(state: dict) -> int:
    return sum(t.numel() for t in state.values())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """An uninterrupted 2-worker run, and one process with twice the batch."""
    root = tmp_path_factory.mktemp("ddp_chat")
    result = torchrun(options(root / "ddp", PER_RANK_BATCH))
    assert_ok(result)
    assert cli.main(options(root / "single", 2 * PER_RANK_BATCH)) == 0
    return root, result


def test_two_workers_equal_one_process_with_the_global_batch(runs):
    root, result = runs
    ddp, single = root / "ddp", root / "single"
    assert result.stdout.count("trained the chatbot 4 steps") == 1  # rank 0 alone reports
    assert load_checkpoint(ddp / rd.LAST)["step"] == STEPS
    # Adam divides by the root of the squared gradients, so a weight whose gradient is almost
    # zero (a rare word's embedding) turns summation-order rounding into a visible step. So:
    # nearly every weight agrees to 1e-5, and none is off by 5e-4. (Measured without the
    # global token normalization: 25,513 weights differ by more than 2e-4, by up to 0.18.)
    assert_same_weights(weights(ddp), weights(single), atol=5e-4, rtol=0)
    assert differing(weights(ddp), weights(single), 1e-5) < 1e-3 * count(weights(single))
    # The checkpoint holds the plain module's state (no "module." prefixes): it loads as is.
    bot = load_trained(ddp, torch.device("cpu"), which="last")
    assert_same_weights(bot.model.state_dict(), weights(ddp), atol=0, rtol=0)
    # The metrics are all-reduced: rank 0's rows (and only its rows) match the single run.
    ddp_rows, single_rows = read_metrics(ddp / rd.METRICS), read_metrics(single / rd.METRICS)
    assert [r["step"] for r in ddp_rows] == [r["step"] for r in single_rows] == ["2", "4"]
    for mine, theirs in zip(ddp_rows, single_rows, strict=True):
        for key in ("train_loss", "valid_loss"):
            assert float(mine[key]) == pytest.approx(float(theirs[key]), abs=2e-4)
    # Tokens counted over both ranks: the same total as the single process.
    assert load_checkpoint(ddp / rd.LAST)["tokens"] == load_checkpoint(single / rd.LAST)["tokens"]


def test_weights_move_more_than_the_tolerance(runs, tmp_path):
    root, _ = runs
    start = tmp_path / "start"
    assert cli.main(options(start, 2 * PER_RANK_BATCH, steps=1)) == 0
    assert largest_change(weights(start), weights(root / "single")) > 1e-2


def test_uneven_token_counts_are_normalized_globally(runs):
    """Without the per-rank loss scale DDP would average two per-rank means: check that the
    ranks' token counts did differ, so the equality above depends on the scaling."""
    from torchtutor.chat.data.batches import BatchStream, index_pairs
    from torchtutor.chat.data.prepare import PrepareConfig, prepare_data

    data = prepare_data(PrepareConfig(corpus="chatterbot", min_count=1))
    indexed = index_pairs(data.splits["train"], data.vocab)
    counts = []
    for rank in (0, 1):
        stream = iter(BatchStream(indexed, PER_RANK_BATCH, rank=rank, world_size=2))
        counts.append([next(stream).target_tokens for _ in range(STEPS)])
    assert counts[0] != counts[1]


def test_checkpoints_cross_world_sizes(runs, tmp_path):
    root, _ = runs
    # Distributed -> one process: --resume continues the 2-worker run in a single process.
    ddp_copy, single_copy = tmp_path / "ddp", tmp_path / "single"
    for source, target in ((root / "ddp", ddp_copy), (root / "single", single_copy)):
        target.mkdir()
        shutil.copytree(source, target, dirs_exist_ok=True)   # the run's data/ folder too
    before = weights(ddp_copy)
    assert cli.main(["chat", "train", "--out", str(ddp_copy), "--resume", "--steps", "6",
                     "--device", "cpu"]) == 0
    assert load_checkpoint(ddp_copy / rd.LAST)["step"] == 6
    assert largest_change(before, weights(ddp_copy)) > 1e-3
    # One process -> distributed: torchrun resumes the single run's folder.
    before = weights(single_copy)
    result = torchrun(["chat", "train", "--out", str(single_copy), "--resume", "--steps", "6",
                       "--device", "cpu"])
    assert_ok(result)
    assert f"resuming {single_copy} at step 4" in result.stdout
    assert load_checkpoint(single_copy / rd.LAST)["step"] == 6
    assert largest_change(before, weights(single_copy)) > 1e-3


def default_options(out) -> list[str]:
    """The default recipe (the chatbot, then its backward model), made tiny, and without
    dropout or sampled teacher forcing: a checkpoint holds rank 0's random state alone, so a
    resumed rank 1 would draw other masks than in the uninterrupted run."""
    return ["chat", "train", "--data", "chatterbot", "--out", str(out), "--hidden-size", "16",
            "--dropout", "0", "--teacher-forcing", "1.0",
            "--batch-size", str(PER_RANK_BATCH), "--steps", str(STEPS), "--eval-every", "2",
            "--checkpoint-every", "1", "--device", "cpu"]


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    return tmp_path_factory.mktemp("ddp_default") / "run"


def test_the_default_recipe_trains_both_models_and_every_worker_exits(default_run):
    """Both models in one process group: the second group that the backward model used to
    make hung about half the runs here, in gloo's connect or in its destructor."""
    result = torchrun(default_options(default_run), timeout=120)
    assert_ok(result)   # torchrun exits 0 only when every worker did
    assert result.stdout.count("trained the chatbot 4 steps") == 1
    assert result.stdout.count("trained the backward model 4 steps") == 1
    assert load_checkpoint(default_run / rd.BACKWARD / rd.LAST)["step"] == STEPS


def test_a_killed_worker_restarts_the_group_which_resumes(default_run, tmp_path):
    """The last rank dies after step 2: torchrun restarts both workers, which resume the
    chatbot from last.pt, train the backward model, and exit; the weights are exactly those
    of the uninterrupted run."""
    marker, run = tmp_path / "killed-once", tmp_path / "killed"
    result = torchrun(default_options(run), max_restarts=1, kill_at_step=(2, marker),
                      timeout=120)
    assert_ok(result)
    assert marker.exists()  # the last rank did kill itself after step 2
    assert f"resuming {run} at step 1" in result.stdout   # last.pt was written at step 1
    for part in (run, run / rd.BACKWARD):
        assert load_checkpoint(part / rd.LAST)["step"] == STEPS
    if (default_run / rd.LAST).exists():   # else run alone (-k): no reference to compare
        assert_same_weights(weights(run), weights(default_run), atol=0, rtol=0)
        assert_same_weights(weights(run / rd.BACKWARD), weights(default_run / rd.BACKWARD),
                            atol=0, rtol=0)
    # Rows written after the checkpoint it resumed from were dropped, none twice.
    assert [r["step"] for r in read_metrics(run / rd.METRICS)] == ["2", "4"]
