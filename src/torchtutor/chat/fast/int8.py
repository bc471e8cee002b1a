"""int8 weights for decoding on the CPU: PyTorch's dynamic quantization, called directly.

`quantize_int8` quantizes a model's Linear and GRU weights (activations stay fp32), then swaps
each quantized module for a thin one that calls the same quantized operator straight away.
torch.ao's modules check their arguments in Python on every call; at batch 1 a decoder step
is only a few hundred microseconds, and those checks were about a tenth of a reply (3.35 vs
3.03 ms median for the int8 greedy replies of bench/chat_infer.py's run). The operators, and
so the numbers, are the same.
"""

import warnings

import torch
from torch import Tensor, nn
from torch.ao.nn.quantized import dynamic as nnqd
from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig
from torch.nn.utils.rnn import PackedSequence


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


class DraftPolicy:
    """Whether checked int8 greedy search (chat.decode.checked_greedy) is worth running.

    An unsure model (untrained, or barely trained) has near-ties in most replies, so most of
    them are checked in fp32 and many decoded again: slower than fp32 greedy alone (0.69x the
    tutorial's searcher, against fp32's 1.7x). The policy keeps a running estimate of a
    checked reply's cost relative to an fp32 greedy reply, from what the last calls needed;
    above 1 the caller decodes in fp32 instead. While it does, fp32's own top-1/top-2 gaps
    (read from the search that runs anyway, on every `gaps_every`th call) say how many rows
    the draft would have had to check, so the estimate keeps moving and the draft comes back
    once the inputs are ones the model is sure about, without spending a call on it. (Trying
    the draft every 16th call, then at doubling intervals, cost 3% and then 1% of fp32's speed
    on an untrained model; bench/RESULTS.md.)

    Costs relative to one fp32 greedy reply, measured at the tutorial's size on a trained run
    (bench/RESULTS.md): an int8 reply 0.51, a teacher-forced fp32 check about two thirds
    (most of it the encoder); a reply decoded again costs one fp32 reply more.
    """

    draft_cost = 0.51
    check_cost = 0.67
    smoothing = 0.25       # weight of the newest call in the running estimate
    gaps_every = 4         # while the draft is off, read fp32's gaps on every 4th call

    def __init__(self, fp32_scores: bool = False):
        self.fp32_scores = fp32_scores   # scores must be fp32 for every row: no draft then
        self.expected = self.draft_cost
        self.fp32_calls = 0

    def use_draft(self) -> bool:
        return not self.fp32_scores and self.expected <= 1.0

    def wants_gaps(self) -> bool:
        """Whether this fp32-only call should read its top-1/top-2 gaps for `record` (reading
        them costs about 0.5% of a reply at batch 1, so not on every call)."""
        if self.fp32_scores:
            return False
        self.fp32_calls += 1
        return self.fp32_calls % self.gaps_every == 0

    def record(self, rows: int, checked: int, redone: int) -> None:
        """What one call of checked greedy needed: rows decoded, checked, decoded again."""
        if rows <= 0:
            return
        cost = self.draft_cost + (self.check_cost * checked + redone) / rows
        self.expected += self.smoothing * (cost - self.expected)
