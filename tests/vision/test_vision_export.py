"""`vision export` and `vision predict --exported`: the exported file's top-k equal the run's
on the test images, for each format; a file that is not an export, or an export that does not
match torch, is a one-line error."""

import pytest

from tests.vision.colour_tree import COLOURS, write_colour_tree
from torchtutor.cli import main
from torchtutor.vision import export as vision_export
from torchtutor.vision.classifier import Classifier
from torchtutor.vision.export import ExportedClassifier
from torchtutor.vision.predict import predict_files


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tutorial-net run and a fast-net run (TTA with shifts, float32) on coloured images."""
    root = tmp_path_factory.mktemp("export")
    tree = write_colour_tree(root / "colours", train_per_class=12, test_per_class=4)
    common = ["vision", "train", "--data", str(tree), "--device", "cpu", "--precision", "fp32"]
    assert main([*common, "--out", str(root / "tutorial"), "--model", "tutorial",
                 "--epochs", "2", "--lr", "0.01"]) == 0
    assert main([*common, "--out", str(root / "fast"), "--model", "fast", "--batch-size", "8",
                 "--epochs", "2"]) == 0
    images = sorted(str(p) for p in (tree / "test").rglob("*.png"))
    return root, images


@pytest.mark.parametrize("model,fmt,suffix", [("tutorial", "aoti", ".pt2"),
                                              ("fast", "onnx", ".onnx"),
                                              ("fast", "torchscript", ".pt")])
def test_exported_predictions_equal_the_runs(runs, model, fmt, suffix, capsys):
    root, images = runs
    run, out = root / model, root / f"{model}-{fmt}{suffix}"
    assert main(["vision", "export", "--run", str(run), "--out", str(out),
                 "--format", fmt]) == 0
    assert f"wrote {out}" in capsys.readouterr().out

    classifier = Classifier.load(run, "cpu")
    loaded = classifier.run
    if model == "fast":
        assert loaded.tta and loaded.tta_translate   # the 6-pass TTA is inside the graph
    want = predict_files(classifier.logits, classifier.classes, images, 3)
    bot = ExportedClassifier(out)
    got = predict_files(bot.logits, bot.classes, images, 3)
    assert bot.classes == sorted(COLOURS) == loaded.classes
    for (path, top, error), (_, top_want, _) in zip(got, want, strict=True):
        assert error is None
        assert [name for name, _ in top] == [name for name, _ in top_want], path
        assert [p for _, p in top] == pytest.approx([p for _, p in top_want], abs=1e-5)

    assert main(["vision", "predict", "--run", str(run), *images, "--device", "cpu"]) == 0
    from_run = capsys.readouterr().out
    assert main(["vision", "predict", "--exported", str(out), *images]) == 0
    assert capsys.readouterr().out == from_run


def test_an_export_that_does_not_match_torch_is_refused(runs, monkeypatch, capsys):
    root, _ = runs
    out = root / "refused.pt"
    out.write_bytes(b"")   # an empty file in the way: replaceable only if it were an export
    assert main(["vision", "export", "--run", str(root / "tutorial"), "--out", str(out),
                 "--format", "torchscript"]) == 2
    assert "not a file this command wrote" in capsys.readouterr().err
    out.unlink()
    monkeypatch.setattr(vision_export, "TOLERANCE", 0.0)   # nothing can be that close
    assert main(["vision", "export", "--run", str(root / "tutorial"), "--out", str(out),
                 "--format", "torchscript"]) == 2
    err = capsys.readouterr().err
    assert "does not match torch" in err and len(err.strip().splitlines()) == 1
    assert not out.exists() and not [p for p in root.iterdir() if p.name.startswith(".refused")]


def test_predict_refuses_a_file_that_is_not_an_export(runs, tmp_path, capsys):
    _, images = runs
    for name, data in (("x.pt2", b"PK\x03\x04 not really a zip"), ("y.onnx", b"\x00" * 64)):
        path = tmp_path / name
        path.write_bytes(data)
        assert main(["vision", "predict", "--exported", str(path), images[0]]) == 2
        err = capsys.readouterr().err.strip()
        assert err == f"error: --exported {path} is not a file `torchtutor vision export` wrote"
    assert main(["vision", "predict", "--exported", str(tmp_path / "none.pt2"), images[0]]) == 2
    assert "no such file" in capsys.readouterr().err
