"""Lesson 3, networks: an nn.Module, its parameters, a loss, backprop and the optimizer loop."""

import sys

import torch
import torch.nn.functional as F
from torch import nn

from torchtutor.lessons.narration import Narrator
from torchtutor.lessons.runner import LessonConfig, run_lesson


class LeNet(nn.Module):
    """The notes' net for 1x32x32 inputs. Only forward is written; autograd supplies backward."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 3)
        self.conv2 = nn.Conv2d(6, 16, 3)
        self.fc1 = nn.Linear(16 * 6 * 6, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = torch.flatten(x, 1)  # keep the batch dimension
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


def demo_single_sample(net: nn.Module, device: torch.device) -> dict[str, torch.Tensor]:
    """nn layers expect a batch: one 1x32x32 sample becomes 1x1x32x32 with unsqueeze(0)."""
    sample = torch.randn(1, 32, 32, device=device)
    batch = sample.unsqueeze(0)
    return {"sample": sample, "batch": batch, "out": net(batch)}


def demo_loss_and_backprop(net: nn.Module, device: torch.device) -> dict[str, object]:
    inputs = torch.randn(1, 1, 32, 32, device=device)
    target = torch.randn(10, device=device).view(1, -1)  # same shape as the output
    loss = nn.MSELoss()(net(inputs), target)
    chain = []
    fn = loss.grad_fn
    for _ in range(3):
        chain.append(type(fn).__name__)
        # follow the data path, not the leaves (weights) or their transposes
        fn = next(f for f, _ in fn.next_functions
                  if f is not None and type(f).__name__ not in ("AccumulateGrad", "TBackward0"))
    net.zero_grad()
    bias_before = None if net.conv1.bias.grad is None else net.conv1.bias.grad.clone()
    loss.backward()
    return {"loss": loss, "chain": chain, "bias_grad_before": bias_before,
            "bias_grad_after": net.conv1.bias.grad.clone()}


def demo_training_loop(net: nn.Module, device: torch.device, steps: int = 30,
                       lr: float = 0.01) -> list[float]:
    """The five steps: declare the optimizer, then per step zero_grad, loss, backward, step."""
    inputs = torch.randn(8, 1, 32, 32, device=device)
    target = torch.randn(8, 10, device=device)
    criterion = nn.MSELoss()
    optimizer = torch.optim.SGD(net.parameters(), lr=lr)  # 1. declare the optimizer
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()                     # 2. clear old gradients
        loss = criterion(net(inputs), target)     # 3. forward pass and loss
        loss.backward()                           # 4. backpropagate
        optimizer.step()                          # 5. update the weights
        losses.append(loss.item())
    return losses


def run(device: torch.device) -> None:
    n = Narrator("Lesson 3: neural networks", device)
    net = LeNet().to(device)
    n.step("Define the network", "Subclass nn.Module, create layers in __init__, write "
           "forward(); backward() comes from autograd.")
    n.show("net", net)

    params = list(net.parameters())
    n.step("Learnable parameters", "net.parameters() yields every weight and bias.")
    n.show("number of parameter tensors", len(params))
    n.show("conv1's weight size", tuple(params[0].size()))
    n.show("total parameters", sum(p.numel() for p in params))

    n.step("One sample needs a batch dimension", "torch.nn works on mini-batches, so a single "
           "1x32x32 sample goes through input.unsqueeze(0).")
    single = demo_single_sample(net, device)
    n.show("sample size", tuple(single["sample"].size()))
    n.show("unsqueeze(0) size", tuple(single["batch"].size()))
    n.show("output size", tuple(single["out"].size()))

    n.step("A loss and backprop", "nn.MSELoss compares output and target; loss.grad_fn leads "
           "back through the graph. zero_grad() first, or gradients pile up (since torch 2.0 it "
           "sets them to None rather than zero, which the first line shows).")
    lb = demo_loss_and_backprop(net, device)
    n.show("loss", lb["loss"].item())
    n.show("grad_fn chain", " -> ".join(lb["chain"]))
    n.show("conv1.bias.grad before backward", lb["bias_grad_before"])
    n.show("conv1.bias.grad after backward", lb["bias_grad_after"])

    n.step("The optimizer loop", "Declare torch.optim.SGD once, then repeat: zero_grad, loss, "
           "backward, step. The loss falls.")
    losses = demo_training_loop(net, device)
    n.show("loss at steps 1, 10, 20, 30",
           ", ".join(f"{losses[i]:.4f}" for i in (0, 9, 19, len(losses) - 1)))


def main(config: LessonConfig) -> int:
    return run_lesson(sys.modules[__name__], config)
