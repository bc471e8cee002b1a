"""`torchtutor lesson NAME --notebook FILE.ipynb`: every lesson's notebook runs top to bottom in
a fresh kernel and prints what the terminal lesson prints (the step headings aside)."""

import re
import subprocess
import sys

import nbformat
import pytest
from nbclient import NotebookClient

from tests.lessons.lesson_runs import lesson_stdout

LESSONS = ["tensors", "autograd", "networks", "classifier", "chatbot"]


def _write(name: str, path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "torchtutor", "lesson", name, "--device",
                           "cpu", "--notebook", str(path), *extra],
                          capture_output=True, text=True, timeout=120)


def _without_headings(stdout: str) -> list[str]:
    """The terminal lesson's lines minus what `Narrator.step` prints (a notebook's markdown):
    "N. heading", the prose line, and an optional "In torchtutor:" line after it."""
    kept: list[str] = []
    since_heading = None   # lines seen since the last heading
    for line in stdout.splitlines():
        if re.match(r"\d+\. ", line):
            since_heading = 0
            continue
        if since_heading is not None:
            since_heading += 1
            if since_heading == 1 or (since_heading == 2
                                      and line.startswith("   In torchtutor: ")):
                continue
        if line.strip():
            kept.append(line)
    return kept


@pytest.mark.parametrize("name", LESSONS)
def test_notebook_runs_in_a_fresh_kernel_and_prints_the_lesson(name, tmp_path):
    path = tmp_path / f"{name}.ipynb"
    result = _write(name, path)
    assert result.returncode == 0, result.stderr
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    markdown = [c.source for c in notebook.cells if c.cell_type == "markdown"]
    assert markdown[0].startswith("# Lesson") and markdown[1].startswith("## 1. ")
    code = "\n".join(c.source for c in notebook.cells if c.cell_type == "code")
    assert "import torchtutor" in code or "from torchtutor" in code
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    printed = "".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code"
                      for o in c.outputs if o.output_type == "stream" and o.name == "stdout")
    errors = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert not errors
    assert [line for line in printed.splitlines() if line.strip()] == \
        _without_headings(lesson_stdout(name))


def test_notebook_takes_the_lesson_options(tmp_path):
    path = tmp_path / "chatbot.ipynb"
    assert _write("chatbot", path, "--data", "/some/cornell", "--max-lines", "500",
                  "--seed", "3").returncode == 0
    setup = nbformat.read(path, as_version=4).cells[1].source
    assert "corpus = '/some/cornell'" in setup and "max_lines = 500" in setup
    assert "seed_everything(3)" in setup and "device = resolve_device('cpu')" in setup


def test_bad_notebook_name_is_one_line(tmp_path):
    for target in (tmp_path / "lesson.txt", tmp_path):
        result = _write("tensors", target)
        assert result.returncode == 2 and "--notebook" in result.stderr
        assert result.stderr.strip().count("\n") == 0
