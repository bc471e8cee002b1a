"""Progress bars that stay quiet off a terminal, and an append-only CSV metrics log."""

import csv
import os
import sys
from collections.abc import Iterable
from pathlib import Path

from tqdm.auto import tqdm

from torchtutor.runtime.files import open_append, write_error


def progress(iterable: Iterable | None = None, total: int | None = None, desc: str = "",
             unit: str = "it", force: bool | None = None, **kwargs) -> tqdm:
    """A tqdm bar on stderr, disabled when stderr is not a terminal (CI logs, pipes)."""
    enabled = sys.stderr.isatty() if force is None else force
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=not enabled,
                dynamic_ncols=True, leave=False, file=sys.stderr, **kwargs)


class MetricsLog:
    """Rows of metrics appended to a CSV file, flushed after every row.

    Appending (not rewriting) keeps earlier rows when a resumed run adds more; a row cut short
    by a kill is at most the last line.
    """

    def __init__(self, path: str | os.PathLike, fieldnames: list[str]):
        self.path = Path(path)
        self.fieldnames = list(fieldnames)
        new = not self.path.exists() or self.path.stat().st_size == 0
        self._file = open_append(self.path)
        self._writer = csv.DictWriter(self._file, fieldnames=self.fieldnames,
                                      extrasaction="ignore")
        if new:
            self._write(self._writer.writeheader)

    def _write(self, write, *args) -> None:
        try:  # a full disk or a file system gone read-only: one line, not a traceback
            write(*args)
            self._file.flush()
        except OSError as exc:
            raise write_error(self.path, exc) from None

    def log(self, **row) -> None:
        self._write(self._writer.writerow, row)

    def close(self) -> None:
        try:
            self._file.close()
        except OSError:
            pass  # the write that failed has already said why

    def __enter__(self) -> "MetricsLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_metrics(path: str | os.PathLike) -> list[dict[str, str]]:
    """All complete rows of a metrics CSV."""
    with open(path, newline="", encoding="utf-8") as f:
        return [row for row in csv.DictReader(f) if None not in row.values()]
