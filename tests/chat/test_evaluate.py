"""`chat evaluate`'s numbers on a tiny fitted model, and distinct-n by hand."""

import json
import math

import pytest

from tests.chat.inference_helpers import SENTENCES, tiny_run, trained_tiny_bot
from torchtutor import cli
from torchtutor.chat.data.text import normalize
from torchtutor.chat.data.vocab import EOS
from torchtutor.chat.evaluate import (
    distinct_n,
    evaluate_pairs,
    format_report,
    generic_rate,
    relevance,
    stutter_rate,
    stutters,
    teacher_forced_loss,
    unique_replies,
)
from torchtutor.chat.infer.options import DecodeOptions
from torchtutor.runtime.errors import UserError

PAIRS = [(normalize(q), normalize(r)) for q, r in zip(SENTENCES, SENTENCES[1:], strict=False)]


def test_generic_rate_and_unique_replies_by_hand():
    replies = [["i", "don", "t", "know", "."]] * 3 + [["yes", "."], ["no", "."]]
    assert generic_rate(replies) == pytest.approx(3 / 5)
    assert unique_replies(replies) == pytest.approx(3 / 5)
    assert generic_rate([]) == 0.0 and unique_replies([]) == 0.0


def test_stutters_are_a_token_twice_in_a_row_or_a_bigram_said_twice():
    assert stutters("hello ! !".split()) and stutters("fine . fine .".split())
    assert stutters("no no".split())
    assert not stutters("i said no and no one came .".split())
    assert not stutters([]) and not stutters(["hi"])
    assert stutter_rate([["a", "a"], ["a", "b"], ["b"], []]) == pytest.approx(1 / 4)


def test_relevance_prefers_a_reply_that_predicts_the_query():
    # relevance(model, ...) reads log p(query | reply) with `model` encoding the reply. The
    # tiny bot is fitted to follow SENTENCES[i] with SENTENCES[i + 1], so as a stand-in
    # "backward" model it finds SENTENCES[1] likely after SENTENCES[0], not after SENTENCES[5].
    bot = trained_tiny_bot()
    vocab = bot.vocab
    target = normalize(SENTENCES[1])

    def ids(i):
        return vocab.encode(normalize(SENTENCES[i]))[0] + [EOS]

    assert relevance(bot.model, vocab, [target], [ids(0)]) > \
        relevance(bot.model, vocab, [target], [ids(5)]) + 1.0


def test_distinct_n_by_hand():
    replies = [["i", "am", "fine"], ["i", "am", "here"], []]
    assert distinct_n(replies, 1) == pytest.approx(4 / 6)
    assert distinct_n(replies, 2) == pytest.approx(3 / 4)
    assert distinct_n([[]], 2) == 0.0


def test_fitted_pairs_score_well_and_wrong_pairs_score_badly():
    bot = trained_tiny_bot()
    result = evaluate_pairs(bot, PAIRS, DecodeOptions(), samples=3)
    assert result["loss"] < 0.5 and result["perplexity"] == pytest.approx(math.exp(
        result["loss"]))
    assert result["bleu"] > 90     # it learned these replies word for word
    assert 0 < result["distinct_1"] <= 1 and 0 < result["distinct_2"] <= 1
    assert result["avg_reply_length"] == pytest.approx(
        sum(len(r.split()) for _, r in PAIRS) / len(PAIRS))
    assert len(result["samples"]) == 3
    text = format_report(result, "test")
    for key in ("perplexity", "BLEU (greedy)", "distinct-2", "sample exchanges"):
        assert key in text
    shuffled = [(q, PAIRS[(i + 3) % len(PAIRS)][1]) for i, (q, _) in enumerate(PAIRS)]
    worse = evaluate_pairs(bot, shuffled, DecodeOptions(), samples=0)
    assert worse["loss"] > result["loss"] + 1 and worse["bleu"] < 20


def test_loss_matches_a_step_by_step_computation():
    bot = trained_tiny_bot()
    loss, tokens = teacher_forced_loss(bot.model, bot.vocab, PAIRS[:2], batch_size=1)
    assert tokens == sum(len(r.split()) + 1 for _, r in PAIRS[:2])
    assert loss == pytest.approx(teacher_forced_loss(bot.model, bot.vocab, PAIRS[:2])[0],
                                 rel=1e-5)


def test_bad_pairs_do_not_crash():
    bot = trained_tiny_bot(has_unk=False)
    pairs = PAIRS[:2] + [("zzyzx", "hello there !"), (" ".join(["hello"] * 1000), "good bye"),
                         ("caf\u00e9 \U0001F600", "yes i am .")]
    result = evaluate_pairs(bot, pairs, DecodeOptions(method="beam", beam_size=2))
    assert math.isfinite(result["loss"]) and result["pairs"] == 5
    with pytest.raises(UserError):
        evaluate_pairs(bot, [], DecodeOptions())
    with pytest.raises(UserError):
        teacher_forced_loss(bot.model, bot.vocab, [("zzyzx", "qwerty")])


def test_evaluate_command_json_on_the_runs_test_split(capsys):
    run = str(tiny_run())
    capsys.readouterr()
    assert cli.main(["chat", "evaluate", "--run", run, "--json", "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    for key in ("loss", "perplexity", "bleu", "distinct_1", "distinct_2", "generic_rate",
                "unique_replies", "avg_reply_length"):
        assert isinstance(result[key], float) and math.isfinite(result[key])
    assert 0 < result["generic_rate"] <= 1 and 0 < result["unique_replies"] <= 1
    assert result["pairs"] > 10 and result["source"] == "test split"
    assert result["relevance"] is None   # this run has no backward model
    assert "detokenize" not in captured.err   # sacrebleu is told the text is tokenized
    assert cli.main(["chat", "evaluate", "--run", run, "--split", "valid", "--samples", "2",
                     "--decoder", "beam", "--beam-size", "3"]) == 0
    table = capsys.readouterr().out
    assert "perplexity" in table and table.count("    bot:  ") == 2
    # --limit: fewer pairs, the same ones each time
    limited = []
    for _ in range(2):
        assert cli.main(["chat", "evaluate", "--run", run, "--json", "--limit", "5",
                         "--samples", "5", "--decoder", "greedy"]) == 0
        limited.append(json.loads(capsys.readouterr().out))
    assert limited[0]["pairs"] == 5 and limited[0]["samples"] == limited[1]["samples"]
    assert f"5 of its {result['pairs']} pairs (--limit)" in limited[0]["source"]


def test_evaluate_command_on_another_corpus_with_bad_lines(tmp_path, capsys):
    run = str(tiny_run(has_unk=False))
    capsys.readouterr()
    pairs = tmp_path / "pairs.tsv"
    long_line = " ".join(["hello"] * 1000)
    pairs.write_text("hello\thi there\nzzyzx qwerty\thello\n\U0001F600\tyes\n"
                     f"{long_line}\tok\nhow are you?\ti am fine \x07 thanks\n",
                     encoding="utf-8")
    assert cli.main(["chat", "evaluate", "--run", run, "--data", str(pairs), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["pairs"] == 3 and math.isfinite(result["loss"])


def test_evaluate_on_a_run_that_held_nothing_out_says_what_works(tmp_path, capsys):
    # The demo's settings hold no pair out: the first run a newcomer evaluates.
    run = tmp_path / "demo-like"
    assert cli.main(["chat", "train", "--data", "chatterbot", "--out", str(run),
                     "--valid-fraction", "0", "--test-fraction", "0", "--min-count", "1",
                     "--steps", "2", "--hidden-size", "8", "--no-backward",
                     "--device", "cpu"]) == 0
    capsys.readouterr()
    assert cli.main(["chat", "evaluate", "--run", str(run), "--device", "cpu"]) == 2
    assert capsys.readouterr().err == ("error: no pairs to evaluate in the test split; try "
                                       "--split train, or --data PATH\n")
    assert cli.main(["chat", "evaluate", "--run", str(run), "--split", "train", "--json",
                     "--samples", "0", "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out)["pairs"] > 0


def test_the_held_out_pairs_are_the_token_store_training_read(tmp_path):
    """split_pairs reads RUN_DIR/data's store (the split TSVs there are for people); a run
    whose data folder is gone gets the same pairs from its corpus prepared again."""
    import shutil

    from torchtutor.chat import run_dir as rd
    from torchtutor.chat.data.prepare import load_prepared
    from torchtutor.chat.evaluate import split_pairs

    run = tmp_path / "run"
    shutil.copytree(tiny_run(), run)
    config = rd.read_config(run)
    expected = load_prepared(run / "data").splits
    assert len(expected["test"]) > 10 and len(expected["valid"]) > 10
    for name in ("train", "valid", "test"):
        (run / "data" / f"{name}.tsv").unlink()
    for name in ("valid", "test"):
        assert split_pairs(str(run), config, name) == expected[name]
    shutil.rmtree(run / "data")
    for name in ("valid", "test"):
        assert split_pairs(str(run), config, name) == expected[name]
