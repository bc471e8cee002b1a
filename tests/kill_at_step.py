"""`torchtutor ARGS`, with one worker killing itself after a given training step: the fault
that the tests of restarts inject, from outside the code under test.

    python -m tests.kill_at_step STEP MARKER ARGS...          (one process)
    torchrun ... -m tests.kill_at_step STEP MARKER ARGS...    (the last rank of the group)

The last rank (rank 0 of a single process) SIGKILLs itself right after optimizer step STEP,
once: it first creates the file MARKER and never fires while that file exists, so the group
that torchrun restarts (or the run a test resumes) carries on. The chat loop's `train_step`
and the vision `Trainer.train_step` are wrapped; whichever the command runs counts.
"""

import os
import signal
import sys
from collections.abc import Callable

import torchtutor.chat.train.loop as chat_loop
from torchtutor import cli
from torchtutor.vision.train import Trainer


def kill_once(marker: str) -> None:
    try:
        # O_EXCL: exactly one process ever creates it, even if several were racing.
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return
    os.kill(os.getpid(), signal.SIGKILL)


def chat_step_killing_at(step: int, marker: str, original: Callable) -> Callable:
    calls = 0   # the chat loop's steps in this process; a restarted worker counts anew

    def train_step(*args, **kwargs):
        nonlocal calls
        loss = original(*args, **kwargs)
        calls += 1
        if calls == step:
            kill_once(marker)
        return loss
    return train_step


def vision_step_killing_at(step: int, marker: str, original: Callable) -> Callable:
    def train_step(self: Trainer, *args, **kwargs):
        result = original(self, *args, **kwargs)
        if self.step == step:   # the trainer's own count: a resumed run starts past 0
            kill_once(marker)
        return result
    return train_step


def main(argv: list[str]) -> int:
    step, marker, *args = argv
    if int(os.environ.get("RANK", "0")) == int(os.environ.get("WORLD_SIZE", "1")) - 1:
        chat_loop.train_step = chat_step_killing_at(int(step), marker, chat_loop.train_step)
        Trainer.train_step = vision_step_killing_at(int(step), marker, Trainer.train_step)
    return cli.main(args)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
