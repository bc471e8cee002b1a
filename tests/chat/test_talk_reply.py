"""`chat talk` and `chat reply` as library loops: quitting, end of input, Ctrl-C, JSON lines,
and bad input that must never crash them."""

import io
import json

import torch

from tests.chat.inference_helpers import BAD_INPUTS, SENTENCES, tiny_run, trained_tiny_bot
from torchtutor import cli
from torchtutor.chat.infer.options import DecodeOptions
from torchtutor.chat.reply import reply_lines
from torchtutor.chat.talk import format_reply, ranking, talk


def feeder(lines, end=EOFError):
    """A stand-in for `input`: hands out lines, then raises `end` (Ctrl-D or Ctrl-C)."""
    prompts = []
    queue = list(lines)

    def read(prompt):
        prompts.append(prompt)
        if not queue:
            raise end
        return queue.pop(0)

    return read, prompts


def test_talk_answers_until_quit():
    bot = trained_tiny_bot()
    read, prompts = feeder(["hello there!", "how are you?", "quit", "never read"])
    out = io.StringIO()
    assert talk(bot, DecodeOptions(), read, out) == 2
    lines = out.getvalue().splitlines()
    assert lines == ["Bot: How are you?", "Bot: I am fine thank you."]
    assert prompts == ["> "] * 3
    read, _ = feeder(["  Q  "])
    assert talk(bot, DecodeOptions(), read, io.StringIO()) == 0


def test_talk_ends_cleanly_on_ctrl_d_and_ctrl_c():
    bot = trained_tiny_bot()
    for end in (EOFError, KeyboardInterrupt):
        read, _ = feeder(["hello there!"], end=end)
        out = io.StringIO()
        assert talk(bot, DecodeOptions(), read, out) == 1
        assert out.getvalue().endswith("\n")


def test_talk_survives_bad_input_and_says_why():
    bot = trained_tiny_bot(has_unk=False)
    read, _ = feeder(BAD_INPUTS + ["zzyzx hello there"])
    out = io.StringIO()
    blank = sum(1 for line in BAD_INPUTS if not line.strip())   # a new prompt, no reply
    assert talk(bot, DecodeOptions(method="beam", beam_size=3, n_best=2), read,
                out) == len(BAD_INPUTS) + 1 - blank
    text = out.getvalue()
    assert "I need some words I know" in text
    assert "your message was long" in text
    assert "words I do not know (skipped): zzyzx" in text


def test_reply_json_lines_in_order_with_scores():
    bot = trained_tiny_bot()
    out, err = io.StringIO(), io.StringIO()
    inputs = SENTENCES[:3] + [""]
    assert reply_lines(bot, [t + "\n" for t in inputs], DecodeOptions(), True, out, err,
                       batch_size=2) == 4
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r["input"] for r in records] == inputs
    assert [r["reply"] for r in records[:3]] == ["How are you?", "I am fine thank you.",
                                                 "What is your name?"]
    # --json keeps the model's own tokens beside the display text.
    assert [r["tokens"] for r in records[:3]] == ["how are you ?", "i am fine thank you .",
                                                  "what is your name ?"]
    assert all(r["score"] < 0 for r in records[:3])
    assert records[3]["reply"] == "" and records[3]["score"] is None and records[3]["empty"]


def test_reply_plain_text_survives_bad_input():
    bot = trained_tiny_bot()
    out, err = io.StringIO(), io.StringIO()
    inputs = BAD_INPUTS + ["hello there!"]
    reply_lines(bot, inputs, DecodeOptions(method="sample", seed=1, top_k=3), False, out, err)
    # One line per input, even for inputs that get no reply.
    assert len(out.getvalue().split("\n")) == len(inputs) + 1
    assert "note:" in err.getvalue()


def test_reply_json_shows_n_best():
    bot = trained_tiny_bot()
    out = io.StringIO()
    reply_lines(bot, ["hello there!"], DecodeOptions(method="beam", beam_size=4, n_best=3),
                True, out, io.StringIO())
    record = json.loads(out.getvalue())
    assert record["reply"] == "How are you?"
    assert len(record["alternatives"]) == 2
    assert all(a["score"] <= record["score"] for a in record["alternatives"])


# --- the commands, on a real run folder --------------------------------------------------------

def run_cli(argv, stdin_text, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(stdin_text.encode()),
                                                      encoding="utf-8"))
    capsys.readouterr()   # drop what building the run printed
    code = cli.main(argv)
    return code, capsys.readouterr()


def test_talk_command_until_quit(monkeypatch, capsys):
    run = str(tiny_run())
    lines = "\n".join(BAD_INPUTS[:2] + ["hello", "\U0001F600 \x00", "quit", "not read"])
    code, captured = run_cli(["chat", "talk", "--run", run, "--device", "cpu"], lines + "\n",
                             monkeypatch, capsys)
    assert code == 0
    # the two blank lines get a new prompt each, not a reply
    assert captured.out.count("Bot:") == 2 and captured.out.count("> ") == 5
    code, captured = run_cli(["chat", "talk", "--run", run, "--decoder", "sample", "--seed",
                              "1"], "hello\n", monkeypatch, capsys)   # ends at end of input
    assert code == 0 and captured.out.count("Bot:") == 1


def test_reply_command_arguments_and_stdin(monkeypatch, capsys):
    run = str(tiny_run(has_unk=False))
    code, captured = run_cli(["chat", "reply", "--run", run, "--json", "hello", "",
                              "zzyzx"], "", monkeypatch, capsys)
    assert code == 0
    records = [json.loads(line) for line in captured.out.splitlines()]
    assert [r["input"] for r in records] == ["hello", "", "zzyzx"]
    assert isinstance(records[0]["score"], float) and records[1]["score"] is None
    assert records[2]["empty"] and records[2]["unknown_words"] == ["zzyzx"]
    stdin = "\n".join(BAD_INPUTS).replace("\ud800", "\ufffd") + "\n"
    code, captured = run_cli(["chat", "reply", "--run", run, "--decoder", "beam"], stdin,
                             monkeypatch, capsys)
    assert code == 0 and len(captured.out.splitlines()) == stdin.count("\n")


def test_reply_command_invalid_utf8_and_bad_run(monkeypatch, capsys, tmp_path):
    run = str(tiny_run())
    capsys.readouterr()
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"hel\xfflo\n\xc3\n")))
    assert cli.main(["chat", "reply", "--run", run]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    assert cli.main(["chat", "reply", "--run", str(tmp_path / "none"), "hi"]) == 2
    assert "error:" in capsys.readouterr().err
    assert cli.main(["chat", "reply", "--run", run, "--temperature", "0", "hi"]) == 2


def test_reply_command_int8(monkeypatch, capsys):
    run = str(tiny_run())
    code, captured = run_cli(["chat", "reply", "--run", run, "--int8", "--json", "hello",
                              "\U0001F600"], "", monkeypatch, capsys)
    assert code == 0 and len(captured.out.splitlines()) == 2
    assert cli.main(["chat", "reply", "--run", run, "--int8", "--device", "cuda", "hi"]) == 2
    assert "CPU only" in capsys.readouterr().err


def test_a_reply_with_no_words_is_shown_as_such():
    from types import SimpleNamespace

    from torchtutor.chat.talk import format_reply
    silent = SimpleNamespace(text="", empty=False, alternatives=[], unknown_words=[],
                             truncated=False)
    blank_input = SimpleNamespace(text="", empty=True, alternatives=[], unknown_words=[],
                                  truncated=False)
    assert format_reply(silent, True)[0] == "Bot: (no reply)"
    assert format_reply(blank_input, True)[0] == "Bot: ..."


def test_only_int8_loads_int8_copies(monkeypatch, capsys):
    from torchtutor.chat.fast import int8

    loaded = []
    real = int8.load_chatbot

    def spy(run, device="auto", int8=False):
        loaded.append(real(run, device, int8))
        return loaded[-1]
    monkeypatch.setattr("torchtutor.chat.reply.load_chatbot", spy)
    run = str(tiny_run())
    for flags in ([], ["--int8"]):
        code, captured = run_cli(["chat", "reply", "--run", run, "--device", "cpu", "--json",
                                  *flags, "hello"], "", monkeypatch, capsys)
        assert code == 0 and json.loads(captured.out)["input"] == "hello"
    default, quantized = (type(bot.model.out) for bot in loaded)
    assert default is torch.nn.Linear and quantized is int8.DirectInt8Linear


def test_talk_n_best_says_what_orders_it():
    bot = trained_tiny_bot()
    options = DecodeOptions(method="beam", beam_size=4, n_best=3, length_penalty=1.0)
    read, prompts = feeder(["", "   ", "hello there!", "quit"])
    out = io.StringIO()
    assert talk(bot, options, read, out) == 1
    assert prompts == ["> "] * 4   # each blank line: a new prompt and nothing else
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("Bot: ")
    assert lines[1].startswith("     other replies, best first by log-prob / length**")
    assert [line[:8] for line in lines[2:4]] == ["     2. ", "     3. "]
    plain = DecodeOptions(method="beam", beam_size=4, n_best=3, length_penalty=0.0)
    reply = bot.reply_batch(["hello there!"], plain)[0]
    scores = [reply.score] + [score for _, score in reply.alternatives]
    assert scores == sorted(scores, reverse=True)   # unnormalized: in log-prob order
    assert format_reply(reply, True, ranking(plain))[1].startswith(
        "     other replies, best first (log-prob")


def test_talk_in_a_terminal_keeps_a_readline_history(tmp_path, monkeypatch):
    import readline

    from torchtutor.chat import talk as talk_module

    monkeypatch.setenv("TORCHTUTOR_CACHE", str(tmp_path))
    readline.clear_history()
    save = talk_module.enable_line_editing()
    readline.add_history("hello there")
    save()
    assert (tmp_path / "talk_history").read_text().splitlines()[-1] == "hello there"
    readline.clear_history()
    talk_module.enable_line_editing()   # the next session starts with it
    assert readline.get_history_item(readline.get_current_history_length()) == "hello there"
