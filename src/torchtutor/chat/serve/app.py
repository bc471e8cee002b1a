"""`torchtutor chat serve`: the chatbot over HTTP, with a browser chat page.

    POST /api/reply  {"text": ..., optional decoder options} -> {"reply", "unknown_words", ...}
    GET  /healthz    liveness, batching settings and counters
    GET  /           the chat page (static HTML/CSS/JS from chat/serve/static, no build step)
    GET  /docs, /redoc, /openapi.json   the API's schema and its pages (assets served here)

The model is loaded once; every request goes through one `MicroBatcher`, which decodes
requests that arrive together as one batch. `create_app` takes the decode function itself
(`replier(texts, options) -> replies`), so tests and benchmarks can serve a stand-in.

Limits: bodies over `max_body_bytes` get 413, bodies that are not UTF-8 or nest JSON deeper
than `MAX_JSON_DEPTH` 400, fields of the wrong type or out of range 422 (validated strictly:
no `true` for 1), as do fields that do not go together (their `detail` says
`option_conflict`), a full queue 503; each answer has a one-line `message` (422 keeps
FastAPI's `detail` beside it), and each is in /openapi.json (tests/chat/test_serve_schema.py
holds the server to it). Every response carries the page's security headers. The connection
machinery (`ServerLimits`, `guarded_protocol`) gives each request `read_timeout_s` to arrive
whole (headers and body; a partial one gets 408) and holds at most `max_connections` open:
beyond that the oldest connection still waiting for its request is closed, or, when every one
is busy, the new one gets 503. On SIGTERM uvicorn stops accepting connections, connections
still sending their request are dropped, the requests in flight finish, and the batcher drains
its queue.

The package, one job a module: schema.py (the request and response models), middleware.py
(body limit, UTF-8 and depth check, security headers), app.py (this: the routes), batcher.py
(micro-batching), connections.py (deadlines and the connection cap), command.py (`chat serve`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Collection
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException

from torchtutor.chat.infer.options import (
    DecodeOptions,
)
from torchtutor.chat.serve.batcher import MicroBatcher, Overloaded, Replier, ShuttingDown
from torchtutor.chat.serve.middleware import (
    MAX_BODY_BYTES,
    PAGE_HEADERS,
    BodySizeLimit,
    HostCheck,
    SecurityHeaders,
    error_response,
)
from torchtutor.chat.serve.schema import (
    API_NAMES,
    GUARD_ANSWERS,
    ErrorResponse,
    InvalidRequest,
    ReplyRequest,
    ReplyResponse,
    as_response,
    merge_options,
)
from torchtutor.runtime.errors import UserError
from torchtutor.runtime.options import check_range

log = logging.getLogger(__name__)


STATIC_DIR = Path(__file__).resolve().parent / "static"


MAX_BATCH_WINDOW_MS = 1000.0


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


def check_batch_window(batch_window_ms: float) -> float:
    # Unbounded, a window of `inf` would keep a lone request waiting for company for ever.
    return check_range("--batch-window-ms", batch_window_ms, 0, MAX_BATCH_WINDOW_MS)


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
                         swagger_ui_parameters={"validatorUrl": None},
                         responses=GUARD_ANSWERS)
    app.state.batcher = batcher
    _publish_exact_bounds(app)
    app.add_middleware(BodySizeLimit, max_bytes=max_body_bytes)
    if allowed_hosts is not None:
        app.add_middleware(HostCheck, names=allowed_hosts)
    app.add_middleware(SecurityHeaders)   # outermost: also on 413/400 answers
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _invalid)

    @app.post("/api/reply", response_model=ReplyResponse,
              responses={422: {"model": InvalidRequest,
                               "description": "invalid text or decoder options"},
                         500: {"model": ErrorResponse,
                               "description": "decoding failed (a bug; the server logs it)"}})
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
            return error_response(503, f"server busy: {exc}; try again shortly",
                                  {"Retry-After": "1"})
        except ShuttingDown as exc:
            return error_response(503, str(exc))
        except UserError as exc:
            return error_response(422, str(exc))
        except Exception as exc:   # a decoder bug: log it, answer this request, keep serving
            log.exception("decoding failed")
            return error_response(500, f"decoding failed: {type(exc).__name__}")
        return as_response(reply, has_unk)

    # The server's decoder defaults under the request's field names (decoder, not method).
    api_defaults = {API_NAMES.get(k, k): v for k, v in dataclasses.asdict(defaults).items()}

    # GET and HEAD as two routes: one route for both would give both the same operationId,
    # which OpenAPI requires to be unique.
    @app.head("/healthz", operation_id="healthz_head")
    @app.get("/healthz", operation_id="healthz")
    async def healthz(request: Request) -> dict[str, Any]:
        connections = getattr(request.app.state, "connections", None)   # set by run_server
        return {"status": "ok", "batching": batcher.batching, "max_batch": batcher.max_batch,
                "connections": dataclasses.asdict(connections) if connections else None,
                "batch_window_ms": batch_window_ms, "queue": batcher.waiting,
                "in_flight": batcher.in_flight,
                "queue_size": queue_size, "stats": dataclasses.asdict(batcher.stats),
                "defaults": api_defaults, "model": info or {}}

    _add_page(app)
    return app


def _add_page(app: FastAPI) -> None:
    """The chat page, its favicon and its static files."""
    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers=PAGE_HEADERS)

    @app.api_route("/favicon.ico", methods=["GET", "HEAD"], include_in_schema=False)
    async def favicon() -> FileResponse:
        # Browsers ask for /favicon.ico by themselves; an SVG answers them all.
        return FileResponse(STATIC_DIR / "favicon.svg", media_type="image/svg+xml")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")


def _publish_exact_bounds(app: FastAPI) -> None:
    """FastAPI's OpenAPI model keeps bounds as floats: MAX_SEED (2**63 - 1) would be published
    as 2**63, a seed the server refuses. The request's schema is pydantic's own, exact."""
    fastapi_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            fastapi_openapi()["components"]["schemas"]["ReplyRequest"] = \
                ReplyRequest.model_json_schema()
        return app.openapi_schema

    app.openapi = openapi   # type: ignore[method-assign]


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    # 404, 405 and FastAPI's own 400s get the API's one-line `message` too.
    detail = exc.detail if isinstance(exc.detail, str) else "request refused"
    return JSONResponse({"message": detail, "detail": exc.detail},
                        status_code=exc.status_code, headers=exc.headers)


async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    # Keep FastAPI's `detail` list, minus the echoed input (it can be 16 KiB of text).
    errors = [{k: v for k, v in e.items() if k not in ("input", "url", "ctx")}
              for e in exc.errors()]
    return JSONResponse({"message": _validation_message(errors),
                         "detail": jsonable_encoder(errors)}, status_code=422)
