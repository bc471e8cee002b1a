"""Load on `torchtutor chat serve`: N clients for T seconds, micro-batching on and off.

The bench starts the real server itself (`torchtutor chat serve` in a subprocess on a free
loopback port), once with micro-batching (`--max-batch 64 --batch-window-ms 5`) and once
without (`--batch-window-ms 0`), and drives it with N concurrent keep-alive clients, each
sending its next message as soon as the last reply arrives. Messages are the ChatterBot
corpus's own questions, the same sequence in both modes. Requests finishing in the first
`--warmup` seconds are not counted.

The served model is the tutorial's size (hidden 500, 2 encoder + 2 decoder layers), so the
decode cost is realistic: pass a trained run with `--run`, or the bench trains one on the
bundled ChatterBot corpus (`--train-steps`, cached under runs/bench-serve-h500).

Per mode it prints replies/s, p50/p95 latency, errors, the mean batch size the server formed,
and the server's resident memory after warm-up, at the end, and its peak (VmHWM). The last
line reads `batching speedup: Rx  errors: N`.

    python bench/serve_load.py [--clients 32] [--seconds 10] [--run RUN_DIR]

The load generator is a small asyncio HTTP/1.1 client on raw sockets, so the client side
costs as little CPU as possible (it shares the machine with the server).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_RUN = REPO / "runs" / "bench-serve-h500"


# --- the load generator -------------------------------------------------------------------

@dataclass
class Tally:
    start: float            # counting starts here (after warm-up)
    end: float
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


async def _request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                   host: str, body: bytes) -> tuple[int, bytes]:
    writer.write(b"POST /api/reply HTTP/1.1\r\nHost: " + host.encode()
                 + b"\r\nContent-Type: application/json\r\nContent-Length: "
                 + str(len(body)).encode() + b"\r\n\r\n" + body)
    await writer.drain()
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("server closed the connection")
    length = 0
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return int(status_line.split()[1]), await reader.readexactly(length)


async def _client(index: int, host: str, port: int, messages: list[str], tally: Tally,
                  timeout: float) -> None:
    loop = asyncio.get_running_loop()
    reader = writer = None
    n = index
    while loop.time() < tally.end:
        text = messages[n % len(messages)]
        n += 1
        started = loop.time()
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            status, payload = await asyncio.wait_for(
                _request(reader, writer, host, json.dumps({"text": text}).encode()), timeout)
            finished = loop.time()
            ok = status == 200 and "reply" in json.loads(payload)
            if tally.start <= finished <= tally.end:
                if ok:
                    tally.latencies.append(finished - started)
                else:
                    tally.errors.append(f"{status}: {payload[:120]!r}")
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
            if loop.time() >= tally.start:
                tally.errors.append(repr(exc))
            if writer is not None:
                writer.close()
            reader = writer = None
            await asyncio.sleep(0.05)
    if writer is not None:
        writer.close()


async def drive(host: str, port: int, clients: int, warmup: float, seconds: float,
                messages: list[str], timeout: float = 30.0) -> Tally:
    loop = asyncio.get_running_loop()
    now = loop.time()
    tally = Tally(start=now + warmup, end=now + warmup + seconds)
    await asyncio.gather(*(_client(i, host, port, messages, tally, timeout)
                           for i in range(clients)))
    return tally


# --- the server under test ------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mib(pid: int, field_name: str = "VmRSS") -> float:
    """Resident memory from /proc (Linux): VmRSS now, or VmHWM, the peak so far."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"{field_name} not in /proc/{pid}/status")


def get_json(port: int, path: str) -> dict:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return json.loads(data.split(b"\r\n\r\n", 1)[1])


def start_server(run: Path, port: int, batching: bool, max_batch: int, window_ms: float,
                 log: Path, threads: int | None = None) -> subprocess.Popen:
    command = [sys.executable, "-m", "torchtutor", "chat", "serve", "--run", str(run),
               "--port", str(port), "--device", "cpu", "--queue-size", "4096",
               "--max-batch", str(max_batch if batching else 1),
               "--batch-window-ms", str(window_ms if batching else 0)]
    if threads:
        command += ["--threads", str(threads)]
    process = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT,
                               cwd=REPO)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited with {process.returncode}:\n{log.read_text()}")
        try:
            get_json(port, "/healthz")
            return process
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit("server did not become healthy in 120 s")


def measure(run: Path, batching: bool, args: argparse.Namespace, messages: list[str],
            workdir: Path) -> dict:
    port = free_port()
    log = workdir / f"server-{'batched' if batching else 'unbatched'}.log"
    process = start_server(run, port, batching, args.max_batch, args.window_ms, log,
                           args.threads)
    try:
        samples: list[float] = []

        async def run_load() -> Tally:
            async def sample_memory() -> None:
                while True:
                    samples.append(rss_mib(process.pid))
                    await asyncio.sleep(0.5)

            load = asyncio.ensure_future(drive("127.0.0.1", port, args.clients, args.warmup,
                                               args.seconds, messages))
            await asyncio.sleep(args.warmup)
            sampler = asyncio.ensure_future(sample_memory())
            tally = await load
            sampler.cancel()
            return tally

        tally = asyncio.run(run_load())
        stats = get_json(port, "/healthz")["stats"]
        peak = rss_mib(process.pid, "VmHWM")
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
    latencies = sorted(tally.latencies)

    def pct(q: float) -> float:
        return 1000 * latencies[min(len(latencies) - 1, int(q * len(latencies)))]

    return {
        "mode": "batched" if batching else "unbatched",
        "replies_per_s": len(latencies) / args.seconds,
        "p50_ms": pct(0.50) if latencies else float("nan"),
        "p95_ms": pct(0.95) if latencies else float("nan"),
        "errors": len(tally.errors),
        "error_examples": tally.errors[:3],
        "mean_batch": stats["replies"] / max(stats["batches"], 1),
        "rss_start": samples[0] if samples else float("nan"),
        "rss_mid": samples[len(samples) // 2] if samples else float("nan"),
        "rss_end": samples[-1] if samples else float("nan"),
        "rss_max": max(samples) if samples else float("nan"),
        "peak": peak,
        "exit_code": process.returncode,
    }


# --- a realistic model ----------------------------------------------------------------------

def ensure_run(args: argparse.Namespace) -> Path:
    if args.run:
        return Path(args.run)
    run = DEFAULT_RUN
    if (run / "best.pt").exists() or (run / "last.pt").exists():
        print(f"using the cached run {run}", flush=True)
        return run
    print(f"training the served model into {run} ({args.train_steps} steps, hidden 500, "
          "2+2 layers, ChatterBot corpus)", flush=True)
    half = max(1, args.train_steps // 2)
    command = [sys.executable, "-m", "torchtutor", "chat", "train", "--data", "chatterbot",
               "--out", str(run), "--steps", str(args.train_steps), "--hidden-size", "500",
               "--encoder-layers", "2", "--decoder-layers", "2", "--device", "cpu",
               "--eval-every", str(half), "--checkpoint-every", str(half)]
    subprocess.run(command, check=True, cwd=REPO)
    return run


def chatterbot_questions() -> list[str]:
    from torchtutor.chat.data.corpus import load_corpus

    return [pair.query for pair in load_corpus("chatterbot").pairs]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--run", default=None, help="a trained run (default: train one)")
    parser.add_argument("--train-steps", type=int, default=120)
    parser.add_argument("--max-batch", type=int, default=64)
    parser.add_argument("--window-ms", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=None,
                        help="the server's --threads (default: its own default)")
    args = parser.parse_args()

    run = ensure_run(args)
    messages = chatterbot_questions()
    results = []
    with tempfile.TemporaryDirectory(prefix="serve-load-") as tmp:
        for batching in (False, True):
            print(f"{'batched' if batching else 'unbatched'}: {args.clients} clients, "
                  f"{args.warmup:g} s warm-up + {args.seconds:g} s ...", flush=True)
            results.append(measure(run, batching, args, messages, Path(tmp)))
    print(f"\nrun {run}, {len(messages)} distinct messages, {os.cpu_count()} CPUs, "
          f"{args.clients} clients x {args.seconds:g} s (after {args.warmup:g} s warm-up)\n")
    print("| mode | replies/s | p50 ms | p95 ms | errors | mean batch | RSS after warm-up MiB "
          "| RSS end MiB | RSS max MiB | peak (VmHWM) MiB | exit |")
    print("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for r in results:
        print(f"| {r['mode']} | {r['replies_per_s']:.1f} | {r['p50_ms']:.1f} | "
              f"{r['p95_ms']:.1f} | {r['errors']} | {r['mean_batch']:.1f} | "
              f"{r['rss_start']:.0f} | {r['rss_end']:.0f} | {r['rss_max']:.0f} | "
              f"{r['peak']:.0f} | {r['exit_code']} |")
        for example in r["error_examples"]:
            print(f"  error ({r['mode']}): {example}")
    unbatched, batched = results
    speedup = batched["replies_per_s"] / max(unbatched["replies_per_s"], 1e-9)
    errors = sum(r["errors"] for r in results)
    for r in results:
        print(f"memory, {r['mode']}: {r['rss_start']:.1f} MiB after warm-up, "
              f"{r['rss_mid']:.1f} half-way, {r['rss_end']:.1f} at the end "
              f"(second half: {r['rss_end'] - r['rss_mid']:+.1f} MiB)")
    print(f"batching speedup: {speedup:.1f}x  errors: {errors}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
