"""Checkpoints: atomic saves, safe loads, one-line errors.

Saving goes through `atomic_write`, so the previous checkpoint survives a crash mid-save.
Loading uses `torch.load(weights_only=True)`, which refuses to unpickle arbitrary objects:
a checkpoint holds only tensors, numbers, strings, lists, tuples and dicts.
"""

import io
import os
import pickle
import zipfile
from pathlib import Path

import torch

from torchtutor.runtime.errors import UserError
from torchtutor.runtime.files import atomic_write


def save_checkpoint(path: str | os.PathLike, state: dict) -> Path:
    """Write `state` (a dict of tensors and plain values) atomically to `path`."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getvalue()
    return atomic_write(path, lambda f: f.write(data))


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu",
                    required_keys: tuple[str, ...] = ()) -> dict:
    """Load a checkpoint onto `map_location`, turning every failure into a one-line UserError."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"checkpoint {path} does not exist")
    if path.is_dir():
        raise UserError(f"checkpoint {path} is a folder, not a file")
    if path.stat().st_size == 0:
        raise UserError(f"checkpoint {path} is empty")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unsafe content"
        raise UserError(f"checkpoint {path} is corrupt or holds objects that are not "
                        f"allowed ({first[:120]})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, KeyError, OSError,
            AttributeError, TypeError, IndexError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"checkpoint {path} is truncated or corrupt ({reason[:120]})") from None
    if not isinstance(state, dict):
        raise UserError(f"checkpoint {path} does not hold a torchtutor checkpoint")
    missing = [key for key in required_keys if key not in state]
    if missing:
        raise UserError(f"checkpoint {path} is incompatible: missing {', '.join(missing)}")
    return state


def load_state_dict_checked(module: torch.nn.Module, state_dict: dict, path: str | os.PathLike,
                            ) -> None:
    """`module.load_state_dict` with a one-line error when shapes or names do not match."""
    try:
        module.load_state_dict(state_dict)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = " ".join(line.strip() for line in first[:2])
        raise UserError(f"checkpoint {path} does not fit this model ({detail[:160]})") from None
