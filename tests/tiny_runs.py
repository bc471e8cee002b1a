"""Tiny run folders trained through the public API, once per test session: a chatbot with its
backward model (hidden 16, a few steps on six pairs) and a classifier (the notes' net, one
epoch on coloured noise). The API, docs and wheel tests share them."""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass, replace
from pathlib import Path

from tests.chat.serve_support import TINY_PAIRS
from tests.vision.colour_tree import write_colour_tree


@dataclass(frozen=True)
class TinyRuns:
    root: Path
    corpus: Path      # pairs.tsv the chatbot trained on
    chat: Path        # a chat run folder with backward/
    tree: Path        # an image tree: train/ and test/ of red, green, blue noise
    vision: Path      # a vision run folder


def tiny_chat_config(corpus: Path, out: Path):
    from torchtutor import RECIPES

    base = RECIPES["default"]
    return replace(base, out=str(out), steps=4, batch_size=8, device="cpu", precision="fp32",
                   model=replace(base.model, hidden_size=16),
                   data=replace(base.data, corpus=str(corpus), min_count=1))


def tiny_vision_config(tree: Path, out: Path):
    from torchtutor.vision import RECIPES, DataConfig

    return replace(RECIPES["tutorial"], out=str(out), epochs=1, device="cpu",
                   data=DataConfig(source=str(tree)))


def make_tiny_runs(root: Path) -> TinyRuns:
    """Train both runs under `root` unless an earlier call did."""
    from torchtutor import train

    corpus, chat, tree, vision = (root / "pairs.tsv", root / "chat", root / "colours",
                                  root / "vision")
    runs = TinyRuns(root=root, corpus=corpus, chat=chat, tree=tree, vision=vision)
    if (root / "done").exists():
        return runs
    root.mkdir(parents=True, exist_ok=True)
    corpus.write_text("".join(f"{q}\t{r}\n" for q, r in TINY_PAIRS * 4), encoding="utf-8")
    write_colour_tree(tree, train_per_class=8, test_per_class=2)
    with contextlib.redirect_stdout(io.StringIO()):
        train(tiny_chat_config(corpus, chat))
        train(tiny_vision_config(tree, vision))
    (root / "done").touch()
    return runs


def session_tiny_runs(tmp_path_factory) -> TinyRuns:
    """The session's tiny runs: trained by the first test module that asks."""
    return make_tiny_runs(tmp_path_factory.getbasetemp() / "tiny-runs")
