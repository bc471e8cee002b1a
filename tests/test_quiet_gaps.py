"""No command goes quiet for long when its output is a pipe: progress comes as plain lines.

Each command runs as a user would run it, through `python -m torchtutor` with stdout and stderr
into one pipe, and the test times the gap before every line (the first one included).

The machine the tests run on is shared: other processes can stall a command for many seconds
of wall time in which it does nothing at all. So a gap is measured as the time the command had
to work in: the lesser of the wall time and the CPU time it used (its own and its waited-for
children's, from /proc). The commands here are CPU-bound, so on an idle machine the two agree.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

from tests.chat.inference_helpers import tiny_run
from tests.vision.colour_tree import write_colour_tree

MAX_GAP = 5.0   # seconds; the bound for "silent"
SRC = Path(__file__).resolve().parents[1] / "src"
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime + cutime + cstime of a running process."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return sum(int(v) for v in fields[11:15]) / TICKS


def timed_lines(args: list[str], env: dict[str, str],
                ) -> tuple[int, list[tuple[float, float, str]]]:
    """Run `torchtutor ARGS` into a pipe; its exit code and, for every line it printed,
    (wall seconds, CPU seconds since the previous line, the line)."""
    proc = subprocess.Popen([sys.executable, "-m", "torchtutor", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
                            env={**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1",
                                 **env})
    lines, wall, cpu = [], time.monotonic(), 0.0
    for line in proc.stdout:
        now = time.monotonic()
        try:
            used = cpu_seconds(proc.pid)
        except (OSError, IndexError):  # it has just exited: count the wall time alone
            used = cpu + now - wall
        lines.append((now - wall, used - cpu, line.rstrip("\n")))
        wall, cpu = now, used
    code = proc.wait()
    return code, lines


def assert_never_quiet(code: int, lines: list[tuple[float, float, str]]) -> float:
    shown = "\n".join(f"{w:5.1f} s wall {c:5.1f} s cpu  {line}" for w, c, line in lines)
    print(shown)
    assert code == 0, shown
    worst = max(min(w, c) for w, c, _ in lines)
    assert worst <= MAX_GAP, f"{worst:.1f} s without output:\n{shown}"
    return sum(min(w, c) for w, c, _ in lines)


def test_vision_train_through_a_pipe_is_never_quiet(tmp_path):
    # Enough images that the budgeted run plans, trains and tests (with TTA) for a while.
    tree = write_colour_tree(tmp_path / "colours", train_per_class=400, test_per_class=300)
    code, lines = timed_lines(["vision", "train", "--data", str(tree), "--out",
                               str(tmp_path / "run"), "--device", "cpu", "--batch-size", "64",
                               "--time-budget", "12"],
                              {"TORCHTUTOR_CACHE": str(tmp_path / "cache")})
    total = assert_never_quiet(code, lines)
    assert total > 2 * MAX_GAP   # long enough for the check to mean something
    text = "\n".join(line for _, _, line in lines)
    assert "planned" in text and "test: " in text and "epoch 1" in text


def test_chat_evaluate_on_cornell_through_a_pipe_is_never_quiet(shared_data):
    # Reading, normalizing and decoding Cornell's 220,000 pairs: the 97 silent seconds.
    code, lines = timed_lines(["chat", "evaluate", "--run", str(tiny_run()), "--data",
                               str(shared_data / "cornell"), "--device", "cpu"], {})
    total = assert_never_quiet(code, lines)
    # About 10 CPU s since the decoders stopped verifying an int8 draft: still two gaps' worth.
    assert total > 1.5 * MAX_GAP
    text = "\n".join(line for _, _, line in lines)
    assert "evaluate: replies" in text and "perplexity" in text
