"""What a newcomer meets in the first hour (issue 23): the docs page offline, bodies that are not JSON, typos in
file parts and types, complete files for tools that read whole files, names that suggest the right voice."""

from __future__ import annotations

import io
import re
import struct
import wave

import numpy as np
import pytest
import soundfile as sf

from app.docs_ui import ASSETS_PATH, VERSION
from helpers import decode_audio, make_app

GREEDY = {"temperature": 0, "max_new_tokens": 40, "seed": 3}
SPEECH = {"model": "higgs-audio-v2", "input": "Hello from a file.", "voice": "belinda", **GREEDY}


@pytest.fixture(scope="module")
def client(tmp_path_factory, engine):
    return make_app(tmp_path_factory.mktemp("newcomer"), engine).test_client()


@pytest.fixture(scope="module")
def keyed(tmp_path_factory, engine):
    return make_app(tmp_path_factory.mktemp("keyed"), engine, api_key="k3y").test_client()


def speech(client, body: dict):
    """POST /v1/audio/speech, the body read and the response closed, as a WSGI server does (the close ends the
    generation's handle)."""
    return client.post("/v1/audio/speech", json=body, buffered=True)


# ---- /docs works offline, and with an API key ------------------------------------------------------------------
def _assets(page: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"]+)"', page)


def test_docs_page_loads_swagger_ui_from_this_server(client):
    page = client.get("/docs").get_data(as_text=True)
    assets = _assets(page)
    assert assets and all(a.startswith(ASSETS_PATH) for a in assets), assets  # no CDN
    for asset in assets:
        r = client.get(asset)
        assert r.status_code == 200 and len(r.data) > 1000, asset
    assert client.get(f"{ASSETS_PATH}swagger-ui-bundle.js").mimetype in ("text/javascript", "application/javascript")
    assert f'content="{VERSION}"' in page and re.fullmatch(r"\d+\.\d+\.\d+", VERSION)


def test_with_an_api_key_the_docs_page_loads_and_the_document_needs_the_key(keyed):
    page = keyed.get("/docs")
    assert page.status_code == 200
    for asset in _assets(page.get_data(as_text=True)):
        assert keyed.get(asset).status_code == 200, asset
    assert keyed.get("/openapi.json").status_code == 401  # the data stays behind the key
    assert keyed.get("/openapi.json", headers={"X-API-Key": "k3y"}).status_code == 200
    assert keyed.get(f"{ASSETS_PATH}../../info").status_code in (401, 404)  # the open prefix opens nothing else


# ---- a body that is not JSON -------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/generate", "/generate-stream", "/v1/audio/speech"])
def test_a_form_body_on_a_json_endpoint_is_a_415_that_says_json(client, path):
    r = client.post(path, data='{"text": "hi"}', content_type="application/x-www-form-urlencoded")  # curl -d
    assert r.status_code == 415
    message = r.json["error"]["message"] if path.startswith("/v1") else r.json["message"]
    assert "must be JSON" in message and "application/x-www-form-urlencoded" in message
    assert client.post(path).status_code == 415  # no body, no Content-Type


# ---- unknown file parts and strict JSON types --------------------------------------------------------------------
def _clip() -> bytes:
    buf = io.BytesIO()
    sf.write(buf, np.zeros(24000, np.float32), 24000, format="WAV")
    return buf.getvalue()


def test_an_unknown_file_part_is_a_422_naming_it(client):
    form = {"text": "Clone me.", "max_new_tokens": "20", "ref_audio_files": (io.BytesIO(_clip()), "clip.wav")}
    r = client.post("/generate-upload", data=form, content_type="multipart/form-data")
    assert r.status_code == 422 and r.json["field"] == "ref_audio_files"
    form = {"name": "x", "transcript": "Hi.", "audio": (io.BytesIO(_clip()), "a.wav"),
            "audio2": (io.BytesIO(_clip()), "b.wav")}
    r = client.post("/voices", data=form, content_type="multipart/form-data")
    assert r.status_code == 422 and r.json["field"] == "audio2"


@pytest.mark.parametrize("field, value", [("max_new_tokens", "50"), ("temperature", "0.7"), ("seed", "1"),
                                          ("top_p", "0.9")])
def test_json_numbers_must_be_numbers(client, field, value):
    r = client.post("/generate", json={"text": "Hi.", field: value})
    assert r.status_code == 422 and r.json["field"] == field


@pytest.mark.parametrize("field, value", [("speed", "1.5"), ("stream", "false"), ("max_new_tokens", "20")])
def test_v1_json_types_are_strict_too(client, field, value):
    r = speech(client, {**SPEECH, field: value})
    assert r.status_code == 422 and r.json["error"]["param"] == field


def test_forms_still_take_numbers_as_text(client):
    form = {"text": "Hi.", "max_new_tokens": "20", "temperature": "0", "seed": "4"}
    assert client.post("/generate-upload", data=form, content_type="multipart/form-data").status_code == 200


# ---- stream: false, and streamed headers the common readers cope with -------------------------------------------
def _pcm(client) -> np.ndarray:
    r = speech(client, {**SPEECH, "response_format": "pcm"})
    assert r.status_code == 200
    return np.frombuffer(r.data, "<i2")


@pytest.mark.parametrize("fmt", ["wav", "flac"])
def test_stream_false_gives_a_complete_file_soundfile_reads(client, fmt):
    pcm = _pcm(client)
    r = speech(client, {**SPEECH, "response_format": fmt, "stream": False})
    assert r.status_code == 200 and r.mimetype == f"audio/{fmt}"
    info = sf.info(io.BytesIO(r.data))
    assert info.frames == pcm.shape[0] and info.samplerate == 24000
    samples, _ = sf.read(io.BytesIO(r.data), dtype="int16")
    assert np.array_equal(samples, pcm)  # the stream's audio, whole


def test_stream_false_wav_has_exact_sizes_for_python_wave(client):
    pcm = _pcm(client)
    r = speech(client, {**SPEECH, "response_format": "wav", "stream": False})
    with wave.open(io.BytesIO(r.data)) as w:
        assert w.getnframes() == pcm.shape[0]
        assert np.array_equal(np.frombuffer(w.readframes(w.getnframes()), "<i2"), pcm)


def test_stream_false_keeps_speed_and_lossy_formats(client):
    for fmt in ("mp3", "aac", "opus"):
        r = speech(client, {**SPEECH, "response_format": fmt, "stream": False, "speed": 2.0})
        assert r.status_code == 200, fmt
        _, seconds = decode_audio(r.data, fmt)
        assert abs(seconds - _pcm(client).shape[0] / 24000 / 2) <= 0.06, fmt


def test_stream_false_with_sse_is_a_422(client):
    r = speech(client, {**SPEECH, "stream_format": "sse", "stream": False})
    assert r.status_code == 422 and r.json["error"]["param"] == "stream"


def test_a_streamed_wav_reads_whole_with_soundfile_and_wave(client):
    """Its sizes are 0xFFFFFFFF (unknown when the header goes out): libsndfile reads to the end of the data and
    wave's readframes returns every frame, while sizes of 0 would read as empty (wave refuses a RIFF size of 0)."""
    pcm = _pcm(client)
    data = speech(client, {**SPEECH, "response_format": "wav"}).data
    assert struct.unpack("<I", data[4:8])[0] == struct.unpack("<I", data[40:44])[0] == 0xFFFFFFFF
    samples, _ = sf.read(io.BytesIO(data), dtype="int16")
    assert np.array_equal(samples, pcm)
    with wave.open(io.BytesIO(data)) as w:
        assert w.getnframes() == 2147483647  # what wave makes of "unknown": docs/api.md says so
        assert np.array_equal(np.frombuffer(w.readframes(w.getnframes()), "<i2"), pcm)


def test_a_streamed_flac_reads_with_pyav_as_the_api_docs_say(client):
    pcm = _pcm(client)
    data = speech(client, {**SPEECH, "response_format": "flac"}).data
    rate, seconds = decode_audio(data, "flac")
    assert rate == 24000 and abs(seconds - pcm.shape[0] / 24000) < 1e-6


# ---- smaller ones ------------------------------------------------------------------------------------------------
def test_an_unknown_voice_names_the_closest(client):
    r = client.post("/generate", json={"text": "Hi.", "ref_audio": "bellinda"})
    assert r.status_code == 404 and r.json["message"] == "unknown voice 'bellinda' (closest: belinda)"
    r = speech(client, {**SPEECH, "voice": "en_mann"})
    assert r.status_code == 404 and "closest: en_man" in r.json["error"]["message"]
    r = client.post("/generate", json={"text": "Hi.", "ref_audio": "qqqqqq"})
    assert r.json["message"] == "unknown voice 'qqqqqq'"


def test_info_shows_the_device_and_a_random_checkpoint(tmp_path, engine, tiny_checkpoint):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    failed = make_app(tmp_path / "a", model_path=str(tmp_path / "missing"), device="auto").test_client()
    info = failed.get("/info").json
    assert info["load_error"] and info["device"] == "cpu"  # what auto means on this machine, not "auto"
    assert info["random_weights"] is False
    tiny = make_app(tmp_path / "b", engine, model_path=str(tiny_checkpoint / "model")).test_client()
    assert tiny.get("/info").json["random_weights"] is True

