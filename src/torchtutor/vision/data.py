"""Data for the classifier: find and decode a data set once, then serve it from memory.

`load_data(spec)` accepts 'cifar10' (the cached official download), a CIFAR-10 archive or
extracted folder, an image-folder tree, or a tar/tar.gz of one. Decoded tensors are cached in
`cache_dir()/vision/`, keyed by the source's path, sizes and modification times, so the second
run starts in a second. Two ways to iterate: `ImageDataset` for `DataLoader` (the notes' way)
and `DeviceBatches`, which keeps the whole set on the device and augments there.
"""

import hashlib
import sys
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from torchtutor.runtime.checkpoint import load_checkpoint, save_checkpoint
from torchtutor.runtime.download import cache_dir
from torchtutor.runtime.errors import UserError
from torchtutor.vision import cifar, folders

IMAGE_SIZE = 32
_CACHE_VERSION = 1


@dataclass
class ImageData:
    """uint8 images (N, 3, H, W) and int64 labels for both splits, with the class names."""

    classes: list[str]
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    source: str


def _fingerprint(path: Path) -> str:
    """Changes whenever a file under `path` is added, removed, resized or touched."""
    digest = hashlib.sha256(f"v{_CACHE_VERSION}:{IMAGE_SIZE}:{path.resolve()}".encode())
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        stat = file.stat()
        digest.update(f"{file}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:24]


def _read_source(path: Path) -> dict:
    """Split dict {'classes', 'train', and 'test' or 'all'} from whatever `path` is."""
    if path.is_dir():
        batches = cifar.is_cifar_folder(path)
        if batches is not None:
            return cifar.read_cifar_folder(batches)
        return folders.read_image_folder(path, IMAGE_SIZE)
    if not tarfile.is_tarfile(path):
        raise UserError(f"{path} is neither a folder nor a tar/tar.gz archive")
    try:
        with tarfile.open(path, "r:*") as tar:
            # The CIFAR batches sit at the front of the official archive; look only there.
            names = [Path(m.name).name for _, m in zip(range(20), tar, strict=False)]
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise UserError(f"{path} is not a readable tar archive ({str(exc)[:100]})") from None
    if cifar.TRAIN_BATCHES[0] in names:
        return cifar.read_cifar_archive(path)
    return folders.read_image_tar(path, IMAGE_SIZE)


def read_cached(path: Path) -> dict:
    """`_read_source(path)`, decoded once and then loaded from the cache."""
    target = cache_dir() / "vision" / f"{_fingerprint(path)}.pt"
    if target.exists():
        try:
            return load_checkpoint(target, required_keys=("classes",))
        except UserError:
            pass  # a damaged cache entry: decode again
    print(f"decoding {path} (once; cached in {target.parent})", file=sys.stderr)
    splits = _read_source(path)
    try:
        save_checkpoint(target, splits)
    except UserError as exc:  # a read-only or full cache is not a reason to fail
        print(f"warning: could not cache decoded images ({exc})", file=sys.stderr)
    return splits


def split_off(images: torch.Tensor, labels: torch.Tensor, fraction: float, seed: int,
              ) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """Hold out `fraction` of each class (at least one image where a class has two or more)."""
    generator = torch.Generator().manual_seed(seed)
    keep, held = [], []
    for c in labels.unique():
        idx = (labels == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=generator)]
        n = round(len(idx) * fraction)
        n = max(n, 1) if len(idx) > 1 and fraction > 0 else n
        held.append(idx[:n])
        keep.append(idx[n:])
    keep_idx, held_idx = torch.cat(keep).sort().values, torch.cat(held).sort().values
    return (images[keep_idx], labels[keep_idx]), (images[held_idx], labels[held_idx])


def resolve_source(spec: str) -> Path:
    if spec.strip().lower() in ("cifar10", "cifar-10"):
        return cifar.download_cifar10()
    path = Path(spec).expanduser()
    if not path.exists():
        raise UserError(f"data {spec!r} does not exist (use 'cifar10' or a path)")
    return path


def load_data(spec: str, valid_fraction: float = 0.1, seed: int = 0) -> ImageData:
    """Load a data set by name or path; a tree without a test split is split by class."""
    path = resolve_source(spec)
    splits = read_cached(path)
    train = splits.get("train") or splits.get("all")
    test = splits.get("test")
    if len(train[1]) == 0:   # every file unreadable: nothing to split or to train on
        raise UserError(f"{spec} holds no readable image for training")
    if test is None:
        if valid_fraction <= 0:
            raise UserError(f"{spec} has no test/ folder; give --valid-fraction above 0")
        train, test = split_off(*train, valid_fraction, seed)
    if len(train[1]) == 0 or len(test[1]) == 0:
        raise UserError(f"{spec} leaves an empty train or test split")
    return ImageData(list(splits["classes"]), train[0], train[1], test[0], test[1],
                     str(path))


def channel_stats(images: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images, on the 0..1 scale.

    A channel with one value in every pixel (a blank channel) has a std of 0, and dividing by
    it made every input NaN; its std is taken as one grey level instead, which maps it to 0.
    """
    x = images.to(torch.float64).div_(255).transpose(0, 1).reshape(images.shape[1], -1)
    return x.mean(1).tolist(), x.std(1).clamp(min=1 / 255).tolist()


def pixel_stats(mean: list[float], std: list[float], device: torch.device,
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """The 0..1-scale statistics as (1, C, 1, 1) tensors on the 0..255 scale, on `device`."""
    m = torch.tensor(mean, device=device).view(1, -1, 1, 1) * 255
    s = torch.tensor(std, device=device).view(1, -1, 1, 1) * 255
    return m, s


def normalize(images: torch.Tensor, mean: list[float] | torch.Tensor,
              std: list[float] | torch.Tensor, dtype: torch.dtype = torch.float32,
              ) -> torch.Tensor:
    """uint8 (N, C, H, W) -> normalized float, on the images' device.

    `mean` and `std` are 0..1-scale lists, or `pixel_stats` tensors already on the device
    (making those from lists copies them to the device, which waits for a GPU to catch up).
    """
    if not isinstance(mean, torch.Tensor):
        mean, std = pixel_stats(mean, std, images.device)
    return ((images.float() - mean) / std).to(dtype)


class ImageDataset(Dataset):
    """(normalized image, label) pairs for a `DataLoader`, as the notes build them."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean: list[float],
                 std: list[float]):
        # Normalizing everything up front keeps __getitem__ a pair of index operations.
        self.images = normalize(images, mean, std)
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.labels[index])


def draw_crop_flip(n: int, pad: int, generator: torch.Generator | None,
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Random (row, column) offsets in 0..2*pad, shape (2, n), and flip flags, shape (n,)."""
    shifts = torch.randint(0, 2 * pad + 1, (2, n), generator=generator)
    return shifts, torch.rand(n, generator=generator) < 0.5


def random_crop_flip(images: torch.Tensor, pad: int, generator: torch.Generator | None,
                     ) -> torch.Tensor:
    """Random translation (crop of a reflection-padded image) and horizontal flip, as tensor ops.

    Works on a whole batch at once on whatever device `images` lives on.
    """
    shifts, flips = draw_crop_flip(len(images), pad, generator)
    return crop_flip(images, pad, shifts.to(images.device), flips.to(images.device))


def crop_flip(images: torch.Tensor, pad: int, shifts: torch.Tensor, flips: torch.Tensor,
              ) -> torch.Tensor:
    """Apply `draw_crop_flip`'s offsets and flips (already on the images' device)."""
    n, c, h, w = images.shape
    device = images.device
    out = images
    if pad > 0:
        padded = torch.nn.functional.pad(images.float() if images.dtype == torch.uint8
                                         else images, (pad,) * 4, mode="reflect")
        rows = (shifts[0].view(n, 1) + torch.arange(h, device=device)).view(n, 1, h, 1)
        cols = (shifts[1].view(n, 1) + torch.arange(w, device=device)).view(n, 1, 1, w)
        batch = torch.arange(n, device=device).view(n, 1, 1, 1)
        chans = torch.arange(c, device=device).view(1, c, 1, 1)
        out = padded[batch, chans, rows, cols].to(images.dtype)
    return torch.where(flips.view(n, 1, 1, 1), out.flip(3), out)


class DeviceBatches:
    """Shuffled, augmented, normalized batches cut from tensors held on the device.

    The uint8 images move to the device once; each batch is augmented there (the airbench way),
    so no worker processes or per-image Python run during training. An epoch's order and
    augmentation are drawn on the CPU at its start and copied over once: a copy to a GPU waits
    for the queued work, so copying per batch would stall the GPU every step.

    Under torchrun (`world_size` > 1) every rank draws the same order from an identically
    seeded generator, cuts it into global batches of `batch_size * world_size` and keeps its
    own contiguous part, so the ranks' batches together are exactly one process's global batch.
    The augmentation is drawn for the whole global batch on every rank for the same reason (it
    also keeps the ranks' generators in step), then each rank keeps its part.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean: list[float],
                 std: list[float], batch_size: int, device: torch.device, augment: bool,
                 shuffle: bool, drop_last: bool = False, pad: int = 2,
                 dtype: torch.dtype = torch.float32, channels_last: bool = False,
                 seed: int = 0, rank: int = 0, world_size: int = 1):
        self.images = images.to(device)
        self.labels = labels.to(device)
        self.mean, self.std = mean, std
        self.pixel_mean, self.pixel_std = pixel_stats(mean, std, device)
        self.batch_size, self.device = batch_size, device
        self.augment, self.shuffle, self.drop_last, self.pad = augment, shuffle, drop_last, pad
        self.dtype, self.channels_last = dtype, channels_last
        self.generator = torch.Generator().manual_seed(seed)
        self.rank, self.world_size = rank, world_size

    def __len__(self) -> int:
        n, span = len(self.labels), self.batch_size * self.world_size
        return n // span if self.drop_last else -(-n // span)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.epoch(0)

    def epoch(self, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One pass in a fresh order; batches before `start` are skipped (for a resume)."""
        n = len(self.labels)
        order = (torch.randperm(n, generator=self.generator) if self.shuffle
                 else torch.arange(n)).to(self.device)
        if self.augment:  # drawn for all n, so a resumed epoch replays the same ones
            shifts, flips = draw_crop_flip(n, self.pad, self.generator)
            shifts, flips = shifts.to(self.device), flips.to(self.device)
        span, world = self.batch_size * self.world_size, self.world_size
        for b in range(start, len(self)):
            size = min(span, n - b * span)
            size -= size % world  # a short last batch splits evenly
            if size <= 0:
                break
            positions = slice(b * span, b * span + size)
            idx = order[positions]
            x = self.images[idx]
            if self.augment:
                x = crop_flip(x, self.pad, shifts[:, positions], flips[positions])
            part = slice(self.rank * len(idx) // world, (self.rank + 1) * len(idx) // world)
            x = normalize(x[part], self.pixel_mean, self.pixel_std, self.dtype)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, self.labels[idx[part]]

