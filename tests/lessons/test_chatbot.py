"""The chatbot lesson: every claim it prints, on the values it computes (Cornell slice and the
bundled ChatterBot corpus)."""

import math
import re

import pytest
import torch

from tests.lessons.lesson_runs import lesson_stdout, shown
from torchtutor.chat.data.batches import index_pairs, make_batch
from torchtutor.chat.data.corpus import read_cornell
from torchtutor.chat.data.vocab import EOS, PAD, UNK
from torchtutor.chat.infer import search
from torchtutor.chat.infer.chatbot import prepare_input
from torchtutor.chat.infer.display import display_text
from torchtutor.chat.model import ModelConfig, Seq2Seq
from torchtutor.lessons import chatbot

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def cornell(shared_data):
    return chatbot.load_lesson_corpus(str(shared_data / "cornell"), max_lines=3000)


@pytest.fixture(scope="module")
def bundled():
    return chatbot.load_lesson_corpus("chatterbot")


@pytest.fixture(scope="module")
def small(bundled):
    vocab = bundled.prepared.vocab
    pairs = chatbot.pick_small_batch(bundled.prepared.splits["train"])
    torch.manual_seed(0)
    model = Seq2Seq(ModelConfig(vocab_size=len(vocab), hidden_size=32)).eval()
    return vocab, make_batch(index_pairs(pairs, vocab)), model


@pytest.mark.slow
def test_cornell_slice_is_the_original_format_and_whole_conversations(cornell, shared_data,
                                                                      tmp_path):
    with open(shared_data / "cornell" / "movie_lines.txt", encoding="iso-8859-1") as f:
        first = [next(f).rstrip("\n") for _ in range(10)]
    assert cornell.raw_lines == first
    assert cornell.raw_lines[0].startswith("L1045 +++$+++ u0 +++$+++ m0 +++$+++ BIANCA")
    assert cornell.sliced.startswith("the first 3,000 of 240,857 lines")
    # The slice keeps only conversations whose lines it holds: reading it again gives them.
    folder, _ = chatbot.slice_cornell(shared_data / "cornell", 3000, tmp_path)
    assert len(read_cornell(folder).pairs) == len(cornell.corpus.pairs) > 1000
    assert not read_cornell(folder).skipped.get("unknown_line_ids")


@pytest.mark.slow
def test_counts_by_hand_equal_prepare_data_on_cornell(cornell):
    counts = chatbot.filter_and_count(cornell.corpus)
    stats = cornell.prepared.stats
    assert (counts["read"], counts["short"], counts["counted"], counts["kept_words"],
            counts["kept_pairs"]) == (stats["pairs_read"], stats["pairs_length_filtered"],
                                      stats["words_counted"], stats["words_kept"],
                                      stats["pairs_kept"])
    assert counts["kept_words"] < counts["counted"] and counts["kept_pairs"] < counts["short"]


def test_formatted_file_round_trips(bundled):
    lines, back = chatbot.formatted_file_lines(bundled.corpus)
    assert back == len(bundled.corpus.pairs)
    assert all(line.count("\t") == 1 for line in lines)
    first = bundled.corpus.pairs[0]
    assert lines[0] == f"{first.query}\t{first.reply}"


def test_normalization_examples():
    examples = chatbot.normalization_examples(chatbot.load_corpus("chatterbot"))
    raw, ascii_text, normalized = examples[0]
    assert ascii_text == "Ca va? J'ai vu «Amelie» 3 fois... Tres bien!"
    assert normalized == "ca va ? j ai vu amelie fois . . . tres bien !"
    for raw, _, normalized in examples[1:]:
        assert raw != normalized and normalized == normalized.lower()
        assert re.fullmatch(r"[a-z.!? ]+", normalized)


def test_indexes_end_with_eos(bundled):
    sentence = bundled.prepared.splits["train"][0][0]
    ids = index_pairs([(sentence, sentence)], bundled.prepared.vocab)[0][0]
    assert ids[-1] == EOS and len(ids) == len(sentence.split()) + 1


def test_small_batch_is_time_major_padded_and_masked(small):
    _, batch, _ = small
    assert batch.inputs.shape == (int(batch.lengths.max()), 5)
    assert batch.targets.shape == (batch.max_target_len, 5)
    assert batch.lengths.tolist() == sorted(set(batch.lengths.tolist()), reverse=True)
    assert torch.equal((batch.inputs != PAD).sum(0), batch.lengths)
    assert torch.equal(batch.mask.sum(0), (batch.targets != PAD).sum(0))   # column sums
    assert torch.equal(batch.mask, batch.targets != PAD)


def test_packing_then_unpacking_gives_the_padded_input(small):
    _, batch, _ = small
    packing = chatbot.demo_packing(batch.inputs, batch.lengths)
    assert torch.equal(packing["unpacked"], batch.inputs)
    assert int(packing["batch_sizes"].sum()) == int(batch.lengths.sum()) == len(packing["data"])
    assert packing["batch_sizes"][0] == 5 and packing["batch_sizes"][-1] == 1
    assert PAD not in packing["data"].tolist()


def test_encoder_by_hand_equals_model_encode(small):
    _, batch, model = small
    with torch.no_grad():
        enc = chatbot.demo_encoder(model, batch.inputs, batch.lengths)
    t = batch.inputs.size(0)
    assert enc["both_directions"].shape == (t, 5, 64) and enc["summed"].shape == (t, 5, 32)
    assert torch.allclose(enc["summed"], enc["encoder_outputs"], atol=1e-6)
    assert enc["final_hidden"].shape == (4, 5, 32)
    per_layer = enc["final_hidden"].view(2, 2, 5, 32).sum(1)
    assert torch.allclose(enc["decoder_hidden"], per_layer)
    assert torch.equal(enc["notes_decoder_hidden"], enc["final_hidden"][:2])   # layer 0 only


def test_masked_attention_gives_padding_exactly_zero(small):
    _, batch, model = small
    with torch.no_grad():
        enc = chatbot.demo_encoder(model, batch.inputs, batch.lengths)
        att = chatbot.demo_attention(model, enc["encoder_outputs"], enc["encoder_mask"],
                                     enc["decoder_hidden"])
        for method in ("dot", "general", "concat"):
            found = att[method]
            assert torch.allclose(found["scores"], chatbot.score_by_hand(
                method, found["layer"], att["query"], enc["encoder_outputs"]), atol=1e-5)
            weights, loose = found["weights"], found["weights_unmasked"]
            assert torch.allclose(weights.sum(1), torch.ones(5))
            for column, length in enumerate(batch.lengths.tolist()):
                assert weights[column, length:].sum().item() == 0.0
                if length < batch.inputs.size(0):
                    assert loose[column, length:].sum().item() > 0.0   # the notes' way


def test_hand_loss_equals_library_and_objective(small):
    _, batch, model = small
    losses = chatbot.masked_losses(model, batch)
    assert losses["by_hand"] == pytest.approx(losses["library"], abs=1e-5)
    assert losses["objective"] == pytest.approx(losses["library"], abs=1e-5)
    assert losses["tokens"] == int(batch.mask.sum())
    assert losses["notes_sum_of_step_means"] > losses["library"]   # a sum over steps


def test_teacher_forcing_changes_the_inputs_and_the_loss(small):
    _, batch, model = small
    forcing = chatbot.demo_teacher_forcing(model, batch)
    assert forcing["on"] == pytest.approx(chatbot.masked_losses(model, batch)["objective"],
                                          abs=1e-5)
    assert forcing["true_words"] == batch.targets[0].tolist()
    assert forcing["own_guesses"] != forcing["true_words"]
    assert forcing["off"] != pytest.approx(forcing["on"], abs=1e-6)


def test_clipping_bounds_the_norm(small):
    _, batch, model = small
    clipped = chatbot.demo_clipping(model, batch)
    notes, tight = clipped["notes"], clipped["small"]
    assert notes["limit"] == 50.0 and max(notes["before"]) < 50.0
    assert notes["after"] == pytest.approx(notes["before"], rel=1e-5)   # under the limit
    assert tight["limit"] < min(tight["before"])
    assert all(a <= tight["limit"] * (1 + 1e-4) for a in tight["after"])
    assert tight["after"] == pytest.approx([tight["limit"]] * 2, rel=1e-3)


def test_training_then_greedy_stops_at_eos_with_the_package_words(bundled):
    vocab, train = bundled.prepared.vocab, bundled.prepared.splits["train"]
    torch.manual_seed(0)
    model = Seq2Seq(ModelConfig(vocab_size=len(vocab), hidden_size=chatbot.HIDDEN))
    batch = make_batch(index_pairs(train[:chatbot.TRAIN_PAIRS], vocab))
    printed = chatbot.train_iterations(model, batch, iterations=60, print_every=20)
    assert [i for i, _ in printed] == [20, 40, 60] and printed[-1][1] < printed[0][1]
    greedy = chatbot.greedy_by_hand(model, vocab, train[0][0])
    words = [w for w, _ in greedy["steps"]]
    assert words[-1] == "EOS" and "EOS" not in words[:-1]
    assert len(words) < chatbot.MAX_LENGTH
    assert [vocab.word2index.get(w, EOS) for w in words] == greedy["package_tokens"]
    assert greedy["package_score"] == pytest.approx(
        sum(math.log(p) for _, p in greedy["steps"]), abs=1e-4)
    assert all(0 < p <= 1 for _, p in greedy["steps"])
    modes = chatbot.demo_dropout_modes(model, batch)
    assert modes == {"train_mode_repeats": False, "eval_mode_repeats": True}


def test_unknown_word_becomes_unk(bundled):
    prepared = prepare_input(bundled.prepared.vocab, "hello zyzzyva", chatbot.MAX_LENGTH)
    assert prepared.unknown_words == ["zyzzyva"] and prepared.ids[-2:] == [UNK, EOS]


def test_reloaded_model_replies_the_same(small, tmp_path):
    vocab, _, model = small
    ids = [vocab.word2index[w] for w in list(vocab.word2index)[:3]] + [EOS]
    reloaded = chatbot.save_and_reload(model, vocab, tmp_path)
    assert search.greedy(reloaded, [ids], 10) == search.greedy(model, [ids], 10)


def test_lesson_prints_true_claims():
    out = lesson_stdout("chatbot")
    assert shown(out, "pairs") == shown(out, "pairs read back from the file")
    for claim in ("prepare_data counted the same", "prepare_data kept the same",
                  "unpacked equals the padded input", "model.encode gives the same outputs",
                  "reloaded model's greedy reply is the same", "eval mode: two passes agree"):
        assert shown(out, claim) == "True", claim
    assert shown(out, "train mode: two passes agree") == "False"
    assert float(shown(out, "padding weight with the mask")) == 0.0
    by_hand = shown(out, "by hand: -log(gather(softmax)).masked_select(mask).mean()")
    assert by_hand == shown(out, "F.nll_loss on the masked positions") \
        == shown(out, "torchtutor's Objective")
    assert all(abs(float(v) - 1) < 1e-4 for v in shown(out, "softmax row sums")
               .strip("[]").split())
    first, last = (float(v) for v in shown(out, "average loss, first and last print")
                   .split(" -> "))
    assert last < first
    steps = re.findall(r"^   step \d+: (\S+) \(", out, re.M)
    assert steps and steps[-1] == "EOS" and "EOS" not in steps[:-1]
    assert shown(out, "torchtutor's greedy reply, as chat.infer.display shows it") \
        == display_text(steps[:-1])
    assert shown(out, "unknown words") == "['zyzzyva']"
    # The printed mask: one row per target step, five columns, summing to the printed sums.
    mask_text = re.search(r"   mask:\n((?:      .*\n)+)", out).group(1)
    rows = [[int(v) for v in row.split(",")] for row in re.findall(r"\[([\d, ]+)\]", mask_text)]
    assert len(rows) == int(shown(out, "max_target_len")) and {len(r) for r in rows} == {5}
    sums = [int(v) for v in re.findall(r"\d+", shown(out, "mask column sums"))]
    assert [sum(column) for column in zip(*rows, strict=True)] == sums
    inputs_text = re.search(r"   input_variable \(max_length, batch_size\):\n((?:      .*\n)+)",
                            out).group(1)
    inputs = [[int(v) for v in row.split(",")] for row in re.findall(r"\[([\d, ]+)\]",
                                                                      inputs_text)]
    lengths = [int(v) for v in re.findall(r"\d+", shown(out, "lengths"))]
    assert len(inputs) == max(lengths) and {len(r) for r in inputs} == {5}
    assert [sum(v != PAD for v in column) for column in zip(*inputs, strict=True)] == lengths
