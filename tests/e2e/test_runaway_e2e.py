"""The runaway guard on the real server (gunicorn, a real WebSocket client) with a checkpoint stuck on purpose: a
realtime sentence that gets stuck ends at once and its audio.done says why; the headers and the metric say it over
real HTTP too. Each detector in detail: tests/api/test_runaway.py."""

from __future__ import annotations

import json

import pytest
import requests
from websockets.sync.client import connect

from harness import get_json, start_server, wait_until
from model_pool import tiny
from model_pool.request import FRAME_RATE, SAMPLE_RATE


@pytest.fixture(scope="module")
def stuck(tmp_path_factory):
    checkpoint = tiny.build(tmp_path_factory.mktemp("stuck-repetition"), stuck="repetition")
    srv = start_server(checkpoint, tmp_path_factory.mktemp("runaway"), "--max-new-tokens", "2048")
    yield srv
    srv.stop(wait=False)


def test_a_stuck_realtime_sentence_ends_and_says_why(stuck):
    with connect(stuck.url.replace("http://", "ws://") + "/v1/audio/speech/stream") as ws:
        ws.send(json.dumps({"type": "session.config", "max_new_tokens": 2048, "response_format": "pcm", "seed": 1}))
        ws.send(json.dumps({"type": "input.text", "text": "Hello."}))
        ws.send(json.dumps({"type": "input.done"}))
        events, pcm = [], 0
        while not events or events[-1]["type"] != "session.done":
            message = ws.recv(timeout=60)
            if isinstance(message, bytes):
                pcm += len(message)
            else:
                events.append(json.loads(message))
    done = next(e for e in events if e["type"] == "audio.done")
    assert (done["finish_reason"], done["runaway_reason"]) == ("runaway", "repetition")
    assert pcm == done["total_bytes"] == 30 * SAMPLE_RATE // FRAME_RATE * 2  # 1.2 s: the frames before it stuck
    wait_until(lambda: get_json(stuck.url, "/info")["pool"]["admitted"] == 0, 10, "the slot to be free")
    assert "finish runaway (repetition)" in stuck.log()


def test_headers_and_metric_over_real_http(stuck):
    body = {"model": "tts-1", "input": "Hello.", "response_format": "wav", "stream": False, "seed": 1}
    r = requests.post(f"{stuck.url}/v1/audio/speech", json=body, timeout=60)
    assert r.status_code == 200
    assert r.headers["X-Finish-Reason"] == "runaway" and r.headers["X-Runaway-Reason"] == "repetition"
    preflight = requests.options(f"{stuck.url}/v1/audio/speech", timeout=10, headers={
        "Origin": "https://app.example", "Access-Control-Request-Method": "POST"})
    assert preflight.status_code == 200
    cors = requests.post(f"{stuck.url}/v1/audio/speech", json=body, timeout=60,
                         headers={"Origin": "https://app.example"})
    assert "X-Finish-Reason" in cors.headers.get("Access-Control-Expose-Headers", "")  # scripts may read it
    info = get_json(stuck.url, "/info")["runaway_guard"]
    assert info["enabled"] and info["repetition_s"] == 1.0
    metrics = requests.get(f"{stuck.url}/metrics", timeout=10).text
    assert ('higgs_generations_finished_total{endpoint="/v1/audio/speech",finish_reason="runaway",'
            'runaway_reason="repetition"} 2.0') in metrics
