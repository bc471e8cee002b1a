"""`torchtutor vision predict`: the top-k classes of image files, with probabilities.

Each file is answered on its own: one that cannot be read gets a one-line error and the rest
still get answers; the exit status is 1 if any failed.
"""

import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError

from torchtutor.runtime.device import resolve_device
from torchtutor.vision.data import IMAGE_SIZE
from torchtutor.vision.folders import decode_image
from torchtutor.vision.inference import LoadedRun, load_run, predict_logits


@dataclass
class PredictConfig:
    run: str
    images: list[str]
    top_k: int = 3
    device: str = "auto"


def read_image(path: str) -> torch.Tensor:
    """(3, H, W) uint8 from an image file; OSError/ValueError with a readable reason."""
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


def predict_files(loaded: LoadedRun, paths: list[str], top_k: int,
                  ) -> list[tuple[str, list[tuple[str, float]] | None, str | None]]:
    """(path, [(class, probability)...] or None, error or None) for each path, in order."""
    images, good, results = [], [], []
    for path in paths:
        try:
            images.append(read_image(path))
            good.append(len(results))
            results.append((path, None, None))
        except (OSError, ValueError) as exc:
            results.append((path, None, str(exc)))
    if images:
        logits = predict_logits(loaded.model, torch.stack(images), loaded.mean, loaded.std,
                                loaded.device, loaded.dtype, tta=loaded.tta,
                                translate=loaded.tta_translate, channels_last=loaded.channels_last)
        probs = logits.softmax(1)
        k = min(top_k, probs.shape[1])
        values, indexes = probs.topk(k, dim=1)
        for row, slot in enumerate(good):
            top = [(loaded.classes[int(i)], float(v)) for v, i in zip(values[row], indexes[row],
                                                                     strict=True)]
            results[slot] = (results[slot][0], top, None)
    return results


def main(args) -> int:
    config = PredictConfig(run=args.run, images=list(args.images), top_k=args.top_k,
                           device=args.device)
    loaded = load_run(config.run, resolve_device(config.device))
    failed = 0
    for path, top, error in predict_files(loaded, config.images, config.top_k):
        if error is not None:
            failed += 1
            print(f"error: {path}: {error}", file=sys.stderr)
            continue
        answer = "  ".join(f"{name} {p:.1%}" for name, p in top)
        print(f"{path}: {answer}")
    return 1 if failed else 0
