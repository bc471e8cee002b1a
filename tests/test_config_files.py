"""Config files: every run folder's config.yaml reproduces the run (`--config RUN/config.yaml
--out NEW --steps N` gives the same weights), flags override a file, TOML works too,
`--print-config` shows the resolved config, and a bad file is a one-line error."""

import torch
import yaml

from tests.vision.colour_tree import write_colour_tree
from torchtutor import cli
from torchtutor.runtime.checkpoint import load_checkpoint

CHAT = ["chat", "train", "--device", "cpu"]
TINY_CHAT = ["--data", "chatterbot", "--steps", "4", "--hidden-size", "16", "--batch-size",
             "16", "--eval-every", "2", "--no-backward", "--precision", "fp32", "--lr", "0.002"]


def _same_weights(a, b) -> None:
    a, b = load_checkpoint(a)["model"], load_checkpoint(b)["model"]
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_a_chat_run_folders_config_reproduces_the_run(tmp_path, capsys):
    first, again = tmp_path / "first", tmp_path / "again"
    assert cli.main([*CHAT, *TINY_CHAT, "--out", str(first)]) == 0
    assert cli.main([*CHAT, "--config", str(first / "config.yaml"), "--out", str(again),
                     "--steps", "4"]) == 0
    _same_weights(first / "last.pt", again / "last.pt")
    capsys.readouterr()
    # flags override the file; --print-config shows the result and trains nothing
    assert cli.main([*CHAT, "--config", str(first / "config.yaml"), "--out",
                     str(tmp_path / "shown"), "--lr", "0.01", "--print-config"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert (shown["lr"], shown["steps"], shown["model"]["hidden_size"]) == (0.01, 4, 16)
    assert shown["data"]["corpus"] == "chatterbot" and not (tmp_path / "shown").exists()


def test_toml_files_and_bad_files(tmp_path, capsys):
    toml = tmp_path / "small.toml"
    toml.write_text('recipe = "tutorial"\nsteps = 7\n[model]\nhidden_size = 32\n')
    assert cli.main([*CHAT, "--config", str(toml), "--out", "r", "--print-config"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert (shown["recipe"], shown["steps"], shown["batch_size"]) == ("tutorial", 7, 64)
    assert shown["model"]["hidden_size"] == 32
    for name, text, says in [("typo.yaml", "lr: 0.1\nlearning_rate: 2\n", "learning_rate"),
                             ("nan.yaml", "lr: .nan\n", "--lr"),
                             ("broken.yaml", "lr: [1,\n", "not valid YAML"),
                             ("list.yaml", "- 1\n", "table of options")]:
        (tmp_path / name).write_text(text)
        assert cli.main([*CHAT, "--config", str(tmp_path / name), "--out", "r"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and says in err, err


def test_a_vision_run_folders_config_reproduces_the_run(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHTUTOR_CACHE", str(tmp_path / "cache"))
    tree = write_colour_tree(tmp_path / "colours", train_per_class=8, test_per_class=2)
    first, again = tmp_path / "first", tmp_path / "again"
    assert cli.main(["vision", "train", "--data", str(tree), "--out", str(first), "--model",
                     "tutorial", "--epochs", "1", "--lr", "0.01", "--device", "cpu"]) == 0
    assert cli.main(["vision", "train", "--config", str(first / "config.yaml"), "--out",
                     str(again), "--epochs", "1"]) == 0
    _same_weights(first / "last.pt", again / "last.pt")
