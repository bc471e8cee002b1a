"""The int8 copy: direct operator calls give torch.ao's results, packed inputs included."""

import warnings

import torch
from torch import nn
from torch.ao.nn.quantized import dynamic as nnqd
from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from torchtutor.chat.fast.int8 import DirectInt8GRU, DirectInt8Linear, quantize_int8
from torchtutor.chat.model import ModelConfig, Seq2Seq


def torch_ao_copy(model: nn.Module) -> nn.Module:
    spec = {nn.Linear: per_channel_dynamic_qconfig, nn.GRU: default_dynamic_qconfig}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(model, spec, dtype=torch.qint8).eval()


def test_direct_modules_equal_torch_ao_and_replace_every_quantized_one():
    torch.manual_seed(0)
    model = Seq2Seq(ModelConfig(vocab_size=50, hidden_size=16, encoder_layers=2,
                                decoder_layers=2, attention="general", dropout=0.1)).eval()
    ours, reference = quantize_int8(model), torch_ao_copy(model)
    assert not ours.training
    assert isinstance(ours.out, DirectInt8Linear) and isinstance(ours.decoder_gru, DirectInt8GRU)
    assert isinstance(ours.attention.key_proj, DirectInt8Linear)
    assert not any(isinstance(m, (nnqd.Linear, nnqd.GRU)) for name, m in ours.named_modules()
                   if not name.endswith(".quantized"))
    with torch.inference_mode():
        x = torch.randn(3, 16)
        assert torch.equal(ours.out(x), reference.out(x))
        seq, hx = torch.randn(5, 3, 16), torch.randn(4, 3, 16)
        for got, want in zip(ours.encoder_gru(seq, hx), reference.encoder_gru(seq, hx),
                             strict=True):
            assert torch.equal(got, want)
        got_out, got_h = ours.encoder_gru(seq)        # no initial state: zeros, as torch.ao
        want_out, want_h = reference.encoder_gru(seq)
        assert torch.equal(got_out, want_out) and torch.equal(got_h, want_h)
        packed = pack_padded_sequence(seq, torch.tensor([5, 3, 2]))
        got_packed, got_h = ours.encoder_gru(packed)
        want_packed, want_h = reference.encoder_gru(packed)
        assert torch.equal(pad_packed_sequence(got_packed)[0], pad_packed_sequence(want_packed)[0])
        assert torch.equal(got_h, want_h)
        # A whole decoder step agrees too, and stays close to the fp32 model.
        inputs, lengths = torch.randint(3, 50, (6, 2)), torch.tensor([6, 4])
        encoded = ours.encode(inputs, lengths)
        step = ours.decode_step(torch.tensor([1, 1]), encoded[2], encoded[0], encoded[1])[0]
        reference_step = reference.decode_step(torch.tensor([1, 1]), encoded[2], encoded[0],
                                               encoded[1])[0]
        assert torch.equal(step, reference_step)
        exact = model.encode(inputs, lengths)
        fp32 = model.decode_step(torch.tensor([1, 1]), exact[2], exact[0], exact[1])[0]
        assert (step - fp32).abs().max() < 0.1
