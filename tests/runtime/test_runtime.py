import os
import random
import sys

import numpy as np
import pytest
import torch

from torchtutor.runtime import download
from torchtutor.runtime.device import resolve_device
from torchtutor.runtime.errors import UserError
from torchtutor.runtime.files import atomic_write_text
from torchtutor.runtime.progress import MetricsLog, progress, read_metrics
from torchtutor.runtime.seeding import rng_state, seed_everything, set_rng_state


def test_auto_device_and_cpu():
    assert resolve_device("cpu").type == "cpu"
    expected = "cuda" if torch.cuda.is_available() else None
    assert resolve_device("auto").type in {expected, "mps", "cpu"} - {None}


@pytest.mark.parametrize("spec", ["tpu", "banana", "cuda:99"])
def test_bad_or_missing_devices_are_user_errors(spec):
    with pytest.raises(UserError):
        resolve_device(spec)


def test_cuda_without_cuda_is_one_line():
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with pytest.raises(UserError, match="CUDA is not available"):
        resolve_device("cuda")


def test_seed_everything_repeats_all_generators():
    def draw():
        return random.random(), np.random.rand(), torch.rand(1).item()
    seed_everything(5)
    first = draw()
    seed_everything(5)
    assert draw() == first


def test_rng_state_round_trip_through_checkpoint(tmp_path):
    from torchtutor.runtime.checkpoint import load_checkpoint, save_checkpoint
    seed_everything(1)
    save_checkpoint(tmp_path / "s.pt", {"rng": rng_state()})
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    seed_everything(999)
    set_rng_state(load_checkpoint(tmp_path / "s.pt")["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_atomic_write_text(tmp_path):
    path = tmp_path / "sub" / "f.txt"
    atomic_write_text(path, "one")
    atomic_write_text(path, "two")
    assert path.read_text() == "two" and len(list(path.parent.iterdir())) == 1


def test_metrics_log_appends_across_runs(tmp_path):
    path = tmp_path / "metrics.csv"
    with MetricsLog(path, ["step", "loss"]) as log:
        log.log(step=1, loss=2.5)
    with MetricsLog(path, ["step", "loss"]) as log:
        log.log(step=2, loss=1.5)
    assert read_metrics(path) == [{"step": "1", "loss": "2.5"}, {"step": "2", "loss": "1.5"}]


def test_progress_off_a_terminal_is_quiet_for_a_short_wait(capsys):
    for _ in progress(range(3), desc="x"):
        pass
    assert capsys.readouterr().err == ""


def test_progress_off_a_terminal_writes_whole_lines_with_the_total(capsys, monkeypatch):
    import torchtutor.runtime.progress as module

    # As if every update came after a long wait: each one may write a line.
    monkeypatch.setattr(module, "LINE_DELAY", 0.0)
    monkeypatch.setattr(module, "LINE_INTERVAL", 0.0)
    from tqdm import tqdm

    with progress(total=3, desc="train", unit="step") as bar:
        for _ in range(3):
            bar.update(1)
            bar.set_postfix_str("loss 1.5")
            tqdm.write("a line between", file=sys.stderr)   # clears bars: no "\r" here
    err = capsys.readouterr().err
    assert "\r" not in err and err.endswith("\n")
    lines = err.splitlines()
    assert lines[-1].startswith("train: 100% 3/3") and lines[-1].endswith("loss 1.5]")
    assert all(line.startswith("train: ") or line == "a line between" for line in lines)


def test_cache_dir_override(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCHTUTOR_CACHE", str(tmp_path / "c"))
    assert download.cache_dir() == tmp_path / "c"
    monkeypatch.delenv("TORCHTUTOR_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert download.cache_dir() == tmp_path / "x" / "torchtutor"


def test_download_verifies_and_caches(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCHTUTOR_CACHE", str(tmp_path))
    source = tmp_path / "src.bin"
    source.write_bytes(b"payload")
    good = download.sha256_of(source)
    url = source.as_uri()
    path = download.cached_download(url, good, "file.bin", "use --data PATH")
    assert path.read_bytes() == b"payload"
    source.unlink()  # the cached copy is reused, no second fetch
    assert download.cached_download(url, good, "file.bin", "hint") == path
    other = tmp_path / "other.bin"
    other.write_bytes(b"tampered")
    with pytest.raises(UserError, match=f"has sha256 {download.sha256_of(other)}, expected "
                                        f"{good}; hint"):
        download.cached_download(other.as_uri(), good, "file2.bin", "hint")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.bin", "other.bin"]  # no temp


def test_download_streams_to_a_file_through_torch_hub(monkeypatch, tmp_path):
    import torch.hub

    # A 3 MB file through a file:// URL, in torch.hub's 8 KiB reads: never one read whole.
    monkeypatch.setenv("TORCHTUTOR_CACHE", str(tmp_path / "cache"))
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(3 << 20))
    calls = []
    real = torch.hub.download_url_to_file
    monkeypatch.setattr(torch.hub, "download_url_to_file",
                        lambda *a, **k: calls.append((a, k)) or real(*a, **k))
    path = download.cached_download(source.as_uri(), download.sha256_of(source), "big.bin", "")
    assert path.read_bytes() == source.read_bytes()
    assert calls and calls[0][1]["hash_prefix"] == download.sha256_of(source)


def test_download_without_network_says_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCHTUTOR_CACHE", str(tmp_path))

    def refuse(*args, **kwargs):
        raise OSError("network is unreachable")
    import torch.hub

    monkeypatch.setattr(torch.hub, "urlopen", refuse)  # the downloader torch.hub uses
    with pytest.raises(UserError) as err:
        download.cached_download("http://example.invalid/x.zip", "0" * 64, "x.zip",
                                 "pass --data PATH to use a local copy")
    assert "--data PATH" in str(err.value) and "\n" not in str(err.value)
