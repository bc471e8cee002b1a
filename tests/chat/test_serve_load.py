"""A short, bounded load test on loopback: 16 clients for 2 seconds, zero errors.

The server is a real uvicorn process around the stand-in decoder, which sleeps 20 ms per
decode call whatever the batch size (a model's cost on a parallel machine grows far slower
than its batch). One request at a time could then answer at most 100 requests in 2 s;
micro-batching must beat that clearly.
"""

import asyncio
import time

import httpx

from tests.chat.serve_support import fake_server_command, free_port, start_server, stop_server

CLIENTS = 16
SECONDS = 2.0
DECODE_S = 0.02


async def _load(url: str, clients: int, seconds: float) -> tuple[int, list[str], list[float]]:
    ok, errors, latencies = 0, [], []
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def client(i: int, http: httpx.AsyncClient) -> None:
        nonlocal ok
        n = 0
        while time.monotonic() < deadline:
            text = f"hello client {i} message {n}"
            started = time.perf_counter()
            try:
                response = await http.post("/api/reply", json={"text": text})
                if response.status_code != 200:
                    errors.append(f"{response.status_code} {response.text[:100]}")
                elif response.json()["reply"] != "echo: " + " ".join(reversed(text.split())):
                    errors.append(f"wrong reply for {text!r}: {response.text[:100]}")
                else:
                    ok += 1
                    latencies.append(time.perf_counter() - started)
            except httpx.HTTPError as exc:
                errors.append(repr(exc))
            n += 1

    async with httpx.AsyncClient(base_url=url, timeout=10, limits=limits) as http:
        await asyncio.gather(*(client(i, http) for i in range(clients)))
    return ok, errors, latencies


def test_sixteen_clients_for_two_seconds_without_errors():
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = start_server(fake_server_command(port, delay=DECODE_S, window_ms=5), port)
    try:
        ok, errors, latencies = asyncio.run(_load(url, CLIENTS, SECONDS))
        stats = httpx.get(url + "/healthz").json()["stats"]
    finally:
        assert stop_server(process) == 0
    assert errors == []
    unbatched_ceiling = SECONDS / DECODE_S
    assert ok > 1.5 * unbatched_ceiling, (ok, stats)
    assert stats["largest_batch"] > 1 and stats["replies"] == ok
    latencies.sort()
    assert latencies[len(latencies) // 2] < 1.0   # the median client waits well under 1 s
