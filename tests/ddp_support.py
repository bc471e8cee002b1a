"""Launch `torchtutor` under a real torchrun (2 CPU workers, gloo) with a hard time limit."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import torch

import torchtutor
from tests.conftest import REPO_ROOT

# The sources this test process imports, first on the workers' path too: a checkout's tests
# then never drive another copy of torchtutor installed in the environment.
SOURCES = str(Path(torchtutor.__file__).resolve().parents[1])


def torchrun(args: list[str], nproc: int = 2, max_restarts: int = 0, env: dict | None = None,
             timeout: float = 150, kill_at_step: tuple[int, Path] | None = None,
             ) -> subprocess.CompletedProcess:
    """`python -m torch.distributed.run --standalone ... -m torchtutor ARGS`.

    --standalone rendezvous on a free port of localhost, so tests never collide on a port.
    The launcher and its workers run in a session of their own and are all killed if the
    limit passes, so a hung collective cannot hang the test suite. `kill_at_step=(STEP,
    MARKER)` runs the workers through tests/kill_at_step.py: the last rank kills itself
    after step STEP, once.
    """
    module = ["-m", "torchtutor"] if kill_at_step is None else \
        ["-m", "tests.kill_at_step", str(kill_at_step[0]), str(kill_at_step[1])]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc-per-node", str(nproc), "--max-restarts", str(max_restarts),
               "--monitor-interval", "0.2", *module, *args]
    path = os.pathsep.join(p for p in (SOURCES, str(REPO_ROOT), os.environ.get("PYTHONPATH"))
                           if p)
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path, **(env or {})}
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
