"""Short fixed-seed runs of both apps at fp32 give exactly the losses and weights recorded
before the config and loop rework (issue 14): refactoring the recipe plumbing must not change
what a run computes. Run through the command line, on one CPU thread, so nothing but the code
decides the numbers."""

import torch

from tests.vision.colour_tree import write_colour_tree
from torchtutor import cli
from torchtutor.runtime.checkpoint import load_checkpoint
from torchtutor.runtime.progress import read_metrics


def _weight_sum(state: dict) -> float:
    return sum(float(t.double().abs().sum()) for t in state.values())


def _one_thread(run):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run()
    finally:
        torch.set_num_threads(threads)


def chat_figures(out, *flags) -> dict:
    assert _one_thread(lambda: cli.main([
        "chat", "train", "--data", "chatterbot", "--out", str(out), "--steps", "6",
        "--hidden-size", "24", "--batch-size", "16", "--eval-every", "3",
        "--precision", "fp32", "--device", "cpu", *flags])) == 0
    figures = {}
    for name, folder in (("forward", out), ("backward", out / "backward")):
        if not folder.exists():
            continue
        last = load_checkpoint(folder / "last.pt")
        figures[name] = (last["valid_loss"], _weight_sum(last["model"]),
                         [r["train_loss"] for r in read_metrics(folder / "metrics.csv")])
    return figures


def vision_figures(tree, out, *flags) -> tuple:
    assert _one_thread(lambda: cli.main([
        "vision", "train", "--data", str(tree), "--out", str(out), "--device", "cpu",
        "--precision", "fp32", *flags])) == 0
    state = load_checkpoint(out / "last.pt")
    return (_weight_sum(state["model"]),
            [(r["train_loss"], r["test_accuracy"]) for r in read_metrics(out / "metrics.csv")])


# Recorded at commit b53aee6 (before issue 14's changes).
RECORDED_CHAT = {
    "forward": (3.5707623816483856, 10303.242130885963, ["3.7033", "3.6078"]),
    "backward": (3.4339578919491527, 10289.331891182235, ["3.5522", "3.4590"])}
RECORDED_COMPAT = {"forward": (5.537861198778973, 8505.911622981439, ["5.5656", "5.5433"])}
RECORDED_TUTORIAL = (1802.706957616852, [("1.0820", "0.6667"), ("0.8938", "1.0000")])
RECORDED_FAST = (13891.436167456408, [("0.7108", "0.6667"), ("0.6313", "1.0000")])


def test_chat_default_recipe_losses_are_unchanged(tmp_path):
    assert chat_figures(tmp_path / "run") == RECORDED_CHAT
    assert chat_figures(tmp_path / "compat", "--tutorial-compat", "--teacher-forcing",
                        "0.5") == RECORDED_COMPAT


def test_vision_losses_are_unchanged(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHTUTOR_CACHE", str(tmp_path / "cache"))
    tree = write_colour_tree(tmp_path / "colours", train_per_class=12, test_per_class=4)
    assert vision_figures(tree, tmp_path / "tut", "--model", "tutorial", "--epochs", "2",
                          "--lr", "0.01") == RECORDED_TUTORIAL
    assert vision_figures(tree, tmp_path / "fast", "--model", "fast", "--epochs", "2",
                          "--batch-size", "8") == RECORDED_FAST
