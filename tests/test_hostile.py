"""Hostile input to the command line: one table of what a user can type or a file can hold.

Each row runs `torchtutor ...` in-process and asserts the exit code, that stderr holds one
line (no traceback), the words that line must contain, and that no file under the test's
folders (the run folders included) was lost or changed. Faults a test cannot cause for real
without privileges (a full disk, a read-only file system, a folder it may not read) are
injected at the lowest call and go through the same code as the real errors.
"""

from __future__ import annotations

import errno
import hashlib
import io
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.chat.serve_support import TINY_PAIRS
from tests.vision.colour_tree import write_colour_tree
from torchtutor.cli import main
from torchtutor.runtime import files
from torchtutor.runtime.checkpoint import load_checkpoint, save_checkpoint
from torchtutor.vision.inference import CHECKPOINT_NAME

TRAIN = ["--device", "cpu", "--hidden-size", "16", "--min-count", "1", "--batch-size", "8",
         "--no-backward"]


# --- fixtures: a small corpus, chat run, vision tree and run, and damaged copies -------------

@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    corpus = root / "pairs.tsv"
    corpus.write_text("".join(f"{q}\t{r}\n" for q, r in TINY_PAIRS * 4), encoding="utf-8")
    run = root / "chat-run"
    assert main(["chat", "train", "--data", str(corpus), "--out", str(run), "--steps", "4",
                 *TRAIN]) == 0
    tree = write_colour_tree(root / "colours", train_per_class=8, test_per_class=2)
    vrun = root / "vision-run"
    assert main(["vision", "train", "--data", str(tree), "--out", str(vrun), "--model",
                 "tutorial", "--epochs", "1", "--device", "cpu"]) == 0
    damaged = {name: _damaged_copy(run, root / f"chat-{name}", name)
               for name in ("nan", "types", "flip")}
    notes = root / "notes.txt"
    notes.write_text("my notes, not a checkpoint\n")
    return {"root": root, "corpus": corpus, "run": run, "tree": tree, "vrun": vrun,
            "notes": notes, **{f"{k}run": v for k, v in damaged.items()}}


def without_progress(err: str) -> str:
    """stderr less the training bar's lines (a busy machine makes a step slow enough for the
    bar to print; it is progress, not an error)."""
    return "\n".join(line for line in err.strip().splitlines() if not line.startswith("train:"))


def _damaged_copy(run: Path, to: Path, how: str) -> Path:
    shutil.copytree(run, to, ignore=shutil.ignore_patterns("backward"))
    for name in ("best.pt", "last.pt"):
        path = to / name
        if not path.exists():
            continue
        state = load_checkpoint(path)
        if how == "nan":   # as an older torchtutor saved a diverged run: no checksum, NaNs
            next(iter(state["model"].values())).fill_(float("nan"))
            torch.save(state, path)
        elif how == "types":
            state["model"] = [1, 2, 3]
            state["step"] = "four"
            save_checkpoint(path, state)
        else:   # one flipped bit in the middle of the tensor data
            data = bytearray(path.read_bytes())
            data[len(data) // 2] ^= 0x04
            path.write_bytes(bytes(data))
    return to


def snapshot(*folders: Path) -> dict[str, str]:
    found = {}
    for folder in folders:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and "cache" not in path.parts:
                found[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


# --- the table ----------------------------------------------------------------------------

CHAT_TRAIN = ["chat", "train", "--data", "{corpus}", "--out", "{root}/new-run", *TRAIN]
VISION_TRAIN = ["vision", "train", "--data", "{tree}", "--out", "{root}/new-vision",
                "--model", "tutorial", "--device", "cpu"]
SERVE = ["chat", "serve", "--run", "{run}", "--port", "0", "--device", "cpu"]

CASES = [
    # (id, argv, exit code, words the one line holds)
    ("train-time-budget-nan", CHAT_TRAIN + ["--time-budget", "nan"], 2, "--time-budget"),
    ("train-time-budget-inf", CHAT_TRAIN + ["--time-budget", "inf"], 2, "--time-budget"),
    ("train-time-budget-neg", CHAT_TRAIN + ["--time-budget", "-1"], 2, "--time-budget"),
    ("train-epochs-nan", CHAT_TRAIN + ["--epochs", "nan"], 2, "--epochs"),
    ("train-epochs-inf", CHAT_TRAIN + ["--epochs", "inf"], 2, "--epochs"),
    ("train-epochs-zero", CHAT_TRAIN + ["--epochs", "0"], 2, "--epochs"),
    ("train-lr-nan", CHAT_TRAIN + ["--lr", "nan"], 2, "--lr"),
    ("train-lr-inf", CHAT_TRAIN + ["--lr", "inf"], 2, "--lr"),
    ("train-decoder-lr-ratio-nan", CHAT_TRAIN + ["--decoder-lr-ratio", "nan"], 2,
     "--decoder-lr-ratio"),
    ("train-clip-nan", CHAT_TRAIN + ["--clip", "nan"], 2, "--clip"),
    ("train-dropout-nan", CHAT_TRAIN + ["--dropout", "nan"], 2, "--dropout"),
    ("train-teacher-forcing-nan", CHAT_TRAIN + ["--teacher-forcing", "nan"], 2,
     "--teacher-forcing"),
    ("train-adam-beta2-nan", CHAT_TRAIN + ["--adam-beta2", "nan"], 2, "--adam-beta2"),
    ("train-warmup-negative", CHAT_TRAIN + ["--warmup-steps", "-3"], 2, "--warmup-steps"),
    ("train-seed-2**70", CHAT_TRAIN + ["--seed", str(2**70)], 2, "--seed"),
    ("train-out-is-a-file", CHAT_TRAIN[:4] + ["--out", "{notes}", *TRAIN, "--steps", "1"], 2,
     "is a file"),
    ("train-out-under-a-file", CHAT_TRAIN[:4] + ["--out", "{notes}/run", *TRAIN, "--steps",
                                                 "1"], 2, "is a file"),
    ("train-resume-wrong-types", ["chat", "train", "--out", "{typesrun}", "--resume",
                                  "--device", "cpu"], 2, "malformed"),
    ("train-resume-flipped-bit", ["chat", "train", "--out", "{fliprun}", "--resume",
                                  "--device", "cpu"], 2, "corrupt"),
    ("vision-lr-negative", VISION_TRAIN + ["--lr", "-1"], 2, "--lr"),
    ("vision-lr-nan", VISION_TRAIN + ["--lr", "nan"], 2, "--lr"),
    ("vision-time-budget-nan", VISION_TRAIN + ["--time-budget", "nan"], 2, "--time-budget"),
    ("vision-time-budget-inf", VISION_TRAIN + ["--time-budget", "inf"], 2, "--time-budget"),
    ("vision-time-budget-zero", VISION_TRAIN + ["--time-budget", "0"], 2, "--time-budget"),
    ("vision-time-budget-neg", VISION_TRAIN + ["--time-budget", "-1"], 2, "--time-budget"),
    ("vision-seed-2**70", VISION_TRAIN + ["--seed", str(2**70)], 2, "--seed"),
    ("vision-out-is-a-file", VISION_TRAIN[:4] + ["--out", "{notes}", "--model", "tutorial",
                                                 "--device", "cpu"], 2, "is a file"),
    ("serve-window-inf", SERVE + ["--batch-window-ms", "inf"], 2, "--batch-window-ms"),
    ("serve-window-nan", SERVE + ["--batch-window-ms", "nan"], 2, "--batch-window-ms"),
    ("serve-window-huge", SERVE + ["--batch-window-ms", "1e9"], 2, "--batch-window-ms"),
    ("serve-read-timeout-zero", SERVE + ["--read-timeout", "0"], 2, "--read-timeout"),
    ("export-out-is-a-folder", ["chat", "export", "--run", "{run}", "--out", "{root}"], 2,
     "is a folder"),
    ("export-over-an-unrelated-file", ["chat", "export", "--run", "{run}", "--out", "{notes}"],
     2, "not a file this command wrote"),
    ("attention-out-is-a-folder", ["chat", "attention", "--run", "{run}", "hello", "--out",
                                   "{root}"], 2, "is a folder"),
    ("reply-nan-checkpoint", ["chat", "reply", "--run", "{nanrun}", "--device", "cpu", "hi"],
     2, "NaN or infinite weights"),
    ("evaluate-nan-checkpoint", ["chat", "evaluate", "--run", "{nanrun}", "--device", "cpu"],
     2, "NaN or infinite weights"),
    ("export-nan-checkpoint", ["chat", "export", "--run", "{nanrun}", "--out",
                               "{root}/nan-bot.pt"], 2, "NaN or infinite weights"),
    ("reply-wrong-types", ["chat", "reply", "--run", "{typesrun}", "--device", "cpu", "hi"], 2,
     "malformed"),
    ("reply-flipped-bit", ["chat", "reply", "--run", "{fliprun}", "--device", "cpu", "hi"], 2,
     "corrupt"),
]


@pytest.mark.parametrize("argv, code, words", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_hostile_input(world, argv, code, words, capsys, monkeypatch):
    monkeypatch.setenv("TORCHTUTOR_CACHE", str(world["root"] / "cache"))
    values = {k: str(v) for k, v in world.items()}
    args = [a.format(**values) for a in argv]
    before = snapshot(world["root"])
    capsys.readouterr()
    assert main(args) == code
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert words in err, err
    assert snapshot(world["root"]) == before   # nothing lost, changed or half-written


# --- faults injected where the operating system would raise them ----------------------------

def _train_args(world, out: Path, *extra: str) -> list[str]:
    return ["chat", "train", "--data", str(world["corpus"]), "--out", str(out), *TRAIN,
            *extra]


@pytest.mark.parametrize("code, words", [(errno.ENOSPC, "no space left"),
                                         (errno.EROFS, "read-only")])
def test_a_full_disk_or_read_only_fs_mid_run_keeps_the_last_checkpoint(
        world, tmp_path, capsys, monkeypatch, code, words):
    real = files.tempfile.mkstemp
    saves = []

    def failing(*args, prefix="", **kwargs):
        if prefix.startswith(".last.pt."):
            saves.append(prefix)
            if len(saves) == 2:
                raise OSError(code, "injected")
        return real(*args, prefix=prefix, **kwargs)

    monkeypatch.setattr(files.tempfile, "mkstemp", failing)
    out = tmp_path / "run"
    assert main(_train_args(world, out, "--steps", "4", "--checkpoint-every", "2",
                            "--eval-every", "100")) == 2
    err = without_progress(capsys.readouterr().err)
    assert len(err.splitlines()) == 1 and words in err and "last.pt" in err, err
    assert load_checkpoint(out / "last.pt")["step"] == 2
    assert not list(out.glob(".*.tmp"))


def test_a_corpus_folder_without_read_permission(world, tmp_path, capsys, monkeypatch):
    # As for a folder without search permission (chmod 0): looking inside it raises EACCES.
    # (The tests may run as root, for whom chmod changes nothing, so the error is injected.)
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "movie_lines.txt").write_text("x")
    real_stat = Path.stat

    def stat(self, *args, **kwargs):
        if folder in self.parents:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_stat(self, *args, **kwargs)

    monkeypatch.setattr(Path, "stat", stat)
    argv = ["chat", "train", "--data", str(folder), "--out", str(tmp_path / "run"), *TRAIN,
            "--steps", "1"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "permission denied" in err, err


def test_nan_weights_mid_run_keep_the_last_finite_checkpoint_and_say_so(
        world, tmp_path, capsys, monkeypatch):
    import torchtutor.chat.train.loop as chat_train

    real = chat_train.train_step
    calls = []

    def poisoned(objective, *args, **kwargs):
        loss = real(objective, *args, **kwargs)
        calls.append(loss)
        if len(calls) == 3:   # the weights diverge in step 3
            with torch.no_grad():
                next(chat_train.ddp.unwrap(objective).model.parameters()).fill_(float("nan"))
        return loss

    monkeypatch.setattr(chat_train, "train_step", poisoned)
    out = tmp_path / "run"
    assert main(_train_args(world, out, "--steps", "6", "--checkpoint-every", "1",
                            "--eval-every", "100")) == 2
    err = without_progress(capsys.readouterr().err)
    assert len(err.splitlines()) == 1, err
    assert "NaN or infinite by step 3" in err and "from step 2" in err, err
    state = load_checkpoint(out / "last.pt")
    assert state["step"] == 2
    assert all(torch.isfinite(t).all() for t in state["model"].values())
    capsys.readouterr()
    assert main(["chat", "reply", "--run", str(out), "--device", "cpu", "hello"]) == 0


def test_vision_nan_weights_keep_the_last_finite_epoch(world, tmp_path, capsys, monkeypatch):
    from torchtutor.vision import train as vision_train

    real = vision_train.Trainer.train_step
    steps = []

    def poisoned(self, x, y, seconds=0.0):
        result = real(self, x, y, seconds)
        steps.append(1)
        if len(steps) == 8:   # in the second epoch (6 batches of 4 per epoch)
            with torch.no_grad():
                for p in self.model.parameters():
                    p.fill_(float("nan"))
        return result

    monkeypatch.setenv("TORCHTUTOR_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(vision_train.Trainer, "train_step", poisoned)
    out = tmp_path / "vrun"
    assert main(["vision", "train", "--data", str(world["tree"]), "--out", str(out),
                 "--model", "tutorial", "--epochs", "3", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "NaN or infinite by epoch 2" in err and "from epoch 1" in err, err
    state = load_checkpoint(out / CHECKPOINT_NAME)
    assert state["epoch"] == 1 and not (out / "result.json").exists()


# --- images: tar members outside the tree, decompression bombs ------------------------------

def _png(colour: tuple[int, int, int], size: tuple[int, int] = (32, 32)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def _bomb() -> bytes:
    buffer = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buffer, format="PNG")   # about 48 KB on disk
    return buffer.getvalue()


def test_a_tar_member_outside_the_tree_is_skipped_not_a_class(tmp_path, capsys):
    from torchtutor.vision.folders import read_image_tar

    archive = tmp_path / "data.tar"
    with tarfile.open(archive, "w") as tar:
        members = [(f"good/{split}/{name}/{i}.png", colour)
                   for split in ("train", "test") for name, colour in
                   (("cat", (200, 0, 0)), ("dog", (0, 0, 200))) for i in range(3)]
        members.append(("../x/y.png", (0, 200, 0)))
        for name, colour in members:
            data = _png(colour)
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    splits = read_image_tar(archive)
    assert splits["classes"] == ["cat", "dog"]
    assert len(splits["train"][1]) == 6 and len(splits["test"][1]) == 6
    assert "outside its tree: ../x/y.png" in capsys.readouterr().err


def test_a_decompression_bomb_is_refused_in_train_and_predict(world, tmp_path, capsys,
                                                               monkeypatch):
    monkeypatch.setenv("TORCHTUTOR_CACHE", str(tmp_path / "cache"))
    tree = tmp_path / "tree"
    shutil.copytree(world["tree"], tree)
    bomb = _bomb()
    assert len(bomb) < 200_000
    (tree / "train" / "red" / "bomb.png").write_bytes(bomb)
    assert main(["vision", "train", "--data", str(tree), "--out", str(tmp_path / "v"),
                 "--model", "tutorial", "--epochs", "1", "--device", "cpu"]) == 0
    assert "skipped 1 unreadable image" in capsys.readouterr().err
    good = tmp_path / "good.png"
    good.write_bytes(_png((220, 10, 10)))
    (tmp_path / "bomb.png").write_bytes(bomb)
    assert main(["vision", "predict", "--run", str(world["vrun"]), str(tmp_path / "bomb.png"),
                 str(good), "--device", "cpu"]) == 1
    out, err = capsys.readouterr()
    assert out.startswith(f"{good}: ") and "too large" in err and len(err.splitlines()) == 1


def test_decode_refuses_large_images_before_decoding():
    from torchtutor.vision.folders import MAX_PIXELS, ImageTooLarge, decode_image

    side = int(np.sqrt(MAX_PIXELS)) + 10
    with pytest.raises(ImageTooLarge):
        decode_image(_png((1, 2, 3), (side, side)), 32)
