"""Overload, dropped clients, leaks, fuzzing, multi-worker metrics and graceful stop, against real gunicorn."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness import get_json, launch_server, ready_together, sse_events, wait_until


@pytest.fixture(scope="module")
def servers(tiny_checkpoint, tmp_path_factory):
    """Both servers, launched together: they load side by side."""
    launched = {"single": launch_server(tiny_checkpoint, tmp_path_factory.mktemp("single"), "--threads", "40",
                                        "--max-queue", "4", "--max-new-tokens", "32", "--queue-timeout", "30"),
                "multi": launch_server(tiny_checkpoint, tmp_path_factory.mktemp("multi"), "--workers", "2",
                                       "--threads", "32", "--max-queue", "30", "--max-new-tokens", "1500",
                                       "--queue-timeout", "60")}
    with ready_together(launched) as servers:
        yield servers


@pytest.fixture(scope="module")
def single(servers):
    """One worker, one instance, at most 4 waiting."""
    return servers["single"]


@pytest.fixture(scope="module")
def multi(servers):
    """Two workers, one instance each, room for many waiting streams."""
    return servers["multi"]


def metric(url: str, name: str) -> float:
    text = requests.get(f"{url}/metrics", timeout=5).text
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + " ")
              or line.startswith(name + "{")]
    return sum(values)


def test_overload_answers_200_or_503_and_recovers(single):
    barrier = threading.Barrier(24)
    body = {"text": "Overload test.", "temperature": 0, "max_new_tokens": 32}

    def call(_):
        barrier.wait()
        r = requests.post(f"{single.url}/generate", json=body, timeout=120)
        return r.status_code, r.headers.get("Retry-After"), r.json()

    with ThreadPoolExecutor(24) as executor:
        futures = [executor.submit(call, i) for i in range(24)]
        health = requests.get(f"{single.url}/healthz", timeout=5)  # answered while every instance is busy
        results = [f.result() for f in futures]
    statuses = [status for status, _, _ in results]
    print(f"24 concurrent against 1 instance + queue 4: {statuses.count(200)} x 200, {statuses.count(503)} x 503")
    assert set(statuses) <= {200, 503}, statuses
    assert statuses.count(200) >= 5 and statuses.count(503) >= 1, statuses
    for status, retry_after, payload in results:
        if status == 503:
            assert int(retry_after) > 0 and payload["success"] is False and "busy" in payload["message"]
    assert health.status_code == 200
    after = requests.post(f"{single.url}/generate", json=body, timeout=60)
    assert after.status_code == 200 and get_json(single.url, "/info")["pool"]["busy"] == 0


def _open_stream(port: int) -> socket.socket:
    body = json.dumps({"text": "Dropped.", "temperature": 0, "max_new_tokens": 1500, "runaway_guard": False}).encode()
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(b"POST /generate-stream HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                 b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    received = b""
    while b"event: start" not in received:
        chunk = sock.recv(4096)
        assert chunk, "connection closed before the first event"
        received += chunk
    return sock


def test_dropped_streams_free_every_instance(multi):
    def timed_request():
        started = time.perf_counter()
        r = requests.post(f"{multi.url}/generate", json={"text": "Timing.", "temperature": 0,
                                                          "max_new_tokens": 100}, timeout=60)
        assert r.status_code == 200
        return time.perf_counter() - started

    baseline = min(timed_request() for _ in range(2))
    sockets = [_open_stream(multi.port) for _ in range(20)]
    assert metric(multi.url, "higgs_busy_instances") == 2  # both workers are generating for these clients
    for sock in sockets:
        sock.close()
    dropped = time.monotonic()
    wait_until(lambda: metric(multi.url, "higgs_busy_instances") == 0
               and metric(multi.url, "higgs_waiting_requests") == 0, 2.0, "every instance to be free")
    freed = time.monotonic() - dropped
    assert freed <= 2.0
    after = timed_request()
    print(f"20 dropped streams: pool free after {freed:.2f}s; next request {after:.3f}s (baseline {baseline:.3f}s)")
    assert after <= 3 * baseline + 0.5  # nothing left running in the background


def test_metrics_add_up_across_workers(multi):
    name = 'higgs_requests_total{endpoint="/voices",method="GET",status="200"}'
    before = metric(multi.url, name)
    with ThreadPoolExecutor(8) as executor:
        codes = list(executor.map(lambda _: requests.get(f"{multi.url}/voices", timeout=10).status_code, range(40)))
    assert codes == [200] * 40
    assert metric(multi.url, name) == before + 40
    assert metric(multi.url, "higgs_instances") == 2  # each worker's pool is counted once
    assert len(multi.worker_pids()) == 2


def _rss_kb(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_no_memory_growth_over_200_requests(single):
    (pid,) = single.worker_pids()
    body = {"text": "Leak check.", "max_new_tokens": 16, "seed": 1}
    with requests.Session() as s:
        for _ in range(30):  # warm-up: allocator pools, caches, first-call paths
            assert s.post(f"{single.url}/generate", json=body, timeout=60).status_code == 200
        warm = _rss_kb(pid)
        for i in range(200):
            kind = ("/generate", "/generate-stream")[i % 2]
            r = s.post(f"{single.url}{kind}", json={**body, "seed": i}, timeout=60)
            assert r.status_code == 200 and r.content
    grown = _rss_kb(pid)
    print(f"worker RSS after warm-up {warm} kB, after 200 requests {grown} kB ({100 * (grown - warm) / warm:+.1f}%)")
    assert grown < warm * 1.10


def _value_strategy(prop: dict):
    """Valid values for a property of the OpenAPI schema, and many kinds of invalid ones."""
    junk = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True),
                     st.text(max_size=50), st.lists(st.integers(), max_size=3),
                     st.dictionaries(st.text(max_size=5), st.integers(), max_size=2))
    kind = prop.get("type")
    if kind == "number":
        valid = st.floats(prop.get("minimum", -1e6), prop.get("maximum", 1e6), allow_nan=False)
    elif kind == "integer":
        valid = st.integers(prop.get("minimum", -(2**31)), min(prop.get("maximum", 2**31), 2**31))
    elif "enum" in prop:
        valid = st.sampled_from([v for v in prop["enum"] if v is not None])
    else:
        valid = st.text(max_size=80)
    return st.one_of(valid, junk)


def test_fuzz_from_the_openapi_document(single):
    spec = requests.get(f"{single.url}/openapi.json", timeout=10).json()
    def bodies_of(schema: str):
        props = spec["components"]["schemas"][schema]["properties"]
        return st.fixed_dictionaries(
            {}, optional={name: _value_strategy(prop) for name, prop in props.items()} | {"junk_field": st.integers()}
        )

    bodies, speech_bodies = bodies_of("Generate"), bodies_of("Speech")
    raw = st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode))
    seen = {"count": 0}

    def post_json(path: str, payload) -> requests.Response:
        # json.dumps writes NaN/Infinity (not JSON): good test input; requests' own json= refuses them.
        return requests.post(f"{single.url}{path}", data=json.dumps(payload),
                             headers={"Content-Type": "application/json"}, timeout=30)

    def check(response: requests.Response):
        seen["count"] += 1
        assert response.status_code < 500, (response.status_code, response.text[:300])

    @settings(max_examples=360, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(body=bodies, speech=speech_bodies, raw_body=raw, choice=st.integers(0, 6),
           text=st.text(min_size=1, max_size=60))
    def run(body, speech, raw_body, choice, text):
        url = single.url
        if choice == 0:  # a JSON body built from the schema with real text, so many reach the deeper checks
            payload = {**body, "text": text}
            payload.setdefault("max_new_tokens", 8)
            check(post_json("/generate", payload))
        elif choice == 1:
            check(post_json("/generate-stream", body))
        elif choice == 2:  # bytes that may not even be JSON
            check(requests.post(f"{url}/generate", data=raw_body, headers={"Content-Type": "application/json"},
                                timeout=30))
        elif choice == 3:  # the same fields as a multipart form, with a junk file
            form = {k: str(v) for k, v in body.items()}
            check(requests.post(f"{url}/generate-upload", data=form, files={"ref_audio_file": ("x.wav", raw_body)},
                                timeout=30))
        elif choice == 4:
            check(post_json("/generate", body))
        elif choice == 6:  # the OpenAI-compatible endpoint; a 200 is read to its end (an aborted body raises)
            payload = {"model": "higgs-audio-v2", "input": text, **speech}
            payload.setdefault("max_new_tokens", 8)
            response = post_json("/v1/audio/speech", payload)
            check(response)
            if response.status_code >= 400:
                assert "error" in response.json() and "message" in response.json()["error"]
        else:  # names in paths and wrong methods
            check(requests.get(f"{url}/voices/{text}", timeout=30))
            check(requests.delete(f"{url}/generate", timeout=30))

    run()
    print(f"fuzz: {seen['count']} malformed or random requests, no 5xx, no hang")
    assert seen["count"] >= 340


def test_sigterm_lets_streams_finish_and_refuses_new_ones(multi):
    response = requests.post(f"{multi.url}/generate-stream", json={"text": "Finish me.", "temperature": 0,
                                                                    "max_new_tokens": 600, "runaway_guard": False},
                             stream=True, timeout=60)
    lines = response.iter_lines(decode_unicode=True)
    events = sse_events(lines, until="audio")
    multi.proc.send_signal(signal.SIGTERM)

    def refused():
        try:
            socket.create_connection(("127.0.0.1", multi.port), timeout=1).close()
            return False
        except OSError:
            return True

    wait_until(refused, 10, "new connections to be refused")
    events += sse_events(lines)
    assert events[0] == "start" and events[-1] == "done" and "error" not in events
    multi.proc.wait(60)
    assert multi.proc.returncode == 0
