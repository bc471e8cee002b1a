"""Image-folder trees: the shared CIFAR-10 JPEG tarball, and odd formats, sizes and modes."""

import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from torchtutor.runtime.errors import UserError
from torchtutor.vision import data as data_module
from torchtutor.vision.data import channel_stats, load_data, random_crop_flip
from torchtutor.vision.folders import read_image_tar

CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                 "ship", "truck"]


@pytest.mark.slow
def test_reads_shared_cifar10_jpeg_tarball(shared_data):
    archive = shared_data / "cifar10" / "cifar10-jpeg.tar.gz"
    splits = read_image_tar(archive, per_class=3)
    assert splits["classes"] == CIFAR_CLASSES
    for split in ("train", "test"):
        images, labels = splits[split]
        assert images.shape == (30, 3, 32, 32) and images.dtype == torch.uint8
        assert torch.equal(labels.bincount(), torch.full((10,), 3))
        # Real photos, not blank decodes: every image has some spread of values.
        assert (images.float().flatten(1).std(1) > 5).all()
    with tarfile.open(archive) as tar:
        member = next(m for m in tar if m.name.endswith(".jpg") and "/test/airplane/" in m.name)
        expected = np.array(Image.open(tar.extractfile(member)).convert("RGB"))
    assert torch.equal(splits["test"][0][0].permute(1, 2, 0), torch.from_numpy(expected))


def _tree(root, classes=("circle", "square"), per_class=6):
    """Images in several formats, sizes and modes."""
    rng = np.random.default_rng(0)
    for c, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (40 + i, 50, 3), dtype=np.uint8)
            pixels[..., c] = 255
            img = Image.fromarray(pixels)
            kind = i % 4
            if kind == 0:
                img.save(folder / f"{i}.png")
            elif kind == 1:
                img.convert("L").save(folder / f"{i}.jpg")
            elif kind == 2:
                img.convert("RGBA").save(folder / f"{i}.PNG")
            else:
                img.convert("P").save(folder / f"{i}.gif")
    (root / "notes.txt").write_text("not an image")


def test_single_tree_split_by_fraction(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHTUTOR_CACHE", str(tmp_path / "cache"))
    _tree(tmp_path / "shapes")
    (tmp_path / "shapes" / "square" / "broken.png").write_bytes(b"\x89PNG not really")
    data = load_data(str(tmp_path / "shapes"), valid_fraction=0.34, seed=1)
    assert data.classes == ["circle", "square"]
    assert data.train_images.shape[1:] == (3, 32, 32)
    assert len(data.train_labels) + len(data.test_labels) == 12  # the broken file is skipped
    assert sorted(data.test_labels.tolist()) == [0, 0, 1, 1]  # stratified
    # The second load comes from the cache, not from decoding again.
    monkeypatch.setattr(data_module, "_read_source", lambda path: pytest.fail("decoded twice"))
    again = load_data(str(tmp_path / "shapes"), valid_fraction=0.34, seed=1)
    assert torch.equal(again.test_images, data.test_images)


def test_train_test_tree_inside_a_tar(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHTUTOR_CACHE", str(tmp_path / "cache"))
    _tree(tmp_path / "top" / "train", per_class=4)
    _tree(tmp_path / "top" / "test", per_class=2)
    archive = tmp_path / "tree.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(tmp_path / "top", arcname="top")
    data = load_data(str(archive))
    assert (len(data.train_labels), len(data.test_labels)) == (8, 4)
    assert data.test_labels.tolist() == [0, 0, 1, 1]


def test_empty_or_wrong_data_is_a_user_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHTUTOR_CACHE", str(tmp_path / "cache"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no image files"):
        load_data(str(tmp_path / "empty"))
    with pytest.raises(UserError, match="does not exist"):
        load_data(str(tmp_path / "missing"))
    (tmp_path / "file.bin").write_bytes(b"plain bytes")
    with pytest.raises(UserError, match="neither a folder nor"):
        load_data(str(tmp_path / "file.bin"))


def test_augmentation_and_stats():
    images = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    out = random_crop_flip(images, pad=2, generator=torch.Generator().manual_seed(0))
    assert out.shape == images.shape
    # A crop of a reflected pad keeps every row a run of consecutive columns, maybe mirrored.
    for n in range(2):
        row = out[n, 0, 4]
        step = (row[1:] - row[:-1]).abs()
        assert ((step == 1) | (step == 0)).all()
    flat = torch.full((4, 3, 2, 2), 51, dtype=torch.uint8)
    mean, std = channel_stats(flat)
    # A blank channel's std is taken as one grey level, so normalizing it gives 0, not NaN.
    assert mean == pytest.approx([0.2] * 3) and std == pytest.approx([1 / 255] * 3)
