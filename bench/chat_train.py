"""Chatbot training: the tutorial's semantics against the default recipe, on Cornell.

(a) `--tutorial-compat` (the notes' recipe and semantics) trains for a fixed budget of training
    time (default 15 minutes); its validation loss L at the end is recorded.
(b) the default recipe, same architecture and sizes, trains until its validation loss is at
    most L (checked every --b-eval-every steps), or until it has used (a)'s budget.

Both use the same train/valid split (checked), and their validation loss is measured the same
way: mean NLL per real target token, teacher forced, float32, dropout off, on the whole valid
split. Times count training steps only (evaluation and checkpoints excluded) for both sides.
Throughput is training target tokens (real, non-pad) per second of those same runs.

    flock /tmp/torchtutor-bench.lock .venv/bin/python bench/chat_train.py [--budget-minutes M]

The last line reads `time-to-quality: R1x  throughput: R2x`.
"""

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import torch

from torchtutor.chat.config import DEFAULT, TUTORIAL, TrainConfig
from torchtutor.chat.data.prepare import prepare_data
from torchtutor.chat.train.loop import train

REPO = Path(__file__).resolve().parents[1]
NEVER = 10**9  # an eval/checkpoint cadence that never comes


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_side(name: str, config: TrainConfig, target: float | None, budget_s: float):
    """Train one side; returns (TrainResult, its config, losses by step)."""
    config = replace(config, target_valid_loss=target, time_budget=budget_s,
                     schedule_steps=config.schedule_steps or config.steps)
    if target is None:
        config = replace(config, steps=None)   # (a): the budget alone ends it
    first_losses: dict[int, float] = {}

    def record(step: int, model, loss: float) -> None:
        if step in (1, 10, 100):
            first_losses[step] = loss

    load = os.getloadavg()[0]
    wall, cpu = time.perf_counter(), cpu_seconds()
    result = train(config, after_step=record)
    wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
    print(f"[{name}] {result.steps} steps, {result.train_seconds:.0f} s training, "
          f"{result.tokens / result.train_seconds:.0f} tokens/s, valid loss "
          f"{result.valid_loss:.4f}; load avg at start {load:.2f}, "
          f"cpu/wall {cpu / wall:.2f}", flush=True)
    return result, config, first_losses


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "cornell"))
    parser.add_argument("--budget-minutes", type=float, default=15.0,
                        help="(a)'s training time; also (b)'s cap")
    parser.add_argument("--a-eval-every", type=int, default=250,
                        help="(a)'s evaluations along the way (for the curve only)")
    parser.add_argument("--b-eval-every", type=int, default=20,
                        help="how often (b) checks whether it has reached L (steps)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-a", type=float, default=None, metavar="L",
                        help="tuning aid: skip (a) and use this target loss (no ratio)")
    parser.add_argument("--a-only", metavar="JSON",
                        help="run (a) alone and save its result here")
    parser.add_argument("--a-from", metavar="JSON",
                        help="take (a)'s result from a file written by --a-only")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    budget = args.budget_minutes * 60
    # (a) the notes' recipe and semantics (no UNK); (b) the default recipe.
    a_recipe = replace(TUTORIAL, tutorial_compat=True, device=args.device,
                       checkpoint_every=NEVER, data=replace(TUTORIAL.data, corpus=args.data))
    b_recipe = replace(DEFAULT, device=args.device, checkpoint_every=NEVER,
                       data=replace(DEFAULT.data, corpus=args.data))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device "
          f"{args.device}, budget {args.budget_minutes:g} min", flush=True)

    # Same split on both sides: (a) has no UNK, (b) has one; nothing else may differ.
    split_a = prepare_data(a_recipe.data)
    split_b = prepare_data(b_recipe.data)
    assert split_a.splits == split_b.splits, "the two sides would train on different splits"
    assert split_a.vocab.index2word[3:] == split_b.vocab.index2word[4:]
    print(f"data: {len(split_a.splits['train'])} train / {len(split_a.splits['valid'])} valid "
          f"pairs, vocab {len(split_a.vocab)} (+UNK on side b)", flush=True)

    with tempfile.TemporaryDirectory(prefix="bench-chat-train-") as tmp:
        if args.a_from:
            saved = json.loads(Path(args.a_from).read_text())
            a = SimpleNamespace(**saved["result"])
            target = a.valid_loss
            print(f"[a] from {args.a_from}: {saved['summary']}")
        elif args.skip_a is None:
            a, a_config, firsts = run_side(
                "a: tutorial-compat",
                replace(a_recipe, out=f"{tmp}/a", eval_every=args.a_eval_every), None, budget)
            target = a.valid_loss
            print("[a] training loss at steps 1/10/100: "
                  + " / ".join(f"{firsts.get(s, float('nan')):.2f}" for s in (1, 10, 100))
                  + " (tutorial's own code: 8.80 / 6.60 / 4.65)")
            print("[a] curve (step, train s, valid loss): "
                  + ", ".join(f"({s}, {t:.0f}, {v:.3f})" for s, t, v in a.evaluations))
            if args.a_only:
                keep = {k: getattr(a, k) for k in ("steps", "train_seconds", "tokens",
                                                   "valid_loss", "evaluations")}
                summary = (f"{a.steps} steps, {a.train_seconds:.0f} s, "
                           f"{a.tokens / a.train_seconds:.0f} tokens/s, valid loss "
                           f"{a.valid_loss:.4f}, first losses {firsts}")
                Path(args.a_only).write_text(json.dumps({"result": keep, "summary": summary}))
                return 0
        else:
            target, a = args.skip_a, None
        b, b_config, _ = run_side(
            "b: default recipe",
            replace(b_recipe, out=f"{tmp}/b", eval_every=args.b_eval_every), target, budget)
        print(f"[b] recipe: batch {b_config.batch_size}, lr {b_config.lr:g}, decoder ratio "
              f"{b_config.decoder_lr_ratio:g}, clip {b_config.clip:g}, warm-up "
              f"{b_config.warmup_steps}, {b_config.schedule} over {b_config.schedule_steps}, "
              f"bucket {b_config.bucket}, precision {b_config.precision}, unigram bias "
              f"{b_config.unigram_bias}")
        print("[b] curve (step, train s, valid loss): "
              + ", ".join(f"({s}, {t:.0f}, {v:.3f})" for s, t, v in b.evaluations))
    if a is None:
        return 0
    a_rate = a.tokens / a.train_seconds
    b_rate = b.tokens / b.train_seconds
    print()
    print("| side | steps | training s | tokens/s | valid loss |")
    print("| --- | ---: | ---: | ---: | ---: |")
    print(f"| (a) tutorial-compat | {a.steps} | {a.train_seconds:.0f} | {a_rate:.0f} | "
          f"{a.valid_loss:.4f} |")
    print(f"| (b) default | {b.steps} | {b.train_seconds:.0f} | {b_rate:.0f} | "
          f"{b.valid_loss:.4f} |")
    if not b.reached_target:
        print(f"(b) did not reach L = {target:.4f} within the budget")
        ttq = "<1"
    else:
        ttq = f"{a.train_seconds / b.train_seconds:.1f}"
    print(f"time-to-quality: {ttq}x  throughput: {b_rate / a_rate:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
