"""The package people install: a wheel built from the sources carries the chat page and the
lessons, installs into a fresh venv, and runs `torchtutor --help`, a lesson and the API.

The fresh venv sees this environment's site-packages through a plain path (a `.pth` line), so
torch and the other dependencies are not installed again (several GB with CUDA); that line
does not run this environment's own `.pth` files, so the checkout's editable torchtutor stays
out and only the wheel's can be imported.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import venv
import zipfile
from pathlib import Path

import pytest

from tests.tiny_runs import session_tiny_runs

ROOT = Path(__file__).resolve().parents[1]


def _run(args: list, cwd: Path, env: dict, timeout: float = 180) -> str:
    done = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, f"{args}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    root = tmp_path_factory.mktemp("wheel")
    # What a fresh clone holds to build from: the sources, never their build leftovers.
    source = root / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "src", source / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    # No build isolation: the build backend (setuptools) comes from this environment, so the
    # test needs no network.
    _run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", root / "dist",
          source], cwd=root, env=env)
    wheel = next((root / "dist").glob("torchtutor-*.whl"))

    target = root / "venv"
    venv.EnvBuilder(with_pip=False).create(target)
    python = target / "bin" / "python"
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                     cwd=root, env=env).strip())
    (site / "host-site-packages.pth").write_text(sysconfig.get_path("purelib") + "\n")
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-deps",
          "--no-index", wheel], cwd=root, env=env)
    return {"wheel": wheel, "bin": target / "bin", "python": python, "env": env, "root": root}


def test_the_wheel_carries_the_page_and_the_lessons(installed):
    names = set(zipfile.ZipFile(installed["wheel"]).namelist())
    for name in ("index.html", "app.js", "style.css", "favicon.svg"):
        assert f"torchtutor/chat/serve/static/{name}" in names
    for lesson in ("tensors", "autograd", "networks", "classifier", "chatbot"):
        assert f"torchtutor/lessons/{lesson}.py" in names
    assert "torchtutor/api.py" in names and "torchtutor/vision/classifier.py" in names


def test_installed_command_runs_help_and_a_lesson(installed, tmp_path):
    env, command = installed["env"], installed["bin"] / "torchtutor"
    where = _run([installed["python"], "-c", "import torchtutor; print(torchtutor.__file__)"],
                 cwd=tmp_path, env=env)
    assert where.startswith(str(installed["root"] / "venv")), where   # the wheel, not src/
    assert "lesson" in _run([command, "--help"], cwd=tmp_path, env=env)
    out = _run([command, "lesson", "tensors", "--device", "cpu"], cwd=tmp_path, env=env)
    assert "view(-1)" in out


def test_installed_api_lines_on_tiny_runs(installed, tmp_path_factory, tmp_path):
    runs = session_tiny_runs(tmp_path_factory)
    image = sorted((runs.tree / "test" / "red").glob("*.png"))[0]
    script = textwrap.dedent(f"""
        from torchtutor import Chatbot, Classifier, UserError

        bot = Chatbot.load({str(runs.chat)!r}, device="cpu")
        print("reply", type(bot.reply("hello there").text).__name__)
        classifier = Classifier.load({str(runs.vision)!r}, device="cpu")
        print("label", classifier.predict([{str(image)!r}])[0].label)
        try:
            Classifier.load("no-such-run")
        except UserError as error:
            print("error", error)
    """)
    out = _run([installed["python"], "-c", script], cwd=tmp_path, env=installed["env"])
    assert "reply str" in out and "label " in out
    assert "error run folder no-such-run does not exist" in out
