"""What one training step differentiates: the masked NLL of a batch's replies.

The loss is the masked negative log-likelihood of the reply's real (non-pad) tokens. The
default takes its mean over every real token of the batch; `--tutorial-compat` backpropagates
the notes' sum over time steps of each step's mean, decodes step by step, attends to padding
and has no UNK, so the two can be compared. Without compat, a fully teacher-forced batch runs
the whole-sequence decoder and projects only the real target positions onto the vocabulary.
The loss lives in an `nn.Module` so that DistributedDataParallel can wrap it under torchrun.
"""

import random

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from torchtutor.chat.data.vocab import SOS
from torchtutor.chat.model import Seq2Seq


class Objective(nn.Module):
    """The training loss of one batch, as a module (so DDP could wrap it).

    forward returns (loss to backpropagate, summed NLL over real tokens (detached)).
    """

    def __init__(self, model: Seq2Seq):
        super().__init__()
        self.model = model

    def forward(self, inputs: Tensor, lengths: Tensor, targets: Tensor, mask: Tensor,
                teacher_forced: list[bool]) -> tuple[Tensor, Tensor]:
        model = self.model
        compat = model.config.tutorial_compat
        encoder_outputs, encoder_mask, hidden = model.encode(inputs, lengths)
        if all(teacher_forced) and not compat:
            # Whole sequence; only the real positions go through the output layer.
            features = model.teacher_forced_features(targets, hidden, encoder_outputs,
                                                     encoder_mask)
            logits = model.out(features[mask]).float()
            nll_sum = F.cross_entropy(logits, targets[mask], reduction="sum")
            return nll_sum / mask.sum(), nll_sum.detach()
        tokens = torch.full_like(targets[0], SOS)
        rows = []
        for t in range(targets.size(0)):
            log_probs, hidden, _ = model.decode_step(tokens, hidden, encoder_outputs,
                                                     encoder_mask)
            rows.append(-log_probs.gather(1, targets[t].unsqueeze(1)).squeeze(1))
            # Feed the true token, or the model's own guess (no gradient flows through it).
            tokens = targets[t] if teacher_forced[t] else log_probs.argmax(dim=1)
        nll = torch.stack(rows).float() * mask
        if compat:
            # The notes: each step's mean over its real tokens, summed over the steps.
            loss = (nll.sum(dim=1) / mask.sum(dim=1)).sum()
        else:
            loss = nll.sum() / mask.sum()
        return loss, nll.sum().detach()


def teacher_forcing_plan(ratio: float, steps: int, per_step: bool) -> list[bool]:
    """Per step whether to feed the true token: one draw per batch (the notes) or per step."""
    if per_step:
        return [random.random() < ratio for _ in range(steps)]
    return [random.random() < ratio] * steps
