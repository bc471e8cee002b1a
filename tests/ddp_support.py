"""Launch `torchtutor` under a real torchrun (2 CPU workers, gloo) with a hard time limit."""

import os
import signal
import subprocess
import sys

import torch

from tests.conftest import REPO_ROOT


def torchrun(args: list[str], nproc: int = 2, max_restarts: int = 0, env: dict | None = None,
             timeout: float = 150) -> subprocess.CompletedProcess:
    """`python -m torch.distributed.run --standalone ... -m torchtutor ARGS`.

    --standalone rendezvous on a free port of localhost, so tests never collide on a port.
    The launcher and its workers run in a session of their own and are all killed if the
    limit passes, so a hung collective cannot hang the test suite.
    """
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc-per-node", str(nproc), "--max-restarts", str(max_restarts),
               "--monitor-interval", "0.2", "-m", "torchtutor", *args]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=full_env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        raise AssertionError(f"torchrun did not finish in {timeout} s:\n{out}\n"
                             f"{err[-3000:]}") from None
    return subprocess.CompletedProcess(command, process.returncode, out, err)


def assert_ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr[-4000:]}"


def assert_same_weights(a: dict, b: dict, atol: float = 1e-6, rtol: float = 1e-5) -> None:
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=atol, rtol=rtol,
                                   msg=lambda text, name=name: f"{name}: {text}")


def largest_change(before: dict, after: dict) -> float:
    return max(float((after[k].float() - before[k].float()).abs().max()) for k in before)
