"""Stalled clients against `torchtutor chat serve`: the read timeout, the connection cap and a
SIGTERM with stalled clients, measured on 127.0.0.1 only.

Phase 1 opens `--stalled` connections (default 3,000) that send half a request's headers and
then nothing, while a probe client asks for a real reply every 50 ms on a fresh connection.
It reports when the server closed the stalled connections (the longest any stayed open must
be within the read timeout), the server's peak count of open file descriptors, and the
probe's successes and latencies. Phase 2 starts a fresh server, opens `--shutdown-stalled`
connections stalled in their headers and as many stalled in their body, sends SIGTERM and
times the exit; it reports the exit code and whether the server printed a traceback.

The server is the real command on a tiny run that the bench trains first (hidden 16, 5
steps, a few seconds), so the figures measure the HTTP machinery, not decoding.

    python bench/serve_stall.py [--stalled 3000] [--rate 300] [--read-timeout 5]
                                [--max-connections 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

PAIRS = [("hello there", "hi how are you ?"), ("how are you ?", "i am fine ."),
         ("what is your name ?", "my name is bot ."), ("good bye", "bye !")]
HALF_HEADERS = b"POST /api/reply HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: applic"
HALF_BODY = (b"POST /api/reply HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
             b"\r\nContent-Length: 100\r\n\r\n{\"text\": \"hel")


def train_tiny_run(folder: Path) -> Path:
    corpus = folder / "pairs.tsv"
    corpus.write_text("".join(f"{q}\t{r}\n" for q, r in PAIRS * 6), encoding="utf-8")
    run = folder / "run"
    subprocess.run([sys.executable, "-m", "torchtutor", "chat", "train", "--data",
                    str(corpus), "--out", str(run), "--steps", "5", "--hidden-size", "16",
                    "--min-count", "1", "--batch-size", "8", "--device", "cpu"],
                   check=True, stdout=subprocess.DEVNULL)
    return run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(run: Path, port: int, read_timeout: float, max_connections: int,
                 ) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-m", "torchtutor", "chat", "serve", "--run", str(run), "--port",
         str(port), "--device", "cpu", "--threads", "1", "--read-timeout", str(read_timeout),
         "--max-connections", str(max_connections)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return process
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit("the server did not come up: " + (process.stdout.read() or ""))


def open_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


async def stalled(port: int, payload: bytes, opened: list, closed: list,
                  gate: asyncio.Semaphore) -> None:
    """Open a connection, send `payload`, and wait for the server to close it."""
    async with gate:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(payload)
            await writer.drain()
        except OSError:
            return
    start = time.monotonic()
    opened.append(start)
    try:
        while await reader.read(4096):
            pass
    except OSError:
        pass
    closed.append(time.monotonic() - start)
    writer.close()


async def probe(port: int, stop: asyncio.Event, latencies: list, failures: list) -> None:
    body = b'{"text": "how are you?"}'
    request = (b"POST /api/reply HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
               b"\r\nConnection: close\r\nContent-Length: " + str(len(body)).encode()
               + b"\r\n\r\n" + body)
    while not stop.is_set():
        started = time.monotonic()
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
            writer.write(request)
            answer = await asyncio.wait_for(reader.read(), 5)
            writer.close()
            if answer.startswith(b"HTTP/1.1 200") and b'"reply"' in answer:
                latencies.append(time.monotonic() - started)
            else:
                failures.append(answer[:40])
        except (TimeoutError, OSError) as exc:
            failures.append(type(exc).__name__)
        await asyncio.sleep(0.05)


async def healthz(port: int) -> dict:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    answer = await reader.read()
    writer.close()
    return json.loads(answer.split(b"\r\n\r\n", 1)[1])


async def lag_ticker(stop: asyncio.Event, lags: list) -> None:
    """How late this (client) event loop wakes from 20 ms sleeps: a stay it measures can be
    that much longer than the server held the connection."""
    while not stop.is_set():
        started = time.monotonic()
        await asyncio.sleep(0.02)
        lags.append(time.monotonic() - started - 0.02)


async def flood(port: int, pid: int, count: int, read_timeout: float, rate: float) -> dict:
    opened: list[float] = []
    closed: list[float] = []
    latencies: list[float] = []
    failures: list = []
    lags: list[float] = []
    stop = asyncio.Event()
    gate = asyncio.Semaphore(200)   # connections being opened at once
    prober = asyncio.ensure_future(probe(port, stop, latencies, failures))
    ticker = asyncio.ensure_future(lag_ticker(stop, lags))
    started = time.monotonic()
    tasks = []
    peak_fds = open_fds(pid)
    for i in range(count):   # at `rate` a second, so the clock measures the server, not the
        tasks.append(asyncio.ensure_future(   # kernel's queue of connections not yet accepted
            stalled(port, HALF_HEADERS, opened, closed, gate)))
        if i % 50 == 49:
            peak_fds = max(peak_fds, open_fds(pid))
            await asyncio.sleep(max(0.0, started + (i + 1) / rate - time.monotonic()))
    deadline = started + read_timeout + 30
    while time.monotonic() < deadline and not all(t.done() for t in tasks):
        peak_fds = max(peak_fds, open_fds(pid))
        await asyncio.sleep(0.1)
    flood_seconds = time.monotonic() - started
    await asyncio.sleep(0.5)   # a few more probes after the flood
    stop.set()
    await prober
    await ticker
    server_side = (await healthz(port)).get("connections") or {}
    for t in tasks:
        t.cancel()
    return {"opened": len(opened), "closed": len(closed),
            "still_open": len(opened) - len(closed),
            "longest_open_s": max(closed, default=float("nan")),
            "median_open_s": statistics.median(closed) if closed else float("nan"),
            "over_timeout": sum(c > read_timeout for c in closed),
            "over_timeout_1s": sum(c > read_timeout + 1 for c in closed),
            "client_lag_max_ms": 1000 * max(lags, default=float("nan")),
            "server_timed_out": server_side.get("timed_out", -1),
            "server_evicted": server_side.get("evicted", -1),
            "server_longest_s": server_side.get("longest_timed_out_s", float("nan")),
            "flood_seconds": flood_seconds, "peak_fds": peak_fds,
            "probe_ok": len(latencies), "probe_failed": len(failures),
            "failure_kinds": sorted({str(f) for f in failures})[:3],
            "probe_p50_ms": 1000 * statistics.median(latencies) if latencies else float("nan"),
            "probe_max_ms": 1000 * max(latencies, default=float("nan"))}


async def hold(port: int, payload: bytes, count: int) -> list:
    writers = []
    for _ in range(count):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(payload)
        await writer.drain()
        writers.append((reader, writer))
    return writers


def shutdown_phase(run: Path, count: int, read_timeout: float, max_connections: int) -> dict:
    port = free_port()
    process = start_server(run, port, read_timeout, max_connections)

    lines: list[tuple[float, str]] = []

    def read_output() -> None:
        for line in process.stdout:
            lines.append((time.monotonic(), line))

    async def go() -> float:
        held = await hold(port, HALF_HEADERS, count) + await hold(port, HALF_BODY, count)
        await asyncio.sleep(0.5)
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        while process.poll() is None and time.monotonic() - started < 30:
            await asyncio.sleep(0.02)
        for _, writer in held:
            writer.close()
        return started

    reader = threading.Thread(target=read_output, daemon=True)
    reader.start()
    started = asyncio.run(go())
    exited = time.monotonic()
    if process.poll() is None:
        process.kill()
    process.wait()
    reader.join(5)
    stopped = next((t for t, line in lines if "server stopped" in line), float("nan"))
    return {"stalled": 2 * count, "exit_seconds": exited - started,
            "stopped_seconds": stopped - started, "exit_code": process.returncode,
            "traceback": any("Traceback" in line for _, line in lines)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stalled", type=int, default=3000, help="stalled connections (3000)")
    parser.add_argument("--read-timeout", type=float, default=5.0,
                        help="the server's --read-timeout in seconds (5)")
    parser.add_argument("--max-connections", type=int, default=1000,
                        help="the server's --max-connections (1000)")
    parser.add_argument("--rate", type=float, default=300.0,
                        help="stalled connections opened per second (300)")
    parser.add_argument("--shutdown-stalled", type=int, default=100,
                        help="connections stalled in headers, and as many in bodies, at the "
                             "SIGTERM (100)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tt-stall-") as folder:
        run = train_tiny_run(Path(folder))
        port = free_port()
        process = start_server(run, port, args.read_timeout, args.max_connections)
        try:
            result = asyncio.run(flood(port, process.pid, args.stalled, args.read_timeout,
                                       args.rate))
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        down = shutdown_phase(run, args.shutdown_stalled, args.read_timeout,
                              args.max_connections)
    print(f"server: --read-timeout {args.read_timeout:g} s, --max-connections "
          f"{args.max_connections}; {args.stalled} stalled opened at {args.rate:g}/s; "
          f"{os.cpu_count()} cores")
    print(f"{'measure':44} {'value':>12}")
    rows = [
        ("stalled connections opened", f"{result['opened']}"),
        ("closed by the server", f"{result['closed']}"),
        ("still open at the end", f"{result['still_open']}"),
        ("longest a stalled connection stayed (s)", f"{result['longest_open_s']:.2f}"),
        ("median a stalled connection stayed (s)", f"{result['median_open_s']:.2f}"),
        ("stayed over the timeout / over it by 1 s+",
         f"{result['over_timeout']} / {result['over_timeout_1s']}"),
        ("bench's own event loop: worst lag (ms)", f"{result['client_lag_max_ms']:.0f}"),
        ("server: timed out / evicted at the cap",
         f"{result['server_timed_out']} / {result['server_evicted']}"),
        ("server: longest held from accept (s)", f"{result['server_longest_s']:.2f}"),
        ("server's peak open file descriptors", f"{result['peak_fds']}"),
        ("probe replies during the flood", f"{result['probe_ok']}"),
        ("probe failures", f"{result['probe_failed']} {result['failure_kinds']}"),
        ("probe latency p50 / max (ms)",
         f"{result['probe_p50_ms']:.0f} / {result['probe_max_ms']:.0f}"),
        (f"SIGTERM, {down['stalled']} stalled: server stopped (s)",
         f"{down['stopped_seconds']:.2f}"),
        ("SIGTERM: process exited (s)", f"{down['exit_seconds']:.2f}"),
        ("SIGTERM exit code", f"{down['exit_code']}"),
        ("traceback printed", "yes" if down["traceback"] else "no"),
    ]
    for name, value in rows:
        print(f"{name:44} {value:>12}")


if __name__ == "__main__":
    main()
