"""The seq2seq model: shapes, masking, packing, and the two decoder paths agreeing."""

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

from torchtutor.chat.data.vocab import PAD, SOS
from torchtutor.chat.model import ModelConfig, Seq2Seq, decoder_layer_sources

VOCAB, HIDDEN = 23, 16


def make_model(attention="dot", compat=False, encoder_layers=2, decoder_layers=2,
               dropout=0.0, seed=0) -> Seq2Seq:
    torch.manual_seed(seed)
    return Seq2Seq(ModelConfig(vocab_size=VOCAB, hidden_size=HIDDEN,
                               encoder_layers=encoder_layers, decoder_layers=decoder_layers,
                               attention=attention, dropout=dropout, tutorial_compat=compat))


def padded_batch(lengths, vocab=VOCAB, seed=1):
    """Random ids (T, B) with PAD after each length, as the batches module lays them out."""
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.tensor(lengths)
    ids = torch.randint(3, vocab, (int(lengths.max()), len(lengths)), generator=gen)
    ids[torch.arange(ids.size(0)).unsqueeze(1) >= lengths.unsqueeze(0)] = PAD
    return ids, lengths


def masked_nll(log_probs, targets, mask):
    nll = -log_probs.gather(2, targets.unsqueeze(2)).squeeze(2)
    return nll[mask].mean()


def stepwise_log_probs(model, targets, hidden, enc_out, enc_mask):
    tokens = torch.full((targets.size(1),), SOS, dtype=torch.long)
    rows = []
    for t in range(targets.size(0)):
        log_probs, hidden, _ = model.decode_step(tokens, hidden, enc_out, enc_mask)
        rows.append(log_probs)
        tokens = targets[t]  # teacher forcing: feed the true token
    return torch.stack(rows)


@pytest.mark.parametrize("attention", ["dot", "general", "concat"])
@pytest.mark.parametrize("compat", [False, True])
def test_output_shapes(attention, compat):
    model = make_model(attention, compat)
    inputs, lengths = padded_batch([7, 5, 2])
    enc_out, enc_mask, hidden = model.encode(inputs, lengths)
    assert enc_out.shape == (7, 3, HIDDEN)
    assert enc_mask.shape == (7, 3) and enc_mask.dtype == torch.bool
    assert enc_mask.sum(0).tolist() == [7, 5, 2]
    assert hidden.shape == (2, 3, HIDDEN)
    log_probs, new_hidden, weights = model.decode_step(torch.tensor([SOS] * 3), hidden,
                                                       enc_out, enc_mask)
    assert log_probs.shape == (3, VOCAB) and new_hidden.shape == hidden.shape
    assert weights.shape == (3, 7)
    torch.testing.assert_close(log_probs.exp().sum(1), torch.ones(3))
    targets, _ = padded_batch([4, 3, 1], seed=2)
    assert model.decode_teacher_forced(targets, hidden, enc_out, enc_mask).shape == (4, 3, VOCAB)


@pytest.mark.parametrize("attention", ["dot", "general", "concat"])
@pytest.mark.parametrize("compat", [False, True])
def test_both_decoder_paths_give_same_loss_and_gradients(attention, compat):
    inputs, lengths = padded_batch([6, 6, 4, 1])
    targets, out_lengths = padded_batch([5, 2, 3, 4], seed=3)
    out_mask = torch.arange(5).unsqueeze(1) < out_lengths.unsqueeze(0)

    results = []
    for path in ("step", "whole"):
        model = make_model(attention, compat)
        enc_out, enc_mask, hidden = model.encode(inputs, lengths)
        if path == "step":
            log_probs = stepwise_log_probs(model, targets, hidden, enc_out, enc_mask)
        else:
            log_probs = model.decode_teacher_forced(targets, hidden, enc_out, enc_mask)
        loss = masked_nll(log_probs, targets, out_mask)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((loss.detach(), grads))

    (loss_a, grads_a), (loss_b, grads_b) = results
    torch.testing.assert_close(loss_a, loss_b, rtol=1e-5, atol=1e-6)
    assert grads_a.keys() == grads_b.keys() and len(grads_a) > 10
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], rtol=1e-4, atol=1e-6,
                                   msg=lambda m, n=name: f"{n}: {m}")


def test_paths_agree_in_eval_mode_with_dropout():
    model = make_model("general", dropout=0.3).eval()
    inputs, lengths = padded_batch([5, 3])
    targets, _ = padded_batch([4, 4], seed=4)
    with torch.no_grad():
        enc_out, enc_mask, hidden = model.encode(inputs, lengths)
        a = stepwise_log_probs(model, targets, hidden, enc_out, enc_mask)
        b = model.decode_teacher_forced(targets, hidden, enc_out, enc_mask)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("attention", ["dot", "general", "concat"])
def test_padding_gets_exactly_zero_attention(attention):
    model = make_model(attention)
    inputs, lengths = padded_batch([6, 3, 1])
    enc_out, enc_mask, hidden = model.encode(inputs, lengths)
    _, _, weights = model.decode_step(torch.tensor([SOS] * 3), hidden, enc_out, enc_mask)
    padding = ~enc_mask.t()
    assert padding.any()
    assert torch.all(weights[padding] == 0.0)
    assert torch.all(weights[~padding] > 0.0)
    torch.testing.assert_close(weights.sum(1), torch.ones(3))


def test_tutorial_compat_attends_to_padding():
    model = make_model("dot", compat=True)
    inputs, lengths = padded_batch([6, 2])
    enc_out, enc_mask, hidden = model.encode(inputs, lengths)
    _, _, weights = model.decode_step(torch.tensor([SOS] * 2), hidden, enc_out, enc_mask)
    assert torch.all(weights[1, 2:] > 0.0)  # the notes' attention sees the padded positions


def test_reply_does_not_depend_on_padding_or_batch_order():
    """Masking and packing together: a query decodes the same alone or padded in a batch,
    and unsorted lengths give the same per-example results as sorted ones."""
    model = make_model("concat", encoder_layers=3, decoder_layers=2)
    inputs, lengths = padded_batch([7, 4, 2, 5])
    targets, _ = padded_batch([3, 3, 3, 3], seed=5)
    with torch.no_grad():
        enc_out, enc_mask, hidden = model.encode(inputs, lengths)
        batch = model.decode_teacher_forced(targets, hidden, enc_out, enc_mask)
        for b in range(4):
            alone_in = inputs[:int(lengths[b]), b:b + 1]
            e, m, h = model.encode(alone_in, lengths[b:b + 1])
            alone = model.decode_teacher_forced(targets[:, b:b + 1], h, e, m)
            torch.testing.assert_close(alone[:, 0], batch[:, b], rtol=1e-5, atol=1e-5)


def test_unsorted_and_invalid_lengths():
    model = make_model()
    inputs, lengths = padded_batch([2, 6, 4])  # not sorted: handled
    enc_out, enc_mask, hidden = model.encode(inputs, lengths)
    order = torch.tensor([1, 2, 0])
    s_out, s_mask, s_hidden = model.encode(inputs[:, order], lengths[order])
    torch.testing.assert_close(enc_out[:, order], s_out)
    torch.testing.assert_close(hidden[:, order], s_hidden)
    assert torch.equal(enc_mask[:, order], s_mask)
    with pytest.raises(ValueError):
        model.encode(inputs, torch.tensor([2, 7, 4]))   # longer than the padded batch
    with pytest.raises(ValueError):
        model.encode(inputs, torch.tensor([0, 6, 4]))   # an empty sequence cannot be packed


def _final_hidden(model, inputs, lengths):
    packed = pack_padded_sequence(model.embedding(inputs), lengths, enforce_sorted=False)
    return model.encoder_gru(packed)[1]


def test_decoder_starts_from_summed_directions_layer_by_layer():
    model = make_model(encoder_layers=3, decoder_layers=2)
    inputs, lengths = padded_batch([5, 3])
    final = _final_hidden(model, inputs, lengths)                     # (6, B, H)
    _, _, hidden = model.encode(inputs, lengths)
    # decoder layer 0 <- encoder layer 0, decoder layer 1 (top) <- encoder layer 2 (top)
    torch.testing.assert_close(hidden[0], final[0] + final[1])
    torch.testing.assert_close(hidden[1], final[4] + final[5])


def test_tutorial_compat_decoder_takes_first_slices():
    model = make_model(compat=True)
    inputs, lengths = padded_batch([5, 3])
    final = _final_hidden(model, inputs, lengths)
    _, _, hidden = model.encode(inputs, lengths)
    torch.testing.assert_close(hidden, final[:2])  # layer 0 forward, layer 0 backward


def test_decoder_layer_sources():
    assert decoder_layer_sources(2, 2) == [0, 1]
    assert decoder_layer_sources(3, 2) == [0, 2]
    assert decoder_layer_sources(2, 1) == [1]
    assert decoder_layer_sources(1, 3) == [0, 0, 0]
    assert decoder_layer_sources(2, 4) == [0, 0, 1, 1]


def test_parameter_groups():
    model = make_model()
    enc, dec = model.encoder_parameters(), model.decoder_parameters()
    assert {id(p) for p in enc}.isdisjoint(id(p) for p in dec)
    assert {id(p) for p in enc} | {id(p) for p in dec} == {id(p) for p in model.parameters()}
    compat = make_model(compat=True)
    assert any(p is compat.embedding.weight for p in compat.decoder_parameters())


def test_bad_configs_are_refused():
    with pytest.raises(ValueError):
        ModelConfig(vocab_size=VOCAB, attention="additive")
    with pytest.raises(ValueError):
        ModelConfig(vocab_size=VOCAB, encoder_layers=1, decoder_layers=3, tutorial_compat=True)
    with pytest.raises(ValueError):
        ModelConfig(vocab_size=VOCAB, dropout=1.0)
