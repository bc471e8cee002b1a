"""cli.py is the only module that knows flags (issue 14): every other module of the package
takes a typed config, never an argparse namespace, and none imports argparse."""

import ast
from pathlib import Path

import torchtutor

PACKAGE = Path(torchtutor.__file__).resolve().parent
CLI = PACKAGE / "cli.py"


def argparse_uses(source: str, name: str = "<source>") -> list[str]:
    """Where `source` imports argparse, annotates a parameter with an argparse type, or has a
    `main` whose parameters say nothing of their type (how `main(args)` took a namespace)."""
    found = []
    for node in ast.walk(ast.parse(source, name)):
        if isinstance(node, ast.Import):
            found += [f"{name}:{node.lineno}: import {a.name}" for a in node.names
                      if a.name.split(".")[0] == "argparse"]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "argparse":
            found.append(f"{name}:{node.lineno}: from {node.module} import ...")
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            params = [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs,
                      *filter(None, (node.args.vararg, node.args.kwarg))]
            for param in params:
                annotation = ast.unparse(param.annotation) if param.annotation else ""
                if "argparse" in annotation or "Namespace" in annotation:
                    found.append(f"{name}:{node.lineno}: {node.name}({param.arg}: "
                                 f"{annotation})")
                elif node.name == "main" and not annotation:
                    found.append(f"{name}:{node.lineno}: main({param.arg}) has no type")
    return found


def test_the_scan_finds_each_kind_of_use():
    source = '''
import argparse
from argparse import Namespace
import argparse as ap

def run(args: argparse.Namespace) -> int: ...
def talk(config, args: "Namespace") -> int: ...
async def serve(*, args: ap.Namespace | None = None): ...
def main(args) -> int: ...
def main_ok(args) -> int: ...
def typed(config: dict) -> int: ...
'''
    found = argparse_uses(source)
    assert [line.split(": ", 1)[1] for line in found] == [
        "import argparse", "from argparse import ...", "import argparse",
        "run(args: argparse.Namespace)", "talk(args: 'Namespace')",
        "serve(args: ap.Namespace | None)", "main(args) has no type"]


def test_no_module_below_cli_takes_a_namespace_or_imports_argparse():
    modules = sorted(p for p in PACKAGE.rglob("*.py") if p != CLI)
    assert len(modules) > 20   # the whole package was scanned, not an empty folder
    found = [use for path in modules
             for use in argparse_uses(path.read_text(encoding="utf-8"),
                                      str(path.relative_to(PACKAGE)))]
    assert found == []


def test_cli_is_where_the_flags_are():
    assert argparse_uses(CLI.read_text(encoding="utf-8"), "cli.py")   # the scan sees it there
