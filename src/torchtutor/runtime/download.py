"""Cached downloads with checksums: fetched once, verified, reused."""

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path

from torchtutor.runtime.errors import UserError
from torchtutor.runtime.files import atomic_write


def cache_dir() -> Path:
    """`$TORCHTUTOR_CACHE`, else `$XDG_CACHE_HOME/torchtutor`, else `~/.cache/torchtutor`."""
    override = os.environ.get("TORCHTUTOR_CACHE")
    if override:
        return Path(override).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "torchtutor"


def sha256_of(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def cached_download(url: str, sha256: str, filename: str, local_hint: str,
                    timeout: float = 60.0) -> Path:
    """Return the cached copy of `url`, downloading and verifying it first if needed.

    `local_hint` finishes the error message when there is no network, telling the user how
    to point torchtutor at a copy they already have.
    """
    target = cache_dir() / filename
    if target.exists():
        if sha256_of(target) == sha256:
            return target
        target.unlink()  # a stale or damaged copy: fetch again
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            data = response.read()
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise UserError(f"could not download {url} ({reason}); {local_hint}") from None
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise UserError(f"download of {url} has sha256 {actual}, expected {sha256}; "
                        f"{local_hint}")
    atomic_write(target, lambda f: f.write(data))
    return target
