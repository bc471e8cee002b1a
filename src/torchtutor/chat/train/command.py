"""`torchtutor chat train`: the chatbot, then (by default) its backward model for MMI."""

import math
from dataclasses import replace
from pathlib import Path

from torchtutor.chat import run_dir as rd
from torchtutor.chat.config import TrainConfig
from torchtutor.chat.data.train_data import data_of_run
from torchtutor.chat.train.loop import TrainResult, train
from torchtutor.chat.train.run import backward_config, stored_config
from torchtutor.runtime import distributed as ddp


def _report(result: TrainResult, what: str) -> None:
    valid = (f"validation loss {result.valid_loss:.3f} (perplexity "
             f"{math.exp(min(result.valid_loss, 50.0)):.1f}; {result.valid_seconds:.0f} s "
             "validating)"
             if result.valid_loss is not None else "no validation split")
    rate = result.tokens / result.train_seconds if result.train_seconds else 0.0
    if ddp.is_main_process():
        steps = f"{result.steps} step{'s' if result.steps != 1 else ''}"
        print(f"trained {what} {steps} in {result.train_seconds:.0f} s "
              f"({rate:.0f} tokens/s); {valid}; run folder {result.run_dir}")


def main(config: TrainConfig, resume: bool = False) -> int:
    """Train the run (and, by default, its backward model), or continue it (`resume`)."""
    train_chatbot(config, resume)
    return 0


def train_chatbot(config: TrainConfig, resume: bool = False) -> TrainResult:
    """The run, then (unless `config.backward` is off) the backward model that the default
    decoder reranks with; both in one torchrun process group (`ddp.process_group`). Returns
    the first model's result."""
    with ddp.process_group(config.device):
        return _train_both(config, resume)


def _train_both(config: TrainConfig, resume: bool) -> TrainResult:
    what = "the backward model" if config.direction == "backward" else "the chatbot"
    result = train(config, resume=resume)
    _report(result, what)
    if config.backward and config.direction == "forward":
        backward = backward_config(config)
        resume = (Path(backward.out) / rd.LAST).exists()
        if resume:  # continue it with its own stored config, to the forward run's length
            backward = replace(stored_config(backward.out), device=config.device,
                               steps=config.steps, epochs=config.epochs,
                               time_budget=config.time_budget)
        # The forward run's prepared data, mapped again rather than prepared a second time.
        backward = replace(backward, data=data_of_run(config.out, backward.data))
        _report(train(backward, resume=resume), "the backward model")
    return result
