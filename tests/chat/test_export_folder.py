"""`chat export --format aoti|onnx`: the exported graphs equal the model, and the folder's
standalone chatbot.py, run by a Python that cannot import torchtutor, replies like
`chat reply --decoder greedy`."""

import json
import random
import shutil
import subprocess
import sys
import time

import pytest
import torch

from tests.chat.inference_helpers import BAD_INPUTS, SENTENCES, tiny_run
from torchtutor.chat.data.text import normalize
from torchtutor.chat.export.graphs import ExportEncoder
from torchtutor.chat.export.package import PROGRAM, check_folder, standalone_program
from torchtutor.chat.infer.chatbot import Chatbot as TrainedChatbot
from torchtutor.chat.model import ModelConfig, Seq2Seq
from torchtutor.runtime.errors import UserError

# A Python str with a lone surrogate cannot be written to a pipe as UTF-8; the others can.
TEXTS = SENTENCES + [t for t in BAD_INPUTS if "\ud800" not in t and "\n" not in t] + [
    "Hello there!", "What's your name?", "Ça va? Très bien!", "a.b!c"]


@pytest.mark.parametrize("layers,compat", [(1, False), (2, False), (2, True), (3, False)])
def test_export_encoder_equals_the_packed_encoder(layers, compat):
    torch.manual_seed(layers)
    model = Seq2Seq(ModelConfig(vocab_size=30, hidden_size=16, encoder_layers=layers,
                                decoder_layers=2, dropout=0.0, tutorial_compat=compat)).eval()
    inputs = torch.tensor([[5, 8, 2, 9], [6, 9, 0, 2], [7, 2, 0, 0], [2, 0, 0, 0]])
    lengths = torch.tensor([4, 3, 1, 2])
    with torch.no_grad():
        want = model.encode(inputs, lengths)
        got = ExportEncoder(model).eval()(inputs, lengths)
    for a, b in zip(want, got, strict=True):
        torch.testing.assert_close(a, b)


def _program_namespace() -> dict:
    namespace = {"__name__": "exported_chatbot", "__file__": PROGRAM}
    exec(compile(standalone_program(), PROGRAM, "exec"), namespace)
    return namespace


def test_the_standalone_program_carries_the_package_normalization():
    program = standalone_program()
    imports = [line for line in program.splitlines() if line.startswith(("import ", "from "))]
    assert not [line for line in imports if "torchtutor" in line], imports
    namespace = _program_namespace()
    rng = random.Random(0)
    samples = TEXTS + ["".join(chr(rng.randrange(0x20, 0x3000)) for _ in range(200))
                       for _ in range(50)]
    for text in samples:
        assert namespace["normalize"](text) == normalize(text)
    assert namespace["display_text"](["i", "m", "fine", "."]) == "I'm fine."


def test_the_standalone_program_normalizes_a_million_characters_in_linear_time():
    namespace = _program_namespace()
    bot = object.__new__(namespace["Chatbot"])
    bot.index, bot.has_unk, bot.max_length = {"hello": 4}, True, 10
    for piece in ("hello, wörld! ", "ab" * 7 + "\u00e9 "):
        text = (piece * (1_000_000 // len(piece) + 1))[:1_000_000]
        start = time.process_time()   # CPU time: the machine may be shared
        ids, unknown, truncated = bot.prepare(text)
        assert time.process_time() - start < 2.0
        assert truncated and len(ids) == 10 and len(unknown) > 10_000


# Runs a copy of chatbot.py in an isolated Python (-I: no PYTHONPATH, no user site) in which
# importing torchtutor fails, with deprecation warnings as errors.
PLAIN_PYTHON = r"""
import importlib.abc, runpy, sys, time
class NoTorchtutor(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "torchtutor":
            raise ImportError("torchtutor is not installed here")
sys.meta_path.insert(0, NoTorchtutor())
program = runpy.run_path(sys.argv[1])
if len(sys.argv) > 2:
    bot = program["load"]()
    start = time.process_time()
    bot.reply("hello, how are you? " * 50_000)
    print(f"{time.process_time() - start:.3f}")
else:
    sys.argv = sys.argv[:1]
    program["main"]([])
"""


def _run_copy(folder, tmp_path, texts=None, timed=False):
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    args = [sys.executable, "-I", "-W", "error::DeprecationWarning", "-c", PLAIN_PYTHON,
            str(copy / PROGRAM)] + (["--time"] if timed else [])
    result = subprocess.run(args, input="".join(t + "\n" for t in texts or []),
                            capture_output=True, text=True, timeout=300, cwd=tmp_path)
    shutil.rmtree(copy)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.splitlines()


def _queries(run, count=200) -> list[str]:
    words = json.loads((run / "vocab.json").read_text())["words"]
    rng = random.Random(0)
    made = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 12))) + rng.choice("?.!")
            for _ in range(count - len(TEXTS))]
    return TEXTS + made


@pytest.fixture(scope="module")
def aoti_folder(tmp_path_factory):
    from torchtutor import cli

    out = tmp_path_factory.mktemp("export") / "bot"
    assert cli.main(["chat", "export", "--run", str(tiny_run()), "--out", str(out)]) == 0
    return out


def test_aoti_folder_replies_like_chat_reply_exact(aoti_folder, tmp_path):
    run = tiny_run()
    texts = _queries(run)
    exact = TrainedChatbot.load(str(run), "cpu").reply_batch(texts)
    assert len({r.text for r in exact}) > 1
    assert _run_copy(aoti_folder, tmp_path, texts) == [r.text for r in exact]
    from torchtutor.chat.export.template import Chatbot

    scores = [r["score"] for r in Chatbot(str(aoti_folder)).replies(texts)]
    assert len(set(scores)) > 20   # scores differ by input: a real check of the numbers
    assert scores == pytest.approx([r.score for r in exact], abs=1e-4)
    seconds = float(_run_copy(aoti_folder, tmp_path, timed=True)[-1])
    assert seconds < 2.0


def test_the_check_refuses_graphs_that_differ(aoti_folder):
    bot = TrainedChatbot.load(str(tiny_run()), "cpu")
    settings = json.loads((aoti_folder / "chatbot.json").read_text())
    check_folder(bot, aoti_folder, settings)    # the written graphs pass
    with torch.no_grad():
        bot.model.out.bias.add_(0.5 * torch.randn_like(bot.model.out.bias))
    with pytest.raises(UserError, match="do not match torch"):
        check_folder(bot, aoti_folder, settings)


def test_onnx_export_replies_like_chat_reply_exact(tmp_path):
    from torchtutor import cli

    run = tiny_run()
    out = tmp_path / "onnx-bot"
    assert cli.main(["chat", "export", "--run", str(run), "--out", str(out),
                     "--format", "onnx"]) == 0
    from torchtutor.chat.export.template import Chatbot

    texts = _queries(run, 60)
    exact = TrainedChatbot.load(str(run), "cpu").reply_batch(texts)
    assert [r["reply"] for r in Chatbot(str(out)).replies(texts)] == [r.text for r in exact]
    # An existing file that is not an export folder is never replaced.
    stray = tmp_path / "notes.txt"
    stray.write_text("keep me")
    assert cli.main(["chat", "export", "--run", str(run), "--out", str(stray),
                     "--format", "onnx"]) == 2
    assert stray.read_text() == "keep me"


def test_aoti_export_of_a_tutorial_compat_run(tmp_path):
    # Unmasked attention once crashed AOTInductor's attention-fusion pass (torch 2.13).
    from torchtutor import cli
    from torchtutor.chat.export.template import Chatbot

    run = tiny_run(has_unk=False)
    out = tmp_path / "compat-bot"
    assert cli.main(["chat", "export", "--run", str(run), "--out", str(out)]) == 0
    texts = _queries(run, 40)
    exact = TrainedChatbot.load(str(run), "cpu").reply_batch(texts)
    assert [r["reply"] for r in Chatbot(str(out)).replies(texts)] == [r.text for r in exact]


def _run_program(folder, *args, python_flags=("-I",)):
    return subprocess.run([sys.executable, *python_flags, str(folder / PROGRAM), *args],
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("damage", ["no package", "truncated package", "broken json",
                                    "no json"])
def test_a_damaged_export_folder_is_a_one_line_error(aoti_folder, tmp_path, damage):
    copy = tmp_path / "copy"
    shutil.copytree(aoti_folder, copy)
    package, settings = copy / "chatbot.pt2", copy / "chatbot.json"
    if damage == "no package":
        package.unlink()
    elif damage == "truncated package":
        package.write_bytes(package.read_bytes()[:4096])
    elif damage == "broken json":
        settings.write_text('{"words": ')
    else:
        settings.unlink()
    result = _run_program(copy, "hello")
    assert result.returncode == 2 and result.stdout == "", result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr


def test_the_exported_program_answers_help_and_names_the_python_it_needs(aoti_folder):
    helped = _run_program(aoti_folder, "--help")
    assert helped.returncode == 0 and helped.stdout.startswith("usage: chatbot.py")
    # -S: no site-packages, so no torch: the program says which Python to use, in one line.
    bare = _run_program(aoti_folder, "hello", python_flags=("-I", "-S"))
    assert bare.returncode == 1 and bare.stderr.count("\n") == 1, bare.stderr
    assert "needs torch" in bare.stderr and sys.executable in bare.stderr
