"""An export folder: the compiled graphs, `chatbot.json` and a standalone `chatbot.py`.

`chatbot.py` is `template.py` with each import marked `# export: inline` replaced by
the source it imports (the package's own normalization and display code), so the folder's
replies follow the package's text handling without a second copy to keep in step.
"""

import ast
import inspect
import json
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from torchtutor.chat.data import text
from torchtutor.chat.data.vocab import EOS, SOS
from torchtutor.chat.export import template as export_template
from torchtutor.chat.export.graphs import export_programs
from torchtutor.chat.infer import display
from torchtutor.chat.infer.chatbot import Chatbot
from torchtutor.runtime import export as runtime_export
from torchtutor.runtime import exported
from torchtutor.runtime.errors import UserError
from torchtutor.runtime.files import (
    atomic_write_text,
    remove_stale_temp_folders,
    temp_folder,
    write_error,
)

PACKAGE = "chatbot.pt2"
SETTINGS = "chatbot.json"
PROGRAM = "chatbot.py"
ONNX_FOLDER = "onnx"
INLINE_MARK = "# export: inline"


# What the inlined code may import: what chatbot.py itself needs, never torchtutor.
ALLOWED_IMPORTS = set(sys.stdlib_module_names) | {"torch", "onnxruntime"}


def _check_imports(source: str, where: str) -> None:
    """The inlined code must run without torchtutor (the standard library, torch and, for
    ONNX folders, onnxruntime only)."""
    for node in ast.walk(ast.parse(source)):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        for name in names:
            if name.split(".")[0] not in ALLOWED_IMPORTS:
                raise RuntimeError(f"{where} imports {name}; it cannot go into {PROGRAM}")


def _module_body(module: Any) -> str:
    """A module's source without its docstring."""
    source = inspect.getsource(module)
    tree = ast.parse(source)
    first = tree.body[0] if tree.body else None
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
            and isinstance(first.value.value, str):
        source = "\n".join(source.splitlines()[first.end_lineno:])
    return source.strip("\n") + "\n"


def inlined_sources() -> dict[str, str]:
    """What replaces each inline-marked import of the template, keyed by its module."""
    sources = {}
    for module in (text, display, exported):
        sources[module.__name__] = _module_body(module)
        _check_imports(sources[module.__name__], module.__name__)
    return sources


def standalone_program() -> str:
    """The text of `chatbot.py`."""
    sources = inlined_sources()
    out = []
    for line in inspect.getsource(export_template).splitlines():
        if line.endswith(INLINE_MARK):
            module = line.split()[1]
            out.append(f"# --- from {module} (torchtutor), copied by the export ---")
            out.append(sources[module].rstrip("\n"))
            out.append(f"# --- end of {module} ---")
        else:
            out.append(line)
    program = "\n".join(out) + "\n"
    if "torchtutor." in "".join(ln for ln in out if ln.startswith(("import", "from"))):
        raise RuntimeError(f"{PROGRAM} would import torchtutor")
    return program


def settings_for(bot: Chatbot, backend: str, package: str, source_run: str) -> dict:
    return {"format": backend, "package": package, "words": list(bot.vocab.index2word),
            "has_unk": bool(bot.vocab.has_unk), "max_length": int(bot.max_length),
            "decoder": "greedy", "source_run": source_run,
            "torch": torch.__version__, "written_by": "torchtutor chat export"}


def compile_aoti(model: torch.nn.Module, path: Path, stage: Callable[[str], None]) -> Path:
    """Export and compile both graphs with AOTInductor into one `.pt2` package at `path`."""
    stage("torch.export of the encoder and the decoder step")
    programs = dict(zip(("encoder", "decoder"), export_programs(model), strict=True))
    # Inductor's attention-fusion patterns (fuse_attention.py) fail to compile the tutorial's
    # unmasked attention with a dynamic input length ("Attempting to broadcast a dimension of
    # length s1", torch 2.13); its pattern passes are turned off for those models only.
    options = {"pattern_matcher": False} if model.config.tutorial_compat else None
    return runtime_export.compile_aoti(programs, path, stage, options=options)


# What an export folder holds: a folder with anything else in it is not replaced.
EXPORT_NAMES = {PACKAGE, SETTINGS, PROGRAM, ONNX_FOLDER}


def check_out(out: str) -> Path:
    """`out` may be written: absent, empty, or a folder an earlier export wrote, with nothing
    added to it (replacing the folder would delete what the user put there)."""
    target = Path(out)
    if target.is_dir() and any(target.iterdir()) and not (target / SETTINGS).is_file():
        raise UserError(f"--out {target} is a folder with other files in it, not one this "
                        f"command wrote; remove it or pick another name")
    if target.is_dir():
        added = sorted(p.name for p in target.iterdir() if p.name not in EXPORT_NAMES)
        if added:
            raise UserError(f"--out {target} is an earlier export that now also holds "
                            f"{added[0]}; move that out first, or pick another name "
                            "(nothing was changed)")
    if target.exists() and not target.is_dir():
        raise UserError(f"--out {target} exists and is not a file this command wrote (it "
                        f"writes a folder); remove it or pick another name")
    return target


def write_folder(out: str, fill: Callable[[Path], dict]) -> Path:
    """Build the folder in a temporary sibling and rename it into place at the end, so an
    interrupted export never leaves a half-written folder at `out`. `fill(folder)` writes the
    package and returns the settings."""
    target = check_out(out)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temp_folders(target)   # left by an export that was killed
        work = temp_folder(target)
    except OSError as exc:   # a read-only mount, a full disk, no permission
        raise write_error(target, exc) from None
    try:
        settings = fill(work)
        atomic_write_text(work / SETTINGS, json.dumps(settings, indent=1) + "\n")
        atomic_write_text(work / PROGRAM, standalone_program())
        work.chmod(0o755)
        for path in work.rglob("*"):
            path.chmod(0o755 if path.is_dir() else 0o644)
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}.old.{time.time_ns()}")
            target.rename(old)
        work.rename(target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return target


TOLERANCE = 1e-3   # largest log-prob difference accepted between the graphs and torch


def sample_inputs(bot: Chatbot, count: int = 24) -> list[list[int]]:
    """Real inputs for the check: vocabulary words in a fixed pattern, every length from one
    word to the longest the run accepts, with EOS."""
    first = bot.vocab.num_special
    words = list(range(first, len(bot.vocab))) or [first - 1]
    longest = max(bot.max_length - 1, 1)
    return [[words[(7 * i + 3 * j) % len(words)] for j in range(1 + i % longest)] + [EOS]
            for i in range(count)]


def check_folder(bot: Chatbot, folder: Path, settings: dict) -> None:
    """Run the written graphs (through chatbot.py's own loader) on real inputs, batched with
    padding and one by one, against the eager fp32 model; a UserError if they differ."""
    from torchtutor.chat.infer import search

    json_path = folder / SETTINGS
    atomic_write_text(json_path, json.dumps(settings))
    loaded = export_template.Chatbot(str(folder))
    id_lists = sample_inputs(bot)
    model = bot.model.eval()
    with torch.inference_mode():
        worst = 0.0
        for batch in (id_lists, id_lists[:1], id_lists[5:6]):
            outputs, mask, hidden = search.encode(model, batch)
            width = max(len(ids) for ids in batch)
            inputs = torch.tensor([ids + [0] * (width - len(ids)) for ids in batch]).t()
            got_outputs, got_mask, got_hidden = loaded.encoder(inputs.contiguous(),
                                                               torch.tensor([len(i) for i in
                                                                             batch]))
            tokens = torch.full((len(batch),), SOS, dtype=torch.long)
            want, _, _ = model.decode_step(tokens, hidden, outputs, mask)
            got, _ = loaded.decoder(tokens, got_hidden, got_outputs, got_mask)
            worst = max(worst, float((got_hidden - hidden).abs().max()),
                        float((got - want).abs().max()),
                        float(((got_outputs - outputs) * mask.unsqueeze(2)).abs().max()))
            if not torch.equal(got_mask, mask):
                worst = float("inf")
        exact = search.greedy(model, id_lists, bot.max_length,
                              search.Rules(has_unk=bot.vocab.has_unk))
        exact_tokens, exact_scores = [t for t, _ in exact], [s for _, s in exact]
        found = loaded._greedy(id_lists)
    same = [tokens for tokens, _ in found] == exact_tokens and all(
        abs(score - want) < TOLERANCE * bot.max_length
        for (_, score), want in zip(found, exact_scores, strict=True))
    if not worst < TOLERANCE or not same:
        raise UserError(f"the exported {settings['format']} graphs do not match torch "
                        f"(largest difference {worst:.3g}, greedy replies "
                        f"{'equal' if same else 'differ'}); nothing was written")
