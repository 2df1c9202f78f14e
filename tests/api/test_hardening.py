"""Limits, auth, CORS, health, metrics and path safety through Flask's test client."""

from __future__ import annotations

import io
import os
import tempfile

import numpy as np
import pytest
import soundfile as sf

from helpers import make_app, write_voice
from model_pool.prompt.library import VoiceLibrary


@pytest.fixture
def app(tmp_path, engine):
    return make_app(tmp_path, engine, max_text_chars=200, max_speakers=2, max_body_kb=4, max_form_parts=12)


def test_caps_each_give_a_clear_4xx(app):
    c = app.test_client()
    r = c.post("/generate", json={"text": "x" * 201})
    assert r.status_code == 400 and r.json["field"] == "text" and "limit is 200" in r.json["message"]
    r = c.post("/generate", json={"text": "[SPEAKER0] a [SPEAKER1] b [SPEAKER2] c"})
    assert r.status_code == 400 and "at most 2 speakers" in r.json["message"]
    r = c.post("/generate", data='{"text": "' + "y" * 5000 + '"}', content_type="application/json")
    assert r.status_code == 413 and "4 KB" in r.json["message"]
    form = {f"extra{i}": "1" for i in range(20)} | {"text": "Hi"}
    r = c.post("/generate-upload", data=form, content_type="multipart/form-data")
    assert r.status_code == 413


def test_healthz_and_readyz(tmp_path, app):
    c = app.test_client()
    assert c.get("/healthz").json == {"status": "ok"}
    ready = c.get("/readyz")
    assert ready.status_code == 200 and ready.json["pool"]["instances"] == 1
    failed = make_app(tmp_path, model_path=str(tmp_path / "missing"), audio_tokenizer_path=str(tmp_path / "x"),
                      device="cpu").test_client()
    r = failed.get("/readyz")
    # Failed for good: no Retry-After, since no retry will help until an operator fixes the cause.
    assert r.status_code == 503 and "missing" in r.json["reason"] and "Retry-After" not in r.headers
    assert failed.get("/healthz").status_code == 200


def test_api_key_required_except_health_and_preflight(tmp_path, engine, caplog):
    app = make_app(tmp_path, engine, api_key="s3cret-key")
    c = app.test_client()
    for path in ("/info", "/voices", "/scenes", "/openapi.json", "/metrics"):
        r = c.get(path)
        assert r.status_code == 401 and r.json["message"] == "missing or invalid API key"
        assert "s3cret" not in r.get_data(as_text=True)
    assert c.post("/generate", json={"text": "Hi"}).status_code == 401
    assert c.post("/generate", json={"text": "Hi"}, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert c.get("/info", headers={"Authorization": "Bearer s3cret-key"}).status_code == 200
    assert c.get("/info", headers={"X-API-Key": "s3cret-key"}).status_code == 200
    assert c.get("/healthz").status_code == 200 and c.get("/readyz").status_code == 200
    pre = c.options("/generate", headers={"Origin": "http://a.example", "Access-Control-Request-Method": "POST"})
    assert pre.status_code == 200


def test_open_server_says_so_in_the_log(tmp_path, engine):
    make_app(tmp_path, engine)
    assert "no API key set" in (tmp_path / "api_server.log").read_text()


def test_cors_origins_configurable_and_preflight_everywhere(tmp_path, engine):
    c = make_app(tmp_path, engine, cors_origins="http://good.example").test_client()
    for path, method in (("/generate", "POST"), ("/generate-stream", "POST"), ("/generate-upload", "POST"),
                         ("/voices", "GET"), ("/info", "GET")):
        ok = c.options(path, headers={"Origin": "http://good.example", "Access-Control-Request-Method": method,
                                      "Access-Control-Request-Headers": "Content-Type, Authorization"})
        assert ok.headers.get("Access-Control-Allow-Origin") == "http://good.example", path
    bad = c.get("/voices", headers={"Origin": "http://evil.example"})
    assert "Access-Control-Allow-Origin" not in bad.headers


def test_symlink_out_of_the_voice_dir_is_not_followed(tmp_path):
    voices = tmp_path / "voices"
    voices.mkdir()
    outside = tmp_path / "secret"
    outside.mkdir()
    write_voice(outside, "stolen")
    (voices / "evil.wav").symlink_to(outside / "stolen.wav")
    (voices / "evil.txt").symlink_to(outside / "stolen.txt")
    write_voice(voices, "fine")
    lib = VoiceLibrary(voices)
    assert [v["name"] for v in lib.list()] == ["fine"]
    from model_pool.errors import UnknownVoice

    with pytest.raises(UnknownVoice):
        lib.get("evil")


def test_uploads_leave_no_temporary_files(tmp_path, engine, monkeypatch):
    spool = tmp_path / "spool"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))
    c = make_app(tmp_path, engine, max_upload_mb=3, max_upload_seconds=10).test_client()
    t = np.arange(24000 * 6) / 24000
    buf = io.BytesIO()
    sf.write(buf, (0.2 * np.sin(2 * np.pi * 150 * t)).astype(np.float32), 24000, format="WAV", subtype="FLOAT")
    big_wav = buf.getvalue()  # > 500 KB, so werkzeug spools it to a temporary file
    assert len(big_wav) > 500 * 1024
    for data, status in ((big_wav, 200), (b"garbage" * 100000, 400)):
        r = c.post("/generate-upload", data={"text": "Hi", "max_new_tokens": "20",
                                             "ref_audio_file": (io.BytesIO(data), "../../../etc/evil.wav")},
                   content_type="multipart/form-data")
        assert r.status_code == status
    assert os.listdir(spool) == []


def test_full_queue_refuses_a_stream_before_it_starts(tmp_path, engine):
    app = make_app(tmp_path, engine)
    pool = app.extensions["higgs"].loader.pool()
    pool.max_waiting = 0
    held = [pool.lend(1) for _ in range(pool.stats()["slots"])]
    for slot in held:
        slot.__enter__()
    try:
        r = app.test_client().post("/generate-stream", json={"text": "Hi"})
    finally:
        for slot in held:
            slot.__exit__(None, None, None)
    assert r.status_code == 503 and r.headers["Retry-After"] and "busy" in r.json["message"]


def test_metrics_count_requests_and_audio(tmp_path, engine):
    c = make_app(tmp_path, engine).test_client()
    before = c.get("/metrics").get_data(as_text=True)
    c.post("/generate", json={"text": "Hi", "max_new_tokens": 30, "seed": 1})
    c.post("/generate-stream", json={"text": "Hi", "max_new_tokens": 30, "seed": 1}).get_data()
    after = c.get("/metrics").get_data(as_text=True)

    def value(text, line_start):
        lines = [ln for ln in text.splitlines() if ln.startswith(line_start)]
        return float(lines[0].rsplit(" ", 1)[1]) if lines else 0.0

    gen = 'higgs_requests_total{endpoint="/generate",method="POST",status="200"}'
    assert value(after, gen) == value(before, gen) + 1
    audio = 'higgs_audio_seconds_total{endpoint="/generate-stream"}'
    assert value(after, audio) - value(before, audio) == pytest.approx(22 * 960 / 24000)
    first = 'higgs_time_to_first_audio_seconds_count{endpoint="/generate-stream"}'
    assert value(after, first) == value(before, first) + 1
    assert "higgs_busy_instances 0.0" in after and "higgs_frames_per_second_bucket" in after
