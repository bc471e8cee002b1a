"""Image classifier: data -> models -> train/evaluate -> predict.

Public here: the recipes' config (`TrainConfig`, `ModelConfig`, `DataConfig`, `RECIPES`; train
one with `torchtutor.train`) and `Classifier` (imported on first use: it loads torch).
"""

from typing import TYPE_CHECKING, Any

from torchtutor.vision.config import RECIPES, DataConfig, ModelConfig, TrainConfig

__all__ = ["RECIPES", "Classifier", "DataConfig", "ModelConfig", "Prediction", "TrainConfig"]

if TYPE_CHECKING:
    from torchtutor.vision.classifier import Classifier, Prediction


def __getattr__(name: str) -> Any:
    # Classifier imports torch; the configs above do not, so `--help` stays fast.
    if name in ("Classifier", "Prediction"):
        from torchtutor.vision import classifier

        return getattr(classifier, name)
    raise AttributeError(f"module 'torchtutor.vision' has no attribute {name!r}")
