"""Decoders: greedy stops at EOS per sequence, beam 1 == greedy, beam beats greedy where it
should, sampling knobs, repeat blocking, and bad input that must never crash."""

import math

import pytest
import torch

from tests.chat.inference_helpers import (
    BAD_INPUTS,
    EchoModel,
    ScriptedModel,
    bot_for,
    make_vocab,
    probability_table,
    tiny_bot,
)
from torchtutor.chat.data.text import normalize
from torchtutor.chat.data.vocab import EOS, SOS, UNK
from torchtutor.chat.infer import search
from torchtutor.chat.infer.chatbot import prepare_input
from torchtutor.chat.infer.display import display_text
from torchtutor.chat.infer.options import DecodeOptions
from torchtutor.runtime.errors import UserError

SPECIAL_NAMES = {"PAD", "SOS", "EOS", "UNK"}


def echo_bot(max_length=10, has_unk=True):
    vocab = make_vocab(has_unk)
    return bot_for(EchoModel(len(vocab)), vocab, max_length)


def test_greedy_batch_stops_each_sequence_at_its_own_eos():
    bot = echo_bot()
    texts = ["Hello there!", "how are you?", "good bye", "I am fine, thank you."]
    replies = bot.reply_batch(texts, DecodeOptions())
    # What a person reads (chat.display); `words` keeps the model's tokens.
    assert [r.text for r in replies] == ["Hello there!", "How are you?", "Good bye",
                                         "I am fine thank you."]
    assert replies[3].words == ["i", "am", "fine", "thank", "you", "."]
    assert [r.words for r in replies][0] == ["hello", "there", "!"]
    for r in replies:
        assert not SPECIAL_NAMES & set(r.words)
        assert not r.empty and not r.truncated and r.unknown_words == []
        assert r.score < 0 and math.isfinite(r.score)
    # Same replies one at a time as in a batch.
    assert [bot.reply_batch([t])[0].text for t in texts] == [r.text for r in replies]


def test_greedy_tokens_end_with_eos_and_never_show_specials():
    bot = tiny_bot()
    ids = [prepare_input(bot.vocab, t, bot.max_length).ids for t in ["hello", "how are you ?"]]
    tokens = [t for t, _ in search.greedy(bot.model, ids, bot.max_length)]
    for row in tokens:
        assert len(row) <= bot.max_length
        assert EOS not in row[:-1] and SOS not in row and UNK not in row
    for reply in bot.reply_batch(["hello", "how are you ?", "good bye"]):
        assert not SPECIAL_NAMES & set(reply.words)


def test_unknown_words_map_to_unk_or_are_skipped():
    with_unk = prepare_input(make_vocab(True), "hello zzyzx there", 10)
    assert with_unk.unknown_words == ["zzyzx"]
    assert with_unk.ids[1] == UNK and with_unk.ids[-1] == EOS and len(with_unk.ids) == 4
    without = prepare_input(make_vocab(False), "hello zzyzx there", 10)
    assert without.unknown_words == ["zzyzx"] and len(without.ids) == 3
    assert without.words == ["hello", "there"]
    only_unknown = (echo_bot(has_unk=False)).reply_batch(["zzyzx qwerty"])[0]
    assert only_unknown.empty and only_unknown.text == ""
    assert only_unknown.unknown_words == ["zzyzx", "qwerty"]


def test_long_input_is_truncated_to_what_training_saw():
    bot = echo_bot(max_length=5)
    reply = bot.reply_batch(["how are you ? " * 50])[0]
    assert reply.truncated
    # max_length 5: at most 4 words + EOS reach the encoder; the echo shows them.
    assert reply.words == ["how", "are", "you", "?"]
    assert not bot.reply_batch(["how are you ?"])[0].truncated


@pytest.mark.parametrize("method", ["greedy", "beam", "sample"])
@pytest.mark.parametrize("has_unk", [True, False])
def test_bad_input_never_crashes(method, has_unk):
    bot = tiny_bot(has_unk=has_unk)
    replies = bot.reply_batch(BAD_INPUTS, DecodeOptions(method=method, beam_size=3, seed=0))
    assert len(replies) == len(BAD_INPUTS)
    by_input = dict(zip(BAD_INPUTS, replies, strict=True))
    assert by_input[""].empty and by_input["   "].empty and by_input["\t\n"].empty
    assert by_input[" ".join(["hello"] * 1000)].truncated
    for reply in replies:
        assert isinstance(reply.text, str) and not SPECIAL_NAMES & set(reply.words)
        assert len(reply.words) <= bot.max_length


def test_beam_size_one_equals_greedy():
    texts = ["hello there", "how are you ?", "what is your name ?", "i like jazz", "zzz",
             "do you like music ?", "yes"]
    for seed in range(3):
        bot = tiny_bot(seed=seed)
        greedy = bot.reply_batch(texts, DecodeOptions())
        beam = bot.reply_batch(texts, DecodeOptions(method="beam", beam_size=1))
        assert [r.text for r in beam] == [r.text for r in greedy]
        for b, g in zip(beam, greedy, strict=True):
            assert b.score == pytest.approx(g.score, abs=1e-4)


def test_beam_finds_a_likelier_reply_than_greedy():
    # Tokens: 4 = 'hello', 5 = 'there'. From SOS 'hello' is likeliest (0.5), but after it the
    # mass is spread thin; 'there' (0.4) is followed by EOS with 0.95.
    vocab = make_vocab()
    hello, there = vocab.word2index["hello"], vocab.word2index["there"]
    size = len(vocab)
    table = probability_table(size, {SOS: {hello: 0.5, there: 0.4},
                                     hello: {EOS: 0.3},
                                     there: {EOS: 0.95}})
    bot = bot_for(ScriptedModel(table), vocab, max_length=6)
    greedy = bot.reply_batch(["hi"], DecodeOptions())[0]
    beam = bot.reply_batch(["hi"], DecodeOptions(method="beam", beam_size=3,
                                                  length_penalty=0.0, n_best=3))[0]
    assert greedy.text == "Hello" and greedy.score == pytest.approx(math.log(0.5 * 0.3))
    assert beam.text == "There" and beam.score == pytest.approx(math.log(0.4 * 0.95), abs=1e-5)
    assert beam.score > greedy.score
    # n-best: the runners-up, best first, each no better than the winner.
    assert len(beam.alternatives) == 2
    assert beam.alternatives[0] == ("Hello", pytest.approx(math.log(0.15), abs=1e-5))
    assert all(score <= beam.score for _, score in beam.alternatives)


def test_beam_is_batched_and_length_penalty_changes_the_ranking():
    vocab = make_vocab()
    a, b = vocab.word2index["hello"], vocab.word2index["there"]
    # Short: EOS at once (0.35, 1 token). Long: 'hello there' EOS (0.6 * 0.9 * 0.9 = 0.486,
    # 3 tokens). Log-prob alone prefers the long one; dividing by length**-2 prefers the short.
    table = probability_table(len(vocab), {SOS: {EOS: 0.35, a: 0.6},
                                           a: {b: 0.9}, b: {EOS: 0.9}})
    bot = bot_for(ScriptedModel(table), vocab, max_length=6)
    long_p = 0.6 * 0.9 * 0.9
    plain = bot.reply_batch(["x", "y"], DecodeOptions(method="beam", beam_size=4,
                                                       length_penalty=0.0))
    assert [r.text for r in plain] == ["Hello there", "Hello there"]
    assert plain[0].score == pytest.approx(math.log(long_p), abs=1e-5)
    # Normalizing by length favours the longer reply even more; a negative penalty flips it.
    flipped = bot.reply_batch(["x"], DecodeOptions(method="beam", beam_size=4,
                                                    length_penalty=-2.0))[0]
    assert flipped.text == "" and flipped.score == pytest.approx(math.log(0.35), abs=1e-5)


def test_beam_and_greedy_on_a_real_model_batch_equals_single():
    bot = tiny_bot(seed=4)
    texts = ["hello", "how are you ?", "what is your name ?"]
    options = DecodeOptions(method="beam", beam_size=4, n_best=2)
    batched = bot.reply_batch(texts, options)
    single = [bot.reply_batch([t], options)[0] for t in texts]
    assert [r.text for r in batched] == [r.text for r in single]
    for r in batched:
        assert len(r.alternatives) <= 1


def test_raw_beam_search_returns_sorted_hypotheses_with_eos():
    bot = tiny_bot(seed=2)
    ids = [prepare_input(bot.vocab, "hello there", 10).ids]
    ranked = search.beam_search(bot.model, ids, 10, beam_size=3, length_penalty=1.0)[0]
    assert len(ranked) >= 3
    keys = [score / len(tokens) for tokens, score in ranked]
    assert keys == sorted(keys, reverse=True)
    assert all(tokens[-1] == EOS or len(tokens) == 10 for tokens, _ in ranked)


def test_sampling_is_seeded_and_knobs_reduce_to_greedy():
    bot = tiny_bot(seed=1)
    texts = ["hello", "how are you ?", "good bye", "are you a robot ?"] * 3
    greedy = [r.text for r in bot.reply_batch(texts)]
    first = [r.text for r in bot.reply_batch(texts, DecodeOptions(method="sample", seed=7))]
    again = [r.text for r in bot.reply_batch(texts, DecodeOptions(method="sample", seed=7))]
    assert first == again
    other_seeds = {tuple(r.text for r in bot.reply_batch(texts, DecodeOptions(
        method="sample", seed=s))) for s in range(5)}
    assert len(other_seeds) > 1   # an untrained model's distribution is wide: samples differ
    for options in [DecodeOptions(method="sample", top_k=1, seed=3),
                    DecodeOptions(method="sample", top_p=1e-6, seed=3),
                    DecodeOptions(method="sample", temperature=1e-4, seed=3)]:
        assert [r.text for r in bot.reply_batch(texts, options)] == greedy


def test_top_k_limits_choices():
    vocab = make_vocab()
    a, b = vocab.word2index["hello"], vocab.word2index["there"]
    table = probability_table(len(vocab), {SOS: {a: 0.3, b: 0.25}, a: {EOS: 1.0},
                                           b: {EOS: 1.0}})
    bot = bot_for(ScriptedModel(table), vocab, max_length=4)
    seen = {r.text for r in bot.reply_batch(["x"] * 200,
                                        DecodeOptions(method="sample", top_k=2, seed=0))}
    assert seen == {"Hello", "There"}
    nucleus = {r.text for r in bot.reply_batch(["x"] * 200,
                                           DecodeOptions(method="sample", top_p=0.5, seed=0))}
    assert nucleus == {"Hello", "There"}   # 0.3 < 0.5, so the second token is needed too


@pytest.mark.parametrize("method", ["greedy", "beam"])
def test_no_repeat_ngram_blocks_repeats(method):
    vocab = make_vocab()
    a, b = vocab.word2index["hello"], vocab.word2index["there"]
    rows = {t: {a: 0.6, b: 0.3, EOS: 0.05} for t in range(len(vocab))}
    bot = bot_for(ScriptedModel(probability_table(len(vocab), rows)), vocab, max_length=8)
    options = DecodeOptions(method=method, beam_size=2)
    assert bot.reply_batch(["x"], options)[0].words == ["hello"] * 8
    options.no_repeat_ngram = 2
    words = bot.reply_batch(["x"], options)[0].words
    bigrams = list(zip(words, words[1:], strict=False))
    assert len(bigrams) == len(set(bigrams)) and len(words) >= 3
    options.no_repeat_ngram = 1
    words = bot.reply_batch(["x"], options)[0].words
    assert len(words) == len(set(words))


def test_bad_options_are_user_errors():
    bot = tiny_bot()
    for options in [DecodeOptions(method="nope"), DecodeOptions(temperature=0.0),
                    DecodeOptions(top_p=0.0), DecodeOptions(top_k=-1),
                    DecodeOptions(method="beam", beam_size=2, n_best=3),
                    DecodeOptions(no_repeat_ngram=-1)]:
        with pytest.raises(UserError):
            bot.reply_batch(["hello"], options)


def test_inputs_are_normalized_like_training():
    vocab = make_vocab()
    p = prepare_input(vocab, "  HELLO,   There!!  ", 10)
    assert p.words == normalize("  HELLO,   There!!  ").split(" ")
    assert p.words == ["hello", "there", "!", "!"] and p.unknown_words == []
    assert display_text(["hello", "there", "!", "!"]) == "Hello there!!"


def test_decoding_runs_without_autograd():
    bot = tiny_bot()
    seen = []
    original = bot.model.decode_step

    def spy(*args):
        seen.append(torch.is_inference_mode_enabled())
        return original(*args)

    bot.model.decode_step = spy
    bot.reply_batch(["hello"])
    assert seen and all(seen)


def test_int8_weights_keep_the_fitted_replies_and_survive_bad_input():
    from dataclasses import replace

    from tests.chat.inference_helpers import SENTENCES, trained_tiny_bot
    from torchtutor.chat.fast.int8 import quantize_int8

    bot = trained_tiny_bot()
    fast = replace(bot, model=quantize_int8(bot.model))
    assert type(fast.model.out) is not torch.nn.Linear   # swapped for the int8 module
    assert type(bot.model.out) is torch.nn.Linear        # the original is left alone
    exact = [r.text for r in bot.reply_batch(SENTENCES)]
    assert [r.text for r in fast.reply_batch(SENTENCES)] == exact
    for method in ("greedy", "beam"):
        assert len(fast.reply_batch(BAD_INPUTS, DecodeOptions(method=method))) == \
            len(BAD_INPUTS)


@pytest.mark.parametrize("spread", ["peaked", "flat"])
def test_sampling_shortlist_draws_from_the_same_distribution(spread):
    """`sample_tokens` samples from at most SHORTLIST words when that is exact; the draws
    follow the full top-p distribution (`filter_for_sampling`) either way, and a flat one
    that reaches beyond the shortlist still reaches all of its words."""
    from torchtutor.chat.infer.search import SHORTLIST, filter_for_sampling, sample_tokens

    vocab = 3 * SHORTLIST
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(1, vocab, generator=generator) * (6.0 if spread == "peaked" else 0.01)
    log_probs = logits.log_softmax(dim=-1)
    options = DecodeOptions(method="sample", top_p=0.9)
    expected = filter_for_sampling(log_probs, options).softmax(dim=-1)[0]
    draws = 20000
    chosen = sample_tokens(log_probs.expand(draws, vocab), options, generator)
    counts = torch.bincount(chosen, minlength=vocab).double() / draws
    assert bool((counts[expected == 0] == 0).all())          # nothing outside the nucleus
    if spread == "peaked":
        top = expected.topk(5).indices
        assert torch.allclose(counts[top], expected[top].double(), atol=0.02)
    else:
        assert int((counts > 0).sum()) > SHORTLIST
