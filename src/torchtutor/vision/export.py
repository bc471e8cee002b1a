"""`torchtutor vision export`: a trained classifier as one file that needs only torch.

`--format aoti` (the default) writes an AOTInductor `.pt2` package (`torch.export` with a
dynamic batch, compiled ahead of time); `--format onnx` an ONNX file for onnxruntime;
`--format torchscript` (deprecated by PyTorch) a traced TorchScript file. The graph takes uint8
images (N, 3, 32, 32) and returns float32 logits: the run's normalization and test-time
augmentation are inside it, so `vision predict --exported FILE` answers as `vision predict
--run RUN_DIR` does in float32. The file also holds the class names and settings
(`torchtutor.json`). Before keeping the file, the export runs it on the run's test images
against the eager float32 model and refuses with a one-line error when they differ.
"""

import json
import os
import tempfile
import warnings
import zipfile
from pathlib import Path

import torch
from torch import nn

from torchtutor.runtime import export as runtime_export
from torchtutor.runtime import exported
from torchtutor.runtime.errors import UserError
from torchtutor.runtime.export import METADATA, ExportConfig
from torchtutor.runtime.files import atomic_write_bytes, make_folder, output_file, write_error
from torchtutor.runtime.options import EXPORT_FORMATS
from torchtutor.vision.data import IMAGE_SIZE, load_data, normalize, pixel_stats
from torchtutor.vision.inference import LoadedRun, classify, load_run

MAX_BATCH = 4096
BATCH = 1000          # images per call when predicting
CHECK_IMAGES = 200    # test images the export is checked on
TOLERANCE = 1e-3      # largest logit difference accepted between the file and torch


class ExportClassifier(nn.Module):
    """uint8 images (N, 3, H, W) -> float32 logits: normalization, network and TTA."""

    def __init__(self, loaded: LoadedRun):
        super().__init__()
        self.model = loaded.model.to("cpu", memory_format=torch.contiguous_format).eval()
        mean, std = pixel_stats(loaded.mean, loaded.std, torch.device("cpu"))
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.tta, self.translate = loaded.tta, loaded.tta and loaded.tta_translate

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return classify(self.model, normalize(images, self.mean, self.std), self.tta,
                        self.translate)


def settings_for(loaded: LoadedRun, config: ExportConfig) -> dict:
    return {"format": config.format, "classes": loaded.classes, "image_size": IMAGE_SIZE,
            "model": loaded.model_name, "tta": loaded.tta,
            "tta_translate": loaded.tta and loaded.tta_translate,
            "source_run": str(Path(config.run).resolve()), "torch": torch.__version__,
            "written_by": "torchtutor vision export"}


def _example() -> tuple[torch.Tensor]:
    # Batch 2: export would fix a batch of size 0 or 1.
    return (torch.zeros(2, 3, IMAGE_SIZE, IMAGE_SIZE, dtype=torch.uint8),)


def write_export(module: ExportClassifier, path: Path, settings: dict) -> Path:
    """Write `module` in `settings['format']` to `path` (atomically)."""
    args = _example()
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    if settings["format"] == "aoti":
        with torch.no_grad():
            program = torch.export.export(module, args, dynamic_shapes=({0: batch},))
        return runtime_export.compile_aoti({"model": program}, path,
                                           extra_files={METADATA: json.dumps(settings)})
    if settings["format"] == "onnx":
        return runtime_export.export_onnx(module, args, ({0: batch},),
                                          (["images"], ["logits"]), path, settings)
    with warnings.catch_warnings(), torch.no_grad():
        # torch 2.13 marks TorchScript deprecated; the format stays for older deployments.
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module, args)
        with tempfile.TemporaryDirectory() as work:
            torch.jit.save(traced, os.path.join(work, "model.pt"),
                           _extra_files={METADATA: json.dumps(settings)})
            data = Path(work, "model.pt").read_bytes()
    return atomic_write_bytes(path, data)


def read_settings(path: str | Path) -> dict:
    """The settings stored in a file `vision export` wrote; a UserError for any other file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--exported {path}: {'is a folder' if path.is_dir() else 'no such file'}")
    text = None
    if zipfile.is_zipfile(path):   # a .pt2 package or a TorchScript file
        try:
            text = exported.package_text(str(path), METADATA)
        except (OSError, zipfile.BadZipFile):
            text = None
        settings = json.loads(text) if text is not None else None
    else:
        try:
            settings = exported.onnx_metadata(str(path), METADATA)
        except ImportError:
            raise UserError(f"--exported {path} needs onnxruntime for ONNX files: pip install "
                            f"'torchtutor[onnx]'") from None
        except Exception:   # onnxruntime raises its own types for files it cannot parse
            settings = None
    if not isinstance(settings, dict) or settings.get("written_by") != \
            "torchtutor vision export" or settings.get("format") not in EXPORT_FORMATS:
        raise UserError(f"--exported {path} is not a file `torchtutor vision export` wrote")
    return settings


class ExportedClassifier:
    """A file `vision export` wrote, loaded: `logits(images)` for uint8 (N, 3, 32, 32)."""

    def __init__(self, path: str | Path):
        self.settings = read_settings(path)
        self.classes = list(self.settings["classes"])
        backend = self.settings["format"]
        if backend == "aoti":
            self.graph = exported.aoti_graph(str(path))
        elif backend == "onnx":
            run = exported.onnx_graph(str(path))
            self.graph = lambda images: run(images)[0]
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                self.graph = torch.jit.load(str(path), map_location="cpu")

    @torch.inference_mode()
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        parts = [self.graph(images[start:start + BATCH].contiguous())
                 for start in range(0, len(images), BATCH)]
        return torch.cat(parts).float() if parts else torch.zeros(0, len(self.classes))


def check_images(loaded: LoadedRun) -> tuple[torch.Tensor, str]:
    """Test images of the run's data (or, if that is gone, fixed random images)."""
    try:
        images = load_data(loaded.data, loaded.valid_fraction, loaded.seed).test_images
        return images[:CHECK_IMAGES], f"{min(len(images), CHECK_IMAGES)} test images"
    except UserError:
        generator = torch.Generator().manual_seed(0)
        images = torch.randint(0, 256, (CHECK_IMAGES, 3, IMAGE_SIZE, IMAGE_SIZE),
                               dtype=torch.uint8, generator=generator)
        return images, f"{CHECK_IMAGES} random images (the run's data {loaded.data} is gone)"


def check_export(module: ExportClassifier, path: Path, images: torch.Tensor) -> float:
    """The largest logit difference between the file and `module`; a UserError when it is over
    TOLERANCE or any image's top-3 classes differ."""
    with torch.no_grad():
        want = module(images)
    got = ExportedClassifier(path).logits(images)
    k = min(3, want.shape[1])
    worst = float((got - want).abs().max()) if len(images) else 0.0
    same = torch.equal(got.topk(k, dim=1).indices, want.topk(k, dim=1).indices)
    if not (worst < TOLERANCE and same):
        raise UserError(f"the exported {path.suffix} file does not match torch (largest logit "
                        f"difference {worst:.3g}, top-{k} {'equal' if same else 'differ'}); "
                        f"nothing was written")
    return worst


def is_previous_export(path: Path) -> bool:
    try:
        read_settings(path)
        return True
    except UserError:
        return False


def main(config: ExportConfig) -> int:
    out = output_file(config.out, replaceable=is_previous_export)   # before the slow part
    loaded = load_run(config.run, torch.device("cpu"))
    module = ExportClassifier(loaded).eval()
    images, what = check_images(loaded)
    print(f"exporting {loaded.model_name} ({config.format}; a minute or more for aoti)")
    settings = settings_for(loaded, config)
    make_folder(out.parent)
    # Written and checked beside --out, then renamed: a refused export replaces nothing.
    try:
        with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as work:
            written = write_export(module, Path(work) / out.name, settings)
            worst = check_export(module, written, images)
            os.replace(written, out)
    except OSError as exc:
        raise write_error(out, exc) from None
    path = out
    size = path.stat().st_size / 2**20
    note = ("; TorchScript is deprecated in torch, prefer --format aoti"
            if config.format == "torchscript" else "")
    print(f"wrote {path} ({size:.1f} MiB; checked on {what}: logits within {worst:.1g} of "
          f"torch{note})")
    if loaded.dtype is not None:
        print(f"note: the run predicts under {str(loaded.dtype).replace('torch.', '')} "
              f"autocast on this machine; the file computes in float32")
    print(f"  torchtutor vision predict --exported {path} IMAGE...")
    return 0
