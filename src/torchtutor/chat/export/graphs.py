"""The chatbot's two graphs for deployment: the encoder and one decoder step, as plain tensor
functions that `torch.export` captures with a dynamic batch and input length.

`Seq2Seq.encode` packs padded inputs, which export cannot follow, and `nn.GRU` unrolls over
time when exported, which fixes the input length. So the encoder is rewritten here: each GRU
layer and direction is a `scan` over time (torch's loop operator, kept as a loop by export and
AOTInductor), the backward direction reads every row reversed within its own length, and the
final states are read at each row's last real position. That is what packing computes; the
test checks the outputs against `Seq2Seq.encode` for padded batches. The decoder step is
`Seq2Seq.decode_step` itself (one GRU step exports fine).

Shapes stay time-major: inputs (T, B) ids, lengths (B,); the encoder gives outputs (T, B, H),
mask (T, B) and the decoder's first hidden state (layers, B, H).
"""

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch._higher_order_ops.scan import scan

from torchtutor.chat.data.vocab import EOS, SOS

MAX_BATCH = 1024
MAX_INPUT = 4096   # the loader cuts inputs to the run's max_length; this only bounds the graph


def gru_layer(x: Tensor, weight_ih: Tensor, weight_hh: Tensor, bias_ih: Tensor,
              bias_hh: Tensor) -> Tensor:
    """One GRU layer and direction over x (T, B, I) from a zero state: the state after each
    step, (T, B, H). The gate maths of nn.GRU (PyTorch's documented form).

    The outputs are written into a buffer carried by the loop (row t added through a one-hot
    weight) rather than returned per step: AOTInductor could not size per-step outputs whose
    shape holds the dynamic batch. T is at most the run's max length, so the O(T^2) is tiny.
    """
    steps, batch = x.shape[0], x.shape[1]
    hidden = weight_hh.size(1)
    gates_in = F.linear(x, weight_ih, bias_ih)                          # (T, B, 3H)
    start = x.new_zeros(batch, hidden)
    buffer = x.new_zeros(steps, batch, hidden)
    one_hot = torch.eye(steps, dtype=x.dtype, device=x.device).view(steps, steps, 1, 1)

    def step(carry: tuple[Tensor, Tensor], inputs: tuple[Tensor, Tensor]):
        state, out = carry
        gate_in, row = inputs
        gate_hh = F.linear(state, weight_hh, bias_hh)
        in_r, in_z, in_n = gate_in.chunk(3, dim=-1)
        hh_r, hh_z, hh_n = gate_hh.chunk(3, dim=-1)
        reset = torch.sigmoid(in_r + hh_r)
        update = torch.sigmoid(in_z + hh_z)
        new = torch.tanh(in_n + reset * hh_n)
        state = (1 - update) * new + update * state
        return (state, out + row * state.unsqueeze(0)), []

    (_, outputs), _ = scan(step, (start, buffer), (gates_in, one_hot))
    return outputs


class ExportEncoder(nn.Module):
    """`Seq2Seq.encode` without packing: any batch, any input length, padding allowed."""

    def __init__(self, model: nn.Module):
        super().__init__()
        gru = model.encoder_gru
        self.embedding = model.embedding
        self.hidden_size = model.config.hidden_size
        self.layers = gru.num_layers
        self.decoder_layers = model.config.decoder_layers
        self.tutorial_compat = model.config.tutorial_compat
        self.register_buffer("layer_sources", torch.tensor(model._layer_sources),
                             persistent=False)
        self.weights = nn.ParameterList()
        for layer in range(gru.num_layers):
            for suffix in ("", "_reverse"):
                for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                    self.weights.append(getattr(gru, f"{name}_l{layer}{suffix}"))

    def forward(self, inputs: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        steps, batch = inputs.shape
        hidden = self.hidden_size
        positions = torch.arange(steps, device=inputs.device).unsqueeze(1)     # (T, 1)
        ends = lengths.unsqueeze(0)                                            # (1, B)
        mask = positions < ends
        # Row b read backwards within its length: position t holds input len_b - 1 - t.
        reverse = torch.where(mask, ends - 1 - positions, positions)
        last = (lengths - 1).view(1, batch, 1).expand(1, batch, hidden)
        x = self.embedding(inputs)
        finals = []
        outputs = x
        for layer in range(self.layers):
            w = [self.weights[8 * layer + i] for i in range(8)]
            forward_out = gru_layer(x, *w[:4])
            flipped = x.gather(0, reverse.unsqueeze(2).expand(steps, batch, x.size(2)))
            backward_out = gru_layer(flipped, *w[4:])
            finals.append(forward_out.gather(0, last).squeeze(0))
            finals.append(backward_out.gather(0, last).squeeze(0))
            backward_out = backward_out.gather(0, reverse.unsqueeze(2).expand(steps, batch,
                                                                              hidden))
            x = torch.cat([forward_out, backward_out], dim=2)
            outputs = forward_out + backward_out
        # Padded positions are zero, as pad_packed_sequence leaves them.
        outputs = outputs * mask.unsqueeze(2).to(outputs.dtype)
        final = torch.stack(finals)                                   # (layers * 2, B, H)
        if self.tutorial_compat:
            start = final[:self.decoder_layers]
        else:
            start = final.view(self.layers, 2, batch, hidden).sum(dim=1)[self.layer_sources]
        return outputs, mask, start.contiguous()


class ExportDecoderStep(nn.Module):
    """One step of `Seq2Seq.decode_step`: tokens (B,), hidden, encoder outputs and mask ->
    log-probs (B, V) and the new hidden state (the attention weights are not needed)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, tokens: Tensor, hidden: Tensor, encoder_outputs: Tensor,
                encoder_mask: Tensor) -> tuple[Tensor, Tensor]:
        log_probs, hidden, _ = self.model.decode_step(tokens, hidden, encoder_outputs,
                                                      encoder_mask)
        return log_probs, hidden


def example_inputs(model: nn.Module) -> tuple[tuple[Tensor, Tensor],
                                              tuple[Tensor, Tensor, Tensor, Tensor]]:
    """Inputs for tracing: batch 2, length 3, one row padded (sizes 0 and 1 would be fixed)."""
    vocab = model.config.vocab_size
    word = min(4, vocab - 1)
    inputs = torch.tensor([[word, word], [word, EOS], [EOS, 0]], dtype=torch.long)
    lengths = torch.tensor([3, 2], dtype=torch.long)
    with torch.no_grad():
        outputs, mask, hidden = ExportEncoder(model).eval()(inputs, lengths)
    tokens = torch.full((2,), SOS, dtype=torch.long)
    return (inputs, lengths), (tokens, hidden, outputs, mask)


def dynamic_shapes() -> tuple[Any, Any]:
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    length = torch.export.Dim("length", min=1, max=MAX_INPUT)
    encoder = ({0: length, 1: batch}, {0: batch})
    decoder = ({0: batch}, {1: batch}, {0: length, 1: batch}, {0: length, 1: batch})
    return encoder, decoder


def export_programs(model: nn.Module) -> tuple[Any, Any]:
    """torch.export programs of the encoder and the decoder step (model on the CPU, eval)."""
    model = model.eval()
    encoder_args, decoder_args = example_inputs(model)
    encoder_dims, decoder_dims = dynamic_shapes()
    with torch.no_grad():
        encoder = torch.export.export(ExportEncoder(model).eval(), encoder_args,
                                      dynamic_shapes=encoder_dims)
        decoder = torch.export.export(ExportDecoderStep(model).eval(), decoder_args,
                                      dynamic_shapes=decoder_dims)
    return encoder, decoder
