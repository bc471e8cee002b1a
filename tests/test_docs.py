"""Docs that stay true: every example in README.md and docs/*.md runs, the site builds with
`mkdocs build --strict`, and the README keeps its size, its code map and its links.

Examples are fenced `sh` and `python` blocks. A `sh` block's lines are `torchtutor ...`
commands (or `printf ... | torchtutor ...`), run in-process through `cli.main`, each of which
must exit 0; a `python` block runs in one namespace per page. Both run in a folder laid out as
the examples expect: `runs/cornell` and `runs/demo` (a tiny chat run with its backward model),
`runs/cifar` (a tiny vision run), `images/` (an image tree), `cat.jpg`, `dog.png` and
`pairs.tsv`. An HTML comment right above a block changes how it runs:

    <!-- test skip: REASON -->            not run, for the stated reason (a download, minutes)
    <!-- test flags: --steps 2 ... -->    appended to each torchtutor command (tiny settings)
    <!-- test stdin: TEXT -->             what the commands read from standard input
    <!-- test sub: OLD => NEW -->         the block's text with OLD replaced (tiny settings)
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from PIL import Image

from tests.tiny_runs import session_tiny_runs
from torchtutor import cli

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUN_LANGUAGES = ("sh", "python")
# Hosts a page may link to: the data sets' own pages, papers, and the local server.
ALLOWED_HOSTS = ("www.cs.cornell.edu", "www.cs.toronto.edu", "arxiv.org", "127.0.0.1",
                 "localhost")
# Options of other programs that the pages show (torchrun, pip, curl, tensorboard).
OTHER_PROGRAMS_OPTIONS = {"--standalone", "--nproc-per-node", "--nnodes", "--rdzv-backend",
                          "--rdzv-endpoint", "--rdzv-id", "--max-restarts", "--logdir",
                          "--help", "--grid"}


@dataclass
class Block:
    page: Path
    line: int                  # of the opening fence, 1-based
    language: str
    text: str
    directives: dict[str, str] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


_FENCE = re.compile(r"^```(\w*)\s*$")
_DIRECTIVE = re.compile(r"^<!-- test (skip|flags|stdin|sub): (.*) -->$")


def blocks_of(page: Path) -> list[Block]:
    """The fenced blocks of a page, each with the test directives in the lines just above it."""
    lines = page.read_text(encoding="utf-8").splitlines()
    found, i = [], 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        directives, above = {}, i - 1
        while above >= 0 and (match := _DIRECTIVE.match(lines[above])):
            directives[match.group(1)] = match.group(2).strip()
            above -= 1
        end = lines.index("```", i + 1)
        found.append(Block(page, i + 1, opening.group(1), "\n".join(lines[i + 1:end]) + "\n",
                           directives))
        i = end + 1
    return found


def commands_of(text: str) -> list[str]:
    """Logical lines of a shell block: continuations joined, blank and comment lines left out."""
    joined = text.replace("\\\n", " ")
    return [line for line in joined.splitlines() if line.strip() and
            not line.lstrip().startswith("#")]


def run_shell(block: Block) -> None:
    flags = shlex.split(block.directives.get("flags", ""))
    stdin = block.directives.get("stdin", "")
    for line in commands_of(block.text):
        words = shlex.split(line, comments=True)
        feed = stdin
        if "|" in words:   # printf 'TEXT' | torchtutor ...: TEXT is the command's input
            bar = words.index("|")
            assert words[0] == "printf" and bar == 2, f"{block.where}: cannot run {line!r}"
            feed = words[1].encode().decode("unicode_escape")
            words = words[bar + 1:]
        assert words[0] == "torchtutor", (
            f"{block.where}: cannot run {line!r}; mark the block `<!-- test skip: why -->`")
        # Training at a page's real settings takes minutes: the block must say how to shrink it.
        assert not {"train", "demo"} & set(words[1:3]) or flags, (
            f"{block.where}: `{line}` trains; give the block `<!-- test flags: ... -->`")
        out, err = io.StringIO(), io.StringIO()
        old_stdin = sys.stdin
        # a text stream with a byte buffer beneath, as a real stdin (`chat reply` reads bytes)
        sys.stdin = io.TextIOWrapper(io.BytesIO((feed + "\n" if feed else "").encode()),
                                     encoding="utf-8")
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = cli.main(words[1:] + flags)
        except SystemExit as exc:   # argparse refused the line
            code = exc.code
        finally:
            sys.stdin = old_stdin
        assert code == 0, (f"{block.where}: `{line}` exited {code}\n{out.getvalue()[-2000:]}"
                           f"\n{err.getvalue()[-2000:]}")


def run_python(block: Block, namespace: dict) -> None:
    text = block.text
    if "sub" in block.directives:
        old, new = (part.strip() for part in block.directives["sub"].split("=>"))
        assert old in text, f"{block.where}: `test sub` names {old!r}, not in the block"
        text = text.replace(old, new)
    with contextlib.redirect_stdout(io.StringIO()):
        exec(compile(text, block.where, "exec"), namespace)


def lay_out_world(folder: Path, runs) -> Path:
    """The files and run folders the examples name, in a fresh folder."""
    shutil.copytree(runs.chat, folder / "runs" / "cornell")
    shutil.copytree(runs.chat, folder / "runs" / "demo")
    shutil.copytree(runs.vision, folder / "runs" / "cifar")
    shutil.copytree(runs.tree, folder / "images")
    shutil.copy(runs.corpus, folder / "pairs.tsv")
    red, green = (sorted((runs.tree / "test" / colour).glob("*.png"))[0]
                  for colour in ("red", "green"))
    Image.open(red).convert("RGB").save(folder / "cat.jpg", quality=90)
    shutil.copy(green, folder / "dog.png")
    return folder


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return session_tiny_runs(tmp_path_factory)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_example_runs(page, tiny, tmp_path, monkeypatch):
    monkeypatch.chdir(lay_out_world(tmp_path, tiny))
    namespace: dict = {"__name__": "__docs__"}
    skipped = []
    for block in blocks_of(page):
        if block.language not in RUN_LANGUAGES:
            continue
        reason = block.directives.get("skip")
        if reason is not None:
            skipped.append(f"{block.where}: {reason}")
            continue
        if block.language == "sh":
            run_shell(block)
        else:
            run_python(block, namespace)
    for line in skipped:
        print("skipped", line)


def test_skipped_blocks_say_why_and_directives_are_known():
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for comment in re.findall(r"<!-- test.*?-->", text):
            assert _DIRECTIVE.match(comment), f"{page.name}: unknown directive {comment}"
            if comment.startswith("<!-- test skip:"):
                assert len(comment) > len("<!-- test skip:  -->") + 10, comment
        for block in blocks_of(page):
            assert block.language, f"{block.where}: a fence without a language"


def test_the_runner_catches_a_failing_command(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bad = Block(tmp_path / "x.md", 1, "sh", "torchtutor chat talk --run runs/missing\n")
    bad.page = ROOT / "README.md"
    with pytest.raises(AssertionError, match="exited 2"):
        run_shell(bad)
    with pytest.raises(AssertionError, match="cannot run"):
        run_shell(Block(ROOT / "README.md", 1, "sh", "rm -rf runs\n"))


def test_readme_is_short_and_links_only_to_data_and_papers():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.encode()) <= 12 * 1024
    for page in PAGES:
        for url in re.findall(r"https?://[^\s)>\]`'\"]+", page.read_text(encoding="utf-8")):
            host = re.match(r"https?://([^/:]+)", url).group(1)
            assert host in ALLOWED_HOSTS, f"{page.name} links out of the repository: {url}"
    for target in re.findall(r"\]\(([^)#]+)\)", text):
        if not target.startswith("http"):
            assert (ROOT / target).exists(), f"README.md links to missing {target}"


def test_the_code_map_names_real_files():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    paths = re.findall(r"`(src/torchtutor/[\w/.]+)`", text)
    assert len(paths) >= 10
    for path in paths:
        assert (ROOT / path).exists(), f"README's code map names missing {path}"


def _cli_options() -> set[str]:
    found = set()

    def walk(parser):
        for action in parser._actions:
            found.update(s for s in action.option_strings if s.startswith("--"))
            for child in getattr(action, "choices", None) or {}:
                if isinstance(action.choices, dict):
                    walk(action.choices[child])

    walk(cli.build_parser())
    return found


def test_every_option_the_pages_name_exists():
    known = _cli_options() | OTHER_PROGRAMS_OPTIONS
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for option in set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]+", text)):
            assert option in known, f"{page.name} names {option}, which no command has"


def test_site_builds_strictly_without_warnings(tmp_path):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
                           str(tmp_path / "site")], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert "WARNING" not in output, output[-3000:]
    api = (tmp_path / "site" / "api" / "index.html").read_text(encoding="utf-8")
    for name in ("Classifier", "DecodeOptions", "TrainConfig", "UserError", "predict"):
        assert name in api   # the reference was generated from the docstrings
