"""The layout's rules: data flows one way between the stages, and the code a learner reads
(the training loop, the decoders) stays in functions short enough to hold in your head."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "torchtutor"

# Stage of a module -> stages it must never import (at the top or inside a function).
FORBIDDEN = {
    "runtime": {"chat", "vision", "lessons", "cli", "demo"},
    "vision": {"chat"},
    "chat": {"vision"},
    "chat.data": {"chat.model", "chat.run_dir", "chat.train", "chat.infer", "chat.fast",
                  "chat.serve", "chat.export"},
    "chat.model": {"chat.run_dir", "chat.train", "chat.infer", "chat.fast", "chat.serve",
                   "chat.export"},
    "chat.run_dir": {"chat.train", "chat.infer", "chat.fast", "chat.serve", "chat.export"},
    "chat.train": {"chat.infer", "chat.fast", "chat.serve", "chat.export"},
    "chat.infer": {"chat.train", "chat.fast", "chat.serve", "chat.export"},
    "chat.fast": {"chat.train", "chat.serve", "chat.export"},
    "chat.serve": {"chat.train", "chat.export"},
    "chat.export": {"chat.train", "chat.serve"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(part for part in parts if part != "__init__")


def imported(path: Path) -> set[str]:
    """Every torchtutor module `path` imports, relative to the package ("chat.infer.search")."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            base = node.module
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {name.removeprefix("torchtutor.") for name in names
            if name == "torchtutor" or name.startswith("torchtutor.")}


def within(name: str, stage: str) -> bool:
    return name == stage or name.startswith(stage + ".")


def test_data_flows_one_way():
    broken = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = module_name(path)
        rules = set().union(*(forbidden for stage, forbidden in FORBIDDEN.items()
                              if within(module, stage)))
        for name in sorted(imported(path)):
            bad = [stage for stage in rules if within(name, stage)]
            if bad:
                broken.append(f"{module} imports {name}")
    assert not broken, "\n".join(broken)


def test_the_rule_check_sees_an_import_inside_a_function(tmp_path):
    source = tmp_path / "x.py"
    source.write_text("def f():\n    from torchtutor.chat.train.loop import train\n")
    assert "chat.train.loop" in imported(source)


@pytest.mark.parametrize("folder", ["chat/train", "chat/infer"])
def test_the_loop_and_the_decoders_are_short_functions(folder):
    longest = {}
    for path in (PACKAGE / folder).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                longest[f"{path.name}:{node.name}"] = node.end_lineno - node.lineno + 1
    assert longest and max(longest.values()) <= 60, sorted(longest.items(),
                                                            key=lambda kv: -kv[1])[:3]


def test_the_default_reply_path_names_no_speed_up():
    """Nothing a reference decoder runs reaches an int8 copy or a draft model."""
    for name in ("chatbot.py", "search.py", "rerank.py"):
        text = (PACKAGE / "chat" / "infer" / name).read_text(encoding="utf-8")
        code = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
        assert not [line for line in code if "draft" in line or "quantize" in line], name
