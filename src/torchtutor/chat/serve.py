"""`torchtutor chat serve`: the chatbot over HTTP, with a browser chat page.

    POST /api/reply  {"text": ..., optional decoder options} -> {"reply", "unknown_words", ...}
    GET  /healthz    liveness, batching settings and counters
    GET  /           the chat page (static HTML/CSS/JS from chat/static, no build step)
    GET  /docs, /openapi.json   FastAPI's schema

The model is loaded once; every request goes through one `MicroBatcher`, which decodes
requests that arrive together as one batch. `create_app` takes the decode function itself
(`replier(texts, options) -> replies`), so tests and benchmarks can serve a stand-in.

Limits: bodies over `max_body_bytes` get 413, out-of-range fields 422 (with a one-line
`message` beside FastAPI's `detail`), a full queue 503. On SIGTERM uvicorn stops accepting
connections and waits for the requests in flight; the batcher then drains its queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
import re
import signal
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field

from torchtutor.chat import decode
from torchtutor.chat.batcher import MicroBatcher, Overloaded, Replier, ShuttingDown
from torchtutor.chat.decode import (
    DecodeOptions,
    Reply,
    notices,
    options_from_args,
    reply_batch,
    resolve_options,
)
from torchtutor.chat.run_dir import has_backward
from torchtutor.runtime.errors import UserError

log = logging.getLogger(__name__)
STATIC_DIR = Path(__file__).resolve().parent / "static"
MAX_BODY_BYTES = 16 * 1024
MAX_TEXT_CHARS = 1000
# Server-side ceilings on decoder work per request (the CLI trusts its user; a server must not).
MAX_BEAM = decode.MAX_BEAM
MAX_NO_REPEAT = decode.MAX_NO_REPEAT
# The page may only load its own files; nothing inline, nothing from elsewhere.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


# --- the API's shapes ------------------------------------------------------------------------

class ReplyRequest(BaseModel):
    """One message, and optionally decoder settings that override the server's defaults."""
    model_config = ConfigDict(extra="forbid")

    text: Annotated[str, Field(min_length=1, max_length=MAX_TEXT_CHARS,
                               description="what the user said")]
    decoder: Literal["greedy", "beam", "sample"] | None = None
    beam_size: Annotated[int, Field(ge=1, le=MAX_BEAM)] | None = None
    length_penalty: Annotated[float, Field(ge=0.0, le=5.0)] | None = None
    n_best: Annotated[int, Field(ge=1, le=MAX_BEAM + decode.MAX_CANDIDATES)] | None = None
    temperature: Annotated[float, Field(gt=0.0, le=10.0)] | None = None
    top_k: Annotated[int, Field(ge=0, le=100_000)] | None = None
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    no_repeat_ngram: Annotated[int, Field(ge=0, le=MAX_NO_REPEAT)] | None = None
    seed: Annotated[int, Field(ge=0, le=decode.MAX_SEED)] | None = None
    rerank: Literal["none", "mmi"] | None = None
    mmi_weight: Annotated[float, Field(ge=-10.0, le=10.0)] | None = None
    length_bonus: Annotated[float, Field(ge=-10.0, le=10.0)] | None = None
    candidates: Annotated[int, Field(ge=0, le=decode.MAX_CANDIDATES)] | None = None
    min_length: Annotated[int, Field(ge=0, le=100)] | None = None
    repetition_penalty: Annotated[float, Field(ge=1.0, le=100.0)] | None = None


class Alternative(BaseModel):
    text: str
    score: float


class ReplyResponse(BaseModel):
    reply: str
    unknown_words: list[str]
    truncated: bool
    empty: bool = False
    score: float = 0.0
    notices: list[str] = []
    alternatives: list[Alternative] = []


class ErrorResponse(BaseModel):
    message: str


# Request field -> DecodeOptions field, where the names differ (they follow the CLI's flags).
_OPTION_NAMES = {"decoder": "method"}


def merge_options(defaults: DecodeOptions, request: ReplyRequest,
                  has_backward: bool = True) -> DecodeOptions:
    """The server's defaults with the request's own settings on top; checked as a whole
    (a request that names a decoder without `rerank` gets that decoder alone)."""
    given = request.model_dump(exclude={"text"}, exclude_none=True)
    try:
        return resolve_options({_OPTION_NAMES.get(k, k): v for k, v in given.items()},
                               has_backward, defaults)
    except UserError as exc:
        # The checks speak in flags ("--n-best 3 is more than ..."); the API in field names.
        message = re.sub(r"--([a-z0-9-]+)", lambda m: m.group(1).replace("-", "_"), str(exc))
        field = message.split(" ", 1)[0]
        field = field if field in ReplyRequest.model_fields else "body"
        raise RequestValidationError([{"loc": ("body", field), "type": "value_error",
                                       "msg": message.removeprefix(field).strip()}]) from None


def _as_response(reply: Reply, has_unk: bool) -> ReplyResponse:
    return ReplyResponse(
        reply=reply.text, unknown_words=list(reply.unknown_words), truncated=reply.truncated,
        empty=reply.empty, score=reply.score, notices=notices(reply, has_unk),
        alternatives=[Alternative(text=t, score=s) for t, s in reply.alternatives])


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"message": message}, status_code=status, headers=headers)


# --- request body limit ---------------------------------------------------------------------

class BodySizeLimit:
    """ASGI middleware: refuse bodies over `max_bytes` with 413 before anything parses them.

    It reads the (small) body itself, whether announced by Content-Length or chunked, then
    replays it to the app; later `receive()` calls pass through, so the app still learns
    when the client disconnects.
    """

    def __init__(self, app: Callable[..., Awaitable[None]], max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_big = _error(413, f"request body is larger than {self.max_bytes} bytes")
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await too_big(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return   # the client left while sending; nobody to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await too_big(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _client_gone(request: Request) -> None:
    """Returns once the client disconnects (the body has been read by then)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def _validation_message(errors: list[dict]) -> str:
    """'text: String should have at most 1000 characters; top_p: ...' in one line."""
    parts = []
    for error in errors:
        loc = [str(p) for p in error.get("loc", ()) if p != "body"]
        parts.append(f"{'.'.join(loc) or 'body'}: {error.get('msg', 'invalid')}")
    return "; ".join(parts)


# --- the app --------------------------------------------------------------------------------

def create_app(replier: Replier, *, default_options: DecodeOptions | None = None,
               max_batch: int = 64, batch_window_ms: float = 5.0, queue_size: int = 1024,
               max_body_bytes: int = MAX_BODY_BYTES, has_unk: bool = True,
               has_backward: bool = False, info: dict[str, Any] | None = None) -> FastAPI:
    """The chat service around `replier(texts, options) -> list[Reply]`.

    `replier` runs in one background thread, never two calls at once.
    """
    defaults = default_options or DecodeOptions()
    defaults.check()
    batcher = MicroBatcher(replier, max_batch=max_batch, window_s=batch_window_ms / 1000.0,
                           queue_size=queue_size)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await batcher.start()
        yield
        # uvicorn has already waited for the requests in flight; decode any stragglers.
        await batcher.close()

    app = FastAPI(title="torchtutor chat", version="1", lifespan=lifespan,
                  description="A seq2seq chatbot with Luong attention, micro-batched.")
    app.state.batcher = batcher
    app.add_middleware(BodySizeLimit, max_bytes=max_body_bytes)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Keep FastAPI's `detail` list, minus the echoed input (it can be 16 KiB of text).
        errors = [{k: v for k, v in e.items() if k not in ("input", "url", "ctx")}
                  for e in exc.errors()]
        return JSONResponse({"message": _validation_message(errors),
                             "detail": jsonable_encoder(errors)}, status_code=422)

    @app.post("/api/reply", response_model=ReplyResponse,
              responses={413: {"model": ErrorResponse, "description": "body too large"},
                         422: {"description": "invalid text or decoder options"},
                         503: {"model": ErrorResponse, "description": "queue full"}})
    async def api_reply(body: ReplyRequest, request: Request) -> Any:
        options = merge_options(defaults, body, has_backward)
        job = asyncio.ensure_future(batcher.submit(body.text, options))
        gone = asyncio.ensure_future(_client_gone(request))
        try:
            await asyncio.wait({job, gone}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:   # e.g. the graceful-shutdown timeout ran out
            job.cancel()
            raise
        finally:
            gone.cancel()
        if not job.done():
            job.cancel()   # the batcher skips it; the answer would go nowhere anyway
            return Response(status_code=499)
        try:
            reply = job.result()
        except Overloaded as exc:
            return _error(503, f"server busy: {exc}; try again shortly", {"Retry-After": "1"})
        except ShuttingDown as exc:
            return _error(503, str(exc))
        except UserError as exc:
            return _error(422, str(exc))
        except Exception as exc:   # a decoder bug: log it, answer this request, keep serving
            log.exception("decoding failed")
            return _error(500, f"decoding failed: {type(exc).__name__}")
        return _as_response(reply, has_unk)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "batching": batcher.batching, "max_batch": batcher.max_batch,
                "batch_window_ms": batch_window_ms, "queue": batcher.waiting,
                "in_flight": batcher.in_flight,
                "queue_size": queue_size, "stats": dataclasses.asdict(batcher.stats),
                "defaults": dataclasses.asdict(defaults), "model": info or {}}

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers=PAGE_HEADERS)

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


# --- the command ----------------------------------------------------------------------------

@dataclass
class ServeConfig:
    run: str
    host: str = "127.0.0.1"
    port: int = 8000
    max_batch: int = 64
    batch_window_ms: float = 5.0
    queue_size: int = 1024
    device: str = "auto"
    threads: int | None = None
    options: DecodeOptions = field(default_factory=DecodeOptions)
    graceful_timeout_s: float = 30.0


def load_replier(run_dir: str, device: str = "auto") -> tuple[Replier, dict[str, Any]]:
    """Load a trained run once; return its decode function and a short description."""
    from torchtutor.chat.run_dir import load_trained
    from torchtutor.runtime.device import resolve_device

    bot = load_trained(run_dir, resolve_device(device))
    info = {"run": str(Path(run_dir).resolve().name), "vocab_size": len(bot.vocab),
            "max_length": bot.max_length, "has_unk": bool(bot.vocab.has_unk),
            "device": str(next(bot.model.parameters()).device),
            "has_backward": bot.backward is not None}
    return functools.partial(reply_batch, bot), info


def decode_threads(requested: int | None) -> int:
    """Torch threads for the decode thread: by default one core is left to the event loop.

    On the 2-core development machine, with other work running, torch's default of one thread
    per core made a batch-of-one greedy decode take about 1 s instead of 17 ms with one thread
    (bench/RESULTS.md, chat serve section): its threads spin waiting for a busy core.
    """
    import torch

    if requested is not None:
        return requested
    return max(1, min(torch.get_num_threads(), (os.cpu_count() or 1) - 1))


def build_app(config: ServeConfig) -> FastAPI:
    replier, info = load_replier(config.run, config.device)
    return create_app(replier, default_options=config.options, max_batch=config.max_batch,
                      batch_window_ms=config.batch_window_ms, queue_size=config.queue_size,
                      has_unk=info["has_unk"], has_backward=info["has_backward"], info=info)


def run_server(app: FastAPI, host: str, port: int, graceful_timeout_s: float = 30.0) -> None:
    """Serve until SIGINT/SIGTERM; then stop accepting, finish what is in flight, return.

    uvicorn re-raises the stop signal once it has shut down (so a default handler would kill
    the process after all); the handlers installed here absorb that, so a graceful stop
    returns normally and the command exits 0.
    """
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(
        app, host=host, port=port, log_level="warning", access_log=False,
        timeout_graceful_shutdown=graceful_timeout_s, lifespan="on"))
    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, lambda *_: None)
                    for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.run()
    except SystemExit as exc:   # uvicorn exits when it cannot bind (it logs why first)
        if exc.code:
            raise UserError(f"the server could not start on {host}:{port}") from None
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def serve(config: ServeConfig) -> None:
    if not 0 <= config.port <= 65535:
        raise UserError(f"--port must be in 0..65535, not {config.port}")
    if config.batch_window_ms < 0:
        raise UserError(f"--batch-window-ms must be 0 or more, not {config.batch_window_ms}")
    import torch

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(decode_threads(config.threads))
    try:   # put the thread count back for in-process callers (tests, notebooks)
        app = build_app(config)
        batching = ("off" if config.batch_window_ms == 0 or config.max_batch == 1 else
                    f"up to {config.max_batch} per batch, {config.batch_window_ms:g} ms window")
        print(f"serving {config.run} on http://{config.host}:{config.port}/  "
              f"(micro-batching {batching}; {torch.get_num_threads()} decode thread(s); "
              "Ctrl-C or SIGTERM stops)", flush=True)
        run_server(app, config.host, config.port, config.graceful_timeout_s)
    finally:
        torch.set_num_threads(previous_threads)
    print("server stopped", file=sys.stderr, flush=True)


def main(args: Any) -> int:
    config = ServeConfig(run=args.run, host=args.host, port=args.port, max_batch=args.max_batch,
                         batch_window_ms=args.batch_window_ms, queue_size=args.queue_size,
                         device=args.device, threads=args.threads,
                         options=options_from_args(args, has_backward(args.run)))
    serve(config)
    return 0

