"""`torchtutor demo` (make demo): train briefly, answer the fixed questions; reuse the run."""

import io
import json

from torchtutor import cli, demo


def test_demo_trains_answers_and_reuses_its_run(tmp_path, monkeypatch, capsys):
    out = tmp_path / "demo"
    monkeypatch.setattr("sys.stdin", io.StringIO(""))   # not a terminal: no chat loop
    argv = ["demo", "--out", str(out), "--time-budget", "2", "--device", "cpu"]
    assert cli.main(argv) == 0
    first = capsys.readouterr().out
    assert "Training a chatbot on the bundled ChatterBot corpus" in first
    for question in demo.QUESTIONS:
        assert f"> {question}\nBot: " in first
    replies = [line for line in first.splitlines() if line.startswith("Bot: ")]
    assert len(replies) == len(demo.QUESTIONS)
    marker = json.loads((out / demo.MARKER).read_text())
    # the chatbot, then its backward model for the default (MMI) decoder
    assert marker["complete"] and len(marker["steps"]) == 2 and min(marker["steps"]) >= 1
    assert (out / "backward" / "last.pt").is_file()

    # A finished run is reused: no training, same replies.
    assert cli.main(argv) == 0
    second = capsys.readouterr().out
    assert "already trained" in second and "Training" not in second
    assert [line for line in second.splitlines() if line.startswith("Bot: ")] == replies

    # An interrupted run (no marker) is resumed, not started over.
    (out / demo.MARKER).unlink()
    assert cli.main(argv) == 0
    assert "Resuming" in capsys.readouterr().out and demo.is_complete(out)


def test_demo_talks_when_interactive(tmp_path, monkeypatch, capsys):
    out = tmp_path / "demo"
    config = demo.DemoConfig(out=str(out), device="cpu", time_budget=1.0)
    monkeypatch.setattr("sys.stdin", io.StringIO("hello\n\U0001F600\nquit\n"))
    demo.run_demo(config, interactive=True)
    text = capsys.readouterr().out
    assert "'q' or 'quit'" in text and text.count("Bot: ") == 2
