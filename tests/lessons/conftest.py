"""The lessons run on one thread (runner.run_lesson does the same): their tensors are small,
and on shared cores a second thread stalls them."""

import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
