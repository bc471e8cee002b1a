"""`chat train`'s loop, top to bottom: a batch, its share of the loss, `backward()`, clip, step.

Read `train` first, then `train_step`. Everything around them (the run folder, validation,
checkpoints, the progress bar, torchrun) is `chat.train.run`'s; the loss is
`chat.train.objective.Objective`.
"""

import math
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from torchtutor.chat import run_dir as rd
from torchtutor.chat.config import TrainConfig
from torchtutor.chat.data.batches import Batch
from torchtutor.chat.model import Seq2Seq
from torchtutor.chat.train.objective import Objective, teacher_forcing_plan
from torchtutor.chat.train.run import (
    TrainSession,
    Window,
    log_window,
    start_session,
)
from torchtutor.runtime import distributed as ddp
from torchtutor.runtime.errors import UserError


class NonFiniteLoss(Exception):
    pass


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    train_seconds: float        # time in training steps only
    tokens: int                 # real target tokens trained on
    valid_loss: float | None
    best_valid_loss: float | None
    reached_target: bool = False
    evaluations: list[tuple[int, float, float]] = field(default_factory=list)
    # (step, train_seconds, valid_loss) of every evaluation of this session
    valid_seconds: float = 0.0  # time in validation, this session


def train(config: TrainConfig, resume: bool = False,
          after_step: Callable[[int, Seq2Seq, float], None] | None = None) -> TrainResult:
    """Train into `config.out`, per `config` (its model and data configs included).

    `after_step(step, model, loss)` runs after every step (the bench records the first losses
    with it; tests interrupt a run with it).
    """
    # Under torchrun: the process group, for this run or for the caller's longer block
    # (`chat train` trains the backward model in the same group).
    with ddp.process_group(config.device):
        run = start_session(config, resume)
        config, state, ctx = run.config, run.state, run.ctx
        step = run.threads.timed(_step)
        window = Window()
        batches = iter(run.stream)
        run.model.train()
        try:
            while not run.done():
                started = time.perf_counter()
                batch = next(batches).to(run.device)
                synced = time.perf_counter()
                scale, global_tokens = ddp.share_of_global_mean(batch.target_tokens, ctx)
                # Time spent waiting here for rank 0 to finish writing a checkpoint is not training.
                started += time.perf_counter() - synced
                loss = step(run, batch, scale)
                # The slowest rank's time, so all ranks agree when a time budget is spent.
                seconds = ddp.max_over_ranks(time.perf_counter() - started, ctx)
                state.step += 1
                state.train_seconds += seconds
                state.tokens += global_tokens
                window.add(loss, batch.target_tokens, seconds)
                if after_step is not None:
                    after_step(state.step, run.model, loss)
                evaluate_now = state.step % config.eval_every == 0 or run.done()
                if state.step % run.log_every == 0 or evaluate_now:
                    log_window(run, window, evaluate_now)
                    window = Window()
                if state.step % config.checkpoint_every == 0 or run.done():
                    run.save(rd.LAST)
                run.advance_bar(seconds)
        finally:
            run.close()
        if not run.valid:  # nothing to validate on: the best checkpoint is the last one
            run.save(rd.BEST)
    return TrainResult(run_dir=run.out, steps=state.step, train_seconds=state.train_seconds,
                       tokens=state.tokens, valid_loss=state.valid_loss,
                       best_valid_loss=state.best_valid_loss, reached_target=run.reached,
                       evaluations=run.evaluations, valid_seconds=run.valid_seconds)


def train_step(objective: Objective, optimizers: list[torch.optim.Optimizer],
               schedulers: list, batch: Batch, config: TrainConfig,
               autocast: AbstractContextManager, loss_scale: float = 1.0) -> float:
    """One optimizer step on `batch`; returns the mean NLL per real target token.

    `loss_scale` multiplies the loss before backward (a DDP rank's share of the global mean,
    `ddp.share_of_global_mean`). Raises NonFiniteLoss before touching the weights when the
    loss or a gradient norm is NaN or infinite. The loss, the NLL sum and both norms are read
    back in one transfer, after backward: each read waits for the device, and on a GPU every
    wait leaves it idle while Python queues the next kernels.
    """
    model = ddp.unwrap(objective).model
    plan = teacher_forcing_plan(config.teacher_forcing, batch.max_target_len,
                                config.teacher_forcing_per_step)
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)
    with autocast:
        loss, nll_sum = objective(batch.inputs, batch.lengths, batch.targets, batch.mask, plan)
    (loss * loss_scale if loss_scale != 1.0 else loss).backward()
    # The notes clip the encoder's and the decoder's parameters separately.
    norms = [nn.utils.clip_grad_norm_(model.encoder_parameters(), config.clip),
             nn.utils.clip_grad_norm_(model.decoder_parameters(), config.clip)]
    value, nll, *norm_values = torch.stack(
        [loss.detach().float(), nll_sum.detach().float(),
         *(torch.as_tensor(n, device=loss.device).float() for n in norms)]).tolist()
    if not math.isfinite(value):
        raise NonFiniteLoss(value)
    if not all(math.isfinite(norm) for norm in norm_values):
        raise NonFiniteLoss(float("nan"))  # a finite loss with overflowing gradients
    for opt in optimizers:
        opt.step()
    for scheduler in schedulers:
        scheduler.step()
    return nll / batch.target_tokens


def _step(run: TrainSession, batch: Batch, scale: float) -> float:
    """One optimizer step; a non-finite loss stops the run with one line."""
    if run.config.tutorial_compat:
        scale = 1.0  # the notes' per-step means: each rank's own, then DDP's average
    try:
        return train_step(run.objective, run.optimizers, run.schedulers, batch, run.config,
                          run.autocast, loss_scale=scale)
    except NonFiniteLoss as exc:
        raise UserError(f"loss became {exc.args[0]} at step {run.state.step + 1}; "
                        f"stopped ({run.kept()})") from None
