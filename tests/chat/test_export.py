"""The exported TorchScript chatbot: same normalization, same greedy replies as the eager
model, loaded and used by a separate Python process that imports only torch."""

import json
import subprocess
import sys

import pytest
import torch

from tests.chat.inference_helpers import BAD_INPUTS, SENTENCES, tiny_run, trained_tiny_bot
from torchtutor.chat.data.text import normalize
from torchtutor.chat.export.command import character_table, export_chatbot, save_exported

# A Python str with a lone surrogate cannot even be handed to TorchScript (it is not valid
# UTF-8); everything else must work.
SAFE_BAD_INPUTS = [t for t in BAD_INPUTS if "\ud800" not in t]
TEXTS = SENTENCES + ["Hello there!", "What's your name?", "Ça va? Très bien!", "a.b!c",
                     "how are you how are you how are you ?"] + SAFE_BAD_INPUTS


@pytest.fixture(scope="module", params=[True, False], ids=["unk", "no-unk"])
def exported(request):
    bot = trained_tiny_bot(has_unk=request.param)
    return bot, export_chatbot(bot)


def test_normalization_matches_training_on_all_mapped_and_sampled_characters():
    module = export_chatbot(trained_tiny_bot(has_unk=True))
    # Every character the table maps, every one below U+0800, and every 31st of the rest
    # (the whole range takes the TorchScript interpreter several seconds).
    codes = sorted({ord(c) for c in character_table()} | set(range(0x800))
                   | set(range(0x800, 0x110000, 31)))
    chars = [chr(c) for c in codes if not 0xD800 <= c <= 0xDFFF]
    # Each character between letters, so dropped marks (which join words) show up too.
    for start in range(0, len(chars), 4096):
        text = "a".join(chars[start:start + 4096])
        assert module.normalize(text) == normalize(text), f"chunk at U+{start:04X}"
    for text in TEXTS:
        assert module.normalize(text) == normalize(text)


def token_text(reply) -> str:
    """The deprecated TorchScript bot shows the model's tokens with punctuation joined back
    ("i m fine."), not chat.display's English."""
    return " ".join(reply.words).replace(" .", ".").replace(" !", "!").replace(" ?", "?")


def test_greedy_replies_equal_the_eager_model(exported):
    bot, module = exported
    eager = bot.reply_batch(TEXTS)
    assert len({r.text for r in eager}) > 5   # a fitted model: replies differ by input
    for text, reply in zip(TEXTS, eager, strict=True):
        words, score, unknown, truncated, empty = module.reply_with_score(text)
        assert words == token_text(reply), text
        assert score == pytest.approx(reply.score, abs=1e-4)
        assert (unknown, truncated, empty) == (reply.unknown_words, reply.truncated, reply.empty)


PLAIN_PROGRAM = r"""
import json, sys
import torch
bot = torch.jit.load(sys.argv[1])
texts = json.loads(sys.stdin.read())
print(json.dumps([bot.reply(t) for t in texts]))
assert not [m for m in sys.modules if m.startswith("torchtutor")], "imported torchtutor"
"""


def test_a_plain_torch_program_loads_and_chats(tmp_path):
    bot = trained_tiny_bot(has_unk=True)
    path = save_exported(export_chatbot(bot), tmp_path / "chatbot.pt", {"format": "test"})
    result = subprocess.run([sys.executable, "-c", PLAIN_PROGRAM, str(path)],
                            input=json.dumps(TEXTS), capture_output=True, text=True,
                            timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [token_text(r) for r in bot.reply_batch(TEXTS)]


@pytest.mark.filterwarnings("ignore:.*torch.jit.load.*:DeprecationWarning")
def test_export_command_on_a_run(tmp_path, capsys):
    from torchtutor import cli
    from torchtutor.chat.infer.chatbot import Chatbot

    run = tiny_run()
    out = tmp_path / "bot.pt"
    assert cli.main(["chat", "export", "--run", str(run), "--out", str(out),
                     "--format", "torchscript"]) == 0
    assert "torch.jit.load" in capsys.readouterr().out
    module = torch.jit.load(str(out))
    bot = Chatbot.load(run, "cpu")
    texts = ["hello", "how are you?", "what is ai?"] + SAFE_BAD_INPUTS
    assert [module.reply(t) for t in texts] == [token_text(r) for r in bot.reply_batch(texts)]
    assert cli.main(["chat", "export", "--format", "torchscript", "--run",
                     str(tmp_path / "missing"), "--out",
                     str(tmp_path / "x.pt")]) == 2
