"""The chat service: the micro-batcher, the HTTP API (bad requests included) and SIGTERM.

Most tests serve the stand-in `EchoReplier`, so they take milliseconds; `test_real_run_*`
serve a tiny trained run through `torchtutor chat serve`.
"""

import asyncio
import dataclasses
import json
import math
import re
import threading
import time

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.chat.serve_support import (
    EchoReplier,
    fake_server_command,
    free_port,
    serve_command,
    start_server,
    stop_server,
    tiny_run,
)
from torchtutor.chat.infer.options import MAX_BEAM, MAX_CANDIDATES, MAX_SEED, DecodeOptions
from torchtutor.chat.serve.app import (
    MAX_TEXT_CHARS,
    OPTION_CONFLICT,
    ReplyRequest,
    create_app,
    load_replier,
)
from torchtutor.chat.serve.batcher import MicroBatcher, Overloaded, ShuttingDown
from torchtutor.cli import main
from torchtutor.runtime.errors import UserError

# --- the micro-batcher on its own -------------------------------------------------------------


def _run(coro):
    return asyncio.run(coro)


async def _submit_all(batcher, texts, options=None):
    options = options or DecodeOptions()
    return await asyncio.gather(*(batcher.submit(t, options) for t in texts))


def test_requests_arriving_together_share_one_batch():
    replier = EchoReplier()

    async def go():
        batcher = MicroBatcher(replier, max_batch=64, window_s=0.05)
        await batcher.start()
        replies = await _submit_all(batcher, [f"hello {i}" for i in range(10)])
        await batcher.close()
        return replies

    replies = _run(go())
    assert replier.batch_sizes == [10]
    # Each caller gets its own reply, in its own order.
    assert [r.text for r in replies] == [f"echo: {i} hello" for i in range(10)]


def test_max_batch_caps_the_batch_and_window_zero_turns_batching_off():
    capped, single = EchoReplier(), EchoReplier()

    async def go():
        for replier, kwargs in [(capped, {"max_batch": 4, "window_s": 0.05}),
                                (single, {"max_batch": 64, "window_s": 0.0})]:
            batcher = MicroBatcher(replier, **kwargs)
            await batcher.start()
            await _submit_all(batcher, [f"t{i}" for i in range(10)])
            await batcher.close()

    _run(go())
    assert capped.batch_sizes == [4, 4, 2]
    assert single.batch_sizes == [1] * 10


def test_requests_with_different_options_are_decoded_apart():
    replier = EchoReplier()
    greedy, beam = DecodeOptions(), DecodeOptions(method="beam", beam_size=3)
    seeded = DecodeOptions(method="sample", seed=7)

    async def go():
        batcher = MicroBatcher(replier, max_batch=64, window_s=0.05)
        await batcher.start()
        jobs = [batcher.submit("a", greedy), batcher.submit("b", beam),
                batcher.submit("c", greedy), batcher.submit("d", beam),
                batcher.submit("e", seeded), batcher.submit("f", seeded)]
        replies = await asyncio.gather(*jobs)
        await batcher.close()
        return replies

    replies = _run(go())
    groups = sorted((sorted(texts), opts.method) for texts, opts in replier.calls)
    # Seeded sampling is decoded alone, so a seed always gives the same reply.
    assert groups == [(["a", "c"], "greedy"), (["b", "d"], "beam"), (["e"], "sample"),
                      (["f"], "sample")]
    assert [r.text for r in replies] == [f"echo: {c}" for c in "abcdef"]


def test_a_cancelled_request_is_never_decoded_and_holds_nobody_up():
    gate = threading.Event()
    replier = EchoReplier(gate=gate)

    async def go():
        batcher = MicroBatcher(replier, max_batch=64, window_s=0.0)
        await batcher.start()
        first = asyncio.ensure_future(batcher.submit("first", DecodeOptions()))
        while not replier.started.is_set():      # "first" is now decoding, gate closed
            await asyncio.sleep(0.01)
        gone = asyncio.ensure_future(batcher.submit("gone", DecodeOptions()))
        last = asyncio.ensure_future(batcher.submit("last", DecodeOptions()))
        await asyncio.sleep(0.05)
        assert batcher.in_flight == 3
        gone.cancel()
        gate.set()
        results = await asyncio.gather(first, last)
        assert batcher.in_flight == 0
        await batcher.close()
        return results, batcher.stats

    (first, last), stats = _run(go())
    assert (first.text, last.text) == ("echo: first", "echo: last")
    assert [texts for texts, _ in replier.calls] == [["first"], ["last"]]
    assert stats.dropped == 1


def test_full_queue_refuses_at_once_and_close_drains_what_was_queued():
    gate = threading.Event()
    replier = EchoReplier(gate=gate)

    async def go():
        batcher = MicroBatcher(replier, max_batch=1, window_s=0.0, queue_size=2)
        await batcher.start()
        busy = asyncio.ensure_future(batcher.submit("busy", DecodeOptions()))
        while not replier.started.is_set():
            await asyncio.sleep(0.01)
        queued = [asyncio.ensure_future(batcher.submit(f"q{i}", DecodeOptions()))
                  for i in range(2)]
        await asyncio.sleep(0)
        with pytest.raises(Overloaded):
            await batcher.submit("one too many", DecodeOptions())
        gate.set()
        closing = asyncio.ensure_future(batcher.close())
        await asyncio.sleep(0)
        with pytest.raises(ShuttingDown):
            await batcher.submit("after close", DecodeOptions())
        await closing
        return [r.text for r in await asyncio.gather(busy, *queued)]

    assert _run(go()) == ["echo: busy", "echo: q0", "echo: q1"]


def test_a_failing_decode_fails_its_batch_only():
    replier = EchoReplier()

    async def go():
        batcher = MicroBatcher(replier, max_batch=64, window_s=0.05)
        await batcher.start()
        results = await asyncio.gather(batcher.submit("explode", DecodeOptions()),
                                       batcher.submit("fine", DecodeOptions()),
                                       return_exceptions=True)
        after = await batcher.submit("still alive", DecodeOptions())
        await batcher.close()
        return results, after

    (bad, also_bad), after = _run(go())
    assert isinstance(bad, RuntimeError) and isinstance(also_bad, RuntimeError)
    assert after.text == "echo: alive still"


# --- the HTTP API -----------------------------------------------------------------------------


@pytest.fixture
def replier():
    return EchoReplier()


@pytest.fixture
def client(replier):
    app = create_app(replier, default_options=DecodeOptions(method="greedy"), max_batch=8,
                     batch_window_ms=2.0, info={"run": "stand-in"})
    with TestClient(app) as c:
        yield c


def test_reply_round_trip(client):
    response = client.post("/api/reply", json={"text": "hello there zork"})
    assert response.status_code == 200
    body = response.json()
    assert body["reply"] == "echo: zork there hello"
    assert body["unknown_words"] == ["zork"]
    assert body["truncated"] is False
    assert any("zork" in note for note in body["notices"])


def test_truncation_is_reported(client):
    body = client.post("/api/reply", json={"text": "hello " * 20}).json()
    assert body["truncated"] is True


def test_decoder_options_reach_the_decoder(client, replier):
    response = client.post("/api/reply", json={"text": "hi", "decoder": "beam", "beam_size": 3,
                                               "n_best": 2, "no_repeat_ngram": 2})
    assert response.status_code == 200
    options = replier.calls[-1][1]
    assert (options.method, options.beam_size, options.n_best, options.no_repeat_ngram) == \
        ("beam", 3, 2, 2)
    client.post("/api/reply", json={"text": "hi"})
    assert replier.calls[-1][1] == DecodeOptions()   # the server's defaults


@pytest.mark.parametrize("payload, field, words", [
    ({}, "text", "Field required"),
    ({"text": ""}, "text", "at least 1 character"),
    ({"text": "x" * (MAX_TEXT_CHARS + 1)}, "text", f"at most {MAX_TEXT_CHARS} characters"),
    ({"text": 5}, "text", "valid string"),
    ({"text": "hi", "decoder": "magic"}, "decoder", "'greedy', 'beam' or 'sample'"),
    ({"text": "hi", "beam_size": 0}, "beam_size", "greater than or equal to 1"),
    ({"text": "hi", "beam_size": 1000}, "beam_size", "less than or equal to 16"),
    ({"text": "hi", "temperature": 0}, "temperature", "greater than or equal to 0.0000"),
    # a float64 that float32 (the decoder's arithmetic) rounds to 0
    ({"text": "hi", "temperature": 5e-324}, "temperature", "greater than or equal to 0.0000"),
    ({"text": "hi", "top_p": 1.5}, "top_p", "less than or equal to 1"),
    ({"text": "hi", "top_k": -1}, "top_k", "greater than or equal to 0"),
    ({"text": "hi", "seed": -3}, "seed", "greater than or equal to 0"),
    ({"text": "hi", "decoder": "beam", "beam_size": 2, "n_best": 3}, "n_best",
     "is more than beam_size (2)"),
    ({"text": "hi", "rerank": "mmi"}, "rerank", "backward model"),
    ({"text": "hi", "temprature": 0.5}, "temprature", "Extra inputs are not permitted"),
    # strict: what the schema calls an integer or a number, and nothing JSON-ish near it
    ({"text": "hi", "min_length": False}, "min_length", "valid integer"),
    ({"text": "hi", "beam_size": "3"}, "beam_size", "valid integer"),
    ({"text": "hi", "beam_size": 2.5}, "beam_size", "valid integer"),
    ({"text": "hi", "temperature": "0.5"}, "temperature", "valid number"),
    ({"text": "hi", "top_p": True}, "top_p", "valid number"),
    ({"text": "hi", "decoder": 1}, "decoder", "'greedy', 'beam' or 'sample'"),
])
def test_bad_requests_get_422_with_a_clear_message(client, replier, payload, field, words):
    response = client.post("/api/reply", json=payload)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["message"].startswith(f"{field}: ") and words in body["message"], body
    assert body["detail"] and "input" not in body["detail"][0]   # no echo of the input
    assert replier.calls == []


def test_whole_numbers_may_be_written_as_floats(client, replier):
    # JSON Schema counts 3.0 as an integer, so a schema-following client may send it.
    response = client.post("/api/reply", json={"text": "hi", "decoder": "beam",
                                               "beam_size": 3.0, "temperature": 1})
    assert response.status_code == 200, response.text
    assert replier.calls[-1][1].beam_size == 3 and type(replier.calls[-1][1].beam_size) is int


def test_fields_that_conflict_are_told_apart_from_bad_fields(client):
    conflict = client.post("/api/reply", json={"text": "hi", "n_best": 2}).json()   # greedy
    assert [p["type"] for p in conflict["detail"]] == [OPTION_CONFLICT]
    bad = client.post("/api/reply", json={"text": "hi", "n_best": 0}).json()
    assert [p["type"] for p in bad["detail"]] == ["greater_than_equal"]


def test_the_request_schema_has_the_clis_bounds():
    """Each bound the schema publishes is the last value DecodeOptions.check accepts."""
    base = DecodeOptions(method="beam", beam_size=MAX_BEAM, rerank="mmi",
                         candidates=MAX_CANDIDATES)   # n_best may reach its maximum

    def accepted(name, value):
        try:
            dataclasses.replace(base, **{name: value}).check()
        except UserError:
            return False
        return True

    numbers = {}
    for name, prop in ReplyRequest.model_json_schema()["properties"].items():
        for branch in prop.get("anyOf", [prop]):
            if branch.get("type") in ("integer", "number"):
                numbers[name] = branch
    assert set(numbers) == {f.name for f in dataclasses.fields(DecodeOptions)
                            if f.type in ("int", "float", "int | None")}
    for name, bounds in numbers.items():
        if bounds["type"] == "integer":
            def step(v, up):
                return v + (1 if up else -1)
        else:
            def step(v, up):
                return math.nextafter(v, math.inf if up else -math.inf)
        low = bounds.get("minimum", bounds.get("exclusiveMinimum"))
        high = bounds["maximum"]
        assert low is not None, name
        if "minimum" in bounds:
            assert accepted(name, low) and not accepted(name, step(low, False)), name
        else:
            assert not accepted(name, low) and accepted(name, step(low, True)), name
        assert accepted(name, high) and not accepted(name, step(high, True)), name


def test_malformed_json_is_422(client):
    response = client.post("/api/reply", content=b'{"text": "hi"',
                           headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    assert "JSON" in response.json()["message"]


def test_oversized_body_is_413_with_or_without_content_length(client, replier):
    big = json.dumps({"text": "a" * 20_000}).encode()
    response = client.post("/api/reply", content=big,
                           headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert "16384 bytes" in response.json()["message"]

    def chunked():   # no Content-Length: the limit must count the bytes as they come
        for start in range(0, len(big), 4096):
            yield big[start:start + 4096]

    response = client.post("/api/reply", content=chunked(),
                           headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert replier.calls == []


def test_healthz_page_static_files_and_schema(client):
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["batching"] is True
    assert health["max_batch"] == 8 and health["model"] == {"run": "stand-in"}
    # the defaults under the API's own names (decoder, not method)
    assert set(health["defaults"]) == set(ReplyRequest.model_fields) - {"text"}
    assert health["defaults"]["decoder"] == "greedy"

    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert 'role="log"' in page.text and 'aria-live="polite"' in page.text
    for asset in ("/static/app.js", "/static/style.css"):
        assert client.get(asset).status_code == 200

    schema = client.get("/openapi.json").json()
    guards = {"400", "408", "413", "503"}   # any path: the body and connection guards
    assert set(schema["paths"]["/api/reply"]["post"]["responses"]) == \
        {"200", "422", "500"} | guards
    assert set(schema["paths"]["/healthz"]["get"]["responses"]) == {"200"} | guards
    ids = [op["operationId"] for path in schema["paths"].values() for op in path.values()]
    assert len(ids) == len(set(ids)) == 3   # unique, as OpenAPI requires (GET and HEAD too)
    request_schema = schema["components"]["schemas"]["ReplyRequest"]
    assert request_schema["properties"]["text"]["maxLength"] == MAX_TEXT_CHARS
    # published exactly: FastAPI's own schema would say 2**63, a seed the server refuses
    seed = request_schema["properties"]["seed"]["anyOf"][0]
    assert seed["maximum"] == MAX_SEED and type(seed["maximum"]) is int
    not_utf8 = client.post("/api/reply", content=b'{"text": "\xff"}',
                           headers={"Content-Type": "application/json"})
    assert str(not_utf8.status_code) in schema["paths"]["/api/reply"]["post"]["responses"]


def test_decoder_failure_is_500_and_the_service_keeps_going(replier):
    app = create_app(replier)
    with TestClient(app, raise_server_exceptions=False) as client:
        failed = client.post("/api/reply", json={"text": "explode"})
        assert failed.status_code == 500
        assert failed.json()["message"] == "decoding failed: RuntimeError"
        assert client.post("/api/reply", json={"text": "hello"}).json()["reply"] == \
            "echo: hello"


def test_concurrent_requests_through_the_app_are_batched_and_overflow_is_503():
    gate = threading.Event()
    replier = EchoReplier(gate=gate)
    app = create_app(replier, max_batch=64, batch_window_ms=20.0, queue_size=5)

    async def go():
        transport = httpx.ASGITransport(app=app)
        async with app.router.lifespan_context(app), \
                httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            first = asyncio.ensure_future(client.post("/api/reply", json={"text": "first"}))
            while not replier.started.is_set():   # the worker is busy with "first"
                await asyncio.sleep(0.01)
            waiting = [asyncio.ensure_future(client.post("/api/reply", json={"text": f"w{i}"}))
                       for i in range(5)]
            await asyncio.sleep(0.2)
            refused = await client.post("/api/reply", json={"text": "too many"})
            gate.set()
            answered = await asyncio.gather(first, *waiting)
            return refused, answered

    refused, answered = asyncio.run(go())
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert "busy" in refused.json()["message"]
    assert [r.status_code for r in answered] == [200] * 6
    assert replier.batch_sizes == [1, 5]   # the five that queued up went in one batch


def test_a_client_that_disconnects_is_dropped_from_the_queue():
    """Raw ASGI: the second client sends its body, then vanishes while the model is busy."""
    gate = threading.Event()
    replier = EchoReplier(gate=gate)
    app = create_app(replier, max_batch=64, batch_window_ms=0.0)

    def scope():
        return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                "method": "POST", "scheme": "http", "path": "/api/reply", "raw_path": b"",
                "query_string": b"", "root_path": "", "server": ("t", 80),
                "client": ("c", 1), "headers": [(b"content-type", b"application/json")]}

    async def call(text, leave: asyncio.Event | None):
        body = json.dumps({"text": text}).encode()
        sent = []
        first = True

        async def receive():
            nonlocal first
            if first:
                first = False
                return {"type": "http.request", "body": body, "more_body": False}
            await (leave.wait() if leave else asyncio.Event().wait())
            return {"type": "http.disconnect"}

        async def send(message):
            sent.append(message)

        await app(scope(), receive, send)
        return sent[0]["status"]

    async def go():
        async with app.router.lifespan_context(app):
            leave = asyncio.Event()
            busy = asyncio.ensure_future(call("busy", None))
            while not replier.started.is_set():
                await asyncio.sleep(0.01)
            vanishing = asyncio.ensure_future(call("vanishing", leave))
            staying = asyncio.ensure_future(call("staying", None))
            await asyncio.sleep(0.1)
            leave.set()
            gone_status = await vanishing
            gate.set()
            return gone_status, await busy, await staying, app.state.batcher.stats.dropped

    gone_status, busy_status, staying_status, dropped = asyncio.run(go())
    assert (gone_status, busy_status, staying_status) == (499, 200, 200)
    assert [texts for texts, _ in replier.calls] == [["busy"], ["staying"]]
    assert dropped == 1


# --- a real server process: SIGTERM finishes the requests in flight ---------------------------


def test_sigterm_stops_accepting_finishes_in_flight_and_exits():
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = start_server(fake_server_command(port, delay=1.0, max_batch=2, window_ms=50), port)
    results: dict[int, httpx.Response | Exception] = {}

    def ask(i):
        try:
            results[i] = httpx.post(url + "/api/reply", json={"text": f"in flight {i}"},
                                    timeout=30)
        except Exception as exc:  # noqa: BLE001 - recorded and asserted below
            results[i] = exc

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 20
    while httpx.get(url + "/healthz").json()["in_flight"] < 4:   # all four are in
        assert time.monotonic() < deadline
        time.sleep(0.05)
    started = time.monotonic()
    stop = threading.Thread(target=stop_server, args=(process,))
    stop.start()
    time.sleep(0.3)
    with pytest.raises(httpx.ConnectError):   # no longer accepting
        httpx.post(url + "/api/reply", json={"text": "late"}, timeout=5)
    for t in threads:
        t.join(30)
    stop.join(30)
    assert process.returncode == 0, process.stdout.read()
    assert all(isinstance(r, httpx.Response) and r.status_code == 200
               for r in results.values()), results
    assert sorted(r.json()["reply"] for r in results.values()) == \
        [f"echo: {i} flight in" for i in range(4)]
    assert time.monotonic() - started >= 0.9   # it waited for the work, then exited
    assert "stand-in server stopped" in process.stdout.read()


def test_a_slow_client_holds_up_nobody():
    """One client sends half a body and stalls; others are answered meanwhile."""
    import socket

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = start_server(fake_server_command(port), port)
    try:
        with socket.create_connection(("127.0.0.1", port)) as slow:
            slow.sendall(b"POST /api/reply HTTP/1.1\r\nHost: x\r\n"
                         b"Content-Type: application/json\r\nContent-Length: 40\r\n\r\n"
                         b'{"text": "hel')
            started = time.monotonic()
            for i in range(5):
                response = httpx.post(url + "/api/reply", json={"text": f"quick {i}"},
                                      timeout=5)
                assert response.json()["reply"] == f"echo: {i} quick"
            assert time.monotonic() - started < 5
            slow.sendall(b'lo there"}' + b" " * 17)   # the rest: 40 bytes in all
            slow.settimeout(10)
            answer = b""
            while b"}" not in answer:    # headers and body may come in separate packets
                chunk = slow.recv(4096)
                assert chunk, answer
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 200") and b"echo: there hello" in answer
    finally:
        assert stop_server(process) == 0


# --- the real path: a trained run, load_trained and reply_batch -------------------------------


@pytest.fixture(scope="module")
def run_dir():
    return tiny_run()


def test_real_run_batched_replies_equal_one_at_a_time(run_dir):
    replier, info = load_replier(str(run_dir), "cpu")
    assert info["vocab_size"] > 4 and info["max_length"] == 10
    texts = ["hello there", "how are you ?", "what is your name ?", "good bye",
             "do you like music ?", "are you a robot ? xyzzy"]
    alone = [client_reply["reply"] for client_reply in _one_at_a_time(replier, info, texts)]

    app = create_app(replier, max_batch=64, batch_window_ms=100.0, has_unk=info["has_unk"])

    async def together():
        transport = httpx.ASGITransport(app=app)
        async with app.router.lifespan_context(app), \
                httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            answers = await asyncio.gather(*(client.post("/api/reply", json={"text": t})
                                             for t in texts))
            return [a.json() for a in answers], app.state.batcher.stats

    batched, stats = asyncio.run(together())
    assert stats.largest_batch == len(texts)          # really decoded as one batch
    assert [b["reply"] for b in batched] == alone     # and padding changed nothing
    assert batched[-1]["unknown_words"] == ["xyzzy"]


def _one_at_a_time(replier, info, texts):
    app = create_app(replier, batch_window_ms=0.0, has_unk=info["has_unk"])
    with TestClient(app) as client:
        return [client.post("/api/reply", json={"text": t}).json() for t in texts]


def test_real_run_served_by_the_command(run_dir):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = start_server(serve_command(run_dir, port, "--decoder", "beam", "--beam-size", "3"),
                           port)
    try:
        health = httpx.get(url + "/healthz").json()
        assert health["model"]["run"] == "run" and health["defaults"]["decoder"] == "beam"
        body = httpx.post(url + "/api/reply", json={"text": "Hello there, qwertyuiop!",
                                                    "n_best": 3}).json()
        assert isinstance(body["reply"], str) and body["unknown_words"] == ["qwertyuiop"]
        assert len(body["alternatives"]) == 2 and body["truncated"] is False
        long = httpx.post(url + "/api/reply", json={"text": "hello " * 30}).json()
        assert long["truncated"] is True
        assert httpx.post(url + "/api/reply", json={"text": "hi", "n_best": 4}).status_code \
            == 422   # more than the server's default beam of 3
    finally:
        assert stop_server(process) == 0
    lines = process.stdout.read().splitlines()
    assert lines[0].startswith(f"serving {run_dir} on http://127.0.0.1:{port}/")
    # the access log: one line per request, with the request line and the status
    assert any('"POST /api/reply HTTP/1.1" 200' in line for line in lines), lines
    assert any('"POST /api/reply HTTP/1.1" 422' in line for line in lines), lines


def test_serve_reports_a_missing_run_in_one_line(tmp_path, capsys):
    assert main(["chat", "serve", "--run", str(tmp_path / "nothing"), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1


def test_serve_reports_a_taken_port(run_dir, capsys):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main(["chat", "serve", "--run", str(run_dir), "--port", str(port),
                     "--device", "cpu"])
    assert code == 2
    out, err = capsys.readouterr()
    assert "serving" not in out   # said only once the port is bound
    assert err == f"error: port {port} on 127.0.0.1 is already in use (another server?); " \
                  "stop it or pick another --port\n"


def test_docs_redoc_and_favicon_are_served_from_here(client):
    """Swagger UI's and ReDoc's files come from this server (fastapi-offline), not a CDN."""
    for path in ("/docs", "/redoc"):
        html = client.get(path).text
        assert "cdn." not in html and "googleapis" not in html
        assets = re.findall(r'(?:src|href)="(/docs-assets/[^"]+)"', html)
        assert assets and all(client.get(a).status_code == 200 for a in assets), assets
    assert "/docs-assets/swagger-ui-bundle.js" in client.get("/docs").text
    icon = client.get("/favicon.ico")
    assert icon.status_code == 200 and icon.headers["content-type"] == "image/svg+xml"
    assert 'rel="icon" href="/favicon.ico"' in client.get("/").text
