"""What every `torchtutor lesson NAME` does: run the lesson, or write it as a notebook."""

import types
from dataclasses import dataclass

import torch

from torchtutor.runtime.device import resolve_device
from torchtutor.runtime.seeding import seed_everything


@dataclass
class LessonConfig:
    """`torchtutor lesson NAME`; `data` is the classifier's, `corpus` and `max_lines` the
    chatbot's (the command line's defaults are theirs)."""
    device: str = "auto"
    seed: int = 0
    notebook: str | None = None     # write the lesson as a notebook instead of running it
    data: str | None = None
    corpus: str = "chatterbot"
    max_lines: int = 20000


def run_lesson(lesson: types.ModuleType, config: LessonConfig, **params: object) -> int:
    """Seed, then `lesson.run(device, **params)`; with `--notebook FILE` write the notebook
    instead (the device is checked either way, so a missing GPU is the same one-line error)."""
    device = resolve_device(config.device)
    notebook = config.notebook
    if notebook:
        from torchtutor.lessons.notebook import write_notebook

        path = write_notebook(lesson, notebook, device=config.device, seed=config.seed, **params)
        print(f"wrote {path} (open it with Jupyter, or run: jupyter nbconvert --execute "
              f"--to notebook {path})")
        return 0
    seed_everything(config.seed)
    # The lessons' tensors are small: one thread is as fast on idle cores, and on cores that
    # other work shares extra threads stall each other (10x slower steps measured here).
    torch.set_num_threads(1)
    lesson.run(device, **params)
    return 0
