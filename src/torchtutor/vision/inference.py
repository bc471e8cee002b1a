"""Running a trained classifier: precision, batched logits with flip TTA, loading a run folder."""

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from torchtutor.runtime.checkpoint import load_checkpoint, load_state_dict_checked
from torchtutor.runtime.errors import UserError
from torchtutor.runtime.precision import autocast, autocast_dtype
from torchtutor.runtime.progress import progress
from torchtutor.vision.config import config_from_saved
from torchtutor.vision.data import normalize
from torchtutor.vision.models import build_model

# The same name as a chat run's latest checkpoint.
CHECKPOINT_NAME = "last.pt"
# What the entries of a checkpoint must be (a wrong type is a one-line error, not a crash).
CHECKPOINT_TYPES = {"model": dict, "config": dict, "classes": (list, tuple), "mean": list,
                    "std": list, "step": int, "epoch": int, "optimizer": dict}


def uses_channels_last(model_name: str, device: torch.device) -> bool:
    # Measured on this project's 2-core Xeon: channels_last makes the fast net's convolutions
    # about 1.5-2x faster under oneDNN; the tutorial net is too small to care.
    return model_name == "fast" and device.type in ("cpu", "cuda")


def _logits(model: nn.Module, x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return model(x).float()


def _mirror_logits(model: nn.Module, x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return (_logits(model, x, channels_last) + _logits(model, x.flip(3), channels_last)) / 2


def classify(model: nn.Module, x: torch.Tensor, tta: bool = False, translate: bool = False,
             channels_last: bool = False) -> torch.Tensor:
    """fp32 logits for a normalized batch x (N, 3, H, W).

    With `tta`, averaged with the mirror image; with `translate` too, half of the weight goes to
    the mirrored pair of copies shifted one pixel up-left and one down-right (reflect-padded),
    as airbench tests: 6 passes instead of 2, for a few tenths of a percent. `vision export`
    compiles this same function.
    """
    if not tta:
        return _logits(model, x, channels_last)
    logits = _mirror_logits(model, x, channels_last)
    if translate:
        h, w = x.shape[2:]
        padded = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")
        shifted = (_mirror_logits(model, padded[:, :, :h, :w], channels_last)
                   + _mirror_logits(model, padded[:, :, 2:, 2:], channels_last))
        logits = logits / 2 + shifted / 4
    return logits


@torch.no_grad()
def predict_logits(model: nn.Module, images: torch.Tensor, mean: list[float], std: list[float],
                   device: torch.device, dtype: torch.dtype | None = None, tta: bool = False,
                   batch_size: int = 1000, channels_last: bool = False,
                   translate: bool = False, desc: str | None = None) -> torch.Tensor:
    """fp32 logits for uint8 images (N, 3, H, W), in batches, under the run's autocast.

    With `desc`, a progress bar of that name counts the images. Test-time augmentation makes
    2 or 6 passes over a batch, so on a CPU its batches are that much smaller: the bar's
    updates never wait longer than one plain pass over `batch_size` images.
    """
    model.eval()
    out = []
    if device.type == "cpu":
        batch_size = max(1, batch_size // (1 if not tta else 6 if translate else 2))
    with progress(total=len(images), desc=desc or "", unit="image",
                  force=None if desc else False) as bar:
        for start in range(0, len(images), batch_size):
            x = normalize(images[start:start + batch_size].to(device), mean, std)
            with autocast(device, dtype):
                logits = classify(model, x, tta, translate, channels_last)
            out.append(logits.cpu())
            bar.update(len(x))
    return torch.cat(out) if out else torch.zeros(0, 0)


@dataclass
class LoadedRun:
    model: nn.Module
    model_name: str
    classes: list[str]
    mean: list[float]
    std: list[float]
    data: str
    valid_fraction: float
    seed: int
    tta: bool
    tta_translate: bool
    dtype: torch.dtype | None
    channels_last: bool
    device: torch.device


def checkpoint_path(run_dir: str | Path) -> Path:
    """The run folder's checkpoint, last.pt."""
    return Path(run_dir) / CHECKPOINT_NAME


def check_vision_run(run_dir: str | Path) -> Path:
    """`run_dir` if it is a folder that may hold a vision run; a one-line UserError if it is
    missing or is a chat run (those hold a vocabulary)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run folder {run_dir} does not exist; train one with "
                        "`torchtutor vision train --out DIR`")
    if (run_dir / "vocab.json").is_file():
        raise UserError(f"{run_dir} is a chat run (from `chat train`), not a vision run; use "
                        "`torchtutor chat talk/reply/evaluate --run` with it")
    return run_dir


def load_run(run_dir: str | Path, device: torch.device) -> LoadedRun:
    """Rebuild the model of a `vision train` run folder from its checkpoint."""
    run_dir = check_vision_run(run_dir)
    path = checkpoint_path(run_dir)
    state = load_checkpoint(path, required_keys=("model", "config", "classes", "mean", "std"),
                            types=CHECKPOINT_TYPES)
    config = config_from_saved(state["config"], str(path))
    name = config.model.name
    try:
        model = build_model(name, len(state["classes"]), config.model.widths)
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"checkpoint {path} has an unusable config ({exc})") from None
    load_state_dict_checked(model, state["model"], path)
    channels_last = uses_channels_last(name, device)
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.eval()
    return LoadedRun(model=model, model_name=name, classes=list(state["classes"]),
                     mean=list(state["mean"]), std=list(state["std"]),
                     data=config.data.source, valid_fraction=config.data.valid_fraction,
                     seed=config.seed, tta=config.tta, tta_translate=config.tta_translate,
                     dtype=autocast_dtype(config.precision, device, cpu_auto_bf16=name == "fast",
                                          fp16=True),
                     channels_last=channels_last, device=device)

