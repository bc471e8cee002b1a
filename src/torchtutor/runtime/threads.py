"""Pick 1 or all CPU threads for a training loop by timing its own steps.

On a machine whose few cores other work shares, torch's OpenMP threads can stall: a step that
needs both cores waits whenever another process holds one (measured 3-10x slower steps on the
2-core machine here). One thread then wins; on idle cores all of them do. Which one wins flips
as other work comes and goes, so the choice is made again every period.
"""

import torch


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
