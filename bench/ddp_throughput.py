"""Training throughput of 1 process against 2 torchrun processes (DDP), for both trainers.

    flock /tmp/torchtutor-bench.lock .venv/bin/python bench/ddp_throughput.py [--device cpu]

Every configuration runs the real command line (`torchtutor chat train`, `torchtutor vision
train`), alone or under `python -m torch.distributed.run --standalone --nproc-per-node 2`, in a
fresh run folder. "global batch" is the per-process `--batch-size` times the processes. Rates
are those the commands report: the chatbot's tokens/s over its training steps, and the
classifier's images/s in its last epoch (the first epoch pays for warm-up). On a CPU, torchrun
gives each process one thread (OMP_NUM_THREADS=1) while the single process uses them all.
Chat data: the bundled ChatterBot corpus. Vision data: a generated image folder of random
32x32 images (throughput does not depend on what the pixels show).
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from torchtutor.runtime.progress import read_metrics
from vision_train import cpu_name  # bench/vision_train.py: run as a script, bench/ is on the path


def run(nproc: int, args: list[str], timeout: float = 900) -> str:
    launcher = ([sys.executable, "-m", "torchtutor"] if nproc == 1 else
                [sys.executable, "-m", "torch.distributed.run", "--standalone",
                 "--nproc-per-node", str(nproc), "-m", "torchtutor"])
    done = subprocess.run(launcher + args, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise SystemExit(f"failed: {' '.join(launcher + args)}\n{done.stderr[-3000:]}")
    return done.stdout


def chat_rate(nproc: int, batch: int, steps: int, device: str, out: Path) -> float:
    text = run(nproc, ["chat", "train", "--data", "chatterbot", "--min-count", "1",
                       "--out", str(out), "--recipe", "tutorial", "--precision", "fp32",
                       "--batch-size", str(batch), "--steps", str(steps),
                       "--eval-every", "100000", "--checkpoint-every", "100000",
                       "--device", device])
    return float(re.search(r"\((\d+) tokens/s\)", text).group(1))


def make_images(root: Path, per_class: int) -> Path:
    rng = np.random.default_rng(0)
    for split, count in (("train", per_class), ("test", max(1, per_class // 10))):
        for c in range(10):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(count):
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
                    folder / f"{i}.png")
    return root


def vision_rate(nproc: int, model: str, batch: int, epochs: int, data: Path, device: str,
                out: Path) -> float:
    run(nproc, ["vision", "train", "--data", str(data), "--out", str(out), "--model", model,
                "--epochs", str(epochs), "--batch-size", str(batch), "--device", device])
    return float(read_metrics(out / "metrics.csv")[-1]["images_per_second"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--chat-steps", type=int, default=40)
    parser.add_argument("--images-per-class", type=int, default=256)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ["TORCHTUTOR_CACHE"] = str(tmp / "cache")
        data = make_images(tmp / "images", args.images_per_class)
        n = 0

        def fresh() -> Path:
            nonlocal n
            n += 1
            return tmp / f"run{n}"

        for nproc, batch in ((1, 64), (2, 32), (2, 64)):
            rate = chat_rate(nproc, batch, args.chat_steps, args.device, fresh())
            rows.append(("chat (hidden 500, fp32)", nproc, batch, nproc * batch, rate,
                         "tokens/s"))
        for model, configs, epochs in (("fast", ((1, 256), (2, 128), (2, 256)), 2),
                                       ("tutorial", ((1, 8), (2, 4), (2, 8)), 2)):
            for nproc, batch in configs:
                rate = vision_rate(nproc, model, batch, epochs, data, args.device, fresh())
                rows.append((f"vision {model}", nproc, batch, nproc * batch, rate, "images/s"))
    print(f"{cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"device {args.device}")
    print()
    print("| trainer | processes | batch per process | global batch | rate | unit | vs 1 |")
    print("|---|---:|---:|---:|---:|---|---:|")
    base = {}
    for name, nproc, batch, global_batch, rate, unit in rows:
        base.setdefault(name, rate)
        print(f"| {name} | {nproc} | {batch} | {global_batch} | {rate:,.0f} | {unit} | "
              f"{rate / base[name]:.2f}x |")
    print(json.dumps({f"{r[0]} x{r[1]} b{r[2]}": round(r[4]) for r in rows}))


if __name__ == "__main__":
    main()
