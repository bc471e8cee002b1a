"""The server against hostile clients: stalled connections, a flood beyond the cap, bodies
that are not UTF-8 or nest too deeply, HEAD, security headers, SIGTERM with stalled readers."""

import signal
import socket
import time

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.chat.serve_support import (
    EchoReplier,
    fake_server_command,
    free_port,
    start_server,
    stop_server,
)
from torchtutor.chat.serve.app import create_app
from torchtutor.chat.serve.command import ServeConfig, serve
from torchtutor.chat.serve.middleware import PAGE_HEADERS
from torchtutor.runtime.errors import UserError

HALF_HEADERS = b"POST /api/reply HTTP/1.1\r\nHost: x\r\nContent-Type: applic"
HALF_BODY = (b"POST /api/reply HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
             b"Content-Length: 100\r\n\r\n{\"text\": \"hel")


@pytest.fixture(scope="module")
def client():
    with TestClient(create_app(EchoReplier())) as c:
        yield c


@pytest.mark.parametrize("body, words", [
    (b'{"text": "hi \xff\xfe"}', "not valid UTF-8"),
    (b'{"text": "hi", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}", "deeper than 32"),
])
def test_undecodable_or_deep_bodies_are_400_with_a_message(client, body, words):
    response = client.post("/api/reply", content=body,
                           headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert words in response.json()["message"] and "\n" not in response.json()["message"]


def test_brackets_inside_strings_do_not_count_as_depth(client):
    response = client.post("/api/reply", json={"text": "[[[[" * 20 + " hello"})
    assert response.status_code == 200


def test_head_and_security_headers_everywhere(client):
    for path in ("/", "/healthz"):
        response = client.head(path)
        assert response.status_code == 200 and response.content == b""
    for response in (client.get("/static/app.js"), client.get("/healthz"),
                     client.post("/api/reply", json={"text": ""}),
                     client.post("/api/reply", content=b"x" * 20000), client.get("/nowhere")):
        for name, value in PAGE_HEADERS.items():
            assert response.headers[name] == value, (response.url, name)
    missing = client.get("/nowhere")
    assert missing.status_code == 404 and missing.json()["message"]


@pytest.mark.parametrize("window", [float("inf"), float("nan"), -1.0, 1e9])
def test_batch_window_is_bounded(window):
    with pytest.raises(UserError, match="--batch-window-ms"):
        create_app(EchoReplier(), batch_window_ms=window)
    with pytest.raises(UserError, match="--batch-window-ms"):
        serve(ServeConfig(run="nowhere", batch_window_ms=window))


def _sent_before_closing(sock: socket.socket, seconds: float) -> bytes | None:
    """What the server sent on `sock` before closing it, or None if it was still open after
    `seconds`."""
    sock.settimeout(seconds)
    sent = b""
    try:
        while chunk := sock.recv(4096):
            sent += chunk
    except TimeoutError:
        return None
    except OSError:   # a reset: what it sent may be lost
        pass
    return sent


def test_stalled_connections_are_closed_and_a_flood_past_the_cap_serves_others():
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = start_server(fake_server_command(port, 0.0, 64, 5.0, "--read-timeout", "1.5",
                                               "--max-connections", "20"), port)
    try:
        stalled = []
        for i in range(60):
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(HALF_HEADERS if i % 2 else HALF_BODY)
            stalled.append(sock)
        time.sleep(1.2)   # the first ones are now old enough to make room for new clients
        for i in range(3):
            response = httpx.post(url + "/api/reply", json={"text": f"hello {i}"}, timeout=5)
            assert response.json()["reply"] == f"echo: {i} hello"
        started = time.monotonic()
        answers = [_sent_before_closing(s, 3.0) for s in stalled]
        assert None not in answers
        assert time.monotonic() - started < 3.0
        for s in stalled:
            s.close()
        # Each stalled connection was closed one way or the other, and /healthz says which.
        counts = httpx.get(url + "/healthz", timeout=5).json()["connections"]
        assert counts["timed_out"] + counts["evicted"] + counts["refused"] == 60, counts
        assert counts["timed_out"] == 0 or 1.5 <= counts["longest_timed_out_s"] < 3.0, counts
        # Each had sent part of a request, so each closed by the guard was told why.
        timed_out = [a for a in answers if a.startswith(b"HTTP/1.1 408 ")]
        assert len(timed_out) == counts["timed_out"] + counts["evicted"], (answers, counts)
        assert all(a.endswith(b'"request not received whole in time; send it again"}')
                   for a in timed_out), timed_out
    finally:
        assert stop_server(process) == 0


def test_sigterm_with_stalled_readers_exits_at_once_without_a_traceback():
    port = free_port()
    process = start_server(fake_server_command(port), port)   # read timeout 10 s
    held = []
    try:
        for payload in [HALF_HEADERS] * 5 + [HALF_BODY] * 5:
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(payload)
            held.append(sock)
        time.sleep(0.3)
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        lines = []
        for line in process.stdout:
            lines.append(line)
            if "stand-in server stopped" in line:
                break
        stopped = time.monotonic() - started
        process.wait(60)
        output = "".join(lines) + process.stdout.read()
    finally:
        for s in held:
            s.close()
        stop_server(process)
    assert process.returncode == 0
    assert "Traceback" not in output and "CancelledError" not in output, output
    # Before, a stalled body held the exit for the whole 30 s graceful timeout.
    assert stopped < 3.0, output


@pytest.mark.parametrize("host, status", [
    ("127.0.0.1:8000", 200), ("localhost:8000", 200), ("[::1]:8000", 200),
    ("10.1.2.3", 200),                      # an address: no DNS rebinding goes through one
    ("chat.example.org", 200),              # named with --allow-host
    ("evil.example.com:8000", 400),         # a rebinding page's own name
    ("127.0.0.1.evil.example.com", 400),
])
def test_only_the_bound_host_names_are_answered(host, status):
    app = create_app(EchoReplier(), allowed_hosts=("127.0.0.1", "chat.example.org"))
    with TestClient(app) as c:
        response = c.post("/api/reply", json={"text": "hello"}, headers={"host": host})
        assert response.status_code == status, response.text
        if status == 400:
            assert "--allow-host" in response.json()["message"]
            assert response.headers["x-content-type-options"] == "nosniff"   # still outermost
    with TestClient(create_app(EchoReplier(), allowed_hosts=("*",))) as c:
        assert c.get("/healthz", headers={"host": host}).status_code == 200


@pytest.mark.parametrize("temperature", [5e-324, 1e-300])
def test_a_denormal_temperature_is_a_422_not_a_500(client, temperature):
    response = client.post("/api/reply", json={"text": "hi", "decoder": "sample",
                                               "temperature": temperature})
    assert response.status_code == 422
    assert response.json()["message"].startswith("temperature: ")
