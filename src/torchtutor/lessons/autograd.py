"""Lesson 2, autograd: requires_grad, grad_fn, backward, accumulation and no_grad."""

import sys

import torch

from torchtutor.lessons.narration import Narrator
from torchtutor.lessons.runner import LessonConfig, run_lesson


def demo_tracking(device: torch.device) -> dict[str, object]:
    """out = mean(3 * (x + 2)^2) over a 2x2 of ones; d(out)/dx = 1.5 * (x + 2) = 4.5."""
    x = torch.ones(2, 2, device=device, requires_grad=True)
    y = x + 2
    z = y * y * 3
    out = z.mean()
    out.backward()
    return {"x": x, "y": y, "z": z, "out": out, "grad": x.grad}


def demo_default_off(device: torch.device) -> dict[str, object]:
    a = torch.randn(2, 2, device=device)
    before = a.requires_grad
    a.requires_grad_(True)
    b = (a * a).sum()
    return {"before": before, "after": a.requires_grad, "b_grad_fn": b.grad_fn}


def demo_accumulation(device: torch.device) -> list[torch.Tensor]:
    """Each backward() adds into .grad; zero_() starts over."""
    w = torch.tensor([1.0, 2.0, 3.0], device=device, requires_grad=True)
    grads = []
    for _ in range(2):
        (w * w).sum().backward()  # d/dw = 2w
        grads.append(w.grad.clone())
    w.grad.zero_()
    (w * w).sum().backward()
    grads.append(w.grad.clone())
    return grads


def demo_vector_jacobian(device: torch.device) -> torch.Tensor:
    """For a non-scalar y, backward(v) computes the vector-Jacobian product v^T J."""
    x = torch.tensor([1.0, -2.0, 3.0], device=device, requires_grad=True)
    y = x * 2
    v = torch.tensor([0.1, 1.0, 0.0001], device=device)
    y.backward(v)
    return x.grad


def demo_no_grad(device: torch.device) -> dict[str, bool]:
    x = torch.ones(3, device=device, requires_grad=True)
    tracked = (x ** 2).requires_grad
    with torch.no_grad():
        untracked = (x ** 2).requires_grad
    return {"tracked": tracked, "inside_no_grad": untracked,
            "detached": x.detach().requires_grad}


def run(device: torch.device) -> None:
    n = Narrator("Lesson 2: autograd", device)
    n.step("requires_grad is off by default", "A tensor records operations only once "
           "requires_grad is set; results then carry a grad_fn.")
    off = demo_default_off(device)
    n.show("torch.randn(2, 2).requires_grad", off["before"])
    n.show("after a.requires_grad_(True)", off["after"])
    n.show("(a * a).sum().grad_fn", type(off["b_grad_fn"]).__name__)

    n.step("A graph and its gradient", "x = ones(2, 2) tracked; y = x + 2; z = 3 * y * y; "
           "out = z.mean(). Then d(out)/dx = 1.5 * (x + 2) = 4.5 everywhere.")
    t = demo_tracking(device)
    n.show("y.grad_fn", type(t["y"].grad_fn).__name__)
    n.show("z.grad_fn", type(t["z"].grad_fn).__name__)
    n.show("out", t["out"].item())
    n.show("x.grad after out.backward()", t["grad"])

    n.step("Vector-Jacobian products", "y = 2x is not a scalar, so backward takes a vector v "
           "and gives v^T J = 2v.")
    n.show("x.grad", demo_vector_jacobian(device))

    n.step("Gradients accumulate", "Calling backward() twice adds the gradients; zero them "
           "(optimizer.zero_grad() does this) before each new step.")
    first, second, after_zero = demo_accumulation(device)
    n.show("grad after 1st backward", first)
    n.show("grad after 2nd backward", second)
    n.show("after grad.zero_() and one more backward", after_zero)

    n.step("Stopping the tape", "Inside torch.no_grad() nothing is recorded, which is how "
           "evaluation and weight updates run; detach() gives an untracked view.")
    ng = demo_no_grad(device)
    n.show("(x ** 2).requires_grad", ng["tracked"])
    n.show("inside torch.no_grad()", ng["inside_no_grad"])
    n.show("x.detach().requires_grad", ng["detached"])


def main(config: LessonConfig) -> int:
    return run_lesson(sys.modules[__name__], config)
