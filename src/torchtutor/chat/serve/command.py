"""`torchtutor chat serve`: load the run, build the app, bind and run uvicorn until SIGTERM."""

from __future__ import annotations

import errno
import gc
import logging
import os
import signal
import socket
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from torchtutor.chat.infer.chatbot import Chatbot
from torchtutor.chat.infer.options import (
    DecodeOptions,
)
from torchtutor.chat.serve.app import check_batch_window, create_app
from torchtutor.chat.serve.batcher import Replier
from torchtutor.chat.serve.connections import ConnectionStats, ServerLimits, guarded_protocol
from torchtutor.runtime.errors import UserError
from torchtutor.runtime.options import check_count

log = logging.getLogger(__name__)


@dataclass
class ServeConfig:
    """`chat serve`'s options (cli.py builds it from the flags); `serve` checks them."""
    run: str
    host: str = "127.0.0.1"
    port: int = 8000
    max_batch: int = 64
    batch_window_ms: float = 5.0
    queue_size: int = 1024
    device: str = "auto"
    threads: int | None = None
    options: DecodeOptions = field(default_factory=DecodeOptions)
    limits: ServerLimits = field(default_factory=ServerLimits)
    access_log: bool = True
    allow_hosts: tuple[str, ...] = ()   # Host names accepted besides --host's ("*": any)


def load_replier(run_dir: str, device: str = "auto") -> tuple[Replier, dict[str, Any]]:
    """Load a trained run once; return its decode function and a short description."""
    bot = Chatbot.load(run_dir, device)
    info = {"run": str(Path(run_dir).resolve().name), "vocab_size": len(bot.vocab),
            "max_length": bot.max_length, "has_unk": bool(bot.vocab.has_unk),
            "device": str(next(bot.model.parameters()).device),
            "has_backward": bot.backward is not None}
    return bot.reply_batch, info


def decode_threads(requested: int | None) -> int:
    """Torch threads for the decode thread: by default one core is left to the event loop.

    On the 2-core development machine, with other work running, torch's default of one thread
    per core made a batch-of-one greedy decode take about 1 s instead of 17 ms with one thread
    (bench/RESULTS.md, chat serve section): its threads spin waiting for a busy core.
    """
    import torch

    cores = os.cpu_count() or 1
    if requested is not None:
        if requested > cores:   # 100000 OpenMP threads crashed the process (SIGSEGV)
            raise UserError(f"--threads {requested} is more than the {cores} CPU cores here")
        return requested
    return max(1, min(torch.get_num_threads(), cores - 1))


def build_app(config: ServeConfig) -> FastAPI:
    replier, info = load_replier(config.run, config.device)
    return create_app(replier, default_options=config.options, max_batch=config.max_batch,
                      batch_window_ms=config.batch_window_ms, queue_size=config.queue_size,
                      has_unk=info["has_unk"], has_backward=info["has_backward"], info=info,
                      allowed_hosts=(config.host, *config.allow_hosts))


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port, or a one-line UserError saying why not (port taken,
    no such address, a privileged port). Binding before uvicorn starts means "serving" is
    printed only once the port is really ours."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        raise UserError(f"--host {host}: cannot resolve it ({exc.strerror})") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise UserError(f"port {port} on {host} is already in use (another server?); "
                            "stop it or pick another --port") from None
        raise UserError(f"cannot listen on {host}:{port}: "
                        f"{exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def run_server(app: FastAPI, host: str, port: int, limits: ServerLimits | None = None,
               sock: socket.socket | None = None, access_log: bool = False) -> None:
    """Serve until SIGINT/SIGTERM; then stop accepting, finish what is in flight, return.

    `sock` is a socket `bind` made (else host:port is bound here). With `access_log`, one
    line per request on stdout (uvicorn's: client, request line, status).

    uvicorn re-raises the stop signal once it has shut down (so a default handler would kill
    the process after all); the handlers installed here absorb that, so a graceful stop
    returns normally and the command exits 0.
    """
    import uvicorn

    limits = limits or ServerLimits()
    limits.check()
    app.state.connections = ConnectionStats()
    sock = sock or bind(host, port)
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", access_log=access_log,
        http=guarded_protocol(limits, app.state.connections),
        timeout_graceful_shutdown=limits.graceful_timeout_s, lifespan="on")
    if access_log:  # uvicorn's startup chatter stays at "warning"; the access lines do not
        logging.getLogger("uvicorn.access").setLevel(logging.INFO)
    server = uvicorn.Server(config)
    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, lambda *_: None)
                    for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.run(sockets=[sock])
    except SystemExit as exc:   # uvicorn exits when it cannot start (it logs why first)
        if exc.code:
            raise UserError(f"the server could not start on {host}:{port}") from None
        raise
    finally:
        sock.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def serve(config: ServeConfig) -> None:
    check_count("--port", config.port, 0, 65535)
    check_batch_window(config.batch_window_ms)
    config.limits.check()
    import torch

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(decode_threads(config.threads))
    try:   # put the thread count back for in-process callers (tests, notebooks)
        app = build_app(config)
        sock = bind(config.host, config.port)
        port = sock.getsockname()[1]   # the one the system chose for --port 0
        batching = ("off" if config.batch_window_ms == 0 or config.max_batch == 1 else
                    f"up to {config.max_batch} per batch, {config.batch_window_ms:g} ms window")
        print(f"serving {config.run} on http://{config.host}:{port}/  "
              f"(micro-batching {batching}; {torch.get_num_threads()} decode thread(s); "
              f"API docs at /docs; Ctrl-C or SIGTERM stops)", flush=True)
        # Everything loaded so far lives as long as the server: frozen, it is left out of
        # the garbage collector's full passes (0.12 s of CPU each with torch loaded, seconds
        # of event-loop stall on a loaded machine, which holds timers and replies up).
        gc.freeze()
        run_server(app, config.host, port, config.limits, sock=sock,
                   access_log=config.access_log)
    finally:
        torch.set_num_threads(previous_threads)
    print("server stopped", file=sys.stderr, flush=True)


def main(config: ServeConfig) -> int:
    serve(config)
    # The process exits next. Its final garbage collection walks every object torch and the
    # server made: 4-6 s of a SIGTERM's exit on the loaded 2-core machine (bench/RESULTS.md,
    # serve_stall). Frozen objects are skipped; nothing is left to collect that matters.
    gc.freeze()
    return 0
