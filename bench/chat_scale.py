"""Corpora larger than memory: `chat prepare` and `chat train` on Cornell repeated 1x..50x.

    python bench/chat_scale.py [--data ../shared/data/cornell] [--scales 1 10 50]
        [--baseline-rev REV] [--baseline-scales 1 10] [--steps 50] [--ddp-scale 10]

Cornell's (query, reply) pairs are written N times into a pair file in a temporary folder,
copy k's conversations renamed `k:ID` so every copy is its own conversations. For each N:
`chat prepare` (wall and CPU time, peak RSS, pairs read per CPU second), then `chat train
--data PREPARED --recipe tutorial --steps 50` on it (the tutorial-size model; wall time, peak
RSS).
The valid and test fractions are 0.1/N, so every scale validates on as many pairs as 1x, and
the trim threshold is N times the default `--min-count`: N copies see every word N times as
often, so each scale keeps exactly 1x's vocabulary (at the default threshold 10x would keep all
15,336 words against 1x's 6,529, and a model 2.3x wider at its embedding and output layer
would be measured, not the data path). So the training figures differ only in the corpus's
size. "today" is `chat prepare` as it was at
`--baseline-rev` (run from `git archive` of that commit) on the same files, back to back with
the new one. Last, 2 processes under torchrun (gloo, one thread each) train on the 10x store,
and each process's peak RSS is read from /proc (VmHWM) while it runs. Every command runs in
its own process; peak RSS of a single process is its rusage `ru_maxrss`; for torchrun the
largest `ru_maxrss` of any process it waited for is printed beside the polled peaks, as a check
that polling missed no late growth.
"""

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from torchtutor.chat.config import PrepareConfig  # noqa: E402
from torchtutor.chat.data.corpus import escape_field, read_cornell  # noqa: E402


def write_repeated(folder: Path, out: Path, times: int) -> int:
    """Cornell's pairs `times` over, each copy with its own conversation ids; pairs written."""
    pairs = read_cornell(folder).pairs
    rows = ["\t" + escape_field(p.conversation) + "\n" for p in pairs]
    texts = [escape_field(p.query) + "\t" + escape_field(p.reply) for p in pairs]
    with open(out, "w", encoding="utf-8") as f:
        for k in range(times):
            f.write("".join(t + f"\t{k}:" + r[1:] for t, r in zip(texts, rows, strict=True)))
    return len(pairs) * times


def run_measured(cmd: list[str], env: dict) -> tuple[float, float, str, float]:
    """(wall seconds, peak RSS in MB of the process, its output, its CPU seconds) of one
    command. CPU seconds (user + system) are what to compare on a shared machine: wall time
    there measures the other work as much as this."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output = proc.stdout.read().decode(errors="replace")
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{output[-3000:]}")
    return seconds, usage.ru_maxrss / 1024, output, usage.ru_utime + usage.ru_stime


def _workers(pid: int) -> list[int]:
    """Child processes of `pid` that run torchtutor (not multiprocessing's helpers)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if int(fields[1]) == pid and b"torchtutor" in cmdline:
                out.append(int(entry.name))
    return out


def _peak_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def run_torchrun(cmd: list[str], env: dict) -> tuple[float, dict[int, float], float]:
    """(wall seconds, {worker pid: peak RSS MB}, largest peak MB of any process torchrun or
    its children waited for) of a torchrun command; workers are polled."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    peaks: dict[int, int] = {}
    chunks: list[bytes] = []
    reader = threading.Thread(target=lambda: chunks.append(proc.stdout.read()), daemon=True)
    reader.start()
    while True:
        for child in _workers(proc.pid):
            kb = _peak_kb(child)
            if kb is not None:
                peaks[child] = max(peaks.get(child, 0), kb)
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            break
        time.sleep(0.2)
    reader.join()
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n"
                         f"{b''.join(chunks).decode(errors='replace')[-3000:]}")
    return seconds, {pid: kb / 1024 for pid, kb in peaks.items()}, usage.ru_maxrss / 1024


def baseline_src(rev: str, into: Path) -> Path:
    """`src/` of commit `rev`, unpacked from `git archive`."""
    archive = into / "baseline.tar"
    subprocess.run(["git", "-C", str(REPO), "archive", "-o", str(archive), rev, "src"],
                   check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into / "baseline", filter="data")
    archive.unlink()
    return into / "baseline" / "src"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "cornell"),
                        help="the Cornell folder (default: ../shared/data/cornell)")
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 10, 50],
                        help="how many copies of Cornell (default: 1 10 50)")
    parser.add_argument("--baseline-rev", default="5794dec",
                        help="the commit whose `chat prepare` is 'today' (default: 5794dec)")
    parser.add_argument("--baseline-scales", type=int, nargs="*", default=[1, 10],
                        help="scales to run today's prepare on (default: 1 10)")
    parser.add_argument("--steps", type=int, default=50, help="training steps (default: 50)")
    parser.add_argument("--train-scales", type=int, nargs="*", default=None,
                        help="scales to train one process on (default: all of --scales)")
    parser.add_argument("--ddp-scale", type=int, default=10,
                        help="scale of the 2-process torchrun run (default: 10; 0: none)")
    parser.add_argument("--work", default=None, help="temporary folder's parent (default: /tmp)")
    args = parser.parse_args()
    folder = Path(args.data)
    if not (folder / "movie_lines.txt").is_file():
        print(f"no Cornell corpus at {folder}", file=sys.stderr)
        return 2
    python = sys.executable
    new_env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    rows, ddp_rows = [], []
    with tempfile.TemporaryDirectory(prefix="chat-scale-", dir=args.work) as tmp:
        tmp = Path(tmp)
        old_env = {**os.environ, "PYTHONPATH": str(baseline_src(args.baseline_rev, tmp))}
        for scale in args.scales:
            corpus = tmp / f"cornell-{scale}x.tsv"
            pairs = write_repeated(folder, corpus, scale)
            fraction = f"{0.1 / scale:.6g}"
            # Today's commit names the corpus --corpus; the new command line calls it --data.
            options = ["--valid-fraction", fraction, "--test-fraction", fraction,
                       "--min-count", str(PrepareConfig().min_count * scale)]
            prepare = [python, "-m", "torchtutor", "chat", "prepare", "--data", str(corpus),
                       *options]
            prepare_today = [python, "-m", "torchtutor", "chat", "prepare",
                             "--corpus", str(corpus), *options]
            row = {"scale": scale, "pairs": pairs}
            if scale in args.baseline_scales:
                seconds, rss, _, cpu = run_measured(prepare_today + ["--out", str(tmp / "old")],
                                                     old_env)
                row.update(old_s=seconds, old_rss=rss, old_cpu=cpu,
                           old_stats=json.loads((tmp / "old" / "stats.json").read_text()))
                subprocess.run(["rm", "-rf", str(tmp / "old")], check=True)
            prepared = tmp / f"prepared-{scale}x"
            seconds, rss, _, cpu = run_measured(prepare + ["--out", str(prepared)], new_env)
            row.update(new_s=seconds, new_rss=rss, new_cpu=cpu,
                       stats=json.loads((prepared / "stats.json").read_text()))
            train = [python, "-m", "torchtutor", "chat", "train", "--data", str(prepared),
                     "--recipe", "tutorial", "--steps", str(args.steps), "--device", "cpu",
                     "--eval-every", str(args.steps), "--checkpoint-every", str(args.steps)]
            if args.train_scales is None or scale in args.train_scales:
                seconds, rss, _, _ = run_measured(train + ["--out", str(tmp / f"run-{scale}x")],
                                                  new_env)
                row.update(train_s=seconds, train_rss=rss)
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if "stats" not in k}), flush=True)
            if scale == args.ddp_scale:
                ddp_env = {**new_env, "OMP_NUM_THREADS": "1"}
                cmd = [python, "-m", "torch.distributed.run", "--standalone",
                       "--nproc-per-node", "2", "-m", "torchtutor", "chat", "train",
                       "--data", str(prepared), "--recipe", "tutorial",
                       "--steps", str(args.steps), "--device", "cpu",
                       "--eval-every", str(args.steps), "--checkpoint-every", str(args.steps),
                       "--out", str(tmp / f"ddp-{scale}x")]
                try:
                    seconds, peaks, largest = run_torchrun(cmd, ddp_env)
                except SystemExit as exc:   # report it; the other rows still count
                    print(f"torchrun run failed: {exc}", flush=True)
                else:
                    ddp_rows.append({"scale": scale, "seconds": seconds,
                                     "rss": sorted(peaks.values()), "largest": largest})
                    print(json.dumps(ddp_rows[-1]), flush=True)
            corpus.unlink()
            subprocess.run(["rm", "-rf", str(prepared), str(tmp / f"run-{scale}x"),
                            str(tmp / f"ddp-{scale}x")], check=True)

    print(f"\nCornell at {folder} repeated; train: --recipe tutorial, {args.steps} steps, "
          "CPU\n")
    print("| copies | pairs read | prepare today s (CPU s) | today MB | prepare new s (CPU s) "
          "| new MB | new pairs/CPU s | today/new CPU s per pair | train s | train MB |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        old = (f"{r['old_s']:.1f} ({r['old_cpu']:.1f}) | {r['old_rss']:.0f}" if "old_s" in r
               else "- | -")
        ratio = f"{r['old_cpu'] / r['new_cpu']:.2f}x" if "old_s" in r else "-"
        print(f"| {r['scale']}x | {r['stats']['pairs_read']:,} | {old} | {r['new_s']:.1f} "
              f"({r['new_cpu']:.1f}) | {r['new_rss']:.0f} | "
              f"{r['stats']['pairs_read'] / r['new_cpu']:,.0f} | {ratio} | "
              + (f"{r['train_s']:.1f} | {r['train_rss']:.0f} |" if "train_s" in r else "- | - |"))
    trained = [r for r in rows if "train_s" in r]
    for r in trained[1:]:
        print(f"train peak RSS {r['scale']}x / {trained[0]['scale']}x: "
              f"{r['train_rss'] / trained[0]['train_rss']:.2f}")
    for d in ddp_rows:
        each = ", ".join(f"{m:.0f}" for m in d["rss"])
        print(f"\n2 torchrun processes on {d['scale']}x: {d['seconds']:.1f} s, peak RSS per "
              f"process {each} MB (largest ru_maxrss of any: {d['largest']:.0f} MB)")
        if trained and trained[0]["scale"] == 1:
            worst = max(d["rss"]) / trained[0]["train_rss"]
            print(f"each process / one process on 1x: up to {worst:.2f}")
    for r in rows:
        if "old_stats" in r:
            keys = [k for k in r["old_stats"] if k.startswith(("pairs_", "words_",
                                                                "conversations_"))]
            same = all(r["old_stats"][k] == r["stats"].get(k) for k in keys)
            print(f"{r['scale']}x: today's and the new counts "
                  f"{'are equal' if same else 'DIFFER'} ({', '.join(keys)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
