"""`chat export --format onnx`: the encoder and the decoder step as ONNX graphs.

The same two modules as the AOTInductor export (chat/export_graphs.py) go through
`torch.onnx.export(dynamo=True)` with the same dynamic batch and length. onnxruntime runs them
(`pip install 'torchtutor[onnx]'`). The dynamo exporter has written GRUs with the wrong
`linear_before_reset` (pytorch/pytorch#189225), so the export runs the written graphs on real
inputs and compares them with torch before it keeps them (export_package.check_folder).
"""

from collections.abc import Callable
from pathlib import Path

from torch import nn

from torchtutor.chat.export.graphs import (
    ExportDecoderStep,
    ExportEncoder,
    dynamic_shapes,
    example_inputs,
)
from torchtutor.runtime import export as runtime_export
from torchtutor.runtime.export import require_onnx

ENCODER = "encoder.onnx"
DECODER = "decoder.onnx"
ENCODER_NAMES = (["inputs", "lengths"], ["outputs", "mask", "hidden"])
DECODER_NAMES = (["tokens", "hidden", "encoder_outputs", "encoder_mask"],
                 ["log_probs", "new_hidden"])


def export_onnx(model: nn.Module, folder: Path, stage: Callable[[str], None]) -> Path:
    """Write encoder.onnx and decoder.onnx into `folder`."""
    require_onnx()
    model = model.eval()
    folder.mkdir(parents=True, exist_ok=True)
    encoder_args, decoder_args = example_inputs(model)
    encoder_dims, decoder_dims = dynamic_shapes()
    parts = ((ExportEncoder(model), encoder_args, encoder_dims, ENCODER_NAMES, ENCODER),
             (ExportDecoderStep(model), decoder_args, decoder_dims, DECODER_NAMES, DECODER))
    for module, args, dims, names, name in parts:
        stage(f"torch.onnx.export (dynamo) of {name}")
        runtime_export.export_onnx(module, args, dims, names, folder / name)
    return folder
