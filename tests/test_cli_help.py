"""Every option of every command explains itself in `--help`: a help line, and its default.

The test runs `torchtutor ... --help` for every command and subcommand, as a user would, and
reads the printed text (not the parser's internals), so a help line that argparse drops or a
default that only lives in the code fails it. A required option says "(required)" instead of
a default; a positional argument needs only its help line.
"""

import argparse
import contextlib
import io
import re

import pytest

from torchtutor.cli import build_parser, main


def commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(path, parser) for the top-level parser and every subcommand below it."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from commands(sub, (*path, name))


COMMANDS = list(commands(build_parser()))


def help_text(path: tuple[str, ...]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_:
        main([*path, "--help"])
    assert exit_.value.code == 0
    return out.getvalue()


def entries(text: str) -> dict[str, str]:
    """The option and argument entries of a help text: invocation -> its help, joined."""
    found, current = {}, None
    for line in text.splitlines():
        if re.match(r"^  \S", line):   # an entry starts two spaces in: invocation, help
            parts = re.split(r"\s{2,}", line.strip(), maxsplit=1)
            current = parts[0]
            found[current] = parts[1] if len(parts) > 1 else ""
        elif current is not None and line.startswith("    ") and line.strip():
            found[current] = f"{found[current]} {line.strip()}".strip()
        else:
            current = None
    return found


def entry_of(action: argparse.Action, found: dict[str, str]) -> str:
    if action.option_strings:
        first = action.option_strings[0]
        keys = [k for k in found if k == first or k.startswith((first + " ", first + ","))]
    else:
        keys = [k for k in found if k == (action.metavar or action.dest)]
    assert len(keys) == 1, (action.option_strings or action.dest, list(found))
    return found[keys[0]]


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS], ids=lambda p: " ".join(p) or "top")
def test_every_option_has_help_and_shows_its_default(path):
    parser = dict(COMMANDS)[path]
    found = entries(help_text(path))
    problems = []
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._VersionAction,
                               argparse._SubParsersAction)):
            continue
        name = "/".join(action.option_strings) or action.dest
        text = entry_of(action, found)
        if not text:
            problems.append(f"{name}: no help text")
        elif action.option_strings and not re.search(r"\(required|\bdefault\b", text):
            problems.append(f"{name}: no default shown ({text!r})")
    assert not problems, f"torchtutor {' '.join(path)} --help:\n" + "\n".join(problems)


def test_the_check_finds_a_missing_help_and_a_missing_default():
    parser = argparse.ArgumentParser(prog="x")
    parser.add_argument("--bare")
    parser.add_argument("--silent-default", type=int, default=3, help="a number")
    parser.add_argument("--fine", default=1, help="a number (default: %(default)s)")
    found = entries(parser.format_help())
    by_name = {a.dest: entry_of(a, found) for a in parser._actions if a.dest != "help"}
    assert by_name["bare"] == ""
    assert "default" not in by_name["silent_default"]
    assert by_name["fine"] == "a number (default: 1)"


def test_the_demo_and_prepare_say_what_their_settings_keep():
    assert "min count 1" in help_text(("demo",)).replace("\n", " ")
    assert "--min-count 1" in help_text(("chat", "prepare")).replace("\n", " ")
