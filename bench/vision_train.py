"""Test accuracy against training wall time: the notes' recipe and the fast recipe.

    .venv/bin/python bench/vision_train.py [--budget-minutes 10] [--recipes fast,tutorial]

Runs on ../shared/data/cifar10 (CIFAR-10 as JPEG files, read as an image-folder tree). The
fast recipe gets `--budget-minutes` of training time: its epochs are planned from the speed
measured on a few steps, and the budget is also a hard stop. Times are training only; the
per-epoch test passes are left out of them. With a GPU, the table also gives the training time
at which the test accuracy first reached `--target`. The last line reads
`fast: A% in S s  tutorial: B% in T s`.

On a GPU, fix the fast recipe's length instead: `--fast-epochs 10,12 --seeds 3` runs each
length with seeds 0..2 after one untimed warm-up run (CUDA start-up and cuDNN's kernel search
are not training); the last line then gives the mean over the seeds of the last length.
"""

import argparse
import os
import platform
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from torchtutor.runtime.device import resolve_device
from torchtutor.runtime.progress import read_metrics
from torchtutor.vision.config import RECIPES
from torchtutor.vision.data import load_data
from torchtutor.vision.train import train

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10" / \
    "cifar10-jpeg.tar.gz"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def run_recipe(name: str, data: str, out: Path, device: str, budget: float | None,
               epochs: float | None, lr: float | None = None, seed: int = 0,
               widths: list[int] | None = None, quiet: bool = False) -> dict:
    config = replace(RECIPES[name], out=str(out), device=device, time_budget=budget,
                     plan_from_budget=budget is not None and epochs is None, seed=seed,
                     model=replace(RECIPES[name].model, widths=widths),
                     data=replace(RECIPES[name].data, source=data))
    if epochs is not None:
        config = replace(config, epochs=epochs)
    if lr is not None:
        config = replace(config, lr=lr)
    started = time.perf_counter()
    result = train(config, quiet=quiet)
    result["wall_seconds"] = time.perf_counter() - started
    result["metrics"] = read_metrics(out / "metrics.csv")
    return result


def first_reaching(metrics: list[dict], target: float) -> str:
    for row in metrics:
        if float(row["test_accuracy"]) >= target:
            return f"{float(row['train_seconds']):.1f} s"
    return "not reached"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--budget-minutes", type=float, default=10.0,
                        help="training time for the fast recipe")
    parser.add_argument("--fast-epochs", default=None,
                        help="fix the fast recipe's epochs instead of planning them; "
                             "a comma list runs each")
    parser.add_argument("--seeds", type=int, default=1, help="runs per fast length (seeds 0..)")
    parser.add_argument("--widths", default=None, help="fast net widths, e.g. 64,256,256")
    parser.add_argument("--fast-lr", type=float, default=None,
                        help="peak learning rate of the fast recipe (default: the recipe's)")
    parser.add_argument("--recipes", default="fast,tutorial")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--target", type=float, default=0.94,
                        help="accuracy whose time is reported (GPU goal 94%%)")
    parser.add_argument("--out", default=None, help="keep run folders here (default: temp)")
    args = parser.parse_args()

    device = resolve_device(args.device)
    threads = torch.get_num_threads()
    where = (torch.cuda.get_device_name(device) if device.type == "cuda"
             else f"{cpu_name()}, {os.cpu_count()} cores, {threads} torch threads")
    print(f"# vision_train on {where}; torch {torch.__version__}", flush=True)
    started = time.perf_counter()
    data = load_data(args.data)  # decode once into the cache, outside the timed runs
    print(f"data: {len(data.train_labels)} train / {len(data.test_labels)} test images, "
          f"ready in {time.perf_counter() - started:.1f} s", flush=True)

    results = {}
    base = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="vision-bench-"))
    widths = [int(w) for w in args.widths.split(",")] if args.widths else None
    lengths = [float(e) for e in args.fast_epochs.split(",")] if args.fast_epochs else [None]
    if device.type == "cuda":
        run_recipe("fast", args.data, base / "warm-up", args.device, None, 1.0,
                   widths=widths, quiet=True)
    for name in [r.strip() for r in args.recipes.split(",") if r.strip()]:
        for epochs in (lengths if name == "fast" else [None]):
            for seed in range(args.seeds if name == "fast" else 1):
                label = name if epochs is None else f"{name} {epochs:g} ep seed {seed}"
                out = base / label.replace(" ", "-")
                if out.exists():
                    sys.exit(f"{out} exists; choose another --out")
                budget = args.budget_minutes * 60 if name == "fast" and epochs is None else None
                lr = args.fast_lr if name == "fast" else None
                results[label] = run_recipe(name, args.data, out, args.device, budget, epochs,
                                            lr, seed, widths if name == "fast" else None,
                                            quiet=len(lengths) * args.seeds > 1)
                r = results[label]
                print(f"{label}: {r['test_accuracy']:.2%} in {r['train_seconds']:.2f} s",
                      flush=True)

    print()
    print(f"| recipe | epochs | steps | training s | test accuracy | time to "
          f"{args.target:.0%} |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, r in results.items():
        print(f"| {name} | {r['epochs']:g} | {r['steps']} | {r['train_seconds']:.1f} | "
              f"{r['test_accuracy']:.2%} | {first_reaching(r['metrics'], args.target)} |")
    for name, r in results.items():
        curve = ", ".join(f"{row['epoch']}: {float(row['test_accuracy']):.1%} @ "
                          f"{float(row['train_seconds']):.0f} s" for row in r["metrics"])
        print(f"{name} curve (epoch: test accuracy @ training s): {curve}")
    if len(lengths) * args.seeds > 1:
        print()
        print("| fast epochs | runs | mean test accuracy | min | max | runs >= target | "
              "mean training s |")
        print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for epochs in lengths:
            runs = [r for label, r in results.items() if label.startswith(f"fast {epochs:g} ep")]
            acc = [r["test_accuracy"] for r in runs]
            secs = [r["train_seconds"] for r in runs]
            print(f"| {epochs:g} | {len(runs)} | {sum(acc) / len(acc):.2%} | {min(acc):.2%} | "
                  f"{max(acc):.2%} | {sum(a >= args.target for a in acc)} | "
                  f"{sum(secs) / len(secs):.2f} |")
        # The last line: the last length's mean over its seeds, then any other recipe.
        last = [r for label, r in results.items() if label.startswith(f"fast {lengths[-1]:g} ep")]
        summary = {"fast": {"test_accuracy": sum(r["test_accuracy"] for r in last) / len(last),
                            "train_seconds": sum(r["train_seconds"] for r in last) / len(last)}}
        summary.update({k: r for k, r in results.items() if not k.startswith("fast")})
    else:
        summary = {label.split()[0]: r for label, r in results.items()}
    parts = [f"{name}: {r['test_accuracy']:.2%} in {r['train_seconds']:.1f} s"
             for name, r in summary.items()]
    print("  ".join(parts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
