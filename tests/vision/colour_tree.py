"""A tiny image-folder tree the vision tests train on: noisy 32x32 images of one hue each."""

from pathlib import Path

import numpy as np
from PIL import Image

COLOURS = {"blue": 2, "green": 1, "red": 0}


def write_colour_tree(root: Path, train_per_class: int, test_per_class: int) -> Path:
    """Write root/{train,test}/<colour>/<i>.png and return root."""
    rng = np.random.default_rng(0)
    for split, count in (("train", train_per_class), ("test", test_per_class)):
        for name, channel in COLOURS.items():
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 90, (32, 32, 3), dtype=np.uint8)
                pixels[..., channel] += 150
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root
