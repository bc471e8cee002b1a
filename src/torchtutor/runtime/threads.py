"""Pick 1 or all CPU threads for a training loop by timing its own steps.

On a machine whose few cores other work shares, torch's OpenMP threads can stall: a step that
needs both cores waits whenever another process holds one (measured 3-10x slower steps on the
2-core machine here). One thread then wins; on idle cores all of them do. Which one wins flips
as other work comes and goes, so the choice is made again every period.
"""

import time
from collections.abc import Callable
from typing import TypeVar

import torch

T = TypeVar("T")


class ThreadChooser:
    """Re-picks 1 or `most` CPU threads at the start of every period from timed real steps.

    The loop calls `before(index)` and `after(index, seconds)` around each step, `index`
    counting steps from the start of the period (an epoch, or every N steps). Steps 0-2 run on
    one thread and 3-5 on `most` (the first after each switch is not timed); the faster setting
    runs the rest of the period. Nothing is wasted: the timed steps are ordinary training
    steps. `most` <= 1 turns it off (the thread count is left alone).
    """

    def __init__(self, most: int):
        self.most = most
        self.times: dict[int, list[float]] = {}

    def before(self, index: int) -> None:
        if self.most <= 1 or index > 6:
            return
        if index in (0, 3):
            self.times[1 if index == 0 else self.most] = []
            torch.set_num_threads(1 if index == 0 else self.most)
        elif index == 6:
            best = min(self.times, key=lambda n: sorted(self.times[n])[0])
            torch.set_num_threads(best)

    def after(self, index: int, seconds: float) -> None:
        if self.most > 1 and index in (1, 2, 4, 5):
            self.times[1 if index < 3 else self.most].append(seconds)


class ThreadPolicy:
    """A training run's CPU threads, chosen once at setup (`thread_policy`) for both apps.

    `timed(step)` gives the step function the loop calls: as it is, or, for an `adaptive` run,
    timed and re-picking 1 or all threads every `period` calls (ThreadChooser). `restore()`
    gives back the thread count the run started with.
    """

    def __init__(self, adaptive: bool = False, period: int = 200, fixed: int | None = None):
        self.original = torch.get_num_threads()
        if fixed is not None:
            torch.set_num_threads(fixed)
        self.adaptive = adaptive
        self.chooser = ThreadChooser(self.original if adaptive else 1)
        self.period = period
        self.calls = 0

    def timed(self, step: Callable[..., T]) -> Callable[..., T]:
        if not self.adaptive:
            return step

        def run(*args, **kwargs) -> T:
            index = self.calls % self.period
            self.chooser.before(index)
            started = time.perf_counter()
            try:
                return step(*args, **kwargs)
            finally:
                self.chooser.after(index, time.perf_counter() - started)
                self.calls += 1
        return run

    def restore(self) -> None:
        torch.set_num_threads(self.original)


def thread_policy(device: torch.device, by_clock: bool, world_size: int = 1, period: int = 200,
                  fixed: int | None = None) -> ThreadPolicy:
    """The one thread policy of both training loops.

    A single CPU process bound by the clock re-picks its thread count from its own step times
    (see above). A run bound by a step count keeps torch's setting, so its weights do not
    depend on the machine's load; `fixed` (on a CPU) sets the count for the whole run.
    """
    on_cpu = device.type == "cpu"
    adaptive = by_clock and on_cpu and world_size == 1 and fixed is None
    return ThreadPolicy(adaptive, period, fixed if on_cpu else None)
