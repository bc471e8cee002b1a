"""Short fixed-seed runs of both apps at fp32 give the losses and weights recorded before the
config and loop rework (issue 14): refactoring the recipe plumbing must not change what a run
computes. Run through the command line, on one CPU thread, so nothing but the code and the CPU
decide the numbers. On the recording machine they were equal to the last bit; another CPU's
kernels (AVX2 against AVX-512) add in another order and move the 7th significant digit, so
floats are compared to 1e-6 relative and the metrics' 4-decimal losses to one unit of their
last digit (the fast vision net's convolutions: 1e-3 and 5 units). A real change (a batch in
another order, one step more, another learning rate) moves them by far more."""

import math

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


def same_figures(got, want, rel: float = 1e-6, digits: float = 1.5e-4) -> bool:
    """`got == want`, floats within `rel` relative and 4-decimal strings within `digits`."""
    if isinstance(want, dict):
        return got.keys() == want.keys() and all(same_figures(got[k], want[k], rel, digits)
                                                 for k in want)
    if isinstance(want, (list, tuple)):
        return len(got) == len(want) and all(same_figures(g, w, rel, digits)
                                             for g, w in zip(got, want, strict=True))
    if isinstance(want, str):
        return math.isclose(float(got), float(want), rel_tol=0, abs_tol=digits)
    return math.isclose(got, want, rel_tol=rel)


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
    assert same_figures(chat_figures(tmp_path / "run"), RECORDED_CHAT)
    assert same_figures(chat_figures(tmp_path / "compat", "--tutorial-compat",
                                     "--teacher-forcing", "0.5"), RECORDED_COMPAT)


def test_vision_losses_are_unchanged(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHTUTOR_CACHE", str(tmp_path / "cache"))
    tree = write_colour_tree(tmp_path / "colours", train_per_class=12, test_per_class=4)
    assert same_figures(vision_figures(tree, tmp_path / "tut", "--model", "tutorial",
                                       "--epochs", "2", "--lr", "0.01"), RECORDED_TUTORIAL)
    # The fast net's convolutions are oneDNN's, whose kernels differ by instruction set more
    # than the GRUs' and linear layers' do (at lr 0.4 the 8 steps move 1.4e-4 relative).
    assert same_figures(vision_figures(tree, tmp_path / "fast", "--model", "fast",
                                       "--epochs", "2", "--batch-size", "8"), RECORDED_FAST,
                        rel=1e-3, digits=5e-4)


def test_the_comparison_catches_a_real_change():
    assert same_figures(RECORDED_CHAT, RECORDED_CHAT)
    moved = {**RECORDED_CHAT, "forward": (3.5707, *RECORDED_CHAT["forward"][1:])}
    assert not same_figures(moved, RECORDED_CHAT)
    assert not same_figures(RECORDED_TUTORIAL[:1] + ([("1.0822", "0.6667")] * 2,),
                            RECORDED_TUTORIAL)
    assert not same_figures({"forward": RECORDED_COMPAT["forward"]}, RECORDED_CHAT)
