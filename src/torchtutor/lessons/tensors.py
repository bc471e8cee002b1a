"""Lesson 1, tensors: creation, arithmetic, indexing, reshaping, item(), NumPy, devices.

Each `demo_*` function computes the values a section talks about and returns them, so the tests
check exactly what the lesson prints.
"""

import sys

import numpy as np
import torch

from torchtutor.lessons.narration import Narrator
from torchtutor.lessons.runner import LessonConfig, run_lesson


def demo_creation(device: torch.device) -> dict[str, torch.Tensor]:
    return {
        "empty": torch.empty(5, 3, device=device),  # uninitialised: whatever was in memory
        "rand": torch.rand(5, 3, device=device),
        "zeros_long": torch.zeros(5, 3, dtype=torch.long, device=device),
        "from_data": torch.tensor([5.5, 3.0], device=device),
    }


def demo_arithmetic(device: torch.device) -> dict[str, torch.Tensor]:
    x = torch.rand(5, 3, device=device)
    y = torch.rand(5, 3, device=device)
    result = torch.empty(5, 3, device=device)
    torch.add(x, y, out=result)
    in_place = y.clone()
    in_place.add_(x)  # methods ending in _ change the tensor itself
    return {"x": x, "y": y, "sum": x + y, "out": result, "in_place": in_place}


def demo_indexing(device: torch.device) -> dict[str, torch.Tensor]:
    x = torch.arange(15, dtype=torch.float32, device=device).view(5, 3)
    return {"x": x, "second_column": x[:, 1], "first_row": x[0]}


def demo_view(device: torch.device) -> dict[str, torch.Tensor]:
    x = torch.randn(4, 4, device=device)
    return {"x": x, "flat": x.view(16), "flat_inferred": x.view(-1), "inferred": x.view(-1, 8)}


def demo_item(device: torch.device) -> tuple[torch.Tensor, float]:
    x = torch.randn(1, device=device)
    return x, x.item()


def demo_numpy_bridge() -> dict[str, object]:
    """CPU tensors and NumPy arrays made by numpy()/from_numpy() share one buffer."""
    a = torch.ones(5)
    b = a.numpy()
    a.add_(1)  # changes b too
    c = np.ones(5)
    d = torch.from_numpy(c)
    np.add(c, 1, out=c)  # changes d too
    return {"tensor": a, "its_array": b, "array": c, "its_tensor": d}


def demo_devices(device: torch.device) -> dict[str, torch.Tensor]:
    x = torch.randn(3)
    y = torch.ones_like(x, device=device)  # made directly on the device
    x_on_device = x.to(device)
    z = x_on_device + y
    return {"x": x, "y": y, "z": z, "z_back": z.to("cpu", torch.double)}


def run(device: torch.device) -> None:
    n = Narrator("Lesson 1: tensors", device)
    n.step("Creating tensors", "A tensor is an n-dimensional array that can live on a GPU.")
    made = demo_creation(device)
    n.show("torch.rand(5, 3)", made["rand"])
    n.show("torch.zeros(5, 3, dtype=torch.long)", made["zeros_long"])
    n.show("torch.tensor([5.5, 3])", made["from_data"])
    n.show("size of torch.empty(5, 3)", tuple(made["empty"].size()))

    n.step("Arithmetic", "x + y, torch.add(x, y, out=result) and y.add_(x) give the same sum; "
           "a trailing underscore means in place.")
    arith = demo_arithmetic(device)
    n.show("x + y", arith["sum"])
    n.show("all three equal", bool(torch.equal(arith["sum"], arith["out"])
                                   and torch.allclose(arith["sum"], arith["in_place"])))

    n.step("Indexing", "NumPy-style slicing works: x[:, 1] is the second column.")
    idx = demo_indexing(device)
    n.show("x", idx["x"])
    n.show("x[:, 1]", idx["second_column"])

    n.step("Reshaping with view", "view() reinterprets the same data; one size may be -1 and "
           "is inferred from the others.")
    v = demo_view(device)
    n.show("x.size()", tuple(v["x"].size()))
    n.show("x.view(16).size()", tuple(v["flat"].size()))
    n.show("x.view(-1).size()", tuple(v["flat_inferred"].size()))
    n.show("x.view(-1, 8).size()", tuple(v["inferred"].size()))

    n.step("item()", "A one-element tensor gives up its value as a plain Python number.")
    one, value = demo_item(device)
    n.show("x", one)
    n.show("x.item()", f"{value!r} ({type(value).__name__})")

    n.step("The NumPy bridge", "numpy() and torch.from_numpy() share memory on the CPU: "
           "changing one changes the other.")
    bridge = demo_numpy_bridge()
    n.show("a = torch.ones(5); b = a.numpy(); a.add_(1); b", bridge["its_array"])
    n.show("c = np.ones(5); d = torch.from_numpy(c); np.add(c, 1, out=c); d",
           bridge["its_tensor"])

    n.step("Moving to a device", "The notes write torch.cuda_is_available(\"cuda\"), which does "
           "not exist; the real test is torch.cuda.is_available(). Here the device was "
           "chosen by --device.")
    moved = demo_devices(device)
    n.show("torch.cuda.is_available()", torch.cuda.is_available())
    n.show("y = torch.ones_like(x, device=device)", moved["y"])
    n.show("z = x.to(device) + y", moved["z"])
    n.show("z.to('cpu', torch.double)", moved["z_back"])


def main(config: LessonConfig) -> int:
    return run_lesson(sys.modules[__name__], config)
