"""Checkpoints: atomic saves, safe loads, one-line errors.

Saving goes through `atomic_write`, so the previous checkpoint survives a crash mid-save, and
refuses state whose floating-point tensors hold NaN or infinity (`NonFiniteWeights`): a
checkpoint on disk is always one a later command can use. Every checkpoint carries a sha256 of
its contents (tensor bytes, dtypes, shapes and every plain value) under `CHECKSUM_KEY`, which
loading verifies, so a flipped bit is a one-line error instead of silently different weights.
Files without one (written before checksums were added) still load.

Loading uses `torch.load(weights_only=True)`, which refuses to unpickle arbitrary objects:
a checkpoint holds only tensors, numbers, strings, lists, tuples and dicts.
"""

import hashlib
import io
import os
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch

from torchtutor.runtime.errors import UserError
from torchtutor.runtime.files import atomic_write

CHECKSUM_KEY = "__checksum__"


class NonFiniteWeights(UserError):
    """The state to save holds NaN or infinite values; nothing was written."""


def _feed(digest, value, name: str) -> None:
    """Hash `value` in a fixed traversal order; containers by their items, tensors by bytes."""
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous()
        digest.update(f"T{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        if tensor.numel():
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().data)
    elif isinstance(value, Mapping):
        digest.update(f"D{name}:{len(value)};".encode())
        for key, item in value.items():
            _feed(digest, item, f"{name}/{key!r}")
    elif isinstance(value, (list, tuple)):
        digest.update(f"{type(value).__name__[0]}{name}:{len(value)};".encode())
        for i, item in enumerate(value):
            _feed(digest, item, f"{name}/{i}")
    else:
        digest.update(f"V{name}:{type(value).__name__}:{value!r};".encode())


def state_checksum(state: Mapping) -> str:
    """sha256 of a checkpoint's contents, without its own checksum entry."""
    digest = hashlib.sha256()
    _feed(digest, {k: v for k, v in state.items() if k != CHECKSUM_KEY}, "")
    return digest.hexdigest()


def non_finite_tensors(value, name: str = "") -> list[str]:
    """Names of the floating-point (or complex) tensors in `value` holding NaN or infinity."""
    if isinstance(value, torch.Tensor):
        if (value.is_floating_point() or value.is_complex()) and value.numel() \
                and not bool(torch.isfinite(value.detach()).all()):
            return [name or "tensor"]
        return []
    if isinstance(value, Mapping):
        items = value.items()
    elif isinstance(value, (list, tuple)):
        items = enumerate(value)
    else:
        return []
    found = []
    for key, item in items:
        found += non_finite_tensors(item, f"{name}.{key}" if name else str(key))
    return found


def save_checkpoint(path: str | os.PathLike, state: dict) -> Path:
    """Write `state` (a dict of tensors and plain values) atomically to `path`, with its checksum.

    Raises NonFiniteWeights, writing nothing, when a floating-point tensor holds NaN or inf.
    """
    bad = non_finite_tensors(state)
    if bad:
        more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
        raise NonFiniteWeights(f"not saving {path}: {bad[0]}{more} hold NaN or infinite values")
    state = {**state, CHECKSUM_KEY: {"sha256": state_checksum(state)}}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getvalue()
    return atomic_write(path, lambda f: f.write(data))


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu",
                    required_keys: tuple[str, ...] = (),
                    types: Mapping[str, type | tuple[type, ...]] | None = None) -> dict:
    """Load a checkpoint onto `map_location`, turning every failure into a one-line UserError.

    The checksum is verified (when the file has one) and removed from the result; `types`
    maps entries to the type(s) they must have when present.
    """
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
        # torch's text runs over many lines and begins by explaining how to load the file
        # anyway; the line that names what was refused is the one worth showing.
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        named = [ln for ln in lines if "GLOBAL" in ln or "Unsupported" in ln]
        what = (named or lines or ["unsafe content"])[0]
        raise UserError(f"checkpoint {path} is corrupt or holds objects that are not "
                        f"allowed, refused unread ({what[:120]})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, KeyError, OSError,
            AttributeError, TypeError, IndexError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"checkpoint {path} is truncated or corrupt ({reason[:120]})") from None
    if not isinstance(state, dict):
        raise UserError(f"checkpoint {path} does not hold a torchtutor checkpoint")
    stored = state.pop(CHECKSUM_KEY, None)
    if stored is not None:
        expected = stored.get("sha256") if isinstance(stored, dict) else None
        if not isinstance(expected, str) or state_checksum(state) != expected:
            raise UserError(f"checkpoint {path} is corrupt: its contents do not match their "
                            "checksum (damaged on disk or edited)")
    missing = [key for key in required_keys if key not in state]
    if missing:
        raise UserError(f"checkpoint {path} is incompatible: missing {', '.join(missing)}")
    for key, kind in (types or {}).items():
        if key in state and not isinstance(state[key], kind):
            names = " or ".join(t.__name__ for t in (kind if isinstance(kind, tuple) else (kind,)))
            raise UserError(f"checkpoint {path} is malformed: {key!r} is a "
                            f"{type(state[key]).__name__}, not a {names}")
    return state


def load_state_dict_checked(module: torch.nn.Module, state_dict: dict, path: str | os.PathLike,
                            ) -> None:
    """`module.load_state_dict` with a one-line error when shapes, names or types do not match.

    Weights holding NaN or infinity are refused too: they come from a run that diverged, and
    would only give garbage (or crash int8 quantization) later.
    """
    if not isinstance(state_dict, Mapping) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state_dict.items()):
        raise UserError(f"checkpoint {path} is malformed: its weights are not a mapping of "
                        "names to tensors")
    bad = non_finite_tensors(state_dict)
    if bad:
        raise UserError(f"checkpoint {path} holds NaN or infinite weights ({bad[0]}); it comes "
                        "from a run that diverged")
    try:
        module.load_state_dict(state_dict)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = " ".join(line.strip() for line in first[:2])
        raise UserError(f"checkpoint {path} does not fit this model ({detail[:160]})") from None
