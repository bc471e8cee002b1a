"""The notes' net exactly, and the fast net's shapes and whitening layer."""

import torch

from torchtutor.vision.models import FastNet, TutorialNet, build_model, count_parameters


def test_tutorial_net_matches_the_notes():
    net = TutorialNet()
    shapes = {name: tuple(p.shape) for name, p in net.named_parameters()}
    assert shapes == {
        "conv1.weight": (6, 3, 5, 5), "conv1.bias": (6,),
        "conv2.weight": (16, 6, 5, 5), "conv2.bias": (16,),
        "fc1.weight": (120, 400), "fc1.bias": (120,),
        "fc2.weight": (84, 120), "fc2.bias": (84,),
        "fc3.weight": (10, 84), "fc3.bias": (10,),
    }
    assert count_parameters(net) == 62006
    assert net(torch.randn(4, 3, 32, 32)).shape == (4, 10)


def test_fast_net_shapes_and_whitening():
    torch.manual_seed(0)
    net = build_model("fast", 7, widths=(8, 16, 16))
    assert isinstance(net, FastNet)
    images = torch.randn(64, 3, 32, 32) * torch.tensor([1.0, 2.0, 0.5]).view(1, 3, 1, 1)
    net.init_whitening(images)
    w = net.whiten.weight
    assert torch.allclose(w[:12], -w[12:]) and not w.requires_grad
    # The first 12 filters whiten 2x2 patches: their responses are decorrelated, unit variance.
    patches = torch.nn.functional.conv2d(images, w[:12]).transpose(0, 1).reshape(12, -1)
    cov = torch.cov(patches)
    assert torch.allclose(cov, torch.eye(12), atol=0.05)
    out = net(images[:5])
    assert out.shape == (5, 7)
    out.sum().backward()
    assert net.whiten.weight.grad is None and net.head.weight.grad is not None
