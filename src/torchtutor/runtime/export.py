"""Writing `torch.export` programs for deployment, shared by `chat export` and `vision export`:
an AOTInductor `.pt2` package (one or more graphs, plus small text files) and ONNX files.

Both writers leave either the old file or the new one (runtime/files.py's atomic write). The
programs' inputs and outputs are plain tensors; runtime/exported.py runs what these write.
"""

import json
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from torchtutor.runtime.errors import UserError
from torchtutor.runtime.files import atomic_write, atomic_write_bytes
from torchtutor.runtime.options import EXPORT_FORMATS, check_choice

METADATA = "torchtutor.json"   # the settings file inside a .pt2 package or ONNX metadata key


@dataclass
class ExportConfig:
    """`chat export` and `vision export`: the run, where to write, and the format."""
    run: str
    out: str
    format: str = "aoti"

    def __post_init__(self) -> None:
        check_choice("--format", self.format, EXPORT_FORMATS)


def compile_aoti(programs: dict[str, Any], path: str | Path,
                 stage: Callable[[str], None] = lambda what: None,
                 extra_files: dict[str, str] | None = None,
                 options: dict[str, Any] | None = None) -> Path:
    """Compile each named ExportedProgram with AOTInductor into one `.pt2` package at `path`
    (`torch._inductor.package.load_package(path, name)` runs one); `extra_files` are stored
    beside them (read back with runtime/exported.py's `package_text`); `options` are
    Inductor settings."""
    from torch._inductor import aot_compile
    from torch.export.pt2_archive._package import package_pt2

    files = {}
    for name, program in programs.items():
        stage(f"AOTInductor: compiling the {name} (gcc; a minute or more)")
        args, kwargs = program.example_inputs
        files[name] = aot_compile(program.module(check_guards=False), args, kwargs,
                                  options={"aot_inductor.package": True, **(options or {})})
    return atomic_write(path, lambda out: package_pt2(out, aoti_files=files,
                                                      extra_files=extra_files or {}))


def require_onnx() -> None:
    for name in ("onnx", "onnxscript", "onnxruntime"):
        try:
            __import__(name)
        except ImportError:
            raise UserError(f"--format onnx needs {name}: pip install 'torchtutor[onnx]'") \
                from None


def export_onnx(module: torch.nn.Module, args: tuple, dynamic_shapes: Any,
                names: tuple[list[str], list[str]], path: str | Path,
                metadata: dict | None = None) -> Path:
    """`torch.onnx.export(dynamo=True)` of `module` into one file at `path`; `metadata` goes
    into the model's metadata (key `torchtutor.json`, read back with `onnx_metadata`)."""
    import onnx

    require_onnx()
    inputs, outputs = names
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")   # the exporter's notes on its own internals
        program = torch.onnx.export(module.eval(), args, dynamo=True,
                                    dynamic_shapes=dynamic_shapes, input_names=inputs,
                                    output_names=outputs, verbose=False)
    with tempfile.TemporaryDirectory() as work:
        program.save(str(Path(work) / "graph.onnx"))
        model = onnx.load(str(Path(work) / "graph.onnx"))
    if metadata is not None:
        entry = model.metadata_props.add()
        entry.key, entry.value = METADATA, json.dumps(metadata)
    return atomic_write_bytes(path, model.SerializeToString())
