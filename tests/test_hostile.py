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
import json
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
    mine = root / "mine"   # a user's folder that happens to hold a vocab.json
    mine.mkdir()
    (mine / "vocab.json").write_text('{"my": "words"}\n')
    old_export = root / "old-export"   # an earlier export, to which the user added a file
    old_export.mkdir()
    for name in ("chatbot.json", "chatbot.py", "my-notes.txt"):
        (old_export / name).write_text("{}\n")
    configs = {"model5": b"model: 5\n", "binary": bytes(range(128, 256))}
    for name, data in configs.items():
        (root / f"{name}.yaml").write_bytes(data)
    unreadable = root / "unreadable-images"   # class folders whose images do not decode
    for name in ("cat", "dog"):
        (unreadable / name).mkdir(parents=True)
        (unreadable / name / "a.png").write_bytes(b"not a png")
    lengths = {name: _with_max_length(run, root / f"chat-{name}", value)
               for name, value in (("neglen", -1), ("hugelen", 10**9))}
    novocab = root / "chat-novocab"
    shutil.copytree(run, novocab, ignore=shutil.ignore_patterns("backward", "vocab.json"))
    return {"root": root, "corpus": corpus, "run": run, "tree": tree, "vrun": vrun,
            "notes": notes, "mine": mine, "oldexport": old_export, "unreadable": unreadable,
            "novocabrun": novocab, **{k: root / f"{k}.yaml" for k in configs},
            **{f"{k}run": v for k, v in {**damaged, **lengths}.items()}}


def _with_max_length(run: Path, to: Path, value: int) -> Path:
    shutil.copytree(run, to, ignore=shutil.ignore_patterns("backward"))
    config = json.loads((to / "config.json").read_text())
    config["data"]["max_length"] = value
    (to / "config.json").write_text(json.dumps(config))
    return to


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
    # issue 28: data that torchtutor did not write is never replaced
    ("prepare-over-a-users-vocab", ["chat", "prepare", "--data", "{corpus}", "--out", "{mine}"],
     2, "which `chat prepare` did not write"),
    ("train-over-a-users-vocab", CHAT_TRAIN[:4] + ["--out", "{mine}", *TRAIN, "--steps", "1"],
     2, "which is not from a chat run"),
    ("export-over-an-export-with-a-users-file", ["chat", "export", "--run", "{run}", "--out",
                                                 "{oldexport}"], 2, "also holds my-notes.txt"),
    # issue 28: bounds, and files that are not files
    ("prepare-dev-zero", ["chat", "prepare", "--data", "/dev/zero", "--out", "{root}/z"], 2,
     "not a regular file"),
    ("config-dev-zero", CHAT_TRAIN + ["--config", "/dev/zero"], 2, "not a regular file"),
    ("reply-max-length-negative", ["chat", "reply", "--run", "{neglenrun}", "--device", "cpu",
                                   "hi"], 2, "data.max_length is -1"),
    ("reply-max-length-huge", ["chat", "reply", "--run", "{hugelenrun}", "--device", "cpu",
                               "hi"], 2, "data.max_length is 1000000000"),
    ("train-max-length-huge", CHAT_TRAIN + ["--max-length", "1000000000"], 2, "--max-length"),
    ("reply-temperature-1e-300", ["chat", "reply", "--run", "{run}", "--device", "cpu",
                                  "--decoder", "sample", "--temperature", "1e-300", "hi"], 2,
     "--temperature must be a number from 1.4013e-45 to 100"),
    ("serve-threads-100000", SERVE + ["--threads", "100000"], 2, "--threads 100000"),
    ("reply-run-path-300-chars", ["chat", "reply", "--run", "{root}/" + "r" * 300, "hi"], 2,
     "File name too long"),
    ("train-data-path-300-chars", CHAT_TRAIN[:2] + ["--data", "{root}/" + "d" * 300,
                                                    *CHAT_TRAIN[4:]], 2, "File name too long"),
    ("config-model-5", ["chat", "train", "--config", "{model5}", "--out", "{root}/m5"], 2,
     "model and data must be"),
    ("config-binary", CHAT_TRAIN + ["--config", "{binary}"], 2, "is not UTF-8 text"),
    ("vision-config-binary", VISION_TRAIN + ["--config", "{binary}"], 2, "is not UTF-8 text"),
    # issue 28: messages that say what is wrong
    ("reply-run-is-a-file", ["chat", "reply", "--run", "{notes}", "hi"], 2,
     "is a file; --run names a run folder"),
    ("reply-run-without-vocab", ["chat", "reply", "--run", "{novocabrun}", "--device", "cpu",
                                 "hi"], 2, "vocabulary file"),
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


@pytest.mark.parametrize("argv, words", [
    (["chat", "train", "--out", "x", "--bogus"], "unrecognized arguments: --bogus"),
    (["chat", "trian"], "invalid choice: 'trian'"),
    (["lesson", "tensors", "--seed", "9" * 23], "--seed: must be in 0.."),
])
def test_argparse_errors_are_one_line_and_a_pointer_to_help(argv, words, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("error: ") and words in err and "--help`)" in err, err


def test_vision_class_folders_without_a_readable_image(world, capsys, monkeypatch):
    monkeypatch.setenv("TORCHTUTOR_CACHE", str(world["root"] / "cache"))
    before = snapshot(world["root"])
    assert main(["vision", "train", "--data", str(world["unreadable"]), "--out",
                 str(world["root"] / "v-none"), "--device", "cpu"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()   # a warning per skipped file first
    assert lines[-1].endswith("holds no readable image for training"), lines
    assert not any("Traceback" in line for line in lines)
    assert snapshot(world["root"]) == before


def test_reply_refuses_binary_stdin_at_once(world, capsys, monkeypatch):
    """50 MB of random bytes were replied to as 200,000 'messages' for hours; a line mostly
    of bytes that are not UTF-8, or one without end, stops at once."""
    import sys

    from torchtutor.chat import reply

    data = bytes(np.random.default_rng(0).integers(0, 256, 200_000, dtype=np.uint8))
    for stdin, words in ((data, "not UTF-8 text (binary data?)"),
                         (b"hello\n" + b"x" * (reply.MAX_LINE + 5), "line 2 is longer")):
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
        assert main(["chat", "reply", "--run", str(world["run"]), "--device", "cpu"]) == 2
        out, err = capsys.readouterr()
        assert err.strip().count("\n") == 0 and words in err, err


def test_prepare_bounds_a_line_of_a_pair_file(tmp_path, capsys, monkeypatch):
    from torchtutor.chat.data import corpus

    monkeypatch.setattr(corpus, "MAX_LINE_BYTES", 1000)
    pairs = tmp_path / "pairs.tsv"
    pairs.write_bytes(b"hi\tthere\n" + b"\0" * 5000)   # as a file of zeros grows it
    assert main(["chat", "prepare", "--data", str(pairs), "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "line 2 is longer than" in err, err


def test_a_model_too_large_for_memory_is_refused_before_allocating(world, tmp_path, capsys):
    assert main(_train_args(world, tmp_path / "run", "--hidden-size", "100000000",
                            "--steps", "1")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "GB of memory" in err and "smaller" in err, err
    assert not (tmp_path / "run" / "last.pt").exists()


def test_resume_moves_a_garbage_metrics_file_aside(world, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(world["run"], run, ignore=shutil.ignore_patterns("backward"))
    garbage = b"\x00\xffnot,a\nmetrics file\n"
    (run / "metrics.csv").write_bytes(garbage)
    assert main(["chat", "train", "--out", str(run), "--resume", "--steps", "5",
                 "--device", "cpu"]) == 0
    assert "moved it to metrics.csv.unreadable" in capsys.readouterr().out
    assert (run / "metrics.csv.unreadable").read_bytes() == garbage   # kept, not rewritten
    assert (run / "metrics.csv").read_text().startswith("step,")


def test_a_run_stopped_before_its_first_checkpoint_starts_again(world, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_train_args(world, out, "--steps", "1")) == 0
    for name in ("last.pt", "best.pt"):
        (out / name).unlink()   # as a kill before the first save leaves it
    capsys.readouterr()
    assert main(_train_args(world, out, "--steps", "1")) == 0
    assert "stopped before its first checkpoint; starting it again" in capsys.readouterr().out


def test_export_onto_a_read_only_mount_is_one_line(world, tmp_path, capsys, monkeypatch):
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(files.tempfile, "mkdtemp", read_only)
    assert main(["chat", "export", "--run", str(world["run"]), "--out",
                 str(tmp_path / "bot")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "read-only" in err, err


def test_a_killed_exports_temporary_folder_is_removed_by_the_next(tmp_path):
    from torchtutor.chat.export import package

    target = tmp_path / "bot"
    stale = tmp_path / ".bot.999999999.abcd1234.tmp"   # no such process: a kill -9 left it
    stale.mkdir()
    (stale / "chatbot.json").write_text("{}")
    other = tmp_path / ".notes.999999999.abcd1234.tmp"   # another target's: not ours to judge
    other.mkdir()

    def fill(folder: Path) -> dict:
        (folder / package.PACKAGE).write_bytes(b"graphs")
        return {"format": "aoti"}
    package.write_folder(str(target), fill)
    assert not stale.exists() and other.exists()
    assert sorted(p.name for p in target.iterdir()) == ["chatbot.json", "chatbot.pt2",
                                                       "chatbot.py"]


def test_a_blank_image_channel_trains_instead_of_nan(tmp_path, capsys, monkeypatch):
    """A channel that is one value in every image had a std of 0, so every input was NaN."""
    monkeypatch.setenv("TORCHTUTOR_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    for split, count in (("train", 8), ("test", 2)):
        for label in ("a", "b"):
            (tmp_path / "tree" / split / label).mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                pixels[..., 2] = 0
                Image.fromarray(pixels).save(tmp_path / "tree" / split / label / f"{i}.png")
    assert main(["vision", "train", "--data", str(tmp_path / "tree"), "--out",
                 str(tmp_path / "v"), "--model", "tutorial", "--epochs", "2",
                 "--device", "cpu"]) == 0
    assert "test accuracy" in capsys.readouterr().out


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
