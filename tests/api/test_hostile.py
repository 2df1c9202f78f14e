"""One request never harms another, tried as a hostile client would (Flask's test client; the socket-level points
are in test_hostile_e2e.py against real gunicorn)."""

from __future__ import annotations

import io
import json
import threading
import time

import numpy as np
import pytest
import soundfile as sf

from helpers import at_once, make_app, wav_samples
from model_pool.defaults import MIN_TEMPERATURE


@pytest.fixture
def app(tmp_path, engine):
    return make_app(tmp_path, engine, max_new_tokens=200, max_upload_seconds=30.0, max_upload_mb=8.0)


def together(app, bodies: list[tuple[str, dict]]) -> list:
    """Send every request at once (they share batches); return (status, body) in order."""

    def send(path, body):
        response = app.test_client().post(path, json=body)
        return response.status_code, response.get_data()

    return at_once([lambda b=b: send(*b) for b in bodies])


INNOCENT = {"text": "An innocent sentence.", "scene_prompt": "", "temperature": 0, "max_new_tokens": 60}


def test_special_tokens_in_text_harm_nobody(app):
    """The reported trigger: a delay token in the text once failed its row's prefill, and the batch with it."""
    alone = app.test_client().post("/generate", json=INNOCENT).json["audio_base64"]
    trigger = {"text": "Hello <|reserved_special_token_6|> world <|AUDIO_OUT|> <|eot_id|>", "ref_audio": "belinda",
               "max_new_tokens": 60, "seed": 3}
    results = together(app, [("/generate", trigger), ("/generate", INNOCENT), ("/generate", INNOCENT)])
    assert [status for status, _ in results] == [200, 200, 200]
    for _, body in results[1:]:
        assert np.array_equal(wav_samples(json.loads(body)["audio_base64"]), wav_samples(alone))


def test_a_temperature_far_below_the_bound_is_greedy_and_harms_nobody(app):
    """The other trigger: temperature 1e-300 overflowed the sampler; now it is greedy, beside co-batched streams
    and an OpenAI download that must arrive whole."""
    client = app.test_client()
    greedy = client.post("/generate", json={**INNOCENT, "temperature": 0}).json["audio_base64"]
    assert 1e-300 < MIN_TEMPERATURE
    stream = {**INNOCENT, "temperature": 0.8, "seed": 11}
    speech = {"model": "higgs-audio-v2", "input": "An innocent sentence.", "instructions": "",
              "response_format": "pcm", "temperature": 0, "max_new_tokens": 60}
    alone_stream = client.post("/generate-stream", json=stream).get_data(as_text=True)
    alone_speech = client.post("/v1/audio/speech", json=speech).get_data()
    results = together(app, [("/generate", {**INNOCENT, "temperature": 1e-300}), ("/generate-stream", stream),
                             ("/generate-stream", stream), ("/v1/audio/speech", speech)])
    assert [status for status, _ in results] == [200, 200, 200, 200]
    assert np.array_equal(wav_samples(json.loads(results[0][1])["audio_base64"]), wav_samples(greedy))
    for _, body in results[1:3]:
        assert "event: error" not in body.decode() and _pcm(body.decode()) == _pcm(alone_stream)
    assert results[3][1] == alone_speech and len(alone_speech) == 52 * 960 * 2


def _pcm(events: str) -> list[str]:
    return [json.loads(line[6:])["audio_base64"] for line in events.splitlines()
            if line.startswith("data: ") and '"audio"' in line]


@pytest.mark.parametrize("path, body, field", [
    ("/generate", '{"text": "Hi \\ud800 there"}', "text"),
    ("/generate", '{"text": "Hi", "scene_prompt": "a room \\udfff"}', "scene_prompt"),
    ("/generate", '{"text": "Hi", "ref_audio": "belinda\\ud800"}', "ref_audio"),
    ("/v1/audio/speech", '{"model": "tts-1", "input": "\\ud83d"}', "input"),
])
def test_unencodable_text_is_a_4xx_naming_the_field(app, path, body, field):
    r = app.test_client().post(path, data=body, content_type="application/json")
    assert r.status_code == 422, r.get_data(as_text=True)
    payload = r.json
    named = payload["error"]["param"] if path.startswith("/v1") else payload["field"]
    assert named == field


def clip(seconds: float, rate: int, fmt: str = "WAV", channels: int = 1, silent: bool = False) -> bytes:
    n = int(seconds * rate)
    t = np.arange(n) / rate
    mono = np.zeros(n, np.float32) if silent else (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, np.stack([mono] * channels, axis=1) if channels > 1 else mono, rate, format=fmt,
             subtype="PCM_16")
    return buf.getvalue()


def post_voice(client, data: bytes, name: str = "hostile"):
    form = {"name": name, "transcript": "Words.", "audio": (io.BytesIO(data), "clip.bin"), "overwrite": "true"}
    return client.post("/voices", data=form, content_type="multipart/form-data")


@pytest.mark.parametrize("rate", [8000, 11025, 22050, 24001, 44100, 96000, 192000])
def test_any_rate_from_8_to_192_khz_is_resampled_quickly(tmp_path, engine, rate):
    app = make_app(tmp_path, engine, voice_prompts_dir=str(tmp_path / "voices"), max_upload_mb=8.0,
                   max_upload_seconds=30.0)
    started = time.perf_counter()
    r = post_voice(app.test_client(), clip(2.0, rate))
    assert r.status_code == 201, r.json
    assert time.perf_counter() - started < 5  # 24001 Hz once took 40 s and 10 GB
    stored, stored_rate = sf.read(tmp_path / "voices" / "hostile.wav")
    assert stored_rate == 24000 and abs(len(stored) - 48000) <= 1


@pytest.mark.parametrize("rate", [7999, 192001, 999983])
def test_other_rates_are_a_400_naming_the_field(app, rate):
    r = app.test_client().post("/generate-upload", data={"text": "Hi", "ref_audio_file": (io.BytesIO(clip(0.5, rate)),
                                                                                          "x.wav")},
                               content_type="multipart/form-data")
    assert r.status_code == 400 and r.json["field"] == "ref_audio_file" and f"{rate} Hz" in r.json["message"]


def test_a_long_file_is_refused_from_its_header_before_decoding(app, monkeypatch):
    import model_pool.audio as audio

    hour = clip(3600, 8000, fmt="FLAC", silent=True)  # about 0.5 MB of silence, an hour long
    assert len(hour) < 2 * 1024 * 1024
    decoded = []
    monkeypatch.setattr(audio.sf.SoundFile, "blocks", lambda *a, **k: decoded.append(1) or iter(()))
    started = time.perf_counter()
    r = post_voice(app.test_client(), hour)
    assert r.status_code == 400 and r.json["field"] == "audio" and "3600.0s long" in r.json["message"]
    assert decoded == [] and time.perf_counter() - started < 2


def test_a_file_that_under_declares_stops_decoding_at_the_limit(app):
    """A stream whose header states no length (here a WAV piped with an unknown size) is decoded only up to the
    limit plus one block, then refused."""
    data = bytearray(clip(40, 8000))
    data[4:8] = b"\xff\xff\xff\xff"  # RIFF size unknown
    data[40:44] = b"\xff\xff\xff\xff"  # data size unknown
    r = post_voice(app.test_client(), bytes(data))
    assert r.status_code == 400 and r.json["field"] == "audio" and "30s" in r.json["message"]


def test_too_many_channels_is_a_400(app):
    r = post_voice(app.test_client(), clip(0.5, 24000, channels=12))
    assert r.status_code == 400 and "12 channels" in r.json["message"]


def test_audio_errors_name_no_object_addresses(app):
    r = post_voice(app.test_client(), b"RIFF....WAVEjunkjunkjunk" * 40)
    assert r.status_code == 400 and " at 0x" not in r.json["message"] and "BytesIO" not in r.json["message"]


@pytest.mark.parametrize("body, field", [
    ("[" * 100000 + "]" * 100000, "body"),
    ('{"text": "Hi", "seed": ' + "9" * 5000 + "}", "body"),
])
def test_hostile_json_is_a_400_naming_the_body(app, body, field):
    for path in ("/generate", "/v1/audio/speech"):
        r = app.test_client().post(path, data=body, content_type="application/json")
        assert r.status_code == 400, (path, r.status_code)
        assert (r.json["error"]["param"] if path.startswith("/v1") else r.json["field"]) == field


def test_v1_failures_before_the_first_byte_are_openai_json(app, monkeypatch):
    rt = app.extensions["higgs"]

    def fails_early(job, cancel=None, stats=None, reservation=None):
        raise RuntimeError("secret internals")
        yield

    monkeypatch.setattr(rt.service, "stream", fails_early)
    r = app.test_client().post("/v1/audio/speech", json={"model": "tts-1", "input": "Hi"})
    assert r.status_code == 500 and r.is_json and r.json["error"]["message"] == "internal server error"
    assert "secret" not in r.get_data(as_text=True)


def test_v1_unknown_model_names_ids_not_paths(tmp_path, engine, tiny_checkpoint):
    app = make_app(tmp_path, engine, model_path=str(tiny_checkpoint / "model"))
    client = app.test_client()
    r = client.post("/v1/audio/speech", json={"model": "nope", "input": "Hi"})
    assert r.status_code == 404 and str(tiny_checkpoint) not in r.get_data(as_text=True)
    assert "higgs-audio-v2" in r.json["error"]["message"]
    ids = [m["id"] for m in client.get("/v1/models").json["data"]]
    assert ids == ["higgs-audio-v2", "model"]  # a local directory is listed by its name, not as the hub's model
    ok = client.post("/v1/audio/speech", json={"model": "model", "input": "Hi", "max_new_tokens": 20})
    assert ok.status_code == 200


def test_listings_show_the_directory_as_configured(tmp_path, engine):
    voices = tmp_path / "v"
    voices.mkdir()
    (voices / "x.wav").write_bytes(clip(1.0, 24000))
    app = make_app(tmp_path, engine, voice_prompts_dir=f"{tmp_path}/./v/", scene_prompts_dir="examples/scene_prompts")
    client = app.test_client()
    assert client.get("/voices").json["voices"][0]["file"] == f"{tmp_path}/./v/x.wav"
    assert client.get("/scenes").json["scenes"][0]["file"].startswith("examples/scene_prompts/")


def test_a_voice_deleted_while_its_request_waits_still_completes(tmp_path, engine):
    voices = tmp_path / "voices"
    voices.mkdir()
    app = make_app(tmp_path, engine, voice_prompts_dir=str(voices))
    client = app.test_client()
    assert post_voice(client, clip(2.0, 24000), name="brief").status_code == 201
    pool = app.extensions["higgs"].loader.pool()
    held = [pool.lend(5) for _ in range(pool.stats()["slots"])]
    for slot in held:
        slot.__enter__()
    result = {}
    waiting = threading.Thread(target=lambda: result.update(r=app.test_client().post(
        "/generate", json={"text": "Hi", "ref_audio": "brief", "max_new_tokens": 20})))
    waiting.start()
    try:
        deadline = time.monotonic() + 10
        while pool.stats()["waiting"] == 0 and time.monotonic() < deadline:
            time.sleep(0.01)  # an external thread's state: the request reaches the queue
        assert client.delete("/voices/brief").status_code == 204
    finally:
        for slot in held:
            slot.__exit__(None, None, None)
    waiting.join(60)
    assert result["r"].status_code == 200


def test_log_lines_cannot_be_forged(tmp_path, engine):
    app = make_app(tmp_path, engine)
    client = app.test_client()
    client.get("/voices/evil%0A2026-01-01 00:00:00,000 INFO forged%1b[31m/audio")
    client.post("/v1/audio/speech", json={"model": "x\nFORGED line\x1b[2J", "input": "Hi"})
    for line in (tmp_path / "api_server.log").read_text().splitlines():
        assert not line.startswith("2026-01-01") and "FORGED" not in line.split(":", 3)[0]
        assert "\x1b" not in line
    text = (tmp_path / "api_server.log").read_text()
    assert "evil\\n2026-01-01" in text and "x\\nFORGED" in text


def test_budget_refuses_a_request_that_would_run_too_long(tmp_path, engine):
    app = make_app(tmp_path, engine, max_request_steps=1000, max_new_tokens=100)
    text = "\n".join(f"[SPEAKER0] Turn {i}." for i in range(40))
    r = app.test_client().post("/generate", json={"text": text, "chunk_method": "speaker", "max_new_tokens": 50})
    assert r.status_code == 400 and r.json["field"] == "max_new_tokens" and "1000" in r.json["message"]
    ok = app.test_client().post("/generate", json={"text": text, "chunk_method": "speaker", "max_new_tokens": 25})
    assert ok.status_code == 200
