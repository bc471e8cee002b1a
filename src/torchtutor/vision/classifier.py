"""`Classifier`: a trained `vision train` run as an object: load it, classify images.

`vision predict --run` answers through the same object, so the command and the API give the
same classes and probabilities.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError

from torchtutor.runtime.device import resolve_device
from torchtutor.runtime.errors import UserError
from torchtutor.vision.data import IMAGE_SIZE
from torchtutor.vision.folders import decode_image
from torchtutor.vision.inference import LoadedRun, load_run, predict_logits


@dataclass(frozen=True)
class Prediction:
    """One image's answer: the likeliest class first."""

    label: str                            # the likeliest class
    probability: float                    # its probability, 0..1
    top: list[tuple[str, float]]          # the `top_k` likeliest (class, probability), best first


@dataclass(frozen=True)
class Classifier:
    """A trained image classifier: the run's model on its device, with the run's own
    normalization, precision and test-time augmentation.

    Load one with `Classifier.load(run_dir)`; `predict` takes image files or uint8 tensors.
    """

    run: LoadedRun

    @classmethod
    def load(cls, run_dir: str | os.PathLike, device: str = "auto") -> Classifier:
        """The classifier a `vision train` run folder holds, on `device` ("auto": CUDA, then
        MPS, then the CPU).

        Raises:
            UserError: the folder is missing, is a chat run, or its checkpoint is damaged.
        """
        return cls(load_run(run_dir, resolve_device(device)))

    @property
    def classes(self) -> list[str]:
        """The class names, in the order of the model's outputs."""
        return list(self.run.classes)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """float32 logits (N, classes) on the CPU for uint8 images (N, 3, 32, 32)."""
        run = self.run
        return predict_logits(run.model, images, run.mean, run.std, run.device, run.dtype,
                              tta=run.tta, translate=run.tta_translate,
                              channels_last=run.channels_last)

    def predict(self, images: Sequence[str | os.PathLike] | torch.Tensor,
                top_k: int = 3) -> list[Prediction]:
        """The likeliest classes of each image, in order.

        Args:
            images: image files of any size and format Pillow reads (resized to 32x32 as in
                training), or a uint8 tensor of images (N, 3, 32, 32) or one image (3, 32, 32).
            top_k: how many classes each `Prediction.top` lists.

        Raises:
            UserError: a file that cannot be read as an image, or a tensor of another shape
                or type.
        """
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise UserError(f"top_k must be a whole number of 1 or more, not {top_k!r}")
        if isinstance(images, torch.Tensor):
            batch = _checked_tensor(images)
        else:
            if isinstance(images, (str, os.PathLike)):
                images = [images]   # one path is a list of one, not a string of characters
            batch = torch.stack([_file_image(path) for path in images]) if images else \
                torch.zeros(0, 3, IMAGE_SIZE, IMAGE_SIZE, dtype=torch.uint8)
        if len(batch) == 0:
            return []
        probs = self.logits(batch).softmax(1)
        values, indexes = probs.topk(min(top_k, probs.shape[1]), dim=1)
        answers = []
        for row_values, row_indexes in zip(values.tolist(), indexes.tolist(), strict=True):
            top = [(self.run.classes[i], p) for p, i in zip(row_values, row_indexes, strict=True)]
            answers.append(Prediction(label=top[0][0], probability=top[0][1], top=top))
        return answers


def read_image(path: str | os.PathLike) -> torch.Tensor:
    """(3, 32, 32) uint8 from an image file; OSError or ValueError with a readable reason."""
    file = Path(path)
    if not file.exists():
        raise OSError("no such file")
    if file.is_dir():
        raise OSError("is a folder, not an image")
    try:
        array = decode_image(file.read_bytes(), IMAGE_SIZE)
    except UnidentifiedImageError:
        raise ValueError("not an image Pillow can read") from None
    except Image.DecompressionBombError as exc:
        raise ValueError(f"image too large to decode safely ({str(exc)[:80]})") from None
    except (OSError, SyntaxError) as exc:
        raise ValueError(f"damaged image ({str(exc)[:80]})") from None
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def _file_image(path: str | os.PathLike) -> torch.Tensor:
    try:
        return read_image(path)
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: {exc}") from None


def _checked_tensor(images: torch.Tensor) -> torch.Tensor:
    if images.dim() == 3:
        images = images.unsqueeze(0)
    if images.dtype != torch.uint8 or images.dim() != 4 or \
            tuple(images.shape[1:]) != (3, IMAGE_SIZE, IMAGE_SIZE):
        raise UserError(f"images must be uint8 (N, 3, {IMAGE_SIZE}, {IMAGE_SIZE}) or "
                        f"(3, {IMAGE_SIZE}, {IMAGE_SIZE}), not {images.dtype} "
                        f"{tuple(images.shape)}")
    return images
