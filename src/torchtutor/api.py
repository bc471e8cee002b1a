"""`torchtutor.train`: one function that trains what a config describes.

A chat `TrainConfig` trains the chatbot and, as `chat train` does, its backward model into
RUN_DIR/backward; a vision `TrainConfig` trains the classifier. The command line's `chat train`
and `vision train` run the same training code. torch is imported only when `train` is called,
so importing the package stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, overload

from torchtutor.chat.config import TrainConfig as ChatTrainConfig
from torchtutor.runtime.errors import UserError
from torchtutor.vision.config import TrainConfig as VisionTrainConfig

if TYPE_CHECKING:
    from torchtutor.chat.train.loop import TrainResult


@dataclass(frozen=True)
class VisionTrainResult:
    """What a classifier's training ended with (also written to RUN_DIR/result.json)."""

    run_dir: Path             # the run folder: `Classifier.load(run_dir)` loads it
    test_accuracy: float      # share of the test images classified right, 0..1
    epochs: float             # passes over the training images, counting a partial one
    steps: int                # optimizer steps
    train_seconds: float      # time in training steps (testing and saving excluded)
    stopped_by_budget: bool   # the time budget ended the run before its epochs


@overload
def train(config: ChatTrainConfig, resume: bool = False) -> TrainResult: ...
@overload
def train(config: VisionTrainConfig, resume: bool = False) -> VisionTrainResult: ...


def train(config: ChatTrainConfig | VisionTrainConfig,
          resume: bool = False) -> TrainResult | VisionTrainResult:
    """Train into `config.out` (a new folder, or with `resume` one to continue exactly).

    Args:
        config: `torchtutor.TrainConfig` (the chatbot; a recipe from `torchtutor.RECIPES`
            with `dataclasses.replace`) or `torchtutor.vision.TrainConfig` (the classifier;
            `torchtutor.vision.RECIPES`).
        resume: continue the run in `config.out` from its last checkpoint.

    Returns:
        For the chatbot, the forward model's `TrainResult` (its `run_dir` is what
        `Chatbot.load` takes); for the classifier, a `VisionTrainResult`.

    Raises:
        UserError: a bad config, data that cannot be read, a folder that cannot be written.
    """
    if isinstance(config, ChatTrainConfig):
        return _train_chatbot(config, resume)
    if isinstance(config, VisionTrainConfig):
        return _train_classifier(config, resume)
    raise UserError(f"train takes a chat or vision TrainConfig, not {type(config).__name__}")


def _train_chatbot(config: ChatTrainConfig, resume: bool) -> TrainResult:
    """The chatbot, then (unless `config.backward` is off) the backward model that the default
    decoder reranks with, as `chat train` does."""
    from torchtutor.chat.train.command import train_chatbot

    return train_chatbot(config, resume)


def _train_classifier(config: VisionTrainConfig, resume: bool) -> VisionTrainResult:
    from torchtutor.vision.train import train as train_vision

    result = train_vision(config, resume=resume)
    return VisionTrainResult(run_dir=Path(result["run"]),
                             test_accuracy=float(result["test_accuracy"]),
                             epochs=float(result["epochs"]), steps=int(result["steps"]),
                             train_seconds=float(result["train_seconds"]),
                             stopped_by_budget=bool(result["stopped_by_budget"]))
