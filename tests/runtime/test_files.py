"""The safe-write path: one-line errors for full disks, read-only folders and wrong --out
kinds, and the clean-up of temporary files left by interrupted saves."""

import errno
import os
import subprocess
import sys

import pytest
import torch

from torchtutor.runtime import files
from torchtutor.runtime.checkpoint import load_checkpoint, save_checkpoint
from torchtutor.runtime.errors import UserError
from torchtutor.runtime.files import (
    WriteError,
    atomic_write,
    atomic_write_text,
    make_folder,
    output_file,
    remove_stale_temps,
)
from torchtutor.runtime.progress import MetricsLog


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    assert text and "\n" not in text
    return text


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.mark.parametrize("code, words", [(errno.ENOSPC, "no space left"),
                                         (errno.EROFS, "read-only"),
                                         (errno.EDQUOT, "quota")])
def test_a_failing_write_is_one_line_and_keeps_the_previous_file(tmp_path, code, words):
    path = tmp_path / "last.pt"
    atomic_write_text(path, "old")

    def write(f):
        f.write(b"partial")
        raise OSError(code, os.strerror(code))

    with pytest.raises(WriteError) as err:
        atomic_write(path, write)
    message = _one_line(err.value)
    assert str(path) in message and words in message and "previous version is intact" in message
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_a_read_only_folder_is_one_line(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(files.tempfile, "mkstemp", refuse)
    with pytest.raises(UserError) as err:
        save_checkpoint(tmp_path / "c.pt", {"w": torch.ones(2)})
    assert "read-only" in _one_line(err.value)
    assert not list(tmp_path.iterdir())


def test_out_naming_a_file_or_a_folder(tmp_path):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("keep me")
    with pytest.raises(WriteError, match="is a file, not a folder"):
        make_folder(a_file)
    with pytest.raises(WriteError, match="is a file"):
        make_folder(a_file / "run")
    with pytest.raises(WriteError, match="is a folder"):
        output_file(tmp_path)
    with pytest.raises(WriteError, match="is a folder"):
        atomic_write_text(tmp_path, "x")
    with pytest.raises(WriteError, match="not a file this command wrote"):
        output_file(a_file, replaceable=lambda p: p.read_text() == "an export")
    assert a_file.read_text() == "keep me"
    assert output_file(a_file) == a_file  # no check given: replacing is allowed
    assert make_folder(tmp_path / "a" / "b").is_dir()


def test_metrics_log_on_a_full_disk_is_one_line(tmp_path):
    log = MetricsLog(tmp_path / "m.csv", ["step"])

    class Full:
        def writerow(self, row):
            raise OSError(errno.ENOSPC, "No space left on device")

    log._writer = Full()
    with pytest.raises(WriteError, match="no space left"):
        log.log(step=1)
    log.close()


def test_stale_temporaries_are_removed_at_the_next_save(tmp_path):
    dead, alive = _dead_pid(), os.getppid()
    stale = [tmp_path / f".last.pt.{dead}.abcd1234.tmp", tmp_path / ".last.pt.q1w2e3r4.tmp"]
    live = tmp_path / f".last.pt.{alive}.zxcv5678.tmp"   # a save in progress elsewhere
    other = tmp_path / f".best.pt.{dead}.abcd1234.tmp"
    unrelated = tmp_path / ".notes.tmp"
    for p in [*stale, live, other, unrelated]:
        p.write_bytes(b"x" * 100)
    save_checkpoint(tmp_path / "last.pt", {"step": 1})
    assert not any(p.exists() for p in stale)
    assert live.exists() and other.exists() and unrelated.exists()
    assert remove_stale_temps(tmp_path) == 1   # the folder-wide sweep at a command's start
    assert not other.exists() and live.exists() and unrelated.exists()
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 1


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_written_files_get_the_users_umask_not_0600(tmp_path, umask):
    from torchtutor.chat.data.prepare import PrepareConfig, prepare_folder

    old = os.umask(umask)
    try:
        assert files.current_umask() == umask
        written = [atomic_write_text(tmp_path / "config.json", "{}\n"),
                   save_checkpoint(tmp_path / "last.pt", {"step": 1}) or tmp_path / "last.pt"]
        prepare_folder(PrepareConfig(min_count=1), tmp_path / "prepared")
        written += sorted((tmp_path / "prepared").iterdir())
    finally:
        os.umask(old)
    expected = 0o666 & ~umask
    modes = {path.name: oct(path.stat().st_mode & 0o777) for path in written}
    assert set(modes.values()) == {oct(expected)}, modes
