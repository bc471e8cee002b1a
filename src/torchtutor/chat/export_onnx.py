"""`chat export --format onnx`: the encoder and the decoder step as ONNX graphs.

The same two modules as the AOTInductor export (chat/export_graphs.py) go through
`torch.onnx.export(dynamo=True)` with the same dynamic batch and length. onnxruntime runs them
(`pip install 'torchtutor[onnx]'`). The dynamo exporter has written GRUs with the wrong
`linear_before_reset` (pytorch/pytorch#189225), so the export runs the written graphs on real
inputs and compares them with torch before it keeps them (export_package.check_folder).
"""

import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from torchtutor.chat.export_graphs import (
    ExportDecoderStep,
    ExportEncoder,
    dynamic_shapes,
    example_inputs,
)
from torchtutor.runtime.errors import UserError

ENCODER = "encoder.onnx"
DECODER = "decoder.onnx"
ENCODER_NAMES = (["inputs", "lengths"], ["outputs", "mask", "hidden"])
DECODER_NAMES = (["tokens", "hidden", "encoder_outputs", "encoder_mask"],
                 ["log_probs", "new_hidden"])


def _require_onnx() -> None:
    for name in ("onnx", "onnxscript", "onnxruntime"):
        try:
            __import__(name)
        except ImportError:
            raise UserError(f"--format onnx needs {name}: pip install 'torchtutor[onnx]'") \
                from None


def export_onnx(model: nn.Module, folder: Path, stage: Callable[[str], None]) -> Path:
    """Write encoder.onnx and decoder.onnx into `folder`."""
    _require_onnx()
    model = model.eval()
    folder.mkdir(parents=True, exist_ok=True)
    encoder_args, decoder_args = example_inputs(model)
    encoder_dims, decoder_dims = dynamic_shapes()
    parts = ((ExportEncoder(model), encoder_args, encoder_dims, ENCODER_NAMES, ENCODER),
             (ExportDecoderStep(model), decoder_args, decoder_dims, DECODER_NAMES, DECODER))
    for module, args, dims, (inputs, outputs), name in parts:
        stage(f"torch.onnx.export (dynamo) of {name}")
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")   # the exporter's notes on its own internals
            program = torch.onnx.export(module.eval(), args, dynamo=True, dynamic_shapes=dims,
                                        input_names=inputs, output_names=outputs,
                                        verbose=False)
        program.save(str(folder / name))
    return folder
