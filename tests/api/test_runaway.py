"""The runaway guard through the HTTP API: checkpoints stuck on purpose (model_pool.tiny --stuck) speak about a second
and then repeat one frame, or fall silent, for ever; the plain tiny checkpoint babbles noise for ever. Each detector
ends its generation short of max_new_tokens, the answer says why in every form, and the batch slot is free at once;
with the guard off the same request runs to max_new_tokens. A normal request's audio is the same, guard on or off.
Realtime sessions and the real server: tests/e2e/test_runaway_e2e.py."""

from __future__ import annotations

import base64
import json
import os

import numpy as np
import pytest

from helpers import make_app, parse_sse, wav_samples
from model_pool import tiny
from model_pool.request import FRAME_RATE, SAMPLE_RATE

MAX = 600  # decode steps: 592 frames, 23.7 s, when nothing ends the generation sooner
BODY = {"text": "Hello.", "max_new_tokens": MAX, "seed": 1}


@pytest.fixture(scope="module")
def stuck_engines(tmp_path_factory):
    import torch

    from model_pool.engine import HiggsEngine
    from model_pool.engine.loader import load
    from model_pool.engine.voice_cache import VoiceCache

    device = torch.device(os.environ.get("HIGGS_TEST_DEVICE", "cpu"))
    engines = {}
    for mode in tiny.STUCK:
        checkpoint = tiny.build(tmp_path_factory.mktemp(f"stuck-{mode}"), stuck=mode)
        loaded = load(str(checkpoint / "model"), str(checkpoint / "audio_tokenizer"), device)
        engines[mode] = HiggsEngine(loaded, VoiceCache(), name=f"stuck-{mode}")
    return engines


@pytest.fixture
def engine_for(stuck_engines, engine):
    """The checkpoint each detector is proved on: text_budget on the plain tiny one (noise that never ends)."""
    return lambda reason: stuck_engines.get(reason, engine)


class Steps:
    """Counts the decode steps an engine hands out, and whether the service closed the generation (freeing its
    slot before the next step) before it answered."""

    def __init__(self, monkeypatch, engine):
        self.count, self.closed = 0, []
        generate = engine.generate

        def counted(*args, **kwargs):
            steps = generate(*args, **kwargs)
            try:
                for step in steps:
                    self.count += 1
                    yield step
            finally:
                steps.close()
                self.closed.append(True)

        monkeypatch.setattr(engine, "generate", counted)


def seconds(body: dict) -> float:
    return wav_samples(body["audio_base64"]).shape[0] / SAMPLE_RATE


# How much audio each is kept: repetition keeps the 30 frames before the stuck frame's second copy; silence keeps
# the noise and 0.3 s of the silence after it; text_budget keeps (5 s + 3 x 1.225 s) of "Hello.": 216 frames.
KEPT = {"repetition": (1.2, 1.2), "silence": (1.5, 2.0), "text_budget": (216 / FRAME_RATE, 216 / FRAME_RATE)}
# Decode steps, at most, of the 600: frames are judged as they come (8 steps behind, the delay pattern); silence only
# once its audio is decoded, in pieces of up to 80 frames that each wait for 10 frames of right context.
STEPS = {"repetition": 30 + 24 + 8, "silence": 35 + 75 + 80 + 10 + 8, "text_budget": 217 + 8}


@pytest.mark.parametrize("reason", ["repetition", "silence", "text_budget"])
def test_each_detector_ends_its_runaway_at_once_and_says_why(tmp_path, engine_for, reason, monkeypatch):
    engine = engine_for(reason)
    app = make_app(tmp_path, engine, max_new_tokens=MAX)
    client = app.test_client()
    steps = Steps(monkeypatch, engine)
    r = client.post("/generate", json=BODY)
    assert r.status_code == 200, r.json
    assert (r.json["finish_reason"], r.json["runaway_reason"]) == ("runaway", reason)
    low, high = KEPT[reason]
    assert low - 1e-9 <= r.json["duration"] <= high and r.json["duration"] == seconds(r.json)
    assert steps.count <= STEPS[reason] and steps.closed == [True]  # the slot went back when the guard fired
    assert app.extensions["higgs"].service.pool().stats()["admitted"] == 0
    log = (tmp_path / "api_server.log").read_text()
    assert f"finish runaway ({reason})" in log

    before = steps.count
    off = client.post("/generate", json={**BODY, "runaway_guard": False})
    assert (off.json["finish_reason"], off.json["runaway_reason"]) == ("length", None)
    assert off.json["duration"] == (MAX - 8) / FRAME_RATE and steps.count - before == MAX
    if reason != "text_budget":  # the same audio up to where the guard cut it (then faded over 240 samples)
        kept, whole = wav_samples(r.json["audio_base64"]), wav_samples(off.json["audio_base64"])
        assert np.abs(kept[:-240].astype(int) - whole[:kept.shape[0] - 240]).max() <= 1


def test_every_answer_says_how_it_ended(tmp_path, stuck_engines):
    app = make_app(tmp_path, stuck_engines["silence"], max_new_tokens=MAX)
    client = app.test_client()
    events = parse_sse(client.post("/generate-stream", json=BODY).get_data(as_text=True))
    done = events[-1][1]
    assert events[-1][0] == "done" and (done["finish_reason"], done["runaway_reason"]) == ("runaway", "silence")
    assert 1.5 <= done["duration"] <= 2.0

    speech = {"model": "tts-1", "input": "Hello.", "max_new_tokens": MAX, "seed": 1, "response_format": "wav"}
    whole = client.post("/v1/audio/speech", json={**speech, "stream": False})
    assert whole.headers["X-Finish-Reason"] == "runaway" and whole.headers["X-Runaway-Reason"] == "silence"
    streamed = client.post("/v1/audio/speech", json=speech)
    assert streamed.status_code == 200 and "X-Finish-Reason" not in streamed.headers  # sent before the end
    streamed.get_data()
    streamed.close()  # the test client leaves closing a streamed body (which ends its handle) to its caller
    sse = client.post("/v1/audio/speech", json={**speech, "stream_format": "sse", "response_format": "pcm"})
    last = json.loads(sse.get_data(as_text=True).strip().split("\n\n")[-1][len("data: "):])
    assert last["type"] == "speech.audio.done" and last["finish_reason"] == "runaway"
    assert last["runaway_reason"] == "silence"
    no_guard = client.post("/v1/audio/speech", json={**speech, "stream": False, "runaway_guard": False})
    assert no_guard.headers["X-Finish-Reason"] == "length" and "X-Runaway-Reason" not in no_guard.headers

    metrics = client.get("/metrics").get_data(as_text=True)
    assert ('higgs_generations_finished_total{endpoint="/generate-stream",finish_reason="runaway",'
            'runaway_reason="silence"}') in metrics
    assert ('higgs_generations_finished_total{endpoint="/v1/audio/speech",finish_reason="length",'
            'runaway_reason=""}') in metrics


def test_long_form_is_guarded_chunk_by_chunk(tmp_path, stuck_engines):
    app = make_app(tmp_path, stuck_engines["silence"], max_new_tokens=MAX)
    body = {**BODY, "text": "One. Two.", "chunk_method": "word", "chunk_max_word_num": 1}
    events = parse_sse(app.test_client().post("/generate-stream", json=body).get_data(as_text=True))
    audio = [e for name, e in events if name == "audio"]
    assert {e["progress"]["chunk"] for e in audio} == {0, 1}
    assert events[-1][1]["finish_reason"] == "runaway" and 3.0 <= events[-1][1]["duration"] <= 4.0


def test_the_operator_turns_it_off_or_changes_it(tmp_path, stuck_engines):
    off = make_app(tmp_path, stuck_engines["repetition"], max_new_tokens=MAX, runaway_guard=False).test_client()
    assert off.get("/info").json["runaway_guard"]["enabled"] is False
    r = off.post("/generate", json=BODY)
    assert r.json["finish_reason"] == "length" and r.json["duration"] == (MAX - 8) / FRAME_RATE
    longer = make_app(tmp_path, stuck_engines["repetition"], max_new_tokens=MAX, runaway_repetition_s=2.0,
                      runaway_silence_s=0, runaway_text_budget=0).test_client()
    info = longer.get("/info").json["runaway_guard"]
    assert (info["repetition_s"], info["silence_s"], info["text_budget"]) == (2.0, 0, 0)
    assert info["enabled"] and info["silence_db"] == -50.0 and info["seconds_per"]["letter"] == 0.125
    assert longer.post("/generate", json=BODY).json["runaway_reason"] == "repetition"


@pytest.mark.parametrize("sampling", [
    {"temperature": 0},  # greedy, to max_new_tokens
    {"seed": 3, "temperature": 0.9},  # sampled, to max_new_tokens
    {"seed": 2, "temperature": 1.0, "top_k": 0, "top_p": 1.0},  # draws the stream-end code by itself
])
def test_a_normal_request_is_the_same_guard_on_or_off(tmp_path, engine, sampling):
    client = make_app(tmp_path, engine, max_new_tokens=MAX).test_client()
    body = {"text": "A normal sentence, spoken as usual.", "max_new_tokens": 200, **sampling}
    on, off = (client.post("/generate", json={**body, "runaway_guard": g}).json for g in (True, False))
    assert on["audio_base64"] == off["audio_base64"]
    assert on["finish_reason"] == off["finish_reason"] == ("stop" if "top_k" in sampling else "length")
    assert on["runaway_reason"] is None
    streamed = [parse_sse(client.post("/generate-stream", json={**body, "runaway_guard": g}).get_data(as_text=True))
                for g in (True, False)]
    assert [e for e in streamed[0] if e[0] == "audio"] == [e for e in streamed[1] if e[0] == "audio"]
    pcm = b"".join(base64.b64decode(e["audio_base64"]) for name, e in streamed[0] if name == "audio")
    assert np.array_equal(np.frombuffer(pcm, dtype="<i2"), wav_samples(on["audio_base64"]))
