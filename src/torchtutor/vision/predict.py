"""`torchtutor vision predict`: the top-k classes of image files, with probabilities.

Each file is answered on its own: one that cannot be read gets a one-line error and the rest
still get answers; the exit status is 1 if any failed.
"""

import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch

from torchtutor.runtime.errors import UserError
from torchtutor.runtime.report import dumps as report_json
from torchtutor.vision.classifier import Classifier, read_image


@dataclass
class PredictConfig:
    run: str | None
    images: list[str]
    top_k: int = 3
    device: str = "auto"
    exported: str | None = None   # a file `vision export` wrote, instead of the run
    as_json: bool = False         # one JSON object per image instead of a text line

    def __post_init__(self) -> None:
        if (self.run is None) == (self.exported is None):
            raise UserError("give either --run RUN_DIR or --exported FILE")


def predict_files(logits: Callable[[torch.Tensor], torch.Tensor], classes: list[str],
                  paths: list[str], top_k: int,
                  ) -> list[tuple[str, list[tuple[str, float]] | None, str | None]]:
    """(path, [(class, probability)...] or None, error or None) for each path, in order;
    `logits` maps uint8 images (N, 3, H, W) to their logits."""
    images, good, results = [], [], []
    for path in paths:
        try:
            images.append(read_image(path))
            good.append(len(results))
            results.append((path, None, None))
        except (OSError, ValueError) as exc:
            results.append((path, None, str(exc)))
    if images:
        probs = logits(torch.stack(images)).softmax(1)
        k = min(top_k, probs.shape[1])
        values, indexes = probs.topk(k, dim=1)
        for row, slot in enumerate(good):
            top = [(classes[int(i)], float(v)) for v, i in zip(values[row], indexes[row],
                                                              strict=True)]
            results[slot] = (results[slot][0], top, None)
    return results


def main(config: PredictConfig) -> int:
    if config.exported is not None:
        from torchtutor.vision.export import ExportedClassifier

        bot = ExportedClassifier(config.exported)
        logits, classes = bot.logits, bot.classes
    else:
        classifier = Classifier.load(config.run, config.device)
        logits, classes = classifier.logits, classifier.classes
    failed = 0
    for path, top, error in predict_files(logits, classes, config.images, config.top_k):
        if error is not None:
            failed += 1
            print(f"error: {path}: {error}", file=sys.stderr)
            if config.as_json:   # a line for every image, in order, as `chat reply --json`
                print(report_json({"image": path, "error": error}))
            continue
        if config.as_json:
            print(report_json({"image": path, "top": [{"class": name, "probability": p}
                                                      for name, p in top]}))
            continue
        answer = "  ".join(f"{name} {p:.1%}" for name, p in top)
        print(f"{path}: {answer}")
    return 1 if failed else 0
