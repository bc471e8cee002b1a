"""Cached downloads with checksums: fetched once, verified, reused."""

import hashlib
import os
import socket
import sys
import urllib.error
from pathlib import Path

from torchtutor.runtime.errors import UserError
from torchtutor.runtime.files import make_folder


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

    torch.hub's downloader streams into a temporary file beside the target, hashes it on the
    way and shows a progress bar (on a terminal), so a 170 MB archive never sits in memory and
    a cut download never looks finished. `timeout` bounds each network wait. `local_hint`
    finishes the error message, telling the user how to point torchtutor at a copy they
    already have.
    """
    target = cache_dir() / filename
    if target.exists():
        if sha256_of(target) == sha256:
            return target
        target.unlink()  # a stale or damaged copy: fetch again
    make_folder(target.parent, "the download cache")
    print(f"downloading {url} into {target.parent}", file=sys.stderr, flush=True)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)  # torch.hub opens the URL without one
    import torch.hub  # here, not above: `chat prepare` reads corpora without importing torch

    try:
        torch.hub.download_url_to_file(url, str(target), hash_prefix=sha256,
                                       progress=sys.stderr.isatty())
    except RuntimeError as exc:  # torch.hub's "invalid hash value (expected ..., got ...)"
        actual = str(exc).rsplit('"', 2)[-2] if '"' in str(exc) else "another value"
        raise UserError(f"download of {url} has sha256 {actual}, expected {sha256}; "
                        f"{local_hint}") from None
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise UserError(f"could not download {url} ({reason}); {local_hint}") from None
    finally:
        socket.setdefaulttimeout(previous)
    return target
