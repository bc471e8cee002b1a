"""`torchtutor chat serve`: the chatbot over HTTP, with a browser chat page.

    POST /api/reply  {"text": ..., optional decoder options} -> {"reply", "unknown_words", ...}
    GET  /healthz    liveness, batching settings and counters
    GET  /           the chat page (static HTML/CSS/JS from chat/serve/static, no build step)
    GET  /docs, /redoc, /openapi.json   the API's schema and its pages (assets served here)

The model is loaded once; every request goes through one `MicroBatcher`, which decodes
requests that arrive together as one batch. `create_app` takes the decode function itself
(`replier(texts, options) -> replies`), so tests and benchmarks can serve a stand-in.

Limits: bodies over `max_body_bytes` get 413, bodies that are not UTF-8 or nest JSON deeper
than `MAX_JSON_DEPTH` 400, out-of-range fields 422 (each with a one-line `message`; 422 keeps
FastAPI's `detail` beside it), a full queue 503. Every response carries the page's security
headers. The connection machinery (`ServerLimits`, `guarded_protocol`) gives each request
`read_timeout_s` to arrive whole (headers and body) and holds at most `max_connections`
open: beyond that the oldest connection still waiting for its request is closed, or, when every
one is busy, the new one gets 503. On SIGTERM uvicorn stops accepting connections, connections
still sending their request are dropped, the requests in flight finish, and the batcher drains
its queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import functools
import gc
import ipaddress
import logging
import os
import re
import signal
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from torchtutor.chat.infer import decode
from torchtutor.chat.infer.decode import (
    DecodeOptions,
    Reply,
    notices,
    reply_batch,
    resolve_options,
)
from torchtutor.chat.serve.batcher import MicroBatcher, Overloaded, Replier, ShuttingDown
from torchtutor.runtime.errors import UserError
from torchtutor.runtime.options import check_count, check_range

log = logging.getLogger(__name__)
STATIC_DIR = Path(__file__).resolve().parent / "static"
MAX_BODY_BYTES = 16 * 1024
MAX_JSON_DEPTH = 32      # the API's JSON is two levels deep; deeper is an attack on the parser
MAX_BATCH_WINDOW_MS = 1000.0
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
    mmi_weight: Annotated[float, Field(ge=-50.0, le=50.0)] | None = None
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
_API_NAMES = {option: field for field, option in _OPTION_NAMES.items()}


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


def json_depth(body: bytes) -> int:
    """How deeply arrays and objects nest in a JSON text (brackets inside strings ignored)."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in body:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:      # backslash
                escaped = True
            elif byte == 0x22:      # closing quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return deepest


def body_problem(body: bytes) -> str | None:
    """Why a request body cannot be parsed safely as JSON text, or None."""
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"request body is not valid UTF-8 (byte {exc.start})"
    if json_depth(body) > MAX_JSON_DEPTH:
        return f"request body nests JSON deeper than {MAX_JSON_DEPTH} levels"
    return None


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
        problem = body_problem(body) if body else None
        if problem is not None:
            await _error(400, problem)(scope, receive, send)
            return
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class SecurityHeaders:
    """ASGI middleware: the page's security headers on every response (API, static files).

    The /docs and /redoc pages start their (local) scripts inline, so they keep everything
    but the CSP.
    """

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app
        self.all = [(k.lower().encode(), v.encode()) for k, v in PAGE_HEADERS.items()]
        self.no_csp = [h for h in self.all if h[0] != b"content-security-policy"]

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = self.no_csp if scope.get("path", "").startswith(("/docs", "/redoc")) \
            else self.all

        async def with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                have = {k.lower() for k, _ in message.get("headers", [])}
                message = {**message, "headers": [*message.get("headers", []),
                                                  *(h for h in extra if h[0] not in have)]}
            await send(message)

        await self.app(scope, receive, with_headers)


def _host_name(header: str) -> str:
    """The name in a Host header, without its port: `[::1]:8000` -> `::1`."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class HostCheck:
    """ASGI middleware: a request whose Host header names none of `names` is refused (400).

    A page on another site can make a browser's DNS name for it point at 127.0.0.1 (DNS
    rebinding) and then call this API as a same-origin page; its requests still carry that
    name in Host. IP literals and localhost are always accepted: a rebinding attack needs a
    name of its own. "*" accepts every name.
    """

    def __init__(self, app: Callable[..., Awaitable[None]], names: Collection[str]) -> None:
        self.app = app
        self.names = {n.lower() for n in names} | {"localhost"}

    def accepts(self, header: str | None) -> bool:
        if header is None or "*" in self.names:
            return True
        name = _host_name(header)
        try:
            ipaddress.ip_address(name)
            return True
        except ValueError:
            return name in self.names

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "http":
            host = next((v.decode("latin-1") for k, v in scope.get("headers", [])
                         if k == b"host"), None)
            if not self.accepts(host):
                response = JSONResponse(
                    {"message": f"Host {host[:100]!r} is not a name this server answers to "
                                "(chat serve --allow-host NAME accepts it)"}, status_code=400)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


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
               has_backward: bool = False, info: dict[str, Any] | None = None,
               allowed_hosts: Collection[str] | None = None) -> FastAPI:
    """The chat service around `replier(texts, options) -> list[Reply]`.

    `replier` runs in one background thread, never two calls at once. `allowed_hosts`: the
    names a request's Host header may give (`HostCheck`); None: any.
    """
    defaults = default_options or DecodeOptions()
    defaults.check()
    check_batch_window(batch_window_ms)
    batcher = MicroBatcher(replier, max_batch=max_batch, window_s=batch_window_ms / 1000.0,
                           queue_size=queue_size)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await batcher.start()
        yield
        # uvicorn has already waited for the requests in flight; decode any stragglers.
        await batcher.close()

    # /docs and /redoc with Swagger UI's and ReDoc's files served from the package
    # fastapi-offline, not a CDN: the docs work on a machine without a network.
    app = FastAPIOffline(title="torchtutor chat", version="1", lifespan=lifespan,
                         description="A seq2seq chatbot with Luong attention, micro-batched.",
                         static_url="/docs-assets", favicon_url="/favicon.ico",
                         swagger_ui_parameters={"validatorUrl": None})
    app.state.batcher = batcher
    app.add_middleware(BodySizeLimit, max_bytes=max_body_bytes)
    if allowed_hosts is not None:
        app.add_middleware(HostCheck, names=allowed_hosts)
    app.add_middleware(SecurityHeaders)   # outermost: also on 413/400 answers

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # 404, 405 and FastAPI's own 400s get the API's one-line `message` too.
        detail = exc.detail if isinstance(exc.detail, str) else "request refused"
        return JSONResponse({"message": detail, "detail": exc.detail},
                            status_code=exc.status_code, headers=exc.headers)

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

    # The server's decoder defaults under the request's field names (decoder, not method).
    api_defaults = {_API_NAMES.get(k, k): v for k, v in dataclasses.asdict(defaults).items()}
    api_defaults["method"] = defaults.method

    @app.api_route("/healthz", methods=["GET", "HEAD"])
    async def healthz(request: Request) -> dict[str, Any]:
        connections = getattr(request.app.state, "connections", None)   # set by run_server
        return {"status": "ok", "batching": batcher.batching, "max_batch": batcher.max_batch,
                "connections": dataclasses.asdict(connections) if connections else None,
                "batch_window_ms": batch_window_ms, "queue": batcher.waiting,
                "in_flight": batcher.in_flight,
                "queue_size": queue_size, "stats": dataclasses.asdict(batcher.stats),
                "defaults": api_defaults, "model": info or {},
                # The old key, for one release: scripts reading defaults.method should move.
                "deprecated": {"defaults.method": "use defaults.decoder (the API's name); "
                                                  "defaults.method goes in the next release"}}

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers=PAGE_HEADERS)

    @app.api_route("/favicon.ico", methods=["GET", "HEAD"], include_in_schema=False)
    async def favicon() -> FileResponse:
        # Browsers ask for /favicon.ico by themselves; an SVG answers them all.
        return FileResponse(STATIC_DIR / "favicon.svg", media_type="image/svg+xml")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


# --- connections: read deadlines, a cap, and a shutdown that drops stalled readers ------------

@dataclass(frozen=True)
class ServerLimits:
    read_timeout_s: float = 10.0    # a request's headers and body must arrive within this
    max_connections: int = 1000     # open connections held at most (each is a file descriptor)
    graceful_timeout_s: float = 30.0   # on SIGTERM, the longest wait for requests in flight

    def check(self) -> None:
        check_range("--read-timeout", self.read_timeout_s, 0, 3600, low_open=True)
        check_count("--max-connections", self.max_connections, 1, 100_000)
        check_range("graceful shutdown timeout", self.graceful_timeout_s, 0, 3600)


_BUSY_BODY = b'{"message": "server busy: too many open connections; try again shortly"}'
_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
         b"retry-after: 1\r\nconnection: close\r\n"
         + f"content-length: {len(_BUSY_BODY)}\r\n\r\n".encode() + _BUSY_BODY)


@dataclass
class ConnectionStats:
    """What the connection guard did, shown in /healthz (`connections`)."""
    timed_out: int = 0           # closed: no whole request within the read timeout
    evicted: int = 0             # closed to make room at the connection cap
    refused: int = 0             # answered 503 at the cap (every connection busy)
    longest_timed_out_s: float = 0.0   # the longest one waited, from accept or last reply


def guarded_protocol(limits: ServerLimits, stats: ConnectionStats | None = None) -> type:
    """uvicorn's h11 protocol with a read deadline per request and a cap on connections.

    uvicorn itself never times out a connection that has not sent a whole request, so a
    client that opens a socket and stalls holds a file descriptor (and, mid-body, delays a
    shutdown) for ever. Here every request must arrive whole within `read_timeout_s` of the
    connection opening or of the previous response. At the cap, the oldest connection still
    waiting for a request is closed to make room (slow-loris clients are the ones waiting);
    if every connection is busy with a request, the new one gets 503.
    """
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    opened: dict[Any, float] = {}   # protocol -> open time, oldest first
    stats = stats if stats is not None else ConnectionStats()
    waiting_states = (h11.IDLE, h11.SEND_BODY)
    # Only a connection that has waited this long may be closed to make room: one that opened
    # a moment ago is most likely a real client whose request is on its way.
    evictable_after_s = min(1.0, limits.read_timeout_s / 2)

    class GuardedH11Protocol(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None
        _armed_at = 0.0

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            opened[self] = time.monotonic()
            self._arm()
            if len(opened) > limits.max_connections and not self._make_room():
                stats.refused += 1
                transport.write(_BUSY)
                transport.close()

        def connection_lost(self, exc: Exception | None) -> None:
            opened.pop(self, None)
            if self._deadline is not None:
                self._deadline.cancel()
            super().connection_lost(exc)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm()   # the next request on a kept-alive connection gets the same time

        def reading_request(self) -> bool:
            """Whether this connection is still waiting for (part of) a request."""
            return self.conn.their_state in waiting_states

        def _arm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
            self._armed_at = time.monotonic()
            self._deadline = self.loop.call_later(limits.read_timeout_s, self._read_timed_out)

        def _read_timed_out(self) -> None:
            if self.reading_request() and not self.transport.is_closing():
                stats.timed_out += 1
                held = time.monotonic() - self._armed_at
                stats.longest_timed_out_s = max(stats.longest_timed_out_s, held)
                self._drop()

        def _drop(self) -> None:
            if self.cycle is not None and not self.cycle.response_complete:
                self.cycle.disconnected = True    # the app sees http.disconnect
                self.cycle.message_event.set()
            self.transport.close()

        def _make_room(self) -> bool:
            old = time.monotonic() - evictable_after_s
            for other in opened:
                if other is not self and other._armed_at <= old and other.reading_request() \
                        and not other.transport.is_closing():
                    stats.evicted += 1
                    other._drop()
                    return True
            return False

        def shutdown(self) -> None:
            # A request still being sent will never be finished in time: drop it now instead
            # of waiting out the graceful timeout and cancelling it with a traceback.
            if self.reading_request():
                self._drop()
                return
            super().shutdown()

    return GuardedH11Protocol


# --- the command ----------------------------------------------------------------------------

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
    """Load a trained run once; return its decode function and a short description.

    On the CPU the bot carries int8 copies (decode.attach_int8_draft) for MMI's candidates;
    every score it returns is float32's, as the API promises (greedy then runs in float32).
    """
    from torchtutor.chat.infer.decode import load_bot

    bot = load_bot(run_dir, device, fp32_scores=True)
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


def check_batch_window(batch_window_ms: float) -> float:
    # Unbounded, a window of `inf` would keep a lone request waiting for company for ever.
    return check_range("--batch-window-ms", batch_window_ms, 0, MAX_BATCH_WINDOW_MS)


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

