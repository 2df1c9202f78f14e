"""Load shedding, health under load, stalled readers and dropped /generate clients, against real gunicorn started
with default flags (`python api_server.py` with only the paths of the tiny checkpoint and --device cpu)."""

from __future__ import annotations

import json
import socket
import time

import pytest
import requests

from harness import get_json, launch_server, ready_together, wait_until


@pytest.fixture(scope="module")
def servers(tiny_checkpoint, tmp_path_factory):
    """Both servers, launched together: they load side by side."""
    launched = {"defaults": launch_server(tiny_checkpoint, tmp_path_factory.mktemp("defaults")),
                "impatient": launch_server(tiny_checkpoint, tmp_path_factory.mktemp("impatient"),
                                           "--client-timeout", "1", "--max-new-tokens", "4096")}
    with ready_together(launched) as servers:
        yield servers


@pytest.fixture(scope="module")
def defaults(servers):
    return servers["defaults"]


@pytest.fixture(scope="module")
def impatient(servers):
    """Default flags, but a 1 s client timeout and 4096-step requests, so a stalled reader (or a dropped client) is cut
    off well before its generation would end."""
    return servers["impatient"]


def post(port: int, path: str, body: dict, rcvbuf: int | None = None) -> socket.socket:
    data = json.dumps(body).encode()
    sock = socket.socket()
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(60)
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
    return sock


def status_of(sock: socket.socket) -> int:
    head = b""
    while b"\r\n" not in head:
        chunk = sock.recv(1)
        assert chunk, "closed before a status line"
        head += chunk
    return int(head.split()[1])


def healthz_ms(url: str) -> float:
    started = time.perf_counter()
    assert requests.get(f"{url}/healthz", timeout=30).status_code == 200
    return (time.perf_counter() - started) * 1000


def pool(url: str) -> dict:
    return get_json(url, "/info")["pool"]


def test_surplus_requests_get_503_at_once_and_health_answers(defaults):
    """Default flags: 8 batch slots and 16 queue places; 40 streams at once: 24 admitted, 16 refused at once."""
    body = {"text": "Load.", "temperature": 0, "max_new_tokens": 2048, "runaway_guard": False}  # long on purpose
    socks = [post(defaults.port, "/generate-stream", body) for _ in range(40)]
    try:
        started = time.perf_counter()
        statuses = [status_of(s) for s in socks]
        answered = time.perf_counter() - started
        health = [healthz_ms(defaults.url) for _ in range(10)]
        info = requests.get(f"{defaults.url}/info", timeout=30)
        print(f"40 streams with default flags: {statuses.count(200)} x 200, {statuses.count(503)} x 503, all status "
              f"lines in {answered:.2f}s; /healthz under load: max {max(health):.1f} ms, median "
              f"{sorted(health)[5]:.1f} ms; /info {info.elapsed.total_seconds() * 1000:.1f} ms")
        assert statuses.count(200) == 24 and statuses.count(503) == 16
        assert answered < 10  # nobody waited unseen in gunicorn's accept queue
        assert max(health) < 1000 and info.status_code == 200
    finally:
        for s in socks:
            s.close()
    wait_until(lambda: pool(defaults.url)["requests"] == 0 and pool(defaults.url)["admitted"] == 0, 30,
               "the dropped streams to leave the pool")


def test_slowloris_does_not_stall_health(defaults):
    slow = []
    for _ in range(20):
        s = socket.create_connection(("127.0.0.1", defaults.port), timeout=10)
        s.sendall(b"POST /generate HTTP/1.1\r\nHost: x\r\n")  # headers that never finish
        slow.append(s)
    try:
        health = [healthz_ms(defaults.url) for _ in range(5)]
        print(f"20 slow-header connections: /healthz max {max(health):.1f} ms")
        assert max(health) < 1000
    finally:
        for s in slow:
            s.close()


@pytest.fixture(scope="module")
def full_s(impatient):
    """Seconds a 4096-step generation takes when its client stays: what a client that leaves is measured against
    (once for the module: streamed or whole, it is the same work)."""
    body = {"text": "Somebody reads this.", "temperature": 0, "max_new_tokens": 4096, "runaway_guard": False}
    started = time.perf_counter()
    assert requests.post(f"{impatient.url}/generate", json=body, timeout=120).status_code == 200
    return time.perf_counter() - started


def test_a_stalled_reader_is_cut_off_and_its_slot_freed(impatient, full_s):
    body = {"text": "Nobody reads this.", "temperature": 0, "max_new_tokens": 4096, "runaway_guard": False}
    sock = post(impatient.port, "/generate-stream", body, rcvbuf=4096)
    started = time.perf_counter()
    try:
        assert status_of(sock) == 200  # then never read again
        wait_until(lambda: "stopped reading" in impatient.log(), 60, "the stalled reader to be cut off")
        freed = wait_until(lambda: pool(impatient.url)["requests"] == 0 and time.perf_counter() - started, 30,
                           "the slot to be freed")
    finally:
        sock.close()
    print(f"stalled reader: cut off and its slot freed after {freed:.2f}s (client timeout 1 s); the whole "
          f"generation takes {full_s:.2f}s")
    assert freed < 0.5 * full_s


def test_a_dropped_generate_client_stops_its_generation(impatient, full_s):
    body = {"text": "Dropped whole-file request.", "temperature": 0, "max_new_tokens": 4096, "runaway_guard": False}
    sock = post(impatient.port, "/generate", body)
    wait_until(lambda: pool(impatient.url)["requests"] == 1, 30, "the request to start generating")
    started = time.perf_counter()
    sock.close()
    freed = wait_until(lambda: pool(impatient.url)["requests"] == 0 and time.perf_counter() - started, 30,
                       "the generation to stop")
    print(f"/generate client gone: generation stopped after {freed:.2f}s (a whole one takes {full_s:.2f}s)")
    assert freed < 0.5 * full_s
    wait_until(lambda: "generate" in impatient.log() and " cancelled: " in impatient.log(), 10, "the log line")


def test_chunked_json_bodies_have_the_json_limit(defaults):
    """No Content-Length, so the limit must hold while reading (the default limit is 1024 KB)."""
    sock = socket.create_connection(("127.0.0.1", defaults.port), timeout=30)
    try:
        sock.sendall(b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        piece = b'{"text": "' + b"x" * 65536
        sock.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        for _ in range(40):  # 2.5 MB in all
            chunk = b"y" * 65536
            try:
                sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            except OSError:
                break  # the server answered and closed: fine
        assert status_of(sock) == 413
    finally:
        sock.close()
