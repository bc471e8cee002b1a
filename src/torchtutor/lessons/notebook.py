"""Any lesson as a Jupyter notebook: each step's narration a markdown cell, its code a code cell.

The cells are cut out of the lesson's own source: `run(device, ...)` is split at each top-level
`n.step(...)` call, whose words (literals, or f-strings over the lesson's
constants) become the markdown, and the lesson's helper functions are
copied in (each before the first step that uses it). The notebook therefore runs exactly the
lines the terminal lesson runs, so the two cannot drift apart. Everything else a cell names
(torch, torchtutor's chat and vision modules, the lesson's constants) is imported at the top.
"""

import ast
import builtins
import inspect
import sys
import textwrap
import types
from dataclasses import dataclass, field
from pathlib import Path

from torchtutor.runtime.errors import UserError
from torchtutor.runtime.files import atomic_write_text

NARRATOR = "n"  # the name every lesson's run() gives its Narrator


@dataclass
class Step:
    heading: str
    prose: str
    real: str | None
    helpers: list[str] = field(default_factory=list)   # sources of lesson functions first used here
    code: str = ""


@dataclass
class LessonSource:
    title: str
    parameters: list[str]            # run()'s parameters, `device` first
    setup: str                       # run()'s lines before its first step
    steps: list[Step]
    imports: list[str]


def _names_loaded(tree: ast.AST) -> set[str]:
    return {node.id for node in ast.walk(tree)
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)}


def _step_call(stmt: ast.stmt) -> ast.Call | None:
    if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call):
        func = stmt.value.func
        if isinstance(func, ast.Attribute) and func.attr == "step" \
                and isinstance(func.value, ast.Name) and func.value.id == NARRATOR:
            return stmt.value
    return None


def _step_text(lesson: types.ModuleType, node: ast.expr) -> str:
    """A step's words: a literal, or an f-string over the lesson's constants (evaluated in
    the lesson module, whose own source this is)."""
    if isinstance(node, ast.Constant):
        return node.value
    code = compile(ast.Expression(node), f"<{lesson.__name__} step>", "eval")
    return eval(code, dict(vars(lesson)))  # noqa: S307 - the lesson's own source


def _is_lesson_helper(lesson: types.ModuleType, obj: object) -> bool:
    return (inspect.isfunction(obj) or inspect.isclass(obj)) \
        and getattr(obj, "__module__", None) == lesson.__name__ and obj is not lesson.run


def _import_line(lesson: types.ModuleType, name: str, obj: object) -> str:
    """How a cell gets `name`: from where it is defined when that module exports it."""
    if inspect.ismodule(obj):
        if obj.__name__ == name:
            return f"import {name}"
        parent, _, leaf = obj.__name__.rpartition(".")
        return f"from {parent} import {leaf}" if leaf == name and parent \
            else f"import {obj.__name__} as {name}"
    origin = getattr(obj, "__module__", None)
    if isinstance(origin, str) and getattr(sys.modules.get(origin), name, None) is obj \
            and not origin.split(".")[-1].startswith("_"):
        return f"from {origin} import {name}"
    return f"from {lesson.__name__} import {name}"


def read_lesson(lesson: types.ModuleType) -> LessonSource:
    """Split `lesson.run` into its steps and find what each step needs (see the module doc)."""
    source = textwrap.dedent(inspect.getsource(lesson.run))
    lines = source.splitlines()
    func = ast.parse(source).body[0]
    if not isinstance(func, ast.FunctionDef):
        raise TypeError(f"{lesson.__name__}.run is not a function")
    parameters = [a.arg for a in func.args.args]
    body = func.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]  # the docstring

    setup: list[str] = []
    steps: list[Step] = []
    previous_end = body[0].lineno - 1 if body else 0
    for stmt in body:
        # From the end of the previous statement, so comments above a line stay with it.
        segment = "\n".join(lines[previous_end:stmt.end_lineno])
        previous_end = stmt.end_lineno
        call = _step_call(stmt)
        if call is not None:
            args = [_step_text(lesson, a) for a in call.args]
            keywords = {k.arg: _step_text(lesson, k.value) for k in call.keywords}
            args += [keywords.pop(k) for k in ("heading", "prose") if k in keywords]
            steps.append(Step(args[0], args[1], keywords.get("real")))
            continue
        text = textwrap.dedent(segment).strip("\n")
        if steps:
            steps[-1].code = f"{steps[-1].code}\n{text}" if steps[-1].code else text
        else:
            setup.append(text)

    # Helpers (the lesson's own functions and classes) go in before their first use, together
    # with the helpers they call; every other global a cell names is imported.
    namespace = vars(lesson)
    defined: set[str] = set()
    imported: dict[str, str] = {}

    def need(names: set[str], into: list[str]) -> None:
        for name in sorted(names, key=_definition_order(lesson)):
            if name in defined or name in imported or name in parameters:
                continue
            if name not in namespace:
                continue  # a local variable or a builtin
            obj = namespace[name]
            if _is_lesson_helper(lesson, obj):
                defined.add(name)
                helper = textwrap.dedent(inspect.getsource(obj))
                need(_names_loaded(ast.parse(helper)), into)
                into.append(helper.strip("\n"))
            elif not hasattr(builtins, name):
                imported[name] = _import_line(lesson, name, obj)

    setup_helpers: list[str] = []
    need(_names_loaded(ast.parse("\n".join(setup))), setup_helpers)
    if setup_helpers:
        setup = setup_helpers + setup
    for step in steps:
        need(_names_loaded(ast.parse(step.code)), step.helpers)
    title = " ".join((inspect.getdoc(lesson) or lesson.__name__).split("\n\n")[0].split())
    return LessonSource(title, parameters, "\n".join(setup), steps,
                        _grouped(imported.values()))


def _definition_order(lesson: types.ModuleType):
    order = {name: i for i, name in enumerate(vars(lesson))}
    return lambda name: order.get(name, len(order))


def _grouped(lines) -> list[str]:
    """Plain imports first, then one `from M import a, b` line per module, sorted."""
    plain = sorted({line for line in lines if line.startswith("import ")})
    names: dict[str, set[str]] = {}
    for line in lines:
        if line.startswith("from "):
            module, _, name = line[5:].partition(" import ")
            names.setdefault(module, set()).add(name)
    return plain + [f"from {m} import {', '.join(sorted(names[m]))}" for m in sorted(names)]


def build_notebook(lesson: types.ModuleType, device: str = "auto", seed: int = 0,
                   **params: object):
    """The lesson as an `nbformat` v4 notebook; `params` are run()'s arguments after device."""
    import nbformat.v4 as v4

    src = read_lesson(lesson)
    name = lesson.__name__.rsplit(".", 1)[-1]
    unknown = set(params) - set(src.parameters[1:])
    if unknown:
        raise TypeError(f"{lesson.__name__}.run takes no {', '.join(sorted(unknown))}")
    values = "\n".join(f"{p} = {params[p]!r}" for p in src.parameters[1:] if p in params)
    setup = "\n".join([*src.imports, *([] if "import torch" in src.imports else ["import torch"]),
                       "from torchtutor.runtime.device import resolve_device",
                       "from torchtutor.runtime.seeding import seed_everything", "",
                       f"device = resolve_device({device!r})",
                       *([values] if values else []),
                       f"seed_everything({seed!r})",
                       "torch.set_num_threads(1)  # small tensors: one thread is as fast"])
    cells = [v4.new_markdown_cell(
        f"# {src.title}\n\nWritten by `torchtutor lesson {name} --notebook`: every code cell "
        f"is the lesson's own code (`src/torchtutor/lessons/{name}.py`), importing torchtutor, "
        "so the notebook prints what `torchtutor lesson " + name + "` prints. "
        "Run it top to bottom."),
        v4.new_code_cell(setup)]
    if src.setup:
        cells.append(v4.new_code_cell(src.setup))
    for number, step in enumerate(src.steps, 1):
        text = f"## {number}. {step.heading}\n\n{step.prose}"
        if step.real:
            text += f"\n\n*In torchtutor:* `{step.real}`"
        cells.append(v4.new_markdown_cell(text))
        if step.helpers:
            cells.append(v4.new_code_cell("\n\n\n".join(step.helpers)))
        if step.code:
            cells.append(v4.new_code_cell(step.code))
    notebook = v4.new_notebook(cells=cells)
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                       "language": "python"}
    notebook.metadata["language_info"] = {"name": "python"}
    return notebook


def write_notebook(lesson: types.ModuleType, path: str | Path, device: str = "auto",
                   seed: int = 0, **params: object) -> Path:
    """Write the lesson's notebook to `path` (atomically); needs the `notebooks` extra."""
    path = Path(path)
    if path.suffix != ".ipynb":
        raise UserError(f"--notebook wants a file name ending in .ipynb, not {path.name!r}")
    if path.is_dir():
        raise UserError(f"--notebook {path} is a folder; give a file name ending in .ipynb")
    try:
        import nbformat
    except ModuleNotFoundError:
        raise UserError("writing notebooks needs nbformat: pip install 'torchtutor[notebooks]'"
                        ) from None
    notebook = build_notebook(lesson, device=device, seed=seed, **params)
    nbformat.validate(notebook)
    try:
        return atomic_write_text(path, nbformat.writes(notebook))
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None
