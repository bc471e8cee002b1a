"""Micro-batching: requests that arrive together are decoded together.

One asyncio worker task owns the model. It takes the first waiting request, gathers more for
a short window (or until the batch is full), groups them by decoder options (one decode call
needs one set of options) and runs each group's decode in a single background thread, so the
event loop keeps accepting and answering requests while torch computes (torch releases the
GIL). Only that one thread ever touches the model, because a module is not thread-safe.

Requests whose caller has gone away (a cancelled future) are dropped before decoding, so a
vanished client costs nothing and holds up nobody. The queue is bounded: a full queue is
refused at once (`Overloaded`) instead of growing without limit.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from torchtutor.chat.infer.chatbot import Reply
from torchtutor.chat.infer.options import DecodeOptions

# replier(texts, options) -> one Reply per text, in order. Called from one thread at a time.
Replier = Callable[[list[str], DecodeOptions], list[Reply]]


class Overloaded(Exception):
    """The queue is full; the caller should come back later."""


class ShuttingDown(Exception):
    """The batcher no longer takes requests."""


@dataclass
class _Request:
    text: str
    options: DecodeOptions
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)


@dataclass
class BatchStats:
    """Counters for /healthz and the benchmark."""
    batches: int = 0
    replies: int = 0
    dropped: int = 0          # callers gone before their turn
    largest_batch: int = 0


def options_key(options: DecodeOptions) -> Hashable:
    """Requests with equal keys can share one decode call.

    A seeded sampler is given a key of its own so the same seed always gives the same reply,
    whatever else happens to arrive at the same moment.
    """
    key: tuple[Any, ...] = dataclasses.astuple(options)
    if options.method == "sample" and options.seed is not None:
        key += (object(),)
    return key


class MicroBatcher:
    """Bounded queue + one worker that decodes up to `max_batch` requests at a time.

    `window_s` is how long the worker waits for company after the first request arrives;
    `window_s == 0` or `max_batch == 1` turns batching off (one request per decode call).
    While a batch is decoding, new requests queue up and form the next batch, so under load
    batches fill without waiting for the window at all.
    """

    def __init__(self, replier: Replier, max_batch: int = 64, window_s: float = 0.005,
                 queue_size: int = 1024) -> None:
        if max_batch < 1 or queue_size < 1 or window_s < 0:
            raise ValueError("max_batch and queue_size must be >= 1, window_s >= 0")
        self.replier = replier
        self.max_batch = 1 if window_s == 0 else max_batch
        self.window_s = window_s
        self.queue_size = queue_size
        self.stats = BatchStats()
        self._queue: asyncio.Queue[_Request | None] | None = None
        self._worker: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._closing = False
        self.in_flight = 0     # submitted and not yet answered (queued or decoding)

    @property
    def batching(self) -> bool:
        return self.max_batch > 1

    @property
    def waiting(self) -> int:
        return self._queue.qsize() if self._queue is not None else 0

    async def start(self) -> None:
        # Created here, inside the running loop that will use them.
        self._queue = asyncio.Queue(maxsize=self.queue_size)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="decode")
        self._closing = False
        self._worker = asyncio.create_task(self._run(), name="micro-batcher")

    async def submit(self, text: str, options: DecodeOptions) -> Reply:
        """Queue one request and wait for its reply; cancelling the wait drops the request."""
        if self._closing or self._queue is None:
            raise ShuttingDown("the server is shutting down")
        future = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait(_Request(text, options, future))
        except asyncio.QueueFull:
            raise Overloaded(f"{self.queue_size} requests are already waiting") from None
        self.in_flight += 1
        try:
            return await future
        finally:
            self.in_flight -= 1

    async def close(self) -> None:
        """Stop taking requests, decode the ones already queued, then stop the worker."""
        if self._queue is None or self._worker is None:
            return
        self._closing = True
        # The sentinel goes in behind every queued request; wait for room if the queue is full.
        await self._queue.put(None)
        await self._worker
        assert self._executor is not None
        self._executor.shutdown(wait=True)
        self._queue = self._worker = self._executor = None

    # --- the worker ------------------------------------------------------------------------

    async def _run(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        stop = False
        while not stop:
            first = await self._queue.get()
            if first is None:
                break
            batch = [first]
            deadline = loop.time() + self.window_s
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    try:
                        item = await asyncio.wait_for(self._queue.get(), remaining)
                    except TimeoutError:
                        break
                if item is None:
                    stop = True   # finish this batch, then leave
                    break
                batch.append(item)
            await self._decode(batch)

    async def _decode(self, batch: list[_Request]) -> None:
        live = [r for r in batch if not r.future.done()]
        self.stats.dropped += len(batch) - len(live)
        groups: dict[Hashable, list[_Request]] = {}
        for request in live:
            groups.setdefault(options_key(request.options), []).append(request)
        loop = asyncio.get_running_loop()
        for group in groups.values():
            # Someone may have left while the previous group was decoding.
            group = [r for r in group if not r.future.done()]
            if not group:
                continue
            texts = [r.text for r in group]
            try:
                replies = await loop.run_in_executor(self._executor, self.replier, texts,
                                                     group[0].options)
                if len(replies) != len(group):
                    raise RuntimeError(f"replier gave {len(replies)} replies for "
                                       f"{len(group)} texts")
            except Exception as exc:   # one bad batch must not kill the worker
                for request in group:
                    if not request.future.done():
                        request.future.set_exception(exc)
                continue
            self.stats.batches += 1
            self.stats.replies += len(group)
            self.stats.largest_batch = max(self.stats.largest_batch, len(group))
            for request, reply in zip(group, replies, strict=True):
                if not request.future.done():
                    request.future.set_result(reply)
