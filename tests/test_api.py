"""The public Python API (torchtutor/__init__.py): train, Classifier, the one error type, and
that importing the package does not load torch."""

import json
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

import torchtutor
from tests.tiny_runs import TinyRuns, session_tiny_runs, tiny_chat_config
from tests.vision.colour_tree import COLOURS
from torchtutor import (
    Chatbot,
    Classifier,
    DecodeOptions,
    Prediction,
    Reply,
    UserError,
    VisionTrainResult,
    train,
)
from torchtutor.cli import main


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> TinyRuns:
    return session_tiny_runs(tmp_path_factory)


def test_import_does_not_load_torch():
    code = ("import sys, torchtutor, torchtutor.vision; "
            "from torchtutor import TrainConfig, RECIPES, DecodeOptions, UserError, train; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "False"


def test_public_names_resolve_and_unknown_ones_do_not():
    for name in torchtutor.__all__:
        assert getattr(torchtutor, name) is not None
    assert "Classifier" in dir(torchtutor)
    with pytest.raises(AttributeError, match="no attribute 'load_bot'"):
        torchtutor.load_bot  # noqa: B018   internal names stay internal


def test_chat_train_writes_both_models(runs):
    assert (runs.chat / "best.pt").is_file() and (runs.chat / "config.yaml").is_file()
    assert (runs.chat / "backward" / "last.pt").is_file()   # as `chat train` does
    stored = json.loads((runs.chat / "config.json").read_text())
    assert stored["model"]["hidden_size"] == 16 and stored["train"]["steps"] == 4


def test_vision_train_result_is_typed(runs, tmp_path):
    result = json.loads((runs.vision / "result.json").read_text())
    assert 0.0 <= result["test_accuracy"] <= 1.0 and result["steps"] > 0
    # resuming a finished run trains nothing and tests again: cheap, and a typed result
    again = train(replace(json_free_vision_config(runs), out=str(runs.vision)), resume=True)
    assert isinstance(again, VisionTrainResult)
    assert again.run_dir == runs.vision and again.steps == result["steps"]
    assert again.test_accuracy == pytest.approx(result["test_accuracy"])


def json_free_vision_config(runs):
    from tests.tiny_runs import tiny_vision_config

    return tiny_vision_config(runs.tree, runs.vision)


def test_train_refuses_what_is_not_a_config():
    with pytest.raises(UserError, match="not dict"):
        train({"out": "runs/x"})


def test_bad_config_values_are_user_errors(runs, tmp_path):
    with pytest.raises(UserError, match="--hidden-size must be"):
        tiny = tiny_chat_config(runs.corpus, tmp_path / "x")
        replace(tiny, model=replace(tiny.model, hidden_size=0))


def test_classifier_predicts_files_and_tensors_as_the_command_does(runs, capsys):
    classifier = Classifier.load(runs.vision, device="cpu")
    assert classifier.classes == sorted(COLOURS)
    files = sorted((runs.tree / "test").rglob("*.png"))
    answers = classifier.predict(files, top_k=2)
    assert len(answers) == len(files) and all(isinstance(a, Prediction) for a in answers)
    for answer in answers:
        assert answer.top[0] == (answer.label, answer.probability) and len(answer.top) == 2
        assert answer.top[0][1] >= answer.top[1][1]

    assert main(["vision", "predict", "--run", str(runs.vision), "--device", "cpu", "--json",
                 "--top-k", "2", *map(str, files)]) == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    for answer, line in zip(answers, printed, strict=True):
        assert [t["class"] for t in line["top"]] == [name for name, _ in answer.top]
        assert line["top"][0]["probability"] == pytest.approx(answer.probability, abs=1e-6)

    from torchtutor.vision.classifier import read_image

    stacked = torch.stack([read_image(f) for f in files])
    assert [a.label for a in classifier.predict(stacked)] == [a.label for a in answers]
    one = classifier.predict(stacked[0])   # one (3, 32, 32) image
    assert len(one) == 1 and one[0].label == answers[0].label
    assert classifier.predict(str(files[0]))[0].label == answers[0].label   # one path
    assert classifier.predict([]) == []


@pytest.mark.parametrize("images, words", [
    (torch.zeros(2, 3, 32, 32), "must be uint8"),
    (torch.zeros(2, 1, 32, 32, dtype=torch.uint8), "(2, 1, 32, 32)"),
    (["no-such.png"], "no-such.png: no such file"),
])
def test_classifier_refuses_bad_images_in_one_line(runs, images, words):
    with pytest.raises(UserError) as caught:
        Classifier.load(runs.vision, device="cpu").predict(images)
    assert words in str(caught.value) and "\n" not in str(caught.value)


def test_loading_a_bad_folder_raises_the_commands_error(runs, tmp_path, capsys):
    missing = tmp_path / "nothing"
    with pytest.raises(UserError) as caught:
        Classifier.load(missing)
    assert main(["vision", "predict", "--run", str(missing), "x.png"]) == 2
    assert capsys.readouterr().err.strip() == f"error: {caught.value}"
    with pytest.raises(UserError, match="is a chat run"):
        Classifier.load(runs.chat)


def test_chatbot_three_lines_answer_as_the_command_does(runs, capsys):
    bot = Chatbot.load(runs.chat, device="cpu")
    reply = bot.reply("hello there")
    assert isinstance(reply, Reply) and reply.text and reply.score < 0
    assert bot.backward is not None   # the default decoder reranks with it
    texts = ["hello there", "how are you ?", "good bye"]
    assert main(["chat", "reply", "--run", str(runs.chat), "--device", "cpu", *texts]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert [r.text for r in bot.reply_batch(texts)] == printed
    beam = bot.reply("hello there", DecodeOptions(method="beam", beam_size=3, n_best=3))
    assert len(beam.alternatives) == 2


def test_loading_a_bad_chat_folder_raises_the_commands_error(runs, tmp_path, capsys):
    for folder in (tmp_path / "nothing", runs.vision):
        with pytest.raises(UserError) as caught:
            Chatbot.load(folder)
        assert main(["chat", "reply", "--run", str(folder), "hi"]) == 2
        assert capsys.readouterr().err.strip() == f"error: {caught.value}"
    with pytest.raises(UserError, match="--beam-size"):
        Chatbot.load(runs.chat, device="cpu").reply("hi", DecodeOptions(beam_size=0))
