"""train / evaluate / predict through the command line on a tiny image folder."""

import json
import re

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.vision.colour_tree import COLOURS, write_colour_tree
from torchtutor.cli import main
from torchtutor.runtime.checkpoint import load_checkpoint
from torchtutor.runtime.progress import read_metrics


@pytest.fixture
def tiny_tree(tmp_path, monkeypatch):
    """root/train/<colour>/*.png and root/test/<colour>/*.png: noisy images of one hue."""
    monkeypatch.setenv("TORCHTUTOR_CACHE", str(tmp_path / "cache"))
    return write_colour_tree(tmp_path / "colours", train_per_class=12, test_per_class=4)


def assert_curves(run) -> None:
    """TensorBoard curves beside metrics.csv, one point per row, read with tensorboard."""
    events = EventAccumulator(str(run))
    events.Reload()
    assert {"loss/train", "accuracy/train", "accuracy/test", "lr", "images_per_s"} <= \
        set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("accuracy/test")] == \
        [int(r["step"]) for r in read_metrics(run / "metrics.csv")]


def _train(tree, out, *extra):
    return main(["vision", "train", "--data", str(tree), "--out", str(out), "--device", "cpu",
                 *extra])


def test_train_evaluate_predict(tiny_tree, tmp_path, capsys):
    run = tmp_path / "run"
    assert _train(tiny_tree, run, "--model", "tutorial", "--epochs", "3", "--lr", "0.01") == 0
    rows = read_metrics(run / "metrics.csv")
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert (run / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"   # as in a chat run
    assert_curves(run)
    config = json.loads((run / "config.json").read_text())
    assert (config["recipe"], config["batch_size"], config["momentum"]) == ("tutorial", 4, 0.9)
    capsys.readouterr()

    assert main(["vision", "evaluate", "--run", str(run), "--json", "--device", "cpu"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["per_class"]) == set(COLOURS)
    assert report["accuracy"] == pytest.approx(float(rows[-1]["test_accuracy"]), abs=1e-4)
    assert report["accuracy"] > 0.9  # colours are easy; an untrained net gets about 1/3
    assert (run / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png at all")
    good = [str(tiny_tree / "test" / name / "0.png") for name in COLOURS]
    code = main(["vision", "predict", "--run", str(run), good[0], str(bad),
                 str(tmp_path / "missing.jpg"), good[1], "--top-k", "2", "--device", "cpu"])
    out, err = capsys.readouterr()
    assert code == 1
    lines = out.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == [good[0], good[1]]
    assert lines[0].split(": ")[1].startswith("blue ") and lines[0].count("%") == 2
    assert f"error: {bad}: not an image" in err and "missing.jpg: no such file" in err

    # --json: one object per image, in order, errors included; floats rounded
    code = main(["vision", "predict", "--run", str(run), good[0], str(bad), "--json",
                 "--device", "cpu"])
    out, _ = capsys.readouterr()
    first, second = (json.loads(line) for line in out.splitlines())
    assert code == 1 and first["image"] == good[0] and first["top"][0]["class"] == "blue"
    assert second == {"image": str(bad), "error": "not an image Pillow can read"}
    assert main(["vision", "evaluate", "--run", str(run), "--json", "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    assert not re.search(r"\d\.\d{7,}", text), text[:200]   # no 0.47099998593330383

    # 0.1's checkpoint.pt is no longer read (CHANGELOG.md): a one-line error, not a traceback
    (run / "last.pt").rename(run / "checkpoint.pt")
    assert main(["vision", "evaluate", "--run", str(run), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "last.pt" in err


def test_resume_continues_exactly(tiny_tree, tmp_path, capsys):
    straight, resumed = tmp_path / "a", tmp_path / "b"
    assert _train(tiny_tree, straight, "--model", "tutorial", "--epochs", "2") == 0
    assert _train(tiny_tree, resumed, "--model", "tutorial", "--epochs", "1") == 0
    assert _train(tiny_tree, resumed, "--model", "tutorial") == 2  # refuses to overwrite
    assert _train(tiny_tree, resumed, "--model", "tutorial", "--epochs", "2", "--resume") == 0
    # --resume refuses options that contradict the run, in one line
    assert _train(tiny_tree, resumed, "--epochs", "3", "--lr", "0.5", "--resume") == 2
    assert "lr is 0.001 there, not 0.5" in capsys.readouterr().err
    a = load_checkpoint(straight / "last.pt")   # the name a chat run uses too
    b = load_checkpoint(resumed / "last.pt")
    assert a["step"] == b["step"] == 18
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    assert len(read_metrics(resumed / "metrics.csv")) == 2


def test_fast_model_with_time_budget(tiny_tree, tmp_path, capsys):
    run = tmp_path / "fast"
    assert _train(tiny_tree, run, "--model", "fast", "--batch-size", "8", "--epochs", "50",
                  "--time-budget", "0.5") == 0
    result = json.loads((run / "result.json").read_text())
    assert result["stopped_by_budget"] and result["steps"] < 50 * 4
    assert 0.0 <= result["test_accuracy"] <= 1.0
    state = load_checkpoint(run / "last.pt")
    assert state["finished"] and state["config"]["label_smoothing"] == 0.2
    capsys.readouterr()
    assert main(["vision", "predict", "--run", str(run), "--device", "cpu",
                 str(tiny_tree / "test" / "red" / "1.png")]) == 0
    assert capsys.readouterr().out.count("%") == 3


def test_fast_recipe_plans_epochs_from_budget(tiny_tree, tmp_path):
    run = tmp_path / "planned"
    assert _train(tiny_tree, run, "--model", "fast", "--batch-size", "8",
                  "--time-budget", "4") == 0
    assert_curves(run)
    config = json.loads((run / "config.json").read_text())
    result = json.loads((run / "result.json").read_text())
    assert config["epochs"] > 0 and config["plan_from_budget"]
    # The rate follows the clock too, so it has decayed by the time the budget runs out: at
    # the last step's start, the budget less one step (on a loaded machine a step of this
    # tiny model has taken up to 0.5 s of the 4, so the bound leaves room for that).
    last = read_metrics(run / "metrics.csv")[-1]
    assert float(last["lr"]) < 0.5 * config["lr"]
    assert result["stopped_by_budget"] or result["steps"] == round(config["epochs"] * 4)


def test_batch_larger_than_the_training_set_is_a_clear_error(tiny_tree, tmp_path, capsys):
    # 36 training images cannot fill one batch of 64: an epoch would have no step at all
    code = _train(tiny_tree, tmp_path / "run", "--model", "fast", "--epochs", "1",
                  "--batch-size", "64")
    err = capsys.readouterr().err
    assert code == 2 and "lower --batch-size" in err and "Traceback" not in err


def test_a_run_of_the_other_app_is_named_as_such(tiny_tree, tmp_path, capsys):
    from tests.chat.inference_helpers import tiny_run

    chat_run = tiny_run()
    capsys.readouterr()   # its training's output
    image = str(tiny_tree / "test" / "red" / "0.png")
    assert main(["vision", "predict", "--run", str(chat_run), image]) == 2
    assert capsys.readouterr().err == (f"error: {chat_run} is a chat run (from `chat train`), "
                                       "not a vision run; use `torchtutor chat talk/reply/"
                                       "evaluate --run` with it\n")
    run = tmp_path / "vision"
    assert _train(tiny_tree, run, "--model", "tutorial", "--epochs", "1") == 0
    capsys.readouterr()
    assert main(["chat", "reply", "--run", str(run), "hello"]) == 2
    assert capsys.readouterr().err.startswith(f"error: {run} is a vision run (from `vision "
                                              "train`), not a chat run")
