"""Printing helpers shared by the lessons: numbered sections and labelled values."""

import torch


class Narrator:
    """Prints a lesson as numbered sections, each a sentence of prose and the values behind it."""

    def __init__(self, title: str, device: torch.device):
        self.section = 0
        print(f"=== {title} (device: {device}) ===")

    def step(self, heading: str, prose: str, real: str | None = None) -> None:
        """A numbered section; `real` names the torchtutor code that does this step for real."""
        self.section += 1
        print(f"\n{self.section}. {heading}\n   {prose}")
        if real:
            print(f"   In torchtutor: {real}")

    def show(self, label: str, value: object) -> None:
        text = str(value).replace("\n", "\n      ")
        print(f"   {label}:\n      {text}" if "\n" in text else f"   {label}: {text}")
