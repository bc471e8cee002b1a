"""`chat attention`: the weights behind a greedy reply, and the heatmap file."""

import pytest
import torch

from tests.chat.inference_helpers import tiny_run, trained_tiny_bot
from torchtutor import cli
from torchtutor.chat.attention_map import attention_map, plot_attention
from torchtutor.runtime.errors import UserError


def test_attention_rows_match_the_reply_and_sum_to_one(tmp_path):
    bot = trained_tiny_bot()
    amap = attention_map(bot, "How are you, zzyzx?")
    assert amap.input_words == ["how", "are", "you", "zzyzx (unk)", "?", "EOS"]
    reply = bot.reply_batch(["How are you, zzyzx?"])[0]
    assert amap.output_words == reply.words + ["EOS"]
    assert amap.weights.shape == (len(amap.output_words), len(amap.input_words))
    torch.testing.assert_close(amap.weights.sum(1), torch.ones(len(amap.output_words)))
    path = plot_attention(amap, tmp_path / "sub" / "att.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in path.parent.iterdir() if p.name != "att.png"]   # no temp files


def test_attention_on_text_without_words_is_a_user_error():
    with pytest.raises(UserError):
        attention_map(trained_tiny_bot(), "\U0001F600 123 ---")


def test_attention_command_writes_a_png(tmp_path, capsys):
    run = str(tiny_run())
    out = tmp_path / "att.png"
    assert cli.main(["chat", "attention", "--run", run, "how", "are", "you?", "--out",
                     str(out)]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert cli.main(["chat", "attention", "--run", run, "\U0001F600", "--out",
                     str(tmp_path / "none.png")]) == 2
    assert not (tmp_path / "none.png").exists()
