"""Every endpoint through Flask's test client, on the tiny checkpoint."""

from __future__ import annotations

import base64
import io
import threading

import numpy as np
import pytest
import soundfile as sf

from helpers import make_app, parse_sse, wav_samples
from model_pool.errors import ModelLoadError
from model_pool.pool_loader import PoolLoader


def test_info_voices_scenes(client):
    info = client.get("/info").json
    assert info["is_loaded"] is True and info["device"] == "cpu" and info["max_new_tokens"] == 120
    assert info["pool"]["instances"] == 1
    spec_features = ["single-speaker audio generation", "multi-speaker audio generation", "voice cloning",
                     "smart voice", "scene description", "streaming generation"]  # the spec's example, in order
    assert info["supported_features"][:6] == spec_features
    paths = client.get("/openapi.json").json["paths"]
    for feature in info["supported_features"]:  # every endpoint a feature names exists
        for path in (word.strip("()") for word in feature.split() if word.startswith(("(/", "/"))):
            assert path in paths, feature
    voices = client.get("/voices").json
    assert voices["count"] == len(voices["voices"]) >= 5
    belinda = next(v for v in voices["voices"] if v["name"] == "belinda")
    assert belinda["type"] == "wav" and belinda["file"].endswith("voice_prompts/belinda.wav")
    scenes = client.get("/scenes").json
    quiet = next(s for s in scenes["scenes"] if s["name"] == "quiet_indoor")
    assert quiet["content"] == "Audio is recorded from a quiet room." and quiet["file"].endswith("quiet_indoor.txt")


def test_generate_shape_duration_and_seed(client):
    body = {"text": "Hello, this is a test.", "ref_audio": "belinda", "max_new_tokens": 40, "seed": 12345}
    first = client.post("/generate", json=body)
    assert first.status_code == 200
    result = first.json
    assert result["success"] is True and result["message"] == "Audio generated successfully"
    assert result["sampling_rate"] == 24000
    samples = wav_samples(result["audio_base64"])
    assert samples.shape[0] == 32 * 960 and result["duration"] == pytest.approx(samples.shape[0] / 24000)
    again = wav_samples(client.post("/generate", json=body).json["audio_base64"])
    other = wav_samples(client.post("/generate", json={**body, "seed": 1}).json["audio_base64"])
    assert np.array_equal(samples, again) and not np.array_equal(samples, other)


def test_defaults_follow_the_spec_and_server_maximum(client):
    result = client.post("/generate", json={"text": "Hi", "temperature": 0}).json
    # max_new_tokens defaults to the server maximum (120 here): 120 - 8 delay steps = 112 frames.
    assert result["duration"] == pytest.approx(112 * 960 / 24000)


@pytest.mark.parametrize(
    "body, status, field",
    [
        ({}, 422, "text"),
        ({"text": ""}, 422, "text"),
        ({"text": "   "}, 422, "text"),
        ({"text": 5}, 422, "text"),
        ({"text": "Hi", "temperature": 2.5}, 422, "temperature"),
        ({"text": "Hi", "temperature": -0.1}, 422, "temperature"),
        ({"text": "Hi", "temperature": "hot"}, 422, "temperature"),
        ({"text": "Hi", "top_p": 0}, 422, "top_p"),
        ({"text": "Hi", "top_p": 1.5}, 422, "top_p"),
        ({"text": "Hi", "top_k": -1}, 422, "top_k"),
        ({"text": "Hi", "top_k": 2.5}, 422, "top_k"),
        ({"text": "Hi", "max_new_tokens": 0}, 422, "max_new_tokens"),
        ({"text": "Hi", "max_new_tokens": 121}, 400, "max_new_tokens"),
        ({"text": "Hi", "seed": -1}, 422, "seed"),
        ({"text": "Hi", "chunk_method": "sentence"}, 422, "chunk_method"),
        ({"text": "Hi", "ras_win_max_num_repeat": 0}, 422, "ras_win_max_num_repeat"),
        ({"text": "Hi", "tempreature": 0.5}, 422, "tempreature"),
        ({"text": "Hi", "ref_audio": "../../etc/passwd"}, 400, "ref_audio"),
        ({"text": "Hi", "ref_audio": "/etc/passwd"}, 400, "ref_audio"),
        ({"text": "Hi", "ref_audio": "..\\\\secret"}, 400, "ref_audio"),
        ({"text": "Hi", "ref_audio": "%2e%2e%2fsecret"}, 400, "ref_audio"),
        ({"text": "Hi", "scene_prompt": "../../etc/passwd"}, 400, "scene_prompt"),
        ({"text": "Hi", "ref_audio": "nobody"}, 404, "ref_audio"),
        ({"text": "Hi", "scene_prompt": "nowhere"}, 404, "scene_prompt"),
    ],
)
@pytest.mark.parametrize("path", ["/generate", "/generate-stream"])
def test_bad_bodies_name_the_field(client, path, body, status, field):
    r = client.post(path, json=body)
    assert r.status_code == status
    assert r.is_json and r.json["success"] is False and r.json["field"] == field
    assert field in r.json["message"] or field in r.json["errors"]


@pytest.mark.parametrize("raw, status", [("{bad json", 400), ("[1, 2]", 422), ("null", 422)])
def test_malformed_json_is_a_4xx(client, raw, status):
    """Not JSON is a 400 (as docs/api.md says); JSON of the wrong shape fails the schema, a 422."""
    r = client.post("/generate", data=raw, content_type="application/json")
    assert r.status_code == status and r.json["success"] is False


def test_stream_events_and_pcm_equal_generate(client):
    body = {"text": "Streaming, please.", "max_new_tokens": 60, "seed": 5}
    r = client.post("/generate-stream", json=body)
    assert r.status_code == 200 and r.mimetype == "text/event-stream"
    assert r.headers["Cache-Control"] == "no-cache" and r.headers["X-Accel-Buffering"] == "no"
    events = parse_sse(r.get_data(as_text=True))
    names = [name for name, _ in events]
    assert names[0] == "start" and names[-1] == "done" and set(names[1:-1]) == {"audio"} and len(names) >= 4
    start = events[0][1]
    assert start == {"type": "start", "sampling_rate": 24000, "format": "pcm_s16le", "channels": 1,
                     "request_id": r.headers["X-Request-ID"]}
    audio = [data for name, data in events if name == "audio"]
    assert [a["index"] for a in audio] == list(range(len(audio)))
    assert audio[-1]["progress"] == {"generated_tokens": 60, "max_new_tokens": 60, "chunk": 0, "total_chunks": 1}
    pcm = np.concatenate([np.frombuffer(base64.b64decode(a["audio_base64"]), dtype="<i2") for a in audio])
    assert [a["samples"] for a in audio] == [len(base64.b64decode(a["audio_base64"])) // 2 for a in audio]
    done = events[-1][1]
    assert done["success"] is True and done["duration"] == pytest.approx(pcm.shape[0] / 24000)
    one_shot = wav_samples(client.post("/generate", json=body).json["audio_base64"])
    assert np.array_equal(pcm, one_shot)


def test_stream_pings_while_waiting_for_an_instance(tmp_path, engine):
    app = make_app(tmp_path, engine)
    pool = app.extensions["higgs"].loader.pool()
    holders = [pool.lend(5) for _ in range(pool.stats()["slots"])]
    for holder in holders:
        holder.__enter__()  # every batch slot taken: the stream must wait, and say so with pings
    try:
        response = app.test_client().post("/generate-stream", json={"text": "Hi", "max_new_tokens": 30},
                                          buffered=False)
        chunks = iter(response.response)
        assert next(chunks).startswith(b"event: start")
        assert next(chunks) == b": ping\n\n"
        assert pool.stats()["waiting"] == 1
    finally:
        for holder in holders:
            holder.__exit__(None, None, None)
    rest = b"".join(chunks).decode()
    assert "event: audio" in rest and rest.rstrip().split("\n")[-2] == "event: done"


def test_stream_long_form_progress_counts_chunks(client):
    body = {"text": "One two. Three four.", "chunk_method": "word", "chunk_max_word_num": 2,
            "max_new_tokens": 30, "seed": 2}
    events = parse_sse(client.post("/generate-stream", json=body).get_data(as_text=True))
    chunks = [d["progress"]["chunk"] for n, d in events if n == "audio"]
    assert chunks[0] == 0 and chunks[-1] == 1 and sorted(chunks) == chunks
    assert {d["progress"]["total_chunks"] for n, d in events if n == "audio"} == {2}


def _upload(client, data: bytes | None, filename="ref.wav", **fields):
    form = {"text": "Clone me.", "max_new_tokens": "30", "seed": "4", **fields}
    if data is not None:
        form["ref_audio_file"] = (io.BytesIO(data), filename)
    return client.post("/generate-upload", data=form, content_type="multipart/form-data")


def _encode(samples, rate, fmt, subtype=None):
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


@pytest.mark.parametrize("fmt, subtype, rate", [("OGG", "VORBIS", 48000), ("MP3", "MPEG_LAYER_III", 22050)])
def test_upload_ogg_and_mp3(client, fmt, subtype, rate):
    t = np.arange(rate * 2) / rate
    samples = (0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32)
    r = _upload(client, _encode(samples, rate, fmt, subtype), filename=f"ref.{fmt.lower()}", ref_text="A tone.")
    assert r.status_code == 200 and r.json["success"] is True


def test_upload_wav_and_stereo_flac(client):
    t = np.arange(24000 * 2) / 24000
    mono = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    r = _upload(client, _encode(mono, 24000, "WAV"), ref_text="A short tone.")
    assert r.status_code == 200 and r.json["success"] is True
    t44 = np.arange(44100 * 2) / 44100
    stereo = np.stack([np.sin(2 * np.pi * 220 * t44), np.sin(2 * np.pi * 330 * t44)], axis=1).astype(np.float32) * 0.3
    r2 = _upload(client, _encode(stereo, 44100, "FLAC"), filename="ref.flac")
    assert r2.status_code == 200 and wav_samples(r2.json["audio_base64"]).shape[0] == 22 * 960
    assert not np.array_equal(wav_samples(r.json["audio_base64"]), wav_samples(r2.json["audio_base64"]))


def test_upload_without_file_uses_smart_voice(client):
    r = _upload(client, None)
    assert r.status_code == 200


def test_upload_garbage_too_large_and_too_long(client):
    garbage = _upload(client, b"this is not audio at all" * 10)
    assert garbage.status_code == 400 and garbage.json["field"] == "ref_audio_file"
    big = _upload(client, b"\0" * (1024 * 1024 + 10))
    assert big.status_code == 413 and big.json["field"] == "ref_audio_file"
    long = _upload(client, _encode(np.zeros(8000 * 6, dtype=np.float32), 8000, "WAV"))
    assert long.status_code == 400 and "limit is 5s" in long.json["message"]
    bad_field = _upload(client, None, temperature="warm")
    assert bad_field.status_code == 422 and bad_field.json["field"] == "temperature"


def test_not_loaded_is_503_with_retry_after(tmp_path):
    release = threading.Event()

    def slow_load():  # still loading for as long as the test runs, then fails cleanly
        release.wait(60)
        raise ModelLoadError("the test is over")

    loader = PoolLoader(slow_load)
    app = make_app(tmp_path, loader=loader, load_in_background=True)
    c = app.test_client()
    assert c.get("/info").json["is_loaded"] is False
    for path in ("/generate", "/generate-stream"):
        r = c.post(path, json={"text": "Hi"})
        assert r.status_code == 503 and int(r.headers["Retry-After"]) > 0 and "loading" in r.json["message"]
    # Bad input is still reported as bad input while loading.
    assert c.post("/generate", json={"text": ""}).status_code == 422
    release.set()


def test_failed_load_is_explained(tmp_path):
    app = make_app(tmp_path, engine=None, loader=None, model_path=str(tmp_path / "missing"),
                   audio_tokenizer_path=str(tmp_path / "missing"), device="cpu")
    c = app.test_client()
    info = c.get("/info").json
    assert info["is_loaded"] is False and str(tmp_path / "missing") in info["load_error"]
    r = c.post("/generate", json={"text": "Hi"})
    assert r.status_code == 503 and "failed to load" in r.json["message"] and "Retry-After" not in r.headers
    assert "missing" in (tmp_path / "api_server.log").read_text()


def test_internal_errors_do_not_leak(tmp_path, engine, monkeypatch):
    app = make_app(tmp_path, engine)
    rt = app.extensions["higgs"]

    def explode(job, cancel=None, stats=None, reservation=None):
        raise RuntimeError("secret internals /opt/model")
        yield  # a generator, as the real stream

    monkeypatch.setattr(rt.service, "stream", explode)
    r = app.test_client().post("/generate", json={"text": "Hi"})
    assert r.status_code == 500 and r.json["message"] == "internal server error"
    assert "secret" not in r.get_data(as_text=True)
    assert "secret internals" in (tmp_path / "api_server.log").read_text()


def test_openapi_document_comes_from_the_schemas(client):
    spec = client.get("/openapi.json").json
    for path in ("/generate", "/generate-stream", "/generate-upload", "/info", "/voices", "/scenes"):
        assert path in spec["paths"]
    props = spec["components"]["schemas"]["Generate"]["properties"]
    assert props["temperature"]["default"] == 0.7 and props["temperature"]["maximum"] == 2.0
    assert props["scene_prompt"]["default"] == "quiet_indoor"
    upload = spec["paths"]["/generate-upload"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in upload
    assert client.get("/docs").status_code == 200


def test_cors_preflight_for_stream(client):
    r = client.options("/generate-stream", headers={"Origin": "http://example.org",
                                                    "Access-Control-Request-Method": "POST",
                                                    "Access-Control-Request-Headers": "Content-Type"})
    assert r.status_code == 200 and r.headers["Access-Control-Allow-Origin"] in ("*", "http://example.org")


def test_request_log_line_has_id_and_status(tmp_path, engine):
    app = make_app(tmp_path, engine)
    app.test_client().get("/voices", headers={"X-Request-ID": "abc-123"})
    log = (tmp_path / "api_server.log").read_text()
    assert "abc-123 GET /voices 200" in log


def test_top_k_is_bounded_by_the_checkpoints_codebook(client):
    """The bound comes from the loaded model's config (1026 codes per codebook), not from a literal in the schema."""
    r = client.post("/generate", json={"text": "Hi", "top_k": 1027, "max_new_tokens": 20})
    assert r.status_code == 400 and r.json["field"] == "top_k" and "1026" in r.json["message"]
    assert client.post("/generate", json={"text": "Hi", "top_k": 1026, "max_new_tokens": 20}).status_code == 200


def test_the_seed_used_is_reported_so_any_take_can_be_reproduced(client):
    body = {"text": "Hi there.", "max_new_tokens": 40}
    first = client.post("/generate", json=body).json
    assert isinstance(first["seed"], int) and 0 <= first["seed"] < 2**32  # chosen by the server, exact in JS
    again = client.post("/generate", json={**body, "seed": first["seed"]}).json
    assert again["seed"] == first["seed"] and again["audio_base64"] == first["audio_base64"]
    other = client.post("/generate", json=body).json
    assert other["seed"] != first["seed"]  # each unseeded request gets its own
    done = dict(parse_sse(client.post("/generate-stream", json={**body, "seed": 7}).get_data(as_text=True)))["done"]
    assert done["seed"] == 7
    assert client.post("/generate", json={**body, "temperature": 0}).json["seed"] is None  # greedy: none needed


def test_v1_speech_reports_the_seed_in_a_header(client):
    body = {"model": "tts-1", "input": "Hi there.", "response_format": "wav", "max_new_tokens": 40}
    first = client.post("/v1/audio/speech", json=body)
    seed = int(first.headers["X-Seed"])
    again = client.post("/v1/audio/speech", json={**body, "seed": seed})
    assert again.headers["X-Seed"] == str(seed) and again.data == first.data
    sse = client.post("/v1/audio/speech", json={**body, "response_format": "pcm", "stream_format": "sse"})
    assert int(sse.headers["X-Seed"]) >= 0
