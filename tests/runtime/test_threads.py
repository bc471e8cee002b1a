"""ThreadChooser: times its own steps on 1 and on all threads and keeps the faster."""

import torch

from torchtutor.runtime.threads import ThreadChooser


def test_thread_chooser_keeps_the_faster_setting():
    before = torch.get_num_threads()
    try:
        for one, two, expected in ((0.5, 0.9, 1), (0.9, 0.5, 2)):
            chooser = ThreadChooser(2)
            for index in range(7):
                chooser.before(index)
                assert torch.get_num_threads() == (1 if index < 3 else 2 if index < 6
                                                   else expected)
                chooser.after(index, 100.0 if index in (0, 3) else one if index < 3 else two)
    finally:
        torch.set_num_threads(before)


def test_thread_chooser_with_one_thread_leaves_the_count_alone():
    before = torch.get_num_threads()
    chooser = ThreadChooser(1)
    for index in range(8):
        chooser.before(index)
        chooser.after(index, 1.0)
        assert torch.get_num_threads() == before
