"""The OpenAI-compatible API, driven by the official `openai` package (in-process through a WSGI transport)."""

from __future__ import annotations

import base64
import json

import numpy as np
import openai
import pytest

from app.serving.encoder import FORMATS
from helpers import decode_audio, make_app, openai_sdk

GREEDY = {"temperature": 0, "max_new_tokens": 40}


@pytest.fixture(scope="module")
def app(tmp_path_factory, engine):
    return make_app(tmp_path_factory.mktemp("openai"), engine, api_key="sk-test")


@pytest.fixture(scope="module")
def sdk(app):
    return openai_sdk(app, "sk-test")


def _speech(sdk, fmt=None, **kwargs):
    params = {"model": "higgs-audio-v2", "input": "Hello from the OpenAI client.", "voice": "belinda",
              "extra_body": {**GREEDY, **kwargs.pop("extra_body", {})}, **kwargs}
    if fmt:
        params["response_format"] = fmt
    return sdk.audio.speech.create(**params)


def test_models_and_voices(sdk, app):
    ids = [m.id for m in sdk.models.list()]
    assert ids[0] == "higgs-audio-v2" and len(ids) == 2
    voices = app.test_client().get("/v1/audio/voices", headers={"Authorization": "Bearer sk-test"}).json
    names = {v["id"] for v in voices["data"]}
    assert voices["object"] == "list" and {"belinda", "en_man"} <= names
    assert any(v.startswith("profile:") for v in names)


def test_every_format_decodes_to_the_wav_duration(sdk):
    wav = _speech(sdk, "wav")
    assert wav.response.headers["content-type"] == "audio/wav"
    _, seconds = decode_audio(wav.content, "wav")
    assert seconds > 0.5
    default = _speech(sdk)  # OpenAI's default format is mp3
    assert default.response.headers["content-type"] == "audio/mpeg"
    for fmt in FORMATS:
        response = _speech(sdk, fmt)
        assert response.response.headers["content-type"] == FORMATS[fmt].stream_mime
        rate, decoded = decode_audio(response.content, fmt)
        # Streamed mp3 and aac carry the encoder's priming (up to ~70 ms): the container cannot mark it.
        slack = 0.1 if fmt in ("mp3", "aac") else 0.05
        assert rate == (None if fmt == "pcm" else 24000) and -0.05 <= decoded - seconds <= slack, fmt


def test_pcm_equals_the_spec_endpoint_and_speed_stretches(sdk, app):
    pcm = _speech(sdk, "pcm").content
    body = {"text": "Hello from the OpenAI client.", "ref_audio": "belinda", **GREEDY}
    spec = app.test_client().post("/generate", json=body, headers={"Authorization": "Bearer sk-test"}).json
    wav = base64.b64decode(spec["audio_base64"])
    assert pcm == wav[wav.index(b"data") + 8:]  # same samples, same 16-bit conversion
    fast = _speech(sdk, "pcm", speed=2.0).content
    assert abs(len(fast) / len(pcm) - 0.5) < 0.02


def test_sse_deltas_join_to_the_pcm_and_report_usage(sdk, app):
    pcm = _speech(sdk, "pcm").content
    body = {"model": "tts-1", "input": "Hello from the OpenAI client.", "voice": {"id": "belinda"},
            "stream_format": "sse", **GREEDY}
    response = app.test_client().post("/v1/audio/speech", json=body, headers={"Authorization": "Bearer sk-test"})
    assert response.status_code == 200 and response.mimetype == "text/event-stream"
    events = [json.loads(block[6:]) for block in response.get_data(as_text=True).split("\n\n")
              if block.startswith("data: ")]
    deltas = [e for e in events if e["type"] == "speech.audio.delta"]
    assert len(deltas) >= 2 and events[-1]["type"] == "speech.audio.done"
    assert b"".join(base64.b64decode(e["audio"]) for e in deltas) == pcm
    usage = events[-1]["usage"]
    assert usage["output_tokens"] > 0 and usage["input_tokens"] > 0
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]


def test_openai_voice_names_mean_smart_voice_and_instructions_set_the_scene(sdk):
    a = _speech(sdk, "pcm", voice="alloy", instructions="Recorded in a busy cafe.").content
    b = _speech(sdk, "pcm", voice="alloy", instructions="Recorded in a busy cafe.").content
    assert a == b and len(a) > 0  # greedy: the same request gives the same audio
    other_scene = _speech(sdk, "pcm", voice="alloy", instructions="A quiet studio.").content
    assert other_scene != a


@pytest.mark.parametrize("params, error, param", [
    ({"voice": "nobody_here"}, openai.NotFoundError, "voice"),
    ({"model": "whisper-1"}, openai.NotFoundError, "model"),
    ({"speed": 5.0}, openai.UnprocessableEntityError, "speed"),
    ({"response_format": "ogg"}, openai.UnprocessableEntityError, "response_format"),
    ({"input": "   "}, openai.UnprocessableEntityError, "input"),
    ({"extra_body": {"temperature": -1}}, openai.UnprocessableEntityError, "temperature"),
    ({"instructions": "../../etc/passwd"}, openai.BadRequestError, "instructions"),  # path-like: refused
    ({"instructions": "Rain on a tin roof."}, None, None),  # free text is a scene description
])
def test_errors_come_back_as_openai_errors(sdk, params, error, param):
    params = dict(params)
    fmt = params.pop("response_format", "pcm")
    if error is None:
        assert _speech(sdk, fmt, **params).content
        return
    with pytest.raises(error) as caught:
        _speech(sdk, fmt, **params)
    body = caught.value.body
    assert body["param"] == param and body["type"] in ("invalid_request_error", "not_found_error")
    assert param in body["message"]


def test_a_wrong_key_is_an_authentication_error(app):
    client = openai_sdk(app, "sk-wrong")
    with pytest.raises(openai.AuthenticationError) as caught:
        client.models.list()
    assert caught.value.body["type"] == "authentication_error" and "sk-wrong" not in str(caught.value.body)


def test_seeded_sampling_extensions_are_honoured(sdk):
    sampled = {"temperature": 0.9, "seed": 7, "max_new_tokens": 40}
    a = _speech(sdk, "pcm", extra_body=sampled).content
    b = _speech(sdk, "pcm", extra_body=sampled).content
    c = _speech(sdk, "pcm", extra_body={**sampled, "seed": 8}).content
    assert a == b and a != c
    assert np.frombuffer(a, "<i2").size > 0


def test_a_failure_after_the_first_byte_breaks_the_transfer_or_sends_an_error_event(tmp_path, engine, monkeypatch):
    app = make_app(tmp_path, engine)
    rt = app.extensions["higgs"]
    real_stream = rt.service.stream

    def fail_midway(job, cancel=None, stats=None, reservation=None):
        pieces = real_stream(job, cancel, stats, reservation)
        yield next(pieces)
        raise RuntimeError("secret internals /opt/model")

    monkeypatch.setattr(rt.service, "stream", fail_midway)
    body = {"model": "higgs-audio-v2", "input": "Hi there.", "response_format": "pcm", **GREEDY}
    response = app.test_client().post("/v1/audio/speech", json=body)
    assert response.status_code == 200  # headers went out with the first piece
    with pytest.raises(Exception) as caught:
        response.get_data()  # the body cannot end normally: the client must not take it for a whole file
    assert "failed after the response started" in str(caught.value)
    events = app.test_client().post("/v1/audio/speech", json={**body, "stream_format": "sse"}).get_data(as_text=True)
    last = json.loads(events.strip().split("\n\n")[-1][6:])
    assert last["type"] == "error" and last["error"]["message"] == "internal server error"
    assert "secret" not in events and "secret internals" in (tmp_path / "api_server.log").read_text()
