"""The server's connections: read deadlines, a cap on open connections, and a shutdown that
drops stalled readers (uvicorn's protocol class, wrapped)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from torchtutor.runtime.options import check_count, check_range

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerLimits:
    read_timeout_s: float = 10.0    # a request's headers and body must arrive within this
    max_connections: int = 1000     # open connections held at most (each is a file descriptor)
    graceful_timeout_s: float = 30.0   # on SIGTERM, the longest wait for requests in flight

    def check(self) -> None:
        check_range("--read-timeout", self.read_timeout_s, 0, 3600, low_open=True)
        check_count("--max-connections", self.max_connections, 1, 100_000)
        check_range("graceful shutdown timeout", self.graceful_timeout_s, 0, 3600)


def _raw_answer(status: str, message: str, extra_headers: str = "") -> bytes:
    """A whole HTTP response with a one-line `message`, for the connection guard to write
    itself (no request cycle exists, or the one that does is being dropped)."""
    body = json.dumps({"message": message}).encode()
    return (f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n{extra_headers}"
            f"connection: close\r\ncontent-length: {len(body)}\r\n\r\n").encode() + body


_BUSY = _raw_answer("503 Service Unavailable",
                    "server busy: too many open connections; try again shortly",
                    "retry-after: 1\r\n")


_TIMED_OUT = _raw_answer("408 Request Timeout", "request not received whole in time; "
                         "send it again")


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

        def _give_up(self) -> None:
            # A client that sent part of a request is told why it gets no reply. One idle
            # between requests is closed silently: a 408 there could be read as the answer to
            # the request it is about to send.
            if self.conn.their_state == h11.SEND_BODY or self.conn.trailing_data[0]:
                self.transport.write(_TIMED_OUT)
            self._drop()

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
                self._give_up()

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
                    other._give_up()
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
