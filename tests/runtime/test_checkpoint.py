"""Checkpoints survive kill -9 mid-save; bad files give one-line errors."""

import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from torchtutor.runtime.checkpoint import (
    NonFiniteWeights,
    load_checkpoint,
    load_state_dict_checked,
    save_checkpoint,
)
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
    # what was refused, not torch's advice on how to load the file anyway
    assert "system" in str(err.value) and "can still be loaded" not in str(err.value)
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
    left = [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert len(left) == 1 and left[0].startswith(f".last.pt.{child.pid}.")
    # the next save still works, replaces it and removes the dead save's temporary file
    save_checkpoint(path, {"step": 3})
    assert load_checkpoint(path)["step"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_a_flipped_bit_in_tensor_data_is_refused(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"model": {"w": torch.full((1000,), 1.5)}, "step": 4})
    data = bytearray(path.read_bytes())
    at = data.find(torch.full((4,), 1.5).numpy().tobytes())
    assert at > 0
    data[at + 1] ^= 0x10
    path.write_bytes(bytes(data))
    with pytest.raises(UserError) as err:
        load_checkpoint(path)
    assert "checksum" in _single_line(err.value)


def test_a_changed_plain_value_is_refused_and_old_files_still_load(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"step": 4, "w": torch.ones(3)})
    state = torch.load(path, weights_only=True)
    state["step"] = 5   # edited, checksum kept
    torch.save(state, path)
    with pytest.raises(UserError, match="checksum"):
        load_checkpoint(path)
    torch.save({"step": 5, "w": torch.ones(3)}, path)   # no checksum: an older torchtutor's
    assert load_checkpoint(path)["step"] == 5


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_weights_are_never_saved(tmp_path, bad):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"model": {"w": torch.ones(3)}, "step": 1})
    weights = torch.ones(3)
    weights[1] = bad
    with pytest.raises(NonFiniteWeights) as err:
        save_checkpoint(path, {"model": {"w": weights}, "step": 2})
    assert "model.w" in _single_line(err.value)
    assert load_checkpoint(path)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]
    # integer tensors and plain floats are not weights
    save_checkpoint(path, {"ids": torch.arange(3), "loss": float("nan")})


def test_non_finite_or_malformed_weights_are_refused_on_load(tmp_path):
    path = tmp_path / "old.pt"
    module = torch.nn.Linear(2, 2)
    weights = module.state_dict()
    weights["bias"] = torch.tensor([0.0, float("nan")])
    torch.save({"model": weights}, path)   # written by an older version, or by hand
    with pytest.raises(UserError, match="NaN or infinite weights"):
        load_state_dict_checked(module, load_checkpoint(path)["model"], path)
    for bad in ([1, 2], {"weight": "text"}, "weights"):
        with pytest.raises(UserError, match="malformed"):
            load_state_dict_checked(module, bad, path)


def test_entries_of_the_wrong_type_are_one_line(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"model": [1, 2], "step": "seven"})
    with pytest.raises(UserError) as err:
        load_checkpoint(path, types={"model": dict, "step": int})
    assert "'model' is a list, not a dict" in _single_line(err.value)
