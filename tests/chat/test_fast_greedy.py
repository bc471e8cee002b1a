"""Fast paths of batch-1 greedy decoding give what the general paths give: the encoder without
packing (inputs of equal length) and checked int8 greedy search (fp32 redo on near-ties)."""

import copy

import pytest
import torch

from tests.chat.inference_helpers import BAD_INPUTS, SENTENCES, tiny_bot, trained_tiny_bot
from torchtutor.chat.infer.decode import (
    CHECK_MARGIN,
    DecodeOptions,
    attach_int8_draft,
    checked_greedy,
    greedy_search,
    prepare_input,
    reply_batch,
)
from torchtutor.chat.model import ModelConfig, Seq2Seq


@pytest.mark.parametrize("compat", [False, True])
def test_unpacked_encoder_equals_packed(compat):
    torch.manual_seed(0)
    model = Seq2Seq(ModelConfig(vocab_size=40, hidden_size=16, dropout=0.0,
                                tutorial_compat=compat)).eval()
    short = torch.randint(4, 40, (5, 1))
    # Alone, the input has no padding and skips packing; beside a longer one it is packed.
    padded = torch.cat([torch.cat([short, torch.zeros(3, 1, dtype=torch.long)]),
                        torch.randint(4, 40, (8, 1))], dim=1)
    with torch.inference_mode():
        out1, mask1, hidden1 = model.encode(short, torch.tensor([5]))
        out2, mask2, hidden2 = model.encode(padded, torch.tensor([5, 8]))
    torch.testing.assert_close(out1[:, 0], out2[:5, 0])
    assert (out2[5:, 0] == 0).all() and mask1.all() and not mask2[5:, 0].any()
    torch.testing.assert_close(hidden1[:, 0], hidden2[:, 0])


def test_checked_greedy_equals_fp32_greedy():
    bot = trained_tiny_bot()
    ids = [prepare_input(bot.vocab, t, bot.max_length).ids for t in SENTENCES]
    draft = attach_int8_draft(copy.copy(bot)).draft
    with torch.inference_mode():
        exact, exact_scores, _ = greedy_search(bot.model, ids, bot.max_length)
        gaps: list[float] = []
        greedy_search(draft, ids, bot.max_length, margins=gaps)
        assert min(gaps) > CHECK_MARGIN   # so the int8 draft's own replies are compared here
        for batch in (ids, [ids[0]]):
            tokens, _ = checked_greedy(bot.model, draft, batch, bot.max_length)
            assert tokens == exact[:len(batch)]
        # A margin no reply meets: every row is checked in fp32, scores included (the
        # teacher-forced pass sums in another order than step by step: equal to 1e-6).
        tokens, scores = checked_greedy(bot.model, draft, ids, bot.max_length,
                                        margin=float("inf"))
        assert tokens == exact and scores == pytest.approx(exact_scores, abs=1e-5)


def _spied(model, method: str, calls: list[int]):
    """A shallow copy of `model` whose `method` records each call's batch size."""
    original = getattr(model, method)

    def spy(*args):
        calls.append(args[0].shape[-1])
        return original(*args)

    spied = copy.copy(model)
    setattr(spied, method, spy)
    return spied


def test_checked_greedy_checks_only_near_ties():
    bot = trained_tiny_bot()
    ids = [prepare_input(bot.vocab, t, bot.max_length).ids for t in SENTENCES]
    gaps: list[float] = []
    with torch.inference_mode():
        greedy_search(bot.model, ids, bot.max_length, margins=gaps)
        assert len(gaps) == len(ids) and all(g >= 0 for g in gaps)
        # The fp32 model as its own draft: only rows with a gap below the margin are checked,
        # in one teacher-forced pass, and every one passes, so nothing is decoded again.
        checked, redone = [], []
        fp32 = _spied(_spied(bot.model, "decode_teacher_forced", checked), "decode_step", redone)
        tight = sorted(gaps)[len(gaps) // 2]
        tokens, scores = checked_greedy(fp32, bot.model, ids, bot.max_length, margin=tight)
    unsure = sum(g < tight for g in gaps)
    assert 0 < unsure < len(ids) and checked == [unsure] and redone == []
    exact, exact_scores, _ = greedy_search(bot.model, ids, bot.max_length)
    assert tokens == exact and scores == pytest.approx(exact_scores, abs=1e-4)


def test_checked_greedy_decodes_again_the_replies_fp32_would_not_give():
    bot = trained_tiny_bot()
    ids = [prepare_input(bot.vocab, t, bot.max_length).ids for t in SENTENCES]
    # A poor draft: the fp32 weights with noise, so some of its replies are wrong.
    torch.manual_seed(1)
    draft = copy.deepcopy(bot.model)
    with torch.no_grad():
        for p in draft.parameters():
            p.add_(torch.randn_like(p) * 0.3 * p.std())
    with torch.inference_mode():
        exact, exact_scores, _ = greedy_search(bot.model, ids, bot.max_length)
        drafted = greedy_search(draft, ids, bot.max_length)[0]
        wrong = sum(a != b for a, b in zip(drafted, exact, strict=True))
        redone: list[int] = []
        fp32 = _spied(bot.model, "decode_step", redone)
        tokens, scores = checked_greedy(fp32, draft, ids, bot.max_length, margin=float("inf"))
    assert 0 < wrong < len(ids) and set(redone) == {wrong}
    assert tokens == exact and scores == pytest.approx(exact_scores, abs=1e-4)


def test_default_bot_uses_the_draft_and_survives_bad_input():
    bot = copy.copy(tiny_bot())
    attach_int8_draft(bot)
    assert bot.draft is not bot.model
    plain = copy.copy(bot)
    del plain.draft
    texts = ["hello", "how are you ?"]
    assert [r.text for r in reply_batch(bot, texts)] == \
        [r.text for r in reply_batch(plain, texts)]
    assert len(reply_batch(bot, BAD_INPUTS, DecodeOptions())) == len(BAD_INPUTS)


def test_an_unsure_model_falls_back_to_fp32_and_the_draft_comes_back_by_itself():
    # An unsure model (output layer scaled down: every word nearly as likely as the next):
    # near-ties in every reply, so checking would cost more than fp32 alone.
    bot = copy.copy(tiny_bot())
    bot.model = copy.deepcopy(bot.model)
    sure_weight = bot.model.out.weight.detach().clone()
    with torch.no_grad():
        bot.model.out.weight.mul_(0.01)
    attach_int8_draft(bot)
    policy = bot.draft.policy
    ids = [prepare_input(bot.vocab, t, bot.max_length).ids for t in SENTENCES]
    drafted: list[int] = []
    bot.draft = _spied(bot.draft, "decode_step", drafted)
    bot.draft.policy = policy
    with torch.inference_mode():
        exact, exact_scores, _ = greedy_search(bot.model, ids, bot.max_length)
        calls = 0
        while policy.expected <= 1.0:
            checked_greedy(bot.model, bot.draft, ids, bot.max_length)
            calls += 1
            assert calls < 10, "the policy never gave up on the draft"
        # From now on plain fp32 greedy, and no call spends time on the draft.
        drafted.clear()
        for _ in range(50):
            tokens, scores = checked_greedy(bot.model, bot.draft, ids, bot.max_length)
            assert tokens == exact and scores == exact_scores
        assert drafted == [] and policy.expected > 1.0
        # The fp32 model turns sure (as a run trains on): fp32's own margins bring the draft
        # back within a few calls.
        with torch.no_grad():
            bot.model.out.weight.copy_(sure_weight * 30.0)
        calls = 0
        while not drafted:
            checked_greedy(bot.model, bot.draft, ids, bot.max_length)
            calls += 1
            assert calls < 80, "the draft never came back"


def test_a_sure_model_keeps_the_draft():
    bot = copy.copy(trained_tiny_bot())
    attach_int8_draft(bot)
    ids = [prepare_input(bot.vocab, t, bot.max_length).ids for t in SENTENCES]
    with torch.inference_mode():
        for _ in range(20):
            checked_greedy(bot.model, bot.draft, ids, bot.max_length)
    assert bot.draft.policy.expected < 0.6


def test_fp32_scores_on_request():
    bot = copy.copy(trained_tiny_bot())
    attach_int8_draft(bot, fp32_scores=True)
    with torch.inference_mode():
        ids = [prepare_input(bot.vocab, t, bot.max_length).ids for t in SENTENCES]
        exact, exact_scores, _ = greedy_search(bot.model, ids, bot.max_length)
    replies = reply_batch(bot, SENTENCES)
    assert [r.score for r in replies] == exact_scores
