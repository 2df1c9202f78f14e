"""deploy/ proven: Debian's nginx with deploy/nginx.conf in front of two `python api_server.py` instances (two
ports, one shared voice directory), and the systemd unit's command and environment run as systemd would."""

from __future__ import annotations

import io
import os
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time

import pytest
import requests
import soundfile as sf

from harness import Server, free_port, launch_server, nginx_in_front, wait_until
from helpers import EXAMPLES, ROOT, write_voice

STREAM = {"text": "Through the proxy.", "temperature": 0, "max_new_tokens": 300}


@pytest.fixture(scope="module")
def deployment(tiny_checkpoint, tmp_path_factory):
    shared = tmp_path_factory.mktemp("shared_voices")
    shutil.copytree(EXAMPLES / "voice_prompts", shared, dirs_exist_ok=True)
    servers: list[Server] = []
    try:
        for name in ("a", "b"):  # launched together: they load side by side
            servers.append(launch_server(tiny_checkpoint, tmp_path_factory.mktemp(f"instance_{name}"),
                                         "--voice-prompts-dir", str(shared), "--max-new-tokens", "600"))
        for server in servers:
            server.wait_ready()
        with nginx_in_front([s.port for s in servers], tmp_path_factory.mktemp("nginx")) as url:
            yield url, servers, shared
    finally:
        for server in servers:
            server.stop(wait=False)


def test_requests_reach_both_instances(deployment):
    url, servers, _ = deployment
    ids = []
    for _ in range(8):
        response = requests.get(f"{url}/info", timeout=10)
        assert response.status_code == 200 and response.json()["is_loaded"] is True
        ids.append(response.headers["X-Request-ID"])  # nginx's $request_id, passed through by the app
    assert len(set(ids)) == 8 and all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    served = [sum(i in server.log() for i in ids) for server in servers]
    assert sum(served) == 8 and min(served) >= 1, served


def _first_audio_and_total(endpoint: str) -> tuple[float, float]:
    started = time.perf_counter()
    first = None
    with requests.post(f"{endpoint}/generate-stream", json=STREAM, stream=True, timeout=120) as response:
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        for line in response.iter_lines(decode_unicode=True):
            if line == "event: audio" and first is None:
                first = time.perf_counter() - started
            if line == "event: done":
                return first, time.perf_counter() - started
    raise AssertionError("the stream ended without a done event")


def test_a_stream_through_nginx_arrives_incrementally(deployment):
    url, servers, _ = deployment
    direct, proxied = [], []
    for _ in range(3):  # interleaved, so both see the same machine load
        direct.append(_first_audio_and_total(servers[0].url))
        proxied.append(_first_audio_and_total(url))
    direct_first = statistics.median(first for first, _ in direct)
    proxied_first = statistics.median(first for first, _ in proxied)
    proxied_total = statistics.median(total for _, total in proxied)
    print(f"\nfirst audio: direct {direct_first * 1000:.0f} ms, through nginx {proxied_first * 1000:.0f} ms; "
          f"stream total through nginx {proxied_total:.2f} s")
    assert proxied_first <= direct_first + 0.1
    assert proxied_first < 0.5 * proxied_total  # not buffered until the end


def test_a_voice_uploaded_through_one_instance_is_used_by_the_other(deployment, tmp_path):
    url, (a, b), shared = deployment
    clip = write_voice(tmp_path, "clip", seconds=1.5)
    with open(clip, "rb") as audio:
        created = requests.post(f"{a.url}/voices", data={"name": "shared_voice", "transcript": "Reference words."},
                                files={"audio": ("clip.wav", audio, "audio/wav")}, timeout=30)
    assert created.status_code == 201, created.text
    assert "shared_voice" in [v["name"] for v in requests.get(f"{b.url}/voices", timeout=10).json()["voices"]]
    used = requests.post(f"{b.url}/generate", json={"text": "Mine now.", "ref_audio": "shared_voice",
                                                    "max_new_tokens": 30}, timeout=60)
    assert used.status_code == 200 and used.json()["success"] is True
    for _ in range(4):  # through nginx, whichever instance answers
        assert requests.post(f"{url}/generate", json={"text": "Again.", "ref_audio": "shared_voice",
                                                      "max_new_tokens": 20}, timeout=60).status_code == 200
    assert requests.delete(f"{b.url}/voices/shared_voice", timeout=10).status_code == 204
    missing = requests.post(f"{a.url}/generate", json={"text": "Gone.", "ref_audio": "shared_voice"}, timeout=30)
    assert missing.status_code == 404 and not (shared / "shared_voice.wav").exists()


def test_an_upload_through_nginx(deployment, tmp_path):
    url, _, _ = deployment
    buffer = io.BytesIO()
    sf.write(buffer, sf.read(write_voice(tmp_path, "up", seconds=1.0))[0], 24000, format="FLAC")
    response = requests.post(f"{url}/generate-upload", data={"text": "Uploaded.", "max_new_tokens": "20"},
                             files={"ref_audio_file": ("up.flac", buffer.getvalue(), "audio/flac")}, timeout=60)
    assert response.status_code == 200 and response.json()["success"] is True


def _unit() -> tuple[dict[str, str], dict[str, str]]:
    """deploy/higgs-audio-server.service: its [Service] settings and its Environment= variables."""
    service, environment, section = {}, {}, None
    for line in (ROOT / "deploy" / "higgs-audio-server.service").read_text().splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            if key == "Environment":
                name, _, setting = value.partition("=")
                environment[name] = setting
            else:
                service[key] = value
    return service, environment


def test_the_systemd_units_command_and_environment_serve_and_stop_in_time(tiny_checkpoint, tmp_path):
    """The unit's own ExecStart, WorkingDirectory and Environment=, run as systemd would (a clean environment, the
    kill signal, the stop timeout) on a copy of the tree at the unit's path. Changed for the test: the install root
    (a temporary copy), the log directory (systemd's LogsDirectory), the model paths (the tiny checkpoint) and the
    port (a free one). Not run: systemd itself and User= (CI has no init system)."""
    service, environment = _unit()
    assert service["Restart"] == "on-failure" and service["KillSignal"] == "SIGTERM"
    stop_limit = int(service["TimeoutStopSec"])
    assert stop_limit > int(environment["HIGGS_GRACEFUL_TIMEOUT"])  # systemd waits out gunicorn's grace
    install, logs = "/opt/higgs-audio-server", "/var/log/higgs-audio"
    root, log_dir = tmp_path / "install", tmp_path / "logs"
    for part in ("app", "model_pool", "examples", "api_server.py", "wsgi.py", "gunicorn.conf.py"):
        copy = shutil.copytree if (ROOT / part).is_dir() else shutil.copy
        copy(ROOT / part, root / part)
    (root / ".venv").symlink_to(sys.prefix)  # the venv the unit names: this one
    log_dir.mkdir()

    def local(value: str) -> str:
        return value.replace(install, str(root)).replace(logs, str(log_dir))

    port = free_port()
    env = {"PATH": os.environ["PATH"], "HF_HUB_OFFLINE": "1", **{k: local(v) for k, v in environment.items()},
           "HIGGS_MODEL_PATH": str(tiny_checkpoint / "model"), "HIGGS_PORT": str(port),
           "HIGGS_AUDIO_TOKENIZER_PATH": str(tiny_checkpoint / "audio_tokenizer")}
    command = shlex.split(local(service["ExecStart"]))
    with open(tmp_path / "stderr.log", "w") as stderr:
        proc = subprocess.Popen(command, cwd=local(service["WorkingDirectory"]), env=env,
                                stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        def ready():
            assert proc.poll() is None, (tmp_path / "stderr.log").read_text()[-2000:]
            try:
                return requests.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        wait_until(ready, 120, "the unit's server to be ready")
        info = requests.get(f"http://127.0.0.1:{port}/info", timeout=5).json()
        assert info["model_name"] == env["HIGGS_MODEL_PATH"]  # configuration came from Environment=
        voices = requests.get(f"http://127.0.0.1:{port}/voices", timeout=5).json()["voices"]
        assert voices and all(v["file"].startswith(str(root)) for v in voices)  # HIGGS_VOICE_PROMPTS_DIR
        assert (log_dir / "api_server.log").exists()  # HIGGS_LOG_FILE
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)  # what `systemctl stop` sends (KillSignal)
        assert proc.wait(stop_limit) == 0
        assert time.monotonic() - started < stop_limit
    finally:
        if proc.poll() is None:
            proc.kill()


def test_nginx_holds_slow_bodies_so_they_never_hold_a_server_thread(deployment):
    """More slow uploads than both instances have threads (2 x 32): nginx buffers each body until it is complete,
    so the instances never see them and answer health checks at once; a body that completes goes through."""
    url, servers, _ = deployment
    port = int(url.rsplit(":", 1)[1])
    body = b"x" * 100_000
    head = (f"POST /voices HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    seen = [server.log().count("POST /voices") for server in servers]  # earlier tests' uploads
    slow = []
    try:
        for _ in range(80):
            sock = socket.create_connection(("127.0.0.1", port), timeout=30)
            sock.sendall(head + body[:1000])  # then nothing more, for now
            slow.append(sock)
        for server, before in zip(servers, seen):
            started = time.perf_counter()
            assert requests.get(f"{server.url}/healthz", timeout=5).status_code == 200
            assert time.perf_counter() - started < 1
            assert server.log().count("POST /voices") == before  # nothing reached the instances
        slow[0].sendall(body[1000:])  # this body completes: nginx passes it on, the instance answers
        assert slow[0].recv(200).startswith(b"HTTP/1.1 4")  # not a multipart form: a 4xx from the instance
        wait_until(lambda: sum(s.log().count("POST /voices") for s in servers) == sum(seen) + 1, 30,
                   "the completed body to arrive")
    finally:
        for sock in slow:
            sock.close()


def test_a_realtime_session_through_nginx(deployment):
    """The shipped config passes the WebSocket upgrade on: a session fed word by word hears its first sentence
    before the utterance ends, through the proxy."""
    import json

    from websockets.sync.client import connect

    url, _, _ = deployment
    with connect(url.replace("http://", "ws://") + "/v1/audio/speech/stream") as ws:
        ws.send(json.dumps({"type": "session.config", "max_new_tokens": 40, "seed": 1}))
        for word in "Through the proxy it speaks. And then".split():
            ws.send(json.dumps({"type": "input.text", "text": word + " "}))
        start = json.loads(ws.recv(timeout=60))
        assert start["type"] == "audio.start" and start["sentence_text"] == "Through the proxy it speaks."
        assert isinstance(ws.recv(timeout=60), bytes)
        ws.send(json.dumps({"type": "input.done"}))
        kinds = []
        while "session.done" not in kinds:
            message = ws.recv(timeout=60)
            if not isinstance(message, bytes):
                kinds.append(json.loads(message)["type"])
        assert kinds.count("audio.done") == 2
