"""What every request passes before the app: a body size limit, a check that the body is UTF-8
JSON of sane depth, and the page's security headers on every answer."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Awaitable, Callable, Collection

from fastapi.responses import JSONResponse

log = logging.getLogger(__name__)


MAX_BODY_BYTES = 16 * 1024


MAX_JSON_DEPTH = 32      # the API's JSON is two levels deep; deeper is an attack on the parser


PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def error_response(status: int, message: str,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    """The API's one-line `message` answer."""
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
        too_big = error_response(413, f"request body is larger than {self.max_bytes} bytes")
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
            await error_response(400, problem)(scope, receive, send)
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
