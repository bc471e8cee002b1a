"""Running graphs that runtime/export.py wrote: an AOTInductor package's graph or an ONNX file,
each a callable from tensors to a list of tensors, and the settings stored beside them.

This module needs only the standard library and torch (onnxruntime for ONNX files): `chat
export` copies it into the standalone chatbot.py it writes.
"""

import json
import zipfile

import torch


def onnx_graph(path: str):
    """An onnxruntime session called like an AOTInductor graph: tensors in, tensors out."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]

    def run(*tensors: torch.Tensor) -> list[torch.Tensor]:
        feeds = {name: t.numpy() for name, t in zip(names, tensors, strict=True)}
        return [torch.from_numpy(out) for out in session.run(None, feeds)]
    return run


def aoti_graph(path: str, name: str = "model"):
    """The graph `name` of an AOTInductor `.pt2` package."""
    from torch._inductor.package import load_package

    return load_package(path, name)


def package_text(path: str, name: str) -> str | None:
    """The extra file `name` stored in a `.pt2` package, or None."""
    with zipfile.ZipFile(path) as archive:
        for member in archive.namelist():
            if member.endswith(f"/extra/{name}"):
                return archive.read(member).decode("utf-8")
    return None


def onnx_metadata(path: str, key: str) -> dict | None:
    """The JSON stored under `key` in an ONNX file's metadata, or None."""
    import onnxruntime

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    text = session.get_modelmeta().custom_metadata_map.get(key)
    return json.loads(text) if text is not None else None
