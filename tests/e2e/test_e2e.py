"""End to end: `python api_server.py` (real gunicorn, gthread) on a free port with the tiny checkpoint."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import openai
import pytest
import requests

from harness import get_json, launch_server, sse_events, start_server, wait_until
from helpers import EXAMPLES, ROOT


@pytest.fixture(scope="module")
def server(tiny_checkpoint, tmp_path_factory):
    srv = start_server(tiny_checkpoint, tmp_path_factory.mktemp("e2e"), "--max-new-tokens", "1500")
    yield srv.url, srv.log_dir
    srv.stop(wait=False)


def _info(url):
    return get_json(url, "/info")


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
    # 60 s of audio for three words: a runaway the guard would end after 10 s; this test needs it running.
    body = {"text": "A long one.", "temperature": 0, "max_new_tokens": 1500, "runaway_guard": False}
    response = requests.post(f"{url}/generate-stream", json=body, stream=True, timeout=60)
    assert response.status_code == 200
    assert sse_events(response.iter_lines(decode_unicode=True), until="audio") == ["start", "audio"]
    # Audio arrived while the generation (1500 greedy steps) is still running on the only instance.
    assert _info(url)["pool"]["busy"] == 1
    response.close()  # the client goes away mid-stream
    wait_until(lambda: _info(url)["pool"]["busy"] == 0, 10, "the instance to be given back")
    log = (log_dir / "api_server.log").read_text()
    assert "cancelled" in log
    done = requests.post(f"{url}/generate", json={"text": "Next.", "max_new_tokens": 20}, timeout=60)
    assert done.status_code == 200 and json.loads(done.text)["success"] is True


def test_openai_sdk_reads_audio_chunks_while_generation_runs(server):
    url, _ = server
    client = openai.OpenAI(api_key="unused", base_url=f"{url}/v1", max_retries=0)
    request = {"model": "tts-1", "input": "A long one.", "voice": "belinda", "response_format": "mp3",
               "extra_body": {"temperature": 0, "max_new_tokens": 1500, "runaway_guard": False}}
    with client.audio.speech.with_streaming_response.create(**request) as response:
        assert response.headers["content-type"] == "audio/mpeg"
        chunks = response.iter_bytes()
        first = next(chunks)
        assert first[:3] == b"ID3" or first[0] == 0xFF  # an mp3 stream's start
        # Audio arrived while the generation (1500 greedy steps) is still running on the only instance.
        assert _info(url)["pool"]["busy"] == 1
        received = len(first) + len(next(chunks))
        assert received > len(first)
    wait_until(lambda: _info(url)["pool"]["busy"] == 0, 10, "the instance to be given back after the client left")


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


@pytest.mark.skipif(not shutil.which("node"), reason="node is not installed")
def test_spec_javascript_client_page(server):
    url, _ = server
    result = subprocess.run(["node", str(ROOT / "tests" / "e2e" / "js_client_check.mjs"), url], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["success"] is True and report["riff"] == "RIFFWAVE" and report["played"] == "blob:test"
    # The page turned base64 into real bytes: the blob is exactly the WAV (44-byte header + 16-bit samples).
    assert report["bytes"] == 44 + round(report["duration"] * 24000) * 2
    assert report["status"].startswith("ok:")


def test_a_limit_raised_and_lowered_through_the_environment(tiny_checkpoint, tmp_path):
    """HIGGS_MAX_TEXT_CHARS, as systemd's Environment= would set it, is the limit the real server enforces, above
    the default (20000) as well as below it."""
    long_text = " ".join(["hello world"] * 2100) + "."  # 23100 characters
    body = {"text": long_text, "chunk_method": "word", "chunk_max_word_num": 600, "max_new_tokens": 9,
            "temperature": 0, "scene_prompt": ""}
    (tmp_path / "raised").mkdir()
    (tmp_path / "lowered").mkdir()
    servers = [launch_server(tiny_checkpoint, tmp_path / "raised", env={"HIGGS_MAX_TEXT_CHARS": "30000"}),
               launch_server(tiny_checkpoint, tmp_path / "lowered", env={"HIGGS_MAX_TEXT_CHARS": "12"})]
    try:
        raised, lowered = (server.wait_ready() for server in servers)  # they load side by side
        r = requests.post(f"{raised.url}/generate", json=body, timeout=300)
        assert r.status_code == 200, r.text
        assert requests.post(f"{lowered.url}/generate", json={"text": "Hello world.", "max_new_tokens": 9},
                             timeout=60).status_code == 200
        r = requests.post(f"{lowered.url}/generate", json={"text": "Hello worlds.", "max_new_tokens": 9}, timeout=60)
        assert r.status_code == 400 and r.json()["field"] == "text" and "limit is 12" in r.json()["message"]
    finally:
        for server in servers:
            server.stop(wait=False)


def test_make_targets_name_files_that_exist():
    """`make demo` / `make tiny` must find their prerequisites (a moved file once broke `make demo`)."""
    for target in ("tiny", "demo", "gpu-check"):
        done = subprocess.run(["make", "-n", target], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
