"""What every `torchtutor lesson NAME` does: run the lesson, or write it as a notebook."""

import argparse
import types

import torch

from torchtutor.runtime.device import resolve_device
from torchtutor.runtime.seeding import seed_everything


def run_lesson(lesson: types.ModuleType, args: argparse.Namespace, **params: object) -> int:
    """Seed, then `lesson.run(device, **params)`; with `--notebook FILE` write the notebook
    instead (the device is checked either way, so a missing GPU is the same one-line error)."""
    device = resolve_device(args.device)
    notebook = getattr(args, "notebook", None)
    if notebook:
        from torchtutor.lessons.notebook import write_notebook

        path = write_notebook(lesson, notebook, device=args.device, seed=args.seed, **params)
        print(f"wrote {path} (open it with Jupyter, or run: jupyter nbconvert --execute "
              f"--to notebook {path})")
        return 0
    seed_everything(args.seed)
    # The lessons' tensors are small: one thread is as fast on idle cores, and on cores that
    # other work shares extra threads stall each other (10x slower steps measured here).
    torch.set_num_threads(1)
    lesson.run(device, **params)
    return 0
