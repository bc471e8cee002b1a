"""Image-folder trees, on disk or inside a tar/tar.gz, decoded once into uint8 tensors.

Layouts: `root/train/<class>/*` plus `root/test/<class>/*`, or `root/<class>/*` (split later).
A single top folder (as in `cifar10-jpeg/train/...`) is looked through. Any format and mode
Pillow reads is converted to RGB and resized to `size` x `size` when it differs.
"""

import contextlib
import io
import multiprocessing
import os
import sys
import tarfile
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from torchtutor.runtime.errors import UserError
from torchtutor.runtime.progress import progress

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"}
SPLIT_NAMES = {"train": "train", "test": "test", "val": "test", "valid": "test"}
# Below this many files the process pool costs more than it saves.
_PARALLEL_MIN = 4000
# The one decode guard: an image may hold at most this many pixels (a 48 KB PNG can declare
# 20000 x 20000, 1.2 GB decoded). Pillow's own limit warns below 2x and raises above; here
# anything larger is refused before decoding, as a ValueError like any other bad image.
MAX_PIXELS = 64_000_000


class ImageTooLarge(ValueError):
    pass


def decode_image(data: bytes, size: int) -> np.ndarray:
    """Bytes of any image file -> (size, size, 3) uint8 RGB; raises on unreadable data.

    Raises ImageTooLarge (a ValueError) for an image over MAX_PIXELS, before decoding it.
    """
    with Image.open(io.BytesIO(data)) as img:
        width, height = img.size
        if width * height > MAX_PIXELS:
            raise ImageTooLarge(f"image too large to decode safely ({width}x{height} pixels; "
                                f"the limit is {MAX_PIXELS:,})")
        img.draft("RGB", (size, size))  # lets JPEG decode at a reduced scale when it is large
        rgb = img.convert("RGB")
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
    return np.array(rgb, dtype=np.uint8)  # a writable copy


def _decode_chunk(job: tuple[list[bytes], int]) -> tuple[np.ndarray, list[int]]:
    """Decode a chunk in a worker; returns the stacked images and indexes that failed."""
    blobs, size = job
    out = np.zeros((len(blobs), size, size, 3), dtype=np.uint8)
    failed = []
    for i, data in enumerate(blobs):
        try:
            out[i] = decode_image(data, size)
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError,
                Image.DecompressionBombError):
            failed.append(i)
    return out, failed


def decode_many(blobs: list[bytes], size: int, workers: int | None = None, desc: str = "",
                ) -> tuple[torch.Tensor, list[int]]:
    """Decode many images, in a process pool when there are enough of them.

    Returns (N, 3, size, size) uint8 and the indexes that could not be decoded. With `desc`,
    a progress bar of that name counts the images, a chunk at a time.
    """
    workers = workers or min(4, os.cpu_count() or 1)
    step = max(500, len(blobs) // (workers * 8))
    jobs = [(blobs[i:i + step], size) for i in range(0, len(blobs), step)] or [([], size)]
    bar = progress(total=len(blobs), desc=desc, unit="image", force=None if desc else False)
    with bar, contextlib.ExitStack() as stack:
        if len(blobs) < _PARALLEL_MIN or workers < 2:
            chunks = map(_decode_chunk, jobs)
        else:
            # fork is cheap and the workers touch only Pillow and numpy, not torch.
            context = multiprocessing.get_context("fork" if sys.platform == "linux"
                                                  else "spawn")
            pool = stack.enter_context(ProcessPoolExecutor(workers, mp_context=context))
            chunks = pool.map(_decode_chunk, jobs)
        results = []
        for (chunk, _), result in zip(jobs, chunks, strict=True):
            results.append(result)
            bar.update(len(chunk))
    arrays = np.concatenate([r[0] for r in results])
    failed = [i * step + j for i, r in enumerate(results) for j in r[1]]
    return torch.from_numpy(arrays).permute(0, 3, 1, 2).contiguous(), failed


def _is_image(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_SUFFIXES and not Path(name).name.startswith(".")


def _layout(paths: list[tuple[str, ...]]) -> tuple[int, bool]:
    """How many leading folders all files share (to skip), and whether train/test folders exist.

    `paths` are the parts of each image's path relative to the tree's root.
    """
    skip = 0
    while all(len(p) > skip + 2 for p in paths):
        heads = {p[skip] for p in paths}
        if len(heads) != 1 or next(iter(heads)).lower() in SPLIT_NAMES:
            break
        skip += 1
    heads = {p[skip].lower() for p in paths if len(p) > skip + 2}
    has_splits = "train" in heads and all(len(p) > skip + 2 for p in paths)
    return skip, has_splits


def _group(paths: list[tuple[str, ...]]) -> dict[str, list[tuple[int, str]]]:
    """Indexes of `paths` by split ('train', 'test' or 'all') with each file's class name."""
    if not paths:
        raise UserError("no image files found")
    skip, has_splits = _layout(paths)
    groups: dict[str, list[tuple[int, str]]] = {}
    for index, parts in enumerate(paths):
        rest = parts[skip:]
        if has_splits:
            split = SPLIT_NAMES.get(rest[0].lower())
            if split is None:
                continue  # a stray folder beside train/ and test/
            rest = rest[1:]
        else:
            split = "all"
        if len(rest) < 2:
            continue  # a file directly in the root has no class
        groups.setdefault(split, []).append((index, rest[0]))
    if not groups:
        raise UserError("no images inside class folders (expected ROOT/<class>/IMAGE or "
                        "ROOT/train/<class>/IMAGE)")
    return groups


def _limit(groups: dict[str, list[tuple[int, str]]], per_class: int | None,
           ) -> dict[str, list[tuple[int, str]]]:
    """The first `per_class` files of each class in each split (for quick looks and tests)."""
    if per_class is None:
        return groups
    limited = {}
    for split, items in groups.items():
        counts: dict[str, int] = {}
        kept = []
        for index, name in items:
            counts[name] = counts.get(name, 0) + 1
            if counts[name] <= per_class:
                kept.append((index, name))
        limited[split] = kept
    return limited


def _build(paths: list[tuple[str, ...]], read: Callable[[int], bytes], size: int,
           where: str, per_class: int | None = None) -> dict:
    groups = _limit(_group(paths), per_class)
    first = groups.get("train", groups.get("all"))
    if not first:
        raise UserError(f"{where} has test images but no train/ folder")
    classes = sorted({name for _, name in first})
    lookup = {name: i for i, name in enumerate(classes)}
    result: dict = {"classes": classes}
    for split, items in groups.items():
        unknown = sorted({name for _, name in items if name not in lookup})
        if unknown:
            raise UserError(f"{where}: classes {', '.join(unknown[:5])} appear in {split}/ "
                            "but not in train/")
        blobs = [read(index) for index, _ in progress(items, desc=f"read {split}/",
                                                      unit="image")]
        images, failed = decode_many(blobs, size, desc=f"decode {split}/")
        labels = torch.tensor([lookup[name] for _, name in items], dtype=torch.int64)
        if failed:
            names = ", ".join("/".join(paths[items[i][0]]) for i in failed[:3])
            print(f"warning: skipped {len(failed)} unreadable image(s) in {where}: {names}",
                  file=sys.stderr)
            keep = torch.ones(len(items), dtype=torch.bool)
            keep[failed] = False
            images, labels = images[keep], labels[keep]
        result[split] = (images, labels)
    return result


def list_folder(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and _is_image(p.name))


def read_image_folder(root: Path, size: int = 32, per_class: int | None = None) -> dict:
    files = list_folder(root)
    if not files:
        raise UserError(f"{root} holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    paths = [f.relative_to(root).parts for f in files]
    return _build(paths, lambda i: files[i].read_bytes(), size, str(root), per_class)


def read_image_tar(path: Path, size: int = 32, per_class: int | None = None) -> dict:
    """An image tree packed in a tar or tar.gz, read member by member in memory."""
    try:
        with tarfile.open(path, "r:*") as tar:
            blobs: list[bytes] = []
            paths: list[tuple[str, ...]] = []
            outside: list[str] = []
            for member in tar:  # streaming: a .tar.gz is read once, front to back
                if not member.isfile() or not _is_image(member.name):
                    continue
                handle = tar.extractfile(member)
                if handle is None:
                    continue
                parts = tuple(p for p in Path(member.name).parts if p not in ("", "."))
                if Path(member.name).is_absolute() or ".." in parts:
                    # A member outside the tree (`../x/y.png`, `/etc/x.png`) would otherwise
                    # become a class of its own and relabel the whole set.
                    outside.append(member.name)
                    continue
                blobs.append(handle.read())
                paths.append(parts)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise UserError(f"{path} is not a readable tar archive ({str(exc)[:100]})") from None
    if outside:
        print(f"warning: skipped {len(outside)} member(s) of {path} outside its tree: "
              f"{', '.join(outside[:3])}", file=sys.stderr)
    if not blobs:
        raise UserError(f"{path} holds no image files")
    return _build(paths, blobs.__getitem__, size, str(path), per_class)
