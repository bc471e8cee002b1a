"""Progress bars with totals (plain periodic lines off a terminal), and the metrics log: an
append-only CSV file and, beside it, TensorBoard event files (`tensorboard --logdir runs`
shows every run)."""

import contextlib
import csv
import os
import sys
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

from tqdm.auto import tqdm
from tqdm.std import tqdm as plain_tqdm

from torchtutor.runtime.files import atomic_write, open_append, write_error

# Off a terminal: nothing for a wait shorter than this, then a line at most this often. Short
# enough that a log or a pipe never goes quiet for long, long enough not to flood it.
LINE_DELAY = 1.0
LINE_INTERVAL = 2.0
_last_line = 0.0  # when any bar last wrote a line (time.time, the clock tqdm uses)


class LineProgress(plain_tqdm):
    """A tqdm bar that writes its state as whole lines (`train: 40% 40/100 [00:12<00:18]`), for
    logs and pipes, where a redrawn bar would be one long line of carriage returns."""

    def __init__(self, *args, **kwargs):
        self._last_line, self._last_n = None, 0  # when a line was last written, at what n
        kwargs.setdefault("delay", LINE_DELAY)
        kwargs["mininterval"] = 0.25  # how often updates ask; `display` decides
        kwargs["maxinterval"] = 0  # no tqdm monitor thread: lines come from updates
        kwargs["dynamic_ncols"] = False
        # the counts and times only, no bar characters (tqdm's ncols=0 ignores a bar_format)
        if kwargs.get("bar_format"):
            kwargs["bar_format"] = kwargs["bar_format"].replace("|{bar}| ", " ")
        else:
            kwargs["ncols"] = 0
        super().__init__(*args, **kwargs)

    def display(self, msg: str | None = None, pos: int | None = None,
                final: bool = False) -> bool:
        if msg == "":  # close() clearing a leave=False bar: there is nothing to clear
            return False
        global _last_line
        now = self._time()
        # A line at most every LINE_INTERVAL seconds across all bars (one bar after another
        # stays as chatty as one bar), none for a bar done within LINE_DELAY. set_postfix and
        # refresh call this directly, so the limit is kept here rather than in update.
        start = getattr(self, "start_t", now)  # unset while tqdm.__init__ draws the first time
        if not final and (now < start + self.delay or now - _last_line < LINE_INTERVAL):
            return False
        self.fp.write((msg or str(self)).strip() + "\n")
        self.fp.flush()
        self._last_line, self._last_n = now, self.n
        _last_line = now
        return True

    def clear(self, nolock: bool = False) -> None:
        """Nothing to clear: lines are never redrawn (tqdm.write calls this; the default
        would write a carriage return into the log)."""

    def close(self) -> None:
        if not self.disable and self._last_line is not None and self._last_n != self.n:
            self.display(final=True)  # the final count, once any line was shown
        super().close()


def progress(iterable: Iterable | None = None, total: float | None = None, desc: str = "",
             unit: str = "it", force: bool | None = None, **kwargs) -> tqdm:
    """A progress bar on stderr: a tqdm bar on a terminal, else a plain line every
    LINE_INTERVAL seconds once the wait is longer than LINE_DELAY. `force=False` silences it
    (workers, quiet callers); `force=True` draws the bar even off a terminal."""
    if force is False:
        return tqdm(iterable, total=total, desc=desc, unit=unit, disable=True, **kwargs)
    if force or sys.stderr.isatty():
        return tqdm(iterable, total=total, desc=desc, unit=unit, dynamic_ncols=True,
                    leave=False, file=sys.stderr, **kwargs)
    return LineProgress(iterable, total=total, desc=desc, unit=unit, leave=False,
                        file=sys.stderr, **kwargs)


@contextlib.contextmanager
def waiting(desc: str, force: bool | None = None) -> Iterator[None]:
    """For a wait with nothing to count (torch importing its compiler, a big file loading):
    the time it has taken, refreshed from a thread, as a bar on a terminal or as a line every
    LINE_INTERVAL seconds off one. `force` as for `progress`."""
    bar = progress(desc=desc, force=force, bar_format="{desc}: {elapsed}")
    try:
        with refreshed(bar):
            yield
    finally:
        bar.close()


@contextlib.contextmanager
def refreshed(bar: tqdm) -> Iterator[None]:
    """`bar` redrawn from a thread while the block runs, so a long step between two updates
    (a compilation) still shows its time passing: off a terminal a line every LINE_INTERVAL."""
    done = threading.Event()

    def tick() -> None:
        while not done.wait(0.25):
            bar.refresh()

    thread = threading.Thread(target=tick, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


class MetricsLog:
    """Rows of metrics appended to a CSV file, flushed after every row.

    Appending (not rewriting) keeps earlier rows when a resumed run adds more; a row cut short
    by a kill is at most the last line. `curves` maps columns to TensorBoard tags: those
    columns also go, at the row's "step", into an event file in the CSV's folder.
    """

    def __init__(self, path: str | os.PathLike, fieldnames: list[str],
                 curves: dict[str, str] | None = None):
        self.path = Path(path)
        self.fieldnames = list(fieldnames)
        new = not self.path.exists() or self.path.stat().st_size == 0
        self._file = open_append(self.path)
        self._writer = csv.DictWriter(self._file, fieldnames=self.fieldnames,
                                      extrasaction="ignore")
        if new:
            self._write(self._writer.writeheader)
        self.curves = curves or {}
        self._events = None
        if self.curves:
            from torch.utils.tensorboard import SummaryWriter  # imports tensorboard: slow

            self._events = SummaryWriter(log_dir=str(self.path.parent), flush_secs=30)

    def _write(self, write, *args) -> None:
        try:  # a full disk or a file system gone read-only: one line, not a traceback
            write(*args)
            self._file.flush()
        except OSError as exc:
            raise write_error(self.path, exc) from None

    def log(self, **row) -> None:
        self._write(self._writer.writerow, row)
        if self._events is not None:
            for column, tag in self.curves.items():
                if row.get(column) not in (None, ""):
                    self._events.add_scalar(tag, float(row[column]), int(row["step"]))

    def close(self) -> None:
        try:
            self._file.close()
            if self._events is not None:
                self._events.close()
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


def plot_curves(metrics_path: str | os.PathLike, out_path: str | os.PathLike,
                curves: list[tuple[str, str]], ylabel: str, x: str = "step") -> None:
    """Columns of a metrics CSV against `x` (each curve: column, label), written atomically as
    a PNG: the loss plot every run folder of both apps holds."""
    import matplotlib
    matplotlib.use("Agg")  # no display needed; must precede pyplot
    import matplotlib.pyplot as plt

    rows = read_metrics(metrics_path)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    for key, label in curves:
        points = [(float(r[x]), float(r[key])) for r in rows if r.get(key)]
        if points:
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, label=label, marker="o" if len(points) < 30 else None)
    ax.set_xlabel(x)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    atomic_write(out_path, lambda f: fig.savefig(f, format="png"))
    plt.close(fig)
