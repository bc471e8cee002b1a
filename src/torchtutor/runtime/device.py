"""Device choice: `auto` prefers CUDA, then Apple's MPS, then the CPU."""

import torch

from torchtutor.runtime.errors import UserError


def device_of(model: torch.nn.Module) -> torch.device:
    """Where a model's weights are (the CPU for a model with none)."""
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


def mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(spec: str = "auto") -> torch.device:
    """Turn `auto`, `cpu`, `cuda`, `cuda:N` or `mps` into a usable torch.device.

    Asking for a device that is not there raises UserError with one line.
    """
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise UserError(f"unknown device {spec!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"device {spec!r} asked for, but CUDA is not available on this machine")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise UserError(f"device {spec!r} asked for, but only {count} CUDA device(s) exist")
        return device
    if device.type == "mps":
        if not mps_available():
            raise UserError("device 'mps' asked for, but MPS is not available on this machine")
        return device
    raise UserError(f"unsupported device {spec!r}; use auto, cpu, cuda, cuda:N or mps")


def synchronize(device: torch.device) -> None:
    """Wait until the work queued on `device` is done, so a clock read after it is honest."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def available_memory() -> int | None:
    """Bytes of memory the system can give without swapping (Linux's MemAvailable); None
    where that is not known."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_memory(needed: int, what: str) -> None:
    """A one-line UserError when `what` needs more bytes than the system has available,
    before anything is allocated (torch's allocator would fail with a traceback, or the
    system would swap for minutes first)."""
    available = available_memory()
    if available is not None and needed > available:
        raise UserError(f"{what} needs about {needed / 2**30:,.1f} GB of memory and "
                        f"{available / 2**30:,.1f} GB are available; choose smaller sizes")
