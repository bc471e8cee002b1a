"""MMI reranking, the backward model's direction, and the decoding options that steer."""

import math
from dataclasses import replace

import pytest
import torch

from tests.chat.inference_helpers import (
    SENTENCES,
    _Base,
    make_vocab,
    tiny_bot,
    trained_tiny_bot,
)
from torchtutor.chat.data.text import normalize
from torchtutor.chat.data.vocab import EOS
from torchtutor.chat.infer import rerank
from torchtutor.chat.infer.options import DecodeOptions
from torchtutor.runtime.errors import UserError


class FavouriteWordBackward(_Base):
    """A hand-built backward model: log p(query | reply) is high only when the reply holds
    `favourite`. Its log-probs for every target position: uniform, plus a bonus for EOS."""

    def __init__(self, vocab_size: int, favourite: int):
        super().__init__()
        self.vocab_size, self.favourite = vocab_size, favourite

    def encode(self, inputs, lengths):
        outputs, mask, hidden = super().encode(inputs, lengths)
        return outputs, mask, (inputs == self.favourite).any(0).float().view(1, -1, 1)

    def decode_teacher_forced(self, targets, hidden, encoder_outputs, encoder_mask):
        steps, batch = targets.shape
        logits = torch.zeros(steps, batch, self.vocab_size)
        logits += 5.0 * hidden[0, :, 0].view(1, batch, 1) * torch.nn.functional.one_hot(
            targets, self.vocab_size)
        return logits.log_softmax(-1)


def test_mmi_picks_the_candidate_with_the_best_combined_score():
    vocab = make_vocab()
    fine, jazz = vocab.word2index["fine"], vocab.word2index["jazz"]
    backward = FavouriteWordBackward(len(vocab), jazz)
    query = [vocab.word2index["hello"], EOS]
    generic = ([fine, EOS], -1.0)            # greedy's: the likeliest under the forward model
    specific = ([jazz, jazz, EOS], -3.0)
    ranked = rerank.mmi_rerank(backward, [query], [[generic, specific]], 1.0, 0.0)[0]
    assert ranked[0] == specific and ranked[1] == generic
    # The order is exactly the combined score's.
    rel = rerank.sequence_log_probs(backward, [generic[0], specific[0]], [query, query])
    combined = [generic[1] + rel[0], specific[1] + rel[1]]
    assert combined[1] > combined[0]
    # Weight 0 is plain likelihood: greedy's reply wins again; a length bonus can flip it.
    assert rerank.mmi_rerank(backward, [query], [[generic, specific]], 0.0, 0.0)[0][0] == generic
    assert rerank.mmi_rerank(backward, [query], [[generic, specific]], 0.0, 5.0)[0][0] == specific


def test_rerank_never_scores_worse_than_greedy_on_a_real_model():
    bot = replace(trained_tiny_bot(), backward=tiny_bot(seed=1, hidden=32).model)
    texts = [normalize(s) for s in SENTENCES]
    greedy = bot.reply_batch(texts, DecodeOptions())
    options = DecodeOptions(method="greedy", rerank="mmi", candidates=6, seed=0, mmi_weight=1.0)
    chosen = bot.reply_batch(texts, options)

    def combined(reply, text):
        ids = bot.vocab.encode(" ".join(reply.words))[0] + [EOS]
        query = bot.vocab.encode(text)[0] + [EOS]
        forward = rerank.sequence_log_probs(bot.model, [query], [ids])[0]
        return forward + rerank.sequence_log_probs(bot.backward, [ids], [query])[0]

    for text, g, c in zip(texts, greedy, chosen, strict=True):
        assert combined(c, text) >= combined(g, text) - 1e-4
        # The score shown stays the forward model's log p(reply | query).
        ids = bot.vocab.encode(" ".join(c.words))[0] + [EOS]
        query = bot.vocab.encode(text)[0] + [EOS]
        assert c.score == pytest.approx(rerank.sequence_log_probs(bot.model, [query], [ids])[0],
                                        abs=1e-3)


def test_min_length_and_repetition_penalty_steer_but_keep_the_scores():
    bot = trained_tiny_bot()
    texts = [normalize(s) for s in SENTENCES]
    for method in ("greedy", "beam"):
        options = DecodeOptions(method=method, beam_size=3, min_length=6,
                                repetition_penalty=50.0)
        for text, reply in zip(texts, bot.reply_batch(texts, options), strict=True):
            assert len(reply.words) >= 6
            assert len(set(reply.words)) == len(reply.words)   # 50x: never twice
            ids = bot.vocab.encode(" ".join(reply.words))[0]
            ids = ids + [EOS] if len(ids) < bot.max_length else ids
            query = bot.vocab.encode(text)[0] + [EOS]
            assert reply.score == pytest.approx(
                rerank.sequence_log_probs(bot.model, [query], [ids])[0], abs=1e-3)


@pytest.mark.parametrize("options", [
    DecodeOptions(temperature=0.0), DecodeOptions(temperature=-1.0),
    DecodeOptions(temperature=math.inf),
    DecodeOptions(temperature=5e-324),   # 0 in float32: sampling would divide 0 by 0
    DecodeOptions(beam_size=10**9), DecodeOptions(seed=2**70), DecodeOptions(seed=-1),
    DecodeOptions(candidates=-1), DecodeOptions(rerank="maybe"),
    DecodeOptions(method="sample", rerank="mmi", candidates=0),
    DecodeOptions(mmi_weight=math.nan), DecodeOptions(repetition_penalty=0.5),
    DecodeOptions(min_length=-2), DecodeOptions(method="beam", beam_size=2, n_best=3),
    DecodeOptions(top_p=math.nan), DecodeOptions(length_penalty=math.inf),
])
def test_bad_decoding_options_are_one_line_errors(options):
    with pytest.raises(UserError) as error:
        options.check()
    assert "\n" not in str(error.value)


def test_tiny_temperature_and_top_p_sample_the_best_word():
    bot = trained_tiny_bot()
    texts = [normalize(s) for s in SENTENCES]
    greedy = [r.words for r in bot.reply_batch(texts, DecodeOptions(method="greedy"))]
    for options in (DecodeOptions(method="sample", temperature=1e-40, seed=0),
                    DecodeOptions(method="sample", top_p=1e-300, seed=0)):
        assert [r.words for r in bot.reply_batch(texts, options)] == greedy


def _flags(**given):
    from torchtutor.cli import build_parser

    argv = ["chat", "reply", "--run", "R"]
    for name, value in given.items():
        argv += [f"--{name.replace('_', '-')}", str(value)]
    return build_parser().parse_args(argv)


def _options(has_backward: bool, **given) -> DecodeOptions:
    """The decoder that `chat reply` with these flags resolves for a run."""
    from torchtutor.chat.infer.options import resolve_options
    from torchtutor.cli import decoding_given

    return resolve_options(decoding_given(_flags(**given)), has_backward)


def test_the_default_decoder_and_greedy_one_flag_away():
    from torchtutor.chat.infer.options import BEST_DECODING
    from torchtutor.cli import decoding_given

    assert decoding_given(_flags()) == {}
    assert decoding_given(_flags(decoder="beam", beam_size=3)) == {"method": "beam",
                                                                   "beam_size": 3}
    assert _options(has_backward=True) == BEST_DECODING
    assert _options(has_backward=False) == DecodeOptions()
    greedy = _options(has_backward=True, decoder="greedy")
    assert greedy.method == "greedy" and greedy.rerank == "none"
    tuned = _options(has_backward=True, mmi_weight=1.5)
    assert tuned.rerank == "mmi" and tuned.mmi_weight == 1.5 and tuned.method == "beam"
    with pytest.raises(UserError, match="backward model"):
        _options(has_backward=False, rerank="mmi")
    with pytest.raises(UserError):
        _options(has_backward=True, beam_size=10**9)


@pytest.mark.parametrize("flags", [["--beam-size", "1000000000"], ["--seed", str(2**70)],
                                   ["--temperature", "nan"], ["--candidates", "-1"],
                                   ["--rerank", "mmi", "--mmi-weight", "inf"]])
def test_the_command_line_refuses_bad_decoding_options_in_one_line(flags, tmp_path, capsys):
    from torchtutor import cli

    assert cli.main(["chat", "reply", "--run", str(tmp_path), *flags, "hi"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


def test_the_default_decoder_is_its_searches_decoded_together_and_shows_model_scores():
    """MMI's beam hypotheses and samples share each decoder step (search.run); the reply is
    the one the same searches run one at a time would give, and its score is the model's
    log p(reply | query)."""
    from torchtutor.chat.infer import search

    bot = replace(trained_tiny_bot(), backward=tiny_bot(seed=1, hidden=32).model)
    texts = [normalize(s) for s in SENTENCES]
    options = DecodeOptions(method="beam", beam_size=4, rerank="mmi", candidates=3, seed=0,
                            top_p=0.9, mmi_weight=1.0, n_best=2)
    replies = bot.reply_batch(texts, options)
    queries = [bot.vocab.encode(text)[0] + [EOS] for text in texts]
    rules = search.Rules(has_unk=bot.vocab.has_unk)
    alone = rerank.mmi_rerank(bot.backward, queries, rerank.pool(
        search.beam_search(bot.model, queries, bot.max_length, 4, 1.0, rules),
        search.sample(bot.model, queries, bot.max_length, 3, options,
                      torch.Generator().manual_seed(0), rules)), 1.0, 0.0)
    assert [r.words for r in replies] == [bot.vocab.decode(ranked[0][0]) for ranked in alone]
    for query, reply, ranked in zip(queries, replies, alone, strict=True):
        assert reply.words
        fp32 = rerank.sequence_log_probs(bot.model, [query], [ranked[0][0]])[0]
        assert reply.score == pytest.approx(fp32, abs=1e-4)
