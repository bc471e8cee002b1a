"""`make demo`: the main job. Until the chatbot lands it runs the three blitz lessons."""

import argparse

from torchtutor.lessons import autograd, networks, tensors
from torchtutor.runtime.device import resolve_device
from torchtutor.runtime.seeding import seed_everything


def main(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    for lesson in (tensors, autograd, networks):
        seed_everything(0)
        lesson.run(device)
        print()
    return 0
