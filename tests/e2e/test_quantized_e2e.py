"""`python api_server.py --quantization int8` on the CPU (real gunicorn): /info reports int8 and weights in at most
55% of the same checkpoint's unquantized bytes; /generate, /generate-stream, /v1/audio/speech and a realtime session
serve audio. The checkpoint is model_pool.tiny's `small` size (hidden 512, 8 layers): its decoder layers hold most of
its weights, as the real model's do (the `tiny` size is mostly embeddings and head, which stay unquantized)."""

from __future__ import annotations

import base64
import json

import pytest
import requests
from websockets.sync.client import connect

from harness import sse_events, start_server


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory):
    from model_pool import tiny

    return tiny.build(tmp_path_factory.mktemp("small"), size="small")


@pytest.fixture(scope="module")
def server(small_checkpoint, tmp_path_factory):
    srv = start_server(small_checkpoint, tmp_path_factory.mktemp("int8"), "--quantization", "int8",
                       "--max-new-tokens", "60")
    yield srv
    srv.stop(wait=False)


def test_info_reports_int8_weights_in_at_most_55_percent_of_the_bytes(server, small_checkpoint):
    info = requests.get(f"{server.url}/info", timeout=10).json()
    weights = info["pool"]["weights"]
    assert info["quantization"] == "int8" and weights["quantization"] == "int8" and weights["dtype"] == "float32"
    # The same checkpoint unquantized is what its float32 safetensors hold (plus a few non-persistent buffers).
    stored = sum(f.stat().st_size for f in (small_checkpoint / "model").glob("*.safetensors"))
    assert weights["unquantized_bytes"] == pytest.approx(stored, rel=0.01)
    assert weights["bytes"] <= 0.55 * weights["unquantized_bytes"]  # 41% measured
    plan = [line for line in server.log().splitlines() if "memory plan:" in line]
    assert plan and "(int8; unquantized float32" in plan[0] and "8 batch slot(s)" in plan[0]


def test_every_endpoint_speaks_with_int8_weights(server):
    url = server.url
    r = requests.post(f"{url}/generate", json={"text": "Hello there.", "max_new_tokens": 40, "seed": 1}, timeout=120)
    assert r.status_code == 200 and r.json()["success"] is True
    assert len(base64.b64decode(r.json()["audio_base64"])) > 24000  # more than half a second of 16-bit audio

    stream = requests.post(f"{url}/generate-stream", json={"text": "Hello there.", "max_new_tokens": 40},
                           stream=True, timeout=120)
    events = sse_events(stream.iter_lines(decode_unicode=True), until="done")
    assert stream.status_code == 200 and events[0] == "start" and "audio" in events and events[-1] == "done"

    speech = requests.post(f"{url}/v1/audio/speech", json={"model": "higgs-audio-v2", "input": "Hello there.",
                                                           "voice": "belinda", "response_format": "wav"},
                           timeout=120)
    assert speech.status_code == 200 and speech.content[:4] == b"RIFF" and len(speech.content) > 24000

    with connect(url.replace("http://", "ws://") + "/v1/audio/speech/stream") as ws:
        ws.send(json.dumps({"type": "session.config", "max_new_tokens": 40, "seed": 2}))
        ws.send(json.dumps({"type": "input.text", "text": "One sentence. And another."}))
        ws.send(json.dumps({"type": "input.done"}))
        kinds, audio = [], 0
        while not kinds or kinds[-1] != "session.done":
            message = ws.recv(timeout=120)
            if isinstance(message, bytes):
                audio += len(message)
            else:
                kinds.append(json.loads(message)["type"])
    assert kinds.count("audio.start") == 2 and kinds.count("audio.done") == 2 and audio > 0
