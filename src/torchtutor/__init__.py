"""torchtutor: the PyTorch tutorial notes as working software.

The public API (docs/reference.md lists it; everything else is internal):

- `Chatbot.load(run_dir)`, `bot.reply(text)`, `bot.reply_batch(texts)`, with `DecodeOptions`
  and `Reply`: a trained chatbot;
- `train(config)` with `TrainConfig` and the `RECIPES` (chat), or a `torchtutor.vision`
  `TrainConfig`: training, as `chat train` and `vision train` do;
- `Classifier.load(run_dir).predict(images)` with `Prediction`: a trained image classifier;
- `UserError`: the one exception for anything a user can fix; its message is the line the
  command line prints after `error:`.

Each name is imported on first use (PEP 562), so `import torchtutor`, and with it
`torchtutor --help`, does not load torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Where each public name is defined.
_HOMES = {
    "Chatbot": "torchtutor.chat.infer.chatbot",
    "Reply": "torchtutor.chat.infer.chatbot",
    "DecodeOptions": "torchtutor.chat.infer.options",
    "TrainConfig": "torchtutor.chat.config",
    "ModelConfig": "torchtutor.chat.config",
    "PrepareConfig": "torchtutor.chat.config",
    "RECIPES": "torchtutor.chat.config",
    "train": "torchtutor.api",
    "VisionTrainResult": "torchtutor.api",
    "Classifier": "torchtutor.vision.classifier",
    "Prediction": "torchtutor.vision.classifier",
    "UserError": "torchtutor.runtime.errors",
}

__all__ = ["RECIPES", "Chatbot", "Classifier", "DecodeOptions", "ModelConfig", "Prediction",
           "PrepareConfig", "Reply", "TrainConfig", "UserError", "VisionTrainResult", "train"]

if TYPE_CHECKING:  # for type checkers and the API reference; at run time, __getattr__ below
    from torchtutor.api import VisionTrainResult, train
    from torchtutor.chat.config import RECIPES, ModelConfig, PrepareConfig, TrainConfig
    from torchtutor.chat.infer.chatbot import Chatbot, Reply
    from torchtutor.chat.infer.options import DecodeOptions
    from torchtutor.runtime.errors import UserError
    from torchtutor.vision.classifier import Classifier, Prediction


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'torchtutor' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value   # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__ + ["__version__"])
