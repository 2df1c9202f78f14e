"""End to end: `python api_server.py` (real gunicorn, gthread) on a free port with the tiny checkpoint."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time

import pytest
import requests
from conftest import EXAMPLES, ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def _info(url):
    try:
        return requests.get(f"{url}/info", timeout=2).json()
    except requests.RequestException:
        return None


@pytest.fixture(scope="module")
def server(tiny_checkpoint, tmp_path_factory):
    port = free_port()
    log_dir = tmp_path_factory.mktemp("e2e")
    cmd = [sys.executable, str(ROOT / "api_server.py"), "--host", "127.0.0.1", "--port", str(port),
           "--model-path", str(tiny_checkpoint / "model"),
           "--audio-tokenizer-path", str(tiny_checkpoint / "audio_tokenizer"),
           "--device", "cpu", "--max-new-tokens", "1500", "--log-file", str(log_dir / "api_server.log"),
           "--voice-prompts-dir", str(EXAMPLES / "voice_prompts"),
           "--scene-prompts-dir", str(EXAMPLES / "scene_prompts")]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(cmd, cwd=log_dir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        info = wait_until(lambda: (_info(url) or {}).get("is_loaded") or proc.poll() is not None, 120,
                          "the server to load the tiny model")
        assert proc.poll() is None, f"server exited: {proc.stderr.read()[-2000:]}"
        assert info is True
        yield url, log_dir
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_test_client_all_passes(server, tmp_path):
    url, _ = server
    result = subprocess.run([sys.executable, str(ROOT / "test_client.py"), "--test", "all", "--url", url,
                             "--max-new-tokens", "60"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed, 0 failed" in result.stdout
    for name in ("basic.wav", "voice_clone_belinda.wav", "streaming.wav", "voice_clone_upload.wav"):
        assert (tmp_path / "test_outputs" / name).stat().st_size > 44


def test_stream_is_incremental_and_a_dropped_client_frees_the_instance(server):
    url, log_dir = server
    body = {"text": "A long one.", "temperature": 0, "max_new_tokens": 1500}
    response = requests.post(f"{url}/generate-stream", json=body, stream=True, timeout=60)
    assert response.status_code == 200
    lines = response.iter_lines(decode_unicode=True)
    events = []
    for line in lines:
        if line.startswith("event:"):
            events.append(line[6:].strip())
            if events[-1] == "audio":
                break
    assert events == ["start", "audio"]
    # Audio arrived while the generation (1500 greedy steps) is still running on the only instance.
    assert _info(url)["pool"]["busy"] == 1
    response.close()  # the client goes away mid-stream
    wait_until(lambda: _info(url)["pool"]["busy"] == 0, 10, "the instance to be given back")
    log = (log_dir / "api_server.log").read_text()
    assert "cancelled" in log
    done = requests.post(f"{url}/generate", json={"text": "Next.", "max_new_tokens": 20}, timeout=60)
    assert done.status_code == 200 and json.loads(done.text)["success"] is True


def test_spec_python_client_example(server, tmp_path):
    url, _ = server
    result = subprocess.run([sys.executable, str(EXAMPLES / "python_client.py"), "--url", url, "--out",
                             str(tmp_path / "output.wav")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "Audio saved, duration:" in result.stdout and (tmp_path / "output.wav").stat().st_size > 44


@pytest.mark.skipif(not shutil.which("curl"), reason="curl is not installed")
def test_spec_curl_examples(server):
    url, _ = server
    result = subprocess.run(["bash", str(EXAMPLES / "curl_examples.sh"), url], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert lines[0].startswith("{") and "'success': True" in lines[0]  # /generate
    assert '"count"' in lines[1] and '"is_loaded":true' in lines[2].replace(" ", "")  # /voices, /info
    assert "event: start" in result.stdout and "event: done" in result.stdout  # the SSE stream
    assert "'success': True" in lines[-1] and "'sampling_rate': 24000" in lines[-1]  # the upload
