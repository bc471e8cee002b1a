"""The CIFAR-10 python-format reader, on small archives written here in the official layout."""

import io
import os
import pickle
import tarfile

import numpy as np
import pytest
import torch

from torchtutor.runtime.errors import UserError
from torchtutor.vision import cifar
from torchtutor.vision.data import load_data

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
           "truck"]


def _batch(rng: np.random.Generator, n: int, name: str) -> tuple[bytes, np.ndarray, list[int]]:
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, 10, size=n)]
    # As the official files: a dict with bytes keys, pickled at protocol 2.
    payload = {b"batch_label": name.encode(), b"labels": labels, b"data": data,
               b"filenames": [f"img_{i}.png".encode() for i in range(n)]}
    return pickle.dumps(payload, protocol=2), data, labels


def write_archive(path, rng, per_batch=6, extra: dict | None = None):
    """A cifar-10-python.tar.gz look-alike; returns the arrays written."""
    written = {}
    with tarfile.open(path, "w:gz") as tar:
        def add(name, blob):
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
        meta = {b"label_names": [c.encode() for c in CLASSES], b"num_vis": 3072,
                b"num_cases_per_batch": per_batch}
        add("batches.meta", pickle.dumps(meta, protocol=2))
        for name in cifar.TRAIN_BATCHES + [cifar.TEST_BATCH]:
            blob, data, labels = _batch(rng, per_batch, name)
            written[name] = (data, labels)
            add(name, (extra or {}).get(name, blob))
        add("readme.html", b"<html></html>")
    return written


def test_reads_official_format_archive(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHTUTOR_CACHE", str(tmp_path / "cache"))
    archive = tmp_path / "cifar-10-python.tar.gz"
    written = write_archive(archive, np.random.default_rng(0))
    data = load_data(str(archive))
    assert data.classes == CLASSES
    assert data.train_images.shape == (30, 3, 32, 32) and data.train_images.dtype == torch.uint8
    assert data.test_images.shape == (6, 3, 32, 32)
    # Row layout: 1024 red, then green, then blue values, each row-major.
    first, first_labels = written["data_batch_1"]
    assert torch.equal(data.train_images[0, 0].flatten(), torch.from_numpy(first[0, :1024]))
    assert torch.equal(data.train_images[0, 2, 31], torch.from_numpy(first[0, -32:]))
    last, last_labels = written["data_batch_5"]
    assert data.train_labels[-6:].tolist() == last_labels
    assert data.train_labels[:6].tolist() == first_labels
    assert data.test_labels.tolist() == written["test_batch"][1]


def test_reads_extracted_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHTUTOR_CACHE", str(tmp_path / "cache"))
    archive = tmp_path / "c.tar.gz"
    written = write_archive(archive, np.random.default_rng(1), per_batch=4)
    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path / "x", filter="data")
    data = load_data(str(tmp_path / "x"))  # finds cifar-10-batches-py/ inside
    assert len(data.train_labels) == 20
    assert torch.equal(data.test_images.reshape(4, -1),
                       torch.from_numpy(written["test_batch"][0]))


def test_refuses_a_pickle_that_runs_code(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHTUTOR_CACHE", str(tmp_path / "cache"))

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo owned > " + str(tmp_path / "owned"),))
    archive = tmp_path / "evil.tar.gz"
    write_archive(archive, np.random.default_rng(2), per_batch=2,
                  extra={"data_batch_3": pickle.dumps({b"data": Evil()}, protocol=2)})
    with pytest.raises(UserError, match="refusing to load"):
        load_data(str(archive))
    assert not (tmp_path / "owned").exists()


def test_truncated_archive_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHTUTOR_CACHE", str(tmp_path / "cache"))
    archive = tmp_path / "c.tar.gz"
    write_archive(archive, np.random.default_rng(3), per_batch=50)
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(UserError):
        load_data(str(cut))


def test_download_uses_verified_cache(tmp_path, monkeypatch):
    """'cifar10' reads the cached archive when its sha256 matches, without the network."""
    monkeypatch.setenv("TORCHTUTOR_CACHE", str(tmp_path))
    archive = tmp_path / cifar.CIFAR10_FILENAME
    write_archive(archive, np.random.default_rng(4), per_batch=2)
    from torchtutor.runtime.download import sha256_of
    monkeypatch.setattr(cifar, "CIFAR10_SHA256", sha256_of(archive))
    assert len(load_data("cifar10").train_labels) == 10
    # A copy that fails the check is refetched; with no network that is a clear error.
    monkeypatch.setattr(cifar, "CIFAR10_SHA256", "0" * 64)
    monkeypatch.setattr(cifar, "CIFAR10_URL", "http://127.0.0.1:9/none.tar.gz")
    with pytest.raises(UserError, match="--data PATH"):
        load_data("cifar10")
