"""Lookahead averaging: every few steps, pull the weights back toward a slow average of them.

The slow copy follows the trained weights with a decay that grows from 0 (no averaging) at the
start to `max_decay` at the end (cubically, so the early fast-moving phase is left alone); each
sync also sets the weights to the slow copy. At the end of training the weights become the
slow copy. This is the averaging airbench uses; it buys a few tenths of a percent of accuracy
for the same number of steps, at the cost of one lerp over the weights every `every` steps.
"""

import torch
import torch.nn as nn


class Lookahead:
    def __init__(self, model: nn.Module, every: int = 5, max_decay: float = 0.95 ** 5):
        self.model, self.every, self.max_decay = model, every, max_decay
        # Every floating entry of the state, so batch-norm running statistics are averaged too.
        self.slow = {name: value.detach().clone() for name, value in model.state_dict().items()
                     if value.is_floating_point()}

    def decay_at(self, progress: float) -> float:
        return self.max_decay * min(1.0, max(0.0, progress)) ** 3

    def after_step(self, step: int, progress: float) -> None:
        """Called after optimizer step number `step` (1-based) at `progress` (0..1) of the run."""
        if step % self.every == 0:
            self.sync(self.decay_at(progress))

    @torch.no_grad()
    def sync(self, decay: float) -> None:
        live = self.model.state_dict()  # tensors that share storage with the parameters
        for name, slow in self.slow.items():
            slow.lerp_(live[name], 1.0 - decay)
            live[name].copy_(slow)

    def finish(self) -> None:
        """End of training: the weights become the slow average."""
        self.sync(1.0)

    def state_dict(self) -> dict:
        return {name: value.clone() for name, value in self.slow.items()}

    def load_state_dict(self, state: dict) -> None:
        missing = set(self.slow) - set(state)
        if missing:
            raise KeyError(f"lookahead state lacks {sorted(missing)[:3]}")
        for name, slow in self.slow.items():
            slow.copy_(state[name])
