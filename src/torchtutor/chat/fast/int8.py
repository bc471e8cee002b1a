"""int8 weights for decoding on the CPU (`--int8`): PyTorch's dynamic quantization, used directly.

`quantize_int8` quantizes a model's Linear and GRU weights (activations stay fp32), then swaps
each quantized module for a thin one that calls the same quantized operator straight away.
torch.ao's modules check their arguments in Python on every call; at batch 1 a decoder step
is only a few hundred microseconds, and those checks were about a tenth of a reply (3.35 vs
3.03 ms median for the int8 greedy replies of bench/chat_infer.py's run). The operators, and
so the numbers, are the same.
"""

import warnings
from dataclasses import replace

import torch
from torch import Tensor, nn
from torch.ao.nn.quantized import dynamic as nnqd
from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig
from torch.nn.utils.rnn import PackedSequence

from torchtutor.chat.infer.chatbot import Chatbot
from torchtutor.runtime.errors import UserError


class DirectInt8Linear(nn.Module):
    """`nnqd.Linear` without its per-call Python: the same `linear_dynamic` operator."""

    def __init__(self, quantized: nnqd.Linear):
        super().__init__()
        if quantized._packed_params.dtype != torch.qint8:
            raise ValueError("only qint8 dynamic Linear layers are supported")
        self.packed = quantized._packed_params._packed_params
        # torch.ao's Linear reduces the activations' range from its version 4 on; do the same.
        self.reduce_range = quantized.version is not None and quantized.version >= 4

    def forward(self, x: Tensor) -> Tensor:
        return torch.ops.quantized.linear_dynamic(x, self.packed, reduce_range=self.reduce_range)


class DirectInt8GRU(nn.Module):
    """`nnqd.GRU` (time-major, no dropout at inference) calling `torch.quantized_gru` itself.

    Packed sequences go through the original module, which handles their bookkeeping.
    """

    def __init__(self, quantized: nnqd.GRU):
        super().__init__()
        if quantized.batch_first:
            raise ValueError("only time-major GRUs are supported")
        self.quantized = quantized
        self.params = [weights.param for weights in quantized._all_weight_values]
        self.states = quantized.num_layers * (2 if quantized.bidirectional else 1)

    def forward(self, x: Tensor | PackedSequence, hx: Tensor | None = None,
                ) -> tuple[Tensor | PackedSequence, Tensor]:
        gru = self.quantized
        if isinstance(x, PackedSequence):
            return gru(x, hx)
        if hx is None:
            hx = x.new_zeros(self.states, x.size(1), gru.hidden_size)
        return torch.quantized_gru(x, hx, self.params, gru.bias, gru.num_layers, 0.0, False,
                                   gru.bidirectional, False)


def _swap_direct(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, nnqd.GRU):
            setattr(module, name, DirectInt8GRU(child))
        elif isinstance(child, nnqd.Linear):
            setattr(module, name, DirectInt8Linear(child))
        else:
            _swap_direct(child)


def quantize_int8(model: nn.Module) -> nn.Module:
    """A copy of `model` in eval mode whose Linear and GRU weights are int8 (CPU).

    At batch 1 decoding is bound by reading the weights (about 27 MB per step at the notes'
    size in fp32); int8 weights are a quarter of that, so replies come about 3-4x faster.
    Activations stay fp32, but the weights are rounded, so a reply can differ from the fp32
    model's where two words were nearly tied (bench/RESULTS.md gives the agreement measured).

    Linear layers get one scale per output row: the output layer's rows (one per word) span
    very different ranges, and per-row scales cut the logit-gap error to about 0.6x of one
    scale per matrix at the same speed (median 0.011 vs 0.018 nats, worst 0.046 vs 0.062,
    teacher-forced on 1,500 Cornell replies). PyTorch's dynamic GRU takes one scale per matrix.
    """
    spec = {nn.Linear: per_channel_dynamic_qconfig, nn.GRU: default_dynamic_qconfig}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # torch.ao eager quantization is marked deprecated
        quantized = torch.ao.quantization.quantize_dynamic(model, spec, dtype=torch.qint8)
    _swap_direct(quantized)
    return quantized.eval()


def int8_chatbot(bot: Chatbot) -> Chatbot:
    """`bot` with int8 copies of its model and backward model (`--int8`, CPU only): faster
    at batch 1, but approximate, so a user's explicit choice: a reply can differ from the
    trained model's where two words were nearly tied (bench/RESULTS.md)."""
    return replace(bot, model=quantize_int8(bot.model),
                   backward=quantize_int8(bot.backward) if bot.backward is not None else None)


def load_chatbot(run: str, device: str = "auto", int8: bool = False) -> Chatbot:
    """A run's Chatbot, or with `int8` (the user's choice, CPU only) its int8 copy."""
    if int8 and (device or "auto") not in ("auto", "cpu"):
        raise UserError("--int8 runs on the CPU only; leave out --device or use --device cpu")
    bot = Chatbot.load(run, "cpu" if int8 else device)
    return int8_chatbot(bot) if int8 else bot
