"""Helpers for the serve tests: a stand-in replier, free ports, and a server in a subprocess.

`python -m tests.chat.serve_support --port N [--delay S]` serves `create_app` around the
stand-in replier through the same `run_server` the real command uses, so signal handling and
draining can be tested without a trained model.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from torchtutor.chat.infer.chatbot import Reply
from torchtutor.chat.infer.options import DecodeOptions

REPO_ROOT = Path(__file__).resolve().parents[2]
KNOWN = {"hello", "there", "how", "are", "you", "i", "am", "fine", "?", "!", "."}


class EchoReplier:
    """Replies 'echo: <words reversed>'; records every batch it was given.

    Words outside KNOWN are reported as unknown; more than 8 words are truncated, like the
    real decoder's contract. `delay` seconds of sleep per call stand in for decode time;
    `gate`, when set, blocks each call until the test opens it.
    """

    def __init__(self, delay: float = 0.0, gate: threading.Event | None = None) -> None:
        self.delay = delay
        self.gate = gate
        self.calls: list[tuple[list[str], DecodeOptions]] = []
        self.started = threading.Event()

    def __call__(self, texts: list[str], options: DecodeOptions) -> list[Reply]:
        self.calls.append((list(texts), options))
        self.started.set()
        if self.gate is not None:
            self.gate.wait(10)
        if self.delay:
            time.sleep(self.delay)
        out = []
        for text in texts:
            if text == "explode":
                raise RuntimeError("stand-in decoder failure")
            words = text.lower().split()
            out.append(Reply(text="echo: " + " ".join(reversed(words[:8])), score=-1.5,
                             unknown_words=[w for w in words if w not in KNOWN],
                             truncated=len(words) > 8, empty=not words, alternatives=[]))
        return out

    @property
    def batch_sizes(self) -> list[int]:
        return [len(texts) for texts, _ in self.calls]


# A tiny pairs corpus: every word appears often enough to survive trimming.
TINY_PAIRS = [("hello there", "hi how are you ?"), ("how are you ?", "i am fine ."),
              ("what is your name ?", "my name is bot ."), ("are you a robot ?", "yes i am ."),
              ("good bye", "bye !"), ("do you like music ?", "i like music .")]
_tiny_run: Path | None = None


def tiny_run() -> Path:
    """A really trained (5 steps, hidden 16) run folder, made once per test session."""
    global _tiny_run
    if _tiny_run is None:
        from torchtutor.cli import main

        folder = Path(tempfile.mkdtemp(prefix="tt-serve-run-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        corpus = folder / "pairs.tsv"
        corpus.write_text("".join(f"{q}\t{r}\n" for q, r in TINY_PAIRS * 4), encoding="utf-8")
        args = ["chat", "train", "--data", str(corpus), "--out", str(folder / "run"),
                "--steps", "5", "--hidden-size", "16", "--min-count", "1",
                "--batch-size", "8", "--device", "cpu"]
        with contextlib.redirect_stdout(io.StringIO()) as out:
            code = main(args)
        assert code == 0, out.getvalue()
        _tiny_run = folder / "run"
    return _tiny_run


def serve_command(run: Path, port: int, *extra: str) -> list[str]:
    """The real `torchtutor chat serve` command line."""
    return [sys.executable, "-m", "torchtutor", "chat", "serve", "--run", str(run),
            "--port", str(port), "--device", "cpu", "--threads", "1", *extra]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, process: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            out = process.stdout.read() if process.stdout else ""
            raise AssertionError(f"server exited with {process.returncode}:\n{out}")
        try:
            if httpx.get(url + "/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"server at {url} not healthy after {timeout}s")


def start_server(command: list[str], port: int, timeout: float = 60.0) -> subprocess.Popen:
    """Start `command` (which listens on `port`) and wait for /healthz."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", process, timeout)
    except BaseException:
        stop_server(process)
        raise
    return process


def stop_server(process: subprocess.Popen, timeout: float = 30.0) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def fake_server_command(port: int, delay: float = 0.0, max_batch: int = 64,
                        window_ms: float = 5.0, *extra: str) -> list[str]:
    """The stand-in server; `extra` may add --read-timeout S and --max-connections N."""
    return [sys.executable, "-m", "tests.chat.serve_support", "--port", str(port),
            "--delay", str(delay), "--max-batch", str(max_batch), "--window-ms", str(window_ms),
            *extra]


def _main() -> None:
    from torchtutor.chat.serve.app import ServerLimits, create_app, run_server

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--max-batch", type=int, default=64)
    parser.add_argument("--window-ms", type=float, default=5.0)
    parser.add_argument("--read-timeout", type=float, default=10.0)
    parser.add_argument("--max-connections", type=int, default=1000)
    args = parser.parse_args()
    app = create_app(EchoReplier(delay=args.delay), max_batch=args.max_batch,
                     batch_window_ms=args.window_ms, info={"run": "stand-in"})
    print(f"stand-in server on {args.port}", flush=True)
    run_server(app, "127.0.0.1", args.port,
               ServerLimits(read_timeout_s=args.read_timeout,
                            max_connections=args.max_connections))
    print("stand-in server stopped", flush=True)


if __name__ == "__main__":
    _main()
