"""Checkpoints survive kill -9 mid-save; bad files give one-line errors."""

import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from torchtutor.runtime.checkpoint import load_checkpoint, load_state_dict_checked, save_checkpoint
from torchtutor.runtime.errors import UserError


def test_round_trip(tmp_path):
    state = {"model": {"w": torch.arange(6.0).view(2, 3)}, "step": 7, "note": "hi",
             "list": [1, 2.5, None], "tuple": (1, "a")}
    save_checkpoint(tmp_path / "c.pt", state)
    loaded = load_checkpoint(tmp_path / "c.pt")
    assert torch.equal(loaded["model"]["w"], state["model"]["w"])
    assert loaded["step"] == 7 and loaded["list"] == [1, 2.5, None]
    assert not [p for p in tmp_path.iterdir() if p.name != "c.pt"]  # no temp files left


def _single_line(exc: UserError) -> str:
    text = str(exc)
    assert "\n" not in text
    return text


def test_missing_file(tmp_path):
    with pytest.raises(UserError) as err:
        load_checkpoint(tmp_path / "nope.pt")
    assert "does not exist" in _single_line(err.value)


def test_truncated_file(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"w": torch.randn(1000)})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError) as err:
        load_checkpoint(path)
    assert str(path) in _single_line(err.value)


def test_garbage_and_empty_file(tmp_path):
    (tmp_path / "g.pt").write_bytes(b"this is not a checkpoint at all" * 10)
    (tmp_path / "e.pt").write_bytes(b"")
    for name in ("g.pt", "e.pt"):
        with pytest.raises(UserError) as err:
            load_checkpoint(tmp_path / name)
        assert name in _single_line(err.value)


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_tampered_file_with_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": _Exploit()}, path)  # torch.save pickles arbitrary objects
    with pytest.raises(UserError) as err:
        load_checkpoint(path)
    assert "evil.pt" in _single_line(err.value)
    # the file really carries the call that plain pickle would have run
    assert b"system" in path.read_bytes()


def test_required_keys_and_shape_mismatch(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"model": torch.nn.Linear(2, 3).state_dict()})
    with pytest.raises(UserError, match="missing step"):
        load_checkpoint(path, required_keys=("model", "step"))
    state = load_checkpoint(path)
    with pytest.raises(UserError, match="does not fit"):
        load_state_dict_checked(torch.nn.Linear(4, 3), state["model"], path)


CHILD = textwrap.dedent("""
    import os, sys, time, torch
    import torchtutor.runtime.files as files
    from torchtutor.runtime.checkpoint import save_checkpoint
    real_fsync = os.fsync
    def slow_fsync(fd):
        # the new checkpoint's bytes are in the temporary file, not yet renamed
        print("midway", flush=True)
        time.sleep(30)
        real_fsync(fd)
    files.os.fsync = slow_fsync
    save_checkpoint(sys.argv[1], {"step": 2, "w": torch.ones(1 << 20)})
""")


def test_kill_during_save_keeps_previous_checkpoint(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"step": 1, "w": torch.zeros(10)})
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE,
                             text=True)
    try:
        assert child.stdout.readline().strip() == "midway"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    state = load_checkpoint(path)
    assert state["step"] == 1 and torch.equal(state["w"], torch.zeros(10))
    # the next save still works and replaces it
    save_checkpoint(path, {"step": 3})
    assert load_checkpoint(path)["step"] == 3
