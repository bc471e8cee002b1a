"""CIFAR-10 in its official python format: the download, a local archive, or an extracted folder.

The batches are Python 2 pickles of dicts holding a (10000, 3072) uint8 array and a label list.
Plain `pickle.load` would run whatever a tampered file asks for, so `_SafeUnpickler` allows
only the few callables numpy needs to rebuild an array and refuses everything else.
"""

import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import torch

from torchtutor.runtime.download import cache_dir, cached_download
from torchtutor.runtime.errors import UserError

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
# The page publishes md5 c58f30108f718f92721af3b95e74349a; this sha256 of the same
# 170,498,071-byte file is the one Keras and others pin (their records give both digests).
CIFAR10_SHA256 = "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"
CIFAR10_FILENAME = "cifar-10-python.tar.gz"
TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_BATCH = "test_batch"
META = "batches.meta"

# What an ndarray pickle may name, under numpy 1 and numpy 2 module paths.
_ALLOWED = {(core, name) for core in ("numpy.core.multiarray", "numpy._core.multiarray")
            for name in ("_reconstruct", "scalar")} | {("numpy", "ndarray"), ("numpy", "dtype"),
                                                         ("_codecs", "encode")}


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """What Python 3 protocol-2 pickles call to rebuild bytes; only the latin-1 case is allowed."""
    if encoding.replace("-", "").lower() != "latin1":
        raise pickle.UnpicklingError(f"refusing to decode with {encoding!r}")
    return text.encode("latin-1")


def _numpy_callable(module: str, name: str):
    if module == "_codecs":
        return _latin1_encode
    if module == "numpy":
        return getattr(np, name)
    core = getattr(np, "_core", None)  # numpy 2 moved numpy.core to numpy._core
    multiarray = core.multiarray if core is not None else np.core.multiarray
    return getattr(multiarray, name)


class _SafeUnpickler(pickle.Unpickler):
    """Rebuilds numpy arrays, lists, dicts, strings and numbers; nothing else."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return _numpy_callable(module, name)


def safe_unpickle(data: bytes, where: str) -> dict:
    try:
        obj = _SafeUnpickler(io.BytesIO(data), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            IndexError) as exc:
        raise UserError(f"{where} is not a readable CIFAR batch ({str(exc)[:100]})") from None
    if not isinstance(obj, dict):
        raise UserError(f"{where} is not a readable CIFAR batch (not a dict)")
    # Python 2 pickles read with encoding="bytes" have bytes keys; accept str keys too.
    return {k.decode("latin-1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _batch_arrays(batch: dict, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    data, labels = batch.get("data"), batch.get("labels")
    if not isinstance(data, np.ndarray) or labels is None:
        raise UserError(f"{where} lacks 'data' or 'labels'")
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise UserError(f"{where} holds data of shape {data.shape}, not (N, 3072) uint8")
    labels = np.asarray(labels, dtype=np.int64)
    if labels.shape != (data.shape[0],):
        raise UserError(f"{where} has {labels.shape[0]} labels for {data.shape[0]} images")
    images = torch.from_numpy(data.reshape(-1, 3, 32, 32).copy())  # rows are R, G, B planes
    return images, torch.from_numpy(labels)


def _class_names(meta: dict | None) -> list[str]:
    names = (meta or {}).get("label_names")
    if not names:
        return ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                "ship", "truck"]
    return [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names]


def _assemble(read, where: str) -> dict:
    """`read(name)` returns a batch file's bytes or None; build the split dict."""
    parts = []
    for name in TRAIN_BATCHES + [TEST_BATCH]:
        data = read(name)
        if data is None:
            raise UserError(f"{where} has no {name}; is it the CIFAR-10 python version?")
        parts.append(_batch_arrays(safe_unpickle(data, f"{where}:{name}"), f"{where}:{name}"))
    meta_bytes = read(META)
    meta = safe_unpickle(meta_bytes, f"{where}:{META}") if meta_bytes is not None else None
    train_x = torch.cat([p[0] for p in parts[:-1]])
    train_y = torch.cat([p[1] for p in parts[:-1]])
    classes = _class_names(meta)
    for split_labels in (train_y, parts[-1][1]):
        if split_labels.numel() and (split_labels.min() < 0 or
                                     split_labels.max() >= len(classes)):
            raise UserError(f"{where} has labels outside 0..{len(classes) - 1}")
    return {"classes": classes, "train": (train_x, train_y), "test": parts[-1]}


def is_cifar_folder(path: Path) -> Path | None:
    """The folder holding the batches (`path` or `path/cifar-10-batches-py`), or None."""
    for folder in (path, path / "cifar-10-batches-py"):
        if (folder / TRAIN_BATCHES[0]).is_file():
            return folder
    return None


def cifar_member_names(tar: tarfile.TarFile) -> dict[str, tarfile.TarInfo]:
    """Batch-file members of an archive, keyed by base name (empty if it is not CIFAR)."""
    wanted = set(TRAIN_BATCHES + [TEST_BATCH, META])
    return {Path(m.name).name: m for m in tar.getmembers()
            if m.isfile() and Path(m.name).name in wanted}


def read_cifar_folder(folder: Path) -> dict:
    def read(name: str) -> bytes | None:
        file = folder / name
        return file.read_bytes() if file.is_file() else None
    return _assemble(read, str(folder))


def read_cifar_archive(path: str | os.PathLike) -> dict:
    """Read the batches straight out of the .tar.gz, without extracting to disk."""
    try:
        with tarfile.open(path, "r:*") as tar:
            members = cifar_member_names(tar)

            def read(name: str) -> bytes | None:
                member = members.get(name)
                if member is None:
                    return None
                handle = tar.extractfile(member)
                return handle.read() if handle is not None else None
            return _assemble(read, str(path))
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise UserError(f"{path} is not a readable tar archive ({str(exc)[:100]})") from None


def download_cifar10() -> Path:
    """The official archive from the cache, downloading and checking it on first use."""
    hint = ("download it yourself and pass --data PATH (the .tar.gz or its extracted folder); "
            f"torchtutor looks for {cache_dir() / CIFAR10_FILENAME}")
    return cached_download(CIFAR10_URL, CIFAR10_SHA256, CIFAR10_FILENAME, hint)
