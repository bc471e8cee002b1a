"""The fast recipe's parts: schedule, parameter groups, lookahead, shifted TTA, exact resume."""

import os
import signal
import subprocess
import sys
from dataclasses import replace
from itertools import pairwise

import pytest
import torch

from tests.conftest import REPO_ROOT
from tests.ddp_support import SOURCES
from tests.vision.colour_tree import write_colour_tree
from torchtutor.cli import main
from torchtutor.runtime.checkpoint import load_checkpoint, save_checkpoint
from torchtutor.vision.config import FAST, TUTORIAL, TrainConfig
from torchtutor.vision.inference import predict_logits
from torchtutor.vision.lookahead import Lookahead
from torchtutor.vision.models import build_model
from torchtutor.vision.train import lr_at, parameter_groups


def fast_config(**overrides) -> TrainConfig:
    return replace(FAST, out="y", **overrides)


def test_fast_schedule_warms_up_from_a_fifth_and_ends_at_seven_percent():
    config = fast_config()
    assert lr_at(config, 0.0) == pytest.approx(0.2 * config.lr)
    assert lr_at(config, config.warmup) == pytest.approx(config.lr)
    assert lr_at(config, 1.0) == pytest.approx(0.07 * config.lr)
    rates = [lr_at(config, p / 100) for p in range(101)]
    peak = rates.index(max(rates))
    assert all(a <= b for a, b in pairwise(rates[:peak + 1]))
    assert all(a >= b for a, b in pairwise(rates[peak:]))
    # The notes' recipe keeps its constant rate.
    tutorial = replace(TUTORIAL, out="y")
    assert lr_at(tutorial, 0.0) == lr_at(tutorial, 0.7) == tutorial.lr


def test_norm_shifts_train_faster_without_decay_and_norm_scales_are_frozen():
    model = build_model("fast", 10, widths=(8, 16, 16))
    groups = {g["name"]: g for g in parameter_groups(model, fast_config())}
    assert set(groups) == {"weights", "whiten_bias", "norm_biases"}
    assert groups["norm_biases"]["scale"] == 64.0 and groups["norm_biases"]["weight_decay"] == 0
    assert len(groups["norm_biases"]["params"]) == 6  # two norms in each of three blocks
    trained = {id(p) for g in groups.values() for p in g["params"]}
    for name, p in model.named_parameters():
        frozen = name == "whiten.weight" or (".norm" in name and name.endswith("weight"))
        assert (id(p) in trained) != frozen, name
    # The blocks' convs start as identity maps on their first input channels.
    conv = model.blocks[1].conv2.weight
    assert torch.equal(conv[:, :, 1, 1], torch.eye(16))


def test_lookahead_pulls_toward_the_slow_average_and_finishes_on_it():
    model = torch.nn.Linear(3, 2)
    with torch.no_grad():
        model.weight.fill_(1.0)
    look = Lookahead(model, every=5, max_decay=0.5)
    with torch.no_grad():
        model.weight.fill_(3.0)
    look.after_step(4, 1.0)  # not a multiple of 5: untouched
    assert torch.all(model.weight == 3.0)
    look.after_step(5, 1.0)  # decay 0.5: slow = 0.5 * 1 + 0.5 * 3, and the weights follow it
    assert torch.allclose(model.weight, torch.full((2, 3), 2.0))
    with torch.no_grad():
        model.weight.fill_(10.0)
    look.finish()
    assert torch.allclose(model.weight, torch.full((2, 3), 2.0))
    assert look.decay_at(0.0) == 0.0 and look.decay_at(0.5) == pytest.approx(0.5 / 8)


def test_shifted_tta_averages_mirrored_shifted_copies():
    torch.manual_seed(0)
    model = build_model("fast", 4, widths=(8, 8, 8)).eval()
    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    mean, std = [0.5] * 3, [0.25] * 3
    got = predict_logits(model, images, mean, std, torch.device("cpu"), tta=True, translate=True)
    x = (images.float() - 127.5) / 63.75
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")

    def mirrored(v):
        return (model(v) + model(v.flip(3))) / 2

    with torch.no_grad():
        want = mirrored(x) / 2 + (mirrored(padded[:, :, :32, :32])
                                  + mirrored(padded[:, :, 2:, 2:])) / 4
    assert torch.allclose(got, want, atol=1e-5)
    plain = predict_logits(model, images, mean, std, torch.device("cpu"), tta=True)
    assert not torch.allclose(got, plain)


def test_fast_recipe_resumes_exactly_after_a_kill(tmp_path):
    """Killed at step 14, mid epoch 4: the resumed run ends on exactly the uninterrupted one.

    4 steps an epoch, so the whitening bias stops at step 12, before the checkpoint of epoch 3
    that the resume starts from, and lookahead syncs every 5 steps on both sides of it.
    """
    tree = write_colour_tree(tmp_path / "colours", train_per_class=12, test_per_class=4)
    env = {**os.environ, "TORCHTUTOR_CACHE": str(tmp_path / "cache"),
           "PYTHONPATH": os.pathsep.join([SOURCES, os.environ.get("PYTHONPATH", "")])}

    def train(out, *extra, launcher=("-m", "torchtutor.cli")):
        command = [sys.executable, *launcher, "vision", "train", "--data",
                   str(tree), "--out", str(out), "--device", "cpu", "--model", "fast",
                   "--batch-size", "8", "--epochs", "5", *extra]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300,
                              cwd=REPO_ROOT)

    assert train(tmp_path / "a").returncode == 0
    killed = train(tmp_path / "b", launcher=("-m", "tests.kill_at_step", "14",
                                             str(tmp_path / "marker")))
    assert killed.returncode == -signal.SIGKILL
    cut = load_checkpoint(tmp_path / "b" / "last.pt")
    assert cut["step"] == 12 and not cut["finished"]
    resumed = train(tmp_path / "b", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-500:]
    a = load_checkpoint(tmp_path / "a" / "last.pt")
    b = load_checkpoint(tmp_path / "b" / "last.pt")
    assert a["step"] == b["step"] == 20
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    rates = {g["name"]: g["lr"] for g in b["optimizer"]["param_groups"]}
    assert rates["whiten_bias"] == 0.0 < rates["weights"] < rates["norm_biases"]
    assert set(b["lookahead"]) >= {"head.weight", "blocks.0.norm1.running_mean"}


def test_resuming_a_checkpoint_whose_optimizer_does_not_fit_is_one_line(tmp_path, capsys,
                                                                         monkeypatch):
    """A run saved before the fast recipe's parameter groups (one group) cannot resume."""
    monkeypatch.setenv("TORCHTUTOR_CACHE", str(tmp_path / "cache"))
    tree = write_colour_tree(tmp_path / "colours", train_per_class=12, test_per_class=4)
    run = tmp_path / "run"
    argv = ["vision", "train", "--data", str(tree), "--out", str(run), "--device", "cpu",
            "--model", "fast", "--batch-size", "8", "--epochs", "1"]
    assert main(argv) == 0
    state = load_checkpoint(run / "last.pt")
    groups = state["optimizer"]["param_groups"]
    merged = dict(groups[0], params=[i for g in groups for i in g["params"]])
    state["optimizer"]["param_groups"] = [merged]
    save_checkpoint(run / "last.pt", state)
    capsys.readouterr()
    assert main(argv[:-1] + ["2", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "cannot resume" in err and "Traceback" not in err
