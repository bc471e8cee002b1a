"""Every claim the lessons print, checked on the values they compute."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from tests.lessons.lesson_runs import lesson_stdout
from torchtutor.lessons import autograd, networks, tensors

CPU = torch.device("cpu")


def test_creation_shapes_and_types():
    made = tensors.demo_creation(CPU)
    assert made["rand"].shape == (5, 3) and made["rand"].min() >= 0 and made["rand"].max() < 1
    assert made["zeros_long"].dtype == torch.long and made["zeros_long"].sum() == 0
    assert made["from_data"].tolist() == [5.5, 3.0]


def test_three_ways_to_add_agree():
    a = tensors.demo_arithmetic(CPU)
    assert torch.equal(a["sum"], a["out"])
    assert torch.allclose(a["sum"], a["in_place"])
    assert not torch.allclose(a["y"], a["in_place"])  # add_ changed the copy, not y


def test_indexing_takes_a_column():
    idx = tensors.demo_indexing(CPU)
    assert idx["second_column"].tolist() == [1.0, 4.0, 7.0, 10.0, 13.0]


def test_view_infers_minus_one_and_shares_data():
    v = tensors.demo_view(CPU)
    assert v["flat"].shape == (16,) and v["flat_inferred"].shape == (16,)
    assert v["inferred"].shape == (2, 8)
    v["flat"][0] = 123.0  # a view, not a copy
    assert v["x"][0, 0] == 123.0


def test_item_gives_python_number():
    x, value = tensors.demo_item(CPU)
    assert isinstance(value, float) and value == pytest.approx(x[0].item())


def test_numpy_bridge_shares_memory_both_ways():
    b = tensors.demo_numpy_bridge()
    assert b["its_array"].tolist() == [2.0] * 5  # a.add_(1) reached the array
    assert b["its_tensor"].tolist() == [2.0] * 5  # np.add(out=) reached the tensor
    b["tensor"][0] = 7.0
    assert b["its_array"][0] == 7.0
    b["array"][1] = -1.0
    assert b["its_tensor"][1].item() == -1.0
    assert isinstance(b["its_array"], np.ndarray)


def test_devices_round_trip():
    moved = tensors.demo_devices(CPU)
    assert torch.allclose(moved["z"], moved["x"] + 1)
    assert moved["z_back"].dtype == torch.float64 and moved["z_back"].device.type == "cpu"


def test_gradient_of_the_notes_example_is_4_5():
    t = autograd.demo_tracking(CPU)
    assert t["out"].item() == pytest.approx(27.0)
    assert torch.allclose(t["grad"], torch.full((2, 2), 4.5))
    assert t["y"].grad_fn is not None and t["x"].grad_fn is None


def test_requires_grad_defaults_off():
    off = autograd.demo_default_off(CPU)
    assert off["before"] is False and off["after"] is True
    assert type(off["b_grad_fn"]).__name__ == "SumBackward0"


def test_gradients_accumulate_until_zeroed():
    first, second, after_zero = autograd.demo_accumulation(CPU)
    assert first.tolist() == [2.0, 4.0, 6.0]
    assert second.tolist() == [4.0, 8.0, 12.0]
    assert after_zero.tolist() == [2.0, 4.0, 6.0]


def test_vector_jacobian_product():
    assert torch.allclose(autograd.demo_vector_jacobian(CPU),
                          torch.tensor([0.2, 2.0, 0.0002]))


def test_no_grad_stops_tracking():
    assert autograd.demo_no_grad(CPU) == {"tracked": True, "inside_no_grad": False,
                                          "detached": False}


def test_network_parameters_and_single_sample():
    torch.manual_seed(0)
    net = networks.LeNet()
    params = list(net.parameters())
    assert len(params) == 10 and params[0].shape == (6, 1, 3, 3)
    single = networks.demo_single_sample(net, CPU)
    assert single["batch"].shape == (1, 1, 32, 32) and single["out"].shape == (1, 10)
    with pytest.raises(RuntimeError):
        net(single["sample"][None, None, 0, :5, :5])  # a 5x5 image is too small for the net


def test_backprop_fills_gradients_and_chain():
    torch.manual_seed(0)
    lb = networks.demo_loss_and_backprop(networks.LeNet(), CPU)
    assert lb["chain"] == ["MseLossBackward0", "AddmmBackward0", "ReluBackward0"]
    assert lb["bias_grad_before"] is None
    assert lb["bias_grad_after"].abs().sum() > 0


def test_optimizer_loop_lowers_the_loss():
    torch.manual_seed(0)
    losses = networks.demo_training_loop(networks.LeNet(), CPU, steps=30)
    assert losses[-1] < losses[0]
    assert all(b <= a + 1e-6 for a, b in zip(losses, losses[1:], strict=False))


@pytest.mark.parametrize("lesson", ["tensors", "autograd", "networks"])
def test_lesson_command_exits_zero(lesson):
    assert "Lesson" in lesson_stdout(lesson)


def test_lesson_on_missing_cuda_is_one_line():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA; the error path cannot be shown")
    result = subprocess.run([sys.executable, "-m", "torchtutor", "lesson", "tensors",
                             "--device", "cuda"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "CUDA is not available" in result.stderr
